"""The ONNX graph of a glasscuda network, and its check against glasscuda's forward in ONNX Runtime.

The graph computes what ``python -m glasscuda.predict`` computes from a
checkpoint, in float32::

    pixels [N, C, H, W], raw values in [0, 1]
      -> (pixels - mean) / std                      the checkpoint's normalisation
      -> [TTA: the image, its left-right and up-down flips, as one batch of 3N]
      -> the network's layers, one ONNX node per glasscuda layer
      -> [TTA: mean of the three sigmoids, clipped to [1e-7, 1 - 1e-7], back to logits]
      -> [/ temperature]
      -> sigmoid per class (softmax over classes for cifar10) = probabilities [N, K]

Initialisers are named as in the checkpoint's state dict (``body.0.weight``
...). Opset 17 is read by ONNX Runtime, TensorRT and OpenVINO releases of
the last years; nothing here needs a later one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..checkpoint import default_tta
from ..reports import atomic_write
from ..data.sampling import Normalizer
from ..nn import BatchNorm2d, Conv2d, Flatten, GlobalAvgPool2d, GlobalMaxPool2d, Linear, MaxPool2d, ReLU
from .common import INPUT, OUTPUT, ExportError, load_network, require, task_of

DEFAULT_OPSET = 17
MIN_OPSET = 13          # Softmax over one axis, Clip with tensor bounds, Slice with steps
MAX_OPSET = 21          # what ONNX Runtime releases since 1.17 read
TTA_CLIP = 1e-7         # predict's clip of TTA-averaged probabilities before taking logits
TOLERANCE = 1e-5        # max abs difference of probabilities, ONNX Runtime vs glasscuda


class ExportMismatch(ExportError):
    """ONNX Runtime's probabilities differ from glasscuda's by more than the tolerance."""


@dataclass
class ExportReport:
    path: Path | None
    task: str
    input_shape: tuple          # (C, H, W)
    n_outputs: int
    opset: int
    tta: bool
    temperature: object
    n_checked: int
    checked_on: str
    max_abs_diff: float


class _Graph:
    """Nodes and initialisers under construction, with unique value names."""

    def __init__(self, onnx):
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes, self.initializers, self._count = [], [], 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def const(self, name: str, value, dtype=np.float32) -> str:
        self.initializers.append(self.onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs, stem: str | None = None, **attrs) -> str:
        out = self.name(stem or op_type.lower())
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        return out


def _layer_nodes(g: _Graph, layer, prefix: str, x: str, state: dict) -> str:
    """The ONNX nodes of one glasscuda layer applied to ``x``; returns the output's name."""
    if isinstance(layer, Conv2d):
        (ph, pw), (sh, sw) = layer.padding, layer.stride
        w = g.const(f"{prefix}.weight", state[f"{prefix}.weight"])
        b = g.const(f"{prefix}.bias", state[f"{prefix}.bias"])
        return g.op("Conv", [x, w, b], kernel_shape=list(layer.kernel_size), pads=[ph, pw, ph, pw],
                    strides=[sh, sw])
    if isinstance(layer, Linear):
        w = g.const(f"{prefix}.weight", state[f"{prefix}.weight"])
        b = g.const(f"{prefix}.bias", state[f"{prefix}.bias"])
        return g.op("Gemm", [x, w, b], transB=1)
    if isinstance(layer, BatchNorm2d):   # the inference form: the running statistics
        inputs = [g.const(f"{prefix}.{k}", state[f"{prefix}.{k}"]) for k in ("weight", "bias", "running_mean",
                                                                             "running_var")]
        return g.op("BatchNormalization", [x, *inputs], epsilon=layer.eps)
    if isinstance(layer, ReLU):
        return g.op("Relu", [x])
    if isinstance(layer, MaxPool2d):
        return g.op("MaxPool", [x], kernel_shape=list(layer.kernel_size), strides=list(layer.stride))
    if isinstance(layer, Flatten):
        return g.op("Flatten", [x], axis=1)
    if isinstance(layer, GlobalAvgPool2d):
        return g.op("Flatten", [g.op("GlobalAveragePool", [x])], axis=1)
    if isinstance(layer, GlobalMaxPool2d):
        return g.op("Flatten", [g.op("GlobalMaxPool", [x])], axis=1)
    raise ExportError(f"no ONNX form for the layer {prefix} ({type(layer).__name__})")


def _metadata(header: dict, task: str, model, tta: bool, temperature) -> dict[str, str]:
    """The model's metadata_props: what a deployment needs besides the graph."""
    names = list(header.get("class_names") or [])
    config = model.config()
    meta = {
        "task": task,
        "class_names": json.dumps(names),
        "input": (f"{INPUT}: float32 [N, {config['in_channels']}, {config['image_size']}, {config['image_size']}], "
                  "raw pixel values in [0, 1] (the standardisation is inside the model)"),
        "output": (f"{OUTPUT}: float32 [N, {len(names) or 'K'}], "
                   + ("softmax over the classes" if task == "cifar10" else "sigmoid per class")),
        "normalization": json.dumps(header["normalization"]),
        "tta": json.dumps(bool(tta)),
        "temperature": json.dumps(temperature),
        "architecture": json.dumps(config),
        "glasscuda_version": __version__,
    }
    if task == "binary":
        meta["threshold"] = json.dumps(float(header.get("threshold") or 0.5))
        meta["decision"] = "defective when probability >= threshold"
    elif task == "multilabel":
        meta["thresholds"] = json.dumps([float(t) for t in header.get("thresholds") or [0.5] * len(names)])
        meta["decision"] = (f"each defect class whose probability >= its threshold; "
                            f"{names[0] if names else 'the first class'} when none is")
    else:
        meta["decision"] = "the most probable class"
    return meta


def build_onnx(model, header: dict, *, tta: bool = False, temperature=None, opset: int = DEFAULT_OPSET):
    """The ``onnx.ModelProto`` of a glasscuda network and its checkpoint header (see the module doc)."""
    onnx = require("onnx")
    if not MIN_OPSET <= opset <= min(MAX_OPSET, onnx.defs.onnx_opset_version()):
        raise ExportError(f"opset {opset} is not supported: choose one in "
                          f"{MIN_OPSET}..{min(MAX_OPSET, onnx.defs.onnx_opset_version())}")
    task = task_of(header)
    config = model.config()
    channels, size = config["in_channels"], config["image_size"]
    state = model.state_dict()
    normalizer = Normalizer.from_dict(header["normalization"])
    g = _Graph(onnx)

    x = g.op("Sub", [INPUT, g.const("normalization.mean", normalizer.mean.reshape(1, -1, 1, 1))])
    x = g.op("Div", [x, g.const("normalization.std", normalizer.std.reshape(1, -1, 1, 1))], stem="standardised")
    if tta:
        reverse = dict(starts=[-1], ends=[np.iinfo(np.int64).min], steps=[-1])
        starts, ends, steps = (g.const(f"flip.{k}", v, np.int64) for k, v in reverse.items())
        flips = [g.op("Slice", [x, starts, ends, g.const(f"flip.axis{axis}", [axis], np.int64), steps],
                      stem=f"flip{axis}") for axis in (3, 2)]
        x = g.op("Concat", [x, *flips], axis=0, stem="tta_views")
    for i, layer in enumerate(model.body.layers):
        x = _layer_nodes(g, layer, f"body.{i}", x, state)
    n_outputs = int(model.body.layers[-1].out_features)
    if tta:
        views = g.op("Reshape", [g.op("Sigmoid", [x]), g.const("tta.shape", [3, -1, n_outputs], np.int64)])
        if opset >= 18:   # ReduceMean's axes moved from an attribute to an input in opset 18
            p = g.op("ReduceMean", [views, g.const("tta.axes", [0], np.int64)], keepdims=0, stem="tta_mean")
        else:
            p = g.op("ReduceMean", [views], axes=[0], keepdims=0, stem="tta_mean")
        p = g.op("Clip", [p, g.const("tta.low", TTA_CLIP), g.const("tta.high", 1 - TTA_CLIP)])
        x = g.op("Sub", [g.op("Log", [p]), g.op("Log", [g.op("Sub", [g.const("one", 1.0), p])])], stem="tta_logits")
    if temperature is not None:
        x = g.op("Div", [x, g.const("temperature", temperature)], stem="tempered")
    if task == "cifar10":
        g.nodes.append(g.helper.make_node("Softmax", [x], [OUTPUT], name=OUTPUT, axis=1))
    else:
        g.nodes.append(g.helper.make_node("Sigmoid", [x], [OUTPUT], name=OUTPUT))

    graph = g.helper.make_graph(
        g.nodes, f"glasscuda_{task}",
        [g.helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, ["N", channels, size, size])],
        [g.helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["N", n_outputs])],
        initializer=g.initializers)
    opsets = [g.helper.make_opsetid("", opset)]
    proto = g.helper.make_model(graph, opset_imports=opsets,
                                producer_name="glasscuda", producer_version=__version__,
                                doc_string=f"glasscuda {task} model: raw pixels in [0, 1] in, probabilities out")
    proto.ir_version = g.helper.find_min_ir_version_for(opsets)   # older runtimes refuse newer IR versions
    g.helper.set_model_props(proto, _metadata(header, task, model, tta, temperature))
    onnx.checker.check_model(proto, full_check=True)
    return proto


def glasscuda_probabilities(model, header: dict, images: np.ndarray, *, tta: bool, temperature) -> np.ndarray:
    """Probabilities of ``images`` [N, C, H, W] in [0, 1] computed as predict computes them."""
    from ..predict import task_probabilities
    from ..training import predict_logits

    logits = predict_logits(model, images, Normalizer.from_dict(header["normalization"]), tta=tta)
    logits = logits / np.asarray(temperature if temperature is not None else 1.0, dtype=np.float64)
    return task_probabilities(task_of(header), logits)


def check_images(header: dict, images=None, count: int = 16, seed: int = 0) -> tuple[np.ndarray, str]:
    """The batch the export is checked on, and what it is.

    ``images`` (paths, or an array [N, C, H, W] in [0, 1]) when given; else
    the first test images of the data set the checkpoint was trained on,
    when it names one that is still there; else glass panels from the
    synthetic generator for single-channel glass models (clean ones and one
    of each defect in turn); else uniform noise.
    """
    config = header["model"]
    channels, size = config["in_channels"], config["image_size"]
    if isinstance(images, (str, Path)):
        images = [images]
    if images is not None and not isinstance(images, np.ndarray):
        from ..data.dataset import DatasetError, load_images
        from ..predict import collect_images
        try:
            pixels, kept, _ = load_images(collect_images(images), image_size=size, channels=channels)
        except DatasetError as error:
            raise ExportError(str(error)) from error
        return pixels[:count], f"{min(count, len(kept))} of the given images"
    if images is not None:
        if images.ndim != 4 or images.shape[1:] != (channels, size, size):
            raise ExportError(f"the model takes images of {channels}x{size}x{size} (channels x height x width); "
                              f"the images given are {'x'.join(map(str, images.shape[1:]))}")
        return np.asarray(images, np.float32)[:count], f"{min(count, len(images))} given images"
    trained_on = _training_test_images(header, count)
    if trained_on is not None:
        return trained_on
    rng = np.random.default_rng(seed)
    if channels == 1 and task_of(header) in ("binary", "multilabel"):
        from ..data import render_glass
        panels = [render_glass(rng, size, [] if i % 4 == 0 else [i % 4 - 1]).image for i in range(count)]
        return (np.stack(panels)[:, None].astype(np.float32) / np.float32(255.0),
                f"{count} synthetic glass panels")
    return rng.random((count, channels, size, size), dtype=np.float32), f"{count} images of uniform noise"


def _training_test_images(header: dict, count: int):
    """(images, description) of the first ``count`` test images of the run's ``--data``, or None."""
    data = (header.get("run") or {}).get("data")
    if not data or not Path(data).is_dir():
        return None
    config = header["model"]
    try:
        if task_of(header) == "cifar10":
            from ..data.cifar10 import TEST_BATCH, find_batches_folder, read_batch
            pixels = read_batch(find_batches_folder(data) / TEST_BATCH)[0][:count]
            images = pixels.astype(np.float32) / np.float32(255.0)
        else:
            from ..data.dataset import load_images
            from ..glass import list_images
            paths = list_images(Path(data) / "test" / "img")[0][:count] if Path(data, "test", "img").is_dir() else []
            if not paths:
                return None
            images = load_images(paths, image_size=config["image_size"], channels=config["in_channels"])[0]
    except (OSError, ValueError):   # DatasetError is a ValueError: fall back to generated inputs
        return None
    return images, f"{len(images)} test images of {data}"


def export_onnx(checkpoint, path=None, *, images=None, n_check: int = 16, tta: bool | None = None,
                temperature=None, opset: int = DEFAULT_OPSET, tolerance: float = TOLERANCE) -> ExportReport:
    """Export ``checkpoint`` to ONNX at ``path``, checked by ONNX Runtime first.

    ``tta`` defaults to predict's default (as the checkpoint was validated); ``temperature``
    to the checkpoint's, if it has one. ONNX Runtime runs the graph on
    :func:`check_images` and its probabilities are compared with glasscuda's;
    a difference above ``tolerance`` raises :class:`ExportMismatch` and
    nothing is written. With ``path`` None nothing is written either way.
    """
    ort = require("onnxruntime")
    model, header = load_network(checkpoint)
    task = task_of(header)
    tta = default_tta(header, task) if tta is None else bool(tta)
    if temperature is None:
        temperature = header.get("temperature")
    if temperature is not None:
        t = np.asarray(temperature, dtype=np.float64)
        if not (np.all(np.isfinite(t)) and np.all(t > 0)):
            raise ExportError(f"temperature must be positive and finite, got {temperature}")
        temperature = t.tolist()
    proto = build_onnx(model, header, tta=tta, temperature=temperature, opset=opset)
    data = proto.SerializeToString()

    pixels, described = check_images(header, images, n_check)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    theirs = session.run([OUTPUT], {INPUT: pixels})[0]
    ours = glasscuda_probabilities(model, header, pixels, tta=tta, temperature=temperature)
    diff = float(np.max(np.abs(theirs.astype(np.float64) - ours))) if len(pixels) else 0.0
    if not diff <= tolerance:
        raise ExportMismatch(f"ONNX Runtime and glasscuda disagree on {described}: max abs difference of "
                             f"the probabilities {diff:.3g} > {tolerance:g}; nothing written")
    config = model.config()
    if path is not None:
        path = atomic_write(path, lambda f: f.write(data))
    return ExportReport(path, task, (config["in_channels"], config["image_size"], config["image_size"]),
                        int(theirs.shape[1]), opset, tta, temperature, len(pixels), described, diff)
