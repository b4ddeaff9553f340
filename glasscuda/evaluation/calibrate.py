"""Temperature scaling of the evaluated scores, with ECE and NLL before and after."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import calibration
from ..data.dataset import stratified_split
from .annotations import Annotations, load_annotations
from .inputs import SAMPLE_SIZE, EvaluationError, Predictions, load_predictions
from .join import Join, join


@dataclass
class CalibrationSettings:
    """How the temperatures are fitted.

    Attributes
    ----------
    ece_bins : int
        Equal-width probability bins of the ECE.
    seed : int
        Seed of the stratified split when fitting on a fraction.
    split : str
        Split of a dataset root holding the truth of a separate calibration CSV.
    """

    ece_bins: int = 15
    seed: int = 0
    split: str = "train"


@dataclass
class CalibratedScores:
    """The measured images' scores [M, K] before and after scaling, and their truth."""

    before: np.ndarray
    after: np.ndarray
    truth: np.ndarray


def _split(truth: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows to fit on (``fraction`` of them, stratified by truth pattern) and rows to measure on."""
    try:
        rest, fit = stratified_split(truth, val_fraction=fraction, seed=seed)
    except ValueError:
        return np.empty(0, np.int64), np.arange(truth.shape[0])
    return fit, rest


def _fit_set(source, settings: CalibrationSettings, predictions, annotations, joined, id_column, score_columns):
    """Fit and evaluation sets for temperature scaling (scores, truth of each), with a description."""
    if isinstance(source, float):
        fit_rows, eval_rows = _split(joined.truth, source, settings.seed)
        if fit_rows.size < 2 or eval_rows.size < 1:
            raise EvaluationError(
                f"--calibrate-on {source:g}: {joined.truth.shape[0]} matched images leave "
                f"{fit_rows.size} for fitting and {eval_rows.size} for evaluation; need at "
                "least 2 and 1"
            )
        info = {
            "source": "split",
            "fraction": source,
            "seed": settings.seed,
            "fit_n": int(fit_rows.size),
            "eval_n": int(eval_rows.size),
            "eval_set": "the matched images not used for fitting",
        }
        return (
            joined.scores[fit_rows],
            joined.truth[fit_rows],
            joined.scores[eval_rows],
            joined.truth[eval_rows],
            info,
        )

    fit_predictions = load_predictions(source, id_column, score_columns, annotations.classes)
    if fit_predictions.classes != predictions.classes:
        raise EvaluationError(
            f"{source}: predicts {', '.join(fit_predictions.classes)} but "
            f"{predictions.path} predicts {', '.join(predictions.classes)}"
        )
    fit_annotations = annotations
    if Path(annotations.path).is_dir():
        fit_annotations = load_annotations(annotations.path, settings.split, id_column, annotations.classes)
    fit_join = join(fit_predictions, fit_annotations)
    overlap = sorted(set(fit_join.ids) & set(joined.ids))
    info = {
        "source": str(source),
        "annotations": fit_annotations.description,
        "fit_n": len(fit_join.ids),
        "eval_n": len(joined.ids),
        "eval_set": "all matched images of the evaluated predictions",
        "overlap_with_evaluated": len(overlap),
    }
    if overlap:
        info["overlap_note"] = (
            f"{len(overlap)} id(s) are in both the calibration file and the evaluated "
            f"predictions (e.g. {', '.join(overlap[:SAMPLE_SIZE])}); the figures after "
            "scaling are optimistic for them"
        )
    return fit_join.scores, fit_join.truth, joined.scores, joined.truth, info


def calibrate(source: float | Path, settings: CalibrationSettings, predictions: Predictions,
              annotations: Annotations, joined: Join, id_column: str | None = None,
              score_columns: Sequence[str] | None = None) -> tuple[dict, CalibratedScores]:
    """Fit one temperature per output and measure ECE and NLL before and after.

    ``source`` is the fraction of the matched images to fit on (stratified by
    their truth; the rest measures the fit) or a separate prediction CSV
    (measured on every matched image), read with ``id_column`` and
    ``score_columns`` like the evaluated one.
    """
    classes = predictions.classes
    fit_scores, fit_truth, eval_scores, eval_truth, info = _fit_set(
        source, settings, predictions, annotations, joined, id_column, score_columns)
    fit_logits = calibration.probabilities_to_logits(fit_scores)
    eval_logits = calibration.probabilities_to_logits(eval_scores)
    temperatures = np.ones(len(classes))
    notes = []
    for k, name in enumerate(classes):
        positives = int(fit_truth[:, k].sum())
        if positives in (0, fit_truth.shape[0]):
            notes.append(
                f"'{name}': the calibration set holds a single truth value, so no "
                "temperature can be fitted; it is left at 1"
            )
            continue
        temperatures[k] = calibration.fit_temperature(fit_logits[:, k], fit_truth[:, k], kind="binary")
    calibrated = calibration.sigmoid(calibration.apply_temperature(eval_logits, temperatures))
    bins = settings.ece_bins
    per_class = {}
    for k, name in enumerate(classes):
        per_class[name] = {
            "temperature": float(temperatures[k]),
            "ece_before": calibration.expected_calibration_error(eval_scores[:, k], eval_truth[:, k], bins),
            "ece_after": calibration.expected_calibration_error(calibrated[:, k], eval_truth[:, k], bins),
            "nll_before": calibration.negative_log_likelihood(eval_scores[:, k], eval_truth[:, k]),
            "nll_after": calibration.negative_log_likelihood(calibrated[:, k], eval_truth[:, k]),
        }
    kind = "binary" if len(classes) == 1 else "multilabel"
    result = dict(info)
    result.update(
        {
            "n_bins": bins,
            "ece_definition": (
                "sum over equal-width probability bins of (bin count / total) * "
                "|observed frequency - mean predicted probability|; every output of "
                "every image is one binary forecast, pooled"
            ),
            "temperatures": {name: float(t) for name, t in zip(classes, temperatures)},
            "ece_before": calibration.expected_calibration_error(eval_scores, eval_truth, bins, kind),
            "ece_after": calibration.expected_calibration_error(calibrated, eval_truth, bins, kind),
            "nll_before": calibration.negative_log_likelihood(eval_scores, eval_truth, kind),
            "nll_after": calibration.negative_log_likelihood(calibrated, eval_truth, kind),
            "per_class": per_class,
            "notes": notes,
        }
    )
    return result, CalibratedScores(eval_scores, calibrated, eval_truth)
