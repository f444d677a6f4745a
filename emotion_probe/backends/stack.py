"""The standard layers around a provider, built from `conf/cache` and `conf/retry`.

    CachingBackend(CountingBackend(RetryingBackend(provider)))

The cache is outermost, so a hit costs no retry and is not counted as a model call: the counting
layer sees only real calls, which is what "tokens used per agent" in a run manifest must mean.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from emotion_probe.backends.base import ModelBackend
from emotion_probe.backends.cache import CachingBackend, GenerateCaching
from emotion_probe.backends.wrappers import CountingBackend, RetryingBackend, usage_of

__all__ = ["CacheSettings", "RetrySettings", "response_cache_path", "usage_of", "wrap_backend"]

#: Names the response cache file when `cache.path` is null; tests point it at a temporary file.
CACHE_PATH_ENV = "EMOLAB_RESPONSE_CACHE"


class CacheSettings(BaseModel):
    """`conf/cache/*.yaml`: the on-disk response cache."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool
    path: str | None
    generate: GenerateCaching


class RetrySettings(BaseModel):
    """`conf/retry/*.yaml`: retries of transient model failures."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(ge=1)
    initial_delay_s: float = Field(ge=0)
    max_delay_s: float = Field(ge=0)


def response_cache_path(configured: str | os.PathLike[str] | None) -> Path:
    """Where the response cache lives: `cache.path` if set, else $EMOLAB_RESPONSE_CACHE, else responses.sqlite in $EMOLAB_CACHE."""
    if configured:
        return Path(configured).expanduser()
    from_env = os.environ.get(CACHE_PATH_ENV)
    if from_env:
        return Path(from_env).expanduser()
    from emotion_probe.backends.smollm2 import cache_root

    return cache_root() / "responses.sqlite"


def wrap_backend(
    provider: ModelBackend,
    *,
    identity: dict[str, Any],
    cache: CacheSettings | None,
    retry: RetrySettings | None,
) -> ModelBackend:
    """CachingBackend(CountingBackend(RetryingBackend(provider))), leaving out the layers that are off.

    `identity` is what makes two backends the same for the cache: pass the resolved model config
    (a dict), so that a different model, path, server or script never shares answers. Counting is
    always present, so `usage_of(result)` always reports calls and tokens. A retry layer with one
    attempt would do nothing, so it is left out too.
    """
    backend = provider
    if retry is not None and retry.max_attempts > 1:
        backend = RetryingBackend(
            backend, max_attempts=retry.max_attempts, initial_delay=retry.initial_delay_s, max_delay=retry.max_delay_s
        )
    backend = CountingBackend(backend)
    if cache is not None and cache.enabled:
        backend = CachingBackend(backend, response_cache_path(cache.path), identity, generate=cache.generate)
    return backend
