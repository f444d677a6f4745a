"""A model's identity keeps results apart: `device: auto` and `dtype: auto` are resolved before they key the
response cache, a sweep job's fingerprint or a probe's parts, so CPU float32 and GPU bfloat16 never mix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from emotion_probe import ConfigError
from emotion_probe.models.providers.scripted import ScriptedBackend
from emotion_probe.models.wrappers.stack import CacheOptions, resolved_model_config, wrap_backend
from emotion_probe.engines.local import probe_scenarios
from emotion_probe.scenarios import Scenario
from experiments.app.fingerprints import job_fingerprint
from experiments.app.config import build_probe

HELLO = [{"role": "user", "content": "hello"}]
LOGPROBS = {" anger": -1.0, " disgust": -2.0, " fear": -3.0, " happiness": -0.5, " sadness": -4.0, " surprise": -5.0}
# What experiments pass as the identity: the model config as written, `auto` and all.
CONFIG = {"_target_": "tests.Placed", "name": "same-name", "device": "auto", "dtype": "auto"}


class Placed(ScriptedBackend):
    """A scripted model that says where it runs, as TransformersBackend.describe() does."""

    def __init__(self, device: str, dtype: str, **kwargs):
        super().__init__(name="same-name", **kwargs)
        self.device, self.dtype = device, dtype

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "device": self.device, "dtype": self.dtype}


def _cache(tmp_path: Path) -> CacheOptions:
    return CacheOptions(path=str(tmp_path / "responses.sqlite"), generate="always")


def test_the_response_cache_keeps_a_gpu_answer_from_a_cpu_run(tmp_path):
    gpu = wrap_backend(Placed("cuda", "bfloat16", responses=["from the gpu"]), identity=CONFIG, cache=_cache(tmp_path),
                       retry=None)
    assert gpu.generate(HELLO).text == "from the gpu"
    cpu = wrap_backend(Placed("cpu", "float32", responses=["from the cpu"]), identity=CONFIG, cache=_cache(tmp_path),
                       retry=None)
    assert cpu.generate(HELLO).text == "from the cpu"  # a miss: the GPU's answer is not this model's
    # The same placement again is the same model: answered from the file (an empty script would raise).
    again = wrap_backend(Placed("cpu", "float32"), identity=CONFIG, cache=_cache(tmp_path), retry=None)
    assert again.generate(HELLO).text == "from the cpu"
    assert cpu.identity() == {**CONFIG, "device": "cpu", "dtype": "float32"}
    assert gpu.identity() == {**CONFIG, "device": "cuda", "dtype": "bfloat16"}


def test_auto_resolves_as_the_backend_would_before_it_loads(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolved_model_config(CONFIG) == {**CONFIG, "device": "cpu", "dtype": "float32"}
    assert resolved_model_config({**CONFIG, "dtype": "fp32"})["dtype"] == "float32"  # one spelling per dtype
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolved_model_config(CONFIG) == {**CONFIG, "device": "cuda", "dtype": "bfloat16"}
    assert resolved_model_config({**CONFIG, "device": "cpu"}) == {**CONFIG, "device": "cpu", "dtype": "float32"}
    # Configs without a placement are left alone; an unknown dtype is left for the backend to refuse.
    assert resolved_model_config({"_target_": "x", "responses": []}) == {"_target_": "x", "responses": []}
    assert resolved_model_config({**CONFIG, "dtype": "int3"})["dtype"] == "int3"


def _cfg(tmp_path: Path, *overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=["experiment=probe", f"paths.output_dir={tmp_path}",
                                                        *overrides])


def test_a_sweep_job_finished_on_a_gpu_is_not_the_same_job_on_a_cpu(tmp_path, monkeypatch):
    import torch

    cfg = _cfg(tmp_path)
    assert cfg.model.device == "auto" and cfg.model.dtype == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    on_cpu = job_fingerprint(cfg)
    assert job_fingerprint(_cfg(tmp_path, "model.device=cpu", "model.dtype=float32",
                                "salesperson.model.device=cpu", "customer.model.device=cpu")) == on_cpu
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert job_fingerprint(cfg) != on_cpu


def _scenarios(n: int) -> list[Scenario]:
    return [Scenario(id=f"s{i}", text=f"scenario number {i}") for i in range(n)]


def test_probe_parts_record_the_full_identity_and_refuse_another(tmp_path):
    def stack(device: str, dtype: str, **config):
        return wrap_backend(Placed(device, dtype, continuation_logprobs=LOGPROBS), identity={**CONFIG, **config},
                            cache=None, retry=None)

    probe_scenarios(build_probe(stack("cpu", "float32"), wheel="ekman", chunk_size=2), _scenarios(2), tmp_path,
                    show_progress=False)
    # Same name, same settings, same words: only the placement differs.
    with pytest.raises(ConfigError, match=r"different model identity \(device: 'cpu' -> 'cuda', dtype: 'float32' "
                                          r"-> 'bfloat16'\); resume with the same settings"):
        probe_scenarios(build_probe(stack("cuda", "bfloat16"), wheel="ekman", chunk_size=2), _scenarios(4), tmp_path,
                        show_progress=False)
    with pytest.raises(ConfigError, match=r"different model identity \(batch_size: None -> 8\)"):
        probe_scenarios(build_probe(stack("cpu", "float32", batch_size=8), wheel="ekman", chunk_size=2), _scenarios(4),
                        tmp_path, show_progress=False)
    # The same identity resumes.
    table = probe_scenarios(build_probe(stack("cpu", "float32"), wheel="ekman", chunk_size=2), _scenarios(4), tmp_path,
                            show_progress=False)
    assert table["id"].tolist() == ["s0", "s1", "s2", "s3"]


def test_the_run_manifest_records_the_resolved_identity(tmp_path):
    from omegaconf import OmegaConf

    from experiments.app.manifest import write_manifest

    stack = wrap_backend(Placed("cuda", "bfloat16"), identity=CONFIG, cache=None, retry=None)
    manifest = write_manifest(tmp_path, OmegaConf.create({"seed": 0}), models={"probe": stack})
    recorded = json.loads(manifest.read_text(encoding="utf-8"))["models"]["probe"]
    assert recorded["identity"] == {**CONFIG, "device": "cuda", "dtype": "bfloat16"}


def test_what_a_server_answered_so_far_is_no_part_of_its_identity():
    from emotion_probe.models.providers.openai import OpenAIBackend

    backend = OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1")
    before = backend.identity()
    backend._used("chat-top_logprobs")  # the scoring path it fell back to, recorded in the manifest
    assert backend.describe()["score_methods"] == ["chat-top_logprobs"]
    assert backend.identity() == before and before["model"] == "m" and before["base_url"] == "http://127.0.0.1:9/v1"
