"""Versioned files: data an older emolab wrote is lifted to the current version, one function per version.

A reader validates only the current shape; what an older file lacks or says differently is handled once,
in the function that lifts that version to the next, never by branches in the readers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Upgrade = Callable[[dict[str, Any]], dict[str, Any]]


def upgraded(data: dict[str, Any], key: str, current: int, upgrades: Mapping[int, Upgrade]) -> dict[str, Any]:
    """`data` as version `current` has it. Its version is `data[key]`, 1 where absent (files from before
    versions were recorded); each upgrade lifts its version to the next and sets `key`. A version this
    emolab does not know (newer, or not a whole number) is a ValueError naming it."""
    version = data.get(key, 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= current:
        raise ValueError(f"{key} {version!r} is not one this emolab reads (1 to {current})")
    while version < current:
        data = upgrades[version](data)
        version += 1
    return data
