"""TransformersBackend's probing verbs: exact continuation scoring and the next-token top-k.

Scoring strategies (all exact, and equal to each other within float error):
- ``packed``: one forward per batch over prompt + trie tokens with a 4D tree mask.
- ``kv_cache``: the prompt once with a cache, then one step over the trie's paths;
  for models whose attention ignores custom 4D masks.
- ``naive``: every prompt + continuation as its own sequence (the reference).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal

import numpy as np

from emotion_probe.errors import ConfigError, TokenizationMismatch
from emotion_probe.models.base import RankedToken, ScoreResult
from emotion_probe.models.trie import ContinuationTrie, left_pad, pack_prompts_with_trie, trie_paths

Scoring = Literal["packed", "kv_cache", "naive"]


class TransformersScoring:
    """The scoring verbs of TransformersBackend and the tokenization they check (a mixin).

    It works on the provider's loaded model: the attributes below, set by TransformersBackend.__init__,
    and its `context_length`, `_cache_argument`, `_cache_of` and `_vocab_mask`.
    """

    model: Any
    tokenizer: Any
    device: str
    scoring: Scoring
    batch_size: int
    on_too_long: str
    _torch: Any
    _pad_id: int
    _tries: dict[tuple, ContinuationTrie]

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
        special = set(self.tokenizer.all_special_ids)
        return self._vocab_mask(lambda token_id, text: token_id in special or not text
                                or not (text[0].isalnum() or text[0] in "'’-_"))

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
        cache = self._cache_of(first)
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
        results: list[dict[str, float]] = []
        for ranked in self.ranked_tokens(prompts, k):
            top: dict[str, float] = {}
            for token in ranked:
                top.setdefault(token.text, token.logprob)  # two ids can decode to one text: the likelier (first) stays
            results.append(top)
        return results

    def ranked_tokens(self, prompts: Sequence[str], k: int) -> list[list[RankedToken]]:
        torch = self._torch
        prompt_ids = self._encode(prompts)
        results: list[list[RankedToken]] = [[] for _ in prompts]
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
                results[i] = [RankedToken(token, self.tokenizer.decode([token]), value)
                              for value, token in zip(values[row].tolist(), indices[row].tolist())]
        return results
