"""The standard layers around a provider:

    CachingBackend(CountingBackend(RetryingBackend(ConcurrencyLimit(provider))))

The cache is outermost, so a hit costs no retry and is not counted as a model call: the counting
layer sees only real calls, which is what "tokens used per agent" in a run manifest must mean.
Retry is the only retry layer (providers send each request once), and sits outside the request
limit, so a request waiting for its retry holds no slot. The limit is there only for a provider that
talks to a server (`endpoint`), and every stack over that endpoint shares its slots.

This module takes plain values (`CacheOptions`, `RetryPolicy`); reading and validating `conf/cache`
and `conf/retry` is the experiments' business (experiments.app.config).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emotion_probe.errors import ConfigError
from emotion_probe.models.base import ModelBackend
from emotion_probe.models.devices import pick_device, pick_dtype
from emotion_probe.models.paths import cache_root
from emotion_probe.models.wrappers.cache import CachingBackend, GenerateCaching
from emotion_probe.models.wrappers.concurrency import ConcurrencyLimit, endpoint_slots
from emotion_probe.models.wrappers.core import CountingBackend, RetryingBackend, RetryPolicy, usage_of

__all__ = ["CacheOptions", "RetryPolicy", "resolved_model_config", "response_cache_path", "usage_of", "wrap_backend"]

#: Names the response cache file when `cache.path` is null; tests point it at a temporary file.
CACHE_PATH_ENV = "EMOLAB_RESPONSE_CACHE"


@dataclass(frozen=True)
class CacheOptions:
    """The response cache of a stack: its SQLite file (None: `response_cache_path`'s default) and which
    generate() calls it keeps (`cache.CachingBackend`)."""

    # No defaults: conf/cache/default.yaml holds them (experiments.app.config.CacheSettings.options()).
    path: str | os.PathLike[str] | None
    generate: GenerateCaching


def response_cache_path(configured: str | os.PathLike[str] | None) -> Path:
    """Where the response cache lives: `cache.path` if set, else $EMOLAB_RESPONSE_CACHE, else responses.sqlite in $EMOLAB_CACHE."""
    if configured:
        return Path(configured).expanduser()
    from_env = os.environ.get(CACHE_PATH_ENV)
    if from_env:
        return Path(from_env).expanduser()
    return cache_root() / "responses.sqlite"


#: Model-config keys a backend resolves when it loads (TransformersBackend: `auto` becomes the device it
#: found, and the dtype that device gets). Left as `auto`, they would let CPU float32 and GPU bfloat16
#: answers share one cache key or one resumed run, and their logprobs differ.
PLACEMENT_KEYS = ("device", "dtype")


def resolved_model_config(config: dict[str, Any], backend: ModelBackend | None = None) -> dict[str, Any]:
    """`config` (a resolved `model:` node, as a dict) with `device` and `dtype` as the backend runs them.

    With `backend` (already loaded), what it reports in describe(); without, what it would pick on this
    machine (`auto`: cuda if available, else cpu; bfloat16 on cuda, float32 on cpu), so a resume check
    can run before the model loads. Spellings are made canonical too (fp32 -> float32). Configs without
    these keys (scripted, openai) are returned unchanged, without importing torch.
    """
    resolved = dict(config)
    present = [key for key in PLACEMENT_KEYS if isinstance(resolved.get(key), str)]
    if not present:
        return resolved
    described = backend.describe() if backend is not None else {}
    if all(isinstance(described.get(key), str) for key in present):
        resolved.update({key: described[key] for key in present})
        return resolved
    device = pick_device(resolved["device"] if "device" in present else "auto")  # TransformersBackend's default
    if "device" in present:
        resolved["device"] = device
    if "dtype" in present:
        try:
            resolved["dtype"] = str(pick_dtype(resolved["dtype"], device)).removeprefix("torch.")
        except ConfigError:
            pass  # an unknown dtype: the backend refuses it when it loads, with this same message
    return resolved


def wrap_backend(
    provider: ModelBackend,
    *,
    identity: dict[str, Any],
    cache: CacheOptions | None,
    retry: RetryPolicy | None,
) -> ModelBackend:
    """CachingBackend(CountingBackend(RetryingBackend(ConcurrencyLimit(provider)))), leaving out the layers that are off.

    `identity` is what makes two backends the same for the cache: pass the resolved model config
    (a dict), so that a different model, path, server or script never shares answers. Its `device` and
    `dtype` are resolved first (`resolved_model_config`), so `auto` on a GPU and `auto` on a CPU differ. Counting is
    always present, so `usage_of(result)` always reports calls and tokens. `cache=None` leaves the cache
    out; a retry layer with one attempt (or `retry=None`) would do nothing, so it is left out too. The
    request limit is there when the provider has an `endpoint`, sized by its `max_concurrency`.
    """
    identity = resolved_model_config(identity, provider)
    backend = provider
    if provider.endpoint is not None and provider.max_concurrency is not None:
        backend = ConcurrencyLimit(backend, endpoint_slots(provider.endpoint, provider.max_concurrency))
    if retry is not None and retry.max_attempts > 1:
        backend = RetryingBackend(backend, retry)
    backend = CountingBackend(backend)
    if cache is not None:
        backend = CachingBackend(backend, response_cache_path(cache.path), identity, generate=cache.generate)
    # Probe parts and resume checks ask the stack who it is: the config, not the name alone.
    backend.pinned_identity = identity
    return backend
