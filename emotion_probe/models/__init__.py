"""Model backends behind one small interface.

`instantiate_backend` builds one from a `model:` config node (its `_target_` names the class). Finding
a node by name in `conf/model` is the experiments' business: `experiments.app.config.load_model`.
"""

from __future__ import annotations

from typing import Any

from emotion_probe.models.base import (
    ChatMessage,
    GenerateConfig,
    Generation,
    ModelBackend,
    ScoreResult,
)
from emotion_probe.errors import ConfigError, EmolabError

__all__ = ["ChatMessage", "GenerateConfig", "Generation", "ModelBackend", "ScoreResult", "instantiate_backend"]


def instantiate_backend(config: Any) -> ModelBackend:
    """Build a backend from a `model:` config node (a DictConfig, or a plain dict such as a Ray worker
    receives), reporting bad config as one ConfigError.

    The node's `_target_` must name a registered provider (emotion_probe.models.registry), which is called
    with the node's other keys, resolved: nothing below the root is built, whatever a resolver made there.
    """
    from omegaconf import DictConfig, OmegaConf

    from emotion_probe.models.registry import check_model_config, registered_providers

    if not isinstance(config, DictConfig):
        config = OmegaConf.create(config)
    if "_target_" not in config:
        raise ConfigError("model config has no _target_ naming the backend class to build")
    missing = [key for key in config if OmegaConf.is_missing(config, key)]
    if missing:
        raise ConfigError(f"model config needs a value for: {', '.join(missing)} (e.g. model.{missing[0]}=...)")
    try:
        resolved = OmegaConf.to_container(config, resolve=True)
    except Exception as err:  # an interpolation that cannot resolve is the config's, not a bug
        raise ConfigError(f"model config: {type(err).__name__}: {err}") from None
    check_model_config(resolved)
    target = resolved.pop("_target_")
    if hydra_keys := sorted(key for key in resolved if str(key).startswith("_") and str(key).endswith("_")):
        raise ConfigError(f"model config: {hydra_keys[0]} is not a setting of a provider")
    provider = registered_providers()[target].load()
    try:
        return provider(**resolved)
    except EmolabError:
        raise
    except TypeError as err:  # a key the provider does not take, or a required one missing
        raise ConfigError(f"model config ({target}): {err}") from None
