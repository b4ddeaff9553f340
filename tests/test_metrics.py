"""Tests of glasscuda.metrics against scikit-learn and brute force."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from sklearn.metrics import (
    f1_score,
    multilabel_confusion_matrix,
    precision_recall_curve,
    precision_score,
    recall_score,
)

from glasscuda import metrics, plots


def _brute_force_curve(truth, scores):
    """Precision, recall and F1 of "score >= u" for every distinct score u, by counting."""
    candidates = np.unique(scores)
    predicted = scores[None, :] >= candidates[:, None]
    tp = (predicted & (truth[None, :] == 1)).sum(axis=1)
    precision = tp / predicted.sum(axis=1)
    recall = tp / truth.sum()
    f1 = np.where(tp > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    return candidates, precision, recall, f1


def _noisy_scores(rng, truth, separation=1.5):
    """Scores that rank positives higher on average, rounded to create ties."""
    raw = 1.0 / (1.0 + np.exp(-(separation * (2 * truth - 1) + rng.normal(0.0, 1.5, truth.size))))
    return np.round(raw, 2)


@pytest.fixture
def binary_problem():
    rng = np.random.default_rng(7)
    truth = (rng.random(400) < 0.2).astype(int)
    return truth, _noisy_scores(rng, truth)


@given(
    st.lists(st.tuples(st.integers(0, 1), st.integers(0, 1)), min_size=1, max_size=60)
)
@settings(max_examples=40, deadline=None)
def test_precision_recall_f1_matches_sklearn(pairs):
    truth = np.array([p[0] for p in pairs])
    predicted = np.array([p[1] for p in pairs])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = metrics.precision_recall_f1(truth, predicted)
    assert result["n"] == truth.size
    assert result["support"] == truth.sum()
    assert result["tp"] + result["fn"] == truth.sum()
    assert result["fp"] + result["tp"] == predicted.sum()
    if truth.sum() == 0:
        assert math.isnan(result["recall"]) and math.isnan(result["f1"])
        assert result["undefined"] == metrics.NO_POSITIVES
        if predicted.sum() == 0:
            assert math.isnan(result["precision"])
        else:
            assert result["precision"] == 0.0
    else:
        assert "undefined" not in result
        assert result["precision"] == pytest.approx(precision_score(truth, predicted, zero_division=0))
        assert result["recall"] == pytest.approx(recall_score(truth, predicted))
        assert result["f1"] == pytest.approx(f1_score(truth, predicted, zero_division=0))


def test_precision_recall_f1_rejects_bad_input():
    with pytest.raises(ValueError, match="0 and 1"):
        metrics.precision_recall_f1([0, 2], [0, 1])
    with pytest.raises(ValueError, match="labels but"):
        metrics.precision_recall_f1([0, 1, 1], [0, 1])


def test_sweep_table_agrees_with_sklearn_precision_recall_curve(binary_problem):
    truth, scores = binary_problem
    result = metrics.search_threshold(truth, scores)
    precision, recall, thresholds = precision_recall_curve(truth, scores)
    assert [row["threshold"] for row in result.table] == pytest.approx(list(metrics.DEFAULT_THRESHOLD_GRID))
    for row in result.table:
        # "score >= t" predicts the same as "score >= the smallest score at or above t".
        index = np.searchsorted(thresholds, row["threshold"], side="left")
        if index == thresholds.size:
            assert row["recall"] == 0.0 and row["fraction_above"] == 0.0
            continue
        assert row["precision"] == pytest.approx(precision[index])
        assert row["recall"] == pytest.approx(recall[index])
        assert row["fraction_above"] == pytest.approx(np.mean(scores >= row["threshold"]))


def test_sweep_optimum_is_the_exact_f1_optimum(binary_problem):
    truth, scores = binary_problem
    result = metrics.search_threshold(truth, scores)
    candidates, _, _, f1 = _brute_force_curve(truth, scores)
    assert result.pr_optimum_f1 == pytest.approx(f1.max())
    assert result.pr_optimum_threshold == pytest.approx(candidates[np.flatnonzero(np.isclose(f1, f1.max()))[0]])
    grid_f1 = [f1_score(truth, scores >= t, zero_division=0) for t in metrics.DEFAULT_THRESHOLD_GRID]
    assert result.f1 == pytest.approx(max(grid_f1))
    assert result.pr_optimum_f1 >= result.f1 - 1e-12
    assert result.undefined is None


def test_sweep_ties_go_to_the_lowest_threshold():
    truth = np.array([0, 0, 0, 1, 1, 0])
    scores = np.array([0.02, 0.03, 0.04, 0.97, 0.98, 0.99])
    # No score lies inside the grid, so every grid threshold gives the same F1.
    result = metrics.search_threshold(truth, scores)
    assert len({row["f1"] for row in result.table}) == 1
    assert result.threshold == metrics.DEFAULT_THRESHOLD_GRID[0]


def test_sweep_without_positives_is_undefined_and_silent():
    scores = np.linspace(0.0, 1.0, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = metrics.search_threshold(np.zeros(11, dtype=int), scores)
    assert result.undefined == metrics.NO_POSITIVES
    assert math.isnan(result.threshold) and math.isnan(result.f1) and math.isnan(result.pr_optimum_f1)
    for row in result.table:
        assert row["fraction_above"] == pytest.approx(np.mean(scores >= row["threshold"]))
        assert math.isnan(row["f1"])


@pytest.mark.parametrize("min_recall", [0.5, 0.95, 1.0])
def test_operating_point_for_recall_is_the_highest_threshold_meeting_it(binary_problem, min_recall):
    truth, scores = binary_problem
    point = metrics.operating_point(truth, scores, min_recall=min_recall)
    candidates, _, recall, _ = _brute_force_curve(truth, scores)
    assert point.reachable
    assert point.threshold == pytest.approx(candidates[recall >= min_recall].max())
    assert point.recall == pytest.approx(recall_score(truth, scores >= point.threshold))
    assert point.precision == pytest.approx(precision_score(truth, scores >= point.threshold))
    assert point.f1 == pytest.approx(f1_score(truth, scores >= point.threshold))


@pytest.mark.parametrize("min_precision", [0.3, 0.6, 0.9])
def test_operating_point_for_precision_is_the_lowest_threshold_meeting_it(binary_problem, min_precision):
    truth, scores = binary_problem
    point = metrics.operating_point(truth, scores, min_precision=min_precision)
    candidates, precision, _, _ = _brute_force_curve(truth, scores)
    meeting = candidates[precision >= min_precision]
    assert point.reachable == bool(meeting.size)
    if meeting.size:
        assert point.threshold == pytest.approx(meeting.min())
        assert point.precision == pytest.approx(precision_score(truth, scores >= point.threshold))
        assert point.precision >= min_precision


def test_operating_point_not_reachable_is_explained():
    truth = np.array([1, 0, 1, 0, 0])
    scores = np.array([0.6, 0.9, 0.5, 0.2, 0.1])  # the top score is a negative
    point = metrics.operating_point(truth, scores, min_precision=1.0)
    assert not point.reachable
    assert math.isnan(point.threshold)
    assert "not reachable" in point.reason
    empty = metrics.operating_point(np.zeros(5, dtype=int), scores, min_recall=0.9)
    assert not empty.reachable and empty.reason == metrics.NO_POSITIVES
    with pytest.raises(ValueError, match="exactly one"):
        metrics.operating_point(truth, scores)
    with pytest.raises(ValueError, match="exactly one"):
        metrics.operating_point(truth, scores, min_recall=0.5, min_precision=0.5)


def _multilabel_problem(seed=3, rows=300, empty_class=None):
    rng = np.random.default_rng(seed)
    truth = (rng.random((rows, 4)) < [0.7, 0.15, 0.1, 0.2]).astype(int)
    if empty_class is not None:
        truth[:, empty_class] = 0
    scores = np.clip(truth * 0.4 + rng.random(truth.shape) * 0.6, 0, 1)
    return truth, scores


def test_multilabel_report_matches_sklearn():
    truth, scores = _multilabel_problem()
    thresholds = np.array([0.5, 0.45, 0.6, 0.55])
    names = ["no_defect", "chipped_edge", "scratch", "stain"]
    report = metrics.multilabel_report(truth, scores, thresholds, names)
    predicted = (scores >= thresholds).astype(int)
    assert report["micro_f1"] == pytest.approx(f1_score(truth, predicted, average="micro"))
    assert report["macro_f1"] == pytest.approx(f1_score(truth, predicted, average="macro"))
    expected = multilabel_confusion_matrix(truth, predicted)
    for k, name in enumerate(names):
        per_class = report["per_class"][name]
        assert per_class["f1"] == pytest.approx(f1_score(truth[:, k], predicted[:, k]))
        assert per_class["support"] == truth[:, k].sum()
        assert per_class["threshold"] == thresholds[k]
        assert report["confusion_matrices"][name] == expected[k].tolist()


def test_multilabel_report_leaves_classes_without_positives_out_of_macro_f1():
    truth, scores = _multilabel_problem(empty_class=2)
    names = ["a", "b", "c", "d"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = metrics.multilabel_report(truth, scores, 0.5, names)
    predicted = (scores >= 0.5).astype(int)
    assert report["macro_f1_classes"] == ["a", "b", "d"]
    assert report["macro_f1"] == pytest.approx(
        np.mean([f1_score(truth[:, k], predicted[:, k]) for k in (0, 1, 3)])
    )
    assert math.isnan(report["per_class"]["c"]["f1"])
    assert report["per_class"]["c"]["undefined"] == metrics.NO_POSITIVES


def test_search_thresholds_per_class_uses_the_binary_search_and_a_fallback():
    truth, scores = _multilabel_problem(empty_class=1)
    chosen = metrics.search_thresholds_per_class(truth, scores, fallback=0.42)
    assert chosen.shape == (4,)
    assert chosen[1] == 0.42
    for k in (0, 2, 3):
        assert chosen[k] == metrics.search_threshold(truth[:, k], scores[:, k]).threshold


def test_score_distribution_and_fraction_above():
    rng = np.random.default_rng(0)
    scores = rng.random(101)
    summary = metrics.score_distribution(scores)
    assert summary["median"] == pytest.approx(np.median(scores))
    assert summary["min"] == scores.min() and summary["max"] == scores.max()
    rows = metrics.fraction_above(scores, [0.25, 0.5])
    assert rows[1]["count"] == np.count_nonzero(scores >= 0.5)
    assert rows[0]["fraction_above"] == pytest.approx(np.mean(scores >= 0.25))


def test_plots_write_png_files(tmp_path):
    truth, scores = _multilabel_problem(empty_class=1)
    truth, scores = truth[:, :2], scores[:, :2]
    names = ["no_defect", "chipped_edge"]
    report = metrics.multilabel_report(truth, scores, 0.5, names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = [
            plots.plot_pr_curves(truth, scores, names, tmp_path / "pr.png", marked_thresholds=[0.5] * 2),
            plots.plot_confusion_matrices(report, tmp_path / "cm.png"),
            plots.plot_score_histograms(truth, scores, names, tmp_path / "hist.png", thresholds=[0.5] * 2),
            plots.plot_pr_curves(truth[:, 0], scores[:, 0], ["defective"], tmp_path / "pr1.png"),
        ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size[0] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cm.png", "hist.png", "pr.png", "pr1.png"]
