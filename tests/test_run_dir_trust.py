"""A run dir has one writer, and no result in it is silently stale.

Two real `emolab` processes on one run dir; probe reruns into a dir after its scenario file changed; sweep
reruns after a config the job never reads changed, and over a version-1 record (no `fingerprint_version`); and, in
process, that every experiment that declares the config keys it reads (`reads_config`) reads no other.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from emolab_cli import transcript_records
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from experiments.app.fingerprints import FINGERPRINT_VERSION, declared_config_keys, job_fingerprint

REPO = Path(__file__).resolve().parents[1]
EMOLAB = [sys.executable, "-m", "experiments.app.main"]
TRIALS = 3
SHAVER_PRIMARIES = ["love", "joy", "surprise", "anger", "sadness", "fear"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def _report(**values: int) -> dict[str, int]:
    return {**dict.fromkeys(SHAVER_PRIMARIES, 0), **values}


def _negotiation(run_dir: Path, *extra: str, delay_s: float = 0.0) -> list[str]:
    """A negotiation whose scripted agents close a deal at $7 in one exchange per trial, each reply taking
    `delay_s`: the same lines every trial, so a resumed process finds its script where it needs it."""
    sales = json.dumps({"message": "This acorn is yours for $7.", "predicted_customer_emotions": _report(joy=60, surprise=40)})
    deal = json.dumps({"message": "Deal.", "my_emotions": _report(joy=50, love=50), "decision": "accept", "price": 7})
    paid = json.dumps({"paid": "$7"})
    return [*EMOLAB, "experiment=negotiation", "salesperson/model=scripted", "customer/model=scripted", "model=scripted",
            "probe_messages=false", "cache.enabled=false", "progress=false", f"trials={TRIALS}",
            "salesperson.model.responses=[" + ",".join([f"'{sales}'"] * TRIALS) + "]",
            "customer.model.responses=[" + ",".join([f"'{deal}'", f"'{paid}'"] * TRIALS) + "]",
            f"salesperson.model.delay_s={delay_s}", f"customer.model.delay_s={delay_s}",
            f"hydra.run.dir={run_dir}", *extra]


def _transcript_keys(run_dir: Path) -> list[tuple]:
    return [(r["trial"], r["turn"], r["speaker"]) for r in transcript_records(run_dir)]


def test_a_second_process_on_a_running_dir_stops_with_one_line_and_a_waiting_one_resumes(tmp_path):
    run_dir = tmp_path / "run"
    # Slow agents (9 replies of 3 s): the first run is still going when the others reach the dir. The same
    # settings for all three, so that only the lock stands between them.
    first = subprocess.Popen(_negotiation(run_dir, delay_s=3.0), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    waiting = None
    try:
        deadline = time.time() + 240
        while not ((run_dir / "transcript.jsonl").is_file() and (run_dir / "transcript.jsonl").read_text().strip()):
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.time() < deadline, "the first run wrote no transcript line in 240 s"
            time.sleep(0.2)
        waiting = subprocess.Popen(_negotiation(run_dir, "wait_for_lock=true", delay_s=3.0), cwd=tmp_path, env=_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        second = subprocess.run(_negotiation(run_dir, delay_s=3.0), cwd=tmp_path, env=_env(), capture_output=True, text=True,
                                timeout=300)
        assert second.returncode == 2, second.stderr[-3000:]
        assert first.poll() is None, "the first run ended before the second one was refused: slow its agents down"
        assert second.stderr.strip().splitlines() == [f"error: {run_dir} is in use by pid {first.pid} on {platform.node()}"]
        assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
        _, waited = waiting.communicate(timeout=300)
    finally:
        for process in (first, waiting):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert waiting.returncode == 0, waited[-3000:]
    assert f"waiting for {run_dir}: in use by pid {first.pid} on {platform.node()}" in waited
    # Every line once: the refused run wrote nothing, and the waiting one found every trial finished.
    keys = _transcript_keys(run_dir)
    assert len(keys) == len(set(keys)) == TRIALS * 3, keys
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["models"]["customer"]["usage"]["calls"].get("generate", 0) == 0  # the waiting run's
    assert not (run_dir / ".emolab.lock.json").exists()  # the holder's name goes with its lock


def test_a_scenario_file_being_generated_has_one_writer(tmp_path):
    """generate_scenarios appends to its output outside any run dir: that file has a lock of its own."""
    from experiments.app.run_lock import hold_lock, release_lock

    output = tmp_path / "generated.jsonl"
    lock_file = tmp_path / ".generated.jsonl.lock"
    assert hold_lock(lock_file, output, wait=False)  # this test process is the other writer
    try:
        result = _run([*EMOLAB, "experiment=generate_scenarios", "model=scripted", f"output={output}", "words=[joy]",
                       "per_emotion=1", "progress=false", f"hydra.run.dir={tmp_path / 'run'}"], tmp_path)
    finally:
        release_lock(lock_file)
    assert _error_line(result) == f"error: {output} is in use by pid {os.getpid()} on {platform.node()}"
    assert not output.exists()


# --- input files, by content ----------------------------------------------------------------------


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _probe(scenarios: Path, *extra: str) -> list[str]:
    # The untrained 2-layer SmolLM2 over the 6 Ekman words: a real probe in seconds.
    return [*EMOLAB, *(["-m"] if any(x.startswith("hydra.sweep.") for x in extra) else []), "experiment=probe",
            "model=smollm2_random", "probe.wheel=ekman", f"scenarios={scenarios}", "progress=false", *extra]


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def _error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    return lines[0]


def test_a_probe_rerun_on_other_or_edited_scenarios_is_refused_and_never_merged(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("I won the chess final.\nMy dog died this morning.\n", encoding="utf-8")
    b.write_text("Someone keyed my car.\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    first = _run(_probe(a, f"hydra.run.dir={run_dir}"), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    table = pd.read_parquet(run_dir / "distributions.parquet")
    inputs = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))["inputs"]
    wheel = REPO / "emotion_probe" / "data" / "wheels" / "ekman.yaml"
    assert inputs == {str(a.resolve()): _sha256(a), "pkg://emotion_probe/data/wheels/ekman.yaml": _sha256(wheel)}

    # Another file into the same dir: the rows are matched by id (line-1), so it was merged before.
    other = _error_line(_run(_probe(b, f"hydra.run.dir={run_dir}"), tmp_path))
    assert other.startswith(f"error: {run_dir} holds a run with other settings (") and "now experiment=probe" in other
    assert f" and from other input files: {a.resolve()} (read then, not now); {b.resolve()} (read now, not then); " \
           "resume it with the same settings, or run into a new directory" in other
    # The same file, edited: the same settings, another input.
    a.write_text("I lost the chess final.\nMy dog died this morning.\n", encoding="utf-8")
    edited = _run(_probe(a, f"hydra.run.dir={run_dir}"), tmp_path)
    assert _error_line(edited) == (
        f"error: {run_dir} holds a run made from other input files: {a.resolve()} (edited); results of other "
        "inputs are never merged: run into a new directory, or restore the files")
    pd.testing.assert_frame_equal(pd.read_parquet(run_dir / "distributions.parquet"), table)


def _old_fingerprint(cfg) -> str:
    """A version-1 fingerprint, as a job.json without `fingerprint_version` holds it: the whole config but
    `hydra` and `progress`, without the keys version-1 configs lack, and `task` as a module path."""
    from experiments.app.fingerprints import _placed
    from experiments.app.registry import legacy_task

    kept = [key for key in cfg if key not in ("hydra", "progress", "wait_for_lock", "limits")]
    data = OmegaConf.to_container(OmegaConf.masked_copy(cfg, kept), resolve=True, throw_on_missing=False)
    data["task"] = legacy_task(data["task"])
    return hashlib.sha256(json.dumps(_placed(data), sort_keys=True, default=str).encode()).hexdigest()[:16]


def test_a_finished_probe_sweep_outlives_configs_it_never_reads_but_not_an_edited_input(tmp_path):
    scenarios = tmp_path / "a.txt"
    scenarios.write_text("I won the chess final.\n", encoding="utf-8")
    sweep = tmp_path / "sweep"
    command = _probe(scenarios, f"hydra.sweep.dir={sweep}")  # a sweep of one job
    first = _run(command, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    job_dir, job_file = sweep / "0", sweep / "0" / "job.json"

    # A version-1 record: no version, the whole config's fingerprint. It still resumes.
    with initialize_config_module(config_module="conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=probe", "model=smollm2_random", "probe.wheel=ekman",
                                                       f"scenarios={scenarios}", f"paths.output_dir={job_dir}"])
    record = json.loads(job_file.read_text(encoding="utf-8"))
    del record["fingerprint_version"]
    job_file.write_text(json.dumps({**record, "fingerprint": _old_fingerprint(cfg)}), encoding="utf-8")
    again = _run(command, tmp_path)
    assert again.returncode == 0 and "job already finished" in again.stderr, again.stderr[-3000:]
    record = json.loads(job_file.read_text(encoding="utf-8"))
    assert (record["fingerprint_version"], record["skipped_reruns"]) == (FINGERPRINT_VERSION, 1)

    # The negotiation's scenario and customer are no part of a probe job.
    unrelated = _run([*command, "scenario.item=pebble", "customer/persona=collector"], tmp_path)
    assert unrelated.returncode == 0 and "job already finished" in unrelated.stderr, unrelated.stderr[-3000:]
    assert json.loads(job_file.read_text(encoding="utf-8"))["skipped_reruns"] == 2

    scenarios.write_text("I lost the chess final.\n", encoding="utf-8")
    edited = _run(command, tmp_path)
    assert _error_line(edited).startswith(f"error: {job_dir} holds a finished job made from other input files: "
                                          f"{scenarios.resolve()} (edited);")


# --- the config keys each experiment declares -------------------------------------------------------


def _compose(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_a_probe_fingerprint_covers_what_the_probe_reads_and_nothing_else(tmp_path):
    base = ["experiment=probe", f"paths.output_dir={tmp_path}"]
    fingerprint = job_fingerprint(_compose(*base))
    unread = _compose(*base, "scenario=used_car", "customer/persona=collector", "salesperson/model=openai",
                      "persona=female", "wait_for_lock=true", "progress=false", f"paths.output_dir={tmp_path / 'x'}")
    assert job_fingerprint(unread) == fingerprint
    for read in ("limit=5", "probe.wheel=ekman", "scenarios=everyday", "model=smollm2_random", "experiment=hierarchy"):
        assert job_fingerprint(_compose(*base, read)) != fingerprint, read
    # An experiment that declares nothing is fingerprinted by its whole config, as before.
    assert declared_config_keys("report") is None
    report = ["experiment=report", "sweep_dir=x"]
    assert job_fingerprint(_compose(*report, "scenario=used_car")) != job_fingerprint(_compose(*report))


def _logprobs(cfg, scores: dict[str, float]) -> None:
    # " joy" is no key an override can spell: set on the composed config, as tests/test_authors_files.py does.
    OmegaConf.update(cfg, "model.continuation_logprobs", scores, force_add=True)


def _labelled(tmp_path: Path) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "labelled.jsonl"
    rows = [{"id": "win", "text": "I won the final!", "emotion": "joy", "primary": "joy"},
            {"id": "loss", "text": "My dog died.", "emotion": "grief", "primary": "sadness"}]
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def _probe_cfg(tmp_path: Path):
    cfg = _compose("experiment=probe", "model=scripted", f"scenarios={_labelled(tmp_path)}", "progress=false",
                   f"paths.output_dir={tmp_path / 'out'}")
    _logprobs(cfg, {" joy": -1.0, " grief": -2.0})
    return cfg


def _hierarchy_cfg(tmp_path: Path):
    cfg = _compose("experiment=hierarchy", "model=scripted", f"scenarios={_labelled(tmp_path)}", "progress=false",
                   "hierarchy.baseline_samples=10", "hierarchy.bootstrap=2", "hierarchy.sweep_thresholds=[0.2]",
                   f"paths.output_dir={tmp_path / 'out'}")
    _logprobs(cfg, {" joy": -1.0, " grief": -2.0, " hope": -1.5})
    return cfg


def _persona_bias_cfg(tmp_path: Path):
    cfg = _compose("experiment=persona_bias", "persona=female", "model=scripted", f"scenarios={_labelled(tmp_path)}",
                   "recognition.bootstrap=2", "progress=false", f"paths.output_dir={tmp_path / 'out'}")
    _logprobs(cfg, {" joy": -1.0, " grief": -2.0})
    return cfg


def _negotiation_cfg(tmp_path: Path):
    cfg = _compose("experiment=negotiation", "salesperson/model=scripted", "customer/model=scripted", "model=scripted",
                   "probe_messages=false", "cache.enabled=false", "progress=false", f"paths.output_dir={tmp_path / 'out'}")
    cfg.salesperson.model.responses = [json.dumps({"message": "Yours for $7.",
                                                   "predicted_customer_emotions": _report(joy=100)})]
    cfg.customer.model.responses = [json.dumps({"message": "Deal.", "my_emotions": _report(joy=100),
                                                "decision": "accept", "price": 7}), json.dumps({"paid": "$7"})]
    return cfg


def _generate_scenarios_cfg(tmp_path: Path):
    # The word already has its scenario: the run reads everything, then has nothing to ask the model.
    tmp_path.mkdir(parents=True, exist_ok=True)
    output = tmp_path / "generated.jsonl"
    output.write_text(json.dumps({"id": "joy-1", "text": "I won the final!", "emotion": "joy", "primary": "joy"}) + "\n",
                      encoding="utf-8")
    return _compose("experiment=generate_scenarios", "model=scripted", f"output={output}", "words=[joy]",
                    "per_emotion=1", "progress=false", f"paths.output_dir={tmp_path / 'out'}")


DECLARING = {
    "probe": _probe_cfg,
    "hierarchy": _hierarchy_cfg,
    "persona_bias": _persona_bias_cfg,
    "negotiation": _negotiation_cfg,
    "generate_scenarios": _generate_scenarios_cfg,
}


def _task(name: str):
    from experiments.app.registry import load_experiment

    return load_experiment(name)


def _run_on(task: str, cfg, keys) -> None:
    with contextlib.redirect_stdout(io.StringIO()):  # the tables each run prints
        _task(task)(OmegaConf.masked_copy(cfg, ["task", *keys]))


@pytest.mark.parametrize("task", sorted(DECLARING))
def test_each_experiment_reads_exactly_the_config_keys_it_declares(tmp_path, task):
    """On a config holding only `task` and the declared keys, the task runs: reading any other key would fail
    (OmegaConf's "Missing key", or a settings model missing its field), so a key the fingerprint leaves out
    cannot go unnoticed. And with any one declared key taken away, it fails for that key: none is declared
    in vain (which would refuse resumes over a key the task ignores)."""
    declared = declared_config_keys(task)
    assert declared is not None, f"{task} declares no config keys (experiments.app.fingerprints.reads_config)"
    cfg = DECLARING[task](tmp_path / "all")
    assert cfg.task == task and set(declared) <= set(cfg), set(declared) - set(cfg)
    _run_on(task, cfg, declared)
    unread = []
    for key in declared:
        cfg = DECLARING[task](tmp_path / key)
        try:
            _run_on(task, cfg, [other for other in declared if other != key])
        except Exception as err:  # noqa: BLE001 - any failure, as long as it names the missing key
            assert key in str(err), f"without {key!r}: {type(err).__name__}: {err}"
        else:
            unread.append(key)
    assert not unread, f"{task} declares keys it never reads: {unread}"


# --- the lock itself: what cannot be taken stops the run, and what its holder wrote is only text ------------


def test_a_lock_that_is_no_regular_file_stops_the_run_and_nothing_is_written_through_it(tmp_path):
    """A lock that cannot be taken is no lock: were the run to go on, a second one would go on beside it."""
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me\n", encoding="utf-8")
    cases = {"lock_dir": (".emolab.lock", "directory", lambda path: path.mkdir()),
             "lock_link": (".emolab.lock", "symbolic link", lambda path: path.symlink_to(victim)),
             "sidecar_link": (".emolab.lock.json", "symbolic link", lambda path: path.symlink_to(victim))}
    for name, (file_name, kind, make) in cases.items():
        run_dir = tmp_path / name
        run_dir.mkdir()
        make(run_dir / file_name)
        result = _run(_negotiation(run_dir), tmp_path)
        assert _error_line(result) == (f"error: cannot lock {run_dir}: {run_dir / file_name} is a {kind}, not a "
                                       "regular file; remove it"), name
        assert not (run_dir / "transcript.jsonl").exists(), name
    assert victim.read_text(encoding="utf-8") == "keep me\n"


def test_two_runs_writing_one_output_dir_from_two_run_dirs_have_one_writer(tmp_path):
    """`paths.output_dir` is where a run writes, and a user may point it away from its hydra.run.dir."""
    out_dir = tmp_path / "out"

    def negotiation(run_dir: Path, *extra: str) -> list[str]:
        return _negotiation(run_dir, f"paths.output_dir={out_dir}", *extra, delay_s=3.0)

    first = subprocess.Popen(negotiation(tmp_path / "a"), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    waiting = None
    try:
        deadline = time.time() + 240
        while not ((out_dir / "transcript.jsonl").is_file() and (out_dir / "transcript.jsonl").read_text().strip()):
            assert first.poll() is None, first.stderr.read()[-3000:]
            assert time.time() < deadline, "the first run wrote no transcript line in 240 s"
            time.sleep(0.2)
        waiting = subprocess.Popen(negotiation(tmp_path / "c", "wait_for_lock=true"), cwd=tmp_path, env=_env(),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        second = _run(negotiation(tmp_path / "b"), tmp_path)
        assert _error_line(second) == f"error: {out_dir} is in use by pid {first.pid} on {platform.node()}"
        assert first.poll() is None, "the first run ended before the second one was refused: slow its agents down"
        assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
        _, waited = waiting.communicate(timeout=300)
    finally:
        for process in (first, waiting):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert waiting.returncode == 0, waited[-3000:]
    assert f"waiting for {out_dir}: in use by pid {first.pid} on {platform.node()}" in waited
    keys = _transcript_keys(out_dir)
    assert len(keys) == len(set(keys)) == TRIALS * 3, keys
    assert not (out_dir / ".emolab.lock.json").exists()


def test_the_holder_a_sidecar_names_is_printed_escaped_and_a_bad_sidecar_names_nobody(tmp_path):
    from experiments.app.run_lock import hold_lock, release_lock

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    lock_file, sidecar = run_dir / ".emolab.lock", run_dir / ".emolab.lock.json"
    assert hold_lock(lock_file, run_dir, wait=False)  # this test process holds the dir; the sidecar is forged
    try:
        sidecar.write_text(json.dumps({"pid": 1, "host": "box\x1b]0;pwned\x07"}), encoding="utf-8")
        forged = _run(_negotiation(run_dir), tmp_path)
        # A pid no system has, on this host: asking whether it is alive must not break the check.
        sidecar.write_text(json.dumps({"pid": 2**80, "host": platform.node()}), encoding="utf-8")
        bad = _run(_negotiation(run_dir), tmp_path)
    finally:
        release_lock(lock_file)
    assert _error_line(forged) == f"error: {run_dir} is in use by pid 1 on box\\x1b]0;pwned\\x07"
    assert _error_line(bad) == f"error: {run_dir} is in use by an unknown process ({sidecar} does not name it)"
    assert not (run_dir / "transcript.jsonl").exists()


def test_a_corrupt_job_record_in_a_sweep_dir_is_warned_about_once_and_escaped(tmp_path):
    sweep = tmp_path / "sweep"
    (sweep / "7").mkdir(parents=True)
    record = {"status": "FAILED", "num": 7, "overrides": [], "fingerprint": "0", "output_dir": str(sweep / "7"),
              "started_at": None, "finished_at": "2025-01-01T00:00:00+00:00", "wall_time_s": None, "host": "box",
              "pid": 1, "\x1b]0;pwned\x07\x1b[2J": 1}
    (sweep / "7" / "job.json").write_text(json.dumps(record), encoding="utf-8")
    command = _negotiation(tmp_path / "unused")
    result = _run([*EMOLAB, "-m", *command[len(EMOLAB):], f"hydra.sweep.dir={sweep}"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "\x1b" not in output and "\x07" not in output
    warning = f"{sweep / '7' / 'job.json'} is corrupt (\\x1b]0;pwned\\x07\\x1b[2J: Extra inputs are not permitted)"
    assert output.count(warning) == 1, output[-3000:]
