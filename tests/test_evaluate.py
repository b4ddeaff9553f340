"""Tests of the evaluate CLI, its input handling, and the report helpers."""

import csv
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score, precision_score, recall_score

from glasscuda import evaluate
from glasscuda.reports import markdown_table, write_csv_atomic, write_json_atomic

REPO_ROOT = Path(__file__).resolve().parents[1]
CLASSES = ("chipped_edge", "scratch", "stain")


def _write_dataset(root, split, defects_by_stem):
    """Write ROOT/split/img/<stem>.png and a txt file per defective image."""
    image_dir = root / split / "img"
    label_dir = root / split / "txt"
    image_dir.mkdir(parents=True, exist_ok=True)
    label_dir.mkdir(parents=True, exist_ok=True)
    for stem, defects in defects_by_stem.items():
        (image_dir / f"{stem}.png").write_bytes(b"")
        if defects:
            lines = [f"{CLASSES.index(name)} 0.5 0.5 0.1 0.2" for name in defects]
            (label_dir / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    return root


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _run(argv, capsys):
    """Run main in-process with every warning turned into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = evaluate.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def binary_case(tmp_path):
    """A dataset folder and a binary prediction CSV that overlap partly.

    Predictions use upper-case ids with a .PNG extension and a directory, and
    leave some images out; some prediction ids have no image.
    """
    rng = np.random.default_rng(0)
    defects = {}
    for i in range(60):
        present = [name for name in CLASSES if rng.random() < 0.15]
        defects[f"glass_{i:06d}"] = present
    root = _write_dataset(tmp_path / "data", "test", defects)
    stems = sorted(defects)
    predicted_stems = stems[:55]
    extra_ids = ["glass_900000", "glass_900001"]
    truth = np.array([1 if defects[s] else 0 for s in predicted_stems])
    logits = 2.5 * (2 * truth - 1) + rng.normal(0, 1.5, truth.size)
    probs = 1 / (1 + np.exp(-logits))
    rows = [[f"imgs/{s.upper()}.PNG", f"{p:.6f}", int(p >= 0.5)] for s, p in zip(predicted_stems, probs)]
    rows += [[extra, "0.5", 1] for extra in extra_ids]
    predictions = _write_csv(tmp_path / "preds.csv", ["id", "probability", "label"], rows)
    return {
        "root": root,
        "predictions": predictions,
        "truth": truth,
        "probs": np.array([float(f"{p:.6f}") for p in probs]),
        "only_in_annotations": stems[55:],
        "only_in_predictions": extra_ids,
    }


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("glass_000123", "glass_000123"),
        ("Glass_000123.PNG", "glass_000123"),
        ("data/test/img/glass_000123.png", "glass_000123"),
        ("C:\\data\\GLASS_000123.jpeg", "glass_000123"),
        ("  glass_000123.txt ", "glass_000123"),
        ("glass_1.5", "glass_1.5"),
        ("panel.v2.png", "panel.v2"),
    ],
)
def test_normalise_id(raw, expected):
    assert evaluate.normalise_id(raw) == expected


def test_join_counts_mismatched_ids(binary_case):
    predictions = evaluate.load_predictions(binary_case["predictions"])
    annotations = evaluate.load_annotations(binary_case["root"], "test")
    joined = evaluate.join(predictions, annotations)
    assert len(joined.ids) == binary_case["truth"].size
    np.testing.assert_array_equal(joined.truth[:, 0], binary_case["truth"])
    assert joined.only_in_predictions == binary_case["only_in_predictions"]
    assert joined.only_in_annotations == [f"{s}.png" for s in binary_case["only_in_annotations"]]
    summary = joined.summary()
    assert summary["only_in_annotations"] == len(binary_case["only_in_annotations"])
    assert summary["sample_only_in_predictions"] == binary_case["only_in_predictions"]


def test_duplicate_ids_are_an_error_that_names_them(tmp_path, binary_case, capsys):
    predictions = _write_csv(
        tmp_path / "dup.csv",
        ["id", "probability", "label"],
        [["glass_000001", "0.2", 0], ["GLASS_000001.png", "0.3", 0], ["glass_000002", "0.9", 1]],
    )
    code, out, err = _run(["--predictions", predictions, "--annotations", binary_case["root"]], capsys)
    assert code == 2
    assert out == ""
    assert "duplicate" in err and "glass_000001" in err and str(predictions) in err
    assert "glass_000002" not in err
    assert "Traceback" not in err


def test_duplicate_ids_in_annotation_csv_are_an_error(tmp_path, binary_case, capsys):
    annotations = _write_csv(tmp_path / "truth.csv", ["id", "labels"], [["a", ""], ["b", "scratch"], ["A.png", "0"]])
    code, _, err = _run(["--predictions", binary_case["predictions"], "--annotations", annotations], capsys)
    assert code == 2 and "duplicate" in err and "truth.csv" in err


@pytest.mark.parametrize(
    "problem",
    ["missing_predictions", "missing_annotations", "no_id_column", "zero_matches", "bad_score", "malformed_txt"],
)
def test_input_errors_exit_2_with_a_message_naming_the_file(problem, tmp_path, binary_case, capsys):
    predictions, annotations = binary_case["predictions"], binary_case["root"]
    expected_name = None
    if problem == "missing_predictions":
        predictions = tmp_path / "absent.csv"
        expected_name = "absent.csv"
    elif problem == "missing_annotations":
        annotations = tmp_path / "no_such_root"
        expected_name = "no_such_root"
    elif problem == "no_id_column":
        predictions = _write_csv(tmp_path / "noid.csv", ["image", "probability"], [["glass_000001", "0.4"]])
        expected_name = "noid.csv"
    elif problem == "zero_matches":
        predictions = _write_csv(tmp_path / "other.csv", ["id", "probability"], [["panel_1", "0.4"]])
        expected_name = "other.csv"
    elif problem == "bad_score":
        predictions = _write_csv(tmp_path / "bad.csv", ["id", "probability"], [["glass_000001", "high"]])
        expected_name = "bad.csv"
    elif problem == "malformed_txt":
        (annotations / "test" / "txt" / "glass_000003.txt").write_text("1 0.5 0.5 0.1 0.1\nscratch 0.5\n")
        expected_name = "glass_000003.txt:2"
    code, out, err = _run(["--predictions", predictions, "--annotations", annotations], capsys)
    assert code == 2
    assert out == ""
    assert err.startswith("glasscuda.evaluate: error:")
    assert expected_name in err
    assert "Traceback" not in err


def test_usage_errors_exit_2(binary_case, capsys):
    code, _, err = _run(["--predictions", binary_case["predictions"]], capsys)
    assert code == 2 and "--annotations" in err
    code, _, err = _run(
        ["--predictions", binary_case["predictions"], "--annotations", binary_case["root"], "--min-recall", "1.5"],
        capsys,
    )
    assert code == 2 and "--min-recall" in err


def test_binary_end_to_end(tmp_path, binary_case, capsys):
    out_dir = tmp_path / "report"
    code, out, err = _run(
        [
            "--predictions", binary_case["predictions"],
            "--annotations", binary_case["root"],
            "--threshold", "0.4",
            "--min-recall", "0.9",
            "--min-precision", "0.8",
            "--out", out_dir,
        ],
        capsys,
    )
    assert code == 0, err
    assert err == ""
    truth, probs = binary_case["truth"], binary_case["probs"]
    predicted = probs >= 0.4

    report = json.loads((out_dir / "report.json").read_text())
    assert report["join"]["matched"] == truth.size
    assert report["join"]["only_in_predictions"] == 2
    metrics_at = report["metrics"]
    assert metrics_at["threshold"] == 0.4
    assert metrics_at["f1"] == pytest.approx(f1_score(truth, predicted))
    assert metrics_at["precision"] == pytest.approx(precision_score(truth, predicted))
    assert metrics_at["recall"] == pytest.approx(recall_score(truth, predicted))
    sweep = report["sweep"]["defective"]
    grid_f1 = [f1_score(truth, probs >= t, zero_division=0) for t in np.round(np.arange(0.10, 0.951, 0.05), 2)]
    assert sweep["f1"] == pytest.approx(max(grid_f1))
    points = report["operating_points"]["defective"]
    assert [p["requirement"] for p in points] == ["recall", "precision"]
    if points[0]["reachable"]:
        assert points[0]["recall"] >= 0.9

    with open(out_dir / "threshold_table.csv", newline="") as stream:
        table = list(csv.DictReader(stream))
    assert len(table) == 18
    assert float(table[0]["f1"]) == pytest.approx(grid_f1[0])
    for name in ("pr_curve.png", "score_histogram.png"):
        with Image.open(out_dir / name) as image:
            assert image.format == "PNG"
    assert not any(p.name.endswith(".tmp") for p in out_dir.iterdir())

    assert "## Join" in out and "## Threshold sweep" in out and "## Operating points" in out
    assert f"{f1_score(truth, predicted):.4f}" in out
    assert "glass_900000" in out


def test_multilabel_with_annotation_csv_and_custom_columns(tmp_path, capsys):
    rng = np.random.default_rng(3)
    rows_truth, rows_pred, truth = [], [], []
    for i in range(80):
        present = [k for k in range(3) if rng.random() < 0.25]
        rows_truth.append([f"panel_{i}", ";".join(CLASSES[k] if i % 2 else str(k) for k in present)])
        indicator = [0 if present else 1] + [1 if k in present else 0 for k in range(3)]
        truth.append(indicator)
        scores = np.clip(np.array(indicator) * 0.5 + rng.random(4) * 0.5, 0, 1)
        rows_pred.append([f"PANEL_{i}.png"] + [f"{s:.4f}" for s in scores])
    annotations = _write_csv(tmp_path / "truth.csv", ["id", "labels"], rows_truth)
    header = ["image", "clean", "p_chipped_edge", "scratch", "prob_stain"]
    predictions = _write_csv(tmp_path / "theirs.csv", header, rows_pred)
    argv = [
        "--predictions", str(predictions),
        "--annotations", str(annotations),
        "--id-column", "image",
        "--score-columns", "p_chipped_edge,scratch,prob_stain",
    ]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    truth = np.array(truth)[:, 1:]
    scores = np.array([[float(v) for v in row[2:]] for row in rows_pred])
    report = evaluate.evaluate(evaluate.build_parser().parse_args(argv))
    assert report["inputs"]["classes"] == list(CLASSES)
    micro = f1_score(truth, scores >= 0.5, average="micro")
    assert report["metrics"]["micro_f1"] == pytest.approx(micro)
    assert report["metrics"]["macro_f1"] == pytest.approx(f1_score(truth, scores >= 0.5, average="macro"))
    assert f"micro-F1 (pooled over all classes): {micro:.4f}" in out


def _single_class_case(tmp_path, positive):
    stems = [f"glass_{i:03d}" for i in range(12)]
    root = _write_dataset(tmp_path / "data", "test", {s: ["scratch"] if positive else [] for s in stems})
    rng = np.random.default_rng(1)
    probs = rng.random(len(stems))
    predictions = _write_csv(
        tmp_path / "preds.csv",
        ["id", "probability", "label"],
        [[s, f"{p:.4f}", int(p >= 0.5)] for s, p in zip(stems, probs)],
    )
    return root, predictions, np.array([float(f"{p:.4f}") for p in probs])


@pytest.mark.parametrize("positive", [False, True])
def test_single_class_explains_and_prints_no_f1(tmp_path, capsys, positive):
    root, predictions, probs = _single_class_case(tmp_path, positive)
    argv = ["--predictions", str(predictions), "--annotations", str(root), "--min-recall", "0.9"]
    if not positive:
        argv += ["--out", str(tmp_path / "out")]
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    assert err == ""
    assert "single class" in out
    assert "undefined or meaningless" in out
    assert ("false-alarm rate" if not positive else "detection rate") in out
    for line in out.splitlines():
        if "F1" in line:
            assert not re.search(r"\d", line.replace("F1", "")), f"an F1 figure was printed: {line!r}"
    assert "## Metrics at the chosen threshold" not in out
    assert "## Threshold sweep" not in out and "## Operating points" not in out
    assert f"{np.mean(probs >= 0.5):.4g}" in out
    if positive:
        report = evaluate.evaluate(evaluate.build_parser().parse_args(argv))
    else:
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        written = sorted(p.name for p in (tmp_path / "out").iterdir())
        assert written == ["report.json", "score_histogram.png", "threshold_table.csv"]
    assert report["single_class_overall"] is True
    assert "f1" not in report["metrics"]
    assert report["metrics"]["fraction_above"] == pytest.approx(np.mean(probs >= 0.5))
    assert report["sweep"] == {}


def test_calibration_on_a_fraction_lowers_ece_of_overconfident_scores(tmp_path, capsys):
    rng = np.random.default_rng(12)
    stems = [f"glass_{i:05d}" for i in range(1200)]
    logits = rng.normal(0.0, 1.5, len(stems))
    truth = rng.random(len(stems)) < 1 / (1 + np.exp(-logits))
    root = _write_dataset(tmp_path / "data", "test", {s: ["stain"] if t else [] for s, t in zip(stems, truth)})
    overconfident = 1 / (1 + np.exp(-3.0 * logits))
    predictions = _write_csv(
        tmp_path / "preds.csv", ["id", "probability"], [[s, f"{p:.8f}"] for s, p in zip(stems, overconfident)]
    )
    code, out, err = _run(
        ["--predictions", predictions, "--annotations", root, "--calibrate-on", "0.5", "--out", tmp_path / "out"],
        capsys,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    result = report["calibration"]
    assert result["fit_n"] == 600 and result["eval_n"] == 600
    assert result["temperatures"]["defective"] == pytest.approx(3.0, rel=0.2)
    # 600 held-out images leave some binning noise in the ECE after scaling; the
    # "at least half" claim is checked on 10 000 held-out logits in test_calibration.
    assert result["ece_after"] <= 0.75 * result["ece_before"]
    assert result["nll_after"] < result["nll_before"]
    with Image.open(tmp_path / "out" / "reliability.png") as image:
        assert image.format == "PNG"
    assert "## Calibration" in out and f"{result['ece_after']:.4f}" in out


def test_calibration_on_a_separate_csv_uses_the_calibration_split(tmp_path, capsys):
    rng = np.random.default_rng(4)
    splits = {}
    for split, count in (("train", 300), ("test", 200)):
        stems = [f"{split}_{i:04d}" for i in range(count)]
        logits = rng.normal(0.0, 1.5, count)
        truth = rng.random(count) < 1 / (1 + np.exp(-logits))
        _write_dataset(tmp_path / "data", split, {s: ["chipped_edge"] if t else [] for s, t in zip(stems, truth)})
        probs = 1 / (1 + np.exp(-2.0 * logits))
        splits[split] = _write_csv(tmp_path / f"{split}.csv", ["id", "probability"], [[s, p] for s, p in zip(stems, probs)])
    code, out, err = _run(
        ["--predictions", splits["test"], "--annotations", tmp_path / "data", "--calibrate-on", splits["train"]],
        capsys,
    )
    assert code == 0, err
    assert "fitted on 300 images" in out and "measured on 200 images" in out


def test_help_answers_inputs_ids_and_single_class():
    environment = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "glasscuda.evaluate", "--help"],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "--predictions" in text and "--annotations" in text and "--calibrate-on" in text
    assert "normalisation" in text and "lower-cased" in text
    assert "single class" in text.lower() and "undefined or meaningless" in text


def test_build_parser_is_extensible():
    parser = evaluate.build_parser()
    parser.add_argument("--extra-check", action="store_true")
    args = parser.parse_args(["--predictions", "p.csv", "--annotations", "a", "--extra-check"])
    assert args.extra_check and args.split == "test" and args.threshold is None


def test_markdown_table_renders_numbers_and_missing_values():
    table = markdown_table([{"class": "a|b", "f1": 0.5, "n": 3, "recall": math.nan}], columns=["class", "f1", "n", "recall"])
    lines = table.splitlines()
    assert lines[0] == "| class | f1 | n | recall |"
    assert lines[1] == "| :--- | ---: | ---: | ---: |"
    assert lines[2] == "| a\\|b | 0.5000 | 3 | — |"


def test_atomic_writers_produce_strict_json_and_csv(tmp_path):
    path = write_json_atomic(tmp_path / "r.json", {"f1": math.nan, "n": np.int64(3), "x": np.array([0.5, np.inf])})
    text = path.read_text()
    assert json.loads(text) == {"f1": None, "n": 3, "x": [0.5, None]}
    assert "NaN" not in text and "Infinity" not in text
    write_csv_atomic(tmp_path / "t.csv", [{"a": 1, "b": math.nan}, {"a": 2}], ["a", "b"])
    assert (tmp_path / "t.csv").read_text() == "a,b\n1,\n2,\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "t.csv"]
