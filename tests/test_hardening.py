"""Bad inputs a user can give: each is one clear line (no traceback), never a silent wrong answer."""
import json
import zipfile

import numpy as np
import pytest

from glasscuda import nn, ops, predict
from glasscuda.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from glasscuda.data.sampling import Normalizer
from glasscuda.models import BinaryDetector

from PIL import Image


# Checkpoints -----------------------------------------------------------------

@pytest.fixture
def good_checkpoint(tmp_path):
    model = BinaryDetector(image_size=16, seed=0)
    header = {"task": "binary", "normalization": Normalizer([0.5], [0.2]).to_dict(), "threshold": 0.4,
              "class_names": ["defect"]}
    return save_checkpoint(tmp_path / "good.npz", model, header)


@pytest.fixture
def one_image(tmp_path):
    path = tmp_path / "img" / "a.png"
    path.parent.mkdir()
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(path)
    return path


def rewrite(src, dst, edit_header=None, edit_arrays=None):
    """A copy of checkpoint ``src`` at ``dst`` with its header dict and/or arrays edited."""
    with np.load(src, allow_pickle=False) as archive:
        arrays = {k: archive[k] for k in archive.files}
    header = json.loads(str(arrays.pop("header")))
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(arrays)
    arrays["header"] = np.array(json.dumps(header))
    with open(dst, "wb") as f:
        np.savez(f, **arrays)
    return dst


def assert_one_line_naming(error_text, path):
    assert str(path) in error_text
    assert "\n" not in error_text.strip()
    assert "allow_pickle" not in error_text and "Traceback" not in error_text


def run_predict(checkpoint, image, out, capsys, *extra):
    code = predict.main(["--checkpoint", str(checkpoint), "--input", str(image), "--output", str(out),
                         "--device", "cpu", "--no-progress", *map(str, extra)])
    return code, capsys.readouterr()


def damaged_files(tmp_path, good):
    data = good.read_bytes()
    files = {"empty": b"", "truncated": data[:len(data) // 2], "random bytes": bytes(range(256)) * 8,
             "text": b"this is not a checkpoint\n", "npy member cut short": None}
    paths = {}
    for name, content in files.items():
        path = tmp_path / f"{name.replace(' ', '_')}.npz"
        if content is None:
            # A stored member whose .npy header claims far more data than it holds.
            with zipfile.ZipFile(path, "w") as z:
                header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
                header["shape"] = (10 ** 12,)
                import io
                buf = io.BytesIO()
                np.lib.format.write_array_header_1_0(buf, header)
                z.writestr("model/body.0.weight.npy", buf.getvalue() + b"\0" * 16)
                z.writestr("header.npy", b"")
        else:
            path.write_bytes(content)
        paths[name] = path
    return paths


def test_damaged_archives_are_one_line_checkpoint_errors(tmp_path, good_checkpoint):
    for name, path in damaged_files(tmp_path, good_checkpoint).items():
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path)
        assert_one_line_naming(str(caught.value), path)


def test_predict_reports_a_damaged_checkpoint_without_a_traceback(tmp_path, good_checkpoint, one_image, capsys):
    for name, path in damaged_files(tmp_path, good_checkpoint).items():
        code, out = run_predict(path, one_image, tmp_path / "p.csv", capsys)
        assert code == 2, name
        assert out.err.startswith("error: "), name
        assert_one_line_naming(out.err, path)
    assert not (tmp_path / "p.csv").exists()


HEADER_EDITS = {
    "unknown architecture": (lambda h: h["model"].update(architecture="resnet50"), "unknown architecture"),
    "extra key": (lambda h: h["model"].update(depth=50), "unexpected depth"),
    "missing key": (lambda h: h["model"].pop("image_size"), "missing image_size"),
    "non-numeric threshold": (lambda h: h.update(threshold="high"), "threshold"),
    "threshold outside [0, 1]": (lambda h: h.update(threshold=7), "threshold"),
    "no normaliser": (lambda h: h.pop("normalization"), "normalization"),
    "absurd image size": (lambda h: h["model"].update(image_size=10 ** 9), "image_size"),
    "image size not a multiple of 16": (lambda h: h["model"].update(image_size=24), "multiple of 16"),
    "string image size": (lambda h: h["model"].update(image_size="128"), "image_size"),
    "format version not a number": (lambda h: h.update(format_version=[1]), "format"),
}


@pytest.mark.parametrize("case", sorted(HEADER_EDITS))
def test_hand_edited_headers_are_one_line_errors(tmp_path, good_checkpoint, one_image, capsys, case):
    edit, expected = HEADER_EDITS[case]
    path = rewrite(good_checkpoint, tmp_path / "edited.npz", edit_header=edit)
    with pytest.raises(CheckpointError) as caught:
        load_model(path, device="cpu")
    assert expected in str(caught.value)
    assert_one_line_naming(str(caught.value), path)
    code, out = run_predict(path, one_image, tmp_path / "p.csv", capsys)
    assert code == 2 and expected in out.err
    assert_one_line_naming(out.err, path)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_weights_are_refused_at_load(tmp_path, good_checkpoint, bad):
    def poison(arrays):
        arrays["model/body.0.weight"][0, 0, 0, 0] = bad
    path = rewrite(good_checkpoint, tmp_path / "nan.npz", edit_arrays=poison)
    with pytest.raises(CheckpointError, match=r"body\.0\.weight.*1 NaN or infinite"):
        load_checkpoint(path)


def test_an_untouched_checkpoint_still_loads(good_checkpoint):
    model, header = load_model(good_checkpoint, device="cpu")
    assert header["threshold"] == 0.4 and model.config()["image_size"] == 16


# Layer and kernel arguments ----------------------------------------------------

X4 = np.zeros((2, 3, 8, 8), np.float32)
LAYER_CASES = {
    "Conv2d stride 0": (lambda: nn.Conv2d(3, 4, 3, stride=0), "Conv2d: stride"),
    "Conv2d kernel_size 0": (lambda: nn.Conv2d(3, 4, 0), "Conv2d: kernel_size"),
    "Conv2d in_channels 0": (lambda: nn.Conv2d(0, 4, 3), "Conv2d: in_channels"),
    "Conv2d out_channels 0": (lambda: nn.Conv2d(3, 0, 3), "Conv2d: out_channels"),
    "Conv2d negative padding": (lambda: nn.Conv2d(3, 4, 3, padding=-1), "Conv2d: padding"),
    "Conv2d 3-D input": (lambda: nn.Conv2d(3, 4, 3).forward(X4[0]), "Conv2d: input must be 4-D"),
    "Conv2d zero batch": (lambda: nn.Conv2d(3, 4, 3).forward(X4[:0]), "Conv2d: input batch is empty"),
    "Conv2d wrong channels": (lambda: nn.Conv2d(2, 4, 3).forward(X4), "Conv2d: input has 3 channels"),
    "MaxPool2d kernel_size 0": (lambda: nn.MaxPool2d(0), "MaxPool2d: kernel_size"),
    "MaxPool2d stride 0": (lambda: nn.MaxPool2d(2, stride=0), "MaxPool2d: stride"),
    "MaxPool2d 3-D input": (lambda: nn.MaxPool2d(2).forward(X4[0]), "MaxPool2d: input must be 4-D"),
    "MaxPool2d zero batch": (lambda: nn.MaxPool2d(2).forward(X4[:0]), "MaxPool2d: input batch is empty"),
    "Linear in_features 0": (lambda: nn.Linear(0, 3), "Linear: in_features"),
    "Linear out_features 0": (lambda: nn.Linear(3, 0), "Linear: out_features"),
    "Linear 3-D input": (lambda: nn.Linear(8, 3).forward(X4[0]), "Linear: input must be 2-D"),
    "Linear zero batch": (lambda: nn.Linear(8, 3).forward(np.zeros((0, 8), np.float32)),
                          "Linear: input batch is empty"),
    "GlobalAvgPool2d 3-D input": (lambda: nn.GlobalAvgPool2d().forward(X4[0]), "GlobalAvgPool2d: input must be 4-D"),
    "GlobalAvgPool2d zero batch": (lambda: nn.GlobalAvgPool2d().forward(X4[:0]), "GlobalAvgPool2d: input batch"),
    "Flatten zero batch": (lambda: nn.Flatten().forward(X4[:0]), "Flatten: input batch is empty"),
    "conv2d op stride 0": (lambda: ops.conv2d_forward(cpu_backend(), X4, np.zeros((4, 3, 3, 3), np.float32),
                                                      None, stride=0), "conv2d: kernel 3x3, stride 0"),
    "maxpool op stride 0": (lambda: ops.maxpool2d_forward(cpu_backend(), X4, 2, 0), "max-pool kernel 2x2 and stride"),
    "flip_rotate90 code 16": (lambda: ops.flip_rotate90(cpu_backend(), X4, [16, 0]), "flip_rotate90: codes"),
    "flip_rotate90 code -1": (lambda: ops.flip_rotate90(cpu_backend(), X4, [0, -1]), "flip_rotate90: codes"),
    "flip_rotate90 one code for two images": (lambda: ops.flip_rotate90(cpu_backend(), X4, [1]),
                                              "flip_rotate90: need one code per image"),
}


def cpu_backend():
    from glasscuda.backend import get_backend
    return get_backend("cpu")


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_bad_layer_and_kernel_arguments_are_value_errors_naming_them(case):
    make, expected = LAYER_CASES[case]
    with pytest.raises(ValueError) as caught:
        make()
    assert str(caught.value).startswith(expected), str(caught.value)


def test_im2col_checks_the_column_size_before_allocating(monkeypatch):
    be = cpu_backend()
    allocated = []
    monkeypatch.setattr(be.xp, "empty", lambda *a, **k: allocated.append(a) or np.zeros(1))
    huge = ops.ConvGeometry(10 ** 7, 3, 64, 64, 3, 3, 1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"im2col: the column buffer \[27, 40960000000\] needs"):
        # A broadcast view: the right shape without the memory behind it.
        ops.im2col(be, np.broadcast_to(np.float32(0), (10 ** 7, 3, 64, 64)), huge)
    with pytest.raises(ValueError, match=r"im2col: input shape \(2, 3, 8, 8\) does not match"):
        ops.im2col(be, X4, huge)
    assert allocated == []


# Training stops at the first non-finite loss or gradient -------------------------

from test_train_cli import run_train, tiny_glass  # noqa: E402,F401  (the CLI tests' tiny set and runner)


def test_a_nan_loss_stops_training_naming_epoch_and_step_and_keeps_the_last_good_epoch(
        tiny_glass, tmp_path, capsys, monkeypatch):
    from glasscuda.losses import BCEWithLogitsLoss
    real_forward, calls = BCEWithLogitsLoss.forward, []

    def forward(self, logits, targets):      # 48 training images, batch 32: two steps per epoch
        calls.append(1)
        return real_forward(self, logits * np.float32("nan") if len(calls) == 3 else logits, targets)

    monkeypatch.setattr(BCEWithLogitsLoss, "forward", forward)
    out = tmp_path / "run"
    assert run_train("--data", tiny_glass, "--img-size", 32, "--epochs", 3, "--out", out, "--device", "cpu") == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "epoch 2/3, step 1 of 2: the training loss became NaN or infinite" in err
    assert "learning rate" in err and "--lr" in err and str(out / "last.npz") in err
    last = load_checkpoint(out / "last.npz")
    assert last.header["epoch"] == 1


def test_a_non_finite_gradient_stops_the_epoch_naming_the_step():
    from glasscuda import training
    from glasscuda.optim import Adam

    class InfiniteGradient:
        def forward(self, logits, targets):
            self.shape = logits.shape
            return 0.5

        def backward(self):
            return np.full(self.shape, np.inf, np.float32)

    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 1, rng=np.random.default_rng(0)))
    images = np.ones((4, 1, 2, 2), np.float32)
    with pytest.raises(FloatingPointError, match=r"^epoch 4/9, step 1 of 2: a gradient became NaN or infinite; "
                                                 r"the learning rate \(0.001\) is likely too high"):
        training.train_epoch(model, InfiniteGradient(), Adam(model.parameters(), lr=1e-3), images,
                             np.zeros((4, 1), np.float32), [np.arange(2), np.arange(2, 4)],
                             Normalizer([0.0], [1.0]), np.random.default_rng(0), description="epoch 4/9",
                             progress=False)


# Options that must not silently misbehave ------------------------------------------

def usage_error(main, argv, capsys) -> str:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("flag,value,expected", [
    ("--temperature", "0", "argument --temperature: must be > 0"),
    ("--temperature", "-1", "argument --temperature: must be > 0"),
    ("--temperature", "nan", "argument --temperature: 'nan' is not a finite number"),
    ("--threshold", "1.5", "argument --threshold: must lie in [0, 1]"),
    ("--threshold", "-0.1", "argument --threshold: must lie in [0, 1]"),
    ("--threshold", "0.2,x", "argument --threshold: 'x' is not a number"),
    ("--batch-size", "0", "argument --batch-size: must be >= 1"),
])
def test_predict_refuses_nonsense_options(tmp_path, capsys, flag, value, expected):
    line = usage_error(predict.main, ["--checkpoint", "c.npz", "--input", "img", flag, value], capsys)
    assert line.endswith(expected) or expected in line, line


@pytest.mark.parametrize("flag,value,expected", [
    ("--batch-size", "0", "argument --batch-size: must be >= 1"),
    ("--epochs", "0", "argument --epochs: must be >= 1"),
    ("--lr", "nan", "argument --lr: 'nan' is not a finite number"),
    ("--lr", "inf", "argument --lr: 'inf' is not a finite number"),
    ("--lr", "0", "argument --lr: must be > 0"),
    ("--lr", "-0.001", "argument --lr: must be > 0"),
    ("--gamma", "-1", "argument --gamma: must be >= 0"),
    ("--weight-decay", "nan", "argument --weight-decay: 'nan' is not a finite number"),
    ("--t0", "0", "argument --t0: must be >= 1"),
])
def test_train_refuses_nonsense_options(capsys, flag, value, expected):
    from glasscuda import train
    line = usage_error(train.main, ["--task", "multilabel", flag, value], capsys)
    assert expected in line, line


@pytest.fixture
def multilabel_checkpoint(tmp_path):
    from glasscuda.models import MultiLabelNet
    model = MultiLabelNet(image_size=16, seed=0)
    header = {"task": "multilabel", "normalization": Normalizer([0.5], [0.2]).to_dict(),
              "class_names": ["no_defect", "chipped_edge", "scratch", "stain"],
              "thresholds": [0.5, 0.5, 0.5, 0.5], "tta": False}
    return save_checkpoint(tmp_path / "ml.npz", model, header)


def some_images(folder, n=5):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def read_rows(path):
    import csv
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_a_threshold_with_a_multilabel_checkpoint_is_applied_per_class(tmp_path, multilabel_checkpoint, capsys):
    images = some_images(tmp_path / "img")
    base = ["--checkpoint", multilabel_checkpoint, "--input", images, "--no-tta"]
    code, _ = run_predict(multilabel_checkpoint, images, tmp_path / "default.csv", capsys, "--no-tta")
    assert code == 0
    rows = read_rows(tmp_path / "default.csv")
    probs = np.array([[float(r[f"p_{n}"]) for n in ("no_defect", "chipped_edge", "scratch", "stain")] for r in rows])
    names = ["no_defect", "chipped_edge", "scratch", "stain"]
    from glasscuda.tasks.multilabel import decide
    for given, per_class in ((["0"], [0.0] * 4), (["1"], [1.0] * 4),
                             ([",".join(["1", "0", "1", "1"])], [1.0, 0.0, 1.0, 1.0])):
        out = tmp_path / "t.csv"
        code, _ = run_predict(multilabel_checkpoint, images, out, capsys, "--no-tta", "--threshold", *given)
        assert code == 0
        expected = decide(probs, per_class)
        labels = [";".join(n for n, on in zip(names, marks) if on) for marks in expected]
        assert [r["labels"] for r in read_rows(out)] == labels, given
    # The two extremes differ, so the option cannot have been ignored.
    assert decide(probs, [0.0] * 4).tolist() != decide(probs, [1.0] * 4).tolist()
    code, out = run_predict(multilabel_checkpoint, images, tmp_path / "bad.csv", capsys, "--threshold", "0.5,0.5")
    assert code == 2 and "--threshold: give one threshold for every class or one per class" in out.err
    assert not (tmp_path / "bad.csv").exists()


def test_a_binary_checkpoint_takes_one_threshold(tmp_path, good_checkpoint, one_image, capsys):
    code, out = run_predict(good_checkpoint, one_image, tmp_path / "p.csv", capsys, "--threshold", "0.2,0.3")
    assert code == 2 and "a binary checkpoint takes one threshold, got 2" in out.err


def test_the_same_image_given_twice_is_scored_once(tmp_path, good_checkpoint, capsys):
    images = some_images(tmp_path / "img", n=3)
    out = tmp_path / "p.csv"
    code = predict.main(["--checkpoint", str(good_checkpoint), "--input", str(images / "im1.png"), str(images),
                         str(images / "im1.png"), str(tmp_path / "img" / ".." / "img" / "im2.png"),
                         "--output", str(out), "--device", "cpu", "--no-progress"])
    assert code == 0
    assert [r["id"] for r in read_rows(out)] == ["im1", "im0", "im2"]


def test_resume_treats_a_relative_and_an_absolute_data_path_as_one(tiny_glass, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny_glass.parent)
    common = ["--img-size", 32, "--device", "cpu", "--out", tmp_path / "run", "--recipe", "seed"]   # resumed for more epochs
    assert run_train("--data", tiny_glass.name, *common, "--epochs", 1) == 0
    assert run_train("--data", tiny_glass.resolve(), *common, "--epochs", 2, "--resume") == 0
    assert load_checkpoint(tmp_path / "run" / "last.npz").header["epoch"] == 2


def test_resume_refuses_a_dataset_whose_files_changed(tiny_glass, tmp_path, capsys):
    import shutil
    data = tmp_path / "data"
    shutil.copytree(tiny_glass, data)
    common = ["--data", data, "--img-size", 32, "--device", "cpu", "--out", tmp_path / "run", "--recipe", "seed"]
    assert run_train(*common, "--epochs", 1) == 0
    capsys.readouterr()
    img = data / "train" / "img"
    first, second = sorted(img.iterdir())[:2]
    shutil.copy(first, img / "new_panel.png")
    second.unlink()
    assert run_train(*common, "--epochs", 2, "--resume") == 2
    err = capsys.readouterr().err
    assert "--resume: the dataset changed since the run began" in err
    assert f"train: 1 added (new_panel.png); train: 1 removed ({second.name})" in err


# Outputs: checked before any work, nothing left behind, the user's umask --------------

@pytest.fixture
def read_only_folder(tmp_path):
    """A folder no file can be created in (sysfs refuses even root, who ignores permission bits)."""
    import os
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    import pathlib
    if not pathlib.Path("/sys/kernel").is_dir():
        pytest.skip("running as root without sysfs: no folder here refuses root's writes")
    yield pathlib.Path("/sys/kernel")


def test_train_refuses_an_out_that_is_a_file_before_any_work(tiny_glass, tmp_path, capsys):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    assert run_train("--data", tiny_glass, "--img-size", 32, "--epochs", 1, "--out", out, "--device", "cpu") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"error: --out {out} is an existing file, not a folder; choose another path"


def test_train_refuses_a_read_only_out_before_any_work(tiny_glass, read_only_folder, capsys):
    assert run_train("--data", tiny_glass, "--img-size", 32, "--epochs", 1, "--out", read_only_folder,
                     "--device", "cpu") == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"error: --out {read_only_folder} cannot be written")
    assert len(captured.err.strip().splitlines()) == 1


def test_a_failed_run_leaves_no_empty_out_folder(tmp_path, capsys):
    out = tmp_path / "new" / "run"
    assert run_train("--data", tmp_path / "no-such-data", "--out", out, "--device", "cpu") == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_stale_partial_file_is_cleared_by_the_next_run_in_that_folder(tiny_glass, tmp_path):
    import os
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".last.npz.k3j9x_2a.partial"
    stale.write_bytes(b"half a checkpoint")
    old_mask = os.umask(0o027)
    try:
        assert run_train("--data", tiny_glass, "--img-size", 32, "--epochs", 1, "--out", out,
                         "--device", "cpu") == 0
    finally:
        os.umask(old_mask)
    assert not stale.exists()
    assert not list(out.glob(".*"))
    written = sorted(path.name for path in out.iterdir())
    assert {"best.npz", "last.npz", "metrics.json", "thresholds.json", "curves.png"} <= set(written)
    for name in written:
        assert (out / name).stat().st_mode & 0o777 == 0o640, name


def test_predict_output_gets_missing_folders_and_the_users_umask(tmp_path, good_checkpoint, one_image, capsys):
    import os
    out = tmp_path / "new" / "deeper" / "p.csv"
    old_mask = os.umask(0o027)
    try:
        code, _ = run_predict(good_checkpoint, one_image, out, capsys)
    finally:
        os.umask(old_mask)
    assert code == 0 and [r["id"] for r in read_rows(out)] == ["a"]
    assert out.stat().st_mode & 0o777 == 0o640


def test_predict_refuses_a_folder_or_read_only_output_up_front(tmp_path, good_checkpoint, one_image,
                                                               read_only_folder, capsys):
    code, out = run_predict(good_checkpoint, one_image, tmp_path, capsys)
    assert code == 2 and out.out == ""
    assert out.err.strip().startswith(f"error: --output {tmp_path} is a folder; give a file name")
    code, out = run_predict(good_checkpoint, one_image, read_only_folder / "p.csv", capsys)
    assert code == 2 and out.out == ""
    assert out.err.strip().startswith(f"error: --output {read_only_folder} cannot be written")


def test_a_failed_predict_leaves_no_empty_output_folder(tmp_path, one_image, capsys):
    code, out = run_predict(tmp_path / "missing.npz", one_image, tmp_path / "new" / "p.csv", capsys)
    assert code == 2 and "does not exist" in out.err
    assert not (tmp_path / "new").exists()


# Data that cannot support a metric ----------------------------------------------------

def make_dataset(root, train, test=(("t0", None), ("t1", "0 0.5 0.5 0.2 0.2\n"))):
    """A dataset of 16x16 gray images: ``train``/``test`` are (stem, label text or None) pairs."""
    rng = np.random.default_rng(1)
    for split, items in (("train", train), ("test", test)):
        (root / split / "img").mkdir(parents=True)
        (root / split / "txt").mkdir()
        for stem, label in items:
            Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(root / split / "img" / f"{stem}.png")
            if label is not None:
                (root / split / "txt" / f"{stem}.txt").write_bytes(label.encode("utf-8") if isinstance(label, str)
                                                                   else label)
    return root


def test_an_empty_label_file_is_a_warning_naming_it(tmp_path):
    from glasscuda.data import load_split
    from glasscuda.data.dataset import DatasetWarning
    root = make_dataset(tmp_path / "d", [("a", "1 0.5 0.5 0.1 0.1\n"), ("b", ""), ("c", None), ("d", " \n\n")])
    with pytest.warns(DatasetWarning) as caught:
        data = load_split(root, "train", image_size=16)
    messages = [str(w.message) for w in caught]
    assert any("2 label file(s)" in m and "are empty" in m and "b.txt, d.txt" in m for m in messages), messages
    assert data.is_defective.tolist() == [True, False, False, False]


def test_a_label_file_with_a_byte_order_mark_is_read_as_evaluate_reads_it(tmp_path):
    import warnings
    from glasscuda.data import load_split
    root = make_dataset(tmp_path / "d", [("a", b"\xef\xbb\xbf1 0.5 0.5 0.1 0.1\n2\n"), ("b", None)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_split(root, "train", image_size=16)
    assert data.ids == ["a", "b"]
    assert data.labels.tolist() == [[0, 1, 1], [0, 0, 0]]


def test_too_few_images_for_the_split_is_a_clear_error(tmp_path, capsys):
    root = make_dataset(tmp_path / "d", [("a", "0 0.5 0.5 0.1 0.1\n")])
    assert run_train("--data", root, "--img-size", 16, "--epochs", 1, "--out", tmp_path / "run",
                     "--device", "cpu") == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: cannot split 1 image(s) into training and validation: at least 2 are needed "
                   "(more, for a validation split with both classes)")


def test_synthetic_train_below_the_minimum_is_refused_naming_it(capsys):
    from glasscuda import train
    line = usage_error(train.main, ["--synthetic-train", "24"], capsys)
    assert "--synthetic-train must be at least 25" in line and "got 24" in line


def test_the_synthetic_minimum_gives_both_classes_in_validation():
    """MIN_SYNTHETIC_TRAIN is the smallest set whose split has a defective and a clean validation image."""
    from glasscuda.data import stratified_split
    from glasscuda.data.synthetic import _split_plan
    from glasscuda.train import MIN_SYNTHETIC_TRAIN

    def both_classes_in_validation(n, seed):
        plan = _split_plan(0, 0, n, 0.1)
        labels = np.array([[c in p for c in range(3)] for p in plan], float)
        train_idx, val_idx = stratified_split(labels, 0.2, seed)
        defective = labels.any(axis=1)
        return defective[val_idx].any() and not defective[val_idx].all() and defective[train_idx].any()

    assert all(both_classes_in_validation(n, seed) for n in range(MIN_SYNTHETIC_TRAIN, MIN_SYNTHETIC_TRAIN + 40)
               for seed in range(10))
    assert not both_classes_in_validation(MIN_SYNTHETIC_TRAIN - 1, 0)


# Messages a person reads -----------------------------------------------------------------

def test_dataset_warnings_print_as_one_clean_line_naming_the_flag(tmp_path, good_checkpoint):
    import subprocess
    import sys
    images = some_images(tmp_path / "img", n=2)
    (images / "broken.png").write_bytes(b"not a png")
    result = subprocess.run([sys.executable, "-m", "glasscuda.predict", "--checkpoint", str(good_checkpoint),
                             "--input", str(images), "--output", str(tmp_path / "p.csv"), "--device", "cpu",
                             "--no-progress"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"warning: skipping {images / 'broken.png'}: cannot decode image"), lines
    assert lines[1] == ("warning: skipped 1 of 3 images; see the warnings above, or rerun with --strict "
                        "to stop at the first")
    assert len(lines) == 2
    assert "DatasetWarning" not in result.stderr and "strict=True" not in result.stderr
    assert ".py:" not in result.stderr


def test_the_unknown_class_hint_names_nothing_that_does_not_exist(tmp_path):
    from glasscuda.data import load_split
    from glasscuda.data.dataset import DatasetWarning
    root = make_dataset(tmp_path / "d", [("a", "7 0.5 0.5 0.1 0.1\n"), ("b", None)])
    with pytest.warns(DatasetWarning) as caught:
        load_split(root, "train", image_size=16)
    message = str(caught[0].message)
    assert "unknown class id 7 (known: 0 chipped_edge, 1 scratch, 2 stain); fix or remove the line" in message
    assert "class map" not in message


def test_python_m_glasscuda_lists_the_three_commands():
    import subprocess
    import sys
    result = subprocess.run([sys.executable, "-m", "glasscuda"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command, purpose in (("glasscuda.train", "train a network"), ("glasscuda.predict", "score images"),
                             ("glasscuda.evaluate", "compare a predictions CSV with annotations")):
        assert f"python -m {command}" in result.stdout and purpose in result.stdout


def test_predict_shows_progress_over_images_and_heatmaps(tmp_path, multilabel_checkpoint, monkeypatch):
    from tqdm.auto import tqdm

    from glasscuda import heatmaps, training
    bars = []

    class Recorded(tqdm):
        def close(self):
            bars.append((self.desc, self.total, self.unit, self.disable, self.n))
            super().close()

    monkeypatch.setattr(training, "tqdm", Recorded)
    monkeypatch.setattr(heatmaps, "tqdm", Recorded)
    images = some_images(tmp_path / "img", n=5)
    code = predict.main(["--checkpoint", str(multilabel_checkpoint), "--input", str(images), "--output",
                         str(tmp_path / "p.csv"), "--device", "cpu", "--threshold", "0", "--batch-size", "2",
                         "--heatmaps", str(tmp_path / "maps")])
    assert code == 0
    # Bars over the 5 images (not the 3 batches), shown, and run to the end.
    assert ("scoring", 5, "image", False, 5) in bars and ("heatmaps", 5, "image", False, 5) in bars


def test_a_finished_train_prints_the_predict_command_to_run_next(tiny_glass, tmp_path, capsys):
    import shlex
    out = tmp_path / "run"
    assert run_train("--data", tiny_glass, "--img-size", 32, "--epochs", 1, "--out", out, "--device", "cpu") == 0
    stdout = capsys.readouterr().out.strip().splitlines()
    expected = (f"python -m glasscuda.predict --checkpoint {out / 'best.npz'} --input {tiny_glass / 'test' / 'img'} "
                f"--output {out / 'test_predictions.csv'}")
    assert stdout[-2:] == ["next, score the test images:", f"  {expected}"]
    assert predict.main([*shlex.split(expected)[3:], "--device", "cpu", "--no-progress"]) == 0
    assert len(read_rows(out / "test_predictions.csv")) == 20


def glass_copy(tiny_glass, dst, keep):
    """A copy of ``tiny_glass`` whose test split keeps only the images ``keep(is_defective)`` selects."""
    import shutil
    shutil.copytree(tiny_glass, dst)
    for image in (dst / "test" / "img").iterdir():
        if not keep((dst / "test" / "txt" / f"{image.stem}.txt").exists()):
            image.unlink()
            (dst / "test" / "txt" / f"{image.stem}.txt").unlink(missing_ok=True)
    return dst


@pytest.mark.parametrize("case,keep,expected", [
    ("no defect-free test image", lambda defective: defective,
     "no defect-free image: precision and F1 are meaningless, as calling every image defective scores 1.0"),
    ("no defective test image", lambda defective: not defective, "no defective image: recall and F1 are undefined"),
])
def test_a_single_class_test_split_reports_no_f1(tiny_glass, tmp_path, capsys, case, keep, expected):
    data = glass_copy(tiny_glass, tmp_path / "data", keep)
    out = tmp_path / "run"
    assert run_train("--data", data, "--img-size", 32, "--epochs", 1, "--out", out, "--device", "cpu") == 0
    captured = capsys.readouterr()
    assert f"note: the test split of {data} has {expected}; no F1 is reported for it" in captured.err
    test_line = next(line for line in captured.out.splitlines() if line.strip().startswith("test:"))
    assert "F1   n/a" in test_line and f"({expected})" in test_line, test_line
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["test"]["f1"] is None and final["test"]["undefined"] == expected
    assert final["validation"]["f1"] is not None


def test_a_validation_split_without_a_defective_image_reports_no_f1_and_keeps_threshold_half(tmp_path, capsys):
    train = [(f"d{i}", "0 0.5 0.5 0.1 0.1\n") for i in range(2)] + [(f"c{i:02d}", None) for i in range(18)]
    data = make_dataset(tmp_path / "d", train)
    out = tmp_path / "run"
    assert run_train("--data", data, "--img-size", 16, "--epochs", 1, "--out", out, "--device", "cpu") == 0
    captured = capsys.readouterr()
    assert "validation 4 images (0 defective)" in captured.out
    assert "note: the validation split" in captured.err and "no defective image" in captured.err
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["validation"]["f1"] is None and final["threshold"] is None
    assert final["note"] == "validation: no defective image: recall and F1 are undefined; threshold left at 0.5"
    assert load_checkpoint(out / "best.npz").header["threshold"] is None


def test_the_multilabel_report_gives_no_pooled_f1_for_a_single_class_split():
    from glasscuda.tasks.multilabel import report
    names = ["no_defect", "chipped_edge", "scratch", "stain"]
    truth = np.array([[1, 0, 0, 0]] * 4, float)
    probs = np.full((4, 4), 0.1)
    probs[:, 0] = 0.9
    result = report(truth, probs, [0.5] * 4, names)
    assert np.isnan(result["micro_f1"]) and np.isnan(result["macro_f1"])
    assert result["undefined"] == "no defective image: recall and F1 are undefined"
    both = report(np.array([[1, 0, 0, 0], [0, 1, 0, 0]], float), np.array([[0.9, 0.1, 0.1, 0.1],
                                                                           [0.1, 0.9, 0.1, 0.1]]), [0.5] * 4, names)
    assert both["micro_f1"] == 1.0 and "undefined" not in both


def test_a_threshold_for_a_cifar10_checkpoint_is_refused_not_ignored(tmp_path, capsys):
    from glasscuda.models import CifarNet
    path = save_checkpoint(tmp_path / "c.npz", CifarNet(image_size=8, seed=0),
                           {"task": "cifar10", "normalization": Normalizer([0.5] * 3, [0.2] * 3).to_dict(),
                            "class_names": [f"c{i}" for i in range(10)]})
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    code, out = run_predict(path, image, tmp_path / "p.csv", capsys, "--threshold", "0.3")
    assert code == 2
    assert "--threshold: a cifar10 checkpoint predicts the most probable class; there is no threshold to set" in out.err
    assert not (tmp_path / "p.csv").exists()
