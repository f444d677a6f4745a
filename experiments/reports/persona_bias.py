"""`emolab experiment=persona_report sweep_dir=...`: aggregate a persona sweep into tables and figures."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.table import Table

from emotion_probe.analysis.bias import (
    collapse_confusion,
    compare_paired_predictions,
    compare_predictions,
    confusion_matrix,
    mcnemar_exact,
    per_class_accuracy,
)
from emotion_probe.errors import ConfigError
from emotion_probe.files import file_part, save_figure, write_frame
from emotion_probe.terminal import format_cell, printable_text
from emotion_probe.wheel import EmotionWheel
from experiments.app.common import output_dir
from experiments.reports.common import (
    Block,
    ExperimentReport,
    Job,
    JobTable,
    Loaded,
    ReportSettings,
    Section,
    SectionInput,
    figures_block,
    job_wheel,
    jobs_of,
    read_json,
    read_parquet,
    register,
    table_block,
    varying_keys,
)



def _persona_jobs(sweep_dir: Path) -> list[Job]:
    """The sweep's persona_bias jobs, found as the sweep report finds them."""
    return jobs_of(sweep_dir, "persona_bias")


def _load_jobs(found: list[Job], sweep_dir: Path) -> dict[str, tuple[dict, pd.DataFrame]]:
    jobs = {}
    for job in found:
        metrics_path, predictions = job.path / "metrics.json", job.path / "predictions.parquet"
        if not metrics_path.is_file():
            continue  # a job that did not finish
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        if "persona" not in metrics or not predictions.is_file():
            continue  # another experiment's job
        if metrics["persona"] in jobs:
            raise ConfigError(f"sweep_dir: persona {metrics['persona']!r} appears twice ({metrics_path.parent})")
        jobs[metrics["persona"]] = (metrics, pd.read_parquet(predictions))
    if not jobs:
        raise ConfigError(f"sweep_dir: no persona_bias jobs (metrics.json + predictions.parquet) under {sweep_dir}")
    return jobs


def _jobs_wheel(found: list[Job], fallback: str) -> EmotionWheel:
    """The wheel the jobs probed with (their saved config), not this command's own `probe.wheel`: a sweep
    run with probe.wheel=ekman must be read with Ekman's words. Jobs that disagree are refused;
    `fallback` serves only when no job recorded its config."""
    used = {wheel for job in found if (job.path / "predictions.parquet").is_file()
            and isinstance(wheel := (job.config.get("probe") or {}).get("wheel"), str)}
    if len(used) > 1:
        raise ConfigError(f"sweep_dir: the jobs probed with different wheels ({', '.join(sorted(used))}); "
                          "report each wheel's jobs separately")
    return EmotionWheel.load(used.pop() if used else fallback)


def report(cfg: DictConfig) -> pd.DataFrame:
    sweep_dir = Path(cfg.sweep_dir)
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep_dir: {sweep_dir} is not a directory")
    found = _persona_jobs(sweep_dir)
    jobs = _load_jobs(found, sweep_dir)
    wheel = _jobs_wheel(found, cfg.probe.wheel)
    out_dir = output_dir(cfg)
    console = Console()
    result = write_persona_report(jobs, wheel, cfg.pairs, cfg.pie_emotions, out_dir, console, test=cfg.test)
    accuracy = result.accuracy

    view = Table(title=f"Persona recognition accuracy ({len(jobs)} personas)")
    for column in ["persona", "accuracy", "primary", "calibrated", "calibrated primary", "unanswered"]:
        view.add_column(column, justify="left" if column == "persona" else "right")
    # Every cell was read from the jobs' files (a persona's name, its metrics.json): escaped, and shown as text.
    for name, row in accuracy.iterrows():
        cells = [name, *(_with_interval(row, key) for key in ("accuracy", "primary_accuracy", "calibrated_accuracy",
                                                              "calibrated_primary_accuracy")),
                 f"{row['unanswered']} of {row['scenarios']}" if "scenarios" in row else row["unanswered"]]
        view.add_row(*(printable_text(cell) for cell in cells))
    console.print(view)
    if accuracy["unanswered"].any():
        console.print("unanswered: rows where the model named no wheel word (probe.method=paper: none in the top k); "
                      "accuracies and confusion tables count the answered rows")
    console.print(printable_text(f"wrote {out_dir}"))
    return accuracy


#: Per-emotion tests for "more often predicted": sign = paired exact sign test on the scenarios where
#: the two personas disagree (both read the same scenarios); fisher = unpaired Fisher on the counts.
TESTS = ("sign", "fisher")


def _with_interval(row: pd.Series, key: str) -> str:
    """'23.1% [19.0%, 27.2%]' when the job's metrics.json has the bootstrap interval, else '23.1%'."""
    value = row.get(key)
    text = format_cell(value, ".1%")
    low, high = row.get(f"{key}_ci_low"), row.get(f"{key}_ci_high")
    if low is not None and high is not None and pd.notna(low) and pd.notna(high):
        text += f" [{low:.1%}, {high:.1%}]"
    return text


def _paired(a: str, b: str, table_a: pd.DataFrame, table_b: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """Both personas' predictions aligned by scenario id (A's order), or None when they did not read the
    same scenarios (different files or limits): then no paired test applies."""
    ids_a, ids_b = table_a["id"].astype(str), table_b["id"].astype(str)
    if ids_a.duplicated().any() or ids_b.duplicated().any() or set(ids_a) != set(ids_b):
        return None
    return table_a.set_index(ids_a), table_b.set_index(ids_b).loc[ids_a.tolist()]


def _answers(column: pd.Series) -> list[str | None]:
    return [value if isinstance(value, str) else None for value in column]


def _unanswered(column: pd.Series) -> int:
    """Rows without a prediction: the model named no wheel word (the paper method's top k held none)."""
    return sum(answer is None for answer in _answers(column))


def _gap(x: float | None, y: float | None) -> str:
    """|x - y| as a percentage, or "-" when either accuracy is undefined (a persona with no answer)."""
    return format_cell(None if x is None or y is None else abs(x - y), ".1%")


def accuracy_tests(a: str, b: str, table_a: pd.DataFrame, table_b: pd.DataFrame, wheel: EmotionWheel) -> pd.DataFrame:
    """McNemar's exact test of A's accuracy against B's, per prediction column and level (135 words,
    6 primaries), on the scenarios both personas answered (all of them under probe.method=exact):
    the paired counterpart of the accuracies in metrics.json, which divide by the answered rows."""
    rows = []
    for column, calibrated in (("predicted", False), ("predicted_calibrated", True)):
        pa, pb = _answers(table_a[column]), _answers(table_b[column])
        true = table_a["emotion"].tolist()
        both = [i for i, (x, y) in enumerate(zip(pa, pb)) if x is not None and y is not None]
        for level, same in (("word", lambda p, t: p == t),
                            ("primary", lambda p, t: wheel.primary_of(p) == wheel.primary_of(t))):
            correct_a = [same(pa[i], true[i]) for i in both]
            correct_b = [same(pb[i], true[i]) for i in both]
            rows.append({"a": a, "b": b, "calibrated": calibrated, "level": level,
                         **mcnemar_exact(correct_a, correct_b)})
    return pd.DataFrame(rows)


@dataclass
class PersonaReport:
    """What write_persona_report computed, for callers that present it further (the sweep report)."""

    accuracy: pd.DataFrame  # one row per persona: the metrics.json values
    primary_confusions: dict[str, np.ndarray]  # persona -> primaries x primaries counts (true x predicted)
    per_primary: pd.DataFrame  # persona x primary accuracy
    comparisons: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)  # (A, B) -> per-emotion tests
    accuracy_tests: pd.DataFrame = field(default_factory=pd.DataFrame)  # McNemar per pair, column and level
    unanswered: dict[str, int] = field(default_factory=dict)  # persona -> rows without a `predicted` answer
    figures: list[Path] = field(default_factory=list)  # PNGs written, in the order a reader should see them


def write_persona_report(
    jobs: dict[str, tuple[dict, pd.DataFrame]],
    wheel: EmotionWheel,
    pairs: Sequence[Sequence[str]],
    pie_emotions: Sequence[str],
    out_dir: Path,
    console: Console,
    test: str = "sign",
) -> PersonaReport:
    """Write the accuracy table, confusion tables and heatmaps, comparisons, radar and pie charts of a persona sweep.

    `jobs` maps a persona label to (its metrics.json, its predictions.parquet). Pairs whose
    personas are not both in `jobs` are skipped. Both personas of a pair normally read the same
    scenarios, so their comparisons are paired: McNemar's exact test for the accuracy difference
    (accuracy_tests.csv) and, with test="sign", an exact sign test per emotion (see
    `emotion_probe.analysis.bias.compare_paired_predictions`); test="fisher" keeps the unpaired Fisher test.
    A pair that did not read the same scenarios cannot be paired: an error with test="sign", and no
    McNemar rows with test="fisher".
    """
    if test not in TESTS:
        raise ConfigError(f"test: expected one of {list(TESTS)}, got {test!r}")
    accuracy = _accuracy_table(jobs, out_dir)
    primary_confusions, per_primary = _primary_confusions(jobs, wheel, out_dir)
    per_primary_frame = pd.DataFrame(per_primary).T
    write_frame(per_primary_frame, out_dir / "per_primary_accuracy.csv")
    result = PersonaReport(accuracy, primary_confusions, per_primary_frame,
                           figures=[out_dir / "accuracy.png", out_dir / "confusion_primary.png"],
                           unanswered=accuracy["unanswered"].astype(int).to_dict())
    tests = []
    for a, b in pairs:
        if a not in jobs or b not in jobs:
            continue
        pair_tests = _compare_pair(a, b, jobs, wheel, per_primary, test, out_dir, console, result)
        if pair_tests is not None:
            tests.append(pair_tests)
    if tests:
        result.accuracy_tests = pd.concat(tests, ignore_index=True)
        write_frame(result.accuracy_tests, out_dir / "accuracy_tests.csv", index=False)

    for emotion in pie_emotions:
        pies = out_dir / f"pies_{file_part(emotion)}.png"
        _pies(jobs, wheel, emotion, pies)
        result.figures.append(pies)
    return result


def _accuracy_table(jobs: dict[str, tuple[dict, pd.DataFrame]], out_dir: Path) -> pd.DataFrame:
    """One row per persona, its metrics.json values and its unanswered rows: accuracy.{parquet,csv,png}."""
    accuracy = pd.DataFrame([metrics for metrics, _ in jobs.values()], index=list(jobs))
    accuracy = accuracy.drop(columns="persona", errors="ignore")
    accuracy.index.name = "persona"
    # Counted here from the predictions, so every report shows them whatever the jobs' metrics.json holds.
    accuracy["unanswered"] = [_unanswered(table["predicted"]) for _, table in jobs.values()]
    accuracy["calibrated_unanswered"] = [_unanswered(table["predicted_calibrated"]) for _, table in jobs.values()]
    write_frame(accuracy, out_dir / "accuracy.parquet")
    write_frame(accuracy, out_dir / "accuracy.csv")
    _bar_chart(accuracy, out_dir / "accuracy.png")
    return accuracy


def _primary_confusions(
    jobs: dict[str, tuple[dict, pd.DataFrame]], wheel: EmotionWheel, out_dir: Path,
) -> tuple[dict[str, np.ndarray], dict[str, pd.Series]]:
    """Per persona, its primaries x primaries confusion counts and its accuracy per primary; the word-level
    confusion tables (confusion_<persona>.parquet) and the heatmaps (confusion_primary.png) are written."""
    primary_confusions: dict[str, np.ndarray] = {}
    per_primary: dict[str, pd.Series] = {}
    for name, (_, table) in jobs.items():
        answered = table["predicted"].notna()  # no prediction where the model named no word (paper method)
        fine = confusion_matrix(table.loc[answered, "emotion"], table.loc[answered, "predicted"], wheel.words)
        write_frame(pd.DataFrame(fine, index=wheel.words, columns=wheel.words), out_dir / f"confusion_{file_part(name)}.parquet")
        primary_confusions[name] = collapse_confusion(fine, wheel.words, wheel.primary_of, wheel.primaries)
        per_primary[name] = per_class_accuracy(primary_confusions[name], wheel.primaries)
    _heatmaps(primary_confusions, wheel.primaries, out_dir / "confusion_primary.png")
    return primary_confusions, per_primary


def _compare_pair(
    a: str, b: str, jobs: dict[str, tuple[dict, pd.DataFrame]], wheel: EmotionWheel,
    per_primary: dict[str, pd.Series], test: str, out_dir: Path, console: Console, result: PersonaReport,
) -> pd.DataFrame | None:
    """Persona A against B: the per-emotion comparison (compare_<a>_vs_<b>.{parquet,csv}) and the radar chart,
    added to `result`, and one console line. Returns the pair's McNemar tests, or None when the two did not
    read the same scenarios."""
    paired = _paired(a, b, jobs[a][1], jobs[b][1])
    if paired is None and test == "sign":
        raise ConfigError(f"pairs: {a} and {b} did not read the same scenarios (their ids differ), so the "
                          "paired test cannot pair them; rerun both on one scenario file, or set test=fisher")
    frames, silent = _prediction_comparisons(a, b, jobs, paired, wheel, test)
    if frames:
        comparison = pd.concat(frames.values(), ignore_index=True)
        write_frame(comparison, out_dir / f"compare_{file_part(a)}_vs_{file_part(b)}.parquet", index=False)
        write_frame(comparison, out_dir / f"compare_{file_part(a)}_vs_{file_part(b)}.csv", index=False)
        result.comparisons[(a, b)] = comparison
    reference = "neutral" if "neutral" in per_primary else None
    radar = out_dir / f"radar_{file_part(a)}_vs_{file_part(b)}.png"
    _radar({p: per_primary[p] for p in (a, b, reference) if p}, wheel, radar)
    result.figures.append(radar)
    gap = {c: _gap(jobs[a][0][f"{c}accuracy"], jobs[b][0][f"{c}accuracy"]) for c in ("", "calibrated_")}
    significant = " -> ".join(str(int(frames[c]["significant"].sum())) if c in frames else "-"
                              for c in (False, True))
    mcnemar, pair_tests = "", None
    if paired is not None:
        pair_tests = accuracy_tests(a, b, *paired, wheel)
        word = pair_tests[pair_tests["level"] == "word"].set_index("calibrated")["p_value"]
        mcnemar = f" (McNemar p {word.loc[False]:.3g} -> {word.loc[True]:.3g})"
    # Persona names come from the jobs' files: escaped, and shown as text.
    console.print(printable_text(f"{a} vs {b}: accuracy gap {gap['']} before calibration, {gap['calibrated_']} "
                                 f"after{mcnemar}; significant emotions ({test}, BH) {significant}"
                                 + "".join(f"; {note}" for note in silent)))
    return pair_tests


def _prediction_comparisons(
    a: str, b: str, jobs: dict[str, tuple[dict, pd.DataFrame]],
    paired: tuple[pd.DataFrame, pd.DataFrame] | None, wheel: EmotionWheel, test: str,
) -> tuple[dict[bool, pd.DataFrame], list[str]]:
    """The per-emotion tests of A against B, by whether the predictions are calibrated, and a note for each
    prediction column left out."""
    frames: dict[bool, pd.DataFrame] = {}
    silent = []
    for column, calibrated in (("predicted", False), ("predicted_calibrated", True)):
        # A persona without a single answer in this column has no rates to compare: said, and the
        # rest of the report is still written.
        if mute := [p for p in (a, b) if _unanswered(jobs[p][1][column]) == len(jobs[p][1])]:
            silent.append(f"{'calibrated' if calibrated else 'uncalibrated'} predictions not compared: no answer "
                          f"from {' or '.join(mute)}")
            continue
        if test == "sign":
            table = compare_paired_predictions(_answers(paired[0][column]), _answers(paired[1][column]),
                                               wheel.words)
        else:
            counts = [jobs[p][1][column].value_counts().reindex(wheel.words, fill_value=0).to_numpy()
                      for p in (a, b)]
            table = compare_predictions(counts[0], counts[1], wheel.words)
        frames[calibrated] = table.assign(calibrated=calibrated)
    return frames, silent


def _bar_chart(accuracy: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(accuracy)), 3.5))
    x = np.arange(len(accuracy))
    for offset, (column, label) in enumerate([("primary_accuracy", "primary"), ("calibrated_primary_accuracy",
                                                                               "primary, calibrated")]):
        error = None
        if {f"{column}_ci_low", f"{column}_ci_high"} <= set(accuracy.columns):
            # The bootstrap interval as whiskers; a job without one (bootstrap=0) gets none.
            value = accuracy[column].astype(float)
            low = (value - accuracy[f"{column}_ci_low"].astype(float)).fillna(0).clip(lower=0)
            high = (accuracy[f"{column}_ci_high"].astype(float) - value).fillna(0).clip(lower=0)
            error = np.vstack([low.to_numpy(), high.to_numpy()])
        ax.bar(x + (offset - 0.5) * 0.4, accuracy[column], width=0.4, label=label, yerr=error, capsize=2)
    ax.set_xticks(x, accuracy.index, rotation=30, ha="right")
    ax.set_ylabel("accuracy")
    ax.legend(frameon=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
    plt.close(fig)


def _heatmaps(confusions: dict[str, np.ndarray], labels: list[str], path: Path) -> None:
    n = len(confusions)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for ax, (name, counts) in zip(axes[0], confusions.items()):
        rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(rates, vmin=0, vmax=1, cmap="Blues")
        ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("predicted", fontsize=7)
    axes[0][0].set_ylabel("true", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
    plt.close(fig)


def _radar(series: dict[str, pd.Series], wheel: EmotionWheel, path: Path) -> None:
    angles = np.linspace(0, 2 * np.pi, len(wheel.primaries), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(4.2, 4.2), subplot_kw={"polar": True})
    for name, values in series.items():
        data = values.reindex(wheel.primaries).fillna(0).tolist()
        ax.plot(angles + angles[:1], data + data[:1], label=name, ls="--" if name == "neutral" else "-")
        ax.fill(angles + angles[:1], data + data[:1], alpha=0.1)
    ax.set_xticks(angles, wheel.primaries, fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper right", bbox_to_anchor=(1.3, 1.1), fontsize=7, frameon=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
    plt.close(fig)


#: The pie slice of rows without an answer, and its colour (no primary's).
UNANSWERED = "unanswered"
UNANSWERED_COLOR = "#c8c8c8"


def _pies(jobs: dict, wheel: EmotionWheel, emotion: str, path: Path) -> None:
    """What scenarios of one true emotion (a word, or a primary's whole group) are predicted as; rows
    without an answer are a grey "unanswered" slice."""
    group = emotion in wheel.primaries
    fig, axes = plt.subplots(1, len(jobs), figsize=(2.8 * len(jobs), 3.2), squeeze=False)
    for ax, (name, (_, table)) in zip(axes[0], jobs.items()):
        rows = table[table["primary"] == emotion] if group else table[table["emotion"] == emotion]
        predicted = pd.Series([UNANSWERED if answer is None else wheel.primary_of(answer)
                               for answer in _answers(rows["predicted"])], dtype=object).value_counts()
        if predicted.empty:
            ax.text(0.5, 0.5, "no scenarios", ha="center")
        else:
            colors = [UNANSWERED_COLOR if p == UNANSWERED else wheel.group_colors[p] for p in predicted.index]
            ax.pie(predicted, labels=predicted.index, colors=colors, textprops={"fontsize": 7})
        ax.set_title(name, fontsize=9)
    fig.suptitle(f"true {'group' if group else 'emotion'}: {emotion}, predicted primary", fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=150)
    plt.close(fig)


# --- the persona_bias section of the sweep report (experiments.runs.persona_bias registers it) --------


class PersonaMetrics(BaseModel):
    """A persona_bias job's metrics.json."""

    model_config = ConfigDict(extra="allow")

    persona: str
    phrase: str | None
    model: str
    scenarios: int = Field(ge=0)
    accuracy: float | None
    primary_accuracy: float | None
    calibrated_accuracy: float | None
    calibrated_primary_accuracy: float | None


def persona_section(part: SectionInput) -> Section:
    """The persona_bias section of the sweep report: write_persona_report per group of jobs that agree
    on every varying override but the persona (e.g. one group per model)."""
    jobs, entry, settings, out_dir, console = part.jobs, part.loaded, part.settings, part.out_dir, part.console
    section = Section("Persona bias", "persona_bias")
    tables: dict[str, dict[str, pd.DataFrame]] = {}
    for job, name, frame in entry.tables:
        tables.setdefault(job.name, {})[name] = frame
    complete = [job for job in jobs if {"predictions", "metrics"} <= set(tables.get(job.name, {}))]
    # Personas are compared within a group of jobs that agree on every other varying override (e.g. per model).
    group_keys = [k for k in varying_keys(complete) if not k.startswith("persona")]
    groups: dict[str, list[Job]] = {}
    for job in complete:
        label = ", ".join(f"{k}={job.overrides[k].text if k in job.overrides else '(unset)'}" for k in group_keys)
        groups.setdefault(label, []).append(job)
    for label, members in groups.items():
        wheels = {job_wheel(job).name for job in members}
        if len(wheels) > 1:
            raise ConfigError(f"sweep_dir: persona_bias jobs {[j.name for j in members]} used different wheels "
                              f"{sorted(wheels)}; compare them in separate reports")
        wheel = job_wheel(members[0])
        personas = [str(tables[j.name]["metrics"].loc[0, "persona"]) for j in members]
        persona_jobs = {}
        for job, persona in zip(members, personas):
            # Two jobs with one persona (e.g. two seeds) keep both, told apart by their job dir.
            key = persona if personas.count(persona) == 1 else f"{persona} (job {job.name.replace('/', '-')})"
            persona_jobs[key] = (tables[job.name]["metrics"].iloc[0].to_dict(), tables[job.name]["predictions"])
        slug = re.sub(r"[^A-Za-z0-9_.=-]+", "_", label) if label else ""
        group_dir = out_dir / "persona_bias" / slug if slug else out_dir / "persona_bias"
        group_dir.mkdir(parents=True, exist_ok=True)
        result = write_persona_report(persona_jobs, wheel, settings.pairs, settings.pie_emotions, group_dir, console)
        prefix = f"{label}: " if label else ""
        section.blocks.append(table_block(f"{prefix}Accuracy", result.accuracy, index=True))
        section.blocks.append(table_block(f"{prefix}Accuracy per primary", result.per_primary, index=True))
        section.blocks.append(figures_block(f"{prefix}Figures", result.figures))
        if unanswered := {persona: n for persona, n in result.unanswered.items() if n}:
            counts = ", ".join(f"{persona} {n} of {len(persona_jobs[persona][1])}" for persona, n in unanswered.items())
            section.blocks.append(Block("text", text=f"{prefix}rows without an answer (the model named no wheel word; "
                                                     f"probe.method=paper: none in the top k), left out of the "
                                                     f"accuracies and confusion tables: {counts}"))
        for persona, counts in result.primary_confusions.items():
            confusion = pd.DataFrame(counts, index=pd.Index(wheel.primaries, name="true \\ predicted"),
                                     columns=wheel.primaries)
            section.blocks.append(table_block(f"{prefix}Confusion over primaries: {persona}", confusion, index=True))
        if not result.accuracy_tests.empty:
            section.blocks.append(table_block(f"{prefix}Paired accuracy differences (McNemar's exact test)",
                                              result.accuracy_tests))
        for (a, b), comparison in result.comparisons.items():
            for calibrated, rows in comparison.groupby("calibrated", sort=True):
                kind = "calibrated" if calibrated else "uncalibrated"
                rows = rows.drop(columns="calibrated")
                n = settings.comparison_rows
                section.blocks.append(table_block(f"{prefix}{a} vs {b} ({kind}): more often predicted for {a}",
                                                  rows.head(n)))
                section.blocks.append(table_block(f"{prefix}{a} vs {b} ({kind}): more often predicted for {b}",
                                                  rows.tail(n).iloc[::-1]))
                details = table_block("", rows)
                section.blocks.append(Block("details", title=f"all {len(rows)} rows: {a} vs {b} ({kind})",
                                            html=details.html))
    incomplete = [job.name for job in jobs if job.name not in {j.name for j in complete}]
    if incomplete:
        section.blocks.append(Block("text", text=f"jobs without predictions.parquet and metrics.json: {incomplete}"))
    section.blocks.extend(Block("text", text=note) for note in entry.notes)
    return section


def _read_metrics(path: Path) -> pd.DataFrame:
    return pd.DataFrame([read_json(path, PersonaMetrics).model_dump()])


def trim_probability_columns(loaded: Loaded, settings: ReportSettings) -> None:
    """Keep the per-word probability columns of predictions.parquet out of results.parquet when the
    sweep's rows times words exceed max_probability_cells (they stay in each job's predictions.parquet)."""
    rows, words = 0, set()
    for job, table_name, frame in loaded.tables:
        if table_name == "predictions":
            rows += len(frame)
            words |= set(job_wheel(job).words)
    if words and rows * len(words) > settings.max_probability_cells:
        loaded.left_out["predictions"] = sorted(words)
        loaded.notes.append(f"per-word probability columns left out of results.parquet: {rows} rows x "
                            f"{len(words)} words exceeds max_probability_cells={settings.max_probability_cells} "
                            "(they stay in each job's predictions.parquet)")


PERSONA_BIAS_REPORT = register("persona_bias", ExperimentReport(
    order=20,
    tables=(
        JobTable("predictions", "predictions.parquet", read_parquet,
                 "predictions.parquet, one row per scenario (id, text, emotion, primary, predicted, "
                 "predicted_calibrated), with one probability column per wheel word only while the sweep's "
                 "persona_bias rows times words stay within max_probability_cells"),
        JobTable("metrics", "metrics.json", _read_metrics,
                 "metrics.json, one row per job (accuracy, primary_accuracy, calibrated_...)"),
    ),
    section=persona_section,
    trim=trim_probability_columns,
))
