"""Gather concurrent `generate` calls into one batched forward pass.

Concurrent negotiation trials each call `generate` from their own thread. On an in-process
model, one batch of 16 sequences costs little more than one sequence, so a single worker
thread collects whatever requests are waiting (up to `max_batch`), runs one left-padded
`model.generate` over all of them, and hands each caller its own text. Streaming still works:
a batch streamer routes each row's new tokens to that request's callback.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

from emotion_probe.backends.base import (
    ChatMessage,
    GenerateConfig,
    Generation,
    TokenCallback,
    as_messages,
)
from emotion_probe.backends.wrappers import BackendWrapper


@dataclass
class _Request:
    messages: list[ChatMessage]
    config: GenerateConfig
    on_token: TokenCallback | None
    future: Future = field(default_factory=Future)


class _BatchStreamer:
    """A transformers streamer for a batch: decodes each row incrementally and calls its callback."""

    def __init__(self, tokenizer, callbacks: list[TokenCallback | None], eos_id: int | None):
        self.tokenizer = tokenizer
        self.callbacks = callbacks
        self.eos_id = eos_id
        self.tokens: list[list[int]] = [[] for _ in callbacks]
        self.printed = [0] * len(callbacks)
        self.done = [False] * len(callbacks)
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first passes the prompt; skip it
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if token == self.eos_id:
                self.done[row] = True
                continue
            self.tokens[row].append(token)
            callback = self.callbacks[row]
            if callback is not None:
                text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
                # Hold back a trailing replacement char: a multi-byte character is still arriving.
                if not text.endswith("\ufffd") and len(text) > self.printed[row]:
                    callback(text[self.printed[row]:])
                    self.printed[row] = len(text)

    def end(self) -> None:
        pass


class BatchingBackend(BackendWrapper):
    """Wraps a TransformersBackend so that concurrent generate() calls share batches."""

    def __init__(self, inner, max_batch: int = 16, wait_s: float = 0.02):
        super().__init__(inner)
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._worker = threading.Thread(target=self._serve, name="emolab-batcher", daemon=True)
        self._worker.start()
        #: Sizes of the batches run so far (for tests and benchmarks).
        self.batch_sizes: list[int] = []

    def generate(
        self,
        messages: Sequence[ChatMessage | dict],
        config: GenerateConfig | None = None,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        request = _Request(as_messages(messages), config or GenerateConfig(), on_token)
        self._queue.put(request)
        return request.future.result()

    def _serve(self) -> None:
        while True:
            first = self._queue.get()
            batch = [first]
            try:
                while len(batch) < self.max_batch:
                    batch.append(self._queue.get(timeout=self.wait_s))
            except queue.Empty:
                pass
            # Only requests with the same sampling settings can share one generate() call.
            groups: dict[str, list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.config.model_dump_json(), []).append(request)
            for group in groups.values():
                try:
                    results = self._run(group)
                except BaseException as err:  # hand the failure to every caller
                    for request in group:
                        request.future.set_exception(err)
                    continue
                for request, result in zip(group, results):
                    request.future.set_result(result)

    def _run(self, group: list[_Request]) -> list[Generation]:
        import torch

        backend = self.inner
        tokenizer = backend.tokenizer
        config = group[0].config
        self.batch_sizes.append(len(group))
        prompts = [
            tokenizer.apply_chat_template([m.model_dump() for m in r.messages], add_generation_prompt=True,
                                          tokenize=False)
            for r in group
        ]
        previous_side = tokenizer.padding_side
        tokenizer.padding_side = "left"  # generation continues from the right edge of every row
        try:
            encoded = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            tokenizer.padding_side = previous_side
        streamer = _BatchStreamer(tokenizer, [r.on_token for r in group], tokenizer.eos_token_id)
        sampling = {"do_sample": config.temperature > 0}
        if config.temperature > 0:
            sampling.update(temperature=config.temperature, top_p=config.top_p)
            if config.seed is not None:
                torch.manual_seed(config.seed)
        with torch.inference_mode():
            output = backend.model.generate(
                input_ids=encoded["input_ids"].to(backend.device),
                attention_mask=encoded["attention_mask"].to(backend.device),
                max_new_tokens=config.max_tokens,
                pad_token_id=backend._pad_id,
                streamer=streamer,
                **sampling,
            )
        width = encoded["input_ids"].shape[1]
        results = []
        for row in range(len(group)):
            new = output[row, width:].tolist()
            if tokenizer.eos_token_id in new:
                new = new[: new.index(tokenizer.eos_token_id)]
                finish = "stop"
            else:
                finish = "length"
            new = [t for t in new if t != backend._pad_id or t == tokenizer.eos_token_id]
            results.append(Generation(text=tokenizer.decode(new, skip_special_tokens=True),
                                      prompt_tokens=int(encoded["attention_mask"][row].sum()),
                                      completion_tokens=len(new), finish_reason=finish))
        return results
