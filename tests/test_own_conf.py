"""Configs kept in one's own folder: `experiment=init_conf` writes one, and `hydra.searchpath` makes its files usable by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hydra import compose, initialize_config_module

from agents.negotiation import NegotiationScenario
from agents.persona import PersonaSpec
from emotion_probe.errors import ConfigError
from experiments.tools.init_conf import STARTER, write_starter
from agents.negotiation import CustomerPersona

CONF = Path(__file__).resolve().parents[1] / "conf"


def _compose(folder: Path, *overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=[f"hydra.searchpath=[file://{folder}]", *overrides])


def test_init_conf_writes_commented_files_with_names_the_package_does_not_use(tmp_path):
    written = write_starter(tmp_path / "my_conf")
    assert sorted(p.relative_to(tmp_path / "my_conf").as_posix() for p in written) == sorted(STARTER)
    for path in written:
        # Hydra searches the package first: a starter file named like a shipped one would never be used.
        assert not (CONF / path.relative_to(tmp_path / "my_conf")).exists(), path
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("#"), f"{path} opens with what it is for"
        for number, line in enumerate(lines):  # the rule tests/test_config.py holds the shipped files to
            if line and not line.startswith(("#", " ", "-")) and ":" in line:
                assert lines[number - 1].startswith("#"), f"{path}:{number + 1} {line!r} has no comment"
        # The example commands name this folder on the search path, so they run as printed.
        commands = [x for x in lines if x.startswith("#   emolab")]
        assert all(f"'hydra.searchpath=[file://{tmp_path / 'my_conf'}]'" in x for x in commands), path
        agent_mirror = path.parent.name == "model" and path.parent.parent.name in ("salesperson", "customer")
        assert commands or agent_mirror, f"{path} shows how to use it"
    scenario = yaml.safe_load((tmp_path / "my_conf/scenario/my_deal.yaml").read_text(encoding="utf-8"))
    assert NegotiationScenario.model_validate(scenario).name == "my_deal"


def test_init_conf_never_overwrites_and_writes_nothing_when_it_refuses(tmp_path):
    folder = tmp_path / "my_conf"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "my_model.yaml").write_text("# mine\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"^dir: .*model/my_model\.yaml already exists; init_conf never overwrites"):
        write_starter(folder)
    assert (folder / "model" / "my_model.yaml").read_text(encoding="utf-8") == "# mine\n"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.yaml")) == ["model/my_model.yaml"]
    (tmp_path / "a_file").write_text("", encoding="utf-8")
    with pytest.raises(ConfigError, match="exists and is not a directory"):
        write_starter(tmp_path / "a_file")


def test_each_starter_file_is_used_by_name_from_the_search_path(tmp_path):
    folder = tmp_path / "my_conf"
    write_starter(folder)
    cfg = _compose(folder, "scenario=my_deal", "customer/persona=my_customer", "persona=my_persona",
                   "model=my_model", "salesperson/model=my_model", "customer/model=my_model")
    assert cfg.scenario.item == "a second-hand road bike"
    assert CustomerPersona.model_validate(dict(cfg.customer.persona)).name == "my_customer"
    assert PersonaSpec.model_validate(dict(cfg.persona)).phrase == "a night-shift nurse"
    shipped = _compose(folder, "model=smollm2").model
    for node in (cfg.model, cfg.salesperson.model, cfg.customer.model):
        # The starter model is the shipped smollm2 config under its own name.
        assert node.name == "my-smollm2" and {**node, "name": shipped.name} == dict(shipped)


def test_a_scenario_from_your_own_folder_runs(tmp_path, write_deal_agents):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def emolab(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "experiments.app.main", *args], cwd=tmp_path, capture_output=True,
                              text=True, env=env, timeout=600)

    made = emolab("experiment=init_conf", "dir=my_conf", "hydra.run.dir=init")
    assert made.returncode == 0, made.stderr[-2000:]
    assert "'hydra.searchpath=[file://my_conf]' scenario=my_deal" in made.stdout
    scenario = tmp_path / "my_conf" / "scenario" / "my_deal.yaml"
    scenario.write_text(scenario.read_text(encoding="utf-8").replace("a second-hand road bike", "a tandem"),
                        encoding="utf-8")  # the designer's edit
    write_deal_agents(tmp_path / "my_conf", trials=1)  # scripted agents, in the same folder
    # A relative folder, read from the directory emolab runs in, as the README shows it.
    ran = emolab("experiment=negotiation", "hydra.searchpath=[file://my_conf]", "scenario=my_deal",
                 "customer/persona=my_customer", "salesperson/model=scripted_deal", "customer/model=scripted_deal",
                 "model=scripted", "probe_messages=false", "cache.enabled=false", "hydra.run.dir=run")
    assert ran.returncode == 0, ran.stderr[-3000:]
    run_dir = tmp_path / "run"
    assert json.loads((run_dir / "summary.json").read_text())["scenario"] == "my_deal"
    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert trials["customer_persona"].tolist() == ["my_customer"] and trials["status"].tolist() == ["deal"]
    config = json.loads((run_dir / "manifest.json").read_text())["config"]
    assert config["scenario"]["item"] == "a tandem"
    assert config["customer"]["persona"]["description"].startswith("a cautious parent")
