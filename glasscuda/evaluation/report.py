"""The evaluation itself: predictions and truth in, an :class:`EvaluationReport` out."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import metrics
from .annotations import annotation_classes, load_annotations
from .calibrate import CalibratedScores, CalibrationSettings, calibrate
from .inputs import load_predictions
from .join import join
from .localisation import heatmap_localisation
from .scoring import (
    check_thresholds,
    class_summary,
    metrics_at_threshold,
    operating_points,
    single_class_block,
    stored_threshold_range,
    sweep,
)

PUBLIC_FIELDS = ("inputs", "join", "truth", "single_class_overall", "single_class", "thresholds", "metrics",
                 "sweep", "operating_points", "calibration", "heatmaps")


@dataclass
class EvaluationReport:
    """What an evaluation found; :meth:`to_dict` is its JSON form (``report.json``).

    Attributes
    ----------
    inputs, join, truth : dict
        The files read, the id join's counts and samples, positives and negatives per class.
    single_class_overall : bool
        Every class holds a single truth value in the matched set.
    single_class : dict
        Per class with a single truth value: why it has no F1, and its score distribution.
    thresholds, metrics, sweep, operating_points : dict
        The chosen thresholds, the metrics at them, the threshold sweep, the operating points.
    calibration, heatmaps : dict or None
        Temperature scaling and heatmap localisation, when asked for.
    truth_matrix, scores : numpy.ndarray [M, K]
        The matched images' truth and scores (for plots and tables).
    calibrated : CalibratedScores or None
        The measured scores before and after temperature scaling.
    files : list of str
        Files written by :func:`glasscuda.evaluation.write_outputs`.
    """

    inputs: dict
    join: dict
    truth: dict
    single_class_overall: bool
    single_class: dict
    thresholds: dict
    metrics: dict
    sweep: dict
    operating_points: dict
    truth_matrix: np.ndarray
    scores: np.ndarray
    calibration: dict | None = None
    heatmaps: dict | None = None
    calibrated: CalibratedScores | None = None
    files: list = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON-ready report (no arrays)."""
        result = {name: getattr(self, name) for name in PUBLIC_FIELDS}
        if self.files:
            result["files"] = list(self.files)
        return result


def evaluate_predictions(
    predictions: str | Path,
    annotations: str | Path,
    *,
    split: str = "test",
    id_column: str | None = None,
    score_columns: Sequence[str] | None = None,
    thresholds: Sequence[float] | None = None,
    min_recall: float | None = None,
    min_precision: float | None = None,
    calibrate_on: float | str | Path | None = None,
    calibration: CalibrationSettings | None = None,
    heatmap_peaks: str | Path | None = None,
    classes: Sequence[str] | None = None,
) -> EvaluationReport:
    """Evaluate a prediction CSV against annotations made apart from it.

    Parameters
    ----------
    predictions : path
        Prediction CSV (see :func:`glasscuda.evaluation.load_predictions`).
    annotations : path
        Dataset root or annotation CSV (see :func:`glasscuda.evaluation.load_annotations`).
    split : str
        Split folder of a dataset root.
    id_column, score_columns
        Columns of the CSVs (default: ``id``, and the formats ``predict`` writes).
    thresholds : sequence of float, optional
        Decision thresholds: one for every class or one per score column (default 0.5).
    min_recall, min_precision : float, optional
        Report the operating point that reaches this recall or precision.
    calibrate_on : float or path, optional
        Fit temperature scaling on this fraction of the matched images, or on
        a separate prediction CSV.
    calibration : CalibrationSettings, optional
        ECE bins, split seed and how to read a calibration CSV.
    heatmap_peaks : path, optional
        ``peaks.csv`` of ``predict --heatmaps``: score the peaks against the true boxes.
    classes : sequence of str, optional
        The defect classes in class-id order (default: a dataset root's
        classes.txt, else the course's three). The score columns are matched
        to them by name.

    Raises
    ------
    EvaluationError
        An input that cannot be used, with a message naming it.
    """
    names = annotation_classes(annotations, classes)
    predicted = load_predictions(predictions, id_column, score_columns, names)
    truth_source = load_annotations(annotations, split, id_column, names)
    joined = join(predicted, truth_source)
    classes = predicted.classes
    cuts = check_thresholds(thresholds, len(classes))
    grid = metrics.DEFAULT_THRESHOLD_GRID
    shown_thresholds = np.unique(np.concatenate([grid, cuts]))

    counts = class_summary(joined.truth, classes)
    single = {
        name: single_class_block(name, joined.scores[:, k], counts[name]["positives"], shown_thresholds)
        for k, name in enumerate(classes)
        if counts[name]["positives"] in (0, len(joined.ids))
    }
    report = EvaluationReport(
        inputs={
            "predictions": predicted.path,
            "annotations": truth_source.description,
            "task": predicted.task,
            "id_column": predicted.id_column,
            "score_columns": predicted.score_columns,
            "classes": classes,
            "stored_label_thresholds": stored_threshold_range(predicted),
        },
        join=joined.summary(),
        truth=counts,
        single_class_overall=len(single) == len(classes),
        single_class=single,
        thresholds={name: float(t) for name, t in zip(classes, cuts)},
        metrics=metrics_at_threshold(predicted.task, joined.truth, joined.scores, classes, cuts, single),
        sweep=sweep(joined.truth, joined.scores, classes, grid, single),
        operating_points=operating_points(joined.truth, joined.scores, classes, single, min_recall, min_precision),
        truth_matrix=joined.truth,
        scores=joined.scores,
    )
    if calibrate_on is not None:
        source = calibrate_on if isinstance(calibrate_on, float) else Path(calibrate_on)
        report.calibration, report.calibrated = calibrate(
            source, calibration or CalibrationSettings(), predicted, truth_source, joined, id_column, score_columns)
    if heatmap_peaks is not None:
        report.heatmaps = heatmap_localisation(heatmap_peaks, truth_source)
    return report
