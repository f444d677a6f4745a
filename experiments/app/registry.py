"""The experiments a config's `task` may run: the `emolab.experiments` entry-point group.

`task` is read from files users share (a preset in their config folder, a job's config in a run dir
the report reads), so it names an experiment only if that experiment is registered: nothing else is
imported on a file's say-so. A task is the entry point's name, not a module path, so moving code
never changes what a run dir says it ran. emolab registers its own in pyproject.toml; another package
adds one with an entry point of its own:

    [project.entry-points."emolab.experiments"]
    my_game = "my_package.game:run"        # then, in its preset: task: my_game
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from emotion_probe.errors import ConfigError

EXPERIMENT_GROUP = "emolab.experiments"

#: Run dirs whose records are of fingerprint version 1 or 2 say `task: experiments.<module>.<function>`.
#: Each maps to the experiment it ran; `upgrade_task` is the only place that reads this form.
LEGACY_TASKS = {
    **{f"experiments.{name}.run": name for name in (
        "bias_table", "compare_tree", "generate_scenarios", "hierarchy", "init_conf", "negotiation",
        "persona_bias", "preview", "probe", "report", "watch")},
    "experiments.hierarchy.report": "hierarchy_report",
    "experiments.persona_report.report": "persona_report",
}


@lru_cache(maxsize=1)
def registered_experiments() -> dict[str, EntryPoint]:
    """The `task` values a config may name ("probe"), each with its entry point."""
    return {entry.name: entry for entry in entry_points(group=EXPERIMENT_GROUP)}


def upgrade_task(task: Any) -> Any:
    """`task` as an entry-point name: a module path from LEGACY_TASKS becomes the experiment's name."""
    return LEGACY_TASKS.get(task, task) if isinstance(task, str) else task


def legacy_task(task: str) -> str:
    """The module path LEGACY_TASKS gives for `task`, to compare with fingerprints of versions 1 and 2."""
    return next((old for old, name in LEGACY_TASKS.items() if name == task), task)


def check_task(task: Any, where: str = "task") -> str:
    """The registered name `task` stands for; else a ConfigError that lists the registered ones."""
    # A file may hold any YAML value here (a list, a mapping), which no lookup by name can take.
    if not isinstance(task, str):
        raise ConfigError(f"{where} must be the name of a registered experiment (e.g. 'probe'), "
                          f"not a {type(task).__name__}: {task!r}")
    name = upgrade_task(task)
    if name not in registered_experiments():
        raise ConfigError(f"{where} {task!r} is not a registered experiment; expected one of "
                          f"{sorted(registered_experiments())} (another package registers one in the "
                          f"{EXPERIMENT_GROUP!r} entry-point group)")
    return name


def load_experiment(task: Any, where: str = "task") -> Callable[..., Any]:
    """The function a registered `task` names. A module that fails to import for a missing dependency is
    reported with the real cause (usually an extra to install); any other failure is a bug and keeps its traceback."""
    entry = registered_experiments()[check_task(task, where)]
    try:
        function = entry.load()
    except ImportError as err:
        raise ConfigError(f"{where} {task!r} cannot be imported: {type(err).__name__}: {err}") from err
    except AttributeError:
        raise ConfigError(f"{where} {task!r}: module {entry.module!r} has no function {entry.attr!r}") from None
    if not callable(function):
        raise ConfigError(f"{where} {task!r}: {entry.value} is not a function")
    return function


def import_owner(task: Any) -> None:
    """Import the module of a registered `task` (a third-party experiment registers its report there);
    nothing for any other value."""
    entry = registered_experiments().get(upgrade_task(task)) if isinstance(task, str) else None
    if entry is not None:
        import importlib

        importlib.import_module(entry.module)
