"""The networks of glasscuda, built from glasscuda.nn layers.

``BinaryDetector`` (is anything wrong with this glass?)::

    4 x [Conv (same padding) -> ReLU -> MaxPool 2x2]   1->16 k5, 16->32 k3, 32->64 k3, 64->64 k3
    Flatten -> Linear(64 * (S/16)^2, 128) -> ReLU -> Linear(128, 1)      one logit

Its options: ``batchnorm`` puts a BatchNorm2d between each convolution and its
ReLU; ``width`` multiplies every block's channels; ``head="pooled"`` replaces
the dense head by global average pooling and one Linear, ``head="max"`` by
global max pooling and one Linear (a defect anywhere on the glass is the
strongest response of some feature map, however small the defect): both make
the network independent of the input size (the ``image_size`` it was trained
at stays in its configuration, so that images are resized to it).

``MultiLabelNet`` (which defects?): the same conv backbone, global average
pooling and one Linear to one logit per class. Because the head is linear on
pooled features, ``class_activation_maps`` can say where on the glass each
class's evidence lies (Zhou et al., 2016). Its options: ``batchnorm``, and
``head="max"`` (global max pooling, for defects a few pixels across).
``with_dense_head`` puts the binary detector's head on its backbone, for the
warm-up of its recipe.

Both return logits; probabilities are ``sigmoid`` of them.

``CifarNet`` (the CIFAR-10 preset, 3x32x32 RGB, ten classes)::

    2 x [Conv k3 (same padding) -> ReLU -> MaxPool 2x2]   3->32, 32->64
    Flatten -> Linear(64 * (S/4)^2, 128) -> ReLU -> Linear(128, 10)      one logit per class

Its logits go to softmax cross-entropy; probabilities are their softmax.
"""
from __future__ import annotations

import numpy as np

from .nn import BatchNorm2d, Conv2d, Flatten, GlobalAvgPool2d, GlobalMaxPool2d, Linear, MaxPool2d, Module, ReLU, Sequential
from .numerics import sigmoid, softmax

BACKBONE = ((16, 5), (32, 3), (64, 3), (64, 3))   # (out_channels, kernel_size) per block
DOWNSAMPLE = 2 ** len(BACKBONE)


HEADS = ("dense", "pooled", "max")
SEED_OPTIONS = {"head": "dense", "batchnorm": False, "width": 1}   # BinaryDetector's defaults
MULTILABEL_HEADS = ("pooled", "max")   # a pooled head is what gives the class activation maps
MULTILABEL_OPTIONS = {"head": "pooled", "batchnorm": False}   # MultiLabelNet's defaults


def conv_backbone(in_channels: int, rng, *, batchnorm: bool = False, width: int = 1) -> list[Module]:
    layers, channels = [], in_channels
    for out_channels, k in BACKBONE:
        out_channels *= width
        conv = Conv2d(channels, out_channels, k, padding=k // 2, rng=rng)
        layers += [conv, BatchNorm2d(out_channels), ReLU(), MaxPool2d(2)] if batchnorm else [conv, ReLU(), MaxPool2d(2)]
        channels = out_channels
    return layers


def dense_head(in_features: int, n_outputs: int, rng) -> list[Module]:
    """The binary detector's head: Flatten -> Linear(in, 128) -> ReLU -> Linear(128, n_outputs)."""
    return [Flatten(), Linear(in_features, 128, rng=rng), ReLU(), Linear(128, n_outputs, rng=rng)]


class _Network(Module):
    """A Sequential body plus the configuration needed to rebuild it."""

    architecture = ""

    def __init__(self, body: Sequential, config: dict):
        super().__init__()
        self.body = body
        self._children = {"body": body}
        self._config = config

    def config(self) -> dict:
        """Everything needed to rebuild this network (stored in checkpoints)."""
        return {"architecture": self.architecture, **self._config}

    def forward(self, x):
        return self.body.forward(x)

    def backward(self, grad_out, need_input_grad=True):
        return self.body.backward(grad_out, need_input_grad=need_input_grad)

    def predict_proba(self, x):
        """Probabilities in eval mode; the mode the network was in is restored."""
        with self.evaluating():
            return sigmoid(self.forward(x), self.backend.xp)


class BinaryDetector(_Network):
    """The binary defect detector of DESIGN.md (job 1). Input [N, C, S, S], S divisible by 16."""

    architecture = "binary"
    optional_config = tuple(SEED_OPTIONS)   # stored only when they differ from the seed network's
    heads = HEADS

    def __init__(self, in_channels: int = 1, image_size: int = 128, head: str = "dense", batchnorm: bool = False,
                 width: int = 1, *, seed: int | None = 0):
        if image_size % DOWNSAMPLE:
            raise ValueError(f"image_size must be a multiple of {DOWNSAMPLE}, got {image_size}")
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {head!r}")
        if width < 1:
            raise ValueError(f"width must be a positive integer, got {width}")
        rng = np.random.default_rng(seed)
        side = image_size // DOWNSAMPLE
        features = BACKBONE[-1][0] * width
        backbone = conv_backbone(in_channels, rng, batchnorm=batchnorm, width=width)   # drawn first: seeds keep their weights
        pool = {"pooled": GlobalAvgPool2d, "max": GlobalMaxPool2d}.get(head)
        top = dense_head(features * side * side, 1, rng) if head == "dense" else [pool(), Linear(features, 1, rng=rng)]
        body = Sequential(*backbone, *top)
        config = {"in_channels": in_channels, "image_size": image_size}
        # The seed network's configuration stays as it always was, so its checkpoints do not change.
        options = {"head": head, "batchnorm": bool(batchnorm), "width": width}
        config.update({k: v for k, v in options.items() if v != SEED_OPTIONS[k]})
        super().__init__(body, config)


class MultiLabelNet(_Network):
    """Conv backbone -> global average (or max) pool -> Linear(64, n_classes). Any input size divisible by 16.

    ``batchnorm`` puts a BatchNorm2d between each convolution and its ReLU;
    ``head="max"`` pools each feature map by its maximum instead of its mean, so
    that a defect a few pixels across is not averaged away over the image.
    """

    architecture = "multilabel"
    optional_config = tuple(MULTILABEL_OPTIONS)   # stored only when they differ from the course network's
    heads = MULTILABEL_HEADS

    def __init__(self, in_channels: int = 1, n_classes: int = 4, image_size: int = 128, head: str = "pooled",
                 batchnorm: bool = False, *, seed: int | None = 0):
        if image_size % DOWNSAMPLE:
            raise ValueError(f"image_size must be a multiple of {DOWNSAMPLE}, got {image_size}")
        if head not in MULTILABEL_HEADS:
            raise ValueError(f"head must be one of {', '.join(MULTILABEL_HEADS)}, got {head!r}")
        rng = np.random.default_rng(seed)
        pool = GlobalAvgPool2d() if head == "pooled" else GlobalMaxPool2d()
        body = Sequential(*conv_backbone(in_channels, rng, batchnorm=batchnorm), pool,
                          Linear(BACKBONE[-1][0], n_classes, rng=rng))
        config = {"in_channels": in_channels, "n_classes": n_classes, "image_size": image_size}
        options = {"head": head, "batchnorm": bool(batchnorm)}
        config.update({k: v for k, v in options.items() if v != MULTILABEL_OPTIONS[k]})
        super().__init__(body, config)
        self.head = head
        self.n_backbone_layers = len(body) - 2

    def with_dense_head(self, *, seed: int | None = 0) -> Sequential:
        """This network's backbone (the same layer objects) under the binary detector's dense head.

        One output per class. Training the returned network trains this
        network's backbone in place; the multi-label recipe does so before
        training the pooled head (see :mod:`glasscuda.tasks.multilabel`).
        """
        side = self._config["image_size"] // DOWNSAMPLE
        head = dense_head(BACKBONE[-1][0] * side * side, self._config["n_classes"], np.random.default_rng(seed))
        return Sequential(*self.body.layers[:self.n_backbone_layers], *head).to(self.backend, self.dtype)

    def class_activation_maps(self, x):
        """Per-class evidence maps [N, K, S/16, S/16]: head weights applied to the last feature maps.

        ``cam[n, k] = sum_c W[k, c] * features[n, c] + b[k]``. With the average
        head the global average of ``cam[n, k]`` is exactly logit k, so the map
        shows where that logit comes from; with the max head logit k weighs
        each feature map's maximum, and the map shows where the features that
        class weighs respond. Returns (logits, cams).
        """
        with self.evaluating():
            features = x
            for layer in self.body.layers[:self.n_backbone_layers]:
                features = layer.forward(features)
        head = self.body.layers[-1]
        N, C, H, W = features.shape
        flat = features.reshape(N, C, H * W)
        cams = self.backend.xp.matmul(head.weight.data, flat) + head.bias.data[None, :, None]
        cams = cams.reshape(N, -1, H, W)
        if self.head == "max":
            return flat.max(axis=2) @ head.weight.data.T + head.bias.data, cams
        return cams.mean(axis=(2, 3)), cams

    def dense_class_activation_maps(self, x, step: int = 4):
        """Class activation maps on a grid ``step`` pixels apart instead of 16 ("shift and stitch").

        The backbone sees the image through cells of 16 pixels. Padding the
        image by ``s`` pixels on the top (left) and ``16 - s`` on the bottom
        (right), edge values repeated, moves those cells by ``s``; one pass
        per shift, ``(16 / step)**2`` passes in all, fills a map [N, K,
        H/step, W/step] whose entry (i, j) is the map of the 16-pixel cell
        centred on pixel ((i + 0.5) * step, (j + 0.5) * step). A chip on the
        panel's edge is a few pixels tall; the 16-pixel grid cannot say
        which side of a cell border it lies on, this one can.
        """
        if step < 1 or DOWNSAMPLE % step:
            raise ValueError(f"step must divide {DOWNSAMPLE}, got {step}")
        xp = self.backend.xp
        N, _, H, W = x.shape
        if H % step or W % step:
            raise ValueError(f"the image sides ({H}x{W}) must be multiples of step {step}")

        def cells(n_out):
            """Shift and padded-map cell of each output position along one axis."""
            centres = (np.arange(n_out) + 0.5) * step
            shifts = ((DOWNSAMPLE // 2 - centres) % DOWNSAMPLE).astype(np.int64)
            return shifts, ((centres - DOWNSAMPLE // 2 + shifts) // DOWNSAMPLE).astype(np.int64)

        row_shift, row_cell = cells(H // step)
        col_shift, col_cell = cells(W // step)
        dense = None
        for sy in np.unique(row_shift):
            rows = np.flatnonzero(row_shift == sy)
            for sx in np.unique(col_shift):
                cols = np.flatnonzero(col_shift == sx)
                padded = xp.pad(x, ((0, 0), (0, 0), (int(sy), DOWNSAMPLE - int(sy)),
                                    (int(sx), DOWNSAMPLE - int(sx))), mode="edge")
                _, cams = self.class_activation_maps(xp.ascontiguousarray(padded))
                if dense is None:
                    dense = xp.empty((N, cams.shape[1], H // step, W // step), dtype=cams.dtype)
                picked = cams[:, :, xp.asarray(row_cell[rows])][:, :, :, xp.asarray(col_cell[cols])]
                dense[:, :, xp.asarray(rows)[:, None], xp.asarray(cols)[None, :]] = picked
        return dense


class CifarNet(_Network):
    """Two conv blocks and two Linear layers (the CIFAR-10 preset). Input [N, C, S, S], S divisible by 4."""

    architecture = "cifar10"

    def __init__(self, in_channels: int = 3, n_classes: int = 10, image_size: int = 32, *,
                 seed: int | None = 0):
        if image_size % 4:
            raise ValueError(f"image_size must be a multiple of 4, got {image_size}")
        rng = np.random.default_rng(seed)
        side = image_size // 4
        body = Sequential(Conv2d(in_channels, 32, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2),
                          Conv2d(32, 64, 3, padding=1, rng=rng), ReLU(), MaxPool2d(2),
                          Flatten(), Linear(64 * side * side, 128, rng=rng), ReLU(),
                          Linear(128, n_classes, rng=rng))
        super().__init__(body, {"in_channels": in_channels, "n_classes": n_classes,
                                "image_size": image_size})

    def predict_proba(self, x):
        """Softmax probabilities [N, n_classes] in eval mode; the mode the network was in is restored."""
        with self.evaluating():
            logits = self.forward(x)
        return softmax(logits, axis=1, xp=self.backend.xp)


ARCHITECTURES = {cls.architecture: cls for cls in (BinaryDetector, MultiLabelNet, CifarNet)}


def build_model(config: dict, *, seed: int | None = 0) -> _Network:
    """Rebuild a network from its ``config()`` (as stored in a checkpoint)."""
    config = dict(config)
    name = config.pop("architecture", None)
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name](**config, seed=seed)
