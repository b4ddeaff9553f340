"""CIFAR-10: the batch reader on tiny files in the official format, CifarNet's gradients, the CLI."""
import csv
import json
import os
import pickle

import numpy as np
import pytest
from PIL import Image

from conftest import numerical_gradient
from glasscuda import predict, train
from glasscuda.checkpoint import load_checkpoint, load_model
from glasscuda.data.cifar10 import CLASS_NAMES, TRAIN_BATCHES, load_cifar10, read_batch
from glasscuda.data.dataset import DatasetError
from glasscuda.data.sampling import Normalizer
from glasscuda.losses import CrossEntropyLoss
from glasscuda.models import CifarNet
from glasscuda.tasks.cifar10 import ReportingLoss, fit_normalizer

PER_BATCH = 20
META_NAMES = [name.upper().encode() for name in CLASS_NAMES]


def write_pickle(path, obj, protocol=2):
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=protocol)


def write_batch(path, data, labels):
    """One batch file as the official archive has it: a pickled dict with byte-string keys."""
    write_pickle(path, {b"batch_label": path.name.encode(), b"labels": list(labels), b"data": data,
                        b"filenames": [f"img_{i}.png".encode() for i in range(len(labels))]})


def write_cifar(folder, seed=0):
    """Tiny data_batch_1..5, test_batch and batches.meta in ``folder``; returns what was written."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name in (*TRAIN_BATCHES, "test_batch"):
        data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=PER_BATCH)]
        write_batch(folder / name, data, labels)
        written[name] = (data, np.array(labels))
    write_pickle(folder / "batches.meta", {b"label_names": META_NAMES, b"num_vis": 3072})
    return written


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    return root, write_cifar(root / "cifar-10-batches-py")


def test_each_row_becomes_three_colour_planes_of_32_by_32(cifar):
    root, written = cifar
    data, labels = written["data_batch_2"]
    images, got_labels = read_batch(root / "cifar-10-batches-py" / "data_batch_2")
    assert images.shape == (PER_BATCH, 3, 32, 32) and images.dtype == np.uint8
    n, c, h, w = np.indices(images.shape)
    np.testing.assert_array_equal(images, data[n, c * 1024 + h * 32 + w])
    assert images[3, 0, 0, 1] == data[3, 1] and images[3, 1, 0, 0] == data[3, 1024]
    assert images[3, 2, 31, 31] == data[3, 3071] and images[3, 0, 1, 0] == data[3, 32]
    np.testing.assert_array_equal(got_labels, labels)
    assert got_labels.dtype == np.int64


@pytest.mark.parametrize("where", ["parent", "folder"])
def test_load_reads_every_batch_in_order_as_floats_in_unit_range(cifar, where):
    root, written = cifar
    cifar10 = load_cifar10(root if where == "parent" else root / "cifar-10-batches-py")

    def expected(names):
        data = np.concatenate([written[name][0] for name in names])
        return data.reshape(-1, 3, 32, 32).astype(np.float64) / 255, np.concatenate(
            [written[name][1] for name in names])

    for images, labels, names in ((cifar10.train_images, cifar10.train_labels, TRAIN_BATCHES),
                                  (cifar10.test_images, cifar10.test_labels, ["test_batch"])):
        want_images, want_labels = expected(names)
        assert images.dtype == np.float32 and labels.dtype == np.int64
        np.testing.assert_array_equal(images, want_images.astype(np.float32))
        np.testing.assert_array_equal(labels, want_labels)
    assert cifar10.class_names == tuple(n.decode() for n in META_NAMES)


@pytest.mark.parametrize("make", ["absent", "empty"])
def test_missing_data_says_what_to_download_and_where_to_put_it(tmp_path, make):
    root = tmp_path / "nothing here"
    if make == "empty":
        root.mkdir()
    with pytest.raises(DatasetError) as info:
        load_cifar10(root)
    message = str(info.value)
    for needle in (str(root), "cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar.html",
                   "cifar-10-batches-py", "--data", "never downloads"):
        assert needle in message


def test_a_missing_batch_file_is_named(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_cifar10(tmp_path)


class _RunsCode:
    """Pickles to a call of os.mkdir: loading it must not create the folder."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def good_data():
    return np.zeros((4, 3072), np.uint8)


MALFORMED = {
    "wrong row length": lambda m: {b"data": np.zeros((4, 3071), np.uint8), b"labels": [0, 1, 2, 3]},
    "three-dimensional data": lambda m: {b"data": np.zeros((4, 3, 1024), np.uint8), b"labels": [0] * 4},
    "float data": lambda m: {b"data": np.zeros((4, 3072), np.float32), b"labels": [0, 1, 2, 3]},
    "data as a list": lambda m: {b"data": [[0] * 3072] * 4, b"labels": [0, 1, 2, 3]},
    "label 10": lambda m: {b"data": good_data(), b"labels": [0, 1, 10, 3]},
    "label -1": lambda m: {b"data": good_data(), b"labels": [0, -1, 2, 3]},
    "float labels": lambda m: {b"data": good_data(), b"labels": [0.0, 1.0, 2.0, 3.0]},
    "fewer labels": lambda m: {b"data": good_data(), b"labels": [0, 1, 2]},
    "no labels key": lambda m: {b"data": good_data()},
    "str keys": lambda m: {"data": good_data(), "labels": [0, 1, 2, 3]},
    "no images": lambda m: {b"data": np.zeros((0, 3072), np.uint8), b"labels": []},
    "not a dict": lambda m: [good_data(), [0, 1, 2, 3]],
    "code in the pickle": lambda m: {b"data": _RunsCode(m), b"labels": [0, 1, 2, 3]},
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_batch_is_a_dataset_error_naming_the_file(tmp_path, case):
    path = tmp_path / "data_batch_4"
    marker = tmp_path / "created by unpickling"
    write_pickle(path, MALFORMED[case](marker))
    with pytest.raises(DatasetError) as info:
        read_batch(path)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_a_file_that_is_not_a_pickle_is_a_dataset_error_naming_it(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar(folder)
    (folder / "test_batch").write_bytes(b"\x89PNG\r\n\x1a\n not a batch")
    with pytest.raises(DatasetError, match="test_batch"):
        load_cifar10(tmp_path)


def test_cifarnet_gradients_match_finite_differences_through_cross_entropy(rng):
    model = CifarNet(seed=2).to("cpu", dtype=np.float64).train()
    x = rng.standard_normal((2, 3, 32, 32))
    labels = np.array([3, 8])
    loss_fn = CrossEntropyLoss()

    def loss_value():
        return loss_fn.forward(model.forward(x), labels)

    model.zero_grad()
    loss_value()
    grad_x = model.backward(loss_fn.backward())
    names = [name for name, _ in model.named_parameters()]
    assert len(names) == 8
    for name, param in model.named_parameters():
        picks = rng.choice(param.data.size, size=4, replace=False)
        expected = numerical_gradient(loss_value, param.data, indices=picks)
        np.testing.assert_allclose(param.grad.reshape(-1)[picks], expected, rtol=1e-5, atol=1e-9,
                                   err_msg=name)
    picks = rng.choice(x.size, size=4, replace=False)
    np.testing.assert_allclose(grad_x.reshape(-1)[picks], numerical_gradient(loss_value, x, indices=picks),
                               rtol=1e-5, atol=1e-9, err_msg="input")


def test_cifarnet_probabilities_are_the_softmax_of_its_logits(rng):
    model = CifarNet(seed=0)
    x = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    logits = model.eval().forward(x).astype(np.float64)
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(model.train().predict_proba(x), expected, rtol=1e-5)
    assert model.training


def test_normaliser_fitted_chunk_by_chunk_matches_the_whole_set_fit(rng):
    scale = np.array([1.0, 0.5, 0.1], np.float32)[:, None, None]
    images = rng.random((7, 3, 5, 4)).astype(np.float32) * scale
    whole = Normalizer.fit(images)
    chunked = fit_normalizer(images, chunk=3)
    np.testing.assert_allclose(chunked.mean, whole.mean, rtol=1e-12)
    np.testing.assert_allclose(chunked.std, whole.std, rtol=1e-10)


def test_running_loss_line_is_the_mean_of_the_last_batches(capsys):
    class Fixed:
        def __init__(self):
            self.values = iter([1.0, 2.0, 4.0, 8.0, 16.0])

        def forward(self, logits, targets):
            return next(self.values)

    loss = ReportingLoss(Fixed(), every=2)
    loss.start_epoch(3)
    assert [loss.forward(None, None) for _ in range(5)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert capsys.readouterr().out.splitlines() == ["epoch 3 batch 2: loss 1.5000",
                                                    "epoch 3 batch 4: loss 6.0000"]


def run_train(*args) -> int:
    return train.main([*map(str, args), "--no-progress"])


def test_cli_trains_and_reports_test_accuracy(cifar, tmp_path, capsys):
    root, _ = cifar
    out = tmp_path / "run"
    assert run_train("--task", "cifar10", "--data", root, "--epochs", 1, "--out", out, "--device", "cpu") == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    final = metrics["final"]
    assert [h["epoch"] for h in metrics["history"]] == [1]
    assert final["n_test"] == PER_BATCH and final["n_validation"] == 5 * PER_BATCH // 10
    assert 0.0 <= final["test_accuracy"] <= 1.0
    assert f"test accuracy {final['test_accuracy']:.4f}" in printed
    for name in ("best.npz", "last.npz", "curves.png"):
        assert (out / name).stat().st_size > 0, name
    header = load_checkpoint(out / "best.npz").header
    assert header["task"] == "cifar10" and header["model"]["architecture"] == "cifar10"
    assert header["class_names"] == [n.decode() for n in META_NAMES]
    assert len(header["normalization"]["mean"]) == 3 and len(header["normalization"]["std"]) == 3
    model, _ = load_model(out / "best.npz", device="cpu")
    assert isinstance(model, CifarNet)


def test_predict_writes_softmax_columns_and_the_most_probable_class(cifar, tmp_path):
    root, _ = cifar
    out = tmp_path / "run"
    assert run_train("--task", "cifar10", "--data", root, "--epochs", 1, "--out", out, "--device", "cpu") == 0
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(pixels):
        Image.fromarray(image, mode="RGB").save(folder / f"im{i}.png")
    csv_path = tmp_path / "preds.csv"
    assert predict.main(["--checkpoint", str(out / "best.npz"), "--input", str(folder),
                         "--output", str(csv_path), "--device", "cpu"]) == 0
    rows = list(csv.DictReader(csv_path.open()))
    names = [n.decode() for n in META_NAMES]
    assert list(rows[0]) == ["id", *[f"p_{n}" for n in names], "label"]
    model, header = load_model(out / "best.npz", device="cpu")
    x = Normalizer.from_dict(header["normalization"])(pixels.transpose(0, 3, 1, 2) / 255.0)
    expected = model.predict_proba(x)
    for row, want in zip(rows, expected):
        got = np.array([float(row[f"p_{n}"]) for n in names])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        assert row["label"] == names[int(np.argmax(got))]


def test_resuming_gives_the_same_weights_as_not_stopping(cifar, tmp_path):
    root, _ = cifar
    common = ["--task", "cifar10", "--data", root, "--device", "cpu", "--batch-size", 32, "--seed", 4]
    assert run_train(*common, "--epochs", 2, "--out", tmp_path / "straight") == 0
    assert run_train(*common, "--epochs", 1, "--out", tmp_path / "halted") == 0
    assert run_train(*common, "--epochs", 2, "--out", tmp_path / "halted", "--resume") == 0
    straight = load_checkpoint(tmp_path / "straight" / "last.npz").model_state
    resumed = load_checkpoint(tmp_path / "halted" / "last.npz").model_state
    for name in straight:
        np.testing.assert_array_equal(straight[name], resumed[name], err_msg=name)


@pytest.mark.parametrize("data", [None, "empty folder"])
def test_cli_without_cifar_exits_2_with_what_to_do(tmp_path, capsys, data):
    args = ["--task", "cifar10", "--out", tmp_path / "run", "--device", "cpu"]
    if data:
        (tmp_path / data).mkdir()
        args += ["--data", tmp_path / data]
    assert run_train(*args) == 2
    err = capsys.readouterr().err
    assert ("--task cifar10 needs --data DIR" if data is None else f"not found in {tmp_path / data}") in err
    assert "cifar-10-python.tar.gz" in err and "cifar-10-batches-py" in err and "never downloads" in err
    assert "Traceback" not in err
