"""Local Hugging Face models: chat generation and exact, packed continuation scoring."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal

import numpy as np

from emotion_probe.backends.base import (
    ChatMessage,
    GenerateConfig,
    Generation,
    ModelBackend,
    ScoreResult,
    TokenCallback,
    as_messages,
)
from emotion_probe.backends.trie import ContinuationTrie, left_pad, pack_prompts_with_trie, trie_paths
from emotion_probe.errors import ConfigError, TokenizationMismatch


Scoring = Literal["packed", "kv_cache", "naive"]
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16"}


class _BatchStreamer:
    """A transformers streamer for a batch: decodes each row incrementally and calls its callback."""

    def __init__(self, tokenizer: Any, callbacks: list[TokenCallback | None], eos_id: int | None):
        self.tokenizer = tokenizer
        self.callbacks = callbacks
        self.eos_id = eos_id
        self.tokens: list[list[int]] = [[] for _ in callbacks]
        self.printed = [0] * len(callbacks)
        self.done = [False] * len(callbacks)
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() passes the prompt first; skip it
            self.prompt_seen = True
            return
        for row, token in enumerate(value.reshape(-1).tolist()):
            if self.done[row] or token == self.eos_id:
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


def _pick_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def _pick_dtype(dtype: str, device: str) -> Any:
    import torch

    if dtype == "auto":
        # bf16 halves memory and doubles throughput on GPUs; CPUs are fastest and exact in fp32.
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"model.dtype: unknown dtype {dtype!r}; expected auto or one of {sorted(_DTYPES)}")
    return getattr(torch, _DTYPES[dtype])


class TransformersBackend(ModelBackend):
    """A causal LM loaded with transformers from a local directory or an HF id already on disk.

    Scoring strategies (all exact, and equal to each other within float error):
    - ``packed``: one forward per batch over prompt + trie tokens with a 4D tree mask.
    - ``kv_cache``: the prompt once with a cache, then one step over the trie's paths;
      for models whose attention ignores custom 4D masks.
    - ``naive``: every prompt + continuation as its own sequence (the reference).
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        scoring: Scoring = "packed",
        batch_size: int = 16,
        on_too_long: Literal["error", "truncate_left"] = "error",
        gguf_file: str | None = None,
        trust_remote_code: bool = False,
        attn_implementation: str | None = "sdpa",
        model: Any = None,
        tokenizer: Any = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if scoring not in ("packed", "kv_cache", "naive"):
            raise ConfigError(f"model.scoring: expected packed, kv_cache or naive, got {scoring!r}")
        if on_too_long not in ("error", "truncate_left"):
            raise ConfigError(f"model.on_too_long: expected error or truncate_left, got {on_too_long!r}")
        if batch_size < 1:
            raise ConfigError(f"model.batch_size must be >= 1, got {batch_size}")
        self.name = name or str(path)
        self.device = _pick_device(device)
        self.dtype = _pick_dtype(dtype, self.device)
        self.scoring = scoring
        self.batch_size = batch_size
        self.on_too_long = on_too_long
        if model is None:
            load_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
            if gguf_file:
                load_kwargs["gguf_file"] = gguf_file
            else:
                # Never reach for the Hub: a model must already be on disk.
                load_kwargs["local_files_only"] = True
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, **load_kwargs)
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=self.dtype, attn_implementation=attn_implementation, **load_kwargs
                )
            except OSError as err:
                raise ConfigError(
                    f"model.path: cannot load a transformers model from {path!r} "
                    f"(it must be a local directory or an HF id already in the cache; nothing is downloaded): {err}"
                ) from None
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self._torch = torch
        self._tries: dict[tuple, ContinuationTrie] = {}
        self._pad_id = next(
            (t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if t is not None), 0
        )

    # ----------------------------------------------------------------- metadata
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def context_length(self) -> int | None:
        config = self.model.config
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def describe(self) -> dict[str, object]:
        return {
            **super().describe(),
            "device": self.device,
            "dtype": str(self.dtype).removeprefix("torch."),
            "scoring": self.scoring,
        }

    # --------------------------------------------------------------- generation
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
        config: GenerateConfig | None = None,
        on_tokens: Sequence[TokenCallback | None] | None = None,
    ) -> list[Generation]:
        """Chat completions for several conversations in one left-padded `model.generate`.

        One batch of 16 costs little more than one sequence on this model size, which is
        what lets concurrent trials share generation (see `backends/batching.py`).
        """
        config = config or GenerateConfig()
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(f"model {self.name!r} has no chat template, so it cannot chat; use it for probing only")
        prompts = [
            self.tokenizer.apply_chat_template([m.model_dump() for m in as_messages(c)], add_generation_prompt=True,
                                               tokenize=False)
            for c in conversations
        ]
        previous_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"  # generation continues from the right edge of every row
        try:
            # The chat template already wrote any BOS; do not add another.
            encoded = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        finally:
            self.tokenizer.padding_side = previous_side
        eos = self.tokenizer.eos_token_id
        streamer = _BatchStreamer(self.tokenizer, list(on_tokens or [None] * len(prompts)), eos)
        sampling: dict[str, Any] = {"do_sample": config.temperature > 0}
        if config.temperature > 0:
            sampling.update(temperature=config.temperature, top_p=config.top_p)
            if config.seed is not None:
                self._torch.manual_seed(config.seed)
        with self._torch.inference_mode():
            output = self.model.generate(
                input_ids=encoded["input_ids"].to(self.device),
                attention_mask=encoded["attention_mask"].to(self.device),
                max_new_tokens=config.max_tokens,
                pad_token_id=self._pad_id,
                streamer=streamer,
                stop_strings=config.stop or None,
                tokenizer=self.tokenizer if config.stop else None,
                **sampling,
            )
        width = encoded["input_ids"].shape[1]
        results = []
        for row in range(len(prompts)):
            new = output[row, width:].tolist()
            finished = eos in new
            if finished:
                new = new[: new.index(eos)]  # what follows EOS is padding
            results.append(Generation(
                text=self.tokenizer.decode(new, skip_special_tokens=True),
                prompt_tokens=int(encoded["attention_mask"][row].sum()),
                completion_tokens=len(new),
                finish_reason="stop" if finished else "length",
            ))
        return results

    # ------------------------------------------------------------- tokenization
    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        eos = self.tokenizer.eos_token_id
        # Some tokenizers append EOS to every encoding; a prompt must stay open-ended.
        if eos is not None and self._appends_eos:
            ids = [seq[:-1] if seq and seq[-1] == eos else seq for seq in ids]
        return ids

    @cached_property
    def _appends_eos(self) -> bool:
        probe = self.tokenizer("a", add_special_tokens=True)["input_ids"]
        return bool(probe) and probe[-1] == self.tokenizer.eos_token_id

    def _continuation_ids(self, prompt: str, prompt_ids: list[int], continuations: Sequence[str]) -> tuple[tuple[int, ...], ...]:
        """Tokenize each continuation as it follows this prompt, and check the split is clean.

        encode(prompt + c) must equal encode(prompt) + ids(c); otherwise the
        continuation's first token would merge with the prompt's last one and
        P(c | prompt) would not be a product over a shared prefix.
        """
        joined = self._encode([prompt + c for c in continuations])
        result = []
        for continuation, full in zip(continuations, joined):
            if full[: len(prompt_ids)] != prompt_ids or len(full) == len(prompt_ids):
                raise TokenizationMismatch(
                    f"continuation {continuation!r} does not tokenize as a clean extension of the prompt "
                    f"ending {prompt[-40:]!r}: end the template with a complete word and start "
                    "continuations with a space"
                )
            result.append(tuple(full[len(prompt_ids) :]))
        return tuple(result)

    def _fit_to_context(self, prompt_ids: list[int], extra: int, index: int) -> list[int]:
        limit = self.context_length()
        if limit is None or len(prompt_ids) + extra <= limit:
            return prompt_ids
        if self.on_too_long == "truncate_left":
            warnings.warn(
                f"prompt {index} has {len(prompt_ids)} tokens; keeping its last {limit - extra} to fit the "
                f"context of {limit}",
                stacklevel=3,
            )
            return prompt_ids[len(prompt_ids) - (limit - extra) :]
        raise ConfigError(
            f"prompt {index} is {len(prompt_ids)} tokens, plus {extra} for the continuations, longer than the "
            f"model's context of {limit}; shorten it or set model.on_too_long=truncate_left"
        )

    def _trie(self, continuation_ids: tuple[tuple[int, ...], ...], include_final: bool) -> ContinuationTrie:
        key = (continuation_ids, include_final)
        if key not in self._tries:
            self._tries[key] = ContinuationTrie.build(continuation_ids, include_final=include_final)
        return self._tries[key]

    @cached_property
    def boundary_token_mask(self) -> Any:
        """Tokens that end a word: ones that start with whitespace or punctuation, and specials."""
        vocab_size = self.model.get_output_embeddings().weight.shape[0]
        mask = np.zeros(vocab_size, dtype=bool)
        special = set(self.tokenizer.all_special_ids)
        for token_id in range(min(vocab_size, len(self.tokenizer))):
            if token_id in special:
                mask[token_id] = True
                continue
            text = self.tokenizer.decode([token_id])
            mask[token_id] = not text or not (text[0].isalnum() or text[0] in "'’-_")
        return self._torch.from_numpy(mask).to(self.device)

    # ------------------------------------------------------------------ scoring
    def score(self, prompts: Sequence[str], continuations: Sequence[str], *, word_boundary: bool = False) -> ScoreResult:
        torch = self._torch
        if not continuations:
            raise ConfigError("score: no continuations given")
        prompt_ids = self._encode(prompts)
        groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
        for i, (prompt, ids) in enumerate(zip(prompts, prompt_ids)):
            groups.setdefault(self._continuation_ids(prompt, ids, continuations), []).append(i)
        out = np.empty((len(prompts), len(continuations)), dtype=np.float64)
        for cont_ids, members in groups.items():
            trie = self._trie(cont_ids, word_boundary)
            extra = trie.num_nodes if self.scoring == "packed" else trie.max_depth
            fitted = {i: self._fit_to_context(prompt_ids[i], extra, i) for i in members}
            # Sorting by length keeps padding (wasted compute) small inside each batch.
            order = sorted(members, key=lambda i: len(fitted[i]))
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                batch_ids = [fitted[i] for i in chunk]
                with torch.inference_mode():
                    if self.scoring == "packed":
                        scores = self._score_packed(batch_ids, trie)
                    elif self.scoring == "kv_cache":
                        scores = self._score_kv_cache(batch_ids, trie)
                    else:
                        scores = self._score_naive(batch_ids, cont_ids, word_boundary)
                out[chunk] = scores.double().cpu().numpy()
        return ScoreResult(logprobs=out, method=f"transformers-{self.scoring}", exact=True)

    def _log_softmax(self, logits: Any) -> Any:
        # fp32 log-softmax: bf16 logits lose the small probabilities we are measuring.
        return self._torch.log_softmax(logits.float(), dim=-1)

    def _with_boundary(self, scores: Any, logprob_rows: Any, trie: ContinuationTrie) -> Any:
        if trie.final_row is None:
            return scores
        ends = logprob_rows[:, trie.final_row.to(logprob_rows.device)]  # [B, K, V]
        boundary = self.boundary_token_mask
        return scores + self._torch.logsumexp(ends[..., boundary], dim=-1)

    def _score_packed(self, batch_ids: list[list[int]], trie: ContinuationTrie) -> Any:
        packed = pack_prompts_with_trie(batch_ids, trie, self._pad_id)
        mask = packed.attention_mask.to(self.device)
        logits = self.model(
            input_ids=packed.input_ids.to(self.device),
            attention_mask=mask,
            position_ids=packed.position_ids.to(self.device),
            logits_to_keep=packed.rows_to_keep,
            use_cache=False,
        ).logits
        rows = self._log_softmax(logits)  # [B, 1 + T, V]
        return self._with_boundary(trie.reduce(rows), rows, trie)

    @cached_property
    def _cache_argument(self) -> str:
        # transformers renamed `past_key_values` to `cache` in 5.x; accept either.
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    def _score_kv_cache(self, batch_ids: list[list[int]], trie: ContinuationTrie) -> Any:
        torch = self._torch
        batch = len(batch_ids)
        prompts = left_pad(batch_ids, self._pad_id)
        prompt_mask = prompts.attention_mask
        first = self.model(
            input_ids=prompts.input_ids.to(self.device),
            attention_mask=prompt_mask.to(self.device),
            position_ids=prompts.position_ids.to(self.device),
            use_cache=True,
            logits_to_keep=1,
        )
        last_rows = self._log_softmax(first.logits)  # [B, 1, V]
        paths, node_path, node_step = trie_paths(trie)
        if not paths:
            return self._with_boundary(trie.reduce(last_rows), last_rows, trie)
        num_paths, depth = len(paths), max(len(p) for p in paths)
        cache = getattr(first, "cache", None) or first.past_key_values
        cache.batch_repeat_interleave(num_paths)
        step_ids = torch.full((num_paths, depth), self._pad_id, dtype=torch.long)
        step_mask = torch.zeros((num_paths, depth), dtype=torch.long)
        for p, path in enumerate(paths):
            step_ids[p, : len(path)] = torch.tensor(path)
            step_mask[p, : len(path)] = 1
        lengths = prompt_mask.sum(-1)
        step_positions = lengths.repeat_interleave(num_paths)[:, None] + torch.arange(depth)[None, :]
        full_mask = torch.cat(
            [prompt_mask.repeat_interleave(num_paths, dim=0), step_mask.repeat(batch, 1)], dim=1
        )
        out = self.model(
            input_ids=step_ids.repeat(batch, 1).to(self.device),
            attention_mask=full_mask.to(self.device),
            position_ids=step_positions.to(self.device),
            use_cache=True,
            **{self._cache_argument: cache},
        )
        path_rows = self._log_softmax(out.logits).view(batch, num_paths, depth, -1)
        node_rows = path_rows[:, torch.from_numpy(node_path), torch.from_numpy(node_step)]  # [B, T, V]
        rows = torch.cat([last_rows, node_rows], dim=1)
        return self._with_boundary(trie.reduce(rows), rows, trie)

    def _score_naive(
        self, batch_ids: list[list[int]], cont_ids: tuple[tuple[int, ...], ...], word_boundary: bool
    ) -> Any:
        """Each prompt + continuation as its own right-padded sequence: the textbook reference."""
        torch = self._torch
        sequences = [(row, k, ids + list(cont)) for row, ids in enumerate(batch_ids) for k, cont in enumerate(cont_ids)]
        scores = torch.zeros(len(batch_ids), len(cont_ids), dtype=torch.float64)
        boundary = self.boundary_token_mask if word_boundary else None
        for start in range(0, len(sequences), 64):
            chunk = sequences[start : start + 64]
            width = max(len(seq) for _, _, seq in chunk)
            input_ids = torch.full((len(chunk), width), self._pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for r, (_, _, seq) in enumerate(chunk):
                input_ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            logprobs = self._log_softmax(
                self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device), use_cache=False).logits
            )
            for r, (row, k, seq) in enumerate(chunk):
                n_prompt = len(batch_ids[row])
                targets = torch.tensor(seq[n_prompt:], device=logprobs.device)
                steps = torch.arange(n_prompt - 1, len(seq) - 1, device=logprobs.device)
                total = logprobs[r, steps, targets].double().sum()
                if boundary is not None:
                    total += torch.logsumexp(logprobs[r, len(seq) - 1][boundary], dim=-1).double()
                scores[row, k] = total
        return scores

    def top_tokens(self, prompts: Sequence[str], k: int) -> list[dict[str, float]]:
        torch = self._torch
        prompt_ids = self._encode(prompts)
        results: list[dict[str, float]] = [{} for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(prompt_ids[i]))
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = left_pad([self._fit_to_context(prompt_ids[i], 1, i) for i in chunk], self._pad_id)
            with torch.inference_mode():
                logits = self.model(
                    input_ids=batch.input_ids.to(self.device),
                    attention_mask=batch.attention_mask.to(self.device),
                    position_ids=batch.position_ids.to(self.device),
                    logits_to_keep=1,
                    use_cache=False,
                ).logits[:, -1]
            values, indices = self._log_softmax(logits).topk(k, dim=-1)
            for row, i in enumerate(chunk):
                for value, token in zip(values[row].tolist(), indices[row].tolist()):
                    # Two ids can decode to the same text; keep the likelier (listed first).
                    results[i].setdefault(self.tokenizer.decode([token]), value)
        return results
