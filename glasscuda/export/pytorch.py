"""The ``torch.nn`` equivalents of glasscuda's networks, and weights moved both ways.

glasscuda keeps PyTorch's layouts (conv weight [out, in, kh, kw], linear
weight [out, in]) and a network's state-dict keys are ``body.<i>.weight`` /
``body.<i>.bias``, ``i`` the layer's place in its Sequential body. The torch
network built here is ``Sequential(body=Sequential(<one torch layer per
glasscuda layer>))``, standard modules only, so the same keys name the same
arrays and ``load_state_dict(..., strict=True)`` works either way unchanged.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..models import build_model
from ..nn import BatchNorm2d, Conv2d, Flatten, GlobalAvgPool2d, GlobalMaxPool2d, Linear, MaxPool2d, ReLU
from .common import ExportError, load_network, require


def _torch_layer(nn, layer, index: int):
    if isinstance(layer, Conv2d):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                         padding=layer.padding)
    if isinstance(layer, Linear):
        return nn.Linear(layer.in_features, layer.out_features)
    if isinstance(layer, BatchNorm2d):
        return nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    if isinstance(layer, ReLU):
        return nn.ReLU()
    if isinstance(layer, MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, stride=layer.stride)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, GlobalAvgPool2d):
        return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())   # [N, C, H, W] -> [N, C]
    if isinstance(layer, GlobalMaxPool2d):
        return nn.Sequential(nn.AdaptiveMaxPool2d(1), nn.Flatten())
    raise ExportError(f"no torch.nn form for layer body.{index} ({type(layer).__name__})")


def torch_model(config: dict):
    """The ``torch.nn`` network of a glasscuda ``model.config()`` (as stored in a checkpoint's header).

    Freshly initialised by torch; load weights with
    ``load_state_dict(to_torch_state_dict(checkpoint), strict=True)``.
    """
    torch = require("torch", extra="")
    structure = build_model(config, seed=0)
    layers = [_torch_layer(torch.nn, layer, i) for i, layer in enumerate(structure.body.layers)]
    return torch.nn.Sequential(OrderedDict(body=torch.nn.Sequential(*layers)))


def to_torch_state_dict(source) -> "OrderedDict[str, object]":
    """A checkpoint's weights (a path, a loaded Checkpoint, or a glasscuda model) as float32 torch tensors."""
    torch = require("torch", extra="")
    if hasattr(source, "state_dict") and hasattr(source, "config"):
        state = source.state_dict()
    else:
        state = load_network(source)[0].state_dict()
    return OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v, dtype=np.int64 if v.dtype.kind == "i" else np.float32)))
                       for k, v in state.items())


def from_torch_state_dict(state_dict) -> dict[str, np.ndarray]:
    """A torch ``state_dict`` as NumPy arrays, for a glasscuda model's ``load_state_dict``."""
    return {k: v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in state_dict.items()}
