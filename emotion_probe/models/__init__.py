"""Model backends behind one small interface.

`instantiate_backend` builds one from a `model:` config node (its `_target_` names the class). Finding
a node by name in `conf/model` is the experiments' business: `experiments.config.load_model`.
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
    receives), reporting bad config as one ConfigError."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    if not isinstance(config, DictConfig):
        config = OmegaConf.create(config)
    if "_target_" not in config:
        raise ConfigError("model config has no _target_ naming the backend class to build")
    from emotion_probe.models.registry import check_model_config

    # Before Hydra sees it: instantiate would call any importable name, at any depth of the node.
    check_model_config(OmegaConf.to_container(config, resolve=False))
    missing = [key for key in config if OmegaConf.is_missing(config, key)]
    if missing:
        raise ConfigError(f"model config needs a value for: {', '.join(missing)} (e.g. model.{missing[0]}=...)")
    try:
        return instantiate(config, _convert_="all")
    except InstantiationException as err:
        # Hydra wraps whatever the constructor raised; surface our own clear message unwrapped.
        if isinstance(err.__cause__, EmolabError):
            raise err.__cause__ from None
        raise ConfigError(f"model config: {err}") from None
