"""Model backends behind one small interface, chosen by `conf/model/*.yaml`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from emotion_probe.models.base import (
    ChatMessage,
    GenerateConfig,
    Generation,
    ModelBackend,
    ScoreResult,
)
from emotion_probe.errors import ConfigError, EmolabError

__all__ = ["ChatMessage", "GenerateConfig", "Generation", "ModelBackend", "ScoreResult", "instantiate_backend", "load_model", "model_config_names"]


def model_config_names() -> list[str]:
    """The names of the shipped `conf/model/*.yaml` files."""
    from importlib import resources

    folder = resources.files("conf") / "model"
    return sorted(Path(entry.name).stem for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_model(name_or_config: str | dict | Any, **overrides: Any) -> ModelBackend:
    """Build a backend from a `conf/model` name ("smollm2"), or a config with a `_target_`.

    >>> model = load_model("smollm2")                       # the embedded default
    >>> model = load_model("transformers", path="/models/llama")
    """
    from omegaconf import OmegaConf

    if isinstance(name_or_config, str):
        from importlib import resources

        entry = resources.files("conf") / "model" / f"{name_or_config}.yaml"
        if not entry.is_file():
            raise ConfigError(f"unknown model {name_or_config!r}: expected one of {model_config_names()} or a config dict")
        config = _model_config_file(name_or_config)
    else:
        config = OmegaConf.create(name_or_config)
    if "_target_" not in config:
        raise ConfigError("model config has no _target_ naming the backend class to build")
    return instantiate_backend(OmegaConf.merge(config, overrides))


def _model_config_file(name: str) -> Any:
    """conf/model/<name>.yaml with the files its Hydra defaults list names merged in underneath (vllm -> openai)."""
    from importlib import resources

    import yaml
    from omegaconf import OmegaConf

    entry = resources.files("conf") / "model" / f"{name}.yaml"
    raw = yaml.safe_load(entry.read_text(encoding="utf-8")) or {}
    parents = [item for item in raw.pop("defaults", []) if item != "_self_"]
    return OmegaConf.merge(*(_model_config_file(parent) for parent in parents), OmegaConf.create(raw))


def instantiate_backend(config: Any) -> ModelBackend:
    """Build a backend from a `model:` config node, reporting bad config as one ConfigError."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

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
