"""compare_tree's reference: the authors' edges.csv as a file, and malformed or cyclic trees refused in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module

from emotion_probe import ConfigError
from emotion_probe.analysis.hierarchy_trees import tree_from_nested

# The authors' analysis writes edges.csv with their escaped token texts, leading spaces kept.
AUTHORS_EDGES = "parent,child\n joy, pride\n joy, hope\n hope, relief\n fear, worry\n"
RUN_TREE = {"name": "Emotion Hierarchy", "children": [
    {"name": "joy", "children": [{"name": "pride", "size": 1}]}, {"name": "fear", "size": 1}]}


def _cfg(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _compare(tmp_path: Path, reference: Path) -> dict:
    from experiments.tools import compare_tree

    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "tree.json").write_text(json.dumps(RUN_TREE), encoding="utf-8")
    return compare_tree.run(_cfg("experiment=compare_tree", f"run_dir={run_dir}", f"reference={reference}",
                                 "hierarchy.baseline_samples=10", f"paths.output_dir={tmp_path / 'out'}"))


def test_the_authors_edges_csv_is_read_as_a_file_and_as_their_folder(tmp_path):
    folder = tmp_path / "authors"
    folder.mkdir()
    (folder / "edges.csv").write_text(AUTHORS_EDGES, encoding="utf-8")
    by_file = _compare(tmp_path, folder / "edges.csv")
    assert (by_file["common_edges"], by_file["reference_edges"]) == (1, 4)
    assert sorted(map(tuple, by_file["only_reference"])) == [("fear", "worry"), ("hope", "relief"), ("joy", "hope")]
    assert _compare(tmp_path, folder)["reference_edges"] == 4


@pytest.mark.parametrize(("content", "message"), [
    (b"parent,child\n joy, pride\n hope\n", r"edges\.csv: line 3: expected a parent and a child"),
    (b"parent,child\n joy,\n", r"edges\.csv: line 2: expected a parent and a child"),
    (b"source,target\njoy,pride\n", r"edges\.csv: expected a header with parent and child columns"),
    (b"", r"edges\.csv: expected a header with parent and child columns"),
    (b"parent,child\n joy, pride\n\xff\xfe\x00garbage\n", r"edges\.csv: line 3 is not valid UTF-8"),
    (b"parent,child\n\"joy, pride\n", r"edges\.csv: line 2"),
])
def test_malformed_edges_csv_is_named(tmp_path, content, message):
    path = tmp_path / "edges.csv"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        _compare(tmp_path, path)


def test_a_cyclic_reference_is_refused_with_its_cycle(tmp_path):
    path = tmp_path / "cyclic.json"
    path.write_text(json.dumps({"name": "root", "children": [
        {"name": "joy", "children": [{"name": "love", "children": [{"name": "joy"}]}]}]}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cyclic\.json: .*cycle: joy -> love -> joy"):
        _compare(tmp_path, path)
    edges = tmp_path / "edges.csv"
    edges.write_text("parent,child\njoy,love\nlove,pride\npride,joy\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"cycle: joy -> love -> pride -> joy"):
        _compare(tmp_path, edges)


def test_a_deeply_nested_tree_is_read_without_recursion():
    node: dict = {"name": "leaf"}
    for depth in range(5000):
        node = {"name": f"n{depth}", "children": [node]}
    graph = tree_from_nested({"name": "root", "children": [node]})
    assert graph.number_of_edges() == 5000


def _emolab(tmp_path: Path, reference: Path) -> subprocess.CompletedProcess:
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "tree.json").write_text(json.dumps(RUN_TREE), encoding="utf-8")
    return subprocess.run([sys.executable, "-m", "experiments.app.main", "experiment=compare_tree", f"run_dir={run_dir}",
                           f"reference={reference}", f"hydra.run.dir={tmp_path / 'out'}"],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
                          cwd=tmp_path)


@pytest.mark.parametrize("kind", ["deep json", "garbage csv"])
def test_bad_references_end_in_one_error_line_and_exit_2(tmp_path, kind):
    if kind == "deep json":
        reference = tmp_path / "deep.json"
        reference.write_text('{"name": "r", "children": [' * 100_000 + "]}" * 100_000, encoding="utf-8")
    else:  # an output folder, as the authors' analysis writes one, with a garbage edges.csv
        reference = tmp_path / "authors"
        reference.mkdir()
        (reference / "edges.csv").write_bytes(b"parent,child\n\x00\x9c\xff,\xfe\n")
    result = _emolab(tmp_path, reference)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: reference: ") and "Traceback" not in result.stderr, result.stderr[-3000:]
