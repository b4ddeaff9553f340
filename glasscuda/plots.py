"""Every figure glasscuda draws: training curves, precision-recall curves, score histograms,
confusion matrices and reliability diagrams.

Figures are built with Matplotlib's object API on the Agg renderer, outside
pyplot's global state (so drawing never changes the caller's backend), and
written atomically as PNG.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from sklearn.metrics import precision_recall_curve

from .calibration import check_kind, expected_calibration_error, reliability_bins
from .metrics import precision_recall_f1
from .metrics.checks import _as_binary_matrix, _as_score_matrix
from .reports import save_figure_atomic


def _new_figure(width: float, height: float):
    """A Matplotlib figure bound to the Agg renderer, outside pyplot's state."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _as_columns(y_true: Any, y_score: Any) -> tuple[np.ndarray, np.ndarray]:
    """Return truth and scores as ``[N, K]`` arrays (1-D input becomes K = 1)."""
    truth = np.asarray(y_true)
    scores = np.asarray(y_score, dtype=np.float64)
    if truth.ndim == 1:
        truth = truth[:, None]
    if scores.ndim == 1:
        scores = scores[:, None]
    truth = _as_binary_matrix(truth, "y_true")
    return truth, _as_score_matrix(scores, truth.shape)


def plot_pr_curves(
    y_true: Any,
    y_score: Any,
    class_names: Sequence[str],
    path: Any,
    marked_thresholds: Sequence[float] | None = None,
    title: str = "Precision-recall curves",
):
    """Draw one precision-recall curve per class and save it as PNG.

    Parameters
    ----------
    y_true : array-like of shape (N,) or (N, K)
        True labels, 0 or 1.
    y_score : array-like of shape (N,) or (N, K)
        Scores.
    class_names : sequence of str
        ``K`` names for the legend.
    path : str or path-like
        PNG destination, written atomically.
    marked_thresholds : sequence of float, optional
        One threshold per class to mark on its curve.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
        ``path``.  Classes without a positive example have no curve; the
        legend says so.
    """
    truth, scores = _as_columns(y_true, y_score)
    figure = _new_figure(6.0, 5.0)
    axes = figure.add_subplot(1, 1, 1)
    for k, name in enumerate(class_names):
        if not truth[:, k].any():
            axes.plot([], [], linestyle="none", label=f"{name}: no positive example, no curve")
            continue
        precision, recall, _ = precision_recall_curve(truth[:, k], scores[:, k])
        line = axes.step(recall, precision, where="post", label=f"{name} (prevalence {truth[:, k].mean():.3f})")[0]
        if marked_thresholds is not None:
            metrics = precision_recall_f1(truth[:, k], scores[:, k] >= marked_thresholds[k])
            axes.plot(
                [metrics["recall"]],
                [metrics["precision"]],
                marker="o",
                color=line.get_color(),
                label=f"{name} at threshold {marked_thresholds[k]:.3g}",
            )
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0.0, 1.02)
    axes.set_ylim(0.0, 1.02)
    axes.grid(alpha=0.3)
    axes.set_title(title)
    axes.legend(fontsize="small", loc="lower left")
    return save_figure_atomic(figure, path)


def plot_confusion_matrices(report: dict, path: Any, title: str = "Confusion matrices"):
    """Draw the per-class 2×2 confusion matrices of a report and save as PNG.

    Parameters
    ----------
    report : dict
        A :func:`multilabel_report` result (its ``confusion_matrices``).
    path : str or path-like
        PNG destination, written atomically.
    title : str
        Figure title.

    Returns
    -------
    pathlib.Path
    """
    matrices = report["confusion_matrices"]
    count = len(matrices)
    figure = _new_figure(3.0 * count, 3.2)
    for index, (name, matrix) in enumerate(matrices.items()):
        counts = np.asarray(matrix)
        axes = figure.add_subplot(1, count, index + 1)
        axes.imshow(counts, cmap="Blues", vmin=0)
        peak = counts.max() if counts.max() > 0 else 1
        for row in range(2):
            for column in range(2):
                value = counts[row, column]
                axes.text(
                    column,
                    row,
                    str(value),
                    ha="center",
                    va="center",
                    color="white" if value > peak / 2 else "black",
                )
        axes.set_xticks([0, 1], ["pred 0", "pred 1"])
        axes.set_yticks([0, 1], ["true 0", "true 1"])
        axes.set_title(name)
    figure.suptitle(title)
    return save_figure_atomic(figure, path)


def plot_score_histograms(y_true: Any, y_score: Any, class_names: Sequence[str], path: Any,
                          thresholds: Sequence[float] | None = None, title: str = "Score distributions"):
    """Histogram of scores per class, split by the true label, saved as PNG.

    Each true label's histogram is normalised to sum to 1, so a rare class is
    as visible as a common one; the legend gives the counts. The arguments
    are those of :func:`plot_pr_curves`; ``class_names`` title the panels and
    ``thresholds``, one per class, are drawn as vertical lines.

    Returns
    -------
    pathlib.Path
    """
    truth, scores = _as_columns(y_true, y_score)
    count = truth.shape[1]
    figure = _new_figure(3.6 * count, 3.2)
    low = min(0.0, float(scores.min()))
    high = max(1.0, float(scores.max()))
    bins = np.linspace(low, high, 41)
    for k, name in enumerate(class_names):
        axes = figure.add_subplot(1, count, k + 1)
        for label, colour in ((0, "tab:blue"), (1, "tab:red")):
            selected = scores[truth[:, k] == label, k]
            if selected.size:
                axes.hist(
                    selected,
                    bins=bins,
                    weights=np.full(selected.size, 1.0 / selected.size),
                    histtype="stepfilled",
                    alpha=0.5,
                    color=colour,
                    label=f"true {label} ({selected.size})",
                )
        if thresholds is not None:
            axes.axvline(thresholds[k], color="black", linestyle="--", linewidth=1)
        axes.set_title(name)
        axes.set_xlabel("score")
        axes.set_ylabel("fraction of the true class")
        axes.legend(fontsize="small", loc="upper center")
    figure.suptitle(title)
    return save_figure_atomic(figure, path)


def _reliability_panel(top, bottom, curves, n_bins: int, title: str) -> None:
    """Draw one reliability panel (top) and its bin counts (bottom)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    centres = (edges[:-1] + edges[1:]) / 2.0
    width = 1.0 / n_bins
    top.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    offsets = np.linspace(-0.2, 0.2, len(curves)) * width if len(curves) > 1 else [0.0]
    for offset, (label, bins, colour) in zip(offsets, curves):
        predicted = np.asarray(bins["mean_predicted"], dtype=np.float64)
        observed = np.asarray(bins["observed_frequency"], dtype=np.float64)
        occupied = ~np.isnan(predicted)
        top.plot(predicted[occupied], observed[occupied], marker="o", color=colour, label=label)
        bottom.bar(
            centres + offset,
            bins["count"],
            width=width / max(len(curves), 1),
            color=colour,
            alpha=0.7,
            label=label,
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("observed frequency")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(fontsize="small", loc="upper left")
    bottom.set_xlim(0, 1)
    bottom.set_xlabel("predicted probability")
    bottom.set_ylabel("count")
    bottom.set_yscale("symlog")


def reliability_diagram(
    probs: Any,
    labels: Any,
    path: Any,
    title: str = "Reliability diagram",
    n_bins: int = 15,
    kind: str = "binary",
    calibrated_probs: Any = None,
    class_names: Sequence[str] | None = None,
):
    """Draw a reliability diagram and save it as PNG.

    The top row plots the observed frequency against the mean forecast per
    bin (the diagonal is perfect calibration), the bottom row the number of
    forecasts per bin.  With ``calibrated_probs`` the calibrated forecasts are
    drawn beside the original ones.  For multilabel input with
    ``class_names``, each output gets its own column of panels.

    Parameters
    ----------
    probs, labels : array-like
        As for :func:`expected_calibration_error`.
    path : str or path-like
        PNG destination, written atomically.
    title : str
        Figure title.
    n_bins : int
        Number of equal-width bins.
    kind : {"binary", "multilabel", "multiclass"}
    calibrated_probs : array-like, optional
        Probabilities after calibration, same shape as ``probs``.
    class_names : sequence of str, optional
        One name per output for multilabel input.

    Returns
    -------
    pathlib.Path
    """
    check_kind(kind)
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    after = None if calibrated_probs is None else np.asarray(calibrated_probs, dtype=np.float64)
    if kind == "multilabel" and class_names is not None and p.ndim == 2:
        if len(class_names) != p.shape[1]:
            raise ValueError(f"{len(class_names)} class names for {p.shape[1]} outputs")
        panels = [
            (str(name), p[:, k], y[:, k], None if after is None else after[:, k], "binary")
            for k, name in enumerate(class_names)
        ]
    else:
        panels = [("all outputs" if kind == "multilabel" else "", p, y, after, kind)]

    figure = _new_figure(4.2 * len(panels), 6.0)
    grid = figure.add_gridspec(2, len(panels), height_ratios=[3, 1])
    for column, (name, before, truth, calibrated, panel_kind) in enumerate(panels):
        curves = [
            (
                f"before (ECE {expected_calibration_error(before, truth, n_bins, panel_kind):.4f})",
                reliability_bins(before, truth, n_bins, panel_kind),
                "tab:red",
            )
        ]
        if calibrated is not None:
            curves.append(
                (
                    f"after (ECE {expected_calibration_error(calibrated, truth, n_bins, panel_kind):.4f})",
                    reliability_bins(calibrated, truth, n_bins, panel_kind),
                    "tab:blue",
                )
            )
        top = figure.add_subplot(grid[0, column])
        bottom = figure.add_subplot(grid[1, column], sharex=top)
        _reliability_panel(top, bottom, curves, n_bins, name)
    figure.suptitle(title)
    return save_figure_atomic(figure, path)


def plot_training_curves(history: list[dict], path, title: str):
    """Three panels: training loss; training P/R/F1; validation P/R/F1 per epoch."""
    epochs = [h["epoch"] for h in history]
    fig = _new_figure(14, 4)
    axes = fig.subplots(1, 3)
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o")
    axes[0].set_title("training loss")
    for ax, prefix, name in ((axes[1], "train", "training"), (axes[2], "val", "validation")):
        for metric in ("precision", "recall", "f1"):
            values = [h.get(f"{prefix}_{metric}") for h in history]
            ax.plot(epochs, [np.nan if v is None else v for v in values], marker="o", label=metric)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{name} precision / recall / F1")
        ax.legend(loc="lower right")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure_atomic(fig, path)


def plot_accuracy_curves(history: list[dict], path, title: str):
    """Two panels: training loss; training and validation accuracy per epoch."""
    epochs = [h["epoch"] for h in history]
    fig = _new_figure(10, 4)
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [h["train_loss"] for h in history], marker="o")
    loss_ax.set_title("training loss")
    for key, label in (("train_accuracy", "training"), ("val_accuracy", "validation")):
        acc_ax.plot(epochs, [h[key] for h in history], marker="o", label=label)
    acc_ax.set_ylim(-0.02, 1.02)
    acc_ax.set_title("accuracy")
    acc_ax.legend(loc="lower right")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return save_figure_atomic(fig, path)
