"""`emolab experiment=probe`: next-word emotion distributions for a scenario file."""

from __future__ import annotations


import pandas as pd
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from emotion_probe.probe import EmotionProbe
from experiments.common import probe_scenario_file, write_manifest


def run(cfg: DictConfig) -> pd.DataFrame:
    probe, table, out_dir = probe_scenario_file(cfg)
    write_manifest(out_dir, cfg, model=probe.model.describe(), probe=probe.describe(), scenarios=len(table))
    _print_summary(table, probe, cfg.show_top, out_dir)
    return table


def _print_summary(table: pd.DataFrame, probe: EmotionProbe, show_top: int, out_dir) -> None:
    console = Console()
    words = probe.words
    summary = Table(title=f"Top emotions ({probe.describe()['scored_with']}), first rows", show_lines=False)
    summary.add_column("id")
    summary.add_column("text", max_width=44, overflow="ellipsis", no_wrap=True)
    if "emotion" in table.columns:
        summary.add_column("label")
    summary.add_column(f"top {show_top}", no_wrap=True)
    for _, row in table.head(10).iterrows():
        ranked = row[words].astype(float).sort_values(ascending=False).head(show_top)
        top = ", ".join(f"{w} {p:.2f}" for w, p in ranked.items())
        cells = [row["id"], row["text"]] + ([str(row["emotion"])] if "emotion" in table.columns else []) + [top]
        summary.add_row(*cells)
    console.print(summary)
    if "emotion" in table.columns:
        predicted = table[words].astype(float).idxmax(axis=1)
        accuracy = (predicted == table["emotion"]).mean()
        primary_of = probe.wheel.primary_of
        primary_hits = [
            label in probe.wheel.index and primary_of(p) == primary_of(label)
            for p, label in zip(predicted, table["emotion"])
        ]
        console.print(
            f"top-1 accuracy over {len(words)} words: [bold]{accuracy:.1%}[/]; "
            f"same primary: [bold]{sum(primary_hits) / len(primary_hits):.1%}[/] (n={len(table)})"
        )
    console.print(f"wrote [bold]{out_dir / 'distributions.parquet'}[/] ({len(table)} rows x {len(words)} words)")
