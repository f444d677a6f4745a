"""A non-editable install ships the configs and data, and the Hydra app finds them there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_non_editable_install_ships_conf_and_data(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    for relative in ["conf/config.yaml", "conf/model/smollm2.yaml", "conf/experiment/probe.yaml",
                     "emotion_probe/data/wheels/shaver.yaml", "emotion_probe/data/wheels/plutchik.yaml"]:
        assert (target / relative).is_file(), relative
    # Run from an unrelated directory with only the installed copy importable: configs resolve through pkg://conf.
    script = (
        "from hydra import compose, initialize_config_module\n"
        "import emotion_probe, conf\n"
        "assert 'site' in emotion_probe.__file__, emotion_probe.__file__\n"
        "with initialize_config_module(config_module='conf', version_base='1.3'):\n"
        "    cfg = compose(config_name='config')\n"
        "print(cfg.task, len(emotion_probe.EmotionWheel.load('shaver').words))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["negotiation", "135"]
