"""`emolab experiment=negotiation`: salesperson vs customer, live, resumable, with emotion metrics."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from langgraph.types import Command
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console
from rich.text import Text

from agents.human import HumanNegotiator, StopPlay, ask_human
from agents.negotiation import NEUTRAL_LINE, CustomerPersona, NegotiationScenario, played_scenario
from agents.negotiators import negotiators
from agents.records import TranscriptHeader
from emotion_probe.models.base import GenerateConfig, ModelBackend
from emotion_probe.models.wrappers.batching import BatchingBackend
from emotion_probe.data import resolve_data_file
from emotion_probe.errors import ConfigError, first_validation_problem
from emotion_probe.files import output_errors, write_frame, write_text_atomic
from emotion_probe.limits import InputLimits
from emotion_probe.probe import EmotionProbe, ProbeSettings
from emotion_probe.wheel import EmotionWheel
from environments.negotiation import NegotiationContext, build_negotiation_graph, initial_state
from environments.rules import rules_for
from environments.timing import NodeTimings
from experiments.app.fingerprints import reads_config
from experiments.app.run_records import claim_run_dir
from experiments.runs.negotiation.checkpointer import CheckpointerSettings, open_checkpointer
from experiments.app.common import (
    RunLayers,
    build_model,
    config_group_files,
    input_hashes,
    output_dir,
    resume_hint,
    validated,
)
from experiments.app.manifest import write_manifest
from experiments.runs.negotiation.live import LiveView, stdout_is_live, summary_table
from experiments.runs.negotiation.outputs import draw_error_vs_price, draw_trial_pies, matching_record, summarize
from experiments.runs.negotiation.transcript import Transcript
from emotion_probe.analysis.negotiation import AnalysisSettings, dumps_strict, trial_row

log = logging.getLogger(__name__)


class NegotiationSettings(BaseModel):
    """conf/experiment/negotiation.yaml's own keys; no defaults here, they live in the YAML."""

    model_config = ConfigDict(extra="forbid")

    trials: int = Field(ge=1, description="independent negotiations to run")
    concurrency: int = Field(ge=1, description="trials run at once (their generate() calls share batches)")
    max_parse_retries: int = Field(ge=0, description="times an agent is shown its validation error and asked again")
    max_tokens: int = Field(ge=8, description="token budget of one agent turn")
    temperature: float = Field(ge=0, description="sampling temperature of both agents")
    repetition_penalty: float = Field(gt=0, description="above 1, words a reply already used are made less likely")
    player: str | None = Field(pattern="^(salesperson|customer)$",
                               description="null | customer | salesperson: a person types that role's turns")
    probe_messages: bool = Field(description="score each customer message with the emotion probe")
    report_sum_tolerance: float | None = Field(ge=0, description="null: renormalize reports to 100 | a number: "
                                                                 "a report further than this from 100 is invalid")
    analysis: AnalysisSettings = Field(description="how trials are scored")


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
        # Always through the batcher, even at concurrency=1, so every run's manifest has the same
        # record of generation batch sizes (the batcher waits at most a few ms for company).
        if generates and model.batches_natively:
            if key not in batched:
                batched[key] = BatchingBackend(model, max_batch=max(concurrency, 1))
            model = batched[key]
        return layers.wrap(model, node)

    return get(cfg.salesperson.model, True), get(cfg.customer.model, True), get(cfg.model, False)


def run_key(out_dir: Path) -> str:
    """A short id of this job's run dir: thread ids stay unique when many jobs share one Postgres database."""
    return hashlib.sha1(str(out_dir.resolve()).encode()).hexdigest()[:12]


def _stop_play(console: Console, stop: StopPlay, request: dict, trial: Any) -> SystemExit:
    """One line on where play stopped (from the trial that was asking), and a clean exit.

    The interrupted step is checkpointed (durability="sync") and its earlier turns are in the
    transcript, so a rerun into the same dir asks this turn again and writes each line once.
    """
    if not stop.quiet:
        closing = " (closing)" if request.get("schema") == "ClosingAnswer" else ""
        console.print(Text(f"stopped at trial {trial} turn {request.get('turn')}{closing}; {resume_hint()}"),
                      soft_wrap=True)
    return SystemExit(0)


@reads_config(*NegotiationSettings.model_fields, "model", "salesperson", "customer", "scenario", "checkpointer", "probe",
              "limits", "cache", "retry", "seed", "paths")
def run(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    limits = validated(InputLimits, cfg.limits, "limits")
    persona, scenario = read_scenario(cfg, limits)
    rules = rules_for(scenario)  # an unknown rule name stops the run before any model loads
    checkpointer_settings = validated(CheckpointerSettings, cfg.checkpointer, "checkpointer")
    settings = validated(NegotiationSettings, OmegaConf.masked_copy(cfg, list(NegotiationSettings.model_fields)), "")
    probe_settings = validated(ProbeSettings, cfg.probe, "probe")
    # Loaded once, before the (slow) models, so a bad probe.wheel fails in a second. Its primaries are the
    # emotions the agents report and predict, with or without the probe (probe.wheel is part of the
    # run's fingerprint, so a resume with another wheel is refused by claim_run_dir).
    # What the run reads, by content: the wheel, and the scenario's and customer persona's config files.
    inputs = input_hashes(resolve_data_file("wheels", probe_settings.wheel),
                          *config_group_files("scenario", "customer/persona"))
    wheel = EmotionWheel.load(probe_settings.wheel)
    emotions = list(wheel.primaries)
    out_dir = output_dir(cfg)
    # Checkpointed trials are picked up by thread id alone: refuse a dir whose trials ran with other settings
    # or from other files.
    claim_run_dir(cfg, out_dir, inputs)
    salesperson_model, customer_model, probe_model = _models(cfg, settings.concurrency)
    probe = EmotionProbe(probe_model, wheel, probe_settings) if settings.probe_messages else None
    context = NegotiationContext(
        scenario=scenario, agents=_negotiators(settings, cfg.seed, salesperson_model, customer_model),
        probe=probe, wheel=wheel, rules=rules, timings=NodeTimings())
    in_multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    console = Console()
    # Interleaved token streams from concurrent trials would be unreadable: log turns instead.
    view = LiveView(console, live=stdout_is_live() and not in_multirun and settings.concurrency == 1,
                    emotions=emotions)
    transcript = Transcript(out_dir / "transcript.jsonl", limits,
                            TranscriptHeader(scenario=scenario.model_dump(), emotions=emotions,
                                             attempts_allowed=settings.max_parse_retries + 1))
    thread_prefix = run_key(out_dir)
    # A full disk or a dir that refuses writes ends the run in one line; every line and checkpoint before stays.
    with output_errors(), open_checkpointer(checkpointer_settings, out_dir) as checkpointer, transcript:
        graph = build_negotiation_graph(checkpointer)

        def one_trial(trial: int) -> dict:
            config = {"configurable": {"thread_id": f"{thread_prefix}/{scenario.name}-trial-{trial}"}}
            snapshot = graph.get_state(config)
            # Finished: nothing left to run, and no finished step whose output is saved but not yet applied (a
            # run stopped between saving a step's writes and the checkpoint after it shows no `next` either).
            if snapshot.values and not snapshot.next and not snapshot.tasks:
                log.info("trial %d already finished; skipping", trial)
                values = snapshot.values
                transcript.record(values.get("turns", []))  # lines a run killed after the last commit did not write
            else:
                if snapshot.values:
                    log.info("trial %d resumes after turn %d", trial, len(snapshot.values.get("turns", [])))
                view.begin_trial(trial, scenario.item)
                view.remember(snapshot.values.get("turns", []) if snapshot.values else [])
                first_input = None if snapshot.values else initial_state(trial)
                values = _stream_trial(graph, first_input, config, context, view, transcript.record, console)
            draw_trial_pies(values["turns"], out_dir / f"emotions_trial{trial}.png", wheel)
            if probe is not None:
                write_text_atomic(out_dir / f"matching_trial{trial}.json",
                                  dumps_strict(matching_record(values, emotions), indent=2))
            return {"trial": trial, "scenario": scenario.name, "customer_persona": persona.name,
                    "seed": cfg.seed, **trial_row(values["status"], values["turns"], settings.analysis,
                                                   budget=scenario.customer_budget, emotions=emotions,
                                                   seller_cost=scenario.seller_cost, placeholder=NEUTRAL_LINE)}

        with ThreadPoolExecutor(settings.concurrency) as pool:
            rows = list(pool.map(one_trial, range(settings.trials)))
    models = {"salesperson": salesperson_model, "customer": customer_model, **({"probe": probe_model} if probe else {})}
    return _finish(pd.DataFrame(rows), out_dir, cfg, scenario, settings, models, context, started, inputs)


def read_scenario(cfg: DictConfig, limits: InputLimits) -> tuple[CustomerPersona, NegotiationScenario]:
    """The customer persona, and the scenario as the run plays it: the persona merged in, then validated,
    once (agents.negotiation.played_scenario). Every later step is handed this object."""
    persona = validated(CustomerPersona, cfg.customer.persona, "customer.persona")
    if persona.description is not None:
        limits.check_text(persona.description, "customer.persona.description")
    try:
        return persona, played_scenario(OmegaConf.to_container(cfg.scenario, resolve=True), persona, limits)
    except ValidationError as err:
        raise ConfigError(first_validation_problem(err, "scenario")) from None


def _negotiators(settings: NegotiationSettings, seed: int, salesperson_model: ModelBackend,
                 customer_model: ModelBackend) -> dict[str, Any]:
    """Who plays each role: the person at the console for `player`, the role's model for the other."""
    return negotiators({"salesperson": salesperson_model, "customer": customer_model},
                       max_parse_retries=settings.max_parse_retries,
                       generate_config=GenerateConfig(max_tokens=settings.max_tokens, temperature=settings.temperature,
                                                      seed=seed, repetition_penalty=settings.repetition_penalty),
                       report_sum_tolerance=settings.report_sum_tolerance,
                       people={settings.player: HumanNegotiator()} if settings.player else None)


def _finish(trials: pd.DataFrame, out_dir: Path, cfg: DictConfig, scenario: NegotiationScenario,
            settings: NegotiationSettings, models: dict[str, ModelBackend], context: NegotiationContext,
            started: float, inputs: dict) -> dict:
    """trials.parquet, summary.json, the figure, and the manifest (with the scenario as played); the table."""
    write_frame(trials, out_dir / "trials.parquet", index=False)
    summary = summarize(trials, scenario, settings.analysis, seed=cfg.seed)
    write_text_atomic(out_dir / "summary.json", dumps_strict(summary, indent=2))
    draw_error_vs_price(trials, out_dir, summary)
    write_manifest(out_dir, cfg, models=models, timings=context.timings, started=started, summary=summary,
                   inputs=inputs, scenario=scenario.model_dump())
    Console().print(summary_table(trials))
    Console().print(f"wrote {out_dir}/{{transcript.jsonl, trials.parquet, summary.json, error_vs_price.png, "
                    "emotions_trial<N>.png" + (", matching_trial<N>.json" if context.probe is not None else "") + "}")
    return summary


def _stream_trial(graph, first_input, config, context, view: LiveView, record, console: Console) -> dict:
    """Run a trial to its end. The console follows the nodes' custom events as they come; the transcript
    follows the checkpointed state (`record` gets its records after every step), so a line is written
    only once its step is saved, and a step that runs again after a crash does not write it twice."""
    payload: Any = first_input
    while True:
        interrupted = None
        for mode, chunk in graph.stream(payload, config, context=context, stream_mode=["custom", "updates"],
                                        durability="sync"):
            if mode == "custom":
                view.handle(chunk)
                continue
            record(graph.get_state(config).values.get("turns", []))
            if "__interrupt__" in chunk:
                interrupted = chunk["__interrupt__"][0].value
        values = graph.get_state(config).values
        record(values.get("turns", []))
        if interrupted is None:
            return values
        try:
            answer = ask_human({**interrupted, "trial": values.get("trial")}, console)
        except StopPlay as stop:  # :q or end of input: the checkpoint keeps this turn for a rerun
            raise _stop_play(console, stop, interrupted, values.get("trial")) from None
        payload = Command(resume=answer)


