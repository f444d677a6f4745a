"""`emolab experiment=persona_bias persona=<p>`: one persona's emotion recognition over labelled scenarios."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.text import Text

from agents.persona import PersonaAgent, PersonaSpec
from emotion_probe.models.base import GenerateConfig
from emotion_probe.analysis.bias import (
    argmax_labels,
    bootstrap_recognition,
    calibrated_argmax,
    content_free_prior,
    recognition_summary,
)
from emotion_probe.data import resolve_data_file
from emotion_probe.errors import ConfigError
from emotion_probe.probe import FIRST_WORD_COLUMN, RANKED_COLUMN, EmotionProbe, ProbeSettings
from emotion_probe.engines.local import PartsManifest, run_in_parts, with_labels
from emotion_probe.files import write_frame
from emotion_probe.terminal import printable
from emotion_probe.limits import InputLimits
from emotion_probe.scenarios import Scenario, load_scenarios
from emotion_probe.analysis.stats import resample_rows
from emotion_probe.wheel import EmotionWheel
from environments.recognition import RecognitionContext, build_recognition_graph
from environments.timing import NodeTimings
from experiments.app.common import (
    build_model,
    config_group_files,
    input_hashes,
    output_dir,
    validated,
    write_json_atomic,
)
from experiments.app.fingerprints import reads_config
from experiments.app.manifest import write_manifest
from experiments.app.run_records import claim_run_dir

log = logging.getLogger(__name__)


class RecognitionSettings(BaseModel):
    """conf/recognition/*.yaml (the `recognition:` group); no defaults here, they live in the YAML."""

    model_config = ConfigDict(extra="forbid")

    free_text: bool = Field(description="also ask the persona in free text through the chat model")
    content_free_inputs: list[str] = Field(min_length=1, description="inputs whose mean distribution is the "
                                                                     "persona's prior, divided out by calibration")
    max_tokens: int = Field(ge=1, description="token budget of a free-text answer")
    bootstrap: int = Field(ge=0, description="bootstrap resamples of the scenarios for accuracy intervals; 0 = off")


@reads_config("model", "probe", "persona", "recognition", "scenarios", "limit", "keep_empty", "limits", "cache",
              "retry", "seed", "paths", "progress")
def run(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    persona = validated(PersonaSpec, cfg.persona, "persona")
    probe_settings = validated(ProbeSettings, cfg.probe, "probe")
    settings = validated(RecognitionSettings, cfg.recognition, "recognition")
    wheel = EmotionWheel.load(probe_settings.wheel)
    # What the run reads, by content: the scenarios, the wheel, the persona's config file and its personas.json.
    inputs = input_hashes(resolve_data_file("scenarios", cfg.scenarios), resolve_data_file("wheels", probe_settings.wheel),
                          *config_group_files("persona"), persona.file)
    scenarios, dropped_rows = _labelled_scenarios(cfg, wheel)
    out_dir = output_dir(cfg)
    claim_run_dir(cfg, out_dir, inputs)  # before recognition_parts/ is read back
    model = build_model(cfg.model, cfg)
    agent = PersonaAgent(persona, wheel)
    # The persona's prompt replaces probe.template; every other setting is the run's. Validated with the
    # template in place (model_copy would skip the {text} check).
    persona_probe = validated(ProbeSettings, {**probe_settings.model_dump(), "template": agent.probe_template}, "probe")
    probe = EmotionProbe(model, wheel, persona_probe)
    # Contextual calibration: the persona's prior over emotions when there is nothing to read. Under
    # probe.method=paper it has zeros (words outside the top k); calibrated_argmax floors them.
    prior = content_free_prior(probe.distribution(settings.content_free_inputs))
    if np.isnan(prior).all():
        log.warning("no content-free input named any of the wheel's words (%s); calibrated predictions are empty",
                    probe.last_method)
    context = RecognitionContext(
        agent=agent, probe=probe, chat_model=model if settings.free_text else None,
        generate_config=GenerateConfig(max_tokens=settings.max_tokens), timings=NodeTimings(),
    )
    graph = build_recognition_graph()

    def compute(batch: list[Scenario]) -> pd.DataFrame:
        state = graph.invoke({"scenarios": batch}, context=context)
        frame = pd.DataFrame(state["distributions"], columns=wheel.words)
        frame.insert(0, "id", [s.id for s in batch])
        frame.insert(1, "text", [s.text for s in batch])
        if "first_words" in state:
            frame[RANKED_COLUMN] = state["ranked"]
            frame[FIRST_WORD_COLUMN] = state["first_words"]
        if "free_text" in state:
            frame.insert(2, "chat_reply", [a["reply"] for a in state["free_text"]])
            frame.insert(3, "chat_predicted", [a["predicted"] for a in state["free_text"]])
        return frame

    # The bootstrap only reads the finished table: changing it must not invalidate probed parts.
    manifest = PartsManifest(model=model.name, model_identity=model.identity(), words=wheel.words,
                             settings={**probe.settings.model_dump(), **settings.model_dump(exclude={"bootstrap"})})
    table = run_in_parts(scenarios, out_dir / "recognition_parts", manifest, compute, probe_settings.chunk_size,
                         label=f"{persona.name} on {model.name}", show_progress=cfg.progress)
    table = with_labels(table, scenarios)
    P = table[wheel.words].to_numpy(dtype=np.float64)
    # A row where the model named no word (NaN) has no prediction (uncovered; see _accuracies). The paper
    # method answers the authors' way: the first wheel word in rank order among the top-k tokens.
    paper = probe_settings.method == "paper"
    table.insert(4, "predicted", _paper_predictions(table) if paper else argmax_labels(P, wheel.words))
    table.insert(5, "predicted_calibrated", calibrated_argmax(P, prior, wheel.words))
    write_frame(table, out_dir / "predictions.parquet", index=False)
    metrics = {"persona": persona.name, "phrase": persona.phrase, "model": model.name,
               "method": probe_settings.method, "scenarios": len(table), **_accuracies(table, wheel),
               "bootstrap_resamples": settings.bootstrap, **_intervals(table, wheel, settings.bootstrap, cfg.seed)}
    # Strict JSON: an undefined value (an accuracy over no rows, a NaN prior) is null.
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_json_atomic(out_dir / "prior.json", dict(zip(wheel.words, prior.tolist())))
    write_manifest(out_dir, cfg, models={"persona": model}, timings=context.timings, started=started,
                   probe=probe.describe(), persona=persona.model_dump(), dropped_rows=dropped_rows, inputs=inputs)
    _print_summary(persona, metrics, len(wheel.words), out_dir)
    return metrics


def _print_summary(persona: PersonaSpec, metrics: dict, words: int, out_dir: Path) -> None:
    """The run's one console line: its accuracies, with their intervals where bootstrapped, and its dir."""
    def ci(key: str) -> str:
        low, high = metrics.get(f"{key}_ci_low"), metrics.get(f"{key}_ci_high")
        return f" [{low:.1%}, {high:.1%}]" if low is not None and np.isfinite(low) and np.isfinite(high) else ""

    # The persona file's own text, shown as text: no control characters, no rich markup.
    Console().print(Text.assemble(
        (printable(persona.name), "bold"),
        f" ({printable(persona.phrase or 'no persona')}): accuracy {metrics['accuracy']:.1%}"
        f"{ci('accuracy')} over {words} words, {metrics['primary_accuracy']:.1%}"
        f"{ci('primary_accuracy')} over primaries; calibrated "
        f"{metrics['calibrated_accuracy']:.1%} / {metrics['calibrated_primary_accuracy']:.1%}; "
        f"coverage {metrics['coverage']:.1%}  -> {printable(out_dir)}"
    ))


def _labelled_scenarios(cfg: DictConfig, wheel: EmotionWheel) -> tuple[list[Scenario], dict[str, int]]:
    """The run's scenarios, each with its label's primary, and the rows the file dropped (for the manifest);
    a row whose label is not a word of the wheel is refused."""
    scenarios = load_scenarios(cfg.scenarios, limit=cfg.limit, keep_empty=cfg.keep_empty,
                               limits=validated(InputLimits, cfg.limits, "limits"))
    unlabelled = [s.id for s in scenarios if s.emotion not in wheel.index]
    if unlabelled:
        raise ConfigError(f"scenarios: {len(unlabelled)} rows have no label in the {wheel.name!r} wheel "
                          f"(first: {unlabelled[0]}); persona bias needs labelled scenarios")
    # Files with only a label (the authors' `label`) get its primary from the wheel.
    labelled = [s if s.primary else s.model_copy(update={"primary": wheel.primary_of(s.emotion)}) for s in scenarios]
    return labelled, scenarios.dropped


def _paper_predictions(table: pd.DataFrame) -> list[str | None]:
    """The authors' answer per row: the first wheel word in their reading of the top-k tokens, or None."""
    return [word if isinstance(word, str) else None for word in table[FIRST_WORD_COLUMN]]


def _prediction_columns(table: pd.DataFrame) -> dict[str, str]:
    """metrics.json key prefix -> predictions column."""
    columns = {"": "predicted", "calibrated_": "predicted_calibrated"}
    if "chat_predicted" in table.columns:
        columns["chat_"] = "chat_predicted"
    return columns


def _intervals(table: pd.DataFrame, wheel: EmotionWheel, resamples: int, seed: int) -> dict[str, float]:
    """95% percentile bootstrap intervals over scenarios for each accuracy and primary accuracy
    (`<prefix>accuracy_ci_low`, ...). One set of resampled rows serves every prediction column, and the
    same seed draws the same rows for every persona of a sweep over one scenario file, so the
    personas' intervals come from the same resamples."""
    if not resamples:
        return {}
    rows = resample_rows(len(table), resamples, np.random.default_rng(seed))
    result = {}
    for prefix, column in _prediction_columns(table).items():
        predicted = [p if isinstance(p, str) else None for p in table[column]]
        intervals = bootstrap_recognition(table["emotion"].tolist(), predicted, wheel.primary_of, rows)
        result.update({f"{prefix}{key}": value for key, value in intervals.items()})
    return result


def _accuracies(table: pd.DataFrame, wheel: EmotionWheel) -> dict[str, float]:
    """135-way and primary (6-way) accuracy per prediction column.

    Accuracy divides by the rows that got an answer, as the paper does; `coverage` is their share and
    `*_all_rows` divide by every row, counting a missing answer as wrong.
    """
    result = {}
    for prefix, column in _prediction_columns(table).items():
        predicted = [p if isinstance(p, str) else None for p in table[column]]
        summary = recognition_summary(table["emotion"].tolist(), predicted, wheel.words, wheel.primary_of,
                                      wheel.primaries)
        for key in ("coverage", "accuracy", "primary_accuracy", "accuracy_all_rows", "primary_accuracy_all_rows"):
            result[f"{prefix}{key}"] = summary[key]
    return result
