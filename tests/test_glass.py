"""The one home of each shared piece: the glass contract, numerics, eval mode, typed options, the evaluation core."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import special

from glasscuda import evaluate, nn, train
from glasscuda.data import DatasetError, load_split
from glasscuda.evaluation import EvaluationError, EvaluationReport, evaluate_predictions, read_defect_file
from glasscuda.glass import DEFECT_CLASSES, LabelError, decide, parse_label_line, parse_label_text
from glasscuda.numerics import logit, sigmoid, softmax
from glasscuda.tasks.options import OPTIONS, MultilabelOptions, TaskOptions

MALFORMED = [
    ("7 0.5 0.5 0.1 0.1", "unknown class id 7"),
    ("x 0.5 0.5 0.1 0.1", "class id 'x' is not an integer"),
    ("1 0.5 abc 0.1 0.1", "'abc' is not a number"),
    ("1 0.5 0.5 0.1", "3 values after the class id"),
    ("1 0.5 0.5", "2 values after the class id"),
    ("1 0.5 1.5 0.1 0.1", "coordinate 1.5 is outside [0, 1]"),
    ("2 0.5 nan 0.1 0.1", "'nan' is not finite"),
]


def _dataset(root, label_text):
    (root / "train" / "img").mkdir(parents=True)
    (root / "train" / "txt").mkdir()
    from PIL import Image
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "train" / "img" / "a.png")
    (root / "train" / "txt" / "a.txt").write_text(label_text)
    return root


@pytest.mark.parametrize("line,reason", MALFORMED)
def test_loader_and_evaluate_reject_the_same_lines_for_the_same_reason(tmp_path, line, reason):
    with pytest.raises(LabelError) as parsed:
        parse_label_line(line, 2)
    assert parsed.value.line == 2 and reason in parsed.value.reason
    root = _dataset(tmp_path / "data", f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DatasetError, match="a.txt: line 2: .*" + reason.replace("[", r"\[").replace("]", r"\]")):
        load_split(root, "train", image_size=8, strict=True)
    with pytest.raises(EvaluationError) as caught:
        read_defect_file(root / "train" / "txt" / "a.txt")
    assert "a.txt:2:" in str(caught.value) and reason in str(caught.value)


def test_boxes_and_polygons_read_alike_by_loader_and_evaluate(tmp_path):
    text = "0 0.5 0.5 0.2 0.1\n\n2 0.1 0.2 0.5 0.2 0.3 0.6\n1\n"
    class_ids, boxes = parse_label_text(text)
    assert class_ids == [0, 2, 1]
    assert boxes[0] == (0, 0.5, 0.5, 0.2, 0.1)
    assert boxes[1][0] == 2 and np.allclose(boxes[1][1:], (0.3, 0.4, 0.4, 0.4))
    root = _dataset(tmp_path / "data", text)
    loaded = load_split(root, "train", image_size=8, strict=True)
    assert loaded.boxes == [boxes]
    present, located = read_defect_file(root / "train" / "txt" / "a.txt")
    assert present == {"chipped_edge", "scratch", "stain"}
    assert located == [(DEFECT_CLASSES[c], tuple(box)) for c, *box in boxes]


def test_decision_rule_reports_defects_over_a_confident_no_defect():
    probs = np.array([[0.9, 0.1, 0.6, 0.2],    # no_defect passes, but so does scratch: scratch wins
                      [0.2, 0.1, 0.2, 0.3],    # nothing passes: no defect
                      [0.1, 0.7, 0.1, 0.9]])
    decided = decide(probs, [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_array_equal(decided, [[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 1]])


def test_numerics_agree_with_scipy():
    z = np.linspace(-30.0, 30.0, 601)
    np.testing.assert_allclose(sigmoid(z), special.expit(z), rtol=1e-9, atol=1e-15)
    p = np.linspace(1e-6, 1 - 1e-6, 501)
    np.testing.assert_allclose(logit(p), special.logit(p), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(sigmoid(logit(p)), p, rtol=1e-9)
    rows = np.random.default_rng(0).normal(0, 50, (20, 7))
    np.testing.assert_allclose(softmax(rows, axis=1), special.softmax(rows, axis=1), rtol=1e-12, atol=1e-300)


def test_evaluating_is_eval_mode_inside_and_restores_the_mode_after():
    model = nn.Sequential(nn.Linear(3, 2), nn.ReLU())
    with model.evaluating():
        assert not any(m.training for m in model.modules())
    assert all(m.training for m in model.modules())
    model.eval()
    with pytest.raises(RuntimeError), model.evaluating():
        raise RuntimeError("inside")
    assert not any(m.training for m in model.modules())
    model.train()
    with pytest.raises(RuntimeError), model.evaluating():
        raise RuntimeError("inside")
    assert all(m.training for m in model.modules())


def test_tasks_get_typed_options_from_the_command_line():
    args = train.parse_args(["--task", "multilabel", "--no-progress", "--epochs", "3", "--gamma", "1.5",
                             "--no-tta"])
    options = OPTIONS["multilabel"].from_namespace(args)
    assert isinstance(options, MultilabelOptions) and isinstance(options, TaskOptions)
    assert (options.epochs, options.gamma, options.tta, options.progress) == (3, 1.5, False, False)
    assert options.img_size == 128 and options.batch_size == 32
    with pytest.raises(TypeError):
        TaskOptions(task="binary", epochs=1)          # no hidden defaults: the parser holds them


def test_evaluation_core_returns_the_report_the_command_line_writes(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "test" / "img").mkdir(parents=True)
    (root / "test" / "txt").mkdir()
    rng = np.random.default_rng(3)
    rows = ["id,probability"]
    for i in range(40):
        (root / "test" / "img" / f"g{i:02d}.png").write_bytes(b"")
        defective = i % 4 == 0
        if defective:
            (root / "test" / "txt" / f"g{i:02d}.txt").write_text("1 0.5 0.5 0.1 0.1\n")
        rows.append(f"g{i:02d},{min(1.0, 0.6 * defective + 0.4 * rng.random()):.4f}")
    preds = tmp_path / "preds.csv"
    preds.write_text("\n".join(rows) + "\n")
    report = evaluate_predictions(preds, root, thresholds=[0.4], min_recall=0.9)
    assert isinstance(report, EvaluationReport)
    assert report.scores.shape == (40, 1) and int(report.truth_matrix.sum()) == 10
    assert evaluate.main(["--predictions", str(preds), "--annotations", str(root), "--threshold", "0.4",
                          "--min-recall", "0.9", "--out", str(tmp_path / "out")]) == 0
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    files = written.pop("files")
    assert len(files) == 4 and files[-1].endswith("report.json")
    assert written == json.loads(json.dumps(report.to_dict()))
    with pytest.raises(EvaluationError, match="--threshold: 2 values for 1 score columns"):
        evaluate_predictions(preds, root, thresholds=[0.4, 0.5])
