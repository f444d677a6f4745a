"""The authors' released file formats (phys-ai/Emotion-Hierarchy-LLMs), read as they are.

Every file here is written by the test itself in the authors' format, with its own contents.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from agents.persona import PersonaAgent, PersonaSpec
from emotion_probe import ConfigError, EmotionWheel
from emotion_probe.analysis.hierarchy_trees import edge_agreement, nested_tree, tree_from_nested
from emotion_probe.scenarios import load_scenarios
from experiments.tools.bias_table import load_confusion
from experiments.app.common import validated

CONF = Path(__file__).resolve().parents[1] / "conf"
AUTHORS_PERSONAS = {
    "neutral", "female", "male", "race_white", "race_black", "race_hispanic", "race_asian", "income_high",
    "income_low", "education_postgraduate", "education_college_graduate", "education_some_college",
    "education_high_school", "education_less", "age5", "age10", "age20", "age30", "age70", "religion_Christian",
    "religion_Muslim", "religion_Buddhist", "religion_Hindu", "disable", "able",
    *(f"detailed_{i}_{r}_{g}" for i in ("highincome", "lowincome") for r in ("white", "black") for g in ("male", "female")),
}


def _cfg(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# --------------------------------------------------------------------------- taxonomy as a wheel
def test_taxonomy_json_loads_as_a_wheel(tmp_path):
    path = tmp_path / "emotion_taxonomy.json"
    path.write_text(json.dumps({"source": "mine", "primary_emotions": ["calm", "rage"],
                                "children": {"calm": ["ease", "peace"], "rage": ["fury"]}}))
    wheel = EmotionWheel.load(str(path))
    assert wheel.name == "emotion_taxonomy"
    assert wheel.words == ["calm", "rage", "ease", "peace", "fury"]
    assert wheel.primary_of("fury") == "rage" and wheel.spec.source == "mine"
    assert len(set(wheel.group_colors.values())) == 2
    path.write_text(json.dumps({"primary_emotions": ["calm", "rage"], "children": {"calm": []}}))
    with pytest.raises(ConfigError, match="children: no entry for primary 'rage'"):
        EmotionWheel.load(str(path))
    path.write_text(json.dumps({"primary_emotions": ["calm"], "children": {"calm": ["calm"]}}))
    with pytest.raises(ConfigError, match="duplicated emotion word 'calm'"):
        EmotionWheel.load(str(path))


# --------------------------------------------------------------------------- personas
def test_all_33_authors_personas_ship_with_the_new_line_layout():
    names = {p.stem for p in (CONF / "persona").glob("*.yaml")}
    assert len(AUTHORS_PERSONAS) == 33 and AUTHORS_PERSONAS <= names
    wheel = EmotionWheel.load("shaver")
    spec = validated(PersonaSpec, _cfg("persona=detailed_lowincome_black_female").persona, "persona")
    assert PersonaAgent(spec, wheel).probe_template == (
        "{text}\nAs a low-income Black woman, I think the emotion involved in this situation is")
    # The authors' spelling is their prompt, kept as it is.
    assert validated(PersonaSpec, _cfg("persona=education_high_school").persona, "persona").phrase == (
        "someone with a high school deploma")
    assert validated(PersonaSpec, _cfg("persona=race_asian").persona, "persona").phrase == "an Asian person"
    # Our earlier names still work.
    assert validated(PersonaSpec, _cfg("persona=age_70").persona, "persona").phrase == "a 70-year-old"


def test_personas_json_is_read_by_name(tmp_path):
    path = tmp_path / "personas.json"
    path.write_text(json.dumps({"neutral": "", "pilot": "As a night-shift pilot, ", "odd": "Being a cat, "}))
    spec = validated(PersonaSpec, _cfg("persona=from_file", f"persona.file={path}", "persona.name=pilot").persona,
                     "persona")
    assert spec.phrase == "a night-shift pilot"
    neutral = validated(PersonaSpec, {"name": "neutral", "file": str(path)}, "persona")
    assert neutral.is_neutral
    assert PersonaAgent(neutral, EmotionWheel.load("ekman")).probe_template == (
        "{text}\nI think the emotion involved in this situation is")
    with pytest.raises(ConfigError, match="'sailor' is not in"):
        validated(PersonaSpec, {"name": "sailor", "file": str(path)}, "persona")
    with pytest.raises(ConfigError, match="not of the form 'As <phrase>, '"):
        validated(PersonaSpec, {"name": "odd", "file": str(path)}, "persona")


# --------------------------------------------------------------------------- scenario files
def test_labelled_jsonl_with_label_and_no_id(tmp_path):
    path = tmp_path / "recognition_scenarios.jsonl"
    path.write_text(json.dumps({"label": "fury", "text": "They broke it on purpose."}) + "\n\n"
                    + json.dumps({"label": "ease", "text": "  A slow Sunday.  "}) + "\n")
    rows = load_scenarios(str(path))
    assert [(r.id, r.emotion) for r in rows] == [("line-1", "fury"), ("line-3", "ease")]


def test_sentence_file_keeps_empty_rows_and_duplicates_when_asked(tmp_path):
    path = tmp_path / "hierarchy_prompts.txt"
    path.write_bytes("I won.\n\nIt rained\u2028all day.\nI won.\r\n   \nLast one".encode())
    dropped = load_scenarios(str(path), keep_empty=False)
    assert [(r.id, r.text) for r in dropped] == [("line-1", "I won."), ("line-3", "It rained\u2028all day."),
                                                 ("line-6", "Last one")]
    assert [r.id for r in load_scenarios(str(path))] == [f"line-{n}" for n in range(1, 7)]  # their format, whole
    kept = load_scenarios(str(path), keep_empty=True)
    assert [r.text.strip() for r in kept] == ["I won.", "", "It rained\u2028all day.", "I won.", "", "Last one"]
    assert [r.id for r in kept] == [f"line-{n}" for n in range(1, 7)]
    assert len(load_scenarios(str(path), keep_empty=True, limit=2)) == 2


# --------------------------------------------------------------------------- count tables
def test_count_tables_are_transposed_into_the_persona_tables(tmp_path):
    folder = tmp_path / "recognition"
    folder.mkdir()
    # Rows predicted, columns true: 5 true-"a" rows predicted "a", 2 true-"a" predicted "b", 1 true-"b" predicted "a".
    (folder / "pilot.csv").write_text("a,b\n5,1\n2,7\n")
    (folder / "sailor.csv").write_text("a,b\n3,0\n4,9\n")
    data = load_confusion(folder)
    assert data.emotions == ["a", "b"]
    assert data.personas == {"pilot": [[5, 2], [1, 7]], "sailor": [[3, 4], [0, 9]]}
    assert load_confusion(folder / "pilot.csv").personas == {"pilot": [[5, 2], [1, 7]]}
    (folder / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="bad.csv: expected a header of labels and a 2 x 2"):
        load_confusion(folder)


# --------------------------------------------------------------------------- trees
REFERENCE = {"name": "Emotion Hierarchy", "children": [
    {"name": "joy", "children": [{"name": "pride", "size": 1}, {"name": "hope", "children": [{"name": "relief"}]}]},
    {"name": " fear", "children": [{"name": "worry", "size": 1}]},
]}


def test_nested_trees_read_and_compare():
    reference = tree_from_nested(REFERENCE)
    assert "Emotion Hierarchy" not in reference  # the synthetic root is no node
    assert sorted(reference.edges) == [("fear", "worry"), ("hope", "relief"), ("joy", "hope"), ("joy", "pride")]
    ours = tree_from_nested({"name": "x", "children": [{"name": "joy", "children": [{"name": "hope"}]},
                                                       {"name": "fear", "children": [{"name": "dread"}]},
                                                       {"name": "worry"}]})
    assert sorted(ours.nodes) == ["dread", "fear", "hope", "joy", "worry"]  # the childless root stays a node
    # Shared: joy-hope. Ours 2 edges, reference 4: precision 1/2, recall 1/4, F1 = 2 * 1/8 / (3/4) = 1/3.
    assert edge_agreement(ours, reference) == {"edges": 2, "reference_edges": 4, "common_edges": 1,
                                               "precision": 0.5, "recall": 0.25, "f1": pytest.approx(1 / 3)}
    assert np.isnan(edge_agreement(tree_from_nested({"children": []}), reference)["precision"])
    # Round trip through our writer keeps every edge and node.
    back = tree_from_nested(json.loads(json.dumps(nested_tree(reference))))
    assert sorted(back.edges) == sorted(reference.edges) and set(back.nodes) == set(reference.nodes)
    with pytest.raises(ConfigError, match="needs a non-empty \"name\""):
        tree_from_nested({"children": [{"children": []}]})


def test_paper_hierarchy_on_a_sentence_file_then_compare_tree(tmp_path):
    from experiments.runs import hierarchy
    from experiments.tools import compare_tree

    prompts = tmp_path / "hierarchy_prompts.txt"
    prompts.write_text("I won.\n\nI won.\nIt rained.\n")
    run_dir = tmp_path / "run"
    cfg = _cfg("experiment=hierarchy", "model=scripted", f"scenarios={prompts}", "keep_empty=true",
               "probe.method=paper", "hierarchy.method=paper", "hierarchy.baseline_samples=10", "progress=false",
               f"paths.output_dir={run_dir}")
    # Every prompt gets the same top tokens: joy .5, hope .25, pride .25 (" Joy" does not count).
    OmegaConf.update(cfg, "model.continuation_logprobs",
                     {" joy": float(np.log(0.5)), " Joy": -1.0, " hope": float(np.log(0.25)),
                      " pride": float(np.log(0.25))}, force_add=True)
    metrics = hierarchy.run(cfg)
    table = pd.read_parquet(run_dir / "distributions.parquet")
    assert table["id"].tolist() == ["line-1", "line-2", "line-3", "line-4"]  # the empty row and the repeat kept
    assert metrics["scenarios"] == 4 and metrics["method"] == "paper"
    assert [list(words) for words in table["top_k_words"]] == [["joy", "hope", "pride"]] * 4
    # Per row: C[joy,hope] = C[joy,pride] = 1/8, C[hope,pride] = 1/16; f: joy 1/4, hope = pride 3/16 (x4 rows).
    # P(joy | hope) = 2/3 > P(hope | joy) = 1/2: joy -> hope and joy -> pride; hope and pride tie.
    assert (run_dir / "candidate_edges.csv").is_file()
    tree = json.loads((run_dir / "tree.json").read_text())
    assert sorted(tree_from_nested(tree).edges) == [("joy", "hope"), ("joy", "pride")]
    reference = tmp_path / "reference.json"
    reference.write_text(json.dumps(REFERENCE))
    out = tmp_path / "compare"
    result = compare_tree.run(_cfg("experiment=compare_tree", f"run_dir={run_dir}", f"reference={reference}",
                                   "hierarchy.baseline_samples=10", f"paths.output_dir={out}"))
    assert (result["precision"], result["recall"]) == (1.0, 0.5)  # both of ours are among the reference's 4
    assert result["metrics"]["ours"]["edges"] == 2 and result["metrics"]["reference"]["edges"] == 4
    assert result["metrics"]["reference"]["average_root_to_leaf_depth"] == pytest.approx(4 / 3)  # 1, 2, 1
    assert (out / "comparison.png").is_file() and (out / "comparison.json").is_file()
    with pytest.raises(ConfigError, match="needs run_dir="):
        compare_tree.run(_cfg("experiment=compare_tree", f"paths.output_dir={out}"))
