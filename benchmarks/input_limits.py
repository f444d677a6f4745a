"""Does a huge input cost bounded memory? Single-line files of growing size, read the way a run reads them.

    python benchmarks/input_limits.py              # 2 MB and 64 MB single-line files, plus the 2 MB file end to end
    python benchmarks/input_limits.py --no-cli     # the readers only (no `emolab` subprocess)

Each case runs in a fresh Python process, so its peak resident memory (resource.getrusage ru_maxrss) is its own:

- `scenarios (capped)`: emotion_probe.scenarios.load_scenarios under conf/limits/default.yaml, which refuses
  the line at read time (limits.line_chars), reading at most 4 bytes per allowed character of it;
- `scenarios (uncapped)`: the same file read whole, as before the caps (Path.read_text), for comparison;
- `transcript (capped)`: experiments.tools.watch.follow on a transcript.jsonl whose one line is that long;
- `emolab experiment=probe`: the whole command on the 2 MB file, as a user runs it (the case that once ran
  for over 300 s and took 5.7 GB before any error, as the scenario was tokenized against every wheel word).

The extra memory of a case is its peak less that of the same process before the read (imports included).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Run in a child process: prints {"baseline_mib", "peak_mib", "seconds", "outcome"} as JSON.
_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    kind, path = sys.argv[1], Path(sys.argv[2])
    if kind == "scenarios":
        from emotion_probe.scenarios import load_scenarios as read
    elif kind == "uncapped":
        read = lambda p: p.read_text(encoding="utf-8").split("\\n")
    else:
        import io
        from rich.console import Console
        from experiments.runs.negotiation.live import LiveView
        from experiments.tools.watch import follow
        read = lambda p: follow(p.parent, LiveView(Console(file=io.StringIO()), live=True), follow=False)
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    try:
        read(path)
        outcome = "read"
    except Exception as err:  # the caps' ConfigError, shown as the user would see it
        outcome = f"{type(err).__name__}: {err}"
    print(json.dumps({"baseline_mib": baseline / 1024, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      / 1024, "seconds": time.perf_counter() - started, "outcome": outcome}))
""")


def single_line_file(folder: Path, name: str, megabytes: int) -> Path:
    """A file of one line of `megabytes` MB: a scenario sentence (.txt) or a transcript record (.jsonl).

    Written a chunk at a time: this process stays small, and so does every child it forks (a child's
    ru_maxrss starts from its parent's resident memory at the fork).
    """
    path = folder / name
    sentence = "I waited all day for news and it never came. " * 1024
    json_line = path.suffix == ".jsonl"
    with path.open("w", encoding="utf-8") as handle:
        if json_line:
            handle.write('{"trial": 0, "turn": 0, "speaker": "salesperson", "text": "')
        for _ in range(megabytes * 1024 * 1024 // len(sentence)):
            handle.write(sentence)
        handle.write('"}\n' if json_line else "\n")
    return path


def measure(kind: str, path: Path) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, kind, str(path)], cwd=REPO, capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


#: Runs the command and prints its peak resident memory: a fresh parent, so ru_maxrss of its children is the command's.
_WRAPPER = textwrap.dedent("""
    import json, resource, subprocess, sys
    try:
        done = subprocess.run(sys.argv[2:], capture_output=True, text=True, timeout=float(sys.argv[1]))
        outcome = f"exit {done.returncode}: " + (done.stderr.strip().splitlines() or [""])[-1]
    except subprocess.TimeoutExpired:
        outcome = f"no answer after {float(sys.argv[1]):.0f} s"
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "outcome": outcome}))
""")


def measure_cli(path: Path, folder: Path, timeout_s: float) -> dict:
    command = [sys.executable, "-m", "experiments.app.main", "experiment=probe", f"scenarios={path}",
               f"hydra.run.dir={folder / 'run'}", "progress=false"]
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _WRAPPER, str(timeout_s), *command], cwd=REPO, capture_output=True,
                          text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return {"baseline_mib": None, "seconds": time.perf_counter() - started,
            **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 64], help="file sizes in MB")
    parser.add_argument("--no-cli", action="store_true", help="skip the end-to-end `emolab experiment=probe` case")
    parser.add_argument("--cli-timeout", type=float, default=300.0, help="seconds before the command is given up")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for megabytes in args.sizes:
            text = single_line_file(folder, f"one_line_{megabytes}mb.txt", megabytes)
            (folder / f"job_{megabytes}").mkdir()
            transcript = single_line_file(folder / f"job_{megabytes}", "transcript.jsonl", megabytes)
            for case, kind, path in [("scenarios (capped)", "scenarios", text), ("scenarios (uncapped)", "uncapped", text),
                                     ("transcript (capped)", "transcript", transcript)]:
                rows.append((case, megabytes, measure(kind, path)))
        if not args.no_cli:
            text = folder / "one_line_2mb.txt"
            if not text.exists():
                single_line_file(folder, text.name, 2)
            rows.append(("emolab experiment=probe", 2, measure_cli(text, folder, args.cli_timeout)))
    print(f"{'case':26} {'file':>6} {'seconds':>8} {'peak MiB':>9} {'extra MiB':>10}  outcome")
    for case, megabytes, row in rows:
        extra = "" if row["baseline_mib"] is None else f"{row['peak_mib'] - row['baseline_mib']:10.1f}"
        outcome = row["outcome"] if len(row["outcome"]) <= 110 else row["outcome"][:109] + "…"
        print(f"{case:26} {megabytes:>4}MB {row['seconds']:8.2f} {row['peak_mib']:9.1f} {extra:>10}  {outcome}")


if __name__ == "__main__":
    main()
