"""A LangGraph recognition environment: a persona agent reads labelled scenarios and names their emotion.

    START -> recognize_by_probe -> (free_text?) -> answer_in_free_text -> END

The probe node scores the next word after "<scenario>\nAs <persona>, I think the emotion involved
in this situation is" (with the paper probe, it also keeps the rank order and the authors' first
wheel word, their recognition answer); the optional chat node asks the same question in free text, for
backends without log-probabilities. The state records both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypedDict

import numpy as np
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.persona import PersonaAgent, RecognitionView
from emotion_probe.models.base import GenerateConfig, ModelBackend
from emotion_probe.probe import FIRST_WORD_COLUMN, RANKED_COLUMN, EmotionProbe
from emotion_probe.scenarios import Scenario
from environments.timing import NodeTimings, timed


@dataclass(frozen=True)
class RecognitionContext:
    agent: PersonaAgent
    probe: EmotionProbe  # built with agent.probe_template
    chat_model: ModelBackend | None = None  # set to also answer in free text
    generate_config: GenerateConfig = field(default_factory=lambda: GenerateConfig(max_tokens=12))
    timings: NodeTimings | None = None  # wall time per node, for the run manifest


class RecognitionState(TypedDict, total=False):
    scenarios: list[Scenario]
    distributions: np.ndarray  # [len(scenarios), K]
    ranked: list[list[str]]  # paper probe only: the wheel words among the top-k tokens, in rank order
    first_words: list[str | None]  # paper probe only: the authors' answer, None where no word was found
    free_text: list[dict]  # {"reply": str, "predicted": str | None}


def recognize_by_probe(state: RecognitionState, runtime: Runtime[RecognitionContext]) -> dict:
    probe = runtime.context.probe
    frame = probe.frame([s.text for s in state["scenarios"]])
    update = {"distributions": frame[probe.words].to_numpy(dtype=np.float64)}
    if RANKED_COLUMN in frame.columns:
        update["ranked"] = frame[RANKED_COLUMN].tolist()
        update["first_words"] = frame[FIRST_WORD_COLUMN].tolist()
    return update


def answer_in_free_text(state: RecognitionState, runtime: Runtime[RecognitionContext]) -> dict:
    ctx = runtime.context
    turns = [ctx.agent.act(RecognitionView(scenario.text, ctx.chat_model, ctx.generate_config))
             for scenario in state["scenarios"]]
    return {"free_text": [{"reply": turn.reply, "predicted": turn.predicted} for turn in turns]}


def _after_probe(state: RecognitionState, runtime: Runtime[RecognitionContext]) -> str:
    return "answer_in_free_text" if runtime.context.chat_model is not None else END


def build_recognition_graph():
    """Compile the environment; invoke with {"scenarios": [...]} and context=RecognitionContext(...)."""
    graph = StateGraph(RecognitionState, context_schema=RecognitionContext)
    graph.add_node("recognize_by_probe", timed("recognize_by_probe", recognize_by_probe))
    graph.add_node("answer_in_free_text", timed("answer_in_free_text", answer_in_free_text))
    graph.add_edge(START, "recognize_by_probe")
    graph.add_conditional_edges("recognize_by_probe", _after_probe, ["answer_in_free_text", END])
    graph.add_edge("answer_in_free_text", END)
    return graph.compile()
