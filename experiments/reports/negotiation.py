"""The negotiation's part of the sweep report: its summary.json schema, tables by condition, the
error-price correlation across trials, and the figures (registered under the task `negotiation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from emotion_probe.analysis.negotiation import correlation_caption, draw_fit, error_price_correlation
from emotion_probe.analysis.quality import CHECKS, excluded_mask
from emotion_probe.files import save_figure
from experiments.reports.common import (
    Block,
    ExperimentReport,
    Job,
    JobTable,
    Section,
    SectionInput,
    conditions,
    figures_block,
    interval,
    label_colors,
    missing_as_nan,
    natural_key,
    read_json,
    read_parquet,
    register,
    table_block,
)


class NegotiationSummary(BaseModel):
    """A negotiation job's summary.json (experiments.runs.negotiation.run._summary).

    The fields after `parse_failures` came with the paper's measurement (emotion_probe.analysis.negotiation); files
    written before it lack them and read as None.
    """

    model_config = ConfigDict(extra="allow")

    scenario: str
    trials: int = Field(ge=0)
    deals: int = Field(ge=0)
    mean_price: float | None
    mean_abs_error_pp: float | None  # None: no trial had a scored prediction
    parse_failures: int = Field(ge=0)
    walk_aways: int | None = Field(default=None, ge=0)
    max_turns_reached: int | None = Field(default=None, ge=0)
    pairing: Literal["response", "previous"] | None = None
    no_sale_price: Literal[0, "exclude"] | None = None
    skip_first_prediction: bool | None = None
    sd_price: float | None = None
    mean_accept_price: float | None = None
    mean_closing_paid: float | None = None
    over_budget: int | None = Field(default=None, ge=0)
    sd_abs_error_pp: float | None = None
    mean_js_divergence: float | None = None
    scored_predictions: int | None = Field(default=None, ge=0)
    skipped_pairs: int | None = Field(default=None, ge=0)
    trials_without_error: int | None = Field(default=None, ge=0)
    truncated: int | None = Field(default=None, ge=0)
    report_sum_mean: float | None = None
    prediction_sum_mean: float | None = None
    correlation_n: int | None = Field(default=None, ge=0)
    pearson_r: float | None = None
    pearson_p: float | None = Field(default=None, ge=0, le=1)
    pearson_ci_low: float | None = None
    pearson_ci_high: float | None = None
    pearson_p_perm: float | None = Field(default=None, ge=0, le=1)
    spearman_rho: float | None = None
    spearman_p: float | None = Field(default=None, ge=0, le=1)
    spearman_ci_low: float | None = None
    spearman_ci_high: float | None = None
    spearman_p_perm: float | None = Field(default=None, ge=0, le=1)
    # The dialogue-quality checks (emotion_probe.analysis.quality); files written before them lack these.
    flagged: dict[str, int] | None = None
    exclude: list[str] | None = None
    excluded_trials: int | None = Field(default=None, ge=0)
    excluded_by: dict[str, int] | None = None


def _model_label(job: Job, role: str) -> str:
    """Which model played `role` in a job: its `<role>/model` override and any `<role>.model.*`
    overrides as typed, else the model name its manifest recorded, else the config's."""
    parts = [job.overrides[f"{role}/model"].text] if f"{role}/model" in job.overrides else []
    parts += [f"{key.removeprefix(f'{role}.model.')}={override.text}" for key, override in job.overrides.items()
              if key.startswith(f"{role}.model.")]
    if parts:
        return ", ".join(parts)
    recorded = (job.manifest.models or {}).get(role) if job.manifest is not None else None
    if recorded is not None and recorded.model_dump().get("name"):
        return str(recorded.model_dump()["name"])
    node = job.config.get(role, {}).get("model", {}) if isinstance(job.config.get(role), dict) else {}
    return str(node.get("model") or node.get("path") or node.get("_target_") or "(unknown)")


def read_trials(path: Path) -> pd.DataFrame:
    """A job's trials.parquet as this emolab writes it: files written before trials had a `price` column
    go through `upgrade_trials`, and the price columns are numeric for the statistics."""
    frame = upgrade_trials(read_parquet(path))
    for column in ("price", "final_price", "mean_abs_error_pp"):
        # A job where no trial reported a price stores an all-null column; make it numeric for the statistics.
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


def upgrade_trials(frame: pd.DataFrame) -> pd.DataFrame:
    """trials.parquet written before it had a `price` column: its price was the closing answer, so its
    no-sale trials have no price (as with `analysis.no_sale_price=exclude`)."""
    if "price" in frame.columns:
        return frame
    return frame.assign(price=frame["final_price"])


def negotiation_section(part: SectionInput) -> Section:
    jobs, entry, settings, out_dir = part.jobs, part.loaded, part.settings, part.out_dir
    section = Section("Negotiation", "negotiation")
    condition_of = conditions(jobs, settings.replicate_keys)
    salesperson_of = {job.name: _model_label(job, "salesperson") for job in jobs}
    customer_of = {job.name: _model_label(job, "customer") for job in jobs}
    if len(set(customer_of.values())) > 1:  # the paper compares salespeople against one customer model
        salesperson_of = {name: f"{label} vs {customer_of[name]}" for name, label in salesperson_of.items()}
    summary_of = {job.name: read_json(job.path / "summary.json", NegotiationSummary) for job in jobs
                  if job.path is not None and (job.path / "summary.json").is_file()}
    # Each job's trials flagged by a check its analysis.exclude names are left out of the price and error
    # statistics, as its summary.json left them out.
    exclude_of = {job.name: _exclude_of(job, summary_of.get(job.name)) for job in jobs}
    trials = pd.concat([frame.assign(job=job.name, condition=condition_of[job.name],
                                     salesperson=salesperson_of[job.name],
                                     excluded=excluded_mask(frame, exclude_of[job.name]))
                        for job, _, frame in entry.tables], ignore_index=True) if entry.tables else pd.DataFrame()
    summaries = [{"job": job.name, "condition": condition_of[job.name], **_cells(summary_of[job.name].model_dump())}
                 for job in jobs if job.name in summary_of]
    if summaries:
        section.blocks.append(table_block("Per job (summary.json)", missing_as_nan(pd.DataFrame(summaries))))
        for key in ("pairing", "no_sale_price", "skip_first_prediction"):
            used = {str(s[key]) for s in summaries if s[key] is not None}
            if len(used) > 1:
                section.blocks.append(Block("text", text=f"jobs differ in analysis.{key} ({sorted(used)}): the pooled "
                                                         "statistics mix differently scored trials"))
    if not trials.empty:
        figure_dir = out_dir / "negotiation"
        figure_dir.mkdir(exist_ok=True)
        kept = trials[~trials["excluded"]]
        by_condition = _condition_table(trials, kept)
        section.blocks.append(table_block("By condition", by_condition))
        flagged = _flagged_table(trials)
        if flagged is not None:
            section.blocks.append(table_block("Trials flagged by the dialogue-quality checks, by condition", flagged))
        if trials["excluded"].any():
            section.blocks.append(Block("text", text=_exclusion_line(trials, exclude_of)))
        section.blocks.append(table_block("Prediction error vs price, across trials", _correlation_table(kept)))
        section.blocks.append(Block("text", text=(
            "Error: a trial's mean absolute difference between predicted and self-reported percentages, in "
            "percentage points. r: Pearson, rho: Spearman, each with a 95% percentile bootstrap CI over trials "
            "and a two-sided permutation p-value (errors re-paired with prices at random).")))
        paths = [_price_by_condition(kept, figure_dir / "price_by_condition.png"),
                 _deal_rate_by_condition(by_condition, figure_dir / "deal_rate_by_condition.png"),
                 _error_vs_price(kept, figure_dir / "error_vs_price.png"),
                 _error_price_by_model(kept, figure_dir / "error_vs_price_by_model.png")]
        section.blocks.append(figures_block("Across jobs", paths, [
            "final price by condition", "deal rate by condition",
            "prediction error vs price: one point per trial, least-squares line over all trials",
            "prediction error vs price per salesperson model (mean ± sd over trials)"]))
    pies = [(job, p) for job in jobs if job.path is not None
            for p in sorted(job.path.glob("emotions_trial*.png"),
                            key=lambda p: natural_key(p.stem.removeprefix("emotions_trial")))]
    if pies:
        shown = pies[: settings.max_trial_figures]
        section.blocks.append(figures_block(
            "Self-reported vs predicted emotions per turn", [p for _, p in shown],
            [f"job {job.name} ({condition_of[job.name]}), {p.stem.removeprefix('emotions_')}" for job, p in shown]))
        if len(pies) > len(shown):
            section.blocks.append(Block("text", text=f"{len(pies) - len(shown)} more per-trial figures are in the job "
                                                     f"dirs (max_trial_figures={settings.max_trial_figures})."))
    section.blocks.extend(Block("text", text=note) for note in entry.notes)
    return section


def _exclude_of(job: Job, summary: NegotiationSummary | None) -> list[str]:
    """The checks whose flagged trials a job left out: as its summary.json says, else as its config says."""
    if summary is not None and summary.exclude is not None:
        return summary.exclude
    analysis = job.config.get("analysis")
    exclude = analysis.get("exclude") if isinstance(analysis, dict) else None
    return [str(name) for name in exclude] if isinstance(exclude, list) else []


def _cells(summary: dict) -> dict:
    """A summary as table cells: a mapping (`flagged`) as 'name: n, ...', a list as 'a, b'."""
    def cell(value: object) -> object:
        if isinstance(value, dict):
            return ", ".join(f"{key}: {count}" for key, count in value.items()) or "-"
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "-"
        return value

    return {key: cell(value) for key, value in summary.items()}


def _condition_table(trials: pd.DataFrame, kept: pd.DataFrame) -> pd.DataFrame:
    """Counts over every trial; the price and error means over the trials `analysis.exclude` kept."""
    grouped, means = trials.groupby("condition", sort=True), kept.groupby("condition", sort=True)
    table = pd.DataFrame({
        "jobs": grouped["job"].nunique(),
        "trials": grouped.size(),
        "deals": grouped["deal"].sum().astype(int),
        "deal rate": grouped["deal"].mean(),
        "mean final price": means["final_price"].mean(),
        "mean price": means["price"].mean(),
        "mean error (pp)": means["mean_abs_error_pp"].mean(),
        "parse failures": grouped["parse_failures"].sum(),
    })
    return table.reset_index()


def _flagged_table(trials: pd.DataFrame) -> pd.DataFrame | None:
    """Per condition, its trials and how many of them each quality check flagged; None when no job's
    trials.parquet has the checks' columns (files written before them)."""
    names = [name for name in CHECKS if f"flag_{name}" in trials.columns]
    if not names:
        return None
    flags = pd.DataFrame({name: excluded_mask(trials, [name]) for name in names})
    grouped = flags.groupby(trials["condition"], sort=True)
    table = grouped.sum().astype(int)
    table.insert(0, "trials", grouped.size())
    return table.rename_axis("condition").reset_index()


def _exclusion_line(trials: pd.DataFrame, exclude_of: dict[str, list[str]]) -> str:
    """How many trials analysis.exclude left out of the price and error statistics, and the checks (of those
    each job excluded by) that flagged them."""
    excluded = trials[trials["excluded"]]
    by: dict[str, int] = {}
    for job, rows in excluded.groupby("job"):
        for name in exclude_of.get(str(job), []):
            by[name] = by.get(name, 0) + int(excluded_mask(rows, [name]).sum())
    reasons = ", ".join(f"{name} ({n})" for name, n in by.items())
    return (f"{len(excluded)} of {len(trials)} trials are left out of the price and error means, the correlation and "
            f"the figures (analysis.exclude), flagged by: {reasons}.")


def _price_by_condition(trials: pd.DataFrame, path: Path) -> Path:
    labels = sorted(trials["condition"].unique())
    colors = label_colors(labels)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(labels)), 3.6))
    rng = np.random.default_rng(0)  # jitter only, so that points at one price stay visible
    for position, label in enumerate(labels, start=1):
        values = trials.loc[(trials["condition"] == label) & trials["final_price"].notna(), "final_price"].to_numpy()
        if len(values):
            ax.boxplot([values], positions=[position], widths=0.5, showfliers=False)
            ax.scatter(position + rng.uniform(-0.12, 0.12, len(values)), values, color=colors[label], zorder=3, s=18)
    if trials["final_price"].isna().all():
        ax.text(0.5, 0.5, "no trial reported a price", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    ax.set_xlim(0.5, len(labels) + 0.5)
    ax.set_ylabel("final price")
    ax.tick_params(axis="x", labelsize=7, rotation=20)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def _deal_rate_by_condition(by_condition: pd.DataFrame, path: Path) -> Path:
    labels = by_condition["condition"].tolist()
    colors = label_colors(sorted(labels))
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(labels)), 3.6))
    bars = ax.bar(range(len(labels)), by_condition["deal rate"], color=[colors[c] for c in labels])
    for bar, (deals, total) in zip(bars, zip(by_condition["deals"], by_condition["trials"])):
        ax.annotate(f"{deals}/{total}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                    va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=20)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("deal rate")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def _correlation_table(trials: pd.DataFrame) -> pd.DataFrame:
    """error_price_correlation over all trials of the sweep, then within each condition and each
    salesperson model when there are several (one row each)."""
    groups: list[tuple[str, pd.DataFrame]] = [("all trials", trials)]
    same_partition = (trials.groupby("condition")["salesperson"].nunique().max() == 1
                      and trials.groupby("salesperson")["condition"].nunique().max() == 1)
    for column, prefix in (("condition", ""), ("salesperson", "salesperson: ")):
        if trials[column].nunique() > 1 and not (column == "salesperson" and same_partition):
            groups += [(f"{prefix}{label}", rows) for label, rows in trials.groupby(column, sort=True)]
    rows = []
    for label, group in groups:
        result = error_price_correlation(group["mean_abs_error_pp"], group["price"])
        rows.append({"trials": label, "n": result["n"], "Pearson r": result["pearson_r"],
                     "r 95% CI": interval(result["pearson_ci_low"], result["pearson_ci_high"]),
                     "r p (perm.)": result["pearson_p_perm"], "r p (t)": result["pearson_p"],
                     "Spearman rho": result["spearman_rho"],
                     "rho 95% CI": interval(result["spearman_ci_low"], result["spearman_ci_high"]),
                     "rho p (perm.)": result["spearman_p_perm"]})
    return missing_as_nan(pd.DataFrame(rows))


def _error_vs_price(trials: pd.DataFrame, path: Path) -> Path:
    """One point per trial, coloured by condition, with the least-squares line over all trials."""
    labels = sorted(trials["condition"].unique())
    colors = label_colors(labels)
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for label in labels:
        rows = trials[trials["condition"] == label]
        ax.scatter(rows["mean_abs_error_pp"], rows["price"], color=colors[label], label=label, s=22, alpha=0.6)
    draw_fit(ax, trials["mean_abs_error_pp"], trials["price"])
    caption = correlation_caption(error_price_correlation(trials["mean_abs_error_pp"], trials["price"]))
    ax.set_title(caption.replace("; ", "\n"), fontsize=8)
    ax.set_xlabel("mean prediction error (percentage points)")
    ax.set_ylabel("price")
    ax.legend(fontsize=7, frameon=False)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path


def _error_price_by_model(trials: pd.DataFrame, path: Path) -> Path:
    """The paper's cross-model figure: per salesperson model, mean error ± sd against mean price ± sd
    over its trials (sd 0 for a single trial)."""
    labels = sorted(trials["salesperson"].unique())
    colors = label_colors(labels)
    fig, ax = plt.subplots(figsize=(6, 4.4))
    for label in labels:
        rows = trials[trials["salesperson"] == label]
        error, price = rows["mean_abs_error_pp"].dropna(), rows["price"].dropna()
        if error.empty or price.empty:
            continue
        ax.errorbar(error.mean(), price.mean(), xerr=np.nan_to_num(error.std(ddof=1)),
                    yerr=np.nan_to_num(price.std(ddof=1)), fmt="o", capsize=4, markersize=8, color=colors[label],
                    label=f"{label} ({len(rows)} trials)")
        ax.annotate(label, (error.mean(), price.mean()), textcoords="offset points", xytext=(6, 6), fontsize=8)
    if not ax.has_data():
        ax.text(0.5, 0.5, "no model has both a scored error and a price", ha="center", va="center",
                transform=ax.transAxes)
    else:
        ax.legend(fontsize=7, frameon=False)
    ax.set_xlabel("emotion prediction error (percentage points)")
    ax.set_ylabel("price")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return path




NEGOTIATION_REPORT = register("negotiation", ExperimentReport(
    order=10,
    tables=(JobTable("trials", "trials.parquet", read_trials,
                     "trials.parquet, one row per trial (status, deal, final_price, accept_price, closing_paid, "
                     "price, over_budget, mean_abs_error_pp, js_divergence, scored_predictions, skipped_pairs, "
                     "turns, parse_failures, truncated, quality_<check>, flag_<check>, ...)"),),
    section=negotiation_section,
))
