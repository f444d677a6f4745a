"""Locate the data files shipped with emolab, or a user-supplied path."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from emotion_probe.errors import ConfigError

_SUFFIXES = {"wheels": (".yaml", ".yml", ".json"), "scenarios": (".jsonl",)}


def shipped_names(kind: str) -> list[str]:
    """Names of the bundled files of one kind ("wheels" or "scenarios")."""
    folder = resources.files("emotion_probe") / "data" / kind
    if not folder.is_dir():
        return []
    return sorted(
        Path(entry.name).stem for entry in folder.iterdir() if entry.name.endswith(_SUFFIXES[kind])
    )


def resolve_data_file(kind: str, name_or_path: str | Path) -> Path:
    """A bundled name ("shaver") or a path to an existing file ("my_wheel.yaml")."""
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix and candidate.is_file():
        return candidate
    folder = resources.files("emotion_probe") / "data" / kind
    for suffix in _SUFFIXES[kind]:
        entry = folder / f"{name_or_path}{suffix}"
        if entry.is_file():
            return Path(str(entry))
    if candidate.suffix:
        raise ConfigError(f"{kind[:-1]} file not found: {candidate}")
    raise ConfigError(
        f"unknown {kind[:-1]} {str(name_or_path)!r}: expected one of {shipped_names(kind)} "
        f"or a path to a {'/'.join(_SUFFIXES[kind])} file"
    )
