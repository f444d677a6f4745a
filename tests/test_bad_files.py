"""Files that are broken, or a disk that refuses writes, end a run with one `error:` line and exit code 2, never a
traceback, as a user meets them: a corrupt transcript line (in `watch`, and on resume), a garbage checkpoint file,
a job.json that is not UTF-8, a read-only output dir and a full disk. What was written before stays as it was.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest

from emotion_probe.files import replacing, write_frame

from emolab_cli import emolab, one_error_line, transcript_records
EMOTIONS = ["love", "joy", "surprise", "anger", "sadness", "fear"]
#: The reason CI accepts for a skip below (tests/skip_policy.py): mounting a tmpfs needs root and a container
#: that grants CAP_SYS_ADMIN.
NO_TMPFS = "this machine cannot mount a tmpfs (needs root with CAP_SYS_ADMIN)"


def negotiation(run_dir: Path, conf: Path, *extra: str, trials: int = 2) -> subprocess.CompletedProcess:
    return emolab("experiment=negotiation", "model=scripted", "probe_messages=false", f"trials={trials}",
                  "cache.enabled=false", "progress=false", f"hydra.run.dir={run_dir}",
                  f"hydra.searchpath=[file://{conf}]", "salesperson/model=scripted_deal", "customer/model=scripted_deal", *extra)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, write_deal_agents) -> tuple[Path, Path]:
    """A finished two-trial negotiation run dir, and the config folder of its scripted agents."""
    folder = tmp_path_factory.mktemp("negotiation")
    write_deal_agents(folder / "conf", trials=2)
    done = negotiation(folder / "run", folder / "conf")
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(transcript_records(folder / "run")) == 6
    return folder / "run", folder / "conf"


def _copy(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


@pytest.fixture()
def own_run(tmp_path, write_deal_agents) -> tuple[Path, Path]:
    """A finished two-trial run of this test's own (a resume goes back into the very dir that ran)."""
    write_deal_agents(tmp_path / "conf", trials=2)
    done = negotiation(tmp_path / "run", tmp_path / "conf")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path / "run", tmp_path / "conf"


def _snapshot(run_dir: Path) -> dict[str, bytes]:
    """The run's own files (Hydra's log and .hydra/ are Hydra's)."""
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file() and p.suffix != ".log"}


def _unchanged(run_dir: Path, before: dict[str, bytes]) -> bool:
    return {name: (run_dir / name).read_bytes() for name in before} == before


# --- transcript.jsonl ------------------------------------------------------------------------------


def _with_line(run_dir: Path, number: int, text: str, *, torn_tail: str = "") -> Path:
    transcript = run_dir / "transcript.jsonl"
    lines = transcript.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[number - 1] = text + "\n"
    transcript.write_text("".join(lines) + torn_tail, encoding="utf-8")
    return transcript


@pytest.mark.parametrize(("line", "expected"), [
    ('{"trial": 0, "turn": 1, "speak', "line 2 is not valid JSON"),
    ('[0, 1, "customer"]', "line 2 is not a transcript record (an array where a JSON object belongs)"),
    ('{"trial": 0, "turn": 1, "speaker": "customer", "report": "all of them"}',
     "line 2 is not a transcript record: report: Input should be a valid list"),
])
def test_watch_names_a_bad_middle_line_and_stops(finished_run, tmp_path, line, expected):
    run_dir = _copy(finished_run[0], tmp_path / "run")
    transcript = _with_line(run_dir, 2, line)
    error = one_error_line(emolab("experiment=watch", f"run_dir={run_dir}", "follow=false",
                                  f"hydra.run.dir={tmp_path / 'watch'}"))
    assert error.startswith(f"error: {transcript}: {expected}")


def test_resume_names_a_corrupt_middle_line_stops_and_changes_nothing(own_run):
    run_dir, conf = own_run
    # A torn last line too: a kill mid-write leaves one, and a resume cuts it off, but not past a bad middle line.
    transcript = _with_line(run_dir, 3, '{"trial": 0, "tu', torn_tail='{"trial": 1, "turn": 2, "spe')
    before = _snapshot(run_dir)
    error = one_error_line(negotiation(run_dir, conf))
    assert error.startswith(f"error: {transcript}: line 3 is not valid JSON (")
    assert _unchanged(run_dir, before)


def test_resume_still_cuts_off_a_torn_last_line(own_run):
    run_dir, conf = own_run
    transcript = run_dir / "transcript.jsonl"
    whole = transcript.read_bytes()
    transcript.write_bytes(whole[:-40])  # the last record, cut mid-write (perhaps inside a UTF-8 character)
    done = negotiation(run_dir, conf)
    assert done.returncode == 0, done.stderr[-3000:]
    assert transcript.read_bytes() == whole, "the cut line is written again from the checkpoint, once"


def test_a_garbage_checkpoint_file_is_named_on_resume(own_run):
    run_dir, conf = own_run
    (run_dir / "checkpoints.sqlite").write_bytes(b"this is no SQLite database\n" * 100)
    before = _snapshot(run_dir)
    error = one_error_line(negotiation(run_dir, conf))
    assert str(run_dir / "checkpoints.sqlite") in error and "not a readable checkpoint database" in error
    assert _unchanged(run_dir, before)


# --- the sweep report ------------------------------------------------------------------------------


def test_the_report_names_a_job_json_that_is_not_utf8(finished_run, tmp_path):
    sweep = tmp_path / "sweep"
    job = _copy(finished_run[0], sweep / "0")
    (job / "job.json").write_bytes(b'{"status": "COMPLETED", "overrides": ["seed=\xff\xfe"]}')
    error = one_error_line(emolab("experiment=report", f"sweep_dir={sweep}", f"hydra.run.dir={tmp_path / 'report'}"))
    assert error.startswith(f"error: {job / 'job.json'} is corrupt (not UTF-8")


# --- a dir that refuses writes ---------------------------------------------------------------------


def test_a_replaced_file_is_the_old_one_or_the_new_one_never_half(tmp_path):
    path = tmp_path / "trials.parquet"
    pd.DataFrame({"trial": [0]}).to_parquet(path)
    old = path.read_bytes()
    with pytest.raises(RuntimeError):
        with replacing(path) as staging:
            staging.write_bytes(old[: len(old) // 2])
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ["trials.parquet"]
    write_frame(pd.DataFrame({"trial": [0, 1]}), path, index=False)
    assert pd.read_parquet(path)["trial"].tolist() == [0, 1]
    assert [p.name for p in tmp_path.iterdir()] == ["trials.parquet"]


@contextmanager
def mounted_tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(NO_TMPFS)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """A dir this process cannot write in: chmod 0555, or for root (whom modes do not stop) a read-only tmpfs."""
    if os.geteuid() != 0:
        path.mkdir(parents=True)
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    with mounted_tmpfs(path, "ro,size=1m") as mounted:
        yield mounted


def test_a_read_only_output_dir_is_named_in_one_line(finished_run, tmp_path):
    with read_only_dir(tmp_path / "readonly") as out:
        error = one_error_line(emolab("experiment=report", f"sweep_dir={finished_run[0]}",
                                      f"hydra.run.dir={tmp_path / 'report'}", f"paths.output_dir={out}"))
    reason = os.strerror(errno.EROFS if os.geteuid() == 0 else errno.EACCES)
    # The first file a run makes in the dir it writes is that dir's lock (experiments.app.run_lock), before any work.
    assert error.startswith(f"error: cannot write {out}/.emolab.lock: {reason}")
    assert error.endswith("what the run wrote before is kept")


def _fill(folder: Path) -> None:
    """Write into `folder` until its file system has no byte left."""
    with (folder / "filler").open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
        except OSError as err:
            assert err.errno == errno.ENOSPC
    with (folder / "filler-tail").open("wb", buffering=0) as handle:  # the last blocks, smaller than 64 KiB
        try:
            while True:
                handle.write(b"\0")
        except OSError as err:
            assert err.errno == errno.ENOSPC


def test_a_full_disk_is_named_in_one_line_and_leaves_no_half_file(finished_run, tmp_path):
    with mounted_tmpfs(tmp_path / "full", "size=256k") as out:
        _fill(out)
        error = one_error_line(emolab("experiment=report", f"sweep_dir={finished_run[0]}",
                                      f"hydra.run.dir={tmp_path / 'report'}", f"paths.output_dir={out}"))
        left = sorted(p.name for p in out.iterdir())
    # The lock file takes no block; the sidecar that names its holder is the first thing the run writes there.
    assert error.startswith(f"error: cannot write {out}/.emolab.lock.json: ") and "(ENOSPC)" in error
    assert left == [".emolab.lock", "filler", "filler-tail"], "no half-written file, no temporary file"


def test_a_negotiation_that_fills_the_disk_stops_in_one_line_and_resumes(tmp_path, write_deal_agents):
    """Mid-run, the disk fills: one line, every transcript line written so far is whole, and once there is room
    again a rerun into the same dir finishes with each line once."""
    write_deal_agents(tmp_path / "conf", trials=40)
    with mounted_tmpfs(tmp_path / "disk", "size=160k") as out:
        error = one_error_line(negotiation(tmp_path / "hydra", tmp_path / "conf", f"paths.output_dir={out}",
                                           trials=40))
        assert error.startswith("error: cannot write ") and error.endswith("what the run wrote before is kept")
        lines = (out / "transcript.jsonl").read_bytes().split(b"\n")
        assert all(json.loads(line) for line in lines[:-1]), "whole lines only, but for a torn last one"
        subprocess.run(["mount", "-o", "remount,size=8m", str(out)], check=True)
        done = negotiation(tmp_path / "hydra", tmp_path / "conf", f"paths.output_dir={out}", trials=40)
        assert done.returncode == 0, done.stderr[-3000:]
        records = transcript_records(out)
    keys = [(r["trial"], r["turn"], r["speaker"]) for r in records]
    assert len(keys) == len(set(keys)) == 40 * 3
