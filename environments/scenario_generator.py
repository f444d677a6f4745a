"""A LangGraph environment that writes validated scenarios for one emotion word at a time.

    ask the writer -> check every scenario (leak, duplicate) -> enough? -> append to JSONL
                ^____________ regenerate the shortfall, up to max_attempts ____|
"""

from __future__ import annotations

import json
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.scenario_writer import prompt_id, request_scenarios
from emotion_probe.models.base import GenerateConfig, ModelBackend
from emotion_probe.scenario_checks import normalized, problems


@dataclass(frozen=True)
class GeneratorContext:
    """Per-run settings, passed through the graph's context rather than globals."""

    model: ModelBackend
    output: Path
    per_emotion: int
    max_attempts: int
    max_parse_retries: int
    generate_config: GenerateConfig


class GeneratorState(TypedDict):
    emotion: str
    primary: str
    needed: int  # scenarios still to write for this emotion
    existing: list[str]  # normalized texts already in the file (for duplicates)
    first_index: int  # the next free "<emotion>-<n>" number
    accepted: Annotated[list[str], operator.add]  # merged across attempts
    rejected: Annotated[list[dict], operator.add]
    attempts: int
    status: Literal["running", "complete", "gave_up"]


def write_scenarios(state: GeneratorState, runtime: Runtime[GeneratorContext]) -> dict:
    ctx = runtime.context
    shortfall = state["needed"] - len(state["accepted"])
    # A new seed per word and attempt: a rerun of the same request with the same seed would only
    # repeat the rejected batch (and a response cache would hand it straight back).
    word_key = int.from_bytes(state["emotion"].encode()[:8].ljust(8, b"\0"), "little")
    config = ctx.generate_config.reseeded(word_key, state["attempts"])
    texts, parse_errors = request_scenarios(
        ctx.model, state["emotion"], shortfall, state["accepted"], config, ctx.max_parse_retries
    )
    seen = set(state["existing"]) | {normalized(t) for t in state["accepted"]}
    accepted, rejected = [], [{"text": None, "problems": [f"unparseable reply: {e}"]} for e in parse_errors]
    for text in texts:
        found = problems(text, state["emotion"], seen)
        if found or len(accepted) >= shortfall:
            rejected.append({"text": text, "problems": found or ["more than requested"]})
            continue
        accepted.append(text)
        seen.add(normalized(text))
    attempts = state["attempts"] + 1
    total = len(state["accepted"]) + len(accepted)
    status = "complete" if total >= state["needed"] else "gave_up" if attempts >= ctx.max_attempts else "running"
    return {"accepted": accepted, "rejected": rejected, "attempts": attempts, "status": status}


def append_rows(state: GeneratorState, runtime: Runtime[GeneratorContext]) -> dict:
    """Append the accepted rows; rows already in the file are never rewritten."""
    ctx = runtime.context
    ctx.output.parent.mkdir(parents=True, exist_ok=True)
    with ctx.output.open("a", encoding="utf-8") as out:
        for offset, text in enumerate(state["accepted"]):
            row = {"id": f"{state['emotion']}-{state['first_index'] + offset}", "text": text,
                   "emotion": state["emotion"], "primary": state["primary"],
                   # Provenance: which model wrote it, under which instructions.
                   "source": f"{getattr(ctx.model, 'name', type(ctx.model).__name__)}; prompt {prompt_id()}"}
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {}


def _next_step(state: GeneratorState) -> str:
    return "write_scenarios" if state["status"] == "running" else "append_rows"


def build_scenario_generator_graph():
    """Compile the generator. Invoke once per emotion with `context=GeneratorContext(...)`."""
    graph = StateGraph(GeneratorState, context_schema=GeneratorContext)
    graph.add_node("write_scenarios", write_scenarios)
    graph.add_node("append_rows", append_rows)
    graph.add_edge(START, "write_scenarios")
    graph.add_conditional_edges("write_scenarios", _next_step, ["write_scenarios", "append_rows"])
    graph.add_edge("append_rows", END)
    return graph.compile()
