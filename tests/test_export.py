"""ONNX export checked by ONNX Runtime, predict --onnx, and PyTorch weights both ways."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from PIL import Image  # noqa: E402

from glasscuda import predict  # noqa: E402
from glasscuda.checkpoint import load_model, save_checkpoint  # noqa: E402
from glasscuda.data import render_glass  # noqa: E402
from glasscuda.data.cifar10 import CLASS_NAMES as CIFAR_NAMES  # noqa: E402
from glasscuda.data.sampling import Normalizer  # noqa: E402
from glasscuda.evaluation import evaluate_predictions  # noqa: E402
from glasscuda.export import (ExportError, OnnxModel, export_onnx, from_torch_state_dict,  # noqa: E402
                              to_torch_state_dict, torch_model)
from glasscuda.export import __main__ as export_cli  # noqa: E402
from glasscuda.export import graph  # noqa: E402
from glasscuda.glass import MULTILABEL_CLASSES  # noqa: E402
from glasscuda.models import BinaryDetector, CifarNet, MultiLabelNet, build_model  # noqa: E402

SIZE = 32
TOL = 1e-5
TASKS = ("binary", "multilabel", "cifar10")
GLASS_NAMES = list(MULTILABEL_CLASSES)


def _checkpoint(path, task):
    """A random-weight network saved with the header its task's training run writes."""
    if task == "binary":
        model = BinaryDetector(image_size=SIZE, seed=3)
        header = {"task": "binary", "run": {"task": "binary"}, "epoch": 1,
                  "normalization": {"mean": [0.47], "std": [0.11]}, "threshold": 0.35, "class_names": ["defect"]}
    elif task == "multilabel":
        model = MultiLabelNet(image_size=SIZE, seed=3)
        header = {"task": "multilabel", "run": {"task": "multilabel"}, "epoch": 1,
                  "normalization": {"mean": [0.47], "std": [0.11]}, "thresholds": [0.5, 0.45, 0.5, 0.55],
                  "tta": True, "class_names": GLASS_NAMES, "class_weights": [1.0, 2.0, 2.0, 2.0], "gamma": 2.0}
    else:
        model = CifarNet(image_size=SIZE, seed=3)
        header = {"task": "cifar10", "run": {"task": "cifar10"}, "epoch": 1, "class_names": list(CIFAR_NAMES),
                  "normalization": {"mean": [0.49, 0.48, 0.45], "std": [0.25, 0.24, 0.26]}}
    return save_checkpoint(path, model, header)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    return {task: _checkpoint(folder / f"{task}.npz", task) for task in TASKS}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """A small glass test split at SIZE pixels with its labels, and RGB noise images for cifar10."""
    root = tmp_path_factory.mktemp("glass")
    (root / "test" / "img").mkdir(parents=True)
    (root / "test" / "txt").mkdir()
    rng = np.random.default_rng(7)
    for i in range(16):
        rendered = render_glass(rng, SIZE, [] if i % 4 == 0 else [i % 4 - 1])
        Image.fromarray(rendered.image).save(root / "test" / "img" / f"g{i:02d}.png")
        if rendered.defects:
            lines = "".join(f"{c} {' '.join(f'{v:.6f}' for v in box)}\n" for c, box in rendered.defects)
            (root / "test" / "txt" / f"g{i:02d}.txt").write_text(lines)
    rgb = root / "rgb"
    rgb.mkdir()
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(rgb / f"c{i}.png")
    return root


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _pixels(task, n=6, seed=0):
    rng = np.random.default_rng(seed)
    channels = 3 if task == "cifar10" else 1
    return rng.random((n, channels, SIZE, SIZE), dtype=np.float32)


def _expected_probs(path, pixels):
    """glasscuda's probabilities, written out independently of the export code."""
    model, header = load_model(path, "cpu")
    x = Normalizer.from_dict(header["normalization"])(pixels)
    if header["task"] == "multilabel":   # predict's TTA: mean sigmoid of the image and its two flips
        views = (x, x[:, :, :, ::-1], x[:, :, ::-1, :])
        return np.clip(sum(model.predict_proba(np.ascontiguousarray(v)) for v in views) / 3, 1e-7, 1 - 1e-7)
    return model.predict_proba(x)


@pytest.mark.parametrize("task", TASKS)
def test_onnxruntime_reproduces_glasscuda(task, checkpoints, tmp_path):
    out = tmp_path / f"{task}.onnx"
    report = export_onnx(checkpoints[task], out)
    assert out.is_file() and report.path == out
    assert report.max_abs_diff <= TOL and report.n_checked == 16

    proto = onnx.load(out)
    onnx.checker.check_model(proto, full_check=True)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", 17)]
    assert proto.ir_version == 8

    pixels = _pixels(task, seed=1)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"pixels": pixels})[0]
    expected = _expected_probs(checkpoints[task], pixels)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= TOL
    if task == "cifar10":
        np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_metadata_holds_what_deployment_needs(task, checkpoints, tmp_path):
    out = tmp_path / "m.onnx"
    export_onnx(checkpoints[task], out, n_check=2)
    meta = {p.key: p.value for p in onnx.load(out).metadata_props}
    assert meta["task"] == task
    assert json.loads(meta["normalization"]) == load_model(checkpoints[task], "cpu")[1]["normalization"]
    names = json.loads(meta["class_names"])
    if task == "binary":
        assert names == ["defect"] and json.loads(meta["threshold"]) == 0.35
    elif task == "multilabel":
        assert names == GLASS_NAMES and json.loads(meta["thresholds"]) == [0.5, 0.45, 0.5, 0.55]
        assert json.loads(meta["tta"]) is True
    else:
        assert names == list(CIFAR_NAMES) and "threshold" not in meta and "thresholds" not in meta
    assert "[0, 1]" in meta["input"] and meta["decision"]
    model = OnnxModel(out)
    assert model.task == task and model.class_names == names
    assert model.input_shape == ((3 if task == "cifar10" else 1), SIZE, SIZE)


def test_temperature_and_tta_options_change_the_graph_as_predict_would(checkpoints, tmp_path):
    path = checkpoints["multilabel"]
    pixels = _pixels("multilabel", seed=2)
    model, header = load_model(path, "cpu")
    x = Normalizer.from_dict(header["normalization"])(pixels)
    logits = model.forward(x).astype(np.float64)
    export_onnx(path, tmp_path / "t.onnx", tta=False, temperature=2.5)
    got = OnnxModel(tmp_path / "t.onnx").predict(pixels)
    assert np.max(np.abs(got - _sigmoid(logits / 2.5))) <= TOL
    assert np.max(np.abs(got - _sigmoid(logits))) > 1e-3   # the temperature did something


@pytest.mark.parametrize("opset", [13, 21])
def test_other_opsets(opset, checkpoints, tmp_path):
    report = export_onnx(checkpoints["multilabel"], tmp_path / "m.onnx", n_check=4, opset=opset)
    assert report.max_abs_diff <= TOL
    assert [o.version for o in onnx.load(tmp_path / "m.onnx").opset_import] == [opset]
    with pytest.raises(ExportError, match="opset 12 is not supported"):
        export_onnx(checkpoints["binary"], tmp_path / "old.onnx", opset=12)


def test_cli_writes_and_reports_the_difference(checkpoints, tmp_path, capsys):
    out = tmp_path / "b.onnx"
    assert export_cli.main(["--checkpoint", str(checkpoints["binary"]), "--onnx", str(out),
                            "--check-count", "4"]) == 0
    printed = capsys.readouterr().out
    assert out.is_file()
    assert "4 synthetic glass panels" in printed and "max abs difference" in printed


def test_cli_checks_on_the_given_images(checkpoints, dataset, tmp_path, capsys):
    out = tmp_path / "c.onnx"
    assert export_cli.main(["--checkpoint", str(checkpoints["cifar10"]), "--onnx", str(out),
                            "--images", str(dataset / "rgb")]) == 0
    assert "8 of the given images" in capsys.readouterr().out


def test_check_defaults_to_the_runs_own_test_images(dataset, tmp_path, capsys):
    model = BinaryDetector(image_size=SIZE, seed=4)
    path = save_checkpoint(tmp_path / "run.npz", model, {
        "task": "binary", "run": {"task": "binary", "data": str(dataset)}, "threshold": 0.5,
        "normalization": {"mean": [0.47], "std": [0.11]}, "class_names": ["defect"]})
    assert export_cli.main(["--checkpoint", str(path), "--onnx", str(tmp_path / "r.onnx"), "--check-count", "5"]) == 0
    assert f"5 test images of {dataset}" in capsys.readouterr().out


def test_a_mismatch_fails_and_writes_nothing(checkpoints, tmp_path, monkeypatch, capsys):
    real = graph.glasscuda_probabilities
    monkeypatch.setattr(graph, "glasscuda_probabilities", lambda *a, **k: real(*a, **k) + 2e-5)
    out = tmp_path / "bad.onnx"
    assert export_cli.main(["--checkpoint", str(checkpoints["binary"]), "--onnx", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert "disagree" in err and "nothing written" in err and len(err.splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def _one_line_error(argv, capsys, expected_code=2):
    assert export_cli.main(argv) == expected_code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    return err


def test_damaged_or_unknown_checkpoints_are_one_line_errors(checkpoints, tmp_path, capsys):
    out = tmp_path / "x.onnx"
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(checkpoints["binary"].read_bytes()[:5000])
    text = tmp_path / "text.npz"
    text.write_text("not a checkpoint\n")
    for bad in (truncated, text, tmp_path / "missing.npz"):
        assert bad.name in _one_line_error(["--checkpoint", str(bad), "--onnx", str(out)], capsys)

    model = BinaryDetector(image_size=SIZE)
    unknown = save_checkpoint(tmp_path / "unknown.npz", model,
                              {"task": "binary", "normalization": {"mean": [0.5], "std": [0.2]}})
    with np.load(unknown) as archive:
        arrays = dict(archive)
    header = json.loads(str(arrays["header"]))
    header["model"]["architecture"] = "resnet50"
    arrays["header"] = np.array(json.dumps(header))
    np.savez(unknown, **arrays)
    err = _one_line_error(["--checkpoint", str(unknown), "--onnx", str(out)], capsys)
    assert "unknown.npz" in err and "resnet50" in err
    assert not out.exists()


def test_missing_onnxruntime_says_how_to_install_it(checkpoints, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # makes the import fail
    err = _one_line_error(["--checkpoint", str(checkpoints["binary"]), "--onnx", str(tmp_path / "m.onnx")], capsys)
    assert "onnxruntime is not installed (pip install 'glasscuda[export]')" in err


def test_python_m_glasscuda_export_exit_code(tmp_path):
    bad = tmp_path / "damaged.npz"
    bad.write_bytes(b"PK\x03\x04 damaged")
    result = subprocess.run([sys.executable, "-m", "glasscuda.export", "--checkpoint", str(bad),
                             "--onnx", str(tmp_path / "m.onnx")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "damaged.npz" in result.stderr


def test_onnx_input_size_mismatch_says_so(checkpoints, tmp_path):
    out = tmp_path / "b.onnx"
    export_onnx(checkpoints["binary"], out, n_check=2)
    with pytest.raises(ExportError, match=r"takes images of 1x32x32 .*the images given are 1x64x64"):
        OnnxModel(out).predict(np.zeros((2, 1, 64, 64), np.float32))
    with pytest.raises(ExportError, match=r"takes images of 1x32x32 .*the images given are 3x32x32"):
        export_onnx(checkpoints["binary"], tmp_path / "other.onnx", images=np.zeros((2, 3, SIZE, SIZE), np.float32))
    assert not (tmp_path / "other.onnx").exists()


def _read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def _evaluate(csv_path, dataset, threshold=None):
    """The metrics evaluate reports for a prediction CSV against the dataset's labels."""
    report = evaluate_predictions(csv_path, dataset, split="test", thresholds=threshold)
    return report.metrics


@pytest.mark.parametrize("task", TASKS)
def test_predict_onnx_writes_predicts_csv(task, checkpoints, dataset, tmp_path, capsys):
    onnx_path = tmp_path / "m.onnx"
    export_onnx(checkpoints[task], onnx_path, n_check=2)
    images = dataset / ("rgb" if task == "cifar10" else "test/img")
    ours, theirs = tmp_path / "glasscuda.csv", tmp_path / "onnx.csv"
    assert predict.main(["--checkpoint", str(checkpoints[task]), "--input", str(images), "--output", str(ours),
                         "--device", "cpu"]) == 0
    assert predict.main(["--onnx", str(onnx_path), "--input", str(images), "--output", str(theirs)]) == 0
    (columns, rows), (onnx_columns, onnx_rows) = _read_csv(ours), _read_csv(theirs)
    assert onnx_columns == columns and len(onnx_rows) == len(rows) == (8 if task == "cifar10" else 16)
    scores = [i for i, c in enumerate(columns) if c == "probability" or c.startswith("p_")]
    for row, onnx_row in zip(rows, onnx_rows):
        assert onnx_row[0] == row[0] and onnx_row[-1] == row[-1]       # id and decided label(s)
        assert max(abs(float(row[i]) - float(onnx_row[i])) for i in scores) <= TOL
    if task == "cifar10":
        return
    # a threshold in the widest gap between two middle scores, so F1 is neither 0 nor trivial
    first = np.sort([float(r[scores[-1 if task == "binary" else 1]]) for r in rows])
    gaps = np.diff(first[4:12])
    threshold = [(first[4 + gaps.argmax()] + first[5 + gaps.argmax()]) / 2] if task == "binary" else None
    m_ours, m_onnx = _evaluate(ours, dataset, threshold), _evaluate(theirs, dataset, threshold)
    assert json.dumps(m_onnx, sort_keys=True) == json.dumps(m_ours, sort_keys=True)
    if task == "binary":
        assert 0 < m_ours["f1"] < 1


def test_predict_onnx_rejects_options_fixed_by_the_graph(checkpoints, dataset, tmp_path, capsys):
    onnx_path = tmp_path / "ml.onnx"
    export_onnx(checkpoints["multilabel"], onnx_path, n_check=2)
    base = ["--onnx", str(onnx_path), "--input", str(dataset / "test/img"), "--output", str(tmp_path / "p.csv")]
    for extra, words in ((["--heatmaps", str(tmp_path / "maps")], "--heatmaps needs the checkpoint"),
                         (["--no-tta"], "exported with TTA inside"),
                         (["--temperature", "2"], "--temperature"),
                         (["--threshold", "0.5,0.5"], "one per class")):
        assert predict.main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1
    assert not (tmp_path / "p.csv").exists()


# PyTorch ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", TASKS)
def test_checkpoint_weights_load_into_torch(task, checkpoints):
    torch = pytest.importorskip("torch")
    model, header = load_model(checkpoints[task], "cpu")
    network = torch_model(header["model"])
    network.load_state_dict(to_torch_state_dict(checkpoints[task]), strict=True)
    x = Normalizer.from_dict(header["normalization"])(_pixels(task, seed=4))
    with torch.no_grad():
        theirs = network.eval()(torch.from_numpy(x)).numpy()
    ours = model.forward(x)
    assert theirs.shape == ours.shape
    np.testing.assert_allclose(theirs, ours, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("task", TASKS)
def test_torch_state_dict_loads_into_glasscuda(task, checkpoints):
    torch = pytest.importorskip("torch")
    config = load_model(checkpoints[task], "cpu")[1]["model"]
    torch.manual_seed(11)
    network = torch_model(config).eval()
    model = build_model(config, seed=None)
    model.load_state_dict(from_torch_state_dict(network.state_dict()))
    for name, value in network.state_dict().items():
        assert np.array_equal(model.state_dict()[name], value.numpy()), name
    x = _pixels(task, seed=5) - np.float32(0.5)
    with torch.no_grad():
        theirs = network(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.eval().forward(x), theirs, rtol=1e-4, atol=1e-5)


def test_torch_strict_load_refuses_another_architecture(checkpoints):
    pytest.importorskip("torch")
    config = load_model(checkpoints["binary"], "cpu")[1]["model"]
    with pytest.raises(RuntimeError):
        torch_model({**config, "architecture": "multilabel", "n_classes": 4}).load_state_dict(
            to_torch_state_dict(checkpoints["binary"]), strict=True)
