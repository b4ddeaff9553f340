"""python -m glasscuda.export — write a trained checkpoint as an ONNX model, checked by ONNX Runtime.

The model takes raw pixels in [0, 1], float32 [N, C, H, W] (input
"pixels"), applies the checkpoint's standardisation, and gives probabilities
[N, K] (output "probabilities"): sigmoid per class, softmax for CIFAR-10,
with predict's test-time augmentation (on by default for multi-label) and
temperature inside. Task, class names, threshold(s), normalisation and the
decision rule are in the model's metadata_props.

Before writing, ONNX Runtime runs the model on a batch of images (--images,
else the test images of the data set the checkpoint was trained on, else
synthetic glass panels, else uniform noise) and its probabilities are
compared with glasscuda's forward; a max abs difference above 1e-5 fails
with exit code 1 and writes nothing. A checkpoint that cannot be read or
exported is exit code 2. Needs the "export" extra:
pip install 'glasscuda[export]'.
"""
from __future__ import annotations

import argparse
import sys

from .common import ExportError
from .graph import DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, TOLERANCE, ExportMismatch, export_onnx


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m glasscuda.export", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="FILE",
                        help="a best.npz / last.npz written by glasscuda.train")
    parser.add_argument("--onnx", required=True, metavar="FILE", help="where to write the ONNX model")
    parser.add_argument("--images", nargs="+", metavar="DIR|FILE",
                        help="images to check the export on (default: the training run's test images when "
                             "its --data is still there, else synthetic glass panels for the glass tasks, "
                             "uniform noise otherwise)")
    parser.add_argument("--check-count", type=int, default=16, metavar="N",
                        help="how many images to check on (default 16)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="put predict's test-time augmentation in the graph (default: on for multilabel)")
    parser.add_argument("--temperature", type=float,
                        help="divide logits by this before the sigmoid/softmax (default: the checkpoint's, if any)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET,
                        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.check_count < 1:
        print(f"error: --check-count must be at least 1, got {args.check_count}", file=sys.stderr)
        return 2
    try:
        report = export_onnx(args.checkpoint, args.onnx, images=args.images, n_check=args.check_count,
                             tta=args.tta, temperature=args.temperature, opset=args.opset)
    except ExportMismatch as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    c, h, w = report.input_shape
    extras = "".join([", TTA inside" if report.tta else "",
                      f", temperature {report.temperature}" if report.temperature is not None else ""])
    print(f"wrote {report.path}: {report.task}, opset {report.opset}, pixels [N, {c}, {h}, {w}] in [0, 1] -> "
          f"probabilities [N, {report.n_outputs}]{extras}")
    print(f"onnxruntime vs glasscuda on {report.checked_on}: max abs difference {report.max_abs_diff:.2e} "
          f"(limit {TOLERANCE:g})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
