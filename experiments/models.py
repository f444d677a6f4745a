"""Models from the shipped config: `conf/model` by name, and the schemas of `conf/cache` and `conf/retry`.

emotion_probe builds a backend from a config node (`instantiate_backend`) and stacks wrappers from
plain values (`wrap_backend`); which files hold those values, and what they may contain, is decided here.

    from experiments.models import load_model

    model = load_model("smollm2")                          # conf/model/smollm2.yaml
    model = load_model("transformers", path="/models/llama")
    model = load_model("vllm", model="meta-llama/Llama-3.1-70B")   # openai.yaml's keys, vLLM's port
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field

from emotion_probe.errors import ConfigError
from emotion_probe.models import instantiate_backend
from emotion_probe.models.base import ModelBackend
from emotion_probe.models.wrappers.cache import GenerateCaching
from emotion_probe.models.wrappers.stack import CacheOptions, RetryPolicy

__all__ = ["CacheSettings", "RetrySettings", "load_model", "model_config", "model_config_names"]

#: Hydra's behaviour version, as the `emolab` app and the tests compose with.
HYDRA_VERSION_BASE = "1.3"


class CacheSettings(BaseModel):
    """`conf/cache/*.yaml`: the on-disk response cache."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(description="answer repeated requests from the cache")
    path: str | None = Field(description="SQLite file; null = responses.sqlite in $EMOLAB_CACHE")
    generate: GenerateCaching = Field(description="which generate() calls are cached: deterministic | always | never")

    def options(self) -> CacheOptions | None:
        """What wrap_backend takes: None when the cache is off."""
        return CacheOptions(path=self.path, generate=self.generate) if self.enabled else None


class RetrySettings(BaseModel):
    """`conf/retry/*.yaml`: retries of transient model failures, the one retry layer of every stack."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int = Field(ge=1, description="attempts per request, the first included; 1 = never retry")
    initial_delay_s: float = Field(ge=0, description="seconds before the first retry; doubles on each further one")
    max_delay_s: float = Field(ge=0, description="ceiling on one backoff delay, in seconds")

    def policy(self) -> RetryPolicy:
        """What wrap_backend takes."""
        return RetryPolicy(max_attempts=self.max_attempts, initial_delay_s=self.initial_delay_s,
                           max_delay_s=self.max_delay_s)


def model_config_names() -> list[str]:
    """The names of the shipped `conf/model/*.yaml` files."""
    folder = resources.files("conf") / "model"
    return sorted(Path(entry.name).stem for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def model_config(name: str) -> DictConfig:
    """The `model:` node `emolab model=<name>` composes: conf/model/<name>.yaml, its defaults list merged by Hydra.

    vllm.yaml and sglang.yaml name openai.yaml in their defaults list, so they carry every key of it.
    """
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if name not in model_config_names():
        raise ConfigError(f"unknown model {name!r}: expected one of {model_config_names()} or a config dict")
    overrides = [f"+model={name}"]  # an empty primary config with only the model group: nothing else composes
    if GlobalHydra.instance().is_initialized():
        # Inside the `emolab` app (or a caller that already set Hydra up on conf/): Hydra allows one
        # initialization at a time, and the one there already searches conf/.
        return compose(overrides=overrides).model
    with initialize_config_module(config_module="conf", version_base=HYDRA_VERSION_BASE):
        return compose(overrides=overrides).model


def load_model(name_or_config: str | dict | DictConfig, **overrides: Any) -> ModelBackend:
    """Build a backend from a `conf/model` name ("smollm2") or a config with a `_target_`, `overrides` on top.

    >>> model = load_model("smollm2")                       # the embedded default
    >>> model = load_model("transformers", path="/models/llama")
    """
    config = model_config(name_or_config) if isinstance(name_or_config, str) else OmegaConf.create(name_or_config)
    # Open, as a plain dict would be: a key the backend does not take is then refused by its constructor,
    # which instantiate_backend reports as one ConfigError.
    OmegaConf.set_struct(config, False)
    return instantiate_backend(OmegaConf.merge(config, overrides))
