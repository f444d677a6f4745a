"""The statistics a reviewer asks for (issue 11, item 3), on small fixed data.

Every expected value is worked out by hand in the comments or taken from scipy computed
independently of emolab's code: paired exact tests (McNemar, sign test per emotion), bootstrap
intervals over scenarios, edge stability, the threshold sweep and the frequency-matched null.
"""

from __future__ import annotations

import inspect
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf
from rich.console import Console
from scipy.stats import binomtest, bootstrap

from emotion_probe import ConfigError, EmotionWheel
from emotion_probe.analysis.bias import (
    bootstrap_recognition,
    compare_paired_predictions,
    compare_predictions,
    mcnemar_exact,
)
from emotion_probe.analysis.hierarchy import build_hierarchy
from emotion_probe.analysis.hierarchy_metrics import frequency_matched_alignment, mass_bins, shuffled_alignment
from emotion_probe.analysis.hierarchy_robustness import bootstrap_hierarchy, threshold_sweep
from emotion_probe.analysis.stats import percentile_interval, resample_rows, sign_test, upper_tail_p


def _cfg(*overrides: str):
    with initialize_config_module(config_module="conf", version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def _wheel(tmp_path: Path, name: str, groups: list[tuple[str, list[str]]]) -> EmotionWheel:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "groups": [
        {"primary": primary, "color": "#123456", "words": words} for primary, words in groups]}))
    return EmotionWheel.load(path)


# --------------------------------------------------------------------------- paired exact tests
def test_sign_test_and_mcnemar_by_hand():
    # 8 vs 2 discordant pairs: p = 2 * P(X <= 2), X ~ Bin(10, 1/2) = 2 * (1 + 10 + 45) / 1024.
    assert sign_test(8, 2) == pytest.approx(112 / 1024)
    assert sign_test(2, 8) == pytest.approx(112 / 1024)
    assert sign_test(6, 0) == pytest.approx(2 / 64)
    assert sign_test(0, 0) == 1.0  # no discordant pair, no evidence
    with pytest.raises(ValueError):
        sign_test(-1, 3)
    # 8 scenarios only A gets right, 2 only B, 5 both, 3 neither: the concordant 8 do not enter p.
    correct_a = [True] * 8 + [False] * 2 + [True] * 5 + [False] * 3
    correct_b = [False] * 8 + [True] * 2 + [True] * 5 + [False] * 3
    result = mcnemar_exact(correct_a, correct_b)
    assert result == {"pairs": 18, "accuracy_a": pytest.approx(13 / 18), "accuracy_b": pytest.approx(7 / 18),
                      "a_only": 8, "b_only": 2, "p_value": pytest.approx(binomtest(8, 10).pvalue)}
    # Adding concordant scenarios changes the accuracies but not the test.
    more = mcnemar_exact(correct_a + [True] * 50, correct_b + [True] * 50)
    assert more["p_value"] == result["p_value"] and more["pairs"] == 68
    with pytest.raises(ConfigError, match="align row by row"):
        mcnemar_exact([True, False], [True])


# Rows 1-8: A says joy, B fear; 9: both joy; 10: both fear; 11: A anger, B joy; 12: A no answer, B anger;
# 13: A fear, B no answer.
PAIRED_A = ["joy"] * 8 + ["joy", "fear", "anger", None, "fear"]
PAIRED_B = ["fear"] * 8 + ["joy", "fear", "joy", "anger", None]


def test_paired_sign_test_per_emotion_by_hand():
    table = compare_paired_predictions(PAIRED_A, PAIRED_B, ["joy", "fear", "anger"]).set_index("emotion")
    # joy: A alone on rows 1-8, B alone on row 11 -> 8 vs 1; fear: A alone on row 13, B on 1-8 -> 1 vs 8;
    # anger: A alone on row 11, B on row 12 -> 1 vs 1. Rows 9 and 10 agree and carry nothing.
    assert table.loc["joy", ["a_only", "b_only"]].tolist() == [8, 1]
    assert table.loc["fear", ["a_only", "b_only"]].tolist() == [1, 8]
    assert table.loc["anger", ["a_only", "b_only"]].tolist() == [1, 1]
    # 8 vs 1: p = 2 * (1 + 9) / 512; scipy's binomial test agrees.
    assert table.loc["joy", "p_value"] == pytest.approx(20 / 512)
    assert table.loc["joy", "p_value"] == pytest.approx(binomtest(8, 9, 0.5).pvalue)
    assert table.loc["anger", "p_value"] == 1.0
    # BH by hand: sorted p = (20/512, 20/512, 1), q = min(p_(j) * 3 / j for j >= i) = 20/512 * 3/2 for both.
    assert table.loc["joy", "q_value"] == table.loc["fear", "q_value"] == pytest.approx(20 / 512 * 1.5)
    assert not table["significant"].any() and set(table["test"]) == {"sign"}
    # Rates divide by each persona's answered rows (12 of 13 each): joy 9/12 for A, 2/12 for B.
    assert table.loc["joy", "rate_a"] == pytest.approx(9 / 12) and table.loc["joy", "rate_b"] == pytest.approx(2 / 12)
    assert list(table.index) == ["joy", "anger", "fear"]  # by diff, descending, as compare_predictions
    # The unpaired Fisher test on the same counts is a different test, kept for published counts.
    fisher = compare_predictions([9, 2, 1], [2, 9, 1], ["joy", "fear", "anger"]).set_index("emotion")
    assert set(fisher["test"]) == {"fisher"} and fisher.loc["joy", "p_value"] != table.loc["joy", "p_value"]
    with pytest.raises(ConfigError, match="align row by row"):
        compare_paired_predictions(PAIRED_A, PAIRED_B[:-1], ["joy", "fear", "anger"])
    with pytest.raises(ConfigError, match="not in the label set"):
        compare_paired_predictions(["bliss"], ["joy"], ["joy", "fear"])


# --------------------------------------------------------------------------- bootstrap intervals
def test_percentile_interval_and_monte_carlo_p():
    assert percentile_interval(np.arange(101)) == pytest.approx((2.5, 97.5))  # numpy's linear percentile of 0..100
    assert percentile_interval([np.nan, 1.0, np.nan, 1.0]) == (1.0, 1.0)  # undefined resamples left out
    assert all(np.isnan(percentile_interval([np.nan])))
    # (1 + #{null >= observed}) / (1 + n): 2 of 4 nulls reach 0.5 -> 3/5; none reach 0.9 -> 1/5.
    assert upper_tail_p(0.5, np.array([0.1, 0.5, 0.7, 0.2])) == pytest.approx(3 / 5)
    assert upper_tail_p(0.9, np.array([0.1, 0.5, 0.7, 0.2])) == pytest.approx(1 / 5)


def test_accuracy_interval_agrees_with_scipy_and_the_normal_approximation():
    # 400 scenarios, 120 right: accuracy 0.3, normal-approximation 95% half-width 1.96 * sqrt(.21 / 400) = 0.0449.
    true = ["joy"] * 400
    predicted = ["joy"] * 120 + ["fear"] * 280
    rows = resample_rows(400, 4000, np.random.default_rng(0))
    result = bootstrap_recognition(true, predicted, lambda w: w, rows)
    assert result["accuracy_ci_low"] == pytest.approx(0.3 - 0.0449, abs=0.01)
    assert result["accuracy_ci_high"] == pytest.approx(0.3 + 0.0449, abs=0.01)
    # scipy >= 1.15 takes the generator as `rng`, older versions as `random_state`.
    seed = {"rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state": np.random.default_rng(1)}
    reference = bootstrap((np.array([1.0] * 120 + [0.0] * 280),), np.mean, n_resamples=4000, method="percentile",
                          **seed).confidence_interval
    assert result["accuracy_ci_low"] == pytest.approx(reference.low, abs=0.01)
    assert result["accuracy_ci_high"] == pytest.approx(reference.high, abs=0.01)
    # The same rows give the same interval: seeded, reproducible.
    assert bootstrap_recognition(true, predicted, lambda w: w, rows) == result


def test_accuracy_interval_divides_by_answered_rows_and_collapses_to_primaries(tmp_path):
    wheel = _wheel(tmp_path, "two", [("joy", ["bliss"]), ("fear", ["dread"])])
    # Half the rows have no answer; every answered row is right: accuracy 1 in every resample. Counting the
    # unanswered rows as wrong would give an interval around 0.5 instead.
    true = ["joy", "fear"] * 50
    predicted = ["joy", None] * 50
    rows = resample_rows(100, 500, np.random.default_rng(3))
    result = bootstrap_recognition(true, predicted, wheel.primary_of, rows)
    assert (result["accuracy_ci_low"], result["accuracy_ci_high"]) == (1.0, 1.0)
    # Every prediction names the wrong word of the right group: 0 over words, 1 over primaries.
    result = bootstrap_recognition(["joy", "dread"] * 10, ["bliss", "fear"] * 10, wheel.primary_of,
                                   resample_rows(20, 200, np.random.default_rng(0)))
    assert (result["accuracy_ci_low"], result["accuracy_ci_high"]) == (0.0, 0.0)
    assert (result["primary_accuracy_ci_low"], result["primary_accuracy_ci_high"]) == (1.0, 1.0)
    with pytest.raises(ConfigError, match="indices into the 2 scenarios"):
        bootstrap_recognition(["joy", "fear"], ["joy", "fear"], wheel.primary_of, np.array([[0, 5]]))


# --------------------------------------------------------------------------- hierarchy bootstrap
@pytest.fixture()
def fragile(tmp_path):
    """y co-occurs with z (10 rows) and w (9 rows) always, and with x in one row of 20.

    P(y | x) = P(y | z) = P(y | w) = 1 and y has other partners, so y parents x, z and w. The edge
    y -> x exists exactly when x's row is drawn at least once: in 1 - (19/20)^20 = 0.6415 of resamples.
    """
    wheel = _wheel(tmp_path, "fragile", [("y", ["x"]), ("z", ["w"])])
    rows = [[("x", 0.5), ("y", 0.5)]] + [[("y", 0.5), ("z", 0.5)]] * 10 + [[("y", 0.5), ("w", 0.5)]] * 9
    P = np.zeros((len(rows), len(wheel.words)))
    for n, row in enumerate(rows):
        for word, p in row:
            P[n, wheel.index[word]] = p
    return wheel, P


@pytest.mark.parametrize("method", ["exact", "paper"])
def test_edge_stability_matches_the_chance_of_drawing_its_only_row(fragile, method):
    wheel, P = fragile
    full = build_hierarchy(P, wheel, threshold=0.3, method=method, baseline_samples=10)
    assert sorted(full.edges) == [("y", "w"), ("y", "x"), ("y", "z")]
    steps = []
    result = bootstrap_hierarchy(P, wheel, 0.3, method, resamples=1000, seed=0, on_resample=lambda: steps.append(1))
    assert len(steps) == 1000 and len(result.metrics) == 1000
    expected = 1 - (19 / 20) ** 20
    assert result.edge_share("y", "x") == pytest.approx(expected, abs=0.05)
    assert result.edge_share("y", "z") == result.edge_share("y", "w") == 1.0  # losing them all: p < 1e-5
    assert result.edge_share("x", "y") == 0.0
    # 3 edges in ~64% of resamples, 2 otherwise: the 2.5th percentile is 2 and the 97.5th 3.
    intervals = result.intervals()
    assert (intervals["edges_ci_low"], intervals["edges_ci_high"]) == (2.0, 3.0)
    assert (intervals["total_path_length_ci_low"], intervals["total_path_length_ci_high"]) == (2.0, 3.0)
    assert (intervals["average_depth_ci_low"], intervals["average_depth_ci_high"]) == (1.0, 1.0)
    depth = "average_root_to_leaf_depth"
    assert (intervals[f"{depth}_ci_low"], intervals[f"{depth}_ci_high"]) == (1.0, 1.0)
    # The share per resample is what edges.csv writes as `stability`.
    edges = full.edges_frame(result).set_index(["parent", "child"])
    assert edges.loc[("y", "x"), "stability"] == result.edge_share("y", "x")
    assert "stability" not in full.edges_frame().columns
    seen = result.edges_frame({("y", "x")})
    assert seen.iloc[0]["stability"] == 1.0 and seen.set_index("child").loc["x", "in_tree"]
    # Seeded: the same seed repeats every resample.
    again = bootstrap_hierarchy(P, wheel, 0.3, method, resamples=50, seed=0)
    assert again.edge_counts == bootstrap_hierarchy(P, wheel, 0.3, method, resamples=50, seed=0).edge_counts
    with pytest.raises(ConfigError, match="at least 1 resample"):
        bootstrap_hierarchy(P, wheel, 0.3, method, resamples=0)


def test_paper_bootstrap_keeps_file_order_within_a_resample(tmp_path, monkeypatch):
    """The authors' two-parent rule keeps the parent met first, row by row. A resample that draws row 1
    before row 0 must still build rows in file order: hope keeps joy (row 0), never pride (row 1)."""
    from emotion_probe.analysis import hierarchy_robustness

    wheel = _wheel(tmp_path, "six", [("joy", ["hope", "pride"]), ("fear", ["worry", "dread"])])
    rows = [[("joy", 0.5), ("hope", 0.25)], [("pride", 0.5), ("hope", 0.5)], [("joy", 0.5), ("fear", 0.5)],
            [("joy", 0.5), ("fear", 0.5)], [("pride", 0.5), ("worry", 0.5)], [("worry", 0.5), ("dread", 0.5)]]
    P = np.zeros((len(rows), len(wheel.words)))
    for n, row in enumerate(rows):
        for word, p in row:
            P[n, wheel.index[word]] = p
    ranked = [[word for word, _ in row] for row in rows]
    # The same multiset as the data, drawn in another order (tests/test_paper_method.py derives the tree).
    monkeypatch.setattr(hierarchy_robustness, "resample_rows", lambda n, resamples, rng: np.array([[1, 0, 2, 3, 4, 5]]))
    result = bootstrap_hierarchy(P, wheel, 0.3, "paper", ranked, resamples=1)
    assert result.edge_share("joy", "hope") == 1.0 and result.edge_share("pride", "hope") == 0.0


# --------------------------------------------------------------------------- threshold sweep
@pytest.fixture()
def planted(tmp_path):
    """root > {mid1, mid2}, mid1 > {leaf1, leaf2}, mid2 > {leaf3, leaf4} (tests/test_hierarchy.py):
    P(mid | leaf) = 1, P(root | mid) = 0.6."""
    wheel = _wheel(tmp_path, "planted", [("root", ["leaf1", "leaf2"]), ("mid1", ["leaf3"]), ("mid2", ["leaf4"])])
    rows = []
    for child, parent, copies in [("leaf1", "mid1", 10), ("leaf2", "mid1", 10), ("leaf3", "mid2", 10),
                                  ("leaf4", "mid2", 10), ("mid1", "root", 30), ("mid2", "root", 30)]:
        row = np.zeros(len(wheel.words))
        row[wheel.index[child]] = row[wheel.index[parent]] = 0.5
        rows += [row] * copies
    return wheel, np.array(rows)


def test_threshold_sweep_by_hand(planted):
    wheel, P = planted
    sweep = threshold_sweep(P, wheel, [0.7, 0.3, 0.5, 0.3])
    assert sweep["threshold"].tolist() == [0.3, 0.5, 0.7]  # sorted, each once
    # Below 0.6 the whole two-level tree; above it only mid -> leaf survives (P(root | mid) = 0.6).
    assert sweep["edges"].tolist() == [6, 6, 4]
    assert sweep["average_depth"].tolist() == [2.0, 2.0, 1.0]
    assert sweep["average_root_to_leaf_depth"].tolist() == [2.0, 2.0, 1.0]
    # root reaches 2 mids at 1 and 4 leaves at 2, each mid 2 leaves at 1: 2 + 8 + 4 = 14; then 4 * 1.
    assert sweep["total_path_length"].tolist() == [14, 14, 4]
    at_run = build_hierarchy(P, wheel, threshold=0.3, baseline_samples=10).metrics
    for column in ("edges", "nodes", "total_path_length", "average_depth", "average_root_to_leaf_depth"):
        assert sweep.iloc[0][column] == at_run[column]
    with pytest.raises(ConfigError, match="threshold must be in"):
        threshold_sweep(P, wheel, [0.3, 1.0])


# --------------------------------------------------------------------------- frequency-matched null
STAR = [("root", "leaf1"), ("root", "leaf2"), ("root", "mid1"), ("mid1", "leaf3")]  # 3 of 4 within a group


def test_mass_bins_are_equal_count_bins_by_mass():
    bins = mass_bins(np.array([3.0, 1.0, 2.0, 0.0]), 2)
    assert [b.tolist() for b in bins] == [[3, 1], [2, 0]]
    assert [b.tolist() for b in mass_bins(np.array([3.0, 1.0]), 5)] == [[1], [0]]  # more bins than words


def test_frequency_matched_null_keeps_labels_that_bins_do_not_mix(planted):
    wheel, _ = planted
    # Words: root, mid1, mid2, leaf1, leaf2, leaf3, leaf4. Masses put the root group lightest (3 words), then
    # mid1's, then mid2's: the 3 equal-count bins are exactly the groups, so no shuffle changes a label.
    mass = np.array([1.0, 4.0, 6.0, 2.0, 3.0, 5.0, 7.0])
    mean, std, p = frequency_matched_alignment(STAR, wheel, mass, bins=3, samples=200, seed=0)
    assert (mean, std, p) == (0.75, 0.0, 1.0)  # every null alignment equals the observed 3/4
    uniform_mean, _, uniform_p = shuffled_alignment(STAR, wheel, samples=200, seed=0)
    assert uniform_mean < 0.5 and uniform_p < 0.2
    # With one bin the null is the plain shuffle; equal masses keep wheel order, so the draws are the same.
    assert frequency_matched_alignment(STAR, wheel, np.ones(7), bins=1, samples=200, seed=0) == (
        shuffled_alignment(STAR, wheel, samples=200, seed=0))
    with pytest.raises(ConfigError, match="one value per word"):
        frequency_matched_alignment(STAR, wheel, np.ones(3))


def test_frequency_matched_null_agrees_with_exact_enumeration(planted):
    wheel, _ = planted
    labels = wheel.primary_index  # root, mid1, mid2, leaf1..leaf4 -> groups 0, 1, 2, 0, 0, 1, 2
    mass = np.array([5.0, 6.0, 7.0, 1.0, 2.0, 3.0, 4.0])  # bins: the 4 leaves (light), the 3 primaries (heavy)
    index = wheel.index
    edges = [(index[a], index[b]) for a, b in STAR]
    exact = []
    for leaves in itertools.permutations(labels[3:]):
        for primaries in itertools.permutations(labels[:3]):
            permuted = np.array([*primaries, *leaves])
            exact.append(np.mean([permuted[a] == permuted[b] for a, b in edges]))
    exact = np.array(exact)
    observed = 0.75
    mean, std, p = frequency_matched_alignment(STAR, wheel, mass, bins=2, samples=4000, seed=0)
    assert mean == pytest.approx(exact.mean(), abs=0.02)
    assert std == pytest.approx(exact.std(), abs=0.02)
    assert p == pytest.approx(np.mean(exact >= observed), abs=0.03)
    assert exact.max() == observed  # root -> mid1 can never align: the primaries keep distinct labels


def test_build_hierarchy_reports_both_chance_levels(planted):
    wheel, P = planted
    metrics = build_hierarchy(P, wheel, threshold=0.3, baseline_samples=200, frequency_bins=3).metrics
    for key in ("shuffled_alignment_p_value", "frequency_matched_alignment_mean", "frequency_matched_p_value"):
        assert 0 <= metrics[key] <= 1, key
    # The p-values are Monte Carlo over 200 shuffles: never below 1 / 201.
    assert metrics["frequency_matched_p_value"] >= 1 / 201


# --------------------------------------------------------------------------- the experiments
def test_hierarchy_run_writes_intervals_stability_and_the_sweep(tmp_path):
    from experiments.runs import hierarchy

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("I won.\nIt rained.\nWe met.\n")
    run_dir = tmp_path / "run"
    cfg = _cfg("experiment=hierarchy", "model=scripted", f"scenarios={prompts}", "probe.method=paper",
               "hierarchy.method=paper", "hierarchy.baseline_samples=10", "hierarchy.bootstrap=20",
               "hierarchy.sweep_thresholds=[0.2,0.5,0.7]", "progress=false", f"paths.output_dir={run_dir}")
    # Every prompt: joy .5, hope .25, pride .25. P(joy | hope) = 2/3 > P(hope | joy) = 1/2: joy -> hope, pride.
    OmegaConf.update(cfg, "model.continuation_logprobs", {" joy": float(np.log(0.5)), " hope": float(np.log(0.25)),
                                                          " pride": float(np.log(0.25))}, force_add=True)
    metrics = hierarchy.run(cfg)
    edges = pd.read_csv(run_dir / "edges.csv")
    # Identical rows: every resample has both edges, and every interval is a point.
    assert edges["stability"].tolist() == [1.0, 1.0]
    assert (metrics["edges_ci_low"], metrics["edges_ci_high"]) == (2, 2) and metrics["bootstrap_resamples"] == 20
    assert len(pd.read_csv(run_dir / "bootstrap_metrics.csv")) == 20
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["average_root_to_leaf_depth_ci_high"] == 1.0 and "frequency_matched_p_value" in saved
    sweep = pd.read_csv(run_dir / "threshold_sweep.csv")
    # The run's 0.3 joins the sweep; joy's edges hold while 2/3 > threshold.
    assert sweep["threshold"].tolist() == [0.2, 0.3, 0.5, 0.7] and sweep["edges"].tolist() == [2, 2, 2, 0]
    assert (run_dir / "threshold_sweep.png").stat().st_size > 3000

    off = tmp_path / "off"
    cfg = _cfg("experiment=hierarchy", "model=scripted", f"scenarios={prompts}", "hierarchy.baseline_samples=10",
               "hierarchy.bootstrap=0", "hierarchy.sweep_thresholds=[]", "progress=false", f"paths.output_dir={off}")
    OmegaConf.update(cfg, "model.continuation_logprobs", {" joy": -0.5, " hope": -1.5}, force_add=True)
    metrics = hierarchy.run(cfg)
    assert "edges_ci_low" not in metrics and "stability" not in pd.read_csv(off / "edges.csv").columns
    assert not (off / "threshold_sweep.csv").exists() and not (off / "bootstrap_metrics.csv").exists()
    with pytest.raises(ConfigError, match="hierarchy.bootstrap"):
        hierarchy.run(_cfg("experiment=hierarchy", "model=scripted", "hierarchy.bootstrap=-1",
                           f"paths.output_dir={tmp_path / 'bad'}"))


def _job(ids, emotions, predicted, calibrated=None) -> tuple[dict, pd.DataFrame]:
    table = pd.DataFrame({"id": ids, "text": ids, "emotion": emotions, "primary": emotions,
                          "predicted": predicted, "predicted_calibrated": calibrated or predicted})
    return {"accuracy": 0.5, "primary_accuracy": 0.5, "calibrated_accuracy": 0.5,
            "calibrated_primary_accuracy": 0.5}, table


def test_persona_report_pairs_personas_by_scenario(tmp_path, shaver):
    from experiments.reports.persona_bias import write_persona_report

    ids = [f"s{i}" for i in range(10)]
    true = ["joy"] * 6 + ["fear", "fear", "anger", "sadness"]
    # s0-s5: A right, B names "bliss" (right group, wrong word); s6 both right; s7 only B right;
    # s8 A has no answer (left out of McNemar); s9 only A right.
    a = ["joy"] * 6 + ["fear", "anger", None, "sadness"]
    b = ["bliss"] * 6 + ["fear", "fear", "anger", "anger"]
    # B's rows in another order: the report pairs by id, not by position.
    order = [9, 3, 0, 1, 2, 4, 5, 6, 7, 8]
    job_b = _job([ids[i] for i in order], [true[i] for i in order], [b[i] for i in order])
    jobs = {"A": _job(ids, true, a), "B": job_b}
    result = write_persona_report(jobs, shaver, [["A", "B"]], [], tmp_path, Console(width=200))
    tests = pd.read_csv(tmp_path / "accuracy_tests.csv")
    word = tests[(tests["level"] == "word") & ~tests["calibrated"]].iloc[0]
    # 9 rows both answered; A alone right on s0-s5 and s9 (7), B alone on s7 (1): p = 2 * (1 + 8) / 256.
    assert (word["pairs"], word["a_only"], word["b_only"]) == (9, 7, 1)
    assert word["p_value"] == pytest.approx(18 / 256) and word["accuracy_a"] == pytest.approx(8 / 9)
    primary = tests[(tests["level"] == "primary") & ~tests["calibrated"]].iloc[0]
    assert (primary["a_only"], primary["b_only"], primary["p_value"]) == (1, 1, 1.0)  # bliss is joy's group
    comparison = result.comparisons[("A", "B")]
    joy = comparison[(comparison["emotion"] == "joy") & ~comparison["calibrated"]].iloc[0]
    assert (joy["a_only"], joy["b_only"], joy["test"]) == (6, 0, "sign") and joy["p_value"] == pytest.approx(2 / 64)

    # Different scenario sets cannot be paired: an error for the sign test, Fisher without McNemar rows.
    jobs["B"] = _job(["t0", "t1"], ["joy", "fear"], ["joy", "fear"])
    (tmp_path / "x").mkdir()
    with pytest.raises(ConfigError, match="did not read the same scenarios"):
        write_persona_report(jobs, shaver, [["A", "B"]], [], tmp_path / "x", Console())
    (tmp_path / "f").mkdir()
    fisher = write_persona_report(jobs, shaver, [["A", "B"]], [], tmp_path / "f", Console(), test="fisher")
    assert set(fisher.comparisons[("A", "B")]["test"]) == {"fisher"} and fisher.accuracy_tests.empty
    with pytest.raises(ConfigError, match="test: expected one of"):
        write_persona_report(jobs, shaver, [], [], tmp_path, Console(), test="chi2")


def test_persona_bias_writes_accuracy_intervals(tmp_path):
    from experiments.runs import persona_bias

    scenarios = tmp_path / "labelled.jsonl"
    rows = [("a", "A dog growls.", "fear"), ("b", "A storm.", "fear"), ("c", "Dark.", "fear"),
            ("d", "A gift!", "happiness")]
    scenarios.write_text("\n".join(json.dumps({"id": i, "text": t, "emotion": e}) for i, t, e in rows))
    cfg = _cfg("experiment=persona_bias", "model=scripted", "probe.wheel=ekman", f"scenarios={scenarios}",
               "recognition.bootstrap=500", "seed=7", "progress=false", f"paths.output_dir={tmp_path / 'run'}")
    # Every prompt reads as fear: 3 of 4 right.
    OmegaConf.update(cfg, "model.continuation_logprobs", {" fear": -0.1, " happiness": -3.0}, force_add=True)
    metrics = persona_bias.run(cfg)
    assert metrics["accuracy"] == 0.75 and metrics["bootstrap_resamples"] == 500
    # Recomputed here from the documented draw (500 x 4 rows, default_rng(seed)): the share of fear rows.
    draws = np.random.default_rng(7).integers(0, 4, size=(500, 4))
    expected = np.percentile((draws < 3).mean(axis=1), [2.5, 97.5])
    assert (metrics["accuracy_ci_low"], metrics["accuracy_ci_high"]) == pytest.approx(tuple(expected))
    calibrated = [metrics[f"calibrated_accuracy{end}"] for end in ("_ci_low", "", "_ci_high")]
    assert calibrated == sorted(calibrated)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["primary_accuracy_ci_high"] == pytest.approx(expected[1])
