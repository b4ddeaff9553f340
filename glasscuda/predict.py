"""python -m glasscuda.predict — score images with a trained glasscuda checkpoint.

Writes one CSV row per image. Binary checkpoints give `id,probability,label`
(label 1 = defective, at the threshold stored in the checkpoint). Multi-label
checkpoints give `id,p_<class>...,labels` (the `;`-joined predicted classes,
by the rule in `python -m glasscuda.train --help`). CIFAR-10 checkpoints give
`id,p_<class>...,label` (softmax probabilities and the most probable class).
The id is the file's stem. Unreadable images are reported by name and left
out (or stop the run with --strict).

With --heatmaps DIR (multi-label checkpoints), DIR receives an overlay PNG
<id>_<class>.png for each image and predicted defect, showing the class
activation map on the glass, and peaks.csv with each map's hottest point in
normalised image coordinates (score it with glasscuda.evaluate --heatmap-peaks).
The maps are computed on a 4-pixel grid (16 passes of the backbone over each
image with a predicted defect), so a peak can tell a thin chip on the panel's
edge from the glass beside it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .backend import get_backend
from .checkpoint import CheckpointError, default_tta, load_model
from .data.dataset import DatasetError, load_images
from .data.sampling import Normalizer
from .glass import IMAGE_PATTERNS, NO_DEFECT, decide, list_images
from .cli import (check_writable_file, plain_warnings, positive_float, positive_int, probabilities,
                  remove_empty_folders)
from .heatmaps import write_heatmaps
from .numerics import sigmoid, softmax
from .reports import write_csv_atomic
from .training import predict_logits


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m glasscuda.predict", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", metavar="FILE",
                        help="a best.npz / last.npz written by glasscuda.train")
    source.add_argument("--onnx", metavar="FILE",
                        help="score with onnxruntime alone, with a model written by python -m glasscuda.export "
                             "(same CSV columns; standardisation, TTA and temperature are inside the model)")
    parser.add_argument("--input", required=True, nargs="+", metavar="DIR|FILE",
                        help=f"image files and/or folders (folders: every {IMAGE_PATTERNS} inside)")
    parser.add_argument("--output", default="predictions.csv", metavar="CSV",
                        help="where to write the predictions (default predictions.csv)")
    parser.add_argument("--threshold", type=probabilities, metavar="T[,T...]",
                        help="decision threshold(s) in [0, 1] (default: the checkpoint's): one for a binary "
                             "checkpoint; for a multi-label one, one for every class or one per class in the "
                             "checkpoint's order (no_defect first, as in the CSV columns)")
    parser.add_argument("--temperature", type=positive_float,
                        help="divide logits by this temperature (> 0) before the sigmoid (softmax for cifar10) "
                             "(default: the checkpoint's, else 1)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="average over the image and its flips (default: as the checkpoint was validated; "
                             "multi-label checkpoints without that record: on)")
    parser.add_argument("--heatmaps", metavar="DIR",
                        help="multi-label checkpoints: write a heatmap overlay per image and predicted "
                             "defect, and peaks.csv, into DIR")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="images per batch (default 64)")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    parser.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def collect_images(inputs) -> list[Path]:
    """The image files named by ``inputs``, each once (a file given twice, or also inside a given folder, is scored once)."""
    paths, seen = [], set()
    for item in map(Path, inputs):
        if item.is_dir():
            found = list_images(item)[0]
            if not found:
                raise DatasetError(f"{item}: no images ({IMAGE_PATTERNS}) in this folder")
        elif item.is_file():
            found = [item]
        else:
            raise DatasetError(f"{item}: no such file or folder")
        for path in found:
            if path.resolve() not in seen:
                seen.add(path.resolve())
                paths.append(path)
    return paths


def task_probabilities(task: str, logits: np.ndarray) -> np.ndarray:
    """Probabilities [N, K] from logits: softmax for cifar10, sigmoid per class otherwise."""
    if task == "cifar10":
        return softmax(logits, axis=1)
    return sigmoid(logits)


def prediction_rows(task: str, ids, probs: np.ndarray, header: dict, threshold=None):
    """The CSV rows and columns of probabilities [N, K], and the decisions behind the label column.

    The decision uses ``threshold`` (binary) when given, else the header's
    threshold(s); ``header`` needs only class_names and threshold/thresholds,
    so an exported model's metadata serves as well as a checkpoint's.
    """
    names = header.get("class_names", [])
    if task == "cifar10":
        decided = probs.argmax(axis=1)
        rows = [{"id": i, **{f"p_{n}": float(v) for n, v in zip(names, p)}, "label": names[int(k)]}
                for i, p, k in zip(ids, probs, decided)]
        return rows, ["id", *[f"p_{n}" for n in names], "label"], decided
    if task == "binary":
        threshold = threshold if threshold is not None else header.get("threshold") or 0.5
        decided = (probs[:, 0] >= threshold).astype(np.int64)
        rows = [{"id": i, "probability": float(p), "label": int(d)} for i, p, d in zip(ids, probs[:, 0], decided)]
        return rows, ["id", "probability", "label"], decided
    if threshold is not None:   # one value for every class, or one per class
        thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), (len(names),))
    else:
        thresholds = np.asarray(header.get("thresholds") or [0.5] * len(names))
    decided = decide(probs, thresholds)
    rows = [{"id": i, **{f"p_{n}": float(v) for n, v in zip(names, p)},
             "labels": ";".join(n for n, on in zip(names, marks) if on)}
            for i, p, marks in zip(ids, probs, decided)]
    return rows, ["id", *[f"p_{n}" for n in names], "labels"], decided


def threshold_problem(task: str, threshold, names) -> str | None:
    """Why ``--threshold`` does not fit a ``task`` checkpoint with classes ``names``; None when it does."""
    if threshold is None:
        return None
    count = len(threshold) if isinstance(threshold, tuple) else 1
    if task == "cifar10":
        return "a cifar10 checkpoint predicts the most probable class; there is no threshold to set"
    if task == "binary" and count != 1:
        return f"a binary checkpoint takes one threshold, got {count}"
    if task == "multilabel" and count not in (1, len(names)):
        return f"give one threshold for every class or one per class ({', '.join(names)}), got {count}"
    return None


def main(argv=None) -> int:
    with plain_warnings():
        return _main(argv)


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    if args.onnx:
        from .export.runtime import predict_main
        return predict_main(args)
    try:
        created = check_writable_file(args.output, "--output")
        be = get_backend(args.device)
        model, header = load_model(args.checkpoint, be)
        config = header["model"]
        images, kept, skipped = load_images(collect_images(args.input), image_size=config["image_size"],
                                            channels=config["in_channels"], strict=args.strict)
    except (CheckpointError, DatasetError, RuntimeError, ValueError) as error:
        remove_empty_folders(locals().get("created", []))
        print(f"error: {error}", file=sys.stderr)
        return 2
    task = header.get("task", config["architecture"])
    problem = threshold_problem(task, args.threshold, header.get("class_names", []))
    if problem:
        remove_empty_folders(created)
        print(f"error: --threshold: {problem} ({args.checkpoint} is a {task} checkpoint)", file=sys.stderr)
        return 2
    if args.heatmaps and task != "multilabel":
        print(f"error: --heatmaps needs a multi-label checkpoint (its pooled head gives the maps); "
              f"{args.checkpoint} is a {task} checkpoint", file=sys.stderr)
        return 2
    tta = args.tta if args.tta is not None else default_tta(header, task)
    normalizer = Normalizer.from_dict(header["normalization"])
    logits = predict_logits(model, images, normalizer, batch_size=args.batch_size, tta=tta,
                            progress=not args.no_progress, description="scoring")
    logits = logits / np.asarray(args.temperature or header.get("temperature") or 1.0, dtype=np.float64)
    ids = [p.stem for p in kept]
    probs = task_probabilities(task, logits)
    rows, columns, decided = prediction_rows(task, ids, probs, header, args.threshold)
    if args.heatmaps:
        names = header.get("class_names", [])
        defects = decided * np.array([n != NO_DEFECT for n in names])
        peaks = write_heatmaps(model, images, ids, names, probs, defects, normalizer, args.heatmaps,
                               progress=not args.no_progress)
        print(f"wrote {len(peaks)} heatmap overlays and peaks.csv to {args.heatmaps}")
    write_csv_atomic(args.output, rows, columns)
    print(f"wrote {len(rows)} predictions to {args.output}"
          + (f"; skipped {len(skipped)} unreadable image(s)" if skipped else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
