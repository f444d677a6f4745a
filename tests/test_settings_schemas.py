"""One source of truth for settings: defaults live only in conf/*.yaml.

Every pydantic schema that validates a conf/ node is listed here with the nodes it validates. The
tests check that each shipped YAML option validates against its schema as the experiment reads it,
that no schema field carries a default (a second copy of a YAML value), and that every field says
what it is (`Field(description=...)`). A `*Settings` schema added to the code without being listed
here fails `test_every_settings_schema_is_listed`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import DictConfig, OmegaConf
from pydantic import BaseModel

from emotion_probe import ConfigError, EmotionProbe, EmotionWheel
from emotion_probe.engines.ray import RaySettings
from emotion_probe.limits import InputLimits
from emotion_probe.models.providers.scripted import ScriptedBackend
from emotion_probe.probe import ProbeSettings
from emotion_probe.wheel import WheelSpec
from experiments.app.run_lock import LockSettings
from experiments.app.common import validated
from experiments.runs.generate_scenarios import GeneratorSettings
from experiments.runs.hierarchy import HierarchySettings
from experiments.app.config import CacheSettings, RetrySettings, probe_settings
from agents.negotiation import CustomerPersona
from experiments.runs.negotiation.checkpointer import CheckpointerSettings
from experiments.runs.negotiation.run import NegotiationSettings
from experiments.runs.persona_bias import RecognitionSettings
from experiments.runs.probe import LabelCheck, ProbeEngine

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def _report_settings() -> type[BaseModel]:
    # ReportSettings is moving between experiments/reports/report.py and experiments/reports/common.py; take it where it is.
    try:
        from experiments.reports.common import ReportSettings
    except ImportError:
        from experiments.reports.report import ReportSettings
    return ReportSettings


def _fields(schema: type[BaseModel]) -> Callable[[DictConfig], dict]:
    """A node made of the schema's own keys at the config root, as experiments pass them (masked_copy)."""
    return lambda cfg: OmegaConf.to_container(OmegaConf.masked_copy(cfg, list(schema.model_fields)), resolve=True)


def _node(path: str) -> Callable[[DictConfig], dict]:
    return lambda cfg: OmegaConf.to_container(OmegaConf.select(cfg, path), resolve=True)


# (config group whose options are walked, or an experiment; schema; how the experiment picks its node;
#  overrides that fill the YAML's required `???` values).
CASES: list[tuple[str, type[BaseModel], Callable[[DictConfig], dict], tuple[str, ...]]] = [
    ("probe", ProbeSettings, _node("probe"), ()),
    ("hierarchy", HierarchySettings, _node("hierarchy"), ()),
    ("recognition", RecognitionSettings, _node("recognition"), ()),
    ("cache", CacheSettings, _node("cache"), ()),
    ("retry", RetrySettings, _node("retry"), ()),
    ("limits", InputLimits, _node("limits"), ()),
    ("checkpointer", CheckpointerSettings, _node("checkpointer"), ()),
    ("customer/persona", CustomerPersona, _node("customer.persona"), ()),
    ("experiment=negotiation", NegotiationSettings, _fields(NegotiationSettings), ()),
    ("experiment=generate_scenarios", GeneratorSettings, _fields(GeneratorSettings), ()),
    ("experiment=probe", LabelCheck, _node("label_check"), ()),
    ("experiment=probe", RaySettings, _node("ray"), ()),
    ("experiment=probe", ProbeEngine, _fields(ProbeEngine), ()),
    ("experiment=probe", LockSettings, _fields(LockSettings), ()),
    ("experiment=report", _report_settings(), _fields(_report_settings()), ("sweep_dir=some/sweep",)),
]

# Fields that may keep a default because some YAML of their group legitimately leaves the key out
# (each checkpointer kind sets only its own key). Each is checked to be absent from some option.
ABSENT_KEYS: dict[tuple[type[BaseModel], str], str] = {
    (CheckpointerSettings, "filename"): "checkpointer",
    (CheckpointerSettings, "url_env"): "checkpointer",
}


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(*overrides: str) -> DictConfig:
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _composed_cases() -> Iterator[tuple[str, type[BaseModel], Callable, tuple[str, ...]]]:
    for where, schema, pick, fill in CASES:
        if where.startswith("experiment="):
            yield f"{where}:{schema.__name__}", schema, pick, (where, *fill)
        else:
            for option in _options(where):
                yield f"{where}={option}:{schema.__name__}", schema, pick, (f"{where}={option}", *fill)


def _all_schemas() -> Iterator[type[BaseModel]]:
    """The listed schemas and the schemas nested in their fields (NegotiationSettings.analysis)."""
    seen: set[type[BaseModel]] = set()
    stack = [schema for _, schema, _, _ in CASES]
    while stack:
        schema = stack.pop()
        if schema in seen:
            continue
        seen.add(schema)
        yield schema
        for field in schema.model_fields.values():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                stack.append(field.annotation)


@pytest.mark.parametrize(("case", "schema", "pick", "overrides"), list(_composed_cases()),
                         ids=[case for case, *_ in _composed_cases()])
def test_every_shipped_option_validates_against_its_schema(case, schema, pick, overrides):
    node = pick(_compose(*overrides))
    validated(schema, node, case)
    # A key the YAML sets but the schema does not know would be refused by extra="forbid"; a key the
    # schema has but the YAML lacks is refused because no field has a default (below).
    assert schema.model_config.get("extra") == "forbid", f"{schema.__name__} must refuse unknown keys"


def test_no_schema_field_has_a_default():
    """Defaults live only in the YAML: a schema default would be a second copy that can drift."""
    with_defaults = [f"{schema.__name__}.{name}" for schema in _all_schemas()
                     for name, field in schema.model_fields.items()
                     if not field.is_required() and (schema, name) not in ABSENT_KEYS]
    assert with_defaults == [], f"schema fields with defaults (move them to the YAML): {with_defaults}"


def test_fields_allowed_a_default_are_really_absent_from_some_yaml():
    for (schema, name), group in ABSENT_KEYS.items():
        present = [OmegaConf.load(CONF / group / f"{option}.yaml").get(name) is not None for option in _options(group)]
        assert not all(present), f"every conf/{group} option sets {name}: {schema.__name__}.{name} must be required"


def test_every_schema_field_has_a_description():
    undocumented = [f"{schema.__name__}.{name}" for schema in _all_schemas()
                    for name, field in schema.model_fields.items() if not (field.description or "").strip()]
    assert undocumented == [], f"fields without Field(description=...): {undocumented}"


def test_every_settings_schema_is_listed():
    """A new *Settings schema in emotion_probe/ or experiments/ must join CASES (and so these checks)."""
    listed = {schema.__name__ for schema in _all_schemas()}
    defined = {name for folder in ("emotion_probe", "experiments") for path in (ROOT / folder).rglob("*.py")
               for name in re.findall(r"^class (\w+Settings)\(BaseModel\)", path.read_text(), flags=re.MULTILINE)}
    assert defined - listed == set()


def test_probe_settings_come_from_the_yaml_with_overrides():
    shipped = OmegaConf.to_container(OmegaConf.load(CONF / "probe" / "default.yaml"))
    assert probe_settings().model_dump() == shipped
    assert probe_settings(method="paper", top_k=7).model_dump() == {**shipped, "method": "paper", "top_k": 7}
    with pytest.raises(ConfigError, match=r"^probe\.nope: Extra inputs are not permitted"):
        probe_settings(nope=1)
    with pytest.raises(ConfigError, match=r"^probe\.word_boundary: Value error, applies to method=exact only"):
        probe_settings(method="paper", word_boundary=True)


def _private_wheel() -> EmotionWheel:
    # Built from a spec, not a file: no name or path could load it again.
    return EmotionWheel(WheelSpec.model_validate({"name": "tiny", "groups": [
        {"primary": "glee", "color": "#111111", "words": ["mirth"]},
        {"primary": "gloom", "color": "#222222", "words": []}]}))


def test_emotion_probe_scores_the_wheel_object_it_is_given(monkeypatch):
    wheel = _private_wheel()

    def no_reload(*args, **kwargs):
        raise AssertionError("EmotionProbe loaded a wheel instead of using the one it was given")

    monkeypatch.setattr(EmotionWheel, "load", no_reload)
    backend = ScriptedBackend(continuation_logprobs={" glee": -1.0, " mirth": -2.0, " gloom": -3.0})
    probe = EmotionProbe(backend, wheel, probe_settings(wheel="tiny"))
    assert probe.wheel is wheel and probe.words == ["glee", "gloom", "mirth"]
    assert probe.distribution(["I laughed."]).shape == (1, 3)


def test_emotion_probe_refuses_a_wheel_name_and_unvalidated_settings():
    backend = ScriptedBackend(continuation_logprobs={})
    with pytest.raises(TypeError, match="takes an EmotionWheel"):
        EmotionProbe(backend, "shaver", probe_settings())
    with pytest.raises(TypeError, match="validated ProbeSettings"):
        EmotionProbe(backend, EmotionWheel.load("ekman"), probe_settings(wheel="ekman").model_dump())


def test_emotion_probe_refuses_a_wheel_other_than_probe_wheel():
    # Manifests and resume checks record probe.wheel as the wheel in use, so it must be that wheel.
    with pytest.raises(ConfigError, match="probe.wheel is 'shaver' but the probe was given the wheel loaded from 'ekman'"):
        EmotionProbe(ScriptedBackend(continuation_logprobs={}), EmotionWheel.load("ekman"), probe_settings())


def test_emotion_probe_takes_a_wheel_file_however_its_path_is_spelled(tmp_path, monkeypatch):
    from importlib import resources

    (tmp_path / "mine.yaml").write_text((resources.files("emotion_probe") / "data" / "wheels" / "ekman.yaml")
                                        .read_text(encoding="utf-8"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    wheel = EmotionWheel.load(tmp_path / "mine.yaml")  # loaded from the absolute path ...
    probe = EmotionProbe(ScriptedBackend(continuation_logprobs={}), wheel, probe_settings(wheel="./mine.yaml"))
    assert probe.wheel is wheel  # ... while probe.wheel names the same file relative to the working dir
    other = tmp_path / "other.yaml"
    other.write_text((tmp_path / "mine.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(ConfigError, match="probe.wheel is 'other.yaml'"):
        EmotionProbe(ScriptedBackend(continuation_logprobs={}), wheel, probe_settings(wheel="other.yaml"))
