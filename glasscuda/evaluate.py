"""``python -m glasscuda.evaluate --predictions preds.csv --annotations ROOT``: the command line.

The evaluation lives in :mod:`glasscuda.evaluation`; this module turns the
command line into a call of :func:`glasscuda.evaluation.evaluate_predictions`,
prints the Markdown report and, with ``--out DIR``, writes its files.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Sequence

from sklearn.exceptions import UndefinedMetricWarning

from glasscuda.evaluation import (  # noqa: F401  (load_*, join, normalise_id: the steps, for scripts)
    ID_NORMALISATION,
    CalibrationSettings,
    EvaluationError,
    EvaluationReport,
    evaluate_predictions,
    join,
    load_annotations,
    load_predictions,
    normalise_id,
    render_markdown,
    write_outputs,
)


def _split_columns(text: str | None) -> list[str] | None:
    """``--score-columns a,b,c`` as a list."""
    if not text:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _probability(text: str) -> float:
    """argparse type: a number in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} must lie in (0, 1]")
    return value


DESCRIPTION = f"""\
Evaluate a prediction file against annotations that were made apart from it:
join them on the image id, report metrics at a threshold, sweep thresholds per
class, find operating points, and optionally fit temperature scaling.

Inputs
  --predictions: the CSV written by `python -m glasscuda.predict`
    (binary: id,probability,label; multilabel:
    id,p_no_defect,p_<class>...,labels, one column per defect class), or any
    CSV with an id column (--id-column) and probability columns
    (--score-columns).
  --annotations: a dataset root (ROOT/SPLIT/img/*.png, ROOT/SPLIT/txt/<stem>.txt,
    one defect per txt line, first token the class id; no txt file means no
    defect), or a CSV id,labels with labels ';'-joined class names or ids
    (empty means no defect).
  Classes: the annotations name them, and the score columns are matched to
    those names: a dataset root's ROOT/classes.txt (line i names class id i),
    or --classes; without either, the course's 0 chipped_edge, 1 scratch,
    2 stain.
  Binary scores are compared with "any defect"; multilabel scores with
  no_defect and each defect class.

Id matching
{textwrap.fill(ID_NORMALISATION[0].upper() + ID_NORMALISATION[1:] + ".", 78, initial_indent="  ", subsequent_indent="  ")}
  Ids found on one side only are counted and sampled in the report; duplicate
  ids (after normalisation) are an error that names them.

A single class
  When the matched images hold one truth value only (say, no defect at all),
  precision, recall and F1 are undefined or meaningless. The report says so,
  prints no F1, and shows what still means something: the score distribution
  and the fraction of images at or above each threshold (the false-alarm rate,
  or the detection rate).

Output
  A Markdown report on standard output. With --out DIR: report.json,
  threshold_table.csv, pr_curve.png, score_histogram.png,
  confusion_matrices.png (multilabel) and reliability.png (with
  --calibrate-on), each written atomically.
  Exit status 0 on success, 2 on an input error (message on standard error).
"""


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``python -m glasscuda.evaluate``."""
    parser = argparse.ArgumentParser(
        prog="python -m glasscuda.evaluate",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--predictions", required=True, metavar="CSV", help="prediction CSV")
    inputs.add_argument(
        "--annotations", required=True, metavar="ROOT_OR_CSV", help="dataset root folder or annotation CSV (id,labels)"
    )
    inputs.add_argument(
        "--classes",
        default=None,
        metavar="A,B,...",
        help="the defect classes in class-id order, for an annotation CSV or instead of a dataset "
        "root's classes.txt (default: ROOT/classes.txt, else chipped_edge,scratch,stain)",
    )
    inputs.add_argument("--split", default="test", help="split folder under a dataset root (default: test)")
    inputs.add_argument("--id-column", default=None, metavar="NAME", help="id column of the CSVs (default: id)")
    inputs.add_argument(
        "--score-columns",
        default=None,
        metavar="A,B,C",
        help="probability columns (default: detect the formats predict writes); several must be "
        "named after the classes, e.g. p_scratch or scratch; a single column predicts the class it "
        "is named after, or else 'any defect'",
    )
    decisions = parser.add_argument_group("decisions")
    decisions.add_argument(
        "--threshold",
        default=None,
        metavar="T[,T...]",
        help="decision threshold for the metrics table, one for all classes or one per score column "
        "(default: 0.5; the threshold behind a file's label column is not known)",
    )
    decisions.add_argument("--min-recall", type=_probability, default=None, metavar="R", help="report the highest threshold with recall >= R")
    decisions.add_argument(
        "--min-precision", type=_probability, default=None, metavar="P", help="report the lowest threshold with precision >= P"
    )
    calibrating = parser.add_argument_group("calibration")
    calibrating.add_argument(
        "--calibrate-on",
        default=None,
        metavar="FRACTION_OR_CSV",
        help="fit temperature scaling on this fraction of the matched images (stratified, the rest "
        "measures it) or on a separate prediction CSV, measured on all matched images",
    )
    calibrating.add_argument(
        "--calibration-split",
        default="train",
        metavar="SPLIT",
        help="split of a dataset root holding the truth for a --calibrate-on CSV (default: train)",
    )
    calibrating.add_argument("--ece-bins", type=int, default=15, metavar="N", help="equal-width bins for ECE (default: 15)")
    calibrating.add_argument("--seed", type=int, default=0, help="seed of the calibration split (default: 0)")
    parser.add_argument(
        "--heatmap-peaks",
        default=None,
        metavar="CSV",
        help="the peaks.csv of predict --heatmaps: report how often each heatmap's peak falls inside "
        "a true box of its class (needs a dataset root as --annotations)",
    )
    parser.add_argument("--out", default=None, metavar="DIR", help="also write report.json, threshold_table.csv and PNG plots here")
    return parser


def _parse_thresholds(text: str | None) -> list[float] | None:
    """``--threshold``: one value for every class, or a comma-separated value per class."""
    if text is None:
        return None
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise EvaluationError(f"--threshold: {text!r} is not a number or a comma-separated list") from None


def _parse_calibration_source(text: str | None) -> float | Path | None:
    """``--calibrate-on``: a fraction in (0, 1) or a path to a prediction CSV."""
    if text is None:
        return None
    try:
        fraction = float(text)
    except ValueError:
        return Path(text)
    if not 0.0 < fraction < 1.0:
        raise EvaluationError(f"--calibrate-on: fraction {text!r} must lie strictly between 0 and 1")
    return fraction


def run(args: argparse.Namespace) -> EvaluationReport:
    """The evaluation described by parsed command-line arguments."""
    return evaluate_predictions(
        args.predictions,
        args.annotations,
        split=args.split,
        id_column=args.id_column,
        score_columns=_split_columns(args.score_columns),
        thresholds=_parse_thresholds(args.threshold),
        min_recall=args.min_recall,
        min_precision=args.min_precision,
        calibrate_on=_parse_calibration_source(args.calibrate_on),
        calibration=CalibrationSettings(ece_bins=args.ece_bins, seed=args.seed, split=args.calibration_split),
        heatmap_peaks=args.heatmap_peaks,
        classes=args.classes.split(",") if args.classes is not None else None,
    )


def evaluate(args: argparse.Namespace) -> dict:
    """The JSON form of :func:`run`'s report."""
    return run(args).to_dict()


def _error(message: str) -> int:
    """Print an input error for the user and return the exit status 2."""
    print(f"glasscuda.evaluate: error: {message}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 on a usage or input error.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return int(exit_request.code or 0)
    if args.ece_bins < 1:
        return _error("--ece-bins must be at least 1")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UndefinedMetricWarning)
            report = run(args)
            if args.out is not None:
                write_outputs(report, args.out)
    except EvaluationError as error:
        return _error(str(error))
    except OSError as error:
        name = error.filename or ""
        return _error(f"{name}: {error.strerror or error}" if name else str(error))
    sys.stdout.write(render_markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
