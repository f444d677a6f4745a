"""TransformersBackend's chat generation: a batch of replies decoded together over one KV cache.

Each row keeps its own settings (seed, temperature, budget, stop strings, JSON schema); rows that
finish leave the batch at once and waiting requests join it between steps (continuous batching,
with BatchingBackend's feed). A prompt starts from the longest prefix of it already computed
(`PrefixStore`), so a conversation's next turn prefills only its new messages.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from functools import cached_property
from typing import Any

import numpy as np

from emotion_probe.errors import ConfigError
from emotion_probe.models.base import BatchFeed, ChatMessage, GenerateConfig, Generation, TokenCallback
from emotion_probe.models.chat_template import prompt_token_ids, render_chat
from emotion_probe.models.trie import left_pad


class _Row:
    """One reply being decoded: its prompt, settings, sampler, grammar state and tokens so far."""

    def __init__(self, index: int, prompt_ids: list[int], config: GenerateConfig, callback: TokenCallback | None,
                 matcher: Any, generator: Any, tokenizer: Any):
        self.index = index
        self.prompt_ids = prompt_ids
        self.config = config
        self.callback = callback
        self.matcher = matcher
        self.generator = generator
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.printed = 0
        self.finish = "length"

    def text(self) -> str:
        return self.tokenizer.decode(self.tokens, skip_special_tokens=True)

    def push(self, token: int) -> bool:
        """Add one token, stream it, and say whether the row is done."""
        self.tokens.append(token)
        stops = self.config.stop
        if self.callback is not None or stops:
            text = self.text()
            # Hold back a trailing replacement char: a multi-byte character is still arriving.
            if self.callback is not None and not text.endswith("\ufffd") and len(text) > self.printed:
                self.callback(text[self.printed:])
                self.printed = len(text)
            if stops and any(stop in text for stop in stops):
                self.finish = "stop"
                return True
        return len(self.tokens) >= self.config.max_tokens  # out of budget: finish stays "length"

    def take(self, token: int, eos: int | None) -> bool:
        """Add the token sampled for this row and say whether the row is done (EOS, the grammar's end, or `push`)."""
        if self.matcher is not None and not self.matcher.accept_token(token):
            raise RuntimeError(f"the grammar refused token {token} that its own mask allowed (row {self.index})")
        if token == eos or (self.matcher is not None and self.matcher.is_terminated()):
            self.finish = "stop"
            return True
        return self.push(token)

    def result(self) -> Generation:
        text = self.text()
        for stop in self.config.stop:
            if stop in text:
                text = text[: text.index(stop)]
        return Generation(text=text, prompt_tokens=len(self.prompt_ids), completion_tokens=len(self.tokens),
                          finish_reason=self.finish)


class PrefixStore:
    """The KV caches of recent prompts, so a new prompt only runs the tokens past its longest cached prefix.

    A negotiation turn's prompt is the same side's previous prompt plus two new messages, so with
    this store each turn prefills ~100 new tokens instead of its whole 300-600 token history; and
    concurrent trials of one scenario share their system prompt. Entries are per prompt, at batch 1,
    with every layer's keys and values [1, H, T, D]; the least recently used go first once the
    store is over its byte budget. The tensors are never changed in place (the cache appends by
    concatenation), so a row can start from an entry while the entry stays as it was.
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[int, tuple[np.ndarray, list[tuple[Any, Any]], int]] = OrderedDict()
        self._next_key = 0
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits_tokens = 0  # prompt tokens taken from the store instead of computed
        self.prefill_tokens = 0  # prompt tokens computed

    def longest(self, ids: list[int]) -> tuple[list[tuple[Any, Any]] | None, int]:
        """The cached layers that share the most leading tokens with `ids`, and how many they share."""
        query = np.asarray(ids, dtype=np.int64)
        best, best_length = None, 0
        with self._lock:
            for key, (entry_ids, layers, _) in self._entries.items():
                n = min(len(entry_ids), len(query))
                differ = np.flatnonzero(entry_ids[:n] != query[:n])
                length = int(differ[0]) if len(differ) else n
                if length > best_length:
                    best, best_length, best_key = layers, length, key
            if best is not None:
                self._entries.move_to_end(best_key)
        return best, best_length

    def add(self, ids: list[int], layers: list[tuple[Any, Any]]) -> None:
        size = sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in layers)
        if size > self.budget_bytes:
            return
        query = np.asarray(ids, dtype=np.int64)
        with self._lock:
            # A stored prompt that this one extends is covered by it: drop it (one entry per conversation side).
            for key in [key for key, (entry_ids, _, _) in self._entries.items()
                        if len(entry_ids) <= len(query) and np.array_equal(entry_ids, query[: len(entry_ids)])]:
                self._bytes -= self._entries.pop(key)[2]
            self._entries[self._next_key] = (query, layers, size)
            self._next_key += 1
            self._bytes += size
            while self._bytes > self.budget_bytes:
                self._bytes -= self._entries.popitem(last=False)[1][2]

    def count(self, reused: int, computed: int) -> None:
        with self._lock:
            self.hits_tokens += reused
            self.prefill_tokens += computed

    def stats(self) -> dict[str, int]:
        return {"prefix_cache_hit_tokens": self.hits_tokens, "prefill_tokens": self.prefill_tokens}


def _left_pad(mask: Any, width: int) -> Any:
    """An attention mask [B, T] widened to [B, width] with zeros (hidden) before its first column."""
    import torch

    return torch.cat([mask.new_zeros((mask.shape[0], width - mask.shape[1])), mask], dim=1)


def _growing_layer_class() -> type:
    """A transformers DynamicLayer that writes each step's keys and values into room kept spare.

    The stock layer concatenates the whole cache with the new token at every step, so a step copies
    every earlier key and value of every layer (a fifth of a batch-8 reply's time on CPU). This
    one allocates room for the reply once and writes one column per step; attention reads views.
    Built lazily: transformers is imported only when a backend is.
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        def __init__(self, parts: list[tuple[Any, Any]], width: int, room: int):
            """Stack batches of keys and values [b, H, T_i, D] on the batch axis, each left-padded with
            zeros to `width` (the attention mask hides the padding; zeros, since 0 x garbage can be NaN),
            with `room` more steps after them: one copy, however many parts."""
            super().__init__()
            first_keys, first_values = parts[0]
            batch = sum(keys.shape[0] for keys, _ in parts)
            heads, dim = first_keys.shape[1], first_keys.shape[3]
            self._keys = first_keys.new_zeros((batch, heads, width + room, dim))
            self._values = first_values.new_zeros((batch, heads, width + room, first_values.shape[3]))
            offset = 0
            for keys, values in parts:
                rows, length = keys.shape[0], keys.shape[2]
                self._keys[offset : offset + rows, :, width - length : width] = keys
                self._values[offset : offset + rows, :, width - length : width] = values
                offset += rows
            self.length = width
            self.device = first_keys.device
            self.is_initialized = True
            self._views()

        def _views(self) -> None:
            self.keys = self._keys[:, :, : self.length]
            self.values = self._values[:, :, : self.length]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            new = key_states.shape[-2]
            if self.length + new > self._keys.shape[2]:  # out of room: double it (rare: room covers a reply)
                more = max(self._keys.shape[2], new)
                self._keys, self._values = grow(self._keys, more), grow(self._values, more)
            self._keys[:, :, self.length : self.length + new] = key_states
            self._values[:, :, self.length : self.length + new] = value_states
            self.length += new
            self._views()
            return self.keys, self.values

        def batch_select_indices(self, indices: Any) -> None:
            self._keys, self._values = self._keys[indices], self._values[indices]
            self._views()

    def grow(tensor: Any, more: int) -> Any:  # [B, H, T, D] -> [B, H, T + more, D]
        return torch.cat([tensor, tensor.new_zeros((*tensor.shape[:2], more, tensor.shape[3]))], dim=2)

    return GrowingLayer


class TransformersDecoding:
    """The generation verbs of TransformersBackend and the decode engine under them (a mixin).

    It works on the provider's loaded model: the attributes below, set by TransformersBackend.__init__,
    and its `_cache_argument`, `_cache_of` and `_vocab_mask`.
    """

    name: str
    model: Any
    tokenizer: Any
    device: str
    structured_output: str
    _torch: Any
    _pad_id: int
    _plain_cache: bool
    _prefix_store: PrefixStore | None
    _grammars: dict[str, Any]
    _grammar_lock: threading.Lock

    def generate(
        self,
        messages: Sequence[ChatMessage | dict],
        config: GenerateConfig | None = None,
        on_token: TokenCallback | None = None,
    ) -> Generation:
        return self.generate_batch([messages], config, [on_token])[0]

    def generate_batch(
        self,
        conversations: Sequence[Sequence[ChatMessage | dict]],
        config: GenerateConfig | Sequence[GenerateConfig] | None = None,
        on_tokens: Sequence[TokenCallback | None] | None = None,
        feed: BatchFeed | None = None,
    ) -> list[Generation]:
        """Chat completions for several conversations in one batch, each row with its own settings.

        `config` is one GenerateConfig for every row, or one per row: rows may differ in seed,
        temperature, token budget, stop strings and JSON schema, so concurrent trials share a
        batch under default (seeded) settings. With a `feed` (BatchingBackend), finished rows are
        handed back at once and new requests join the running batch (continuous batching); the
        result then lists every row, the admitted ones after the first. See `_decode`.
        """
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"model {self.name!r} has no chat template, so it cannot chat; use it for probing only")
        if config is None or isinstance(config, GenerateConfig):
            configs = [config or GenerateConfig()] * len(conversations)
        else:
            configs = list(config)
        if len(configs) != len(conversations):
            raise ValueError(f"generate_batch: {len(conversations)} conversations but {len(configs)} configs")
        callbacks = list(on_tokens or [None] * len(conversations))
        rows = self._rows(list(conversations), configs, callbacks, first_index=0)
        with self._torch.inference_mode():
            finished = self._decode(rows, feed)
        return [row.result() for row in sorted(finished, key=lambda row: row.index)]

    def _rows(self, conversations: list, configs: list[GenerateConfig], callbacks: list, first_index: int) -> list[_Row]:
        # The same two steps as emolab's prompt preview (emotion_probe.models.chat_template), so it shows what runs.
        prompt_ids = prompt_token_ids(self.tokenizer, [render_chat(self.tokenizer, c) for c in conversations])
        rows = []
        for offset, (ids, config, callback) in enumerate(zip(prompt_ids, configs, callbacks)):
            generator = self._torch.Generator(device=self.device)
            if config.seed is None:
                generator.seed()
            else:
                generator.manual_seed(config.seed)
            rows.append(_Row(first_index + offset, ids, config, callback, self._matcher(config.response_schema),
                             generator, self.tokenizer))
        return rows

    def _decode(self, rows: list[_Row], feed: BatchFeed | None) -> list[_Row]:
        """Prefill, then one token at a time over the KV cache, every row on its own terms.

        Per row: a `torch.Generator` seeded from the row's seed (so a row samples the same draws
        alone or inside any batch), the grammar's token mask when the row has a JSON schema and
        `structured_output` is grammar, and its own stop (EOS, the grammar's end, a stop string,
        or its token budget). A finished row leaves the batch at once (and goes to `feed.finished`);
        new rows from `feed.admit` are prefilled and join between steps, their cache left-padded to
        the running batch's length (the mask hides the padding; position ids are per row).
        """
        torch = self._torch
        eos = self.tokenizer.eos_token_id
        finished: list[_Row] = []
        next_index = len(rows)
        active = rows
        prefilled, mask, positions, logits = self._prefill([row.prompt_ids for row in active])
        cache = self._decoding_cache(prefilled, mask.shape[1], active)
        bitmask = None
        while active:
            if feed is not None:
                feed.stepped(len(active))
            self._penalize_repeats(active, logits)
            bitmask = self._mask_by_grammar(active, logits, bitmask)
            chosen = [self._sample(logits[i], row.config, row.generator) for i, row in enumerate(active)]
            keep = []
            for i, (row, token) in enumerate(zip(active, chosen)):
                if not row.take(token, eos):
                    keep.append(i)
                    continue
                finished.append(row)
                if feed is not None:
                    feed.finished(row.index, row.result())
            if len(keep) < len(active) and keep:
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
            chosen = [chosen[i] for i in keep]
            active = [active[i] for i in keep]
            if active:
                positions = positions + 1
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)  # [B', T + 1]
                out = self.model(input_ids=torch.tensor(chosen, device=self.device)[:, None], attention_mask=mask,
                                 position_ids=positions, use_cache=True, **{self._cache_argument: cache})
                cache = self._cache_of(out)
                logits = out.logits[:, -1].float()
            joining = feed.admit(len(active)) if feed is not None else []
            if joining:
                # Admitted rows are numbered after every row so far.
                new_rows = self._rows([c for c, _, _ in joining], [c for _, c, _ in joining],
                                      [cb for _, _, cb in joining], first_index=next_index)
                next_index += len(new_rows)
                cache, mask, positions, logits = self._join(active, new_rows, cache, mask, positions, logits)
                active = active + new_rows
        return finished

    def _penalize_repeats(self, rows: list[_Row], logits: Any) -> None:
        """Each row's repetition penalty on its logits [B, V], in place, over the tokens it already holds."""
        torch = self._torch
        for i, row in enumerate(rows):
            penalty = row.config.repetition_penalty
            if penalty != 1.0 and row.tokens:
                seen = torch.tensor(sorted(set(row.tokens)), device=logits.device)
                # Numbers are answers (a report's percentages), not loops: penalizing digits
                # already used would push every next percentage away from the ones before.
                seen = seen[~self._digit_tokens[seen]]
                scores = logits[i, seen]
                logits[i, seen] = torch.where(scores > 0, scores / penalty, scores * penalty)

    def _mask_by_grammar(self, rows: list[_Row], logits: Any, bitmask: Any) -> Any:
        """Rule out, in place, the tokens each constrained row's grammar forbids next; returns the bitmask
        buffer, kept from step to step (None until a row has a grammar)."""
        constrained = [i for i, row in enumerate(rows) if row.matcher is not None]
        if not constrained:
            return bitmask
        import xgrammar

        if bitmask is None or bitmask.shape[0] < len(rows):
            bitmask = xgrammar.allocate_token_bitmask(max(len(rows), 16), logits.shape[-1])
        for i in constrained:
            rows[i].matcher.fill_next_token_bitmask(bitmask, i)
        xgrammar.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=constrained)
        return bitmask

    def _join(self, active: list[_Row], new_rows: list[_Row], cache: Any, mask: Any, positions: Any,
              logits: Any) -> tuple[Any, Any, Any, Any]:
        """Prefill `new_rows` and add them after the `active` ones: the batch's (cache, mask, positions, logits)."""
        prefilled, new_mask, new_positions, new_logits = self._prefill([row.prompt_ids for row in new_rows])
        if not active:
            return self._decoding_cache(prefilled, new_mask.shape[1], new_rows), new_mask, new_positions, new_logits
        torch = self._torch
        width = max(mask.shape[1], new_mask.shape[1])
        running = [(layer.keys, layer.values) for layer in cache.layers]
        cache = self._decoding_cache([running, *self._parts(prefilled)], width, active + new_rows)
        mask = torch.cat([_left_pad(mask, width), _left_pad(new_mask, width)])
        return cache, mask, torch.cat([positions, new_positions]), torch.cat([logits, new_logits])

    @cached_property
    def _growing_layer(self) -> type:
        return _growing_layer_class()

    @staticmethod
    def _parts(prefilled: Any) -> list[list[tuple[Any, Any]]]:
        """What `_prefill` gave, as batches of [(keys, values)] per layer: a cache is one batch."""
        return prefilled if isinstance(prefilled, list) else [[(layer.keys, layer.values) for layer in prefilled.layers]]

    def _decoding_cache(self, prefilled: Any, width: int, rows: list[_Row]) -> Any:
        """The cache to decode with: every batch of `prefilled` left-padded to `width`, stacked, and given
        room for the longest reply still to come, in one copy (GrowingLayer). A model whose cache is not
        plain keeps the one transformers built (it never joins, so there is only that one)."""
        if not self._plain_cache:
            return prefilled
        from transformers import DynamicCache

        parts = self._parts(prefilled)
        room = max(row.config.max_tokens - len(row.tokens) for row in rows) + 1
        cache = DynamicCache()
        cache.layers = [self._growing_layer([batch[layer] for batch in parts], width, room)
                        for layer in range(len(parts[0]))]
        return cache

    #: Rows must share at least this many leading tokens before their prefix is computed once.
    MIN_SHARED_PREFIX = 16

    def _prefill(self, prompt_ids: list[list[int]]) -> tuple[Any, Any, Any, Any]:
        """Run the prompts through the model; return (keys and values, attention mask [B, T], last positions
        [B, 1], logits [B, V]). The keys and values are a cache, or one [(keys, values)] per layer for each
        row (see `_parts`); `_decoding_cache` makes one cache of them.

        With the prefix store, each prompt starts from the cached keys and values of its longest
        prefix seen before and runs only the rest, at batch 1 (the rest is short: a turn's two new
        messages), then the rows are stacked, left-padded to the longest. Without it, the prompts run
        together (`_prefill_batched`).
        """
        store = self._prefix_store
        if store is None:
            return self._prefill_batched(prompt_ids)
        from transformers import DynamicCache

        torch = self._torch
        rows, last_logits = [], []
        for ids in prompt_ids:
            layers, reused = store.longest(ids)
            reused = min(reused, len(ids) - 1)  # at least one token runs: its logits start the reply
            extra = {}
            if layers is not None and reused > 0:
                # Slicing copies nothing, and the cache appends by concatenation: the entry stays intact.
                extra[self._cache_argument] = DynamicCache(
                    ddp_cache_data=[(k[:, :, :reused], v[:, :, :reused]) for k, v in layers])
            else:
                reused = 0
            out = self.model(input_ids=torch.tensor([ids[reused:]], device=self.device),
                             position_ids=torch.arange(reused, len(ids), device=self.device)[None],
                             use_cache=True, logits_to_keep=1, **extra)
            row = [(layer.keys, layer.values) for layer in self._cache_of(out).layers]  # each [1, H, T_i, D]
            store.count(reused=reused, computed=len(ids) - reused)
            store.add(ids, row)
            rows.append(row)
            last_logits.append(out.logits[:, -1].float())
        width = max(len(ids) for ids in prompt_ids)
        lengths = torch.tensor([len(ids) for ids in prompt_ids], device=self.device)
        mask = (torch.arange(width, device=self.device)[None] >= (width - lengths)[:, None]).long()  # [B, width]
        # The rows stay apart: _decoding_cache stacks them, padded, in the one copy it makes anyway.
        return rows, mask, (lengths - 1)[:, None], torch.cat(last_logits)

    def _prefill_batched(self, prompt_ids: list[list[int]]) -> tuple[Any, Any, Any, Any]:
        """`_prefill` without the prefix store: every prompt in one forward pass.

        Concurrent trials of one scenario send the same system prompt, and in lockstep often the
        same role, so their rows share a long first stretch of tokens. That shared prefix runs once,
        at batch 1, and its cache is repeated for every row; only each row's own suffix runs at
        batch B. The suffixes are left-padded after the prefix (the mask hides the pads), and
        position ids continue from the prefix, so each row computes what it would alone.
        """
        torch = self._torch
        batch = len(prompt_ids)
        shared = 0
        if batch > 1:
            shortest = min(len(ids) for ids in prompt_ids)
            first = prompt_ids[0]
            while shared < shortest - 1 and all(ids[shared] == first[shared] for ids in prompt_ids):
                shared += 1
        if shared < self.MIN_SHARED_PREFIX:
            padded = left_pad(prompt_ids, self._pad_id)
            mask = padded.attention_mask.to(self.device)  # [B, T]
            out = self.model(input_ids=padded.input_ids.to(self.device), attention_mask=mask,
                             position_ids=padded.position_ids.to(self.device), use_cache=True, logits_to_keep=1)
            positions = padded.position_ids[:, -1:].to(self.device)  # [B, 1]
            return self._cache_of(out), mask, positions, out.logits[:, -1].float()
        prefix = torch.tensor([prompt_ids[0][:shared]], device=self.device)  # [1, S]
        cache = self._cache_of(self.model(input_ids=prefix, use_cache=True, logits_to_keep=1))
        cache.batch_repeat_interleave(batch)
        suffixes = left_pad([ids[shared:] for ids in prompt_ids], self._pad_id)  # [B, T - S]
        mask = torch.cat([torch.ones((batch, shared), dtype=torch.long), suffixes.attention_mask], dim=1).to(self.device)
        suffix_positions = (suffixes.position_ids + shared).to(self.device)
        out = self.model(input_ids=suffixes.input_ids.to(self.device), attention_mask=mask,
                         position_ids=suffix_positions, use_cache=True, logits_to_keep=1,
                         **{self._cache_argument: cache})
        return self._cache_of(out), mask, suffix_positions[:, -1:], out.logits[:, -1].float()

    def _sample(self, logits: Any, config: GenerateConfig, generator: Any) -> int:
        """One token from one row's logits [V]: greedy at temperature 0, else nucleus sampling with the row's generator.

        Sampling inverts the CDF with one uniform draw from the row's own generator: exact, and
        much cheaper per step than torch.multinomial over a 49k vocabulary.
        """
        torch = self._torch
        if config.temperature == 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / config.temperature, dim=-1)
        if config.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            # Drop a token once the mass before it already reaches top_p (the first always stays).
            drop = sorted_probs.cumsum(-1) - sorted_probs >= config.top_p
            probs = probs.scatter(0, order, sorted_probs.masked_fill(drop, 0.0))
        cdf = probs.double().cumsum(-1)
        draw = torch.rand(1, generator=generator, dtype=torch.float64, device=cdf.device) * cdf[-1]
        token = int(torch.searchsorted(cdf, draw, right=True))
        # Never past the end, and never a token the mask gave zero mass (a flat run in the CDF).
        while token >= len(cdf) or probs[token] <= 0:
            token -= 1
        return token

    @cached_property
    def _digit_tokens(self) -> Any:
        """[V] bool: tokens whose text is digits only (left out of the repetition penalty)."""
        return self._vocab_mask(lambda token_id, text: text.strip().isdigit())

    @cached_property
    def _grammar_compiler(self) -> Any:
        try:
            import xgrammar
        except ImportError:
            raise ConfigError("model.structured_output=grammar needs xgrammar: pip install xgrammar") from None
        vocab_size = self.model.get_output_embeddings().weight.shape[0]
        info = xgrammar.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=vocab_size)
        return xgrammar.GrammarCompiler(info, max_threads=2)

    def _matcher(self, schema: dict[str, Any] | None) -> Any:
        """A fresh grammar matcher for one reply to `schema`; None when decoding is unconstrained."""
        if schema is None or self.structured_output != "grammar":
            return None
        import json

        import xgrammar

        key = json.dumps(schema)  # property order is the order the grammar writes, so keep it
        with self._grammar_lock:
            compiled = self._grammars.get(key)
            if compiled is None:
                # One compile per schema and tokenizer; any_whitespace=False keeps a small model
                # from padding its JSON with endless blank lines.
                compiled = self._grammar_compiler.compile_json_schema(key, any_whitespace=False)
                self._grammars[key] = compiled
        return xgrammar.GrammarMatcher(compiled)
