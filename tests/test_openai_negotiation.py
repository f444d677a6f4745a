"""A negotiation whose two agents talk to a real OpenAI-compatible server (llama.cpp on loopback), run as a user
runs it, with an API key that must never be written anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.server, pytest.mark.embedded]

REPO = Path(__file__).resolve().parents[1]
SECRET = "sk-emolab-negotiation-secret-9f8e7d6c5b4a"


def test_negotiation_over_an_openai_endpoint_keeps_the_key_secret(llama_server_url, tmp_path):
    run_dir = tmp_path / "run"
    agent_overrides = [
        override
        for role in ("salesperson", "customer")
        for override in (
            f"{role}/model=openai", f"{role}.model.model=smollm2", f"{role}.model.base_url={llama_server_url}",
            f"{role}.model.api_key_env=EMOLAB_TEST_KEY",
            # llama-cpp-python takes a schema as response_format json_object and refuses type json_schema.
            f"{role}.model.structured_output=json_object",
        )
    ]
    command = [sys.executable, "-m", "experiments.app.main", "experiment=negotiation", *agent_overrides,
               "scenario.max_turns=1", "probe_messages=false", f"hydra.run.dir={run_dir}", "progress=false"]
    # EMOLAB_RESPONSE_CACHE is inherited from the test session (tests/conftest.py): never the user's cache.
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "EMOLAB_TEST_KEY": SECRET}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    records = [json.loads(line) for line in (run_dir / "transcript.jsonl").read_text().splitlines()]
    turns = {record["speaker"]: record for record in records if record["speaker"] in ("salesperson", "customer")}
    assert set(turns) == {"salesperson", "customer"}
    assert all(turn["text"].strip() for turn in turns.values())

    assert SECRET not in done.stdout and SECRET not in done.stderr
    written = [path for path in run_dir.rglob("*") if path.is_file()]
    assert {"transcript.jsonl", "manifest.json", "config.yaml"} <= {path.name for path in written}
    for path in written:  # transcript, manifest, .hydra/*, logs, checkpoints, figures
        assert SECRET.encode() not in path.read_bytes(), f"the API key leaked into {path}"
