"""The negotiation environment: a salesperson sells an item to a customer, turn by turn.

    START -> (opening speaker) -> salesperson <-> customer -> probe_customer -> ... -> closing -> END

Each customer message is scored by the shared emotion probe; the running co-occurrence of
the probe's primary-level distributions gives a matching matrix over the conversation.
The emotions the agents report and predict are the run's wheel's primaries (the context's `wheel`).
Termination is the structured `status` field; a closing step asks the customer what it paid.
"""

from __future__ import annotations

import contextvars
import operator
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, TypedDict

import numpy as np
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from agents.negotiation import (
    NEUTRAL_LINE,
    ClosingAnswer,
    NegotiationScenario,
    agent_turns,
    closing_messages,
)
from agents.price import parse_price
from agents.structured import call_structured, recover_message
from emotion_probe.models.base import GenerateConfig, ModelBackend
from emotion_probe.analysis.hierarchy import cooccurrence, matching_matrix
from emotion_probe.probe import EmotionProbe
from emotion_probe.wheel import EmotionWheel
from environments.timing import NodeTimings, timed

Status = Literal["running", "deal", "walk_away", "max_turns"]
Role = Literal["salesperson", "customer"]


def add_matrices(left: list[list[float]] | None, right: list[list[float]] | None) -> list[list[float]]:
    """Reducer: co-occurrence accumulates over the conversation."""
    if not left:
        return right or []
    if not right:
        return left
    return (np.asarray(left) + np.asarray(right)).tolist()


class NegotiationState(TypedDict, total=False):
    scenario: dict  # NegotiationScenario, as data
    trial: int
    turns: Annotated[list[dict], operator.add]  # one record per message, appended
    customer_turns: int
    status: Status
    agreed_price: float | None
    final_price: float | None  # what the customer says it paid, at closing
    probe_cooccurrence: Annotated[list[list[float]], add_matrices]  # P x P (P primaries), over customer messages


@dataclass(frozen=True)
class NegotiationContext:
    """Per-run settings, passed as the graph's context (not globals)."""

    salesperson_model: ModelBackend | None
    customer_model: ModelBackend | None
    probe: EmotionProbe | None
    #: The run's wheel, loaded once: its primaries are the emotions the agents report and predict, and
    #: the probe's per-primary mass is taken over them.
    wheel: EmotionWheel
    max_parse_retries: int = 2
    #: None: any report with a positive sum is renormalized to 100; a number: reports whose raw sum is
    #: further than this from 100 are invalid (and retried), for studies that want the sum itself right.
    report_sum_tolerance: float | None = None
    generate_config: GenerateConfig = field(default_factory=lambda: GenerateConfig(max_tokens=256))
    player: Role | None = None  # a person types this role's turns
    timings: NodeTimings | None = None  # wall time per node, for the run manifest

    def __post_init__(self) -> None:
        # One wheel per run: a probe over another wheel would score other emotions than the agents report.
        if self.probe is not None and list(self.probe.wheel.primaries) != list(self.wheel.primaries):
            raise ValueError(f"the probe's wheel {self.probe.wheel.name!r} has other primaries than the "
                             f"negotiation's wheel {self.wheel.name!r}")

    @property
    def emotions(self) -> tuple[str, ...]:
        """The emotions of every report and prediction, in order: the wheel's primaries."""
        return tuple(self.wheel.primaries)


def turn_config(ctx: NegotiationContext, trial: int | None, turn: int) -> GenerateConfig:
    """The run's sampling settings with a seed of its own for this trial and turn.

    One seed for every call would make trials replay each other word for word (their first
    prompts are identical), and a response cache would then hand every trial the same talk.
    """
    return ctx.generate_config.reseeded(trial or 0, turn)


def _scenario(state: NegotiationState) -> NegotiationScenario:
    return NegotiationScenario.model_validate(state["scenario"])


def _dialogue_length(state: NegotiationState) -> int:
    return sum(1 for t in state.get("turns", []) if t["speaker"] in ("salesperson", "customer"))


def _emit(kind: str, **payload: Any) -> None:
    """Send a custom stream event; only from a node's own thread (see `_emitter` for callbacks)."""
    _emitter()(kind, **payload)


def _emitter() -> Callable[..., None]:
    """`emit(kind, **payload)`, callable from any thread: for callbacks such as `on_token`.

    LangGraph's stream writer finds its run through context variables, which exist only in the node's
    own thread, and `on_token` runs where the backend streams: on BatchingBackend's worker thread, for
    an in-process model. So the writer and the node's context are taken here, in the node's thread,
    and each event is written inside that context. One Context cannot be entered by two threads at
    once, hence the lock. Outside a streaming run there is no writer, and events go nowhere.
    """
    try:
        writer = get_stream_writer()
    except RuntimeError:  # invoked outside a streaming run
        return lambda kind, **payload: None
    context = contextvars.copy_context()
    lock = threading.Lock()

    def emit(kind: str, **payload: Any) -> None:
        with lock:
            context.run(writer, {"event": kind, **payload})

    return emit


class _TokenEvents:
    """An agent turn's `on_token`: each piece as a "token" event, and a "restart" event when a stream that
    broke off midway starts again (RetryingBackend calls `restart`), so the view can start its block anew."""

    def __init__(self, emit: Callable[..., None], speaker: Role, trial: int | None):
        self.emit, self.speaker, self.trial = emit, speaker, trial

    def __call__(self, text: str) -> None:
        self.emit("token", speaker=self.speaker, text=text, trial=self.trial)

    def restart(self, reason: str) -> None:
        self.emit("restart", speaker=self.speaker, reason=reason, trial=self.trial)


def _agent_turn(state: NegotiationState, runtime: Runtime[NegotiationContext], role: Role) -> dict:
    ctx = runtime.context
    scenario = _scenario(state)
    turn_number = _dialogue_length(state)
    build, schema = agent_turns(ctx.emotions)[role]
    if ctx.player == role:
        answer = interrupt({"role": role, "schema": schema.__name__, "turn": turn_number,
                            "emotions": list(ctx.emotions)})
        parsed = schema.model_validate(answer)
        record = {"raw": None, "parse_status": "human", "attempts": 1, "errors": [], "latency_s": 0.0, "tokens": 0,
                  "truncated": 0}
    else:
        model = ctx.salesperson_model if role == "salesperson" else ctx.customer_model
        trial = state.get("trial")
        emit = _emitter()  # taken here, in the node's thread: tokens may stream from the batcher's thread
        emit("start", speaker=role, turn=turn_number, trial=trial)
        reply = call_structured(
            model, build(scenario, state.get("turns", [])), schema, max_retries=ctx.max_parse_retries,
            config=turn_config(ctx, trial, turn_number),
            on_token=_TokenEvents(emit, role, trial),
            on_retry=lambda attempt, of, reason: emit("retry", speaker=role, attempt=attempt, of=of, reason=reason,
                                                      trial=trial),
            context={"sum_tolerance": ctx.report_sum_tolerance},
        )
        parsed = reply.parsed
        record = {"raw": reply.raw, "parse_status": reply.parse_status, "attempts": reply.attempts,
                  "errors": reply.errors, "latency_s": round(reply.latency_s, 3), "tokens": reply.completion_tokens,
                  "truncated": reply.truncated}
    turn = {"trial": state.get("trial"), "turn": turn_number, "speaker": role, **record}
    # `text` is all the other side ever reads (agents.negotiation._view). After a failed turn it is
    # the message recovered from the partial JSON, never another field, or a fixed neutral line;
    # the raw reply stays in the record under `raw`, for audit.
    turn["text"] = parsed.message if parsed is not None else recover_message(record["raw"] or "") or NEUTRAL_LINE
    update: dict[str, Any] = {}
    # The labels of the report's values, so a transcript line says what its numbers are.
    turn["emotions"] = list(ctx.emotions)
    if role == "salesperson":
        emotions = parsed.predicted_customer_emotions if parsed else None
        turn["prediction"] = emotions.normalized() if emotions else None
        turn["prediction_sum"] = emotions.raw_sum if emotions else None
    else:
        emotions = parsed.my_emotions if parsed else None
        turn["report"] = emotions.normalized() if emotions else None
        turn["report_sum"] = emotions.raw_sum if emotions else None
        turn["decision"] = parsed.decision if parsed else "continue"
        turn["price"] = parsed.price if parsed else None
        customer_turns = state.get("customer_turns", 0) + 1
        update["customer_turns"] = customer_turns
        if parsed and parsed.decision == "accept":
            update.update(status="deal", agreed_price=parsed.price)
        elif parsed and parsed.decision == "walk_away":
            update["status"] = "walk_away"
        elif customer_turns >= scenario.max_turns:
            update["status"] = "max_turns"
    _emit("turn", record=turn)
    return {"turns": [turn], **update}


def salesperson(state: NegotiationState, runtime: Runtime[NegotiationContext]) -> dict:
    return _agent_turn(state, runtime, "salesperson")


def customer(state: NegotiationState, runtime: Runtime[NegotiationContext]) -> dict:
    return _agent_turn(state, runtime, "customer")


def probe_customer(state: NegotiationState, runtime: Runtime[NegotiationContext]) -> dict:
    """The shared emotion probe on the customer's latest message."""
    probe = runtime.context.probe
    last = state["turns"][-1]
    if probe is None or not last.get("text", "").strip():
        return {}
    distribution = probe.distribution([last["text"]])[0]
    # The context checked that the probe's wheel has the run's primaries, in the same order.
    by_primary = np.asarray(probe.wheel.primary_mass(distribution), dtype=float)
    record = {"trial": state.get("trial"), "turn": last["turn"], "speaker": "probe",
              "emotions": list(runtime.context.emotions),
              "probe": dict(zip(probe.words, np.round(distribution, 6).tolist())),
              "probe_primary": (100 * by_primary / max(by_primary.sum(), 1e-12)).round(3).tolist()}
    _emit("probe", record=record)
    return {"turns": [record], "probe_cooccurrence": cooccurrence(by_primary[None, :]).tolist()}


def closing(state: NegotiationState, runtime: Runtime[NegotiationContext]) -> dict:
    """Ask the customer what it paid: a structured price, or none."""
    ctx = runtime.context
    scenario = _scenario(state)
    dialogue = [t for t in state["turns"] if t["speaker"] in ("salesperson", "customer")]
    if ctx.player == "customer":
        answer = interrupt({"role": "customer", "schema": "ClosingAnswer", "turn": _dialogue_length(state)})
        paid = ClosingAnswer.model_validate(answer).paid
        status, raw = "human", None
    else:
        reply = call_structured(ctx.customer_model, closing_messages(scenario, dialogue, ctx.emotions), ClosingAnswer,
                                max_retries=ctx.max_parse_retries,
                                config=turn_config(ctx, state.get("trial"), _dialogue_length(state)))
        paid = reply.parsed.paid if reply.parsed else parse_price(reply.raw)
        status, raw = reply.parse_status, reply.raw
    if state.get("status") != "deal" and paid is not None:
        # Only a talk that ended in a deal can have a price; a claim otherwise is recorded, not believed.
        paid_claimed, paid = paid, None
    else:
        paid_claimed = paid
    record = {"trial": state.get("trial"), "turn": _dialogue_length(state), "speaker": "closing", "paid": paid,
              "paid_claimed": paid_claimed, "parse_status": status, "raw": raw}
    _emit("turn", record=record)
    return {"turns": [record], "final_price": paid}


def _after_probe(state: NegotiationState) -> str:
    return "salesperson" if state.get("status", "running") == "running" else "closing"


def _opening(state: NegotiationState) -> str:
    return _scenario(state).opening_speaker


def matching_over_conversation(state: NegotiationState, emotions: Sequence[str]) -> np.ndarray:
    """P(b | a) between the run's primaries (`emotions`), from the probe's distributions over the customer's messages."""
    C = np.asarray(state.get("probe_cooccurrence") or np.zeros((len(emotions),) * 2))
    return matching_matrix(C)


def build_negotiation_graph(checkpointer: Any = None):
    """Compile the negotiation graph. Invoke with an initial state and context=NegotiationContext(...)."""
    graph = StateGraph(NegotiationState, context_schema=NegotiationContext)
    for name, node in [("salesperson", salesperson), ("customer", customer), ("probe_customer", probe_customer),
                       ("closing", closing)]:
        graph.add_node(name, timed(name, node))
    graph.add_conditional_edges(START, _opening, ["salesperson", "customer"])
    graph.add_edge("salesperson", "customer")
    graph.add_edge("customer", "probe_customer")
    graph.add_conditional_edges("probe_customer", _after_probe, ["salesperson", "closing"])
    graph.add_edge("closing", END)
    return graph.compile(checkpointer=checkpointer)


def initial_state(scenario: NegotiationScenario, trial: int) -> NegotiationState:
    return {"scenario": scenario.model_dump(), "trial": trial, "turns": [], "customer_turns": 0,
            "status": "running", "agreed_price": None, "final_price": None, "probe_cooccurrence": []}
