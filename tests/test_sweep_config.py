"""The config groups that sweeps add (customer/persona, cache, retry, checkpointer) compose and validate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from emotion_probe import ConfigError
from experiments.app.common import seeds_in, validated
from experiments.app.config import CacheSettings, RetrySettings
from experiments.runs.negotiation.checkpointer import CheckpointerSettings, open_checkpointer
from emotion_probe.limits import InputLimits
from agents.negotiation import CustomerPersona
from experiments.runs.negotiation.run import read_scenario

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("persona", sorted(p.stem for p in (CONF / "customer" / "persona").glob("*.yaml")))
def test_every_customer_persona_validates_and_reaches_the_scenario(persona):
    cfg = _compose(f"customer/persona={persona}")
    spec, scenario = read_scenario(cfg, InputLimits.shipped())
    assert spec.name == persona
    expected = cfg.scenario.customer_persona if spec.description is None else spec.description
    assert scenario.customer_persona == expected


def test_cache_retry_and_checkpointer_groups_validate():
    cfg = _compose()
    assert validated(CacheSettings, cfg.cache, "cache").enabled
    assert validated(RetrySettings, cfg.retry, "retry").max_attempts >= 1
    for kind in ("sqlite", "postgres"):
        assert validated(CheckpointerSettings, _compose(f"checkpointer={kind}").checkpointer, "checkpointer").kind == kind


def test_bad_values_name_their_field():
    with pytest.raises(ConfigError, match=r"^retry\.max_attempts"):
        validated(RetrySettings, _compose("retry.max_attempts=0").retry, "retry")
    with pytest.raises(ConfigError, match=r"^cache\.generate"):
        validated(CacheSettings, _compose("cache.generate=sometimes").cache, "cache")
    with pytest.raises(ConfigError, match=r"^customer\.persona\.description"):
        validated(CustomerPersona, _compose("customer.persona.description=''").customer.persona, "customer.persona")


def test_postgres_checkpointer_without_its_url_is_one_clear_error(tmp_path, monkeypatch):
    pytest.importorskip("langgraph.checkpoint.postgres", reason="needs the postgres extra")
    monkeypatch.delenv("EMOLAB_POSTGRES_URL", raising=False)
    with pytest.raises(ConfigError, match="EMOLAB_POSTGRES_URL is not set"):
        settings = validated(CheckpointerSettings, _compose("checkpointer=postgres").checkpointer, "checkpointer")
        with open_checkpointer(settings, tmp_path):
            pass


def test_seeds_are_collected_from_everywhere_in_the_config():
    cfg = _compose("model=smollm2_random", "seed=7", "model.seed=3")
    assert seeds_in(cfg) == {"seed": 7, "model.seed": 3}
