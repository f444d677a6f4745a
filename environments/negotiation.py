"""The negotiation environment: a salesperson sells an item to a customer, turn by turn.

    START -> (opening speaker) -> salesperson <-> customer -> probe_customer -> ... -> closing -> END

The environment is given everything it plays with (`NegotiationContext`): the scenario, validated once by
the run; an agent per role, which it asks `act(view)` without asking who plays (agents.negotiators); the
termination rules (environments.rules); and the shared emotion probe. Each customer message is scored by
the probe; the running co-occurrence of its primary-level distributions gives a matching matrix over the
conversation. The graph state keeps only what changes: the records (agents.records, as plain data a
checkpoint holds), the status and the co-occurrence. A closing step asks the customer what it paid.
"""

from __future__ import annotations

import contextvars
import operator
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict

import numpy as np
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime

from agents.negotiation import NegotiationScenario
from agents.negotiators import AgentView, Negotiator, turn_fields
from agents.records import (
    ClosingRecord,
    CustomerTurnRecord,
    ProbeRecord,
    Role,
    SalespersonTurnRecord,
    dialogue,
    records_from,
)
from emotion_probe.analysis.hierarchy import cooccurrence, matching_matrix
from emotion_probe.probe import EmotionProbe
from emotion_probe.wheel import EmotionWheel
from environments.rules import Rule, RuleInput, outcome, rules_for
from environments.timing import NodeTimings, timed

Status = Literal["running", "deal", "walk_away", "max_turns"]


def add_matrices(left: list[list[float]] | None, right: list[list[float]] | None) -> list[list[float]]:
    """Reducer: co-occurrence accumulates over the conversation."""
    if not left:
        return right or []
    if not right:
        return left
    return (np.asarray(left) + np.asarray(right)).tolist()


class NegotiationState(TypedDict, total=False):
    trial: int
    turns: Annotated[list[dict], operator.add]  # one agents.records line per message, appended
    status: Status
    probe_cooccurrence: Annotated[list[list[float]], add_matrices]  # P x P (P primaries), over customer messages


@dataclass(frozen=True)
class NegotiationContext:
    """Per-run settings, passed as the graph's context (not globals)."""

    #: The scenario as the run plays it (customer persona merged), validated once by the run.
    scenario: NegotiationScenario
    #: Who plays each role; the environment asks them the same way whoever they are.
    agents: Mapping[Role, Negotiator]
    probe: EmotionProbe | None
    #: The run's wheel, loaded once: its primaries are the emotions the agents report and predict, and
    #: the probe's per-primary mass is taken over them.
    wheel: EmotionWheel
    #: What ends the talk (environments.rules); None: the scenario's own `rules`.
    rules: tuple[Rule, ...] | None = None
    timings: NodeTimings | None = None  # wall time per node, for the run manifest

    def __post_init__(self) -> None:
        # One wheel per run: a probe over another wheel would score other emotions than the agents report.
        if self.probe is not None and list(self.probe.wheel.primaries) != list(self.wheel.primaries):
            raise ValueError(f"the probe's wheel {self.probe.wheel.name!r} has other primaries than the "
                             f"negotiation's wheel {self.wheel.name!r}")
        if self.rules is None:
            object.__setattr__(self, "rules", rules_for(self.scenario))

    @property
    def emotions(self) -> tuple[str, ...]:
        """The emotions of every report and prediction, in order: the wheel's primaries."""
        return tuple(self.wheel.primaries)


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


class _ConsoleEvents:
    """An agent's turn events as custom stream events, tagged with the speaker, turn and trial the console
    shows. Taken in the node's thread: tokens may stream from the batcher's thread (see `_emitter`)."""

    def __init__(self, speaker: Role, turn: int, trial: int | None):
        self.emit, self.speaker, self.turn, self.trial = _emitter(), speaker, turn, trial

    def start(self) -> None:
        self.emit("start", speaker=self.speaker, turn=self.turn, trial=self.trial)

    def token(self, text: str) -> None:
        self.emit("token", speaker=self.speaker, text=text, trial=self.trial)

    def restart(self, reason: str) -> None:
        self.emit("restart", speaker=self.speaker, reason=reason, trial=self.trial)

    def retry(self, attempt: int, of: int, reason: str) -> None:
        self.emit("retry", speaker=self.speaker, attempt=attempt, of=of, reason=reason, trial=self.trial)


def _view(state: NegotiationState, ctx: NegotiationContext, role: Role) -> AgentView:
    talk = tuple(dialogue(records_from(state.get("turns", []))))
    return AgentView(role=role, scenario=ctx.scenario, dialogue=talk, emotions=ctx.emotions,
                     trial=state.get("trial"), turn=len(talk), events=_ConsoleEvents(role, len(talk), state.get("trial")))


_TURN_RECORDS = {"salesperson": SalespersonTurnRecord, "customer": CustomerTurnRecord}


def _agent_turn(state: NegotiationState, runtime: Runtime[NegotiationContext], role: Role) -> dict:
    ctx = runtime.context
    view = _view(state, ctx, role)
    turn = ctx.agents[role].act(view)
    # The labels of the report's values travel with it, so a transcript line says what its numbers are.
    record = _TURN_RECORDS[role](trial=view.trial, turn=view.turn, **turn.call.model_dump(), text=turn.text,
                                 emotions=list(ctx.emotions), **turn_fields(role, turn.parsed))
    update: dict[str, Any] = {"turns": [record.line()]}
    if role == "customer":
        ended = outcome(ctx.rules, RuleInput(record, (*view.dialogue, record), ctx.scenario))
        if ended is not None:
            update["status"] = ended
    _emit("turn", record=record.line())
    return update


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
    record = ProbeRecord(trial=state.get("trial"), turn=last["turn"], emotions=list(runtime.context.emotions),
                         probe=dict(zip(probe.words, np.round(distribution, 6).tolist())),
                         probe_primary=(100 * by_primary / max(by_primary.sum(), 1e-12)).round(3).tolist())
    _emit("probe", record=record.line())
    return {"turns": [record.line()], "probe_cooccurrence": cooccurrence(by_primary[None, :]).tolist()}


def closing(state: NegotiationState, runtime: Runtime[NegotiationContext]) -> dict:
    """Ask the customer what it paid: a structured price, or none."""
    ctx = runtime.context
    view = _view(state, ctx, "customer")
    closed = ctx.agents["customer"].close(view)
    paid = closed.paid
    if state.get("status") != "deal" and paid is not None:
        # Only a talk that ended in a deal can have a price; a claim otherwise is recorded, not believed.
        paid_claimed, paid = paid, None
    else:
        paid_claimed = paid
    record = ClosingRecord(trial=view.trial, turn=view.turn, paid=paid, paid_claimed=paid_claimed, parse_status=closed.parse_status, raw=closed.raw)
    _emit("turn", record=record.line())
    return {"turns": [record.line()]}


def _after_probe(state: NegotiationState) -> str:
    return "salesperson" if state.get("status", "running") == "running" else "closing"


def _opening(state: NegotiationState, runtime: Runtime[NegotiationContext]) -> str:
    return runtime.context.scenario.opening_speaker


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


def initial_state(trial: int) -> NegotiationState:
    return {"trial": trial, "turns": [], "status": "running", "probe_cooccurrence": []}
