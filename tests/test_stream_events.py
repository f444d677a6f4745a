"""Streamed tokens reach the negotiation's live stream from whatever thread they come from, and a stream
that breaks off and is retried is never shown twice."""

from __future__ import annotations

import json
import threading

from rich.console import Console

from agents.negotiation import NegotiationScenario
from emotion_probe.models.wrappers.batching import BatchingBackend
from emotion_probe.models.providers.scripted import ScriptedBackend
from emotion_probe.models.wrappers.core import CountingBackend, RetryingBackend, RetryPolicy
from emotion_probe.wheel import EmotionWheel
from agents.negotiators import negotiators
from emotion_probe.models.base import GenerateConfig
from environments.negotiation import NegotiationContext, build_negotiation_graph, initial_state
from experiments.runs.negotiation.live import LiveView

EMOTIONS = {"love": 10, "joy": 40, "surprise": 10, "anger": 10, "sadness": 10, "fear": 20}
SALES = json.dumps({"message": "A fine acorn, $7.", "predicted_customer_emotions": EMOTIONS})
CUSTOMER = json.dumps({"message": "Deal.", "my_emotions": EMOTIONS, "decision": "accept", "price": 7})
PAID = json.dumps({"paid": 7})
SCENARIO = NegotiationScenario(name="acorn", item="an acorn", description="A fine acorn.", seller_cost=1,
                               customer_persona="A squirrel.", customer_budget=10, max_turns=1)
HELLO = [{"role": "user", "content": "Say hello."}]


class BatchedScripted(ScriptedBackend):
    """A scripted model with generate_batch, as BatchingBackend drives an in-process model: the replies, and
    so their tokens, come from the batcher's worker thread. Records the threads it streamed from."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.threads: set[str] = set()

    def generate_batch(self, conversations, configs, on_tokens):
        self.threads.add(threading.current_thread().name)
        return [self.generate(messages, None, callback) for messages, callback in zip(conversations, on_tokens)]


class DropsOnce(ScriptedBackend):
    """Streams the first 12 characters of its first reply, then the connection drops (a transient error);
    after that it replies in full, as a server does when the repeated request gets through."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.dropped = False

    def generate(self, messages, config=None, on_token=None):
        if not self.dropped:
            self.dropped = True
            if on_token is not None:
                on_token(self.responses[len(self.seen)][:12])
            raise ConnectionError("the stream broke off")
        return super().generate(messages, config, on_token)


def _context(sales, customer) -> NegotiationContext:
    agents = negotiators({"salesperson": sales, "customer": customer}, max_parse_retries=0,
                         generate_config=GenerateConfig(max_tokens=256))
    return NegotiationContext(scenario=SCENARIO, agents=agents, probe=None, wheel=EmotionWheel.load("shaver"))


def _events(context: NegotiationContext) -> list[dict]:
    graph = build_negotiation_graph()
    return list(graph.stream(initial_state(0), context=context, stream_mode="custom"))


def _tokens(events: list[dict], speaker: str) -> str:
    return "".join(e["text"] for e in events if e["event"] == "token" and e["speaker"] == speaker)


def test_tokens_streamed_from_the_batcher_thread_reach_the_stream():
    sales, customer = BatchedScripted([SALES]), BatchedScripted([CUSTOMER, PAID])
    context = _context(CountingBackend(BatchingBackend(sales)), CountingBackend(BatchingBackend(customer)))
    events = _events(context)
    assert sales.threads == customer.threads == {"emolab-batcher"}  # the tokens did come from another thread
    # ScriptedBackend streams word by word, each word with a space after it.
    assert _tokens(events, "salesperson") == SALES + " "
    assert _tokens(events, "customer") == CUSTOMER + " "
    turns = [e["record"] for e in events if e["event"] == "turn"]
    assert [t["speaker"] for t in turns] == ["salesperson", "customer", "closing"] and turns[-1]["paid"] == 7


def test_a_stream_that_breaks_off_restarts_in_the_view_and_shows_its_text_once():
    sales = RetryingBackend(DropsOnce([SALES]), RetryPolicy(2, 0, 30.0), sleep=lambda seconds: None)
    context = _context(sales, ScriptedBackend([CUSTOMER, PAID]))
    events = [e for e in _events(context) if e.get("speaker") == "salesperson"]
    kinds = [e["event"] for e in events]
    restart = kinds.index("restart")
    assert kinds[0] == "start" and kinds[1:restart] == ["token"] and "restart" not in kinds[restart + 1:]
    assert events[restart]["reason"] == "ConnectionError: the stream broke off"
    assert _tokens(events[:restart], "salesperson") == SALES[:12]
    assert _tokens(events[restart:], "salesperson") == SALES + " "  # the repeat, in full (word by word)

    console = Console(record=True, width=400)
    view = LiveView(console, live=True)
    for event in events:
        view.handle(event)
    lines = console.export_text().splitlines()
    notice = lines.index("stream broke off (ConnectionError: the stream broke off); again from the start")
    assert lines[notice - 1].rstrip() == ("salesperson " + SALES[:12]).rstrip()  # the broken stream ends its line
    assert lines[notice + 1].rstrip() == "salesperson " + SALES  # the repeat, on a line of its own


def test_a_consumer_without_restart_gets_only_the_text_past_what_it_has():
    backend = RetryingBackend(DropsOnce(["Hello there, friend"]), RetryPolicy(2, 0, 30.0),
                              sleep=lambda seconds: None)
    pieces: list[str] = []
    assert backend.generate(HELLO, on_token=pieces.append).text == "Hello there, friend"
    assert pieces[0] == "Hello there," and "".join(pieces) == "Hello there, friend "
