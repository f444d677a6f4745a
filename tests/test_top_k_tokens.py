"""probe.keep_top_k_tokens: the paper method's top-k next tokens and their probabilities, kept in the run's Parquet."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from emotion_probe import ConfigError, EmotionProbe, EmotionWheel
from emotion_probe.models.providers.scripted import ScriptedBackend
from emotion_probe.probe import TOP_K_PROBABILITIES_COLUMN, TOP_K_TOKENS_COLUMN
from experiments.app.config import probe_settings

TOP = {" the": np.log(0.5), " fear": np.log(0.25), " Joy": np.log(0.125), "fear": np.log(0.0625), " joy": np.log(0.03125)}


def _cfg(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_the_option_is_off_by_default_and_documented():
    assert _cfg().probe.keep_top_k_tokens is False
    settings = probe_settings(wheel="ekman", method="paper")
    assert settings.keep_top_k_tokens is False
    assert "top-k" in type(settings).model_fields["keep_top_k_tokens"].description
    frame = EmotionProbe(ScriptedBackend(continuation_logprobs=TOP), EmotionWheel.load("ekman"), settings).frame(["x"])
    assert TOP_K_TOKENS_COLUMN not in frame.columns and TOP_K_PROBABILITIES_COLUMN not in frame.columns


def test_every_top_k_token_is_kept_in_rank_order_with_its_probability():
    settings = probe_settings(wheel="ekman", method="paper", keep_top_k_tokens=True, top_k=4)
    frame = EmotionProbe(ScriptedBackend(continuation_logprobs=TOP), EmotionWheel.load("ekman"), settings).frame(
        ["I won.", "I lost."])
    # All of them, wheel words or not, variants of a word counted once in the word columns included.
    assert [list(tokens) for tokens in frame[TOP_K_TOKENS_COLUMN]] == [[" the", " fear", " Joy", "fear"]] * 2
    assert list(frame.loc[0, TOP_K_PROBABILITIES_COLUMN]) == pytest.approx([0.5, 0.25, 0.125, 0.0625], rel=1e-12)
    assert frame.loc[0, "fear"] == pytest.approx(0.25)


def test_the_option_is_for_the_paper_method_only():
    with pytest.raises(ConfigError, match="keep_top_k_tokens"):
        probe_settings(method="exact", keep_top_k_tokens=True)


def test_a_hierarchy_run_writes_them_to_its_parquet(tmp_path):
    from experiments.runs import hierarchy

    prompts = tmp_path / "hierarchy_prompts.txt"
    prompts.write_text("I won.\nIt rained.\n", encoding="utf-8")
    run_dir = tmp_path / "run"
    cfg = _cfg("experiment=hierarchy", "model=scripted", f"scenarios={prompts}", "probe.method=paper",
               "probe.keep_top_k_tokens=true", "hierarchy.method=paper", "hierarchy.baseline_samples=10",
               "hierarchy.bootstrap=0", "progress=false", f"paths.output_dir={run_dir}")
    OmegaConf.update(cfg, "model.continuation_logprobs", {" joy": float(np.log(0.5)), " hope": float(np.log(0.25)),
                                                          " the": float(np.log(0.125))}, force_add=True)
    hierarchy.run(cfg)
    table = pd.read_parquet(run_dir / "distributions.parquet")
    assert [list(tokens) for tokens in table[TOP_K_TOKENS_COLUMN]] == [[" joy", " hope", " the"]] * 2
    assert [list(p) for p in table[TOP_K_PROBABILITIES_COLUMN]] == [pytest.approx([0.5, 0.25, 0.125])] * 2


@pytest.mark.embedded  # starts a real local Ray instance, as tests/test_ray_probe.py's runs do
def test_engine_ray_keeps_them_as_the_local_engine_does(tmp_path):
    import json
    import os
    import subprocess
    import sys

    prompts = tmp_path / "hierarchy_prompts.txt"
    prompts.write_text("I won.\nIt rained.\nI won.\n", encoding="utf-8")
    # Keys with a space cannot be written as a command-line override, so the model is a config file of its own.
    (tmp_path / "my_conf" / "model").mkdir(parents=True)
    (tmp_path / "my_conf" / "model" / "top3.yaml").write_text(
        "_target_: emotion_probe.models.providers.scripted.ScriptedBackend\nname: top3\ncontinuation_logprobs: "
        + json.dumps({" joy": float(np.log(0.5)), " the": float(np.log(0.25)), " fear": float(np.log(0.125))}) + "\n",
        encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path / "home")}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE"):
        env.pop(name, None)
    common = ["experiment=probe", f"hydra.searchpath=[file://{tmp_path / 'my_conf'}]", "model=top3",
              f"scenarios={prompts}", "probe.method=paper", "probe.keep_top_k_tokens=true", "cache.enabled=false",
              "progress=false"]
    tables = {}
    for engine in ("local", "ray"):
        result = subprocess.run([sys.executable, "-m", "experiments.app.main", *common, f"engine={engine}",
                                 "ray.num_cpus=1", "ray.num_workers=1", f"hydra.run.dir={tmp_path / engine}"],
                                cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        tables[engine] = pd.read_parquet(tmp_path / engine / "distributions.parquet")
    assert [list(t) for t in tables["ray"][TOP_K_TOKENS_COLUMN]] == [[" joy", " the", " fear"]] * 3
    pd.testing.assert_frame_equal(tables["ray"], tables["local"])


@pytest.mark.embedded
def test_the_embedded_model_keeps_token_ids_that_decode_to_the_kept_texts(smollm2, tmp_path):
    """Token-level checks need ids: two ids that decode to one text stay two entries, and keeping them
    changes no probability of the word columns. Through the response cache, a second call reads them back."""
    from emotion_probe.models.wrappers.cache import CachingBackend
    from emotion_probe.probe import TOP_K_TOKEN_IDS_COLUMN

    texts = ["My best friend surprised me with a party.", "The dog growled in the dark."]
    wheel = EmotionWheel.load("shaver")
    plain = EmotionProbe(smollm2, wheel, probe_settings(method="paper", top_k=100)).frame(texts)
    cached = CachingBackend(smollm2, tmp_path / "c.sqlite", {"model": "smollm2"})
    keeping = EmotionProbe(cached, wheel, probe_settings(method="paper", top_k=100, keep_top_k_tokens=True))
    kept = keeping.frame(texts)
    np.testing.assert_allclose(kept[wheel.words].to_numpy(), plain[wheel.words].to_numpy(), rtol=1e-6, atol=0)
    for ids, tokens, probabilities in zip(kept[TOP_K_TOKEN_IDS_COLUMN], kept[TOP_K_TOKENS_COLUMN],
                                          kept[TOP_K_PROBABILITIES_COLUMN]):
        assert len(ids) == len(tokens) == 100 and len(set(ids)) == 100
        assert [smollm2.tokenizer.decode([int(i)]) for i in ids] == list(tokens)
        assert list(probabilities) == sorted(probabilities, reverse=True)
    again = keeping.frame(texts)
    assert cached.usage()["cache"]["hits"] == len(texts)
    assert [list(ids) for ids in again[TOP_K_TOKEN_IDS_COLUMN]] == [list(ids) for ids in kept[TOP_K_TOKEN_IDS_COLUMN]]


def test_a_backend_that_reports_texts_only_keeps_null_ids():
    from emotion_probe.probe import TOP_K_TOKEN_IDS_COLUMN

    settings = probe_settings(wheel="ekman", method="paper", keep_top_k_tokens=True, top_k=2)
    frame = EmotionProbe(ScriptedBackend(continuation_logprobs=TOP), EmotionWheel.load("ekman"), settings).frame(["x"])
    assert list(frame.loc[0, TOP_K_TOKEN_IDS_COLUMN]) == [None, None]
