"""A dataset's own defect classes: ROOT/classes.txt, train --classes, and the names in every artifact."""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from glasscuda import evaluate, predict, train
from glasscuda.checkpoint import load_checkpoint
from glasscuda.data.dataset import DatasetError, load_split
from glasscuda.evaluation import EvaluationError, evaluate_predictions
from glasscuda.glass import DEFECT_CLASSES, ClassNamesError, check_class_names, parse_class_names, read_class_names

NAMES = ["dust", "bubble", "crack", "inclusion"]
OUTPUTS = ["no_defect", *NAMES]


def write_toy_dataset(root: Path, n_train: int = 40, n_test: int = 16, seed: int = 0) -> Path:
    """32x32 panels, one in two with a bright box per defect; class ids 0-3 named by classes.txt."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("\n".join(NAMES) + "\n")
    for split, count in (("train", n_train), ("test", n_test)):
        (root / split / "img").mkdir(parents=True)
        (root / split / "txt").mkdir(parents=True)
        for i in range(count):
            pixels = rng.integers(90, 130, (32, 32)).astype(np.uint8)
            lines = []
            if i % 2:
                for class_id in {i // 2 % 4, (i // 2 + 1) % 4} if i % 6 == 1 else {i // 2 % 4}:
                    x, y = (4 + 8 * class_id, 4 + 8 * ((class_id + i) % 3))
                    pixels[y:y + 6, x:x + 6] = 255 - 40 * class_id
                    lines.append(f"{class_id} {(x + 3) / 32:.4f} {(y + 3) / 32:.4f} {6 / 32:.4f} {6 / 32:.4f}")
                (root / split / "txt" / f"{split}{i:03d}.txt").write_text("\n".join(lines) + "\n")
            Image.fromarray(pixels).save(root / split / "img" / f"{split}{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> Path:
    return write_toy_dataset(tmp_path_factory.mktemp("toy") / "data")


def run_train(*args) -> int:
    return train.main([*map(str, args), "--device", "cpu", "--no-progress"])


# --------------------------------------------------------------------------
# classes.txt
# --------------------------------------------------------------------------


def test_classes_txt_names_ids_in_line_order_trimming_spaces_and_trailing_blank_lines():
    assert parse_class_names("dust \r\n  bubble\ncrack\t\n\n  \n", "c.txt") == ("dust", "bubble", "crack")


def test_read_class_names_reads_classes_txt_with_a_byte_order_mark_else_the_course_classes(tmp_path):
    assert read_class_names(tmp_path) == DEFECT_CLASSES
    (tmp_path / "classes.txt").write_text("\ufeffdust\nbubble\n", encoding="utf-8")
    assert read_class_names(tmp_path) == ("dust", "bubble")


@pytest.mark.parametrize("text, line, reason", [
    ("dust\nbubble\nDust\n", 3, "class name 'Dust' is given twice (names are compared ignoring case)"),
    ("dust\n\nbubble\n", 2, "blank line, so class id 1 has no name"),
    ("dust\nno_defect\n", 2, "class name 'no_defect' is reserved"),
    ("dust\ncrack,chip\n", 2, "class name 'crack,chip' holds one of , ; / \\"),
    ("dust\nsub/dir\n", 2, "class name 'sub/dir' holds one of"),
])
def test_a_bad_classes_txt_names_the_file_and_line(tmp_path, text, line, reason):
    path = tmp_path / "classes.txt"
    path.write_text(text)
    with pytest.raises(ClassNamesError) as caught:
        read_class_names(tmp_path)
    assert str(caught.value).startswith(f"{path}:{line}: {reason}")
    assert "line 1 names class id 0" in str(caught.value)


def test_an_empty_classes_txt_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "classes.txt").write_text("\n  \n")
    with pytest.raises(ClassNamesError, match=r"classes\.txt: no class names; write one name per line"):
        read_class_names(tmp_path)


def test_the_loader_names_its_columns_after_classes_txt(toy):
    dataset = load_split(toy, "train", image_size=32)
    assert dataset.class_names == tuple(NAMES)
    assert dataset.labels.shape == (40, 4)
    assert dataset.labels[:, 3].sum() > 0   # the fourth class is a column of its own


def test_the_loader_reports_a_bad_classes_txt_as_a_dataset_error(tmp_path):
    root = write_toy_dataset(tmp_path / "data", n_train=4, n_test=2)
    (root / "classes.txt").write_text("dust\ndust\n")
    with pytest.raises(DatasetError, match=r"classes\.txt:2: class name 'dust' is given twice"):
        load_split(root, "train", image_size=32)


def test_a_label_id_outside_the_named_classes_is_skipped_naming_file_and_line_or_stops_when_strict(tmp_path):
    root = write_toy_dataset(tmp_path / "data", n_train=6, n_test=2)
    (root / "classes.txt").write_text("dust\nbubble\ncrack\n")   # class id 3 is not named
    bad = root / "train" / "txt" / "train000.txt"
    bad.write_text("0 0.5 0.5 0.1 0.1\n3 0.2 0.2 0.1 0.1\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = load_split(root, "train", image_size=32)
    messages = [str(w.message) for w in caught]
    assert f"skipping {bad}: line 2: unknown class id 3 (known: 0 dust, 1 bubble, 2 crack); " \
           "fix or remove the line" in messages
    assert dataset.ids == [f"train{i:03d}" for i in range(1, 6)]
    with pytest.raises(DatasetError, match=r"train000\.txt: line 2: unknown class id 3 .*strict mode"):
        load_split(root, "train", image_size=32, strict=True)


# --------------------------------------------------------------------------
# --classes
# --------------------------------------------------------------------------


def test_classes_flag_is_parsed_into_trimmed_names():
    assert train.parse_args(["--task", "multilabel", "--classes", "dust, bubble,crack"]).classes == \
        ("dust", "bubble", "crack")
    assert train.parse_args(["--task", "multilabel"]).classes is None


@pytest.mark.parametrize("value, reason", [
    ("dust,,crack", "--classes 'dust,,crack': empty class name"),
    ("dust,Dust", "--classes 'dust,Dust': class name 'Dust' is given twice"),
    ("dust,no_defect", "--classes 'dust,no_defect': class name 'no_defect' is reserved"),
    ("dust;crack", "--classes 'dust;crack': class name 'dust;crack' holds one of"),
])
def test_bad_classes_flag_is_a_usage_error_naming_the_flag(capsys, value, reason):
    with pytest.raises(SystemExit) as exit_request:
        train.parse_args(["--task", "multilabel", "--classes", value])
    assert exit_request.value.code == 2
    assert f"error: {reason}" in capsys.readouterr().err


def test_check_class_names_trims_and_refuses_none():
    assert check_class_names([" a ", "b"], "x") == ("a", "b")
    with pytest.raises(ClassNamesError, match="^x: no class names given"):
        check_class_names([], "x")


def test_classes_flag_overrides_classes_txt_and_resume_refuses_other_classes(toy, tmp_path, capsys):
    out = tmp_path / "run"
    common = ["--task", "multilabel", "--data", toy, "--img-size", 32, "--warmup-epochs", 0, "--out", out]
    renamed = "a1,b2,c3,d4"
    assert run_train(*common, "--epochs", 1, "--classes", renamed) == 0
    assert load_checkpoint(out / "best.npz").header["class_names"] == ["no_defect", "a1", "b2", "c3", "d4"]
    assert json.loads((out / "metrics.json").read_text())["run"]["classes"] == ["a1", "b2", "c3", "d4"]
    capsys.readouterr()
    assert run_train(*common, "--epochs", 2, "--resume") == 2   # classes.txt's names now
    err = capsys.readouterr().err
    assert "other settings (classes: checkpoint ['a1', 'b2', 'c3', 'd4'] vs now " \
           "['dust', 'bubble', 'crack', 'inclusion'])" in err


def test_too_few_classes_for_the_label_ids_skip_those_images_with_a_warning(toy, tmp_path, capsys):
    assert run_train("--task", "multilabel", "--data", toy, "--img-size", 32, "--warmup-epochs", 0,
                     "--epochs", 1, "--classes", "dust,bubble,crack", "--strict", "--out", tmp_path / "r") == 2
    assert "unknown class id 3 (known: 0 dust, 1 bubble, 2 crack)" in capsys.readouterr().err


def test_the_binary_task_reads_classes_txt_and_counts_any_label_as_defective(toy, tmp_path):
    out = tmp_path / "binary"
    assert run_train("--data", toy, "--img-size", 32, "--epochs", 1, "--out", out) == 0
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["test"]["support"] == 8   # the 8 test images with any label line
    assert load_checkpoint(out / "best.npz").header["class_names"] == ["defect"]


# --------------------------------------------------------------------------
# End to end: train, predict, evaluate, export with the dataset's names
# --------------------------------------------------------------------------


def test_a_dataset_with_its_own_classes_trains_predicts_evaluates_and_exports_with_its_names(toy, tmp_path, capsys):
    out = tmp_path / "ml"
    assert run_train("--task", "multilabel", "--data", toy, "--img-size", 32, "--epochs", 1,
                     "--warmup-epochs", 1, "--out", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["classes"] == NAMES
    assert list(metrics["final"]["thresholds"]) == OUTPUTS
    assert list(metrics["final"]["test"]["per_class"]) == OUTPUTS
    assert list(metrics["final"]["test"]["confusion_matrices"]) == OUTPUTS
    assert list(json.loads((out / "thresholds.json").read_text())) == OUTPUTS
    header = load_checkpoint(out / "best.npz").header
    assert header["class_names"] == OUTPUTS
    assert header["model"]["n_classes"] == 5
    assert (out / "confusion_matrices.png").exists()

    preds, maps = tmp_path / "preds.csv", tmp_path / "maps"
    assert predict.main(["--checkpoint", str(out / "best.npz"), "--input", str(toy / "test" / "img"),
                         "--output", str(preds), "--device", "cpu", "--no-progress",
                         "--threshold", "0.0", "--heatmaps", str(maps)]) == 0
    with preds.open() as stream:
        rows = list(csv.DictReader(stream))
    assert list(rows[0]) == ["id", *[f"p_{name}" for name in OUTPUTS], "labels"]
    assert rows[0]["labels"] == ";".join(NAMES)   # threshold 0: every defect class is predicted
    assert {p.name for p in maps.glob("*.png")} == {f"{row['id']}_{name}.png" for row in rows for name in NAMES}

    capsys.readouterr()
    assert evaluate.main(["--predictions", str(preds), "--annotations", str(toy), "--out", str(tmp_path / "eval"),
                          "--heatmap-peaks", str(maps / "peaks.csv")]) == 0
    markdown = capsys.readouterr().out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["inputs"]["classes"] == OUTPUTS
    assert list(report["metrics"]["per_class"]) == OUTPUTS
    assert list(report["heatmaps"]["per_class"]) == NAMES
    with_inclusion = sum(any(line.split()[0] == "3" for line in path.read_text().splitlines())
                         for path in (toy / "test" / "txt").glob("*.txt"))
    assert report["truth"]["inclusion"]["positives"] == with_inclusion > 0
    for name in NAMES:
        assert f"| {name} " in markdown

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from glasscuda.export.__main__ import main as export_main
    model_path = tmp_path / "model.onnx"
    assert export_main(["--checkpoint", str(out / "best.npz"), "--onnx", str(model_path)]) == 0
    meta = {p.key: p.value for p in onnx.load(str(model_path)).metadata_props}
    assert json.loads(meta["class_names"]) == OUTPUTS


def test_evaluate_refuses_predictions_made_for_other_classes_than_the_dataset(toy, tmp_path):
    preds = tmp_path / "preds.csv"
    preds.write_text("id,p_no_defect,p_chipped_edge,p_scratch,p_stain,labels\ntest000,0.9,0.1,0.1,0.1,no_defect\n")
    with pytest.raises(EvaluationError, match="it predicts no_defect, chipped_edge, scratch, stain, so it was made "
                                              "for other classes than the annotations'"):
        evaluate_predictions(preds, toy)


def test_evaluate_names_an_annotation_csv_classes_with_the_classes_flag(tmp_path, capsys):
    preds = tmp_path / "preds.csv"
    preds.write_text("id,p_no_defect,p_dust,p_bubble,labels\na,0.1,0.9,0.2,dust\nb,0.8,0.1,0.3,no_defect\n"
                     "c,0.1,0.2,0.7,bubble\n")
    truth = tmp_path / "truth.csv"
    truth.write_text("id,labels\na,Dust\nb,\nc,1\n")
    assert evaluate.main(["--predictions", str(preds), "--annotations", str(truth), "--classes", "dust,bubble",
                          "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["inputs"]["classes"] == ["no_defect", "dust", "bubble"]
    assert report["truth"]["dust"] == {"positives": 1, "negatives": 2}
    assert report["truth"]["bubble"] == {"positives": 1, "negatives": 2}
    assert evaluate.main(["--predictions", str(preds), "--annotations", str(truth)]) == 2
    assert "cannot tell the prediction format" in capsys.readouterr().err
