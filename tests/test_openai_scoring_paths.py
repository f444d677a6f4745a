"""Which path the OpenAI backend scores through, and when it refuses, against scripted loopback servers:
the fallback from completions to chat top_logprobs (warned and recorded), the chat API's cap on
top_logprobs under the paper's method, and the echo alignment rule."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from loopback import Reply, ScriptedServer, chat_reply, echo_reply

from emotion_probe import ConfigError
from emotion_probe.models.providers.openai import CHAT_TOP_LOGPROBS_MAX, EchoUnavailable, OpenAIBackend
from experiments.app.config import build_probe

NOT_FOUND = Reply(404, {"error": {"message": "no completions here", "type": "test", "code": None}})
CHAT_TOP = {" happiness": -0.5, " fear": -1.5, " sadness": -2.0, " the": -2.5}


def _chat_only(path: str, body: dict):
    """A chat-only server: completions are refused; chat answers with fixed top_logprobs."""
    if path.endswith("/chat/completions"):
        return chat_reply(body["model"], "happiness", CHAT_TOP)
    return NOT_FOUND


@pytest.fixture()
def chat_only(request):
    server = ScriptedServer(_chat_only)
    request.addfinalizer(server.close)
    return server


def test_fallback_to_chat_is_warned_and_recorded(chat_only, caplog):
    backend = OpenAIBackend(model="m", base_url=chat_only.url)
    probe = build_probe(backend, wheel="ekman")
    with caplog.at_level(logging.WARNING, logger="emotion_probe.models.providers.openai"):
        dist = probe.distribution(["I won the final.", "My dog died."])
    # Both steps down are said: echo (exact) to top_logprobs, and completions to chat.
    assert "exact echo scoring unavailable" in caplog.text
    assert ("completions with logprobs are unavailable (refused with HTTP 404); probing through chat top_logprobs "
            "instead, which sends the text as a user message") in caplog.text
    assert caplog.text.count("probing through chat top_logprobs") == 1  # once, not once per request
    assert probe.last_method == "chat-top_logprobs" and probe.last_exact is False
    assert backend.describe()["score_methods"] == ["chat-top_logprobs"]
    words = probe.words
    expected = np.exp([CHAT_TOP[" happiness"], CHAT_TOP[" fear"], CHAT_TOP[" sadness"]])
    row = dist[0]
    np.testing.assert_allclose(row[[words.index("happiness"), words.index("fear"), words.index("sadness")]],
                               expected / expected.sum())
    # The chat request carried the text as a user turn, asking for the cap.
    chat_bodies = [body for path, body in chat_only.requests if path.endswith("/chat/completions")]
    assert chat_bodies[0]["messages"] == [{"role": "user", "content": "I won the final. The emotion in this sentence is"}]
    assert chat_bodies[0]["top_logprobs"] == CHAT_TOP_LOGPROBS_MAX


def test_the_run_manifest_records_the_scoring_path(chat_only, tmp_path):
    scenarios = tmp_path / "s.jsonl"
    scenarios.write_text(json.dumps({"id": "a", "text": "I won the final."}) + "\n", encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "experiments.app.main", "experiment=probe", "model=openai", "model.model=m",
         f"model.base_url={chat_only.url}", "probe.wheel=ekman", f"scenarios={scenarios}",
         f"hydra.run.dir={tmp_path / 'run'}", "progress=false"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "EMOLAB_RESPONSE_CACHE": str(tmp_path / "responses.sqlite")},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "probing through chat top_logprobs" in result.stdout + result.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["model"]["score_methods"] == ["chat-top_logprobs"]
    assert manifest["probe"]["scored_with"] == "chat-top_logprobs" and manifest["probe"]["exact"] is False


@pytest.mark.parametrize("via", ["auto", "chat"])
def test_paper_method_refuses_a_top_k_above_the_chat_cap(chat_only, via):
    backend = OpenAIBackend(model="m", base_url=chat_only.url, top_logprobs_via=via)
    with pytest.raises(ConfigError, match=r"asked for the top 100 next tokens, .* at most 20 .* set probe.top_k <= 20"):
        build_probe(backend, wheel="ekman", method="paper", top_k=100).distribution(["I won the final."])
    chat_requests = [path for path, _ in chat_only.requests if path.endswith("/chat/completions")]
    assert chat_requests == []  # refused before asking: a top-20 answer must not pass for a top-100 one
    # Within the cap, the paper's method runs on the chat path.
    probe = build_probe(backend, wheel="ekman", method="paper", top_k=20)
    dist = probe.distribution(["I won the final."])
    # The server's own probabilities, never renormalized over the wheel (the authors' pipeline).
    assert np.allclose(np.sort(dist[dist > 0]), np.exp([-2.0, -1.5, -0.5]))
    assert backend.describe()["score_methods"] == ["chat-top_logprobs"]


def test_fallback_scoring_cuts_top_logprobs_to_the_cap_with_a_warning(chat_only, caplog):
    backend = OpenAIBackend(model="m", base_url=chat_only.url, probe_method="top_logprobs",
                            top_logprobs=50)
    with caplog.at_level(logging.WARNING, logger="emotion_probe.models.providers.openai"):
        result = backend.score(["I feel"], [" happiness", " calm"])
    assert "model.top_logprobs=50 is cut to 20" in caplog.text
    assert result.logprobs.tolist() == [[-0.5, -np.inf]]
    assert [body["top_logprobs"] for path, body in chat_only.requests if path.endswith("/chat/completions")] == [20]


# ------------------------------------------------------------------------ echo alignment
# Each continuation's echo is built to give one verdict: the generated token " ." is the top alternative
# at its own position only (aligned), at the one before only (shifted), or at both (no verdict).
TOPS = {"aligned": ({" x": -0.1}, {" .": -0.1}), "shifted": ({" .": -0.1}, {" x": -0.1}),
        "none": ({" .": -0.1}, {" .": -0.1})}


def _echo_server(verdicts: dict[str, str]):
    def respond(path: str, body: dict):
        prompt = body["prompt"]
        continuation = next(c for c in verdicts if prompt.endswith(c))
        before, here = TOPS[verdicts[continuation]]
        tokens = ["I", " feel", continuation, " ."]
        return echo_reply(body["model"], tokens, [None, -1.0, -2.0, -0.1], [None, {" feel": -1.0}, before, here], " .")

    return ScriptedServer(respond)


@pytest.mark.parametrize(
    "kinds,accepted",
    [
        (["aligned", "aligned", "aligned"], True),
        (["aligned", "aligned", "shifted"], True),   # aligned verdicts outnumber shifted ones
        (["aligned", "shifted", "shifted"], False),  # one aligned verdict is not enough
        (["aligned", "shifted", "none"], False),     # a tie is refused
        (["shifted", "shifted", "shifted"], False),
    ],
)
def test_echo_alignment_rule(request, kinds, accepted):
    continuations = [" joy", " fear", " anger"]
    server = _echo_server(dict(zip(continuations, kinds)))
    request.addfinalizer(server.close)
    backend = OpenAIBackend(model="m", base_url=server.url, probe_method="echo")
    if accepted:
        result = backend.score(["I feel"], continuations)
        assert result.exact and result.logprobs.tolist() == [[-2.0, -2.0, -2.0]]
        assert backend.describe()["echo_alignment"] == {"aligned": kinds.count("aligned"),
                                                        "shifted": kinds.count("shifted"), "unchecked": 0}
    else:
        with pytest.raises(EchoUnavailable, match=f"shifted by one position in {kinds.count('shifted')} of "
                                                  f"{kinds.count('aligned') + kinds.count('shifted')} checked"):
            backend.score(["I feel"], continuations)


def test_echo_with_no_verdict_is_accepted_with_a_warning_and_counted(request, caplog):
    continuations = [" joy", " fear"]
    server = _echo_server(dict.fromkeys(continuations, "none"))
    request.addfinalizer(server.close)
    backend = OpenAIBackend(model="m", base_url=server.url, probe_method="echo")
    with caplog.at_level(logging.WARNING, logger="emotion_probe.models.providers.openai"):
        result = backend.score(["I feel"], continuations)
    assert result.exact and result.logprobs.tolist() == [[-2.0, -2.0]]
    assert "no echo response could be checked for alignment" in caplog.text
    assert backend.describe()["echo_alignment"] == {"aligned": 0, "shifted": 0, "unchecked": 2}
