"""Sweeps as a researcher runs them: per-job records, the sweep manifest, kill-and-resume, and the cache.

Every test here is a real `emolab -m ...` multirun in a subprocess, on scripted agents (no model
weights), so it checks the Hydra callback, the job skip on rerun, the LangGraph checkpoints and the
response cache end to end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from emolab_cli import transcript_records
import pytest

TRIALS = 3


def _command(tmp_path: Path, sweep_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments.app.main", "-m", "experiment=negotiation",
            "salesperson/model=scripted_deal", "customer/model=scripted_deal", "probe_messages=false",
            "customer/persona=bargain_hunter,collector", f"trials={TRIALS}", "progress=false",
            f"hydra.sweep.dir={sweep_dir}", f"hydra.searchpath=[file://{tmp_path / 'agents_conf'}]", *extra]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "EMOLAB_RESPONSE_CACHE": str(tmp_path / "responses.sqlite")}


def _transcript(job_dir: Path) -> list[dict]:
    path = job_dir / "transcript.jsonl"
    if not path.exists():
        return []
    return transcript_records(job_dir)


def _closed_trials(job_dir: Path) -> set[int]:
    return {record["trial"] for record in _transcript(job_dir) if record["speaker"] == "closing"}


def _usage_calls(job_dir: Path, role: str) -> int:
    manifest = json.loads((job_dir / "manifest.json").read_text(encoding="utf-8"))
    return manifest["models"][role]["usage"]["calls"].get("generate", 0)


def test_killed_sweep_resumes_without_recomputing_or_losing_rows(tmp_path, write_deal_agents):
    write_deal_agents(tmp_path / "agents_conf", trials=TRIALS, delay_s=0.4)
    sweep = tmp_path / "sweep"
    # The cache is off so that only the resume logic can avoid recomputation.
    command = _command(tmp_path, sweep, "cache.enabled=false")
    process = subprocess.Popen(command, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.time() + 300
    try:
        # Kill once job 0 has finished and job 1 has closed at least one trial, but not all.
        while not ((sweep / "0" / "job.json").exists() and _closed_trials(sweep / "1")):
            assert process.poll() is None, process.stderr.read().decode()[-3000:]
            assert time.time() < deadline, "the sweep made no progress"
            time.sleep(0.05)
        time.sleep(0.15)  # land inside the next (slow) model call, not between a node and its checkpoint
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    first_job0 = (sweep / "0" / "trials.parquet").read_bytes()
    first_transcript1 = _transcript(sweep / "1")
    closed_before = _closed_trials(sweep / "1")
    assert 1 <= len(closed_before) < TRIALS, "the kill must land in the middle of job 1"
    assert not (sweep / "1" / "job.json").exists()

    rerun = subprocess.run(command, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "job already finished" in rerun.stderr

    # Job 0 was skipped whole: its table is byte-identical and its record notes the skip.
    assert (sweep / "0" / "trials.parquet").read_bytes() == first_job0
    assert json.loads((sweep / "0" / "job.json").read_text())["skipped_reruns"] == 1
    # Job 1 kept every record written before the kill and computed no finished trial again.
    final_transcript1 = _transcript(sweep / "1")
    assert final_transcript1[: len(first_transcript1)] == first_transcript1
    later = final_transcript1[len(first_transcript1):]
    assert not {r["trial"] for r in later} & closed_before, "a finished trial was recomputed"
    keys = [(r["trial"], r["turn"], r["speaker"]) for r in final_transcript1]
    assert len(keys) == len(set(keys)), "a turn was recorded twice"
    # The rerun's agents were asked only for the trials that had not finished.
    assert _usage_calls(sweep / "1", "salesperson") == TRIALS - len(closed_before)
    for job in ("0", "1"):
        trials = pd.read_parquet(sweep / job / "trials.parquet")
        assert sorted(trials["trial"]) == list(range(TRIALS)) and trials["deal"].all()
        assert trials["final_price"].tolist() == [7.0] * TRIALS
    manifest = json.loads((sweep / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["jobs_completed"] == 2
    assert manifest["swept"] == {"customer/persona": ["bargain_hunter", "collector"]}
    assert [job["params"] for job in manifest["jobs"]] == [{"customer/persona": "bargain_hunter"},
                                                           {"customer/persona": "collector"}]


def test_rerun_of_a_finished_sweep_makes_no_model_calls(tmp_path, write_deal_agents):
    write_deal_agents(tmp_path / "agents_conf", trials=TRIALS)
    first = subprocess.run(_command(tmp_path, tmp_path / "first"), cwd=tmp_path, env=_env(tmp_path),
                           capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    for job in ("0", "1"):
        assert _usage_calls(tmp_path / "first" / job, "customer") == 2 * TRIALS
    # A fresh sweep dir runs every job again, but every request is answered by the shared cache.
    second = subprocess.run(_command(tmp_path, tmp_path / "second"), cwd=tmp_path, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr[-3000:]
    for job in ("0", "1"):
        job_dir = tmp_path / "second" / job
        manifest = json.loads((job_dir / "manifest.json").read_text())
        for role in ("salesperson", "customer"):
            usage = manifest["models"][role]["usage"]
            assert usage["calls"].get("generate", 0) == 0, (role, usage)
            assert usage["cache"]["hits"] > 0
        pd.testing.assert_frame_equal(pd.read_parquet(job_dir / "trials.parquet"),
                                      pd.read_parquet(tmp_path / "first" / job / "trials.parquet"))


@pytest.mark.parametrize("bad", ["customer/persona=nobody"])
def test_unknown_customer_persona_is_reported(tmp_path, bad):
    result = subprocess.run([sys.executable, "-m", "experiments.app.main", bad], cwd=tmp_path, env=_env(tmp_path),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Could not find 'customer/persona/nobody'" in result.stderr
