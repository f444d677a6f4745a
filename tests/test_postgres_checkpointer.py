"""LangGraph checkpoints in a real PostgreSQL server on loopback: parallel jobs, resume.

SQLite locks under concurrent writers, so sweeps whose jobs run at once on many nodes keep their
checkpoints in Postgres (`checkpointer=postgres`). Here two joblib jobs write to one database at
the same time, and a rerun into the same run dir finds the trials finished.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("langgraph.checkpoint.postgres", reason="needs the postgres extra")


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


@pytest.fixture(scope="module")
def postgres_url():
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (make test installs it)")
    # The server refuses to run as root; as root, run it as the packaged `postgres` user.
    as_user: list[str] = []
    data = Path(tempfile.mkdtemp(prefix="emolab-pg-"))
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(data, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "emolab"],
                   check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-l", str(data / "server.log"), "-w",
                    "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)
    try:
        yield f"postgresql://emolab@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def _run(tmp_path: Path, url: str, *args: str, multirun: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMOLAB_POSTGRES_URL": url, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "experiments.app.main", *(["-m"] if multirun else []), "experiment=negotiation", "checkpointer=postgres",
               "salesperson/model=scripted_deal", "customer/model=scripted_deal", "probe_messages=false",
               "trials=2", "progress=false", "cache.enabled=false",
               f"hydra.searchpath=[file://{tmp_path / 'agents_conf'}]", *args]
    return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)


def test_parallel_jobs_share_one_postgres_and_resume(tmp_path, postgres_url, write_deal_agents):
    import psycopg

    write_deal_agents(tmp_path / "agents_conf", trials=2)
    sweep = tmp_path / "sweep"
    result = _run(tmp_path, postgres_url, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                  "customer/persona=bargain_hunter,collector", f"hydra.sweep.dir={sweep}", multirun=True)
    assert result.returncode == 0, result.stderr[-3000:]
    for job in ("0", "1"):
        trials = pd.read_parquet(sweep / job / "trials.parquet")
        assert trials["deal"].all() and len(trials) == 2
        assert not (sweep / job / "checkpoints.sqlite").exists()
    with psycopg.connect(postgres_url) as connection:
        threads = {row[0] for row in connection.execute("SELECT DISTINCT thread_id FROM checkpoints")}
    # Two jobs x two trials, each on its own thread: job dirs key the thread ids, so jobs never collide.
    assert len(threads) == 4 and len({thread.split("/")[0] for thread in threads}) == 2

    # A single run rerun into a finished job's dir finds both trials finished in Postgres.
    rerun = _run(tmp_path, postgres_url, f"hydra.run.dir={sweep / '0'}", "customer/persona=bargain_hunter")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    manifest = json.loads((sweep / "0" / "manifest.json").read_text())
    assert manifest["models"]["salesperson"]["usage"]["calls"].get("generate", 0) == 0
    assert _written_nowhere(postgres_url, sweep)


def _written_nowhere(url: str, folder: Path) -> bool:
    """The connection string (it may hold a password) is in no output file: configs name its variable only."""
    return not any(url in path.read_text(errors="ignore") for path in folder.rglob("*")
                   if path.is_file() and path.suffix in (".json", ".yaml", ".jsonl", ".log"))


def test_a_planted_row_in_a_shared_database_is_refused_and_runs_nothing(tmp_path, postgres_url, write_deal_agents):
    """Anyone who can write the shared database could plant LangGraph's "call module.name(*args)" extension."""
    import ormsgpack
    import psycopg

    from experiments.runs.negotiation.run import run_key

    write_deal_agents(tmp_path / "agents_conf", trials=2)
    run_dir = tmp_path / "run"
    first = _run(tmp_path, postgres_url, f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    marker = tmp_path / "pwned"
    payload = ormsgpack.packb(ormsgpack.Ext(1, ormsgpack.packb(["os", "system", [f"touch {marker}"]])))
    with psycopg.connect(postgres_url) as connection:
        thread, namespace, checkpoint = connection.execute(
            "SELECT thread_id, checkpoint_ns, checkpoint_id FROM checkpoints WHERE thread_id LIKE %s "
            "ORDER BY checkpoint_id DESC LIMIT 1", (f"{run_key(run_dir)}/%",)).fetchone()
        connection.execute("INSERT INTO checkpoint_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, idx, "
                           "channel, type, blob) VALUES (%s, %s, %s, 'planted', 0, 'turns', 'msgpack', %s)",
                           (thread, namespace, checkpoint, payload))
    rerun = _run(tmp_path, postgres_url, f"hydra.run.dir={run_dir}")
    assert rerun.returncode == 2, rerun.stderr[-3000:]
    assert "would call os.system" in rerun.stderr and "Traceback" not in rerun.stderr, rerun.stderr[-3000:]
    assert not marker.exists()
