"""glasscuda.data.crops.BoxCrops: each crop is a window of its image, labelled by the box centres inside it."""
from __future__ import annotations

import numpy as np
import pytest

from counting_backend import COUNTS, CountingBackend, CountingGenerator
from glasscuda.data import GlassDataset
from glasscuda.data.crops import BoxCrops

N, SIDE, CLASSES = 12, 48, ("dust", "scratch", "stain", "bubble")


def boxed_dataset(rng, side=SIDE):
    """Images whose pixel values are their own coordinates (so a crop tells where it was cut), and up to
    five random boxes of random classes each; about one image in four has none."""
    coordinates = np.arange(side * side, dtype=np.float32).reshape(1, 1, side, side)
    images = coordinates + np.arange(N, dtype=np.float32).reshape(N, 1, 1, 1) * side * side
    boxes, labels = [], np.zeros((N, len(CLASSES)), np.float32)
    for n in range(N):
        count = 0 if rng.random() < 0.25 else int(rng.integers(1, 6))
        image_boxes = [(int(rng.integers(len(CLASSES))), *rng.uniform(0.02, 0.98, 2), 0.05, 0.05)
                       for _ in range(count)]
        for box in image_boxes:
            labels[n, box[0]] = 1
        boxes.append(image_boxes)
    return GlassDataset(images=images, labels=labels, boxes=boxes, ids=[f"im{n}" for n in range(N)],
                        paths=[f"/data/img/im{n}.png" for n in range(N)], class_names=CLASSES)


def oracle_labels(dataset, n, top, left, size):
    """The classes with a box centre inside rows [top, top + size) and columns [left, left + size)."""
    held = np.zeros(len(CLASSES), np.float32)
    for class_id, cx, cy, _, _ in dataset.boxes[n]:
        x, y = cx * SIDE, cy * SIDE
        if left <= x < left + size and top <= y < top + size:
            held[class_id] = 1
    return held


@pytest.mark.parametrize("size", [16, 32, 48])
@pytest.mark.parametrize("where", ["host", "device"])
def test_each_crop_is_a_window_of_its_image_labelled_by_the_box_centres_inside_it(cpu, emulated, rng, size,
                                                                                   where):
    dataset = boxed_dataset(rng)
    rows = rng.permutation(N)[:8]
    if where == "host":
        be, generator = cpu, np.random.default_rng(3)
    else:
        be, generator = CountingBackend(emulated), CountingGenerator(np.random.default_rng(3))
    crops = BoxCrops(dataset, size, be)
    x = be.asarray(dataset.images[rows])
    COUNTS.__init__()
    got, held = crops(x, be.asarray(rows), generator)
    if where == "device":   # cut and labelled where the batch lives: nothing is read back
        assert COUNTS.snapshot()["d2h"] == 0 and COUNTS.snapshot()["syncs"] == 0
    got, held = np.asarray(got), np.asarray(held)
    assert got.shape == (8, 1, size, size) and got.dtype == np.float32 and held.shape == (8, len(CLASSES))
    for i, n in enumerate(rows):
        offset = int(got[i, 0, 0, 0]) - n * SIDE * SIDE
        top, left = divmod(offset, SIDE)
        assert 0 <= top <= SIDE - size and 0 <= left <= SIDE - size
        np.testing.assert_array_equal(got[i], dataset.images[n, :, top:top + size, left:left + size])
        np.testing.assert_array_equal(held[i], oracle_labels(dataset, n, top, left, size))


def test_the_crop_corners_cover_every_position_of_the_image(cpu, rng):
    dataset = boxed_dataset(rng)
    crops = BoxCrops(dataset, 40, cpu)
    generator = np.random.default_rng(5)
    corners = set()
    for _ in range(200):
        got, _ = crops(dataset.images, np.arange(N), generator)
        corners |= {divmod(int(v) - n * SIDE * SIDE, SIDE) for n, v in enumerate(got[:, 0, 0, 0])}
    assert corners == {(top, left) for top in range(SIDE - 40 + 1) for left in range(SIDE - 40 + 1)}


def test_a_whole_image_crop_holds_every_class_of_its_boxes(cpu, rng):
    dataset = boxed_dataset(rng)
    got, held = BoxCrops(dataset, SIDE, cpu)(dataset.images, np.arange(N), np.random.default_rng(0))
    np.testing.assert_array_equal(got, dataset.images)
    np.testing.assert_array_equal(held, dataset.labels)


def test_a_labelled_class_without_a_box_is_refused_naming_the_file(cpu, rng):
    dataset = boxed_dataset(rng)
    n = int(np.flatnonzero(dataset.labels.any(axis=1))[0])
    class_id = dataset.boxes[n][0][0]
    dataset.boxes[n] = [box for box in dataset.boxes[n] if box[0] != class_id]
    with pytest.raises(ValueError, match=rf"/data/img/im{n}\.png: {CLASSES[class_id]} has no box"):
        BoxCrops(dataset, 16, cpu)


@pytest.mark.parametrize("size", [0, SIDE + 16])
def test_a_crop_that_does_not_fit_the_images_is_refused(cpu, rng, size):
    with pytest.raises(ValueError, match=f"a crop of {size} pixels does not fit the {SIDE}x{SIDE} images"):
        BoxCrops(boxed_dataset(rng), size, cpu)
