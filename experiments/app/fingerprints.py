"""What a run computes, as a hash: a finished job or a resumable run is taken up again only by a config
with the same fingerprint.

A fingerprint covers `task` and the top-level keys the task declared with `reads_config`, resolved, without
the keys that change only how a run looks or where it writes (VOLATILE_KEYS). Run dirs keep the fingerprints
they were made with, with the version that made them: `same_settings` compares a record of any version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf, open_dict

# Keys that change how a run looks or where it writes, not what it computes: a rerun may differ in them.
# (`paths` is the run dir itself: a sweep moved to another disk is still the same sweep.)
VOLATILE_KEYS = ("progress", "wait_for_lock", "paths")
#: How fingerprints are made, as a record's `fingerprint_version` says: 3 = `task` (an entry-point name) and
#: the keys the task declared; 2 = the same with `task` as a module path (experiments.app.registry.LEGACY_TASKS);
#: 1 (a record without a version) = the whole config but `progress`. A record of any version is compared the
#: way its version makes fingerprints (`same_settings`), so no run dir is refused for its record's age alone.
FINGERPRINT_VERSION = 3
#: Left out when a version-1 fingerprint is compared: `progress`, which it never covered, and the keys a
#: version-1 config does not have, so that such a record still matches a config that differs from its own
#: only by them.
_LEGACY_LEFT_OUT = ("progress", "wait_for_lock", "limits")
#: The attribute `reads_config` sets on a task.
_CONFIG_KEYS_ATTRIBUTE = "config_keys"

Task = TypeVar("Task", bound=Callable[..., Any])


def reads_config(*keys: str) -> Callable[[Task], Task]:
    """Declare the top-level config keys an experiment's task reads.

    A sweep job's fingerprint (`job_fingerprint`) covers these and `task`, nothing else, so editing a
    config the task never reads (conf/scenario/acorn.yaml for a probe) leaves its finished jobs finished.
    tests/test_run_dir_trust.py runs every declared task on a config holding only these keys, so a key
    read but not declared fails there.
    """
    def declare(task: Task) -> Task:
        setattr(task, _CONFIG_KEYS_ATTRIBUTE, tuple(keys))
        return task

    return declare


def declared_config_keys(task: str) -> tuple[str, ...] | None:
    """The keys the experiment `task` ("probe") declared with `reads_config`; None when it
    declared none, or is no experiment emolab can find (its fingerprint then covers the whole config)."""
    from experiments.app.registry import registered_experiments, upgrade_task

    entry = registered_experiments().get(upgrade_task(task))
    if entry is None:  # refused before it runs (experiments.app.config_guard); nothing is imported for it here
        return None
    try:
        function = entry.load()
    except (ImportError, AttributeError):  # a task whose extra is missing fails when it runs, with the reason
        return None
    keys = getattr(function, _CONFIG_KEYS_ATTRIBUTE, None)
    return tuple(keys) if keys is not None else None


def job_fingerprint(cfg: DictConfig) -> str:
    """A hash of what a job computes: `task` and the config keys its task declared (`reads_config`),
    resolved, without the volatile keys; the whole config (less the hydra node) for a task that declared none.

    Takes the job's config with or without its hydra node (callbacks get it, the task does not).
    Every model config in it has `device: auto` and `dtype: auto` resolved to what this machine runs
    (emotion_probe.models.wrappers.stack.resolved_model_config): a job finished on a GPU in bfloat16 is not
    the same job as one on a CPU in float32, though their configs read the same.
    """
    declared = declared_config_keys(cfg.get("task"))
    if declared is None:
        kept = [key for key in cfg if key not in ("hydra", *VOLATILE_KEYS)]
    else:
        kept = [key for key in ("task", *declared) if key in cfg and key not in VOLATILE_KEYS]
    return _hash_keys(cfg, kept)


def _legacy_fingerprint(cfg: DictConfig) -> str:
    """A version-1 fingerprint: the whole config but the hydra node and the keys in _LEGACY_LEFT_OUT."""
    kept = [key for key in cfg if key not in ("hydra", *_LEGACY_LEFT_OUT)]
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, kept), resolve=True, throw_on_missing=False)
    return _digest(data)


def _hash_keys(cfg: DictConfig, keys: list[str]) -> str:
    # Each key resolved where it sits, so an interpolation into a key left out still resolves.
    data = {}
    for key in keys:
        value = OmegaConf.select(cfg, key, throw_on_missing=False)
        data[key] = OmegaConf.to_container(value, resolve=True, throw_on_missing=False) \
            if OmegaConf.is_config(value) else value
    return _digest(data)


def _digest(data: Any) -> str:
    """The fingerprint of plain config data: its model configs placed (`_placed`), as sorted JSON, hashed."""
    return hashlib.sha256(json.dumps(_placed(data), sort_keys=True, default=str).encode()).hexdigest()[:16]


def same_settings(fingerprint: str, version: int, cfg: DictConfig) -> bool:
    """Whether a recorded fingerprint, made the way `version` says, is this config's."""
    if version >= FINGERPRINT_VERSION:
        return fingerprint == job_fingerprint(cfg)
    cfg = _with_legacy_task(cfg)
    return fingerprint == (job_fingerprint(cfg) if version == 2 else _legacy_fingerprint(cfg))


def _with_legacy_task(cfg: DictConfig) -> DictConfig:
    """`cfg` with `task` as versions 1 and 2 recorded it (a module path), to compare with their fingerprints."""
    from experiments.app.registry import legacy_task

    task = cfg.get("task")
    if not isinstance(task, str):
        return cfg
    copy = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(copy):
        copy.task = legacy_task(task)
    return copy


def other_settings(version: int) -> str:
    """How a refusal names the settings it compared: a version-1 record covers the whole config."""
    if version >= 2:  # versions 2 and 3 cover the same keys
        return "other settings"
    return ("other settings, or was recorded by an earlier emolab over its whole config (which an upgrade "
            "also changes)")


def _placed(node: Any) -> Any:
    """`node` with every model config in it (a dict with a `_target_`) given its resolved device and dtype."""
    if isinstance(node, list):
        return [_placed(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _placed(value) for key, value in node.items()}
    if "_target_" in node:
        from emotion_probe.models.wrappers.stack import resolved_model_config

        node = resolved_model_config(node)
    return node
