"""Local Hugging Face models: chat generation and exact, packed continuation scoring.

The provider class loads the model and holds what both halves share; the generation verbs and
their decode engine are in `transformers_decode`, the scoring verbs in `transformers_scoring`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cached_property
from typing import Any, Literal

import numpy as np

from emotion_probe.errors import ConfigError
from emotion_probe.models.base import ModelBackend
from emotion_probe.models.devices import pick_device, pick_dtype
from emotion_probe.models.providers.transformers_decode import PrefixStore, TransformersDecoding
from emotion_probe.models.providers.transformers_scoring import Scoring, TransformersScoring
from emotion_probe.models.trie import ContinuationTrie


class TransformersBackend(TransformersScoring, TransformersDecoding, ModelBackend):
    """A causal LM loaded with transformers from a local directory or an HF id already on disk.

    `scoring` picks how continuations are scored (packed, kv_cache or naive: all exact; see
    `transformers_scoring`).
    """

    #: generate_batch decodes its rows together, and takes a BatchFeed: requests join a running batch
    #: (BatchingBackend uses both).
    batches_natively = True
    continuous_batching = True

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
        structured_output: Literal["grammar", "prompt"] = "grammar",
        prefix_cache_mb: float = 1024,
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
        if structured_output not in ("grammar", "prompt"):
            raise ConfigError(f"model.structured_output: expected grammar or prompt, got {structured_output!r}")
        if prefix_cache_mb < 0:
            raise ConfigError(f"model.prefix_cache_mb must be >= 0, got {prefix_cache_mb}")
        self.name = name or str(path)
        #: Generation starts each prompt from its longest prefix already computed (see PrefixStore); 0 = off.
        self._prefix_store = PrefixStore(int(prefix_cache_mb * 2**20)) if prefix_cache_mb > 0 else None
        #: grammar: a reply with a JSON schema is decoded under that schema's xgrammar token mask, so it
        #: can only be valid JSON of that shape; prompt: the schema is left to the prompt and validation.
        self.structured_output = structured_output
        self._grammars: dict[str, Any] = {}
        self._grammar_lock = threading.Lock()
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
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
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        #: Every layer keeps every key (no sliding window): only such a cache can be cut at any prefix,
        #: stacked with another batch's, or written in place. Others keep transformers' own cache, and
        #: go without the prefix store and without joining a running batch.
        self._plain_cache = all(type(layer) is DynamicLayer for layer in DynamicCache(config=model.config).layers)
        if not self._plain_cache:
            self._prefix_store = None
            self.continuous_batching = False
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
            "structured_output": self.structured_output,
        }

    def usage(self) -> dict[str, Any]:
        """For the run manifest: prompt tokens computed, and those taken from the prefix cache instead."""
        return self._prefix_store.stats() if self._prefix_store is not None else {}

    # -------------------------------------------- what generation and scoring share
    @cached_property
    def _token_texts(self) -> list[str]:
        """The text of every token id the tokenizer knows, decoded alone (once: it takes a second or two)."""
        vocab_size = self.model.get_output_embeddings().weight.shape[0]
        return [self.tokenizer.decode([token_id]) for token_id in range(min(vocab_size, len(self.tokenizer)))]

    def _vocab_mask(self, keep: Callable[[int, str], bool]) -> Any:
        """[V] bool over the model's vocabulary: keep(token_id, text) for each token (False past the tokenizer's)."""
        vocab_size = self.model.get_output_embeddings().weight.shape[0]
        mask = np.zeros(vocab_size, dtype=bool)
        for token_id, text in enumerate(self._token_texts):
            mask[token_id] = keep(token_id, text)
        return self._torch.from_numpy(mask).to(self.device)

    @cached_property
    def _cache_argument(self) -> str:
        # transformers renamed `past_key_values` to `cache` in 5.x; accept either.
        import inspect

        return "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"

    @staticmethod
    def _cache_of(output: Any) -> Any:
        # transformers 5.x names the returned cache `cache`; older versions `past_key_values`.
        cache = getattr(output, "cache", None)
        return cache if cache is not None else output.past_key_values
