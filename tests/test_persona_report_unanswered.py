"""persona_report on a probe.method=paper sweep where some rows have no answer (no wheel word in the top k)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from rich.console import Console

from emotion_probe.models.providers.scripted import ScriptedBackend

SCENARIOS = [("terror", "The dog growled in the dark."), ("grief", "My grandmother died."),
             ("rage", "Someone stole my bike."), ("triumph", "I won the final!")]


class _TopTokensByText(ScriptedBackend):
    """The paper method sees only the top tokens; here they depend on the prompt. The female persona's
    prompts name no wheel word at all, and neither does the neutral persona's "Someone stole my bike."."""

    TOPS = {"N/A": {" joy": -0.5, " fear": -1.0}, "The dog": {" fear": -0.5, " terror": -1.0},
            "grandmother": {" sadness": -0.4}, "stole": {" the": -0.1}, "final": {" joy": -0.3}}

    def __init__(self):
        super().__init__(name="by-text")

    def top_tokens(self, prompts, k):
        return [{} if "a woman" in prompt else next((dict(top) for key, top in self.TOPS.items() if key in prompt),
                                                     {" the": -0.2}) for prompt in prompts]


def _cfg(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.fixture
def sweep(tmp_path, monkeypatch) -> Path:
    from experiments.runs import persona_bias

    scenarios = tmp_path / "recognition_scenarios.jsonl"
    scenarios.write_text("\n".join(json.dumps({"label": label, "text": text}) for label, text in SCENARIOS) + "\n",
                         encoding="utf-8")
    monkeypatch.setattr(persona_bias, "build_model", lambda node, run_cfg=None: _TopTokensByText())
    for number, persona in enumerate(["neutral", "female"]):
        job = tmp_path / "sweep" / str(number)
        cfg = _cfg("experiment=persona_bias", f"persona={persona}", "model=scripted", "probe.method=paper",
                   f"scenarios={scenarios}", "recognition.bootstrap=0", f"paths.output_dir={job}", "progress=false")
        persona_bias.run(cfg)
        (job / ".hydra").mkdir()
        OmegaConf.save(cfg, job / ".hydra" / "config.yaml")
    return tmp_path / "sweep"


def test_unanswered_rows_are_counted_and_the_whole_report_is_written(tmp_path, sweep, capsys):
    from experiments.reports import persona_bias as persona_report

    out = tmp_path / "report"
    accuracy = persona_report.report(_cfg("experiment=persona_report", f"sweep_dir={sweep}", "pairs=[[neutral,female]]",
                                          "pie_emotions=[anger,fear,rage]", f"paths.output_dir={out}"))
    assert accuracy.loc["neutral", "unanswered"] == 1 and accuracy.loc["female", "unanswered"] == 4
    assert accuracy.loc["female", "calibrated_unanswered"] == 4
    for name in ["accuracy.csv", "confusion_primary.png", "per_primary_accuracy.csv", "radar_neutral_vs_female.png",
                 "pies_anger.png", "pies_fear.png", "pies_rage.png"]:
        assert (out / name).is_file(), name
    assert pd.read_csv(out / "accuracy.csv").set_index("persona").loc["female", "unanswered"] == 4
    printed = capsys.readouterr().out
    assert "unanswered" in printed
    # Female answered nothing, so the per-emotion comparison has nothing to compare: said, not raised.
    assert "neutral vs female" in printed and "no answer" in printed


def test_the_sweep_reports_section_shows_each_primary_confusion_and_the_unanswered(tmp_path, sweep):
    from experiments.reports.persona_bias import write_persona_report
    from emotion_probe.wheel import EmotionWheel

    jobs = {}
    for number in ("0", "1"):
        metrics = json.loads((sweep / number / "metrics.json").read_text())
        jobs[metrics["persona"]] = (metrics, pd.read_parquet(sweep / number / "predictions.parquet"))
    wheel = EmotionWheel.load("shaver")
    # No pair: the pies of a group whose rows went unanswered are drawn with those rows as "unanswered".
    result = write_persona_report(jobs, wheel, [], ["anger", "rage"], tmp_path, Console())
    assert (tmp_path / "pies_anger.png").is_file() and (tmp_path / "pies_rage.png").is_file()
    assert result.primary_confusions["neutral"].shape == (6, 6)
    assert result.primary_confusions["neutral"].sum() == 3 and result.primary_confusions["female"].sum() == 0
    assert result.unanswered == {"neutral": 1, "female": 4}


def test_a_persona_named_like_a_path_writes_only_inside_the_report_dir(tmp_path, sweep):
    """Persona names come from a received sweep's files; they name the report's files, never its folders."""
    from experiments.reports import persona_bias as persona_report

    metrics = json.loads((sweep / "1" / "metrics.json").read_text(encoding="utf-8"))
    metrics["persona"] = "../../escaped"
    (sweep / "1" / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    out = tmp_path / "deep" / "report"
    persona_report.report(_cfg("experiment=persona_report", f"sweep_dir={sweep}", "pairs=[[neutral,'../../escaped']]",
                               "pie_emotions=[anger]", f"paths.output_dir={out}"))
    written = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if "escaped" in path.name}
    assert written and all(name.startswith("deep/report/") and "/" not in name[len("deep/report/"):]
                           for name in written), written
