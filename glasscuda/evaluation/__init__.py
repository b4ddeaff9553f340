"""Evaluate a prediction file against annotations that were made apart from it.

The steps, each usable alone: :func:`load_predictions` and
:func:`load_annotations` read the inputs, :func:`join` lines them up on their
normalised ids, :func:`evaluate_predictions` computes an
:class:`EvaluationReport` (metrics at a threshold, threshold sweeps, operating
points, and on request temperature scaling and heatmap localisation),
:func:`render_markdown` and :func:`write_outputs` present it.
``python -m glasscuda.evaluate`` is the command line over them.
"""
from .annotations import Annotations, load_annotations, read_defect_file, truth_matrix
from .calibrate import CalibratedScores, CalibrationSettings
from .inputs import ID_NORMALISATION, EvaluationError, Predictions, load_predictions, normalise_id
from .join import Join, join
from .outputs import write_outputs
from .render import render_markdown
from .report import EvaluationReport, evaluate_predictions

__all__ = [
    "ID_NORMALISATION",
    "Annotations",
    "CalibratedScores",
    "CalibrationSettings",
    "EvaluationError",
    "EvaluationReport",
    "Join",
    "Predictions",
    "evaluate_predictions",
    "join",
    "load_annotations",
    "load_predictions",
    "normalise_id",
    "read_defect_file",
    "render_markdown",
    "truth_matrix",
    "write_outputs",
]
