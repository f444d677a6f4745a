"""Probe a whole scenario file into Parquet, chunk by chunk, resumable.

Each finished chunk is written as its own Parquet part before the next one
starts, so a crash loses at most the chunk in flight. Rerunning into the same
directory skips every scenario already written.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict, ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from emotion_probe.errors import ConfigError
from emotion_probe.probe import EmotionProbe
from emotion_probe.scenarios import Scenario

ID_COLUMNS = ["id", "text"]
PARTS_DIR = "probe_parts"


class PartsManifest(BaseModel):
    """What the parts in a directory were computed with; a resume must match it."""

    model_config = ConfigDict(extra="forbid")

    model: str
    settings: dict
    words: list[str]


def _check_manifest(parts_dir: Path, expected: PartsManifest) -> None:
    path = parts_dir / "manifest.json"
    if not path.exists():
        path.write_text(expected.model_dump_json(indent=2), encoding="utf-8")
        return
    try:
        found = PartsManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as err:
        raise ConfigError(f"{path} is corrupt ({err.errors()[0]['msg']}); delete {parts_dir} to start over") from None
    if found != expected:
        changed = [key for key in ("model", "settings", "words") if getattr(found, key) != getattr(expected, key)]
        raise ConfigError(
            f"{parts_dir} holds results made with a different {', '.join(changed)}; "
            "resume with the same settings or use a new run directory"
        )


def _finished_ids(parts_dir: Path) -> set[str]:
    done: set[str] = set()
    for part in sorted(parts_dir.glob("part-*.parquet")):
        frame = pd.read_parquet(part, columns=["id"])
        done.update(frame["id"].astype(str))
    return done


def probe_scenarios(
    probe: EmotionProbe,
    scenarios: list[Scenario],
    out_dir: str | Path,
    *,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Probe `scenarios` and write `distributions.parquet` (id, text, labels, one column per word)."""
    out_dir = Path(out_dir)
    parts_dir = out_dir / PARTS_DIR
    parts_dir.mkdir(parents=True, exist_ok=True)
    reserved = set(ID_COLUMNS) | {"emotion", "primary"}
    if clash := reserved & set(probe.words):
        raise ConfigError(f"wheel words {sorted(clash)} clash with the table's own columns")
    _check_manifest(
        parts_dir,
        PartsManifest(model=probe.model.name, settings=probe.settings.model_dump(), words=probe.words),
    )
    done = _finished_ids(parts_dir)
    todo = [s for s in scenarios if s.id not in done]
    next_part = len(list(parts_dir.glob("part-*.parquet")))
    chunk = probe.settings.chunk_size
    with Progress(
        TextColumn("[bold]probing[/] {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not show_progress,
    ) as progress:
        task = progress.add_task(probe.model.name, total=len(scenarios), completed=len(scenarios) - len(todo))
        for start in range(0, len(todo), chunk):
            batch = todo[start : start + chunk]
            probs = probe.distribution([s.text for s in batch])
            frame = pd.DataFrame(probs, columns=probe.words)
            frame.insert(0, "id", [s.id for s in batch])
            frame.insert(1, "text", [s.text for s in batch])
            # Write to a temporary name and rename: a part on disk is always complete.
            final = parts_dir / f"part-{next_part:05d}.parquet"
            staging = final.with_suffix(".tmp")
            frame.to_parquet(staging, index=False)
            staging.rename(final)
            next_part += 1
            progress.advance(task, len(batch))
    return collect_parts(out_dir, scenarios, probe.words)


def collect_parts(out_dir: str | Path, scenarios: list[Scenario], words: list[str]) -> pd.DataFrame:
    """Join the parts in scenario order, attach labels, and write `distributions.parquet`."""
    out_dir = Path(out_dir)
    parts = sorted((out_dir / PARTS_DIR).glob("part-*.parquet"))
    table = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    missing = [c for c in ID_COLUMNS + words if c not in table.columns]
    if missing:
        raise ConfigError(f"probe parts in {out_dir / PARTS_DIR} lack columns {missing[:5]}; delete them to start over")
    table = table.drop_duplicates("id", keep="first").set_index("id")
    order = [s.id for s in scenarios if s.id in table.index]
    table = table.loc[order].reset_index()
    labels = {s.id: (s.emotion, s.primary) for s in scenarios}
    if any(emotion is not None for emotion, _ in labels.values()):
        table.insert(2, "emotion", [labels[i][0] for i in table["id"]])
        table.insert(3, "primary", [labels[i][1] for i in table["id"]])
    table.to_parquet(out_dir / "distributions.parquet", index=False)
    return table
