"""`emolab experiment=probe`: next-word emotion distributions for a scenario file.

`engine=local` probes in this process, chunk by chunk and resumably (`experiments.app.common.probe_scenario_file`).
`engine=ray` shards the same chunks over Ray workers with Ray Data (`emotion_probe.engines.ray`); both
write the same `distributions.parquet` and a run manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table
from rich.text import Text

from emotion_probe.analysis.bias import argmax_labels
from emotion_probe.models.wrappers.core import usage_of
from emotion_probe.engines.ray import RaySettings
from emotion_probe.files import write_frame
from emotion_probe.terminal import printable, printable_text
from emotion_probe.wheel import EmotionWheel
from experiments.app.common import RunLayers, input_hashes, output_dir, probe_scenario_file, validated
from experiments.app.fingerprints import reads_config
from experiments.app.manifest import write_manifest
from experiments.app.run_records import claim_run_dir


class ProbeEngine(BaseModel):
    """The `engine` key of experiment=probe."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["local", "ray"] = Field(description="local: in this process, resumable | ray: sharded over Ray workers")


class LabelCheck(BaseModel):
    """The `label_check` key of experiment=probe (see conf/experiment/probe.yaml)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(description="run the check on labelled sets")
    top: int = Field(ge=1, description="a scenario passes when its primary is among this many top primaries")
    min_share: float = Field(ge=0, le=1, description="words with a smaller share of passing scenarios are listed")
    calibrate: bool = Field(description="divide each primary's mass by its mean over the set first")


@reads_config("model", "probe", "scenarios", "limit", "keep_empty", "limits", "engine", "ray", "label_check",
              "show_top", "cache", "retry", "paths", "progress")
def run(cfg: DictConfig) -> pd.DataFrame:
    engine = validated(ProbeEngine, {"engine": cfg.engine}, "").engine
    label_check = validated(LabelCheck, cfg.label_check, "label_check")
    # Checked for either engine, so a typo in ray.* fails now rather than on the day it is used.
    ray_settings = validated(RaySettings, cfg.ray, "ray")
    if engine == "ray":
        return _run_on_ray(cfg, ray_settings, label_check)
    probe, table, out_dir = probe_scenario_file(cfg)
    model = {**probe.model.describe(), "usage": usage_of(probe.model)}
    write_manifest(out_dir, cfg, model=model, probe=probe.describe(), scenarios=len(table),
                   dropped_rows=table.attrs.get("dropped_rows"), inputs=table.attrs.get("inputs"))
    _print_summary(table, probe.wheel, probe.describe()["scored_with"], cfg.show_top, out_dir)
    _check_labels(table, probe.wheel, label_check, out_dir)
    return table


def _check_labels(table: pd.DataFrame, wheel: EmotionWheel, settings: LabelCheck, out_dir: Path) -> None:
    """On a labelled set: does each scenario read as its word's primary? (label_check.csv)"""
    from emotion_probe.scenario_checks import label_consistency, words_to_rewrite

    if "emotion" not in table.columns or not settings.enabled:
        return
    in_wheel = table["emotion"].isin(wheel.index).to_numpy()
    # A row that named no wheel word has no primary to rank: checked, it would pass or fail by accident.
    answered = np.array([word is not None for word in _answers(table, wheel)], dtype=bool)
    labelled = table[in_wheel & answered]
    left_out = int((in_wheel & ~answered).sum())
    if labelled.empty:
        why = (f"none of the {left_out} labelled scenarios named a wheel word" if left_out
               else f"no scenario is labelled with a word of the {printable(wheel.name)} wheel")
        Console().print(Text(f"label check: {why}; nothing to check"), soft_wrap=True)
        return
    checked = label_consistency(labelled[wheel.words].astype(float).to_numpy(), list(labelled["emotion"]), wheel,
                                top=settings.top, calibrate=settings.calibrate)
    checked.insert(0, "id", list(labelled["id"]))
    write_frame(checked, out_dir / "label_check.csv", index=False)
    flagged = words_to_rewrite(checked, settings.min_share)
    # Wheel words come from a wheel file: shown as text, never read as markup.
    Console().print(printable_text(
        f"label check: {int(checked['passes'].sum())} of {len(checked)} scenarios read as their primary "
        f"(top {settings.top}{', calibrated' if settings.calibrate else ''}); {len(flagged)} words below {settings.min_share:.0%}"
        + (f": {', '.join(flagged[:12])}{' ...' if len(flagged) > 12 else ''}" if flagged else "")
        + (f"; {left_out} unanswered scenarios left out" if left_out else "")
        + f"; wrote {out_dir / 'label_check.csv'}"), soft_wrap=True)


def _run_on_ray(cfg: DictConfig, ray_settings: RaySettings, label_check: LabelCheck) -> pd.DataFrame:
    from emotion_probe.probe import ProbeSettings
    from emotion_probe.engines.ray import probe_scenarios_on_ray
    from emotion_probe.data import resolve_data_file
    from emotion_probe.limits import InputLimits
    from emotion_probe.scenarios import load_scenarios

    # Every input is checked here, before Ray starts and before any worker loads the model.
    settings = validated(ProbeSettings, cfg.probe, "probe")
    inputs = input_hashes(resolve_data_file("scenarios", cfg.scenarios), resolve_data_file("wheels", settings.wheel))
    wheel = EmotionWheel.load(settings.wheel)
    scenarios = load_scenarios(cfg.scenarios, limit=cfg.limit, keep_empty=cfg.keep_empty,
                               limits=validated(InputLimits, cfg.limits, "limits"))
    layers = RunLayers.from_config(cfg)
    out_dir = output_dir(cfg)
    claim_run_dir(cfg, out_dir, inputs)  # a dir of another run's table is refused, not overwritten
    result = probe_scenarios_on_ray(
        scenarios, OmegaConf.to_container(cfg.model, resolve=True), wheel, settings, ray_settings, out_dir,
        cache=layers.cache, retry=layers.retry, show_progress=cfg.progress,
    )
    write_manifest(out_dir, cfg, model=result.model, probe=result.probe, scenarios=len(result.table), ray=result.ray,
                   dropped_rows=scenarios.dropped, inputs=inputs)
    _print_summary(result.table, wheel, result.probe["scored_with"], cfg.show_top, out_dir)
    Console().print(printable_text(f"probed on {result.ray['ran_on']} by {len(result.ray['workers'])} workers"))
    _check_labels(result.table, wheel, label_check, out_dir)
    return result.table


def _answers(table: pd.DataFrame, wheel: EmotionWheel) -> list[str | None]:
    """Each row's top word; None where the model named no wheel word (a NaN row, or the paper method's
    all-zero one)."""
    return argmax_labels(table[wheel.words].to_numpy(dtype=np.float64), wheel.words)


def _print_summary(table: pd.DataFrame, wheel: EmotionWheel, scored_with: str | None, show_top: int, out_dir: Path) -> None:
    console = Console()
    words = wheel.words
    answers = _answers(table, wheel)
    unanswered = sum(answer is None for answer in answers)
    # The backend's method name and every cell below come from outside: escaped, and shown as text.
    summary = Table(title=printable_text(f"Top emotions ({scored_with}), first rows"), show_lines=False)
    # id and text never wrap; the top-k column gives way on a narrow terminal (before, rich squeezed
    # the id column to nothing to fit the others).
    summary.add_column("id", no_wrap=True)
    summary.add_column("text", max_width=44, overflow="ellipsis", no_wrap=True)
    if "emotion" in table.columns:
        summary.add_column("label")
    summary.add_column(f"top {show_top}")
    for (_, row), answer in zip(table.head(10).iterrows(), answers):
        if answer is None:
            top = "unanswered (no wheel word)"
        else:
            ranked = row[words].astype(float).sort_values(ascending=False).head(show_top)
            top = ", ".join(f"{w} {p:.2f}" for w, p in ranked.items())
        # The file's own text, shown as text: no control characters, no rich markup.
        cells = [printable_text(row["id"]), printable_text(row["text"])] \
            + ([printable_text(row["emotion"])] if "emotion" in table.columns else []) + [printable_text(top)]
        summary.add_row(*cells)
    console.print(summary)
    if unanswered:
        console.print(f"unanswered: {unanswered} of {len(table)} rows, where the model named no wheel word "
                      "(their columns are NaN, or zero under probe.method=paper)", markup=False, soft_wrap=True)
    if "emotion" in table.columns:
        # Accuracy over the rows that got an answer, as experiment=persona_bias counts it.
        pairs = [(answer, label) for answer, label in zip(answers, table["emotion"]) if answer is not None]
        if not pairs:
            console.print(f"top-1 accuracy: no row to score, none named a wheel word (n={len(table)})", markup=False)
        else:
            primary_of = wheel.primary_of
            accuracy = sum(answer == label for answer, label in pairs) / len(pairs)
            same_primary = sum(label in wheel.index and primary_of(answer) == primary_of(label)
                               for answer, label in pairs) / len(pairs)
            answered = f"{len(pairs)} answered of {len(table)}" if unanswered else f"{len(table)}"
            console.print(
                f"top-1 accuracy over {len(words)} words: [bold]{accuracy:.1%}[/]; "
                f"same primary: [bold]{same_primary:.1%}[/] (n={answered})"
            )
    # soft_wrap: the path stays on one line in batch logs, where it is grepped for.
    console.print(Text.assemble("wrote ", printable_text(out_dir / "distributions.parquet", style="bold"),
                                f" ({len(table)} rows x {len(words)} words)"), soft_wrap=True)
