"""`emolab experiment=bias_table confusion=<json>`: the paper's persona comparison tables from saved counts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from rich.console import Console
from rich.table import Table

from emotion_probe.analysis.bias import accuracy, compare_predictions
from emotion_probe.errors import ConfigError, first_validation_problem
from emotion_probe.files import file_part, write_frame
from emotion_probe.limits import InputLimits
from emotion_probe.terminal import printable_text
from experiments.app.common import output_dir


class ConfusionFile(BaseModel):
    """Per-persona confusion counts: personas[name][true][predicted], aligned with `emotions`."""

    model_config = ConfigDict(extra="allow")

    emotions: list[str]
    personas: dict[str, list[list[int]]]

    @model_validator(mode="after")
    def _square(self) -> "ConfusionFile":
        k = len(self.emotions)
        for name, matrix in self.personas.items():
            if len(matrix) != k or any(len(row) != k for row in matrix):
                raise ValueError(f"persona {name!r}: counts must be {k} x {k} to match 'emotions'")
        return self


def load_confusion(path: str | Path) -> ConfusionFile:
    """A ConfusionFile JSON, or the authors' count tables: one CSV, or a folder of them, per persona."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".csv":
        return load_count_tables(path)
    if not path.is_file():
        raise ConfigError(f"confusion: file not found: {path}")
    try:
        data = InputLimits.shipped().loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ConfigError(f"confusion file {path}: {err.msg}") from None
    except (UnicodeDecodeError, ValueError) as err:  # not UTF-8, nested too deeply, a number too long to read
        raise ConfigError(f"confusion file {path}: not valid JSON ({str(err).split(';')[0]})") from None
    try:
        return ConfusionFile.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"confusion file {path}: {first_validation_problem(err)}") from None


def load_count_tables(path: Path) -> ConfusionFile:
    """The authors' reference/recognition/*.csv: a header of labels, then counts with rows = *predicted*
    and columns = *true* (their plotting script's orientation). Each file is one persona, named by its
    stem; the counts are transposed into ours (rows = true)."""
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files:
        raise ConfigError(f"confusion: no .csv count tables in {path}")
    emotions: list[str] | None = None
    personas: dict[str, list[list[int]]] = {}
    for file in files:
        if not file.is_file():
            raise ConfigError(f"confusion: file not found: {file}")
        rows = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        header = [cell.strip() for cell in rows[0].split(",")] if rows else []
        try:
            counts = np.array([[int(cell) for cell in row.split(",")] for row in rows[1:]], dtype=np.int64)
        except ValueError:
            raise ConfigError(f"confusion: {file}: counts must be whole numbers below the header") from None
        if not header or counts.shape != (len(header), len(header)) or (counts < 0).any():
            raise ConfigError(f"confusion: {file}: expected a header of labels and a {len(header)} x {len(header)} "
                              f"table of non-negative counts, got {counts.shape}")
        if emotions is not None and header != emotions:
            raise ConfigError(f"confusion: {file}: labels {header} differ from {emotions} in the other files")
        emotions = header
        personas[file.stem] = counts.T.tolist()  # theirs: [predicted][true]; ours: [true][predicted]
    return ConfusionFile(emotions=emotions, personas=personas)


def run(cfg: DictConfig) -> dict[str, pd.DataFrame]:
    data = load_confusion(cfg.confusion)
    out_dir = output_dir(cfg)
    console = Console()
    counts = {name: np.asarray(matrix) for name, matrix in data.personas.items()}
    accuracies = pd.DataFrame(
        [{"persona": name, "accuracy": accuracy(m), "scenarios": int(m.sum())} for name, m in counts.items()]
    )
    write_frame(accuracies, out_dir / "accuracy.csv", index=False)
    tables: dict[str, pd.DataFrame] = {}
    for pair in cfg.pairs:
        a, b = pair
        for name in (a, b):
            if name not in counts:
                raise ConfigError(f"pairs: persona {name!r} is not in {cfg.confusion} (has {sorted(counts)})")
        # Column sums: how often each emotion was *predicted* for that persona.
        table = compare_predictions(counts[a].sum(axis=0), counts[b].sum(axis=0), data.emotions)
        tables[f"{a}_vs_{b}"] = table
        write_frame(table, out_dir / f"compare_{file_part(a)}_vs_{file_part(b)}.csv", index=False)
        write_frame(table, out_dir / f"compare_{file_part(a)}_vs_{file_part(b)}.parquet", index=False)
        console.print(_pair_table(a, b, table, accuracy(counts[a]), accuracy(counts[b]), cfg.top))
    console.print(printable_text(f"wrote {out_dir}/accuracy.csv and compare_<a>_vs_<b>.{{csv,parquet}}; "
                                 "* = q < 0.05 (Fisher, BH)"))
    return tables


def _pair_table(a: str, b: str, table: pd.DataFrame, accuracy_a: float, accuracy_b: float, top: int) -> Table:
    # Persona names are the confusion files' names and emotions their headers: escaped, and shown as text.
    view = Table(title=printable_text(f"{a} (accuracy {accuracy_a:.1%}) vs {b} (accuracy {accuracy_b:.1%})"))
    view.add_column(printable_text(f"more often predicted for {a}"))
    view.add_column("diff", justify="right")
    view.add_column(printable_text(f"more often predicted for {b}"))
    view.add_column("diff", justify="right")
    head = table.head(top)
    tail = table.tail(top).iloc[::-1]
    for (_, x), (_, y) in zip(head.iterrows(), tail.iterrows()):
        view.add_row(
            printable_text(x["emotion"] + (" *" if x["significant"] else "")), f"{x['diff']:+.3f}",
            printable_text(y["emotion"] + (" *" if y["significant"] else "")), f"{y['diff']:+.3f}",
        )
    return view
