"""`emolab experiment=watch run_dir=...`: follow a negotiation job's transcript with the live view.

Works on a running or finished job, including one job of a parallel sweep or one on a
cluster's shared disk: it only reads `transcript.jsonl` and stops when `summary.json` appears.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig
from rich.console import Console

from emotion_probe.errors import ConfigError
from experiments.live import LiveView


def follow(run_dir: Path, view: LiveView, *, follow: bool = True, poll_s: float = 0.5, timeout_s: float | None = None) -> int:
    """Render every transcript record; keep reading until the job writes its summary. Returns records shown."""
    transcript = run_dir / "transcript.jsonl"
    started = time.monotonic()
    shown = 0
    position = 0
    buffer = ""
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
                    view.handle({"event": "probe" if record.get("speaker") == "probe" else "turn", "record": record})
                    shown += 1
        finished = (run_dir / "summary.json").exists()
        if finished or not follow or (timeout_s is not None and time.monotonic() - started > timeout_s):
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
