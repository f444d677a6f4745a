"""`emolab experiment=watch run_dir=...`: follow a negotiation job's transcript with the live view.

Works on a running or finished job, including one job of a parallel sweep or one on a
cluster's shared disk: it only reads the job's files (`transcript.jsonl`, the config Hydra wrote in
`.hydra/`, and at the end `trials.parquet`) and stops when `summary.json` appears.

It draws with the live console's own code (experiments.live): each transcript record is turned
back into the events the live run showed (`replay`), so a watched run reads like the live one,
less the tokens streamed while each reply was written.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from emotion_probe.errors import ConfigError
from experiments.live import LiveView, replay, summary_table


def _job_settings(run_dir: Path) -> tuple[str | None, int | None]:
    """The item on sale and the attempts a turn was allowed, from the config Hydra saved for the job;
    None when absent."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return None, None
    cfg = OmegaConf.load(saved)
    item = OmegaConf.select(cfg, "scenario.item", default=None)
    retries = OmegaConf.select(cfg, "max_parse_retries", default=None)
    return item, (int(retries) + 1 if isinstance(retries, int) else None)


#: What the values of a record without its own `emotions` labels are: transcripts written before
#: records carried labels all reported over the Shaver wheel's primaries, whatever probe.wheel said.
UNLABELLED_EMOTIONS = ("love", "joy", "surprise", "anger", "sadness", "fear")


def follow(run_dir: Path, view: LiveView, *, follow: bool = True, poll_s: float = 0.5, timeout_s: float | None = None) -> int:
    """Render every transcript record; keep reading until the job writes its summary. Returns records shown."""
    transcript = run_dir / "transcript.jsonl"
    item, attempts_allowed = _job_settings(run_dir)
    if view.emotions is None:
        view.emotions = list(UNLABELLED_EMOTIONS)  # until a record names its own (every new one does)
    started = time.monotonic()
    shown = 0
    position = 0
    buffer = ""
    trial: object = None
    while True:
        if transcript.exists():
            with transcript.open(encoding="utf-8") as handle:
                handle.seek(position)
                buffer += handle.read()
                position = handle.tell()
            *complete, buffer = buffer.split("\n")  # a line still being written stays in the buffer
            for line in complete:
                if line.strip():
                    record = json.loads(line)
                    if shown == 0 or record.get("trial") != trial:  # the live run opens each trial with a rule
                        trial = record.get("trial")
                        view.begin_trial(trial, item)
                    for event in replay(record, attempts_allowed):
                        view.handle(event)
                    shown += 1
        finished = (run_dir / "summary.json").exists()
        if finished or not follow or (timeout_s is not None and time.monotonic() - started > timeout_s):
            if finished and (run_dir / "trials.parquet").is_file():
                view.console.print(summary_table(pd.read_parquet(run_dir / "trials.parquet")))
            return shown
        time.sleep(poll_s)


def run(cfg: DictConfig) -> int:
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir: {run_dir} is not a directory")
    console = Console()
    shown = follow(run_dir, LiveView(console, live=True), follow=cfg.follow, poll_s=cfg.poll_s)
    console.print(f"[dim]{shown} transcript records from {run_dir}[/]")
    return shown
