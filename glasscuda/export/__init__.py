"""Deploying a trained glasscuda model: ONNX export checked by ONNX Runtime, and PyTorch weights.

* :func:`export_onnx` writes an ONNX graph of a checkpoint: raw pixels in
  [0, 1] in, the checkpoint's standardisation inside, probabilities out
  (sigmoid; softmax for CIFAR-10), thresholds and class names in the
  metadata. Before the file is written, ONNX Runtime runs it on a batch of
  images and its probabilities must match glasscuda's own forward.
* :class:`OnnxModel` runs such a file with ONNX Runtime alone
  (``python -m glasscuda.predict --onnx``).
* :func:`to_torch_state_dict`, :func:`torch_model` and
  :func:`from_torch_state_dict` move weights between glasscuda and the
  equivalent ``torch.nn`` network; the layouts are the same, so nothing is
  reshaped.

``onnx`` and ``onnxruntime`` (the ``export`` extra) and ``torch`` are imported
only by the functions that need them.
"""
from __future__ import annotations

from .common import ExportError, load_network
from .graph import DEFAULT_OPSET, build_onnx, export_onnx
from .pytorch import from_torch_state_dict, to_torch_state_dict, torch_model
from .runtime import OnnxModel

__all__ = ["DEFAULT_OPSET", "ExportError", "OnnxModel", "build_onnx", "export_onnx", "from_torch_state_dict",
           "load_network", "to_torch_state_dict", "torch_model"]
