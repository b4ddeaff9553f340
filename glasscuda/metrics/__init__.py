"""Classification metrics and decision-threshold search.

Conventions used throughout this package:

* Labels are 0/1 (booleans are accepted); scores are real numbers, usually
  probabilities of the positive class.
* An example is predicted positive when its score is **greater than or equal
  to** the threshold, the rule of :func:`sklearn.metrics.precision_recall_curve`.
* When there is no positive example, recall and F1 have nothing to count.
  They are then ``nan`` and the result carries an ``undefined`` reason, so that
  nobody reads a ``0.0`` as a measurement.  When there are positives but
  nothing is predicted positive, precision is ``0.0`` (the model found none of
  them), and so are recall and F1.
* Scikit-learn's ``UndefinedMetricWarning`` is never shown: the situations it
  warns about are explained in the returned values instead.

Their plots are drawn by :mod:`glasscuda.plots`.
"""
from .binary import (
    OperatingPoint,
    ThresholdSearch,
    auc_pr,
    operating_point,
    pr_curve,
    precision_recall_f1,
    search_threshold,
)
from .checks import DEFAULT_THRESHOLD_GRID, NO_POSITIVES
from .multilabel import fraction_above, multilabel_report, score_distribution, search_thresholds_per_class

__all__ = [
    "auc_pr",
    "DEFAULT_THRESHOLD_GRID",
    "NO_POSITIVES",
    "ThresholdSearch",
    "OperatingPoint",
    "precision_recall_f1",
    "search_threshold",
    "pr_curve",
    "operating_point",
    "multilabel_report",
    "search_thresholds_per_class",
    "score_distribution",
    "fraction_above",
]
