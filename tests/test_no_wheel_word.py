"""A model that names no wheel word: the probe's rows are unanswered, and every run still finishes.

The scripted model here puts all its mass on " zzz", in no wheel, so every row is NaN (probe.method=exact)
or zero (probe.method=paper). The run says so once, scores accuracy over no row, and checks no label.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from rich.console import Console

from emolab_cli import emolab
from emotion_probe import EmotionWheel


@pytest.fixture()
def blind(tmp_path: Path) -> str:
    """`model=blind`: a scripted model whose only continuation is no wheel's word."""
    folder = tmp_path / "conf" / "model"
    folder.mkdir(parents=True)
    (folder / "blind.yaml").write_text(yaml.safe_dump({"defaults": ["scripted", "_self_"], "name": "blind",
                                                       "continuation_logprobs": {" zzz": -1.0}}), encoding="utf-8")
    return f"hydra.searchpath=[file://{tmp_path / 'conf'}]"


def _finished(done) -> str:
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("method", ["exact", "paper"])
@pytest.mark.parametrize("wheel", ["ekman", "shaver"])
def test_a_probe_where_no_prompt_names_a_wheel_word_finishes(tmp_path, blind, method, wheel):
    run = tmp_path / "run"
    printed = _finished(emolab("experiment=probe", blind, "model=blind", f"probe.method={method}",
                               f"probe.wheel={wheel}", "limit=3", "cache.enabled=false", f"hydra.run.dir={run}"))
    # Said once: the probe's warning for its one chunk of three prompts, and the summary's count.
    assert sum("[WARNING]" in line for line in printed.splitlines()) == 1, printed
    assert "3 of 3 prompts had none of the wheel's words" in printed
    assert "unanswered: 3 of 3 rows" in printed
    assert "top-1 accuracy: no row to score, none named a wheel word (n=3)" in printed
    assert len(pd.read_parquet(run / "distributions.parquet")) == 3
    # The set is labelled with shaver's words: no unanswered row is checked, as if its zeros were a reading.
    if wheel == "shaver":
        assert "label check: none of the 3 labelled scenarios named a wheel word; nothing to check" in printed
    else:
        assert "label check: no scenario is labelled with a word of the ekman wheel; nothing to check" in printed
    assert not (run / "label_check.csv").exists()


@pytest.mark.parametrize("method", ["exact", "paper"])
def test_a_hierarchy_where_no_prompt_names_a_wheel_word_finishes(tmp_path, blind, method):
    run = tmp_path / "run"
    _finished(emolab("experiment=hierarchy", blind, "model=blind", f"probe.method={method}", f"hierarchy.method={method}",
                     "probe.wheel=ekman", "limit=3", "cache.enabled=false", "hierarchy.bootstrap=10",
                     f"hydra.run.dir={run}"))
    assert (run / "metrics.json").is_file() and (run / "tree.json").is_file()


def test_the_summary_scores_the_answered_rows_and_shows_the_others_as_unanswered(tmp_path, monkeypatch):
    from experiments.runs import probe

    wheel = EmotionWheel.load("ekman")
    rows = np.full((3, len(wheel.words)), np.nan)
    rows[0] = 0.0
    rows[0, wheel.index["happiness"]] = 1.0  # answered, right
    rows[1] = 0.0  # the paper method's row with no word in its top k
    table = pd.DataFrame(rows, columns=wheel.words)
    table.insert(0, "id", ["a", "b", "c"])
    table.insert(1, "text", ["x", "y", "z"])
    table.insert(2, "emotion", ["happiness", "fear", "anger"])
    console = Console(file=io.StringIO(), width=200, color_system=None)
    monkeypatch.setattr(probe, "Console", lambda *args, **kwargs: console)
    probe._print_summary(table, wheel, "exact", 3, tmp_path)
    printed = console.file.getvalue()
    assert printed.count("unanswered (no wheel word)") == 2
    assert "unanswered: 2 of 3 rows" in printed
    assert "top-1 accuracy over 6 words: 100.0%; same primary: 100.0% (n=1 answered of 3)" in printed
