"""The experiments a config's `task` may run: the `emolab.experiments` entry-point group.

`task` is read from files users share (a preset in their config folder, a job's config in a run dir
the report reads), so it names an experiment only if that experiment is registered: nothing else is
imported on a file's say-so. emolab registers its own in pyproject.toml; another package adds one with
an entry point of its own:

    [project.entry-points."emolab.experiments"]
    my_game = "my_package.game:run"        # then, in its preset: task: my_package.game.run
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from emotion_probe.errors import ConfigError

EXPERIMENT_GROUP = "emolab.experiments"


@lru_cache(maxsize=1)
def registered_experiments() -> dict[str, EntryPoint]:
    """The `task` values a config may name ("experiments.probe.run"), each with its entry point."""
    return {entry.value.replace(":", "."): entry for entry in entry_points(group=EXPERIMENT_GROUP)}


def check_task(task: Any, where: str = "task") -> str:
    """`task` itself when it names a registered experiment; else a ConfigError that lists the registered ones."""
    # A file may hold any YAML value here (a list, a mapping), which no lookup by name can take.
    if not isinstance(task, str):
        raise ConfigError(f"{where} must be the name of a registered experiment (e.g. 'experiments.probe.run'), "
                          f"not a {type(task).__name__}: {task!r}")
    if task not in registered_experiments():
        raise ConfigError(f"{where} {task!r} is not a registered experiment; expected one of "
                          f"{sorted(registered_experiments())} (another package registers one in the "
                          f"{EXPERIMENT_GROUP!r} entry-point group)")
    return str(task)


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
    """Import the module of a registered `task` (its report registers itself there); nothing for any other value."""
    entry = registered_experiments().get(task) if isinstance(task, str) else None
    if entry is not None:
        import importlib

        importlib.import_module(entry.module)
