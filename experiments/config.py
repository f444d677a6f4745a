"""The shipped config's values for Python callers: defaults live only in conf/*.yaml.

The pydantic schemas (ProbeSettings, ...) have no defaults of their own, so a library user who builds
an EmotionProbe in Python takes the defaults from the same YAML the `emolab` command composes:

    from emotion_probe import EmotionProbe, EmotionWheel
    from experiments.config import build_probe, probe_settings
    from experiments.models import load_model

    settings = probe_settings(template="{text} I feel")          # conf/probe/default.yaml, one key changed
    probe = EmotionProbe(load_model("smollm2"), EmotionWheel.load(settings.wheel), settings)
    probe = build_probe(load_model("smollm2"), wheel="ekman")    # settings, wheel and probe in one call
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any, TypeVar

from omegaconf import OmegaConf
from pydantic import BaseModel

from emotion_probe.errors import ConfigError
from emotion_probe.models.base import ModelBackend
from emotion_probe.probe import EmotionProbe, ProbeSettings
from emotion_probe.wheel import EmotionWheel
from experiments.common import validated

S = TypeVar("S", bound=BaseModel)


def group_values(group: str, option: str = "default") -> dict[str, Any]:
    """The values of one config group option as shipped (`conf/<group>/<option>.yaml`), resolved.

    Read as the file, not through Hydra's compose: composing would need Hydra's global state, which an
    `emolab` run already holds, and these group files neither use defaults lists nor interpolate.
    """
    path = files("conf").joinpath(group, f"{option}.yaml")
    if not path.is_file():
        raise ConfigError(f"no config conf/{group}/{option}.yaml")
    values = OmegaConf.to_container(OmegaConf.create(path.read_text(encoding="utf-8")), resolve=True)
    if not isinstance(values, dict):
        raise ConfigError(f"conf/{group}/{option}.yaml is not a mapping")
    return values


def settings_from_conf(schema: type[S], group: str, option: str = "default", **overrides: Any) -> S:
    """`schema` validated from conf/<group>/<option>.yaml with `overrides` applied (unknown keys are refused)."""
    return validated(schema, {**group_values(group, option), **overrides}, group)


def probe_settings(**overrides: Any) -> ProbeSettings:
    """ProbeSettings with conf/probe/default.yaml's values, e.g. `probe_settings(wheel="ekman", method="paper")`."""
    return settings_from_conf(ProbeSettings, "probe", **overrides)


def build_probe(model: ModelBackend, **overrides: Any) -> EmotionProbe:
    """An EmotionProbe on `model` with conf/probe/default.yaml's settings and `overrides`, its wheel loaded
    once from the resulting `wheel` setting: `build_probe(load_model("smollm2"), wheel="ekman")`."""
    settings = probe_settings(**overrides)
    return EmotionProbe(model, EmotionWheel.load(settings.wheel), settings)
