"""A negotiation's transcript.jsonl: the header, then each checkpointed record exactly once.

The graph's checkpoint is the record of what happened; the transcript follows it. A line is written only
once its step is saved, and a run killed at any moment and resumed writes each line exactly once: the
keys of the lines already there are read back first (agents.records validates each), and a torn last
line is cut off, as its record is still in the checkpoint.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

from agents.records import TranscriptHeader, read_record
from emotion_probe.analysis.negotiation import dumps_strict
from emotion_probe.files import output_errors
from emotion_probe.limits import InputLimits

log = logging.getLogger("experiments.runs.negotiation.run")


class Transcript:
    """transcript.jsonl: the header, then each checkpointed record exactly once, whatever resumes and
    concurrent trials do. Lines already there from an earlier (killed) run are read back first."""

    def __init__(self, path: Path, limits: InputLimits, header: TranscriptHeader):
        self.path, self.limits, self.header = path, limits, header
        self._lock = threading.Lock()
        self._written: set[tuple] = set()
        self._file: Any = None

    def __enter__(self) -> "Transcript":
        self._written = transcript_keys(self.path, self.limits)
        self._file = self.path.open("ab", buffering=0)
        if not self._written:  # a new transcript opens with what every trial in it plays
            self._write(self.header.line())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._file.close()

    def record(self, records: list[dict]) -> None:
        """Append the checkpointed records that are not in the transcript yet, so each lands exactly once."""
        with self._lock:
            for line in records:
                key = transcript_key(line)
                if key not in self._written:
                    self._write(line)
                    self._written.add(key)

    def _write(self, line: dict) -> None:
        data = (dumps_strict(line, default=str) + "\n").encode("utf-8")
        # Unbuffered: a write the disk refuses fails here, and leaves nothing to flush at close.
        with output_errors(self.path):
            while data:
                data = data[self._file.write(data):]


def transcript_key(record: dict) -> tuple:
    """What identifies a transcript line: one per (trial, turn, speaker)."""
    return record.get("trial"), record.get("turn"), record.get("speaker")


def transcript_keys(path: Path, limits: InputLimits | None = None) -> set[tuple]:
    """The keys of the lines already in a transcript.

    A torn last line (no newline: a kill mid-write) is cut off, as its record is still in the checkpoint and
    is written again. Any other line that is not a transcript record raises a ConfigError naming its
    number, before the file is touched: what is wrong there is not for a resume to guess. `limits` caps the
    lines (None: conf/limits/default.yaml's).
    """
    if not path.exists():
        return set()
    limits = limits or InputLimits.shipped()
    keys, end = set(), 0
    for number, line, end in limits.read_lines(path, whole_only=True):
        if line.strip():
            keys.add(transcript_key(read_record(line, f"{path}: line {number}", limits.loads).model_dump()))
    if end < path.stat().st_size:
        log.warning("%s: cutting off a torn last line", path)
        with path.open("r+b") as handle:
            handle.truncate(end)
    return keys
