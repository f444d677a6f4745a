"""A scriptable OpenAI-compatible server on loopback, for tests that need exact responses or faults.

`ScriptedServer(respond)` calls `respond(path, body)` for each POST; it returns one of
- `Reply(status, payload)`: that JSON, with that status;
- `Raw(data)`: these bytes as the body of a 200 JSON response (malformed JSON, for instance);
- `Stream(chunks, drop_after=None)`: server-sent events; with `drop_after=n`, the connection is
  closed after n chunks, with no [DONE] and no end of the chunked body;
- `Hang()`: nothing, until the server closes (the client's timeout ends the request).
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int
    payload: dict


@dataclass
class Raw:
    data: bytes


@dataclass
class Stream:
    chunks: list[dict]
    drop_after: int | None = None


@dataclass
class Hang:
    pass


@dataclass
class ScriptedServer:
    respond: Callable[[str, dict], Reply | Raw | Stream | Hang]
    requests: list[tuple[str, dict]] = field(default_factory=list)

    def __post_init__(self) -> None:
        server = self
        self._closing = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked streams, so a dropped stream is visibly incomplete

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append((self.path, body))
                action = server.respond(self.path, body)
                if isinstance(action, Hang):
                    server._closing.wait()
                    self.close_connection = True
                elif isinstance(action, Raw):
                    self._send(200, action.data)
                elif isinstance(action, Reply):
                    self._send(action.status, json.dumps(action.payload).encode())
                else:
                    self._stream(action)

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, stream: Stream) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for number, chunk in enumerate(stream.chunks):
                    if stream.drop_after is not None and number == stream.drop_after:
                        self.wfile.flush()
                        self.close_connection = True
                        return  # the connection closes mid-body: no terminating chunk
                    self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                # A client that gave up (a cancelled request, a timeout) is what these tests provoke.
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()


def chat_reply(model: str, content: str, top_logprobs: dict[str, float] | None = None) -> Reply:
    logprobs = None
    if top_logprobs is not None:
        first = max(top_logprobs, key=top_logprobs.__getitem__)
        logprobs = {"content": [{"token": first, "logprob": top_logprobs[first], "bytes": None, "top_logprobs": [
            {"token": token, "logprob": value, "bytes": None} for token, value in top_logprobs.items()]}]}
    return Reply(200, {"id": "chat", "object": "chat.completion", "created": 0, "model": model,
                       "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                                    "logprobs": logprobs, "finish_reason": "stop"}],
                       "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}})


def chat_chunks(model: str, pieces: list[str]) -> list[dict]:
    chunks = [{"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]} for piece in pieces]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    for chunk in chunks:
        chunk.update(id="chunk", object="chat.completion.chunk", created=0, model=model)
    return chunks


def echo_reply(model: str, tokens: list[str], logprobs: list[float | None],
               top_logprobs: list[dict[str, float] | None], generated: str) -> Reply:
    """A completions echo: `tokens` are the prompt's tokens and then the generated one(s), whose text is `generated`."""
    prompt = "".join(tokens)[: len("".join(tokens)) - len(generated)]
    return Reply(200, {"id": "cmpl", "object": "text_completion", "created": 0, "model": model,
                       "choices": [{"index": 0, "text": prompt + generated, "finish_reason": "length",
                                    "logprobs": {"tokens": tokens, "token_logprobs": logprobs,
                                                 "top_logprobs": top_logprobs,
                                                 "text_offset": list(range(len(tokens)))}}],
                       "usage": {"prompt_tokens": len(tokens) - 1, "completion_tokens": 1, "total_tokens": len(tokens)}})
