"""Shared plumbing for experiment entry points: building pieces from config, manifests."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ValidationError

from emotion_probe.backends import instantiate_backend
from emotion_probe.backends.base import ModelBackend
from emotion_probe.errors import ConfigError, first_validation_problem

if TYPE_CHECKING:
    import pandas as pd

    from emotion_probe.probe import EmotionProbe


def validated(model: type[BaseModel], cfg: DictConfig | dict, where: str) -> Any:
    """Validate a config node with pydantic; report the first bad field by its full name."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(first_validation_problem(err, where)) from None


def build_model(cfg: DictConfig) -> ModelBackend:
    """Instantiate the backend named by a `model:` config node."""
    return instantiate_backend(cfg)


def output_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_manifest(out_dir: Path, cfg: DictConfig, **extra: Any) -> Path:
    """Record what ran: resolved config, backend description, versions. Never secrets."""
    from importlib.metadata import version

    manifest = {
        "written_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": OmegaConf.to_container(cfg, resolve=True),
        "python": platform.python_version(),
        "emolab": version("emolab"),
        **extra,
    }
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, default=str), encoding="utf-8")
    return path


def probe_scenario_file(cfg: DictConfig) -> tuple["EmotionProbe", "pd.DataFrame", Path]:
    """Validate the probe config and inputs, load the model, and probe `cfg.scenarios` into the run dir.

    Every input is checked before the (slow) model load, so a typo fails in a second.
    """
    from emotion_probe.probe import EmotionProbe, ProbeSettings
    from emotion_probe.runner import probe_scenarios
    from emotion_probe.scenarios import load_scenarios
    from emotion_probe.wheel import EmotionWheel

    settings = validated(ProbeSettings, cfg.probe, "probe")
    wheel = EmotionWheel.load(settings.wheel)
    scenarios = load_scenarios(cfg.scenarios, limit=cfg.limit)
    out_dir = output_dir(cfg)
    probe = EmotionProbe(build_model(cfg.model), wheel, **settings.model_dump(exclude={"wheel"}))
    table = probe_scenarios(probe, scenarios, out_dir, show_progress=cfg.progress)
    return probe, table, out_dir
