"""`emolab experiment=probe engine=ray`: Ray Data sharding gives the local engine's table.

The end-to-end tests start a real local Ray instance (num_cpus=2, two probe workers) in a subprocess.
The rest check, without starting Ray, that bad settings fail in a second with the field named.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module

from emotion_probe.errors import ConfigError
from emotion_probe.engines.ray import RAY_INSTALL_HINT, RaySettings, import_ray
from experiments.app.common import validated

EMOLAB = [sys.executable, "-m", "experiments.app.main"]
TEXTS = [
    "I won the regional chess final!",
    "My dog died this morning.",
    "Someone keyed my car, again.",
    "The exam results come out tomorrow.",
    "My best friend threw me a surprise party.",
    "I heard footsteps behind me in the dark alley.",
    "The train was cancelled for the third time this week.",
    "My sister finally got the job she wanted.",
    "I forgot my lines in front of the whole school.",
    "The old house smelled of rot and something worse.",
    "We watched the sun rise over the mountains together.",
    "He lied to me about where he was all night.",
    "The doctor said the scan came back clear.",
    "Nobody came to my birthday dinner.",
    "A stranger returned the wallet I had lost.",
    "The neighbours play loud music every night at three.",
]


def _scenarios(tmp_path: Path) -> Path:
    # Labelled, and ids out of alphabetical order, so that "scenario order" and the label columns are both checked.
    path = tmp_path / "sixteen.jsonl"
    rows = [{"id": f"x{(7 * i) % 16:02d}", "text": text, "emotion": "joy" if i % 2 else "grief",
             "primary": "joy" if i % 2 else "sadness"} for i, text in enumerate(TEXTS)]
    path.write_text("\n".join(json.dumps(row) for row in rows), encoding="utf-8")
    return path


def _emolab(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    from emotion_probe.models.paths import cache_root

    # A private HOME shows whether Ray wrote a token into ~/.ray; the converted model stays where it is.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path / "home"), "EMOLAB_CACHE": str(cache_root())}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE"):
        env.pop(name, None)
    return subprocess.run([*EMOLAB, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.embedded
def test_engine_ray_gives_the_local_engines_table(tmp_path):
    scenarios = _scenarios(tmp_path)
    # The response cache is off, or the second run would read the first one's answers back.
    common = ["experiment=probe", "model=smollm2_random", f"scenarios={scenarios}", "probe.wheel=plutchik",
              "probe.chunk_size=4", "cache.enabled=false", "progress=false"]
    local = _emolab(tmp_path, *common, f"hydra.run.dir={tmp_path / 'local'}")
    assert local.returncode == 0, local.stderr[-3000:]
    on_ray = _emolab(tmp_path, *common, "engine=ray", "ray.num_cpus=2", "ray.num_workers=2",
                     f"hydra.run.dir={tmp_path / 'ray'}")
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]

    expected = pd.read_parquet(tmp_path / "local" / "distributions.parquet")
    got = pd.read_parquet(tmp_path / "ray" / "distributions.parquet")
    assert list(got.columns) == list(expected.columns)
    assert list(got.columns[:4]) == ["id", "text", "emotion", "primary"] and got.shape == (16, 4 + 24)
    assert got["id"].tolist() == expected["id"].tolist() == [json.loads(line)["id"] for line in scenarios.read_text().splitlines()]
    assert got.dtypes.equals(expected.dtypes)
    pd.testing.assert_frame_equal(got.iloc[:, :4], expected.iloc[:, :4])
    np.testing.assert_allclose(got.iloc[:, 4:].to_numpy(), expected.iloc[:, 4:].to_numpy(), rtol=0, atol=1e-6)

    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    local_manifest = json.loads((tmp_path / "local" / "manifest.json").read_text())
    assert manifest["config"]["engine"] == "ray" and manifest["scenarios"] == 16
    assert manifest["probe"]["scored_with"] == local_manifest["probe"]["scored_with"] == "transformers-packed"
    assert manifest["model"]["name"] == local_manifest["model"]["name"]
    assert manifest["model"]["parameters"] == local_manifest["model"]["parameters"]
    assert manifest["model"]["wrapped_by"] == local_manifest["model"]["wrapped_by"]
    # 16 scenarios in chunks of 4: four score calls in all, shared by the two workers, each with its own model.
    assert manifest["model"]["usage"] == local_manifest["model"]["usage"]
    assert manifest["model"]["usage"]["calls"] == {"score": 4, "scored_prompts": 16}
    assert manifest["ray"]["blocks"] == 4 and len(manifest["ray"]["workers"]) == 2
    assert manifest["ray"]["ran_on"] == "a local Ray instance"
    # The local instance ran without token authentication, so Ray wrote no secret into the home dir.
    assert not (tmp_path / "home" / ".ray" / "auth_token").exists()
    assert "by 2 workers" in on_ray.stdout


@pytest.mark.embedded
def test_a_worker_that_cannot_load_its_model_is_one_clear_line(tmp_path):
    result = _emolab(tmp_path, "experiment=probe", "engine=ray", "ray.num_cpus=2", "ray.num_workers=1",
                     f"scenarios={_scenarios(tmp_path)}", "model=transformers", f"model.path={tmp_path / 'no-model'}",
                     f"hydra.run.dir={tmp_path / 'run'}", "progress=false")
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model.path: cannot load a transformers model from"), last


# ------------------------------------------------------------------------- no Ray started below
def _compose(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=["experiment=probe", *overrides])


def test_shipped_ray_options_validate():
    settings = validated(RaySettings, _compose().ray, "ray")
    assert settings.address is None and settings.num_workers >= 1
    assert _compose().engine == "local"


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["engine=spark"], "engine: Input should be 'local' or 'ray'"),
        (["ray.num_workers=0"], "ray.num_workers: Input should be greater than or equal to 1"),
        (["ray.address=auto", "ray.num_cpus=2"], "num_cpus sizes a local Ray instance"),
        (["+ray.workers=2"], "ray.workers: Extra inputs are not permitted"),
        (["engine=ray", "model=transformers"], "model config needs a value for: path"),
    ],
)
def test_bad_engine_settings_fail_before_ray_starts(overrides, message, monkeypatch, tmp_path):
    from experiments.runs.probe import run

    # Importing Ray now fails with a different message, so the checks must all come before it.
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=re.escape(message)):
        run(_compose(*overrides, "limit=2", f"paths.output_dir={tmp_path}"))


def test_missing_ray_is_one_clear_error(monkeypatch):
    # A None entry in sys.modules makes `import ray` raise ImportError, as on an install without Ray.
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match="engine=ray needs Ray") as caught:
        import_ray()
    message = str(caught.value)
    assert RAY_INSTALL_HINT in message and "\n" not in message
