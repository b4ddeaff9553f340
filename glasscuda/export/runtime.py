"""Running an exported model with ONNX Runtime alone: ``python -m glasscuda.predict --onnx``."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from .common import INPUT, OUTPUT, ExportError, require


class OnnxModel:
    """A model written by ``python -m glasscuda.export``, under ONNX Runtime on the CPU.

    ``task``, ``class_names``, ``threshold`` / ``thresholds``, ``tta`` and
    ``temperature`` come from the model's metadata; ``input_shape`` is
    (C, H, W) from its input.
    """

    def __init__(self, path, *, threads: int | None = None):
        ort = require("onnxruntime")
        self.path = Path(path)
        if not self.path.is_file():
            raise ExportError(f"ONNX model {self.path} does not exist")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = options.inter_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own types, with multi-line text
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExportError(f"{self.path}: onnxruntime cannot load it ({first})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if "task" not in meta or "class_names" not in meta:
            raise ExportError(f"{self.path}: no glasscuda metadata (task, class names); "
                              "export the model with python -m glasscuda.export")
        inputs = self.session.get_inputs()
        if [i.name for i in inputs] != [INPUT] or len(inputs[0].shape) != 4:
            raise ExportError(f"{self.path}: expected one input {INPUT!r} [N, C, H, W], "
                              f"found {[(i.name, i.shape) for i in inputs]}")
        self.input_shape = tuple(int(d) for d in inputs[0].shape[1:])
        self.task = meta["task"]
        self.class_names = json.loads(meta["class_names"])
        self.threshold = json.loads(meta["threshold"]) if "threshold" in meta else None
        self.thresholds = json.loads(meta["thresholds"]) if "thresholds" in meta else None
        self.tta = json.loads(meta.get("tta", "false"))
        self.temperature = json.loads(meta.get("temperature", "null"))
        self.metadata = dict(meta)

    @property
    def header(self) -> dict:
        """The part of a checkpoint header that predict's CSV rows need."""
        return {"task": self.task, "class_names": self.class_names, "threshold": self.threshold,
                "thresholds": self.thresholds}

    def predict(self, images, batch_size: int = 64) -> np.ndarray:
        """Probabilities float32 [N, K] of raw images [N, C, H, W] in [0, 1]."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or images.shape[1:] != self.input_shape:
            given = "x".join(map(str, images.shape[1:])) if images.ndim == 4 else f"an array of shape {images.shape}"
            raise ExportError(f"{self.path} takes images of {'x'.join(map(str, self.input_shape))} "
                              f"(channels x height x width); the images given are {given}")
        out = [self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(images[s:s + batch_size])})[0]
               for s in range(0, len(images), max(1, int(batch_size)))]
        return np.concatenate(out) if out else np.empty((0, len(self.class_names)), np.float32)


def _fixed_by_graph(args, model: OnnxModel) -> str | None:
    """The first predict option that an exported graph has already fixed otherwise, as an error."""
    if args.heatmaps:
        return "--heatmaps needs the checkpoint (the maps come from the network's last feature maps); use --checkpoint"
    if args.tta is not None and bool(args.tta) != bool(model.tta):
        return (f"--{'' if args.tta else 'no-'}tta: {model.path} was exported "
                f"{'with' if model.tta else 'without'} TTA inside; export it again with "
                f"--{'' if args.tta else 'no-'}tta")
    if args.temperature is not None and args.temperature != model.temperature:
        return (f"--temperature: {model.path} has temperature {model.temperature} inside; "
                f"export it again with --temperature {args.temperature}")
    if args.device == "gpu":
        return "--device gpu: --onnx runs with onnxruntime's CPU provider"
    return None


def predict_main(args) -> int:
    """predict's command line with ``--onnx``: same images, same CSV columns, ONNX Runtime's forward."""
    from ..cli import check_writable_file, remove_empty_folders
    from ..data.dataset import DatasetError, load_images
    from ..predict import collect_images, prediction_rows, threshold_problem
    from ..reports import write_csv_atomic

    created = []
    try:
        created = check_writable_file(args.output, "--output")
        model = OnnxModel(args.onnx)
        channels, height, width = model.input_shape
        if height != width:
            raise ExportError(f"{model.path} takes {height}x{width} images; glasscuda reads square images only")
        problem = _fixed_by_graph(args, model)
        if problem is None and threshold_problem(model.task, args.threshold, model.class_names):
            problem = (f"--threshold: {threshold_problem(model.task, args.threshold, model.class_names)} "
                       f"({model.path} is a {model.task} model)")
        if problem:
            raise ExportError(problem)
        images, kept, skipped = load_images(collect_images(args.input), image_size=height, channels=channels,
                                            strict=args.strict)
    except (ValueError, DatasetError) as error:   # ExportError and the --output check are ValueErrors
        remove_empty_folders(created)
        print(f"error: {error}", file=sys.stderr)
        return 2
    probs = model.predict(images, batch_size=args.batch_size).astype(np.float64)
    rows, columns, _ = prediction_rows(model.task, [p.stem for p in kept], probs, model.header, args.threshold)
    write_csv_atomic(args.output, rows, columns)
    print(f"wrote {len(rows)} predictions to {args.output} (onnxruntime, {model.path.name})"
          + (f"; skipped {len(skipped)} unreadable image(s)" if skipped else ""))
    return 0
