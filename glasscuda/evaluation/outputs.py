"""The evaluation's files: report.json, threshold_table.csv and the plots."""
from __future__ import annotations

from pathlib import Path

from .. import metrics, plots
from ..reports import write_csv_atomic, write_json_atomic
from .report import EvaluationReport

THRESHOLD_TABLE_COLUMNS = ["class", "threshold", "precision", "recall", "f1", "tp", "fp", "fn", "tn", "fraction_above"]


def _threshold_table_rows(report: EvaluationReport) -> list[dict]:
    """Rows of ``threshold_table.csv``: the sweep of every class.

    A class with a single truth value has only ``fraction_above``; its
    precision, recall and F1 cells are empty.
    """
    rows = []
    for k, name in enumerate(report.inputs["classes"]):
        if name in report.sweep:
            rows += [dict(row, **{"class": name}) for row in report.sweep[name]["table"]]
        else:
            for row in metrics.fraction_above(report.scores[:, k], metrics.DEFAULT_THRESHOLD_GRID):
                rows.append({"class": name, "threshold": row["threshold"], "fraction_above": row["fraction_above"]})
    return rows


def write_outputs(report: EvaluationReport, out_dir: str | Path) -> list[str]:
    """Write ``report.json``, ``threshold_table.csv`` and the plots.

    Every file is written atomically.  ``pr_curve.png`` needs at least one
    class with both truth values; ``confusion_matrices.png`` is written for
    multilabel predictions; ``reliability.png`` when calibrating.

    Returns
    -------
    list of str
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth, scores = report.truth_matrix, report.scores
    classes = report.inputs["classes"]
    cuts = [report.thresholds[name] for name in classes]
    written = []

    written.append(write_csv_atomic(out / "threshold_table.csv", _threshold_table_rows(report), THRESHOLD_TABLE_COLUMNS))
    if report.sweep:
        written.append(plots.plot_pr_curves(truth, scores, classes, out / "pr_curve.png", marked_thresholds=cuts))
    written.append(
        plots.plot_score_histograms(truth, scores, classes, out / "score_histogram.png", thresholds=cuts)
    )
    if report.inputs["task"] == "multilabel":
        written.append(plots.plot_confusion_matrices(report.metrics, out / "confusion_matrices.png"))
    if report.calibration is not None:
        before, after, labels = report.calibrated.before, report.calibrated.after, report.calibrated.truth
        kind = "binary" if len(classes) == 1 else "multilabel"
        written.append(
            plots.reliability_diagram(
                before[:, 0] if kind == "binary" else before,
                labels[:, 0] if kind == "binary" else labels,
                out / "reliability.png",
                title="Reliability before and after temperature scaling",
                n_bins=report.calibration["n_bins"],
                kind=kind,
                calibrated_probs=after[:, 0] if kind == "binary" else after,
                class_names=classes if kind == "multilabel" else None,
            )
        )
    json_path = out / "report.json"
    report.files = [str(path) for path in written] + [str(json_path)]
    write_json_atomic(json_path, report.to_dict())
    return report.files
