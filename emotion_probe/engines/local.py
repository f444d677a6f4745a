"""Process scenario files chunk by chunk into Parquet parts, resumable.

Each finished chunk is written as its own Parquet part before the next one starts, so a
crash loses at most the chunk in flight. Rerunning into the same directory skips every
scenario already written, and refuses to mix results made with different settings.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from emotion_probe.errors import ConfigError
from emotion_probe.files import replacing, write_text_atomic
from emotion_probe.probe import EmotionProbe
from emotion_probe.scenarios import Scenario, ScenarioList
from emotion_probe.terminal import printable

ID_COLUMNS = ["id", "text"]
PARTS_DIR = "probe_parts"


class PartsManifest(BaseModel):
    """What the parts in a directory were computed with; a resume must match it.

    `model_identity` is the model's full identity (`ModelBackend.identity()`: its resolved config, with
    device and dtype as they ran), since a name alone lets a CPU float32 and a GPU bfloat16 run of one
    model share a table. None only in parts written by callers that do not record it.
    """

    model_config = ConfigDict(extra="forbid")

    model: str
    settings: dict
    words: list[str]
    model_identity: dict[str, Any] | None = None

    @field_validator("model_identity")
    @classmethod
    def _as_json(cls, identity: dict[str, Any] | None) -> dict[str, Any] | None:
        # Compared with what is read back from manifest.json, so hold it as JSON gives it back (tuples as lists).
        return None if identity is None else json.loads(json.dumps(identity, sort_keys=True, default=str))


def _identity_changes(found: dict[str, Any] | None, expected: dict[str, Any] | None) -> str:
    if found is None or expected is None:
        return "model identity (the parts do not record one)" if found is None else "model identity"
    keys = [key for key in sorted(set(found) | set(expected)) if found.get(key) != expected.get(key)]
    shown = ", ".join(f"{key}: {found.get(key)!r} -> {expected.get(key)!r}" for key in keys[:3])
    return f"model identity ({shown}{', ...' if len(keys) > 3 else ''})"


def _check_manifest(parts_dir: Path, expected: PartsManifest) -> None:
    path = parts_dir / "manifest.json"
    if not path.exists():
        write_text_atomic(path, expected.model_dump_json(indent=2))
        return
    try:
        found = PartsManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        raise ConfigError(f"{path} is corrupt ({err.errors()[0]['msg']}); delete {parts_dir} to start over") from None
    if found != expected:
        changed = [key for key in ("model", "settings", "words") if getattr(found, key) != getattr(expected, key)]
        if found.model_identity != expected.model_identity:
            changed.append(_identity_changes(found.model_identity, expected.model_identity))
        raise ConfigError(
            f"{parts_dir} holds results made with a different {', '.join(changed)}; "
            "resume with the same settings or use a new run directory"
        )


def run_in_parts(
    scenarios: list[Scenario],
    parts_dir: Path,
    manifest: PartsManifest,
    compute: Callable[[list[Scenario]], pd.DataFrame],
    chunk_size: int,
    *,
    label: str,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Apply `compute` to chunks of scenarios not yet in `parts_dir`; return all rows in scenario order.

    `compute` returns one row per scenario with an "id" column.
    """
    parts_dir.mkdir(parents=True, exist_ok=True)
    _check_manifest(parts_dir, manifest)
    parts = sorted(parts_dir.glob("part-*.parquet"))
    done = {str(i) for part in parts for i in pd.read_parquet(part, columns=["id"])["id"]}
    todo = [s for s in scenarios if s.id not in done]
    next_part = len(parts)
    # The label names a model or a persona from a config file: escaped, and shown as text, not markup.
    with Progress(
        TextColumn("{task.description}", style="bold", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    ) as progress:
        task = progress.add_task(printable(label), total=len(scenarios), completed=len(scenarios) - len(todo))
        for start in range(0, len(todo), chunk_size):
            batch = todo[start : start + chunk_size]
            frame = compute(batch)
            # Written under a temporary name and renamed: a part on disk is always complete.
            with replacing(parts_dir / f"part-{next_part:05d}.parquet") as staging:
                frame.to_parquet(staging, index=False)
            next_part += 1
            progress.advance(task, len(batch))
    table = pd.concat([pd.read_parquet(p) for p in sorted(parts_dir.glob("part-*.parquet"))], ignore_index=True)
    table = table.drop_duplicates("id", keep="first").set_index("id")
    order = [s.id for s in scenarios if s.id in table.index]
    return table.loc[order].reset_index()


def with_labels(table: pd.DataFrame, scenarios: list[Scenario]) -> pd.DataFrame:
    """Insert `emotion` and `primary` after id/text when the scenarios are labelled."""
    labels = {s.id: (s.emotion, s.primary) for s in scenarios}
    if any(emotion is not None for emotion, _ in labels.values()):
        table = table.copy()
        table.insert(2, "emotion", [labels[i][0] for i in table["id"]])
        table.insert(3, "primary", [labels[i][1] for i in table["id"]])
    return table


def probe_chunk(probe: EmotionProbe, ids: list[str], texts: list[str]) -> pd.DataFrame:
    """One chunk's rows, as both engines write them: id, text, then probe.frame's columns (one per word,
    and the paper method's rank columns)."""
    # Scenario files were validated on loading; an empty text here was kept on purpose (keep_empty).
    frame = probe.frame(texts, allow_empty=True)
    frame.insert(0, "id", ids)
    frame.insert(1, "text", texts)
    return frame


def probe_scenarios(
    probe: EmotionProbe,
    scenarios: list[Scenario],
    out_dir: str | Path,
    *,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Probe `scenarios` and write `distributions.parquet` (id, text, labels, one column per word, and with
    probe.method=paper the rank-order columns `top_k_words` and `top_k_first_word`).

    When `scenarios` came from `load_scenarios`, the returned table's `attrs["dropped_rows"]` holds what
    reading the file left out (ScenarioList.dropped), for the run's manifest."""
    out_dir = Path(out_dir)
    reserved = set(ID_COLUMNS) | {"emotion", "primary"}
    if clash := reserved & set(probe.words):
        raise ConfigError(f"wheel words {sorted(clash)} clash with the table's own columns")

    def compute(batch: list[Scenario]) -> pd.DataFrame:
        return probe_chunk(probe, [s.id for s in batch], [s.text for s in batch])

    manifest = PartsManifest(model=probe.model.name, settings=probe.settings.model_dump(), words=probe.words,
                             model_identity=probe.model.identity())
    table = run_in_parts(
        scenarios, out_dir / PARTS_DIR, manifest, compute, probe.settings.chunk_size,
        label=f"probing {probe.model.name}", show_progress=show_progress,
    )
    missing = [c for c in ID_COLUMNS + probe.words if c not in table.columns]
    if missing:
        raise ConfigError(f"probe parts in {out_dir / PARTS_DIR} lack columns {missing[:5]}; delete them to start over")
    table = with_labels(table, scenarios)
    with replacing(out_dir / "distributions.parquet") as staging:
        table.to_parquet(staging, index=False)
    if isinstance(scenarios, ScenarioList):
        # Set after writing: it describes the file read, not the table, so the Parquet file does not carry it.
        table.attrs["dropped_rows"] = dict(scenarios.dropped)
    return table
