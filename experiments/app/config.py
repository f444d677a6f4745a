"""The shipped config, for Python callers and the experiments: `conf/` lookups and the schemas of shared groups.

emotion_probe builds a backend from a config node (`instantiate_backend`), stacks wrappers from plain
values (`wrap_backend`) and probes with validated `ProbeSettings`; which files hold those values, and
what they may contain, is decided here. Defaults live only in conf/*.yaml, so a library user takes
them from the same files the `emolab` command composes, through Hydra's own defaults merging:

    from emotion_probe import EmotionProbe, EmotionWheel
    from experiments.app.config import build_probe, load_model, probe_settings

    model = load_model("smollm2")                                  # conf/model/smollm2.yaml
    model = load_model("vllm", model="meta-llama/Llama-3.1-70B")   # openai.yaml's keys, vLLM's port
    settings = probe_settings(template="{text} I feel")            # conf/probe/default.yaml, one key changed
    probe = EmotionProbe(model, EmotionWheel.load(settings.wheel), settings)
    probe = build_probe(model, wheel="ekman")                      # settings, wheel and probe in one call
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ConfigDict, Field

from emotion_probe.errors import ConfigError
from emotion_probe.models import instantiate_backend
from emotion_probe.models.base import ModelBackend
from emotion_probe.models.wrappers.cache import GenerateCaching
from emotion_probe.models.wrappers.stack import CacheOptions, RetryPolicy
from emotion_probe.probe import EmotionProbe, ProbeSettings
from emotion_probe.wheel import EmotionWheel
from experiments.app.common import validated

__all__ = ["CacheSettings", "RetrySettings", "build_probe", "compose_group", "load_model", "model_config",
           "model_config_names", "probe_settings", "settings_from_conf"]

#: Hydra's behaviour version: the `emolab` app's (experiments/app/main.py), which compositions here must match.
HYDRA_VERSION_BASE = "1.3"

S = TypeVar("S", bound=BaseModel)


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
        return RetryPolicy(**self.model_dump())


def option_names(group: str) -> list[str]:
    """The names of the shipped `conf/<group>/*.yaml` files."""
    folder = resources.files("conf") / group
    return sorted(Path(entry.name).stem for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def model_config_names() -> list[str]:
    """The names of the shipped `conf/model/*.yaml` files."""
    return option_names("model")


def compose_group(group: str, option: str = "default") -> DictConfig:
    """The node `emolab <group>=<option>` composes: conf/<group>/<option>.yaml, its defaults list merged by Hydra."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    if option not in option_names(group):
        raise ConfigError(f"unknown {group} {option!r}: expected one of {option_names(group)}")
    overrides = [f"+{group}={option}"]  # an empty primary config with only this group: nothing else composes
    if GlobalHydra.instance().is_initialized():
        # Inside the `emolab` app (or a caller that already set Hydra up on conf/): Hydra allows one
        # initialization at a time, and the one there already searches conf/.
        return compose(overrides=overrides)[group]
    with initialize_config_module(config_module="conf", version_base=HYDRA_VERSION_BASE):
        return compose(overrides=overrides)[group]


def model_config(name: str) -> DictConfig:
    """The `model:` node `emolab model=<name>` composes (vllm.yaml and sglang.yaml carry every key of openai.yaml)."""
    if name not in model_config_names():
        raise ConfigError(f"unknown model {name!r}: expected one of {model_config_names()} or a config dict")
    return compose_group("model", name)


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


# --- the probe's settings ------------------------------------------------------------------------


def settings_from_conf(schema: type[S], group: str, option: str = "default", **overrides: Any) -> S:
    """`schema` validated from conf/<group>/<option>.yaml with `overrides` applied (unknown keys are refused)."""
    values = OmegaConf.to_container(compose_group(group, option), resolve=True)
    return validated(schema, {**values, **overrides}, group)


def probe_settings(**overrides: Any) -> ProbeSettings:
    """ProbeSettings with conf/probe/default.yaml's values, e.g. `probe_settings(wheel="ekman", method="paper")`."""
    return settings_from_conf(ProbeSettings, "probe", **overrides)


def build_probe(model: ModelBackend, **overrides: Any) -> EmotionProbe:
    """An EmotionProbe on `model` with conf/probe/default.yaml's settings and `overrides`, its wheel loaded
    once from the resulting `wheel` setting: `build_probe(load_model("smollm2"), wheel="ekman")`."""
    settings = probe_settings(**overrides)
    return EmotionProbe(model, EmotionWheel.load(settings.wheel), settings)
