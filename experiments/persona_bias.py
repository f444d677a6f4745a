"""`emolab experiment=persona_bias persona=<p>`: one persona's emotion recognition over labelled scenarios."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from agents.persona import PersonaAgent, PersonaSpec
from emotion_probe.backends.base import GenerateConfig
from emotion_probe.bias import accuracy, calibrate, collapse_confusion, confusion_matrix
from emotion_probe.errors import ConfigError
from emotion_probe.probe import EmotionProbe, ProbeSettings
from emotion_probe.runner import PartsManifest, run_in_parts, with_labels
from emotion_probe.scenarios import Scenario, load_scenarios
from emotion_probe.wheel import EmotionWheel
from environments.recognition import RecognitionContext, build_recognition_graph
from environments.timing import NodeTimings
from experiments.common import build_model, output_dir, validated, write_json_atomic, write_manifest


class RecognitionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    free_text: bool = False
    content_free_inputs: list[str] = Field(default_factory=lambda: ["N/A", "[MASK]", "..."], min_length=1)
    max_tokens: int = Field(default=16, ge=1)


def run(cfg: DictConfig) -> dict:
    started = time.perf_counter()
    persona = validated(PersonaSpec, cfg.persona, "persona")
    probe_settings = validated(ProbeSettings, cfg.probe, "probe")
    settings = validated(RecognitionSettings, cfg.recognition, "recognition")
    wheel = EmotionWheel.load(probe_settings.wheel)
    scenarios = load_scenarios(cfg.scenarios, limit=cfg.limit)
    unlabelled = [s.id for s in scenarios if s.emotion not in wheel.index]
    if unlabelled:
        raise ConfigError(f"scenarios: {len(unlabelled)} rows have no label in the {wheel.name!r} wheel "
                          f"(first: {unlabelled[0]}); persona bias needs labelled scenarios")
    out_dir = output_dir(cfg)
    model = build_model(cfg.model, cfg)
    agent = PersonaAgent(persona, wheel)
    probe = EmotionProbe(model, wheel, **{**probe_settings.model_dump(exclude={"wheel"}), "template": agent.probe_template})
    # Contextual calibration: the persona's prior over emotions when there is nothing to read.
    prior = probe.distribution(settings.content_free_inputs).mean(axis=0)
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
        if "free_text" in state:
            frame.insert(2, "chat_reply", [a["reply"] for a in state["free_text"]])
            frame.insert(3, "chat_predicted", [a["predicted"] for a in state["free_text"]])
        return frame

    manifest = PartsManifest(model=model.name, settings={**probe.settings.model_dump(), **settings.model_dump()},
                             words=wheel.words)
    table = run_in_parts(scenarios, out_dir / "recognition_parts", manifest, compute, probe_settings.chunk_size,
                         label=f"{persona.name} on {model.name}", show_progress=cfg.progress)
    table = with_labels(table, scenarios)
    P = table[wheel.words].to_numpy(dtype=np.float64)
    words = np.array(wheel.words)
    table.insert(4, "predicted", words[P.argmax(axis=1)])
    table.insert(5, "predicted_calibrated", words[calibrate(P, prior).argmax(axis=1)])
    table.to_parquet(out_dir / "predictions.parquet", index=False)
    metrics = {"persona": persona.name, "phrase": persona.phrase, "model": model.name,
               "scenarios": len(table), **_accuracies(table, wheel)}
    # Strict JSON: an undefined value (an accuracy over no rows, a NaN prior) is null.
    write_json_atomic(out_dir / "metrics.json", metrics)
    write_json_atomic(out_dir / "prior.json", dict(zip(wheel.words, prior.tolist())))
    write_manifest(out_dir, cfg, models={"persona": model}, timings=context.timings, started=started,
                   probe=probe.describe(), persona=persona.model_dump())
    Console().print(
        f"[bold]{persona.name}[/] ({persona.phrase or 'no persona'}): accuracy {metrics['accuracy']:.1%} over "
        f"{len(wheel.words)} words, {metrics['primary_accuracy']:.1%} over primaries; calibrated "
        f"{metrics['calibrated_accuracy']:.1%} / {metrics['calibrated_primary_accuracy']:.1%}  -> {out_dir}"
    )
    return metrics


def _accuracies(table: pd.DataFrame, wheel: EmotionWheel) -> dict[str, float]:
    result = {}
    columns = {"": "predicted", "calibrated_": "predicted_calibrated"}
    if "chat_predicted" in table.columns:
        columns["chat_"] = "chat_predicted"
    for prefix, column in columns.items():
        answered = table[column].notna()
        true, predicted = table.loc[answered, "emotion"].tolist(), table.loc[answered, column].tolist()
        fine = confusion_matrix(true, predicted, wheel.words)
        coarse = collapse_confusion(fine, wheel.words, wheel.primary_of, wheel.primaries)
        # Unanswered free-text replies count as wrong, so the denominators stay comparable.
        share = answered.mean()
        result[f"{prefix}accuracy"] = accuracy(fine) * share if fine.sum() else 0.0
        result[f"{prefix}primary_accuracy"] = accuracy(coarse) * share if coarse.sum() else 0.0
    return result
