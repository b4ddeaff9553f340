"""Random training crops of full-resolution images, each crop labelled by the boxes it holds.

Resizing a 256-pixel tile to 128 pixels halves a 9-pixel dust spot; cutting a
128-pixel crop out of it keeps the spot as it is at the same cost per step.
The network's head pools globally, so the model trained on crops scores whole
images at validation and test time. A crop holds a defect class when the
centre of one of that class's boxes lies inside it: the rule by which a
dataset cut into tiles gives a tile its boxes.
"""
from __future__ import annotations

import numpy as np


class BoxCrops:
    """Random ``size`` × ``size`` crops of a dataset's images and the defect classes each holds.

    Parameters
    ----------
    dataset : GlassDataset
        The training images and their boxes. Every class an image is labelled
        with must have a box there: a crop's labels are read from the boxes.
    size : int
        Side of a crop in pixels, at most the images' side.
    be : Backend
        Where the boxes are kept and the crops are cut.
    """

    def __init__(self, dataset, size: int, be):
        height, width = dataset.images.shape[2:]
        if not 0 < size <= min(height, width):
            raise ValueError(f"a crop of {size} pixels does not fit the {height}x{width} images")
        n_classes = dataset.labels.shape[1]
        most = max((len(boxes) for boxes in dataset.boxes), default=0)
        centres = np.zeros((len(dataset), max(most, 1), 2), np.float32)
        classes = np.full((len(dataset), max(most, 1)), -1, np.int64)
        for n, boxes in enumerate(dataset.boxes):
            located = {int(box[0]) for box in boxes}
            unlocated = [dataset.class_names[k] for k in np.flatnonzero(dataset.labels[n]) if k not in located]
            if unlocated:
                raise ValueError(f"{dataset.paths[n]}: {', '.join(unlocated)} has no box, so a crop cannot tell "
                                 "whether it holds it; crops need a box (cx cy w h) on every label line")
            for b, (class_id, cx, cy, _, _) in enumerate(boxes):
                centres[n, b] = cx * width, cy * height
                classes[n, b] = class_id
        self.size, self.n_classes, self.backend = size, n_classes, be
        self.centres, self.classes = be.asarray(centres), be.asarray(classes)

    def __call__(self, x, rows, rng):
        """Crops of the batch ``x`` [N, C, H, W] (the images at ``rows`` of the dataset) and their labels.

        Returns the crops [N, C, size, size] and the multi-hot [N, K] of the
        defect classes each holds, both on ``x``'s device; the crop corners are
        drawn from ``rng`` there, uniformly over the image.
        """
        xp, s = self.backend.xp, self.size
        N, _, H, W = x.shape
        top = xp.floor(rng.random(N) * (H - s + 1)).astype(np.int64)
        left = xp.floor(rng.random(N) * (W - s + 1)).astype(np.int64)
        ys, xs = top[:, None] + xp.arange(s), left[:, None] + xp.arange(s)          # [N, s] each
        crops = x[xp.arange(N)[:, None, None], :, ys[:, :, None], xs[:, None, :]]   # [N, s, s, C]
        crops = xp.ascontiguousarray(crops.transpose(0, 3, 1, 2))
        cx, cy = self.centres[rows, :, 0], self.centres[rows, :, 1]
        classes = self.classes[rows]
        inside = ((classes >= 0) & (cx >= left[:, None]) & (cx < (left + s)[:, None])
                  & (cy >= top[:, None]) & (cy < (top + s)[:, None]))
        holds = (inside[:, :, None] & (classes[:, :, None] == xp.arange(self.n_classes))).any(axis=1)
        return crops, holds.astype(x.dtype)
