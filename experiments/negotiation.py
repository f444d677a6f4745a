"""`emolab experiment=negotiation`: salesperson vs customer, live, resumable, with emotion metrics."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from langgraph.types import Command
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console
from rich.prompt import Prompt
from rich.table import Table
from scipy.spatial.distance import jensenshannon
from scipy.stats import pearsonr

from agents.negotiation import PRIMARIES, NegotiationScenario
from emotion_probe.backends.base import GenerateConfig, ModelBackend
from emotion_probe.backends.batching import BatchingBackend
from emotion_probe.errors import ConfigError
from emotion_probe.probe import EmotionProbe, ProbeSettings
from emotion_probe.wheel import EmotionWheel
from environments.negotiation import NegotiationContext, build_negotiation_graph, initial_state
from environments.timing import NodeTimings
from experiments.common import RunLayers, build_model, output_dir, validated, write_manifest
from experiments.live import LiveView, stdout_is_live

log = logging.getLogger(__name__)


class NegotiationSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trials: int = Field(default=1, ge=1)
    concurrency: int = Field(default=1, ge=1)
    max_parse_retries: int = Field(default=2, ge=0)
    max_tokens: int = Field(default=160, ge=8)
    temperature: float = Field(default=0.5, ge=0)
    player: str | None = Field(default=None, pattern="^(salesperson|customer)$")
    probe_messages: bool = True


def _models(cfg: DictConfig, concurrency: int) -> tuple[ModelBackend, ModelBackend, ModelBackend]:
    """Build each distinct model config once: roles that share a config share one loaded model.

    With concurrent trials, an in-process model batches their generate() calls. Each role still
    gets its own wrappers on top, so calls and tokens are counted per agent.
    """
    loaded: dict[str, ModelBackend] = {}
    batched: dict[str, ModelBackend] = {}
    layers = RunLayers.from_config(cfg)

    def get(node: DictConfig, generates: bool) -> ModelBackend:
        key = json.dumps(OmegaConf.to_container(node, resolve=True), sort_keys=True)
        if key not in loaded:
            loaded[key] = build_model(node)
        model = loaded[key]
        if generates and concurrency > 1 and hasattr(model, "generate_batch"):
            if key not in batched:
                batched[key] = BatchingBackend(model, max_batch=concurrency)
            model = batched[key]
        return layers.wrap(model, node)

    return get(cfg.salesperson.model, True), get(cfg.customer.model, True), get(cfg.model, False)


class CustomerPersona(BaseModel):
    """conf/customer/persona/*.yaml: who the customer is, swept as config."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str | None = Field(default=None, min_length=1)


def with_customer_persona(scenario: NegotiationScenario, persona: CustomerPersona) -> NegotiationScenario:
    """The scenario as this run plays it: the persona's description replaces the scenario's own, if it has one."""
    if persona.description is None:
        return scenario
    return scenario.model_copy(update={"customer_persona": persona.description})


def run_key(out_dir: Path) -> str:
    """A short id of this job's run dir: thread ids stay unique when many jobs share one Postgres database."""
    return hashlib.sha1(str(out_dir.resolve()).encode()).hexdigest()[:12]


class CheckpointerSettings(BaseModel):
    """conf/checkpointer/*.yaml."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sqlite", "postgres"]
    filename: str = Field(default="checkpoints.sqlite", min_length=1)
    url_env: str | None = None


#: Key of the advisory lock that serializes checkpoint-table setup across jobs ("emolab" in ASCII).
POSTGRES_SETUP_LOCK = 0x656D6F6C6162


@contextmanager
def open_checkpointer(settings: CheckpointerSettings, out_dir: Path) -> Iterator[Any]:
    """The LangGraph checkpointer the `checkpointer` config group names (one SQLite file per job, or Postgres)."""
    if settings.kind == "sqlite":
        from langgraph.checkpoint.sqlite import SqliteSaver

        with SqliteSaver.from_conn_string(str(out_dir / settings.filename)) as saver:
            yield saver
        return
    try:
        from langgraph.checkpoint.postgres import PostgresSaver
    except ImportError:
        raise ConfigError('checkpointer=postgres needs the postgres extra: pip install "emolab[postgres]"') from None
    url = os.environ.get(settings.url_env or "")
    if not url:
        raise ConfigError(f"checkpointer.url_env: environment variable {settings.url_env} is not set "
                          "(it must hold the PostgreSQL connection string)")
    with PostgresSaver.from_conn_string(url) as saver:
        # setup() creates the tables on first use. Jobs that start together on a fresh database would
        # all run its migrations and collide on their bookkeeping table, so a session advisory lock
        # lets one job run them while the others wait (and then find nothing left to do). The others
        # poll rather than block: a blocked statement is an open transaction, and the migrations'
        # CREATE INDEX CONCURRENTLY waits for every open transaction, which would deadlock.
        with saver.conn.cursor() as cursor:
            while not cursor.execute("SELECT pg_try_advisory_lock(%s) AS ok", (POSTGRES_SETUP_LOCK,)).fetchone()["ok"]:
                time.sleep(0.2)
            try:
                saver.setup()
            finally:
                cursor.execute("SELECT pg_advisory_unlock(%s)", (POSTGRES_SETUP_LOCK,))
        yield saver


def ask_human(request: dict, console: Console) -> dict:
    """Read one turn from a person at the console (human mode)."""
    role, schema = request["role"], request["schema"]
    if schema == "ClosingAnswer":
        return {"paid": Prompt.ask("[green]what did you pay? (blank = did not buy)[/]", default="") or None}
    message = Prompt.ask(f"[bold]{role}[/] your message")
    raw = Prompt.ask("your emotions as love,joy,surprise,anger,sadness,fear percentages", default="0,50,0,0,0,50")
    values = [float(x) for x in raw.replace(" ", "").split(",")]
    emotions = dict(zip(PRIMARIES, values))
    if role == "salesperson":
        return {"message": message, "predicted_customer_emotions": emotions}
    decision = Prompt.ask("decision", choices=["continue", "accept", "walk_away"], default="continue")
    price = float(Prompt.ask("price")) if decision == "accept" else None
    return {"message": message, "my_emotions": emotions, "decision": decision, "price": price}


def trial_metrics(turns: list[dict]) -> dict[str, Any]:
    """Prediction error of each salesperson prediction against the customer's next self-report."""
    errors, divergences = [], []
    pending: list[float] | None = None
    for turn in turns:
        if turn["speaker"] == "salesperson":
            pending = turn.get("prediction")
        elif turn["speaker"] == "customer":
            report = turn.get("report")
            if pending is not None and report is not None:
                p, q = np.asarray(pending), np.asarray(report)
                errors.append(float(np.abs(p - q).mean()))
                divergences.append(float(jensenshannon(p / 100, q / 100, base=2) ** 2))
            pending = None
    dialogue = [t for t in turns if t["speaker"] in ("salesperson", "customer")]
    return {
        "mean_abs_error_pp": float(np.mean(errors)) if errors else float("nan"),
        "js_divergence": float(np.mean(divergences)) if divergences else float("nan"),
        "scored_predictions": len(errors),
        "turns": len(dialogue),
        "parse_failures": sum(t.get("parse_status") == "failed" for t in turns),
    }


def run(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    persona = validated(CustomerPersona, cfg.customer.persona, "customer.persona")
    scenario = with_customer_persona(validated(NegotiationScenario, cfg.scenario, "scenario"), persona)
    checkpointer_settings = validated(CheckpointerSettings, cfg.checkpointer, "checkpointer")
    settings = validated(NegotiationSettings, {key: cfg[key] for key in NegotiationSettings.model_fields}, "")
    probe_settings = validated(ProbeSettings, cfg.probe, "probe")
    out_dir = output_dir(cfg)
    salesperson_model, customer_model, probe_model = _models(cfg, settings.concurrency)
    probe = EmotionProbe(probe_model, probe_settings.wheel, **probe_settings.model_dump(exclude={"wheel"})) \
        if settings.probe_messages else None
    context = NegotiationContext(
        salesperson_model=salesperson_model, customer_model=customer_model, probe=probe,
        max_parse_retries=settings.max_parse_retries, player=settings.player,
        generate_config=GenerateConfig(max_tokens=settings.max_tokens, temperature=settings.temperature, seed=cfg.seed),
        timings=NodeTimings(),
    )
    in_multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    console = Console()
    # Interleaved token streams from concurrent trials would be unreadable: log turns instead.
    view = LiveView(console, live=stdout_is_live() and not in_multirun and settings.concurrency == 1)
    transcript_path = out_dir / "transcript.jsonl"

    transcript_lock = threading.Lock()
    thread_prefix = run_key(out_dir)
    with open_checkpointer(checkpointer_settings, out_dir) as checkpointer, \
            transcript_path.open("a", encoding="utf-8") as transcript:
        graph = build_negotiation_graph(checkpointer)

        def record(line: dict) -> None:
            with transcript_lock:
                transcript.write(json.dumps(line, default=str) + "\n")
                transcript.flush()

        def one_trial(trial: int) -> dict:
            config = {"configurable": {"thread_id": f"{thread_prefix}/{scenario.name}-trial-{trial}"}}
            snapshot = graph.get_state(config)
            if snapshot.values and not snapshot.next:
                log.info("trial %d already finished; skipping", trial)
                values = snapshot.values
            else:
                if snapshot.values:
                    log.info("trial %d resumes after turn %d", trial, len(snapshot.values.get("turns", [])))
                if view.live:
                    console.rule(f"trial {trial}: {scenario.item}")
                first_input = None if snapshot.values else initial_state(scenario, trial)
                values = _stream_trial(graph, first_input, config, context, view, record, console)
            draw_trial_pies(values["turns"], out_dir / f"emotions_trial{trial}.png")
            return {"trial": trial, "scenario": scenario.name, "customer_persona": persona.name,
                    "seed": cfg.seed, "status": values["status"],
                    "deal": values["status"] == "deal", "final_price": values.get("final_price"),
                    "agreed_price": values.get("agreed_price"), **trial_metrics(values["turns"])}

        with ThreadPoolExecutor(settings.concurrency) as pool:
            rows = list(pool.map(one_trial, range(settings.trials)))
    trials = pd.DataFrame(rows)
    trials.to_parquet(out_dir / "trials.parquet", index=False)
    summary = _summary(trials, scenario)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    _figures(trials, out_dir, summary)
    models = {"salesperson": salesperson_model, "customer": customer_model}
    if probe is not None:
        models["probe"] = probe_model
    write_manifest(out_dir, cfg, models=models, timings=context.timings, started=started, summary=summary)
    console.print(_summary_table(trials))
    console.print(f"wrote {out_dir}/{{transcript.jsonl, trials.parquet, summary.json, error_vs_price.png, "
                  "emotions_trial<N>.png}")
    return summary


def _stream_trial(graph, first_input, config, context, view: LiveView, record, console: Console) -> dict:
    payload: Any = first_input
    while True:
        interrupted = None
        for mode, chunk in graph.stream(payload, config, context=context, stream_mode=["custom", "updates"],
                                        durability="sync"):
            if mode == "custom":
                view.handle(chunk)
                if chunk["event"] in ("turn", "probe"):
                    record(chunk["record"])
            elif "__interrupt__" in chunk:
                interrupted = chunk["__interrupt__"][0].value
        if interrupted is None:
            return graph.get_state(config).values
        payload = Command(resume=ask_human(interrupted, console))


def _summary(trials: pd.DataFrame, scenario: NegotiationScenario) -> dict:
    deals = trials[trials["deal"]]
    summary = {
        "scenario": scenario.name, "trials": len(trials), "deals": int(trials["deal"].sum()),
        "mean_price": float(deals["final_price"].mean()) if len(deals) else None,
        "mean_abs_error_pp": float(trials["mean_abs_error_pp"].mean()),
        "parse_failures": int(trials["parse_failures"].sum()),
    }
    paired = deals.dropna(subset=["final_price", "mean_abs_error_pp"])
    if len(paired) >= 3 and paired["final_price"].nunique() > 1 and paired["mean_abs_error_pp"].nunique() > 1:
        result = pearsonr(paired["mean_abs_error_pp"], paired["final_price"])
        summary.update(pearson_r=float(result.statistic), pearson_p=float(result.pvalue))
    return summary


def _figures(trials: pd.DataFrame, out_dir: Path, summary: dict) -> None:
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter(trials["mean_abs_error_pp"], trials["final_price"].astype(float))
    ax.set_xlabel("mean prediction error (percentage points)")
    ax.set_ylabel("final price")
    if "pearson_r" in summary:
        ax.set_title(f"Pearson r = {summary['pearson_r']:.2f} (p = {summary['pearson_p']:.3f})", fontsize=10)
        print(f"prediction error vs price: Pearson r = {summary['pearson_r']:.3f}, p = {summary['pearson_p']:.3g}")
    fig.tight_layout()
    fig.savefig(out_dir / "error_vs_price.png", dpi=150)
    plt.close(fig)


def draw_trial_pies(turns: list[dict], path: Path) -> None:
    """Per turn, the customer's self-report beside the salesperson's prediction, as in the paper's figures."""
    pairs, prediction = [], None
    for turn in turns:
        if turn["speaker"] == "salesperson":
            prediction = turn.get("prediction")
        elif turn["speaker"] == "customer":
            pairs.append((turn["turn"], turn.get("report"), prediction))
            prediction = None
    if not pairs:
        return
    colors = [EmotionWheel.load("shaver").group_colors[p] for p in PRIMARIES]
    fig, axes = plt.subplots(2, len(pairs), figsize=(2.4 * len(pairs), 5), squeeze=False)
    for column, (turn, report, predicted) in enumerate(pairs):
        for row, (values, label) in enumerate([(report, "customer says"), (predicted, "salesperson predicts")]):
            ax = axes[row][column]
            if values is None or sum(values) <= 0:
                ax.text(0.5, 0.5, "unparsed", ha="center", va="center", fontsize=8)
                ax.axis("off")
            else:
                ax.pie(values, colors=colors, startangle=90)
            ax.set_title(f"turn {turn}: {label}", fontsize=7)
    fig.legend(PRIMARIES, loc="lower center", ncols=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _summary_table(trials: pd.DataFrame) -> Table:
    table = Table(title="Negotiation summary")
    for column in ["trial", "outcome", "price", "mean error (pp)", "JS div.", "turns", "parse failures"]:
        table.add_column(column, justify="right")
    for _, row in trials.iterrows():
        price = "-" if pd.isna(row["final_price"]) else f"{row['final_price']:g}"
        table.add_row(str(row["trial"]), row["status"], price, f"{row['mean_abs_error_pp']:.1f}",
                      f"{row['js_divergence']:.3f}", str(row["turns"]), str(row["parse_failures"]))
    return table
