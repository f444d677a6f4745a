"""Shared plumbing for experiment entry points: building pieces from config, manifests."""

from __future__ import annotations

import hashlib
import json
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel, ValidationError

from emotion_probe.models import instantiate_backend
from emotion_probe.models.base import ModelBackend
from emotion_probe.analysis.stats import json_safe
from emotion_probe.errors import ConfigError, first_validation_problem
from emotion_probe.files import write_text_atomic
from emotion_probe.redaction import redacted

if TYPE_CHECKING:
    import pandas as pd

    from emotion_probe.models.wrappers.stack import CacheOptions, RetryPolicy

    from emotion_probe.probe import EmotionProbe


def validated(model: type[BaseModel], cfg: DictConfig | dict, where: str) -> Any:
    """Validate a config node with pydantic; report the first bad field by its full name."""
    data = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(first_validation_problem(err, where)) from None


@dataclass(frozen=True)
class RunLayers:
    """The wrappers a run puts around every model it builds, from its `cache` and `retry` groups.

    Validated once per run (experiments.app.config.CacheSettings, RetrySettings) into the plain values
    emotion_probe takes; `wrap` stacks cache (outermost, so hits cost nothing) -> call accounting ->
    retry -> the endpoint's request limit around a backend (emotion_probe.models.wrappers.stack.wrap_backend).
    """

    cache: CacheOptions | None  # None: the cache is off
    retry: RetryPolicy

    @classmethod
    def from_config(cls, run_cfg: DictConfig) -> RunLayers:
        from experiments.app.config import CacheSettings, RetrySettings

        return cls(validated(CacheSettings, run_cfg.cache, "cache").options(),
                   validated(RetrySettings, run_cfg.retry, "retry").policy())

    def wrap(self, backend: ModelBackend, node: DictConfig) -> ModelBackend:
        """`backend`, built from the `model:` config `node`, with the layers around it; the resolved node keys the cache."""
        from emotion_probe.models.wrappers.stack import wrap_backend

        identity = OmegaConf.to_container(node, resolve=True)
        return wrap_backend(backend, identity=identity, cache=self.cache, retry=self.retry)


def build_model(node: DictConfig, run_cfg: DictConfig | None = None) -> ModelBackend:
    """Instantiate the backend named by a `model:` config node; with `run_cfg`, with the run's layers around it."""
    provider = instantiate_backend(node)
    return provider if run_cfg is None else RunLayers.from_config(run_cfg).wrap(provider, node)


def output_dir(cfg: DictConfig) -> Path:
    path = Path(cfg.paths.output_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def git_commit() -> dict[str, Any]:
    """The commit emolab's source runs from, and whether it has uncommitted changes; nulls outside a checkout."""
    source = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(source), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def seeds_in(cfg: DictConfig) -> dict[str, Any]:
    """Every key named `seed` in the config, by dotted path (run seed, random-init weights, ...), resolved."""
    paths: list[str] = []

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                path = f"{prefix}.{key}" if prefix else str(key)
                if key == "seed":
                    paths.append(path)
                walk(value, path)

    # Unresolved on purpose: other keys may need a live Hydra run to resolve, seeds never do.
    walk(OmegaConf.to_container(cfg, resolve=False), "")
    return {path: OmegaConf.select(cfg, path) for path in paths}


def hydra_job() -> dict[str, Any] | None:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    hydra = HydraConfig.get()
    return {"mode": str(hydra.mode.name) if hydra.mode else None,
            "num": OmegaConf.select(hydra.job, "num", throw_on_missing=False),
            "overrides": list(hydra.overrides.task), "launcher": hydra.runtime.choices.get("hydra/launcher")}


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write strict JSON (NaN and infinities as null: json_safe) whole or not at all (emotion_probe.files):
    readers (the report, watch, a resumed sweep) never see half a file, even when the job is killed
    mid-write. URL credentials are masked (emotion_probe.redaction): every record of a run goes through here."""
    write_text_atomic(path, json.dumps(json_safe(redacted(data)), indent=2, default=str, allow_nan=False))


# --- the input files a run read, by content -----------------------------------------------------

#: Packages whose files emolab ships (wheels and scenario sets; conf/): inputs from them are named
#: `pkg://<package>/<path>`, so a record stays comparable when the install moves or is upgraded.
_SHIPPING_PACKAGES = ("emotion_probe", "conf")


@lru_cache(maxsize=None)
def _package_root(package: str) -> Path | None:
    from importlib import resources

    try:
        return Path(str(resources.files(package))).resolve()
    except (ModuleNotFoundError, TypeError):
        return None


def input_key(path: Path | str) -> str:
    """How a run's record names an input file: `pkg://emotion_probe/data/wheels/shaver.yaml` for a file
    emolab ships, else the file's absolute path."""
    resolved = Path(path).expanduser().resolve()
    for package in _SHIPPING_PACKAGES:
        root = _package_root(package)
        if root is not None and resolved.is_relative_to(root):
            return f"pkg://{package}/{resolved.relative_to(root).as_posix()}"
    return str(resolved)


def _input_file(key: str) -> Path:
    """The file an input_key names, on this install."""
    if key.startswith("pkg://"):
        package, _, inside = key.removeprefix("pkg://").partition("/")
        root = _package_root(package)
        if root is not None:
            return root / inside
    return Path(key)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_hashes(*paths: Path | str | None) -> dict[str, str]:
    """`{input_key: sha256}` of the files a run reads (None entries skipped): recorded in its manifest
    (`inputs`) and in run_settings.json, where a rerun into the same dir is compared with them."""
    return {input_key(path): _sha256(Path(path).expanduser()) for path in paths if path is not None}


def current_inputs(recorded: dict[str, str]) -> dict[str, str | None]:
    """The hashes of the files `recorded` names, as they are now; None for a file that is gone."""
    now: dict[str, str | None] = {}
    for key in recorded:
        path = _input_file(key)
        try:
            now[key] = _sha256(path)
        except OSError:
            now[key] = None
    return now


def changed_inputs(recorded: dict[str, str] | None, now: dict[str, str | None]) -> list[str]:
    """The files whose content differs between a run's record and now, each with how: edited, gone,
    read then but not now, or read now but not then. [] when `recorded` is None (an older run's record)."""
    if recorded is None:
        return []
    changed = []
    for key in sorted(set(recorded) | set(now)):
        if key not in now:
            changed.append(f"{key} (read then, not now)")
        elif key not in recorded:
            changed.append(f"{key} (read now, not then)")
        elif now[key] is None:
            changed.append(f"{key} (gone)")
        elif now[key] != recorded[key]:
            changed.append(f"{key} (edited)")
    return changed


def config_group_files(*groups: str) -> list[Path]:
    """The YAML files Hydra composed this run's options of `groups` from ("scenario" -> conf/scenario/acorn.yaml,
    or the user's own in a `hydra.searchpath` folder), found as Hydra finds them: in its config sources, in
    order. [] outside a Hydra run (a test composing a config), where no file is known.
    """
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    runtime = HydraConfig.get().runtime
    roots = []
    for source in runtime.config_sources:
        if source.schema == "file":
            roots.append(Path(source.path))
        elif source.schema == "pkg":
            root = _package_root(source.path.replace("/", "."))
            if root is not None:
                roots.append(root)
    found = []
    for group in groups:
        option = runtime.choices.get(group)
        if option is None:
            continue
        for root in roots:
            candidate = root / group / f"{option}.yaml"
            if candidate.is_file():
                found.append(candidate)
                break
    return found


def probe_scenario_file(cfg: DictConfig) -> tuple["EmotionProbe", "pd.DataFrame", Path]:
    """Validate the probe config and inputs, load the model, and probe `cfg.scenarios` into the run dir.
    The table's `attrs["inputs"]` holds the content hashes of the input files (scenarios and wheel), for
    the run's manifest.

    Every input is checked before the (slow) model load, so a typo fails in a second. A rerun into a run
    dir whose parts were probed with other settings or from other files is refused before any part is read.
    """
    from emotion_probe.data import resolve_data_file
    from emotion_probe.probe import EmotionProbe, ProbeSettings
    from emotion_probe.engines.local import probe_scenarios
    from emotion_probe.limits import InputLimits
    from emotion_probe.scenarios import load_scenarios
    from emotion_probe.wheel import EmotionWheel
    from experiments.app.run_records import claim_run_dir

    settings = validated(ProbeSettings, cfg.probe, "probe")
    # Hashed before they are read: a file edited in between makes the next rerun refuse, never pass stale.
    inputs = input_hashes(resolve_data_file("scenarios", cfg.scenarios), resolve_data_file("wheels", settings.wheel))
    wheel = EmotionWheel.load(settings.wheel)
    scenarios = load_scenarios(cfg.scenarios, limit=cfg.limit, keep_empty=cfg.keep_empty,
                               limits=validated(InputLimits, cfg.limits, "limits"))
    out_dir = output_dir(cfg)
    claim_run_dir(cfg, out_dir, inputs)
    probe = EmotionProbe(build_model(cfg.model, cfg), wheel, settings)
    table = probe_scenarios(probe, scenarios, out_dir, show_progress=cfg.progress)
    table.attrs["inputs"] = inputs
    return probe, table, out_dir


def resume_hint() -> str:
    """How to pick a stopped run up where it stopped: the same dir, named the way this run was started."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return "rerun into the same output dir to resume"
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN:
        return f"rerun the sweep with hydra.sweep.dir={hydra.sweep.dir} to resume"
    return f"rerun with hydra.run.dir={hydra.runtime.output_dir} to resume"
