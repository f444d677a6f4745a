"""Every config group composes and instantiates; bad config fails with the field named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.utils import get_method, instantiate
from omegaconf import OmegaConf

from emotion_probe import ConfigError
from emotion_probe.models.providers.smollm2 import ensure_converted
from emotion_probe.probe import ProbeSettings
from experiments.app.common import build_model, validated
from experiments.app.config import load_model, model_config, model_config_names

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def _names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("experiment", _names("experiment"))
def test_every_experiment_composes_and_names_a_real_task(experiment):
    from experiments.app.registry import load_experiment

    cfg = _compose(f"experiment={experiment}")
    assert cfg.task == experiment and callable(load_experiment(cfg.task))


def test_every_experiment_file_is_global_and_documented():
    for path in (CONF / "experiment").glob("*.yaml"):
        lines = path.read_text().splitlines()
        assert lines[0] == "# @package _global_", path
        assert any("emolab" in line for line in lines[1:4]), f"{path} must open with the command that runs it"


def test_every_config_key_is_commented():
    for path in CONF.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            stripped = line.strip()
            is_key = stripped and not stripped.startswith(("#", "-")) and ":" in stripped and not line.startswith(" ")
            if is_key and path.parent.name != "hydra":
                previous = lines[number - 1].strip() if number else ""
                assert previous.startswith("#") or "#" in line, f"{path}:{number + 1} {stripped!r} has no comment"


@pytest.mark.parametrize("probe", _names("probe"))
def test_probe_configs_validate(probe):
    cfg = _compose(f"probe={probe}")
    assert validated(ProbeSettings, cfg.probe, "probe").template.count("{text}") == 1


def test_bad_probe_config_names_the_field():
    cfg = _compose("probe.method=fancy")
    with pytest.raises(ConfigError, match=r"^probe\.method: Input should be 'exact' or 'paper'"):
        validated(ProbeSettings, cfg.probe, "probe")


def test_model_configs_cover_every_backend():
    names = {"smollm2", "smollm2_random", "transformers", "openai", "scripted", "vllm", "sglang"}
    assert set(model_config_names()) == names == set(_names("model"))
    # Each agent can take any model config: the mirrors under salesperson/ and customer/ cover them all.
    assert set(_names("salesperson/model")) == set(_names("customer/model")) == names
    # vllm and sglang inherit every key of openai.yaml through Hydra's defaults list, and instantiate.
    openai_keys = set(_compose("model=openai").model)
    for server, port in (("vllm", 8000), ("sglang", 30000)):
        cfg = _compose(f"model={server}", "model.model=served-model", f"salesperson/model={server}",
                       "salesperson.model.model=served-model")
        for node in (cfg.model, cfg.salesperson.model):
            assert set(node) == openai_keys and node.probe_method == "echo"
            backend = instantiate(node, _convert_="all")
            assert type(backend).__name__ == "OpenAIBackend" and backend.probe_method == "echo"
            assert backend.base_url == f"http://localhost:{port}/v1" and backend.model_name == "served-model"


def test_scripted_and_openai_model_configs_instantiate():
    scripted = build_model(_compose("model=scripted").model)
    assert type(scripted).__name__ == "ScriptedBackend"
    openai_cfg = _compose("model=openai", "model.model=gpt-test", "model.base_url=http://127.0.0.1:9/v1").model
    backend = instantiate(openai_cfg, _convert_="all")
    assert type(backend).__name__ == "OpenAIBackend" and backend.model_name == "gpt-test"


def test_required_model_fields_are_reported():
    with pytest.raises(ConfigError, match="needs a value for: path"):
        build_model(_compose("model=transformers").model)
    with pytest.raises(ConfigError, match="unknown model 'gpt-7'"):
        load_model("gpt-7")
    with pytest.raises(ConfigError, match="needs a value for: model"):
        load_model("openai")


@pytest.mark.parametrize("name", sorted(_names("model")))
def test_model_config_by_name_is_what_the_app_composes(name):
    # experiments.app.config.model_config lets Hydra merge the defaults list, so it matches `emolab model=<name>`
    # key for key and value for value (vllm and sglang: openai.yaml's keys under their own).
    app = OmegaConf.to_container(_compose(f"model={name}").model)
    assert OmegaConf.to_container(model_config(name)) == app


def test_load_model_builds_every_config_that_needs_no_server_or_weights():
    assert type(load_model("scripted")).__name__ == "ScriptedBackend"
    openai_keys = set(model_config("openai"))
    assert "max_retries" not in openai_keys  # one retry layer: conf/retry, not the client
    for server, port in (("vllm", 8000), ("sglang", 30000)):
        assert set(model_config(server)) == openai_keys
        backend = load_model(server, model="served-model")  # builds a client; contacts no server
        assert backend.endpoint == f"http://localhost:{port}/v1" and backend.probe_method == "echo"
        assert backend.max_concurrency == model_config("openai").max_concurrency
    # The client's retries are gone from the constructor too: an old config that sets them is refused.
    with pytest.raises(ConfigError, match="max_retries"):
        load_model("vllm", model="served-model", max_retries=4)


@pytest.mark.embedded
def test_smollm2_and_transformers_configs_instantiate(smollm2):
    backend = build_model(_compose("model=smollm2").model)
    assert backend.num_parameters() == smollm2.num_parameters()
    local = build_model(_compose("model=transformers", f"model.path={ensure_converted()}", "model.scoring=kv_cache").model)
    assert local.scoring == "kv_cache" and local.tokenizer is not None
    assert load_model("smollm2").name == "smollm2-135m-instruct"
    random_init = build_model(_compose("model=smollm2_random").model)
    assert random_init.num_parameters() < 5_000_000 and random_init.tokenizer is not None


def test_transformers_backend_never_downloads(tmp_path):
    with pytest.raises(ConfigError, match="nothing is downloaded"):
        load_model("transformers", path="someone/not-on-this-disk")


def test_hydra_run_dir_is_per_experiment():
    cfg = _compose()
    raw = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    assert raw.startswith("outputs/${hydra:runtime.choices.experiment}/")
