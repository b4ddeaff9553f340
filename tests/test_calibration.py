"""Tests of glasscuda.calibration: temperature scaling, ECE, NLL, diagrams."""

import warnings

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import log_loss

from glasscuda import calibration, plots


def _calibrated_binary(rng, rows, spread=2.0):
    """Logits whose sigmoid is the true probability of the drawn labels."""
    logits = rng.normal(0.0, spread, rows)
    labels = (rng.random(rows) < calibration.sigmoid(logits)).astype(int)
    return logits, labels


def _loop_ece(forecast, outcome, n_bins):
    """Expected calibration error written out bin by bin."""
    total = 0.0
    for b in range(n_bins):
        low, high = b / n_bins, (b + 1) / n_bins
        inside = (forecast >= low) & ((forecast < high) if b < n_bins - 1 else (forecast <= high))
        if inside.any():
            total += inside.sum() / forecast.size * abs(outcome[inside].mean() - forecast[inside].mean())
    return total


@pytest.mark.parametrize("planted", [0.4, 1.0, 2.5, 6.0])
def test_binary_temperature_recovers_a_planted_temperature(planted):
    rng = np.random.default_rng(int(planted * 10))
    logits, labels = _calibrated_binary(rng, 60_000)
    fitted = calibration.fit_temperature(logits * planted, labels, kind="binary")
    assert isinstance(fitted, float)
    assert fitted == pytest.approx(planted, rel=0.05)


def test_multilabel_temperature_recovers_one_temperature_per_output():
    rng = np.random.default_rng(11)
    planted = np.array([0.5, 1.0, 2.0, 4.0])
    logits = rng.normal(0.0, 2.0, (40_000, 4))
    labels = (rng.random(logits.shape) < calibration.sigmoid(logits)).astype(int)
    fitted = calibration.fit_temperature(logits * planted, labels, kind="multilabel")
    assert fitted.shape == (4,)
    np.testing.assert_allclose(fitted, planted, rtol=0.05)


def test_multiclass_temperature_recovers_a_planted_temperature():
    rng = np.random.default_rng(5)
    logits = rng.normal(0.0, 2.0, (40_000, 5))
    cumulative = calibration.softmax(logits).cumsum(axis=1)
    labels = (cumulative > rng.random((logits.shape[0], 1))).argmax(axis=1)
    fitted = calibration.fit_temperature(logits * 3.0, labels, kind="multiclass")
    assert fitted == pytest.approx(3.0, rel=0.05)
    one_hot = np.eye(5)[labels]
    assert calibration.fit_temperature(logits * 3.0, one_hot, kind="multiclass") == pytest.approx(fitted)


def test_fitted_temperature_is_a_stationary_point_of_the_nll():
    """At the optimum, d NLL / d(1/T) = mean((sigmoid(z/T) - y) * z) = 0."""
    rng = np.random.default_rng(2)
    logits, labels = _calibrated_binary(rng, 5_000)
    observed = logits * 1.7 + rng.normal(0.0, 0.5, logits.size)
    temperature = calibration.fit_temperature(observed, labels)
    gradient = np.mean((calibration.sigmoid(observed / temperature) - labels) * observed)
    assert abs(gradient) < 1e-6
    nll = lambda t: log_loss(labels, calibration.sigmoid(observed / t))  # noqa: E731
    assert nll(temperature) <= min(nll(temperature * 0.98), nll(temperature * 1.02))


def test_temperature_scaling_halves_the_ece_of_overconfident_logits():
    """The acceptance demonstration: fit on one half, measure on the other."""
    rng = np.random.default_rng(2024)
    logits, labels = _calibrated_binary(rng, 20_000, spread=1.5)
    overconfident = logits * 3.0
    fit, held_out = slice(0, 10_000), slice(10_000, None)
    temperature = calibration.fit_temperature(overconfident[fit], labels[fit])
    before = calibration.sigmoid(overconfident[held_out])
    after = calibration.sigmoid(calibration.apply_temperature(overconfident[held_out], temperature))
    ece_before = calibration.expected_calibration_error(before, labels[held_out])
    ece_after = calibration.expected_calibration_error(after, labels[held_out])
    nll_before = calibration.negative_log_likelihood(before, labels[held_out])
    nll_after = calibration.negative_log_likelihood(after, labels[held_out])
    print(
        f"\nover-confident logits x3: T = {temperature:.3f}, ECE {ece_before:.4f} -> {ece_after:.4f}, "
        f"NLL {nll_before:.4f} -> {nll_after:.4f}"
    )
    assert ece_after <= 0.5 * ece_before
    assert nll_after < nll_before


def test_apply_temperature_divides_logits_per_output():
    logits = np.array([[2.0, -4.0], [1.0, 6.0]])
    np.testing.assert_allclose(calibration.apply_temperature(logits, [2.0, 4.0]), [[1.0, -1.0], [0.5, 1.5]])
    np.testing.assert_allclose(calibration.apply_temperature(logits, 2.0), logits / 2.0)
    with pytest.raises(ValueError, match="positive"):
        calibration.apply_temperature(logits, 0.0)
    with pytest.raises(ValueError, match="temperatures"):
        calibration.apply_temperature(logits, [1.0, 2.0, 3.0])


def test_probabilities_to_logits_inverts_the_sigmoid_and_clips():
    probs = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    logits = calibration.probabilities_to_logits(probs)
    assert np.all(np.isfinite(logits))
    np.testing.assert_allclose(calibration.sigmoid(logits), np.clip(probs, 1e-7, 1 - 1e-7), rtol=1e-9)


def test_ece_matches_a_bin_by_bin_computation():
    rng = np.random.default_rng(9)
    probs = rng.random(2_000)
    probs[:5] = [0.0, 1.0, 1 / 15, 0.5, 14 / 15]  # bin edges and ends
    # A calibration gap that changes sign, so that the binning matters.
    labels = (rng.random(2_000) < 0.5 + 0.45 * np.sin(6 * np.pi * probs)).astype(int)
    for n_bins in (1, 10, 15):
        assert calibration.expected_calibration_error(probs, labels, n_bins) == pytest.approx(
            _loop_ece(probs, labels, n_bins)
        )


def test_ece_closed_forms():
    labels = np.array([1, 0, 0, 0] * 25)
    assert calibration.expected_calibration_error(np.full(100, 0.25), labels) == pytest.approx(0.0)
    assert calibration.expected_calibration_error(np.full(100, 0.9), np.zeros(100)) == pytest.approx(0.9)
    # Multilabel pools every output as one binary forecast.
    probs = np.array([[0.9, 0.1], [0.9, 0.1]])
    assert calibration.expected_calibration_error(probs, np.array([[1, 1], [1, 1]]), kind="multilabel") == (
        pytest.approx(0.5 * 0.1 + 0.5 * 0.9)
    )


def test_multiclass_ece_uses_top_label_confidence():
    rng = np.random.default_rng(4)
    probs = calibration.softmax(rng.normal(0, 2, (1_000, 3)))
    labels = rng.integers(0, 3, 1_000)
    expected = _loop_ece(probs.max(axis=1), (probs.argmax(axis=1) == labels).astype(float), 15)
    assert calibration.expected_calibration_error(probs, labels, kind="multiclass") == pytest.approx(expected)


def test_nll_matches_sklearn_log_loss():
    rng = np.random.default_rng(8)
    probs = rng.random(500)
    labels = rng.integers(0, 2, 500)
    assert calibration.negative_log_likelihood(probs, labels) == pytest.approx(log_loss(labels, probs))
    multiclass = calibration.softmax(rng.normal(0, 1, (500, 4)))
    classes = rng.integers(0, 4, 500)
    assert calibration.negative_log_likelihood(multiclass, classes, kind="multiclass") == pytest.approx(
        log_loss(classes, multiclass, labels=[0, 1, 2, 3])
    )
    assert np.isfinite(calibration.negative_log_likelihood(np.array([0.0, 1.0]), np.array([1, 0])))


def test_reliability_diagram_writes_png(tmp_path):
    rng = np.random.default_rng(1)
    logits, labels = _calibrated_binary(rng, 2_000)
    before = calibration.sigmoid(logits * 3)
    after = calibration.sigmoid(logits)
    multilabel = rng.random((300, 2))
    multilabel_truth = (rng.random((300, 2)) < multilabel).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = [
            plots.reliability_diagram(before, labels, tmp_path / "binary.png", calibrated_probs=after),
            plots.reliability_diagram(
                multilabel, multilabel_truth, tmp_path / "multi.png", kind="multilabel", class_names=["a", "b"]
            ),
        ]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["binary.png", "multi.png"]


def test_invalid_inputs_are_rejected():
    with pytest.raises(ValueError, match="kind"):
        calibration.fit_temperature(np.zeros(3), np.zeros(3), kind="ordinal")
    with pytest.raises(ValueError, match="0 and 1"):
        calibration.fit_temperature(np.zeros(3), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        calibration.expected_calibration_error(np.array([1.5]), np.array([1]))
