"""Tests of the dataset loader and the stratified train/validation split."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glasscuda.data import (
    DatasetError,
    DatasetWarning,
    GlassDataset,
    generate_synthetic,
    load_split,
    stratified_split,
)


def _write_png(path: Path, value: int = 128, size=(20, 16), mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def _write_txt(path: Path, text: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def root(tmp_path):
    """Three good images (one without a label file) under ROOT/train."""
    base = tmp_path / "data"
    _write_png(base / "train" / "img" / "a.png", 10)
    _write_png(base / "train" / "img" / "b.png", 128)
    _write_png(base / "train" / "img" / "c.PNG", 250)
    _write_txt(base / "train" / "txt" / "a.txt", "0 0.5 0.5 0.2 0.1\n\n2 0.25 0.25 0.1 0.1\n")
    _write_txt(base / "train" / "txt" / "c.txt", "1\n")
    return base


def _load_quietly(*args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_split(*args, **kwargs)
    return dataset, [str(w.message) for w in caught if issubclass(w.category, DatasetWarning)]


def test_loads_images_labels_and_boxes(root):
    dataset, messages = _load_quietly(root, "train", image_size=8)
    assert messages == []
    assert isinstance(dataset, GlassDataset)
    assert len(dataset) == 3
    assert dataset.ids == ["a", "b", "c"]
    assert dataset.images.shape == (3, 1, 8, 8) and dataset.images.dtype == np.float32
    np.testing.assert_allclose(dataset.images[:, 0, 4, 4], [10 / 255, 128 / 255, 250 / 255], atol=1e-6)
    np.testing.assert_array_equal(dataset.labels, [[1, 0, 1], [0, 0, 0], [0, 1, 0]])
    assert dataset.labels.dtype == np.float32
    np.testing.assert_array_equal(dataset.is_defective, [True, False, True])
    assert dataset.boxes == [[(0, 0.5, 0.5, 0.2, 0.1), (2, 0.25, 0.25, 0.1, 0.1)], [], []]
    assert dataset.class_names == ("chipped_edge", "scratch", "stain")
    assert dataset.skipped == []
    assert dataset.paths[2].endswith("c.PNG")


def test_resizes_and_reads_rgb(root):
    dataset, _ = _load_quietly(root, "train", image_size=12, channels=3)
    assert dataset.images.shape == (3, 3, 12, 12)
    _write_png(root / "train" / "img" / "d.jpg", 90, size=(40, 30), mode="RGB")
    dataset, _ = _load_quietly(root, "train", image_size=5)
    assert dataset.images.shape == (4, 1, 5, 5)
    assert dataset.ids[3] == "d"


def test_polygon_line_is_stored_as_its_bounding_box(root):
    _write_txt(root / "train" / "txt" / "b.txt", "2 0.1 0.2 0.5 0.2 0.3 0.6\n")
    dataset, _ = _load_quietly(root, "train", image_size=8)
    ((class_id, cx, cy, w, h),) = dataset.boxes[1]
    assert class_id == 2
    np.testing.assert_allclose([cx, cy, w, h], [0.3, 0.4, 0.4, 0.4])
    np.testing.assert_array_equal(dataset.labels[1], [0, 0, 1])


def test_corrupt_image_is_skipped_warned_and_counted(root):
    (root / "train" / "img" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    with pytest.warns(DatasetWarning) as record:
        dataset = load_split(root, "train", image_size=8)
    messages = [str(w.message) for w in record]
    assert dataset.ids == ["a", "c"]
    assert len(dataset.skipped) == 1 and dataset.skipped[0][0].endswith("b.png")
    assert any("b.png" in m and "cannot decode image" in m for m in messages)
    assert any(m.startswith("skipped 1 of 3 images in") and "rerun with --strict" in m for m in messages)


def test_corrupt_image_in_strict_mode_raises_naming_the_file(root):
    (root / "train" / "img" / "b.png").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match=r"b\.png.*cannot decode image"):
        load_split(root, "train", strict=True)


def test_truncated_png_is_reported(root):
    good = (root / "train" / "img" / "b.png").read_bytes()
    (root / "train" / "img" / "b.png").write_bytes(good[: len(good) // 2])
    with pytest.raises(DatasetError, match=r"b\.png"):
        load_split(root, "train", strict=True)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("7 0.5 0.5 0.1 0.1", "unknown class id 7"),
        ("x 0.5 0.5 0.1 0.1", "class id 'x' is not an integer"),
        ("1 0.5 abc 0.1 0.1", "'abc' is not a number"),
        ("1 0.5 0.5 0.1", "3 values after the class id"),
        ("1 0.5 0.5", "2 values after the class id"),
        ("1 0.1 0.2 0.3 0.4 0.5", "5 values after the class id"),
        ("1 0.5 0.5 1.5 0.1", "outside [0, 1]"),
        ("1 0.5 nan 0.1 0.1", "not finite"),
    ],
)
def test_bad_label_line_skips_the_image_with_file_and_line(root, line, problem):
    _write_txt(root / "train" / "txt" / "b.txt", f"0 0.5 0.5 0.1 0.1\n{line}\n")
    dataset, messages = _load_quietly(root, "train", image_size=8)
    assert dataset.ids == ["a", "c"]
    assert any("b.txt" in m and "line 2" in m and problem in m for m in messages), messages
    assert any(m.startswith("skipped 1 of 3") for m in messages)
    with pytest.raises(DatasetError, match=r"b\.txt: line 2: .*" + problem.replace("[", r"\[").replace("]", r"\]")):
        load_split(root, "train", strict=True)


def test_custom_class_map_accepts_other_ids(root):
    _write_txt(root / "train" / "txt" / "b.txt", "7 0.5 0.5 0.1 0.1\n")
    class_map = {0: "chip", 1: "scratch", 2: "stain", 7: "bubble"}
    dataset, messages = _load_quietly(root, "train", image_size=8, class_map=class_map)
    assert messages == []
    assert dataset.class_names == ("chip", "scratch", "stain", "bubble")
    np.testing.assert_array_equal(dataset.labels[1], [0, 0, 0, 1])


def test_orphan_label_and_stray_files_are_warned(root):
    _write_txt(root / "train" / "txt" / "ghost.txt", "1 0.5 0.5 0.1 0.1\n")
    _write_txt(root / "train" / "img" / "notes.md", "hello")
    dataset, messages = _load_quietly(root, "train", image_size=8)
    assert len(dataset) == 3
    assert any("ghost.txt" in m and "orphan" in m for m in messages)
    assert any("notes.md" in m for m in messages)


def test_missing_label_folder_means_no_defects_and_is_warned(tmp_path):
    _write_png(tmp_path / "train" / "img" / "a.png")
    dataset, messages = _load_quietly(tmp_path, "train", image_size=4)
    assert dataset.labels.shape == (1, 3) and not dataset.labels.any()
    assert any("defect-free" in m for m in messages)


def test_missing_or_empty_folders_raise_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_split(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match=r"no image folder .*train.*img"):
        load_split(tmp_path)
    (tmp_path / "train" / "img").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"no images found in .*img.*ROOT/\{train,test\}/\{img,txt\}"):
        load_split(tmp_path)


def test_all_images_unusable_raises(tmp_path):
    (tmp_path / "train" / "img").mkdir(parents=True)
    (tmp_path / "train" / "img" / "a.png").write_bytes(b"garbage")
    with pytest.warns(DatasetWarning), pytest.raises(DatasetError, match="none of the 1 images"):
        load_split(tmp_path)


def test_subset_keeps_every_field_aligned(root):
    dataset, _ = _load_quietly(root, "train", image_size=8)
    part = dataset.subset([2, 0])
    assert part.ids == ["c", "a"]
    np.testing.assert_array_equal(part.labels, dataset.labels[[2, 0]])
    np.testing.assert_array_equal(part.images, dataset.images[[2, 0]])
    assert part.boxes == [dataset.boxes[2], dataset.boxes[0]]
    assert part.paths == [dataset.paths[2], dataset.paths[0]]
    assert part.class_names == dataset.class_names


def test_loads_what_the_generator_writes(tmp_path):
    root = generate_synthetic(tmp_path / "syn", n_train=12, n_test=4, image_size=48, defect_rate=0.5, seed=5, progress=False)
    dataset, messages = _load_quietly(root, "train", image_size=32)
    assert messages == []
    assert dataset.images.shape == (12, 1, 32, 32)
    assert dataset.is_defective.sum() == 6
    for stem, row, boxes in zip(dataset.ids, dataset.labels, dataset.boxes):
        txt = root / "train" / "txt" / f"{stem}.txt"
        lines = txt.read_text().splitlines() if txt.exists() else []
        assert len(boxes) == len(lines)
        assert set(np.flatnonzero(row)) == {int(line.split()[0]) for line in lines}
    assert 0.0 <= dataset.images.min() and dataset.images.max() <= 1.0
    assert len(load_split(root, "test", image_size=16)) == 4


def _binary_labels(n, positives, seed=0):
    labels = np.zeros((n, 3), np.float32)
    rows = np.random.default_rng(seed).choice(n, positives, replace=False)
    labels[rows, np.arange(positives) % 3] = 1
    return labels


def test_stratified_split_keeps_the_defect_ratio_and_is_seeded():
    labels = _binary_labels(500, 50)
    train_idx, val_idx = stratified_split(labels, val_fraction=0.2, seed=0)
    assert len(val_idx) == 100 and len(train_idx) == 400
    assert not set(train_idx) & set(val_idx)
    assert sorted(np.concatenate([train_idx, val_idx]).tolist()) == list(range(500))
    assert labels[val_idx].any(1).sum() == 10
    assert labels[train_idx].any(1).sum() == 40
    again = stratified_split(labels, val_fraction=0.2, seed=0)
    np.testing.assert_array_equal(again[1], val_idx)
    other = stratified_split(labels, val_fraction=0.2, seed=1)
    assert not np.array_equal(other[1], val_idx)


def test_stratified_split_tolerates_rare_combinations_and_a_single_class():
    labels = _binary_labels(100, 12)
    labels[0] = [1, 1, 1]  # a combination seen once
    train_idx, val_idx = stratified_split(labels, val_fraction=0.25, seed=3)
    assert len(val_idx) == 25
    assert labels[val_idx].any(1).sum() in (3, 4)
    only_good = np.zeros((10, 3), np.float32)
    train_idx, val_idx = stratified_split(only_good, val_fraction=0.2)
    assert len(train_idx) == 8 and len(val_idx) == 2
    one_defect = np.zeros(10)
    one_defect[4] = 1
    train_idx, val_idx = stratified_split(one_defect, val_fraction=0.2)
    assert len(train_idx) + len(val_idx) == 10


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "train" / "img" / "deep.png"
    path.parent.mkdir(parents=True)
    Image.fromarray(np.full((6, 6), 40000, np.uint16)).save(path)
    dataset, _ = _load_quietly(tmp_path, "train", image_size=6)
    np.testing.assert_allclose(dataset.images[0, 0], (40000 >> 8) / 255, atol=1e-6)
