"""`emolab experiment=watch run_dir=...`: follow a negotiation job's transcript with the live view.

Works on a running or finished job, including one job of a parallel sweep or one on a
cluster's shared disk: it only reads the job's files (`transcript.jsonl`, the config Hydra wrote in
`.hydra/`, and at the end `trials.parquet`) and stops when `summary.json` appears.

It draws with the live console's own code (experiments.runs.negotiation.live): each transcript record is turned
back into the events the live run showed (`replay`), so a watched run reads like the live one,
less the tokens streamed while each reply was written.
"""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console

from emotion_probe.errors import ConfigError
from emotion_probe.limits import InputLimits
from experiments.app.common import validated
from agents.records import TranscriptHeader, read_record
from experiments.runs.negotiation.live import LiveView, replay, summary_table
from experiments.reports.common import read_parquet, read_yaml


def _settings_of_older_run(run_dir: Path) -> tuple[str | None, int | None]:
    """The item on sale and the attempts a turn was allowed, for a transcript written before it opened with
    its header: from the config Hydra saved for the job; None when absent."""
    saved = run_dir / ".hydra" / "config.yaml"
    if not saved.is_file():
        return None, None
    # Read as plain YAML: the job may come from elsewhere, and resolving its interpolations would act on it.
    cfg = read_yaml(saved)
    scenario = cfg.get("scenario") if isinstance(cfg, dict) else None
    item = scenario.get("item") if isinstance(scenario, dict) else None
    retries = cfg.get("max_parse_retries") if isinstance(cfg, dict) else None
    return (item if isinstance(item, str) else None), \
        (retries + 1 if isinstance(retries, int) and not isinstance(retries, bool) else None)


def follow(run_dir: Path, view: LiveView, *, follow: bool = True, poll_s: float = 0.5, timeout_s: float | None = None,
           limits: InputLimits | None = None) -> int:
    """Render every transcript record; keep reading until the job writes its summary. Returns records shown.

    A line that is not a transcript record stops the watch with a ConfigError naming its number. The last
    line, while it has no newline yet, is still being written: it is read again on the next poll.
    `limits` caps each line, the lines and JSON nesting (None: conf/limits/default.yaml's).
    """
    limits = limits or InputLimits.shipped()
    transcript = run_dir / "transcript.jsonl"
    item, attempts_allowed = None, None
    started = time.monotonic()
    shown = 0
    position = 0  # where the first line not yet shown starts
    number = 0  # lines read so far
    trial: object = None
    while True:
        if transcript.exists():
            for number, line, position in limits.read_lines(transcript, start=position, first=number + 1,
                                                            whole_only=True):
                if not line.strip():
                    continue
                record = read_record(line, f"{transcript}: line {number}", limits.loads)
                if isinstance(record, TranscriptHeader):
                    item, attempts_allowed = record.scenario.get("item"), record.attempts_allowed
                    view.emotions = list(record.emotions)
                    continue
                if shown == 0 and item is None:  # no header: a transcript an older emolab wrote
                    item, attempts_allowed = _settings_of_older_run(run_dir)
                if shown == 0 or record.trial != trial:  # the live run opens each trial with a rule
                    trial = record.trial
                    view.begin_trial(trial, item)
                for event in replay(record.line(), attempts_allowed):
                    view.handle(event)
                shown += 1
        finished = (run_dir / "summary.json").exists()
        if finished or not follow or (timeout_s is not None and time.monotonic() - started > timeout_s):
            if finished and (run_dir / "trials.parquet").is_file():
                view.console.print(summary_table(read_parquet(run_dir / "trials.parquet")))
            return shown
        time.sleep(poll_s)


def run(cfg: DictConfig) -> int:
    run_dir = Path(cfg.run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run_dir: {run_dir} is not a directory")
    limits = validated(InputLimits, cfg.limits, "limits")
    console = Console()
    shown = follow(run_dir, LiveView(console, live=True), follow=cfg.follow, poll_s=cfg.poll_s, limits=limits)
    console.print(f"{shown} transcript records from {run_dir}", style="dim", markup=False)
    return shown
