"""The `emolab` command as a test runs it: a real process, and its one `error:` line checked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def emolab(*args: str, cwd: Path = REPO, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """`emolab <args>` in a fresh process (offline, as CI runs it), with `env` added to the environment."""
    return subprocess.run([sys.executable, "-m", "experiments.app.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """The run's one `error:` line, checked to come with exit code 2 and no traceback."""
    assert done.returncode == 2, (done.stdout[-2000:], done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    return errors[0]


def transcript_records(run_dir: Path) -> list[dict]:
    """A run's transcript.jsonl as its records, less the header line that names the scenario as played."""
    import json

    lines = [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text(encoding="utf-8").splitlines()
             if line.strip()]
    return [line for line in lines if line.get("speaker") != "header"]
