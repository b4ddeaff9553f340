"""Tests of the synthetic glass generator: layout, labels, boxes, reproducibility, caching."""

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glasscuda.data import rendering, synthetic
from glasscuda.data.synthetic import (
    CLASS_NAMES,
    generate_synthetic,
    render_glass,
    synthetic_dataset,
)

SMALL = dict(n_train=40, n_test=10, image_size=64, defect_rate=0.5, seed=3)


def _files(root: Path):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _label_lines(root: Path, split: str):
    lines = {}
    for txt in sorted((root / split / "txt").glob("*.txt")):
        lines[txt.stem] = [line.split() for line in txt.read_text().splitlines() if line.strip()]
    return lines


def _box_pixels(box, size):
    """Pixel index ranges [x0, x1) x [y0, y1) of a normalised (cx, cy, w, h) box."""
    cx, cy, w, h = box
    x0 = int(round((cx - w / 2) * size))
    x1 = int(round((cx + w / 2) * size))
    y0 = int(round((cy - h / 2) * size))
    y1 = int(round((cy + h / 2) * size))
    return x0, x1, y0, y1


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "set", progress=False, **SMALL)


def test_layout_matches_the_course_dataset(small_set):
    for split, count in (("train", SMALL["n_train"]), ("test", SMALL["n_test"])):
        pngs = sorted((small_set / split / "img").glob("*.png"))
        assert len(pngs) == count
        stems = {p.stem for p in pngs}
        txt_stems = {p.stem for p in (small_set / split / "txt").glob("*.txt")}
        assert txt_stems <= stems
        assert all(stem.startswith("glass_") for stem in stems)
        with Image.open(pngs[0]) as img:
            assert img.mode == "L"
            assert img.size == (SMALL["image_size"], SMALL["image_size"])
    train_stems = {p.stem for p in (small_set / "train" / "img").glob("*.png")}
    test_stems = {p.stem for p in (small_set / "test" / "img").glob("*.png")}
    assert not train_stems & test_stems
    assert not [p for p in small_set.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"


def test_every_label_line_is_a_valid_tight_yolo_box(small_set):
    for split in ("train", "test"):
        for stem, lines in _label_lines(small_set, split).items():
            assert lines, f"{stem}: empty label file"
            for tokens in lines:
                assert len(tokens) == 5, tokens
                assert tokens[0] in {"0", "1", "2"}
                cx, cy, w, h = map(float, tokens[1:])
                assert 0 < w <= 1 and 0 < h <= 1
                assert cx - w / 2 >= -1e-6 and cx + w / 2 <= 1 + 1e-6
                assert cy - h / 2 >= -1e-6 and cy + h / 2 <= 1 + 1e-6


def test_defect_rate_and_multi_defect_images(small_set):
    manifest = json.loads((small_set / "manifest.json").read_text())
    for split, count in (("train", SMALL["n_train"]), ("test", SMALL["n_test"])):
        lines = _label_lines(small_set, split)
        assert len(lines) == round(count * SMALL["defect_rate"])
        assert manifest["splits"][split]["defective_images"] == len(lines)
        per_class = Counter(CLASS_NAMES[int(tokens[0])] for rows in lines.values() for tokens in rows)
        assert dict(per_class) == {k: v for k, v in manifest["splits"][split]["defects_per_class"].items() if v}
    train_lines = _label_lines(small_set, "train")
    assert sum(len(rows) > 1 for rows in train_lines.values()) == 4  # 20% of 20 defective images
    assert {tokens[0] for rows in train_lines.values() for tokens in rows} == {"0", "1", "2"}


def test_default_defect_rate_is_about_one_in_ten():
    plan = synthetic._split_plan(seed=0, split_index=0, n_images=3000, defect_rate=0.1)
    defective = [classes for classes in plan if classes]
    assert len(defective) == 300
    first = Counter(classes[0] for classes in defective)
    assert set(first.values()) == {100}
    multi = sum(len(classes) > 1 for classes in defective)
    assert multi == 60
    assert any(len(set(classes)) > 1 for classes in defective)


def test_manifest_is_written_with_params_and_counts(small_set):
    manifest = json.loads((small_set / "manifest.json").read_text())
    assert manifest["params"] == SMALL
    assert manifest["generator_version"] == synthetic.GENERATOR_VERSION
    assert manifest["class_names"] == list(CLASS_NAMES)
    assert manifest["splits"]["train"]["images"] == SMALL["n_train"]
    assert manifest["splits"]["test"]["images"] == SMALL["n_test"]


def test_same_seed_gives_identical_bytes_and_other_seed_differs(small_set, tmp_path):
    again = generate_synthetic(tmp_path / "again", progress=False, **SMALL)
    assert _files(again) == _files(small_set)
    for name in _files(small_set):
        assert (again / name).read_bytes() == (small_set / name).read_bytes(), name
    other = generate_synthetic(tmp_path / "other", progress=False, **{**SMALL, "seed": 4, "n_test": 0})
    first = "train/img/glass_000000.png"
    assert (other / first).read_bytes() != (small_set / first).read_bytes()


def test_an_image_does_not_depend_on_render_order(small_set):
    plan = synthetic._split_plan(SMALL["seed"], 0, SMALL["n_train"], SMALL["defect_rate"])
    for index in (7, 0, 23):
        rendered = render_glass(synthetic._image_rng(SMALL["seed"], 0, index), SMALL["image_size"], plan[index])
        with Image.open(small_set / "train" / "img" / f"glass_{index:06d}.png") as img:
            np.testing.assert_array_equal(np.asarray(img), rendered.image)


@pytest.mark.parametrize("class_id", [0, 1, 2])
def test_box_is_tight_around_what_the_defect_changes(class_id):
    size = 96
    for seed in range(6):
        rendered = render_glass(np.random.default_rng(seed), size, (class_id,))
        ((cls, box),) = rendered.defects
        assert cls == class_id
        delta = np.abs(rendered.noise_free - rendered.clean)
        strong = delta >= rendering.BOX_THRESHOLD * delta.max()
        x0, x1, y0, y1 = _box_pixels(box, size)
        inside = np.zeros_like(strong)
        inside[y0:y1, x0:x1] = True
        assert not (strong & ~inside).any(), "defect pixels outside its box"
        # Tight: every side of the box touches a strongly changed pixel.
        assert strong[y0, x0:x1].any() and strong[y1 - 1, x0:x1].any()
        assert strong[y0:y1, x0].any() and strong[y0:y1, x1 - 1].any()
        # Most of the change lies in the box, even for soft-edged stains.
        assert delta[inside].sum() >= 0.9 * delta.sum()


def test_defect_free_render_of_the_same_panel_differs_only_inside_the_boxes():
    size = 96
    for seed in range(5):
        classes = (seed % 3, (seed + 1) % 3)
        with_defects = render_glass(np.random.default_rng(seed), size, classes)
        without = render_glass(np.random.default_rng(seed), size, ())
        np.testing.assert_array_equal(with_defects.clean, without.clean)
        diff = np.abs(with_defects.image.astype(int) - without.image.astype(int))
        inside = np.zeros(diff.shape, bool)
        for _, box in with_defects.defects:
            x0, x1, y0, y1 = _box_pixels(box, size)
            inside[max(y0 - 1, 0) : y1 + 1, max(x0 - 1, 0) : x1 + 1] = True
        assert diff[inside].sum() > 0
        assert diff[~inside].max(initial=0) <= 0.3 * diff.max()
        assert diff[inside].sum() >= 0.9 * diff.sum()


def test_faint_scratches_stay_above_the_noise():
    for seed in range(40):
        rng = np.random.default_rng(seed)
        scene = rendering._sample_scene(rng, 64)
        row = rendering._sample_scratch(rng, scene)
        assert abs(row[-1]) >= rendering.MIN_SCRATCH_CONTRAST_SIGMAS * scene.noise_sigma - 1e-12


def test_existing_nonempty_root_is_refused(tmp_path):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    with pytest.raises(FileExistsError, match="taken"):
        generate_synthetic(tmp_path / "taken", n_train=2, n_test=0, image_size=32, progress=False)


def test_crash_leaves_no_half_written_root(tmp_path, monkeypatch):
    calls = []

    def failing_write(split_dir, stem, rendered):
        calls.append(stem)
        if len(calls) == 3:
            raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "_write_image", failing_write)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_synthetic(tmp_path / "set", n_train=6, n_test=0, image_size=32, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_invalid_parameters_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="colour"):
        synthetic_dataset(cache_dir=tmp_path, colour=True)
    with pytest.raises(ValueError, match="defect_rate"):
        generate_synthetic(tmp_path / "x", defect_rate=1.5, progress=False)


TINY = dict(n_train=6, n_test=2, image_size=32, defect_rate=0.5, seed=1)


def test_cache_is_generated_once_and_reused(tmp_path, monkeypatch):
    root = synthetic_dataset(cache_dir=tmp_path, progress=False, **TINY)
    assert root.parent == tmp_path and root.name.startswith(f"synthetic-v{synthetic.GENERATOR_VERSION}-")
    stamp = (root / "manifest.json").stat().st_mtime_ns

    def must_not_render(*args, **kwargs):
        raise AssertionError("regenerated a cached dataset")

    monkeypatch.setattr(synthetic, "_render_into_temp", must_not_render)
    assert synthetic_dataset(cache_dir=tmp_path, progress=False, **TINY) == root
    assert (root / "manifest.json").stat().st_mtime_ns == stamp


def test_cache_folders_differ_by_params_and_honour_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("GLASSCUDA_CACHE", str(tmp_path / "env_cache"))
    first = synthetic_dataset(progress=False, **TINY)
    second = synthetic_dataset(progress=False, **{**TINY, "seed": 2})
    assert first.parent == tmp_path / "env_cache" == second.parent
    assert first != second
    assert json.loads((second / "manifest.json").read_text())["params"]["seed"] == 2


def test_cache_without_valid_manifest_is_regenerated(tmp_path):
    root = synthetic_dataset(cache_dir=tmp_path, progress=False, **TINY)
    (root / "manifest.json").unlink()
    (root / "train" / "img" / "glass_000000.png").write_bytes(b"broken")
    again = synthetic_dataset(cache_dir=tmp_path, progress=False, **TINY)
    assert again == root
    assert (root / "manifest.json").exists()
    with Image.open(root / "train" / "img" / "glass_000000.png") as img:
        img.load()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_losing_a_concurrent_first_use_returns_the_winners_folder(tmp_path, monkeypatch):
    real_render = synthetic._render_into_temp

    def render_while_another_process_finishes(root, params, progress):
        tmp = real_render(root, params, progress)
        winner = real_render(root, params, progress)
        os.rename(winner, root)
        return tmp

    monkeypatch.setattr(synthetic, "_render_into_temp", render_while_another_process_finishes)
    root = synthetic_dataset(cache_dir=tmp_path, progress=False, **TINY)
    assert json.loads((root / "manifest.json").read_text())["params"] == synthetic._validated_params(**TINY)
    assert [p.name for p in tmp_path.iterdir()] == [root.name]
