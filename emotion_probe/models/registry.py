"""Which model providers a config may build: the `emolab.models` entry-point group.

A model config is data that users share (YAML files, run dirs, Ray workers' copies). Hydra's
`instantiate` would call whatever its `_target_` names, so a config may only name a provider
registered in this group, and only at its root: `check_model_config` runs before anything is built.
emolab registers its own providers in pyproject.toml; another package adds one the way pytest plugins
are found, with an entry point of its own:

    [project.entry-points."emolab.models"]
    my_server = "my_package.backend:MyBackend"      # then: _target_: my_package.backend.MyBackend
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from emotion_probe.errors import ConfigError

PROVIDER_GROUP = "emolab.models"


@lru_cache(maxsize=1)
def registered_providers() -> dict[str, EntryPoint]:
    """The `_target_` paths a model config may name ("package.module.Class"), each with its entry point."""
    return {entry.value.replace(":", "."): entry for entry in entry_points(group=PROVIDER_GROUP)}


def nested_targets(node: Any, path: str = "") -> list[str]:
    """Dotted paths of every `_target_` key inside `node` (plain dicts and lists), its own root included."""
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                found.append(where)
            found += nested_targets(value, where)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += nested_targets(value, f"{path}[{index}]")
    return found


def check_model_config(config: dict, where: str = "model") -> None:
    """Refuse a model config whose `_target_` is not a registered provider, or that has one anywhere below its root."""
    target = config.get("_target_")
    providers = registered_providers()
    if target not in providers:
        raise ConfigError(
            f"{where}._target_ {target!r} is not a registered model provider; a model config may name one of "
            f"{sorted(providers)} (another package registers one in the {PROVIDER_GROUP!r} entry-point group)")
    nested = [path for path in nested_targets(config) if path != "_target_"]
    if nested:
        raise ConfigError(f"{where}.{nested[0]}: only a model config's root may name a _target_ "
                          "(a config file is data; it may not build other objects)")
