"""The training and prediction command lines end to end on tiny synthetic sets."""
import csv
import json
import shutil

import numpy as np
import pytest

from glasscuda import evaluate, predict, train
from glasscuda.checkpoint import load_checkpoint
from glasscuda.data import generate_synthetic


@pytest.fixture(scope="module")
def tiny_glass(tmp_path_factory):
    root = tmp_path_factory.mktemp("glass") / "set"
    return generate_synthetic(root, n_train=60, n_test=20, image_size=32, defect_rate=0.3,
                              seed=5, progress=False)


def run_train(*args) -> int:
    return train.main([*map(str, args), "--no-progress"])


def test_binary_run_writes_every_artifact(tiny_glass, tmp_path):
    out = tmp_path / "run"
    assert run_train("--data", tiny_glass, "--img-size", 32, "--epochs", 2, "--out", out,
                     "--device", "cpu") == 0
    for name in ("best.npz", "last.npz", "metrics.json", "curves.png", "thresholds.json"):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    final = metrics["final"]
    for split in ("validation", "test"):
        assert {"precision", "recall", "f1"} <= set(final[split])
    header = load_checkpoint(out / "best.npz").header
    assert header["threshold"] == final["threshold"]
    assert not list(out.glob("*.partial")) and not list(out.glob(".*tmp"))


def test_evaluate_on_predict_output_reproduces_the_training_test_f1(tiny_glass, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_train("--data", tiny_glass, "--img-size", 32, "--epochs", 3, "--out", out, "--device", "cpu",
                     "--seed", 1) == 0
    final = json.loads((out / "metrics.json").read_text())["final"]
    threshold = final["threshold"] if final["threshold"] is not None else 0.5
    preds = tmp_path / "preds.csv"
    assert predict.main(["--checkpoint", str(out / "best.npz"), "--input", str(tiny_glass / "test" / "img"),
                         "--output", str(preds), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert evaluate.main(["--predictions", str(preds), "--annotations", str(tiny_glass),
                          "--threshold", repr(threshold), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["join"]["matched"] == 20 and report["join"]["only_in_annotations"] == 0
    for key in ("precision", "recall", "f1"):
        assert report["metrics"][key] == pytest.approx(final["test"][key], abs=1e-12), key


def test_resuming_gives_the_same_result_as_not_stopping(tiny_glass, tmp_path):
    """With the seed recipe's plateau schedule a run may be stopped and resumed for more epochs."""
    common = ["--data", tiny_glass, "--img-size", 32, "--device", "cpu", "--seed", 3, "--recipe", "seed"]
    assert run_train(*common, "--epochs", 3, "--out", tmp_path / "straight") == 0
    assert run_train(*common, "--epochs", 1, "--out", tmp_path / "halted") == 0
    assert run_train(*common, "--epochs", 3, "--out", tmp_path / "halted", "--resume") == 0
    straight = load_checkpoint(tmp_path / "straight" / "last.npz")
    resumed = load_checkpoint(tmp_path / "halted" / "last.npz")
    assert straight.model_state.keys() == resumed.model_state.keys()
    for name in straight.model_state:
        np.testing.assert_array_equal(straight.model_state[name], resumed.model_state[name], err_msg=name)
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(straight.header["history"]) == strip(resumed.header["history"])


def test_resume_of_a_cosine_run_for_other_epochs_is_refused(tiny_glass, tmp_path, capsys):
    """The cosine schedule spans --epochs: resuming for more would change the epochs already trained."""
    common = ["--data", tiny_glass, "--img-size", 32, "--device", "cpu", "--out", tmp_path, "--schedule", "cosine"]
    assert run_train(*common, "--epochs", 1) == 0
    assert run_train(*common, "--epochs", 2, "--resume") == 2
    assert "cosine_epochs: checkpoint 1 vs now 2" in capsys.readouterr().err


def test_resume_with_other_settings_is_refused(tiny_glass, tmp_path, capsys):
    common = ["--data", tiny_glass, "--img-size", 32, "--device", "cpu", "--out", tmp_path]
    assert run_train(*common, "--epochs", 1) == 0
    assert run_train(*common, "--epochs", 2, "--lr", 0.01, "--resume") == 2
    assert "other settings" in capsys.readouterr().err


def test_multilabel_run_and_predict_with_heatmaps(tiny_glass, tmp_path):
    out = tmp_path / "ml"
    assert run_train("--task", "multilabel", "--data", tiny_glass, "--img-size", 32, "--epochs", 1,
                     "--warmup-epochs", 2, "--out", out, "--device", "cpu") == 0
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert set(final["thresholds"]) == {"no_defect", "chipped_edge", "scratch", "stain"}
    assert [entry["epoch"] for entry in final["warmup"]] == [1, 2]
    assert (out / "confusion_matrices.png").exists()
    preds = tmp_path / "preds.csv"
    heatmaps = tmp_path / "maps"
    assert predict.main(["--checkpoint", str(out / "best.npz"), "--input",
                         str(tiny_glass / "test" / "img"), "--output", str(preds), "--device", "cpu",
                         "--heatmaps", str(heatmaps)]) == 0
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == 20
    assert list(rows[0]) == ["id", "p_no_defect", "p_chipped_edge", "p_scratch", "p_stain", "labels"]
    expected_maps = set()
    for row in rows:
        labels = row["labels"].split(";")
        assert labels and ("no_defect" not in labels or labels == ["no_defect"])
        expected_maps |= {f"{row['id']}_{name}.png" for name in labels if name != "no_defect"}
    assert {p.name for p in heatmaps.glob("*.png")} == expected_maps
    peaks = list(csv.DictReader((heatmaps / "peaks.csv").open()))
    assert {f"{p['id']}_{p['class']}.png" for p in peaks} == expected_maps
    assert all(0 <= float(p["peak_x"]) <= 1 and 0 <= float(p["peak_y"]) <= 1 for p in peaks)


def test_multilabel_resume_after_the_warm_up_gives_the_same_result(tiny_glass, tmp_path):
    common = ["--task", "multilabel", "--data", tiny_glass, "--img-size", 32, "--device", "cpu",
              "--warmup-epochs", 1, "--t0", 1]
    assert run_train(*common, "--epochs", 2, "--out", tmp_path / "straight") == 0
    assert run_train(*common, "--epochs", 1, "--out", tmp_path / "halted") == 0
    assert run_train(*common, "--epochs", 2, "--out", tmp_path / "halted", "--resume") == 0
    straight = load_checkpoint(tmp_path / "straight" / "last.npz")
    resumed = load_checkpoint(tmp_path / "halted" / "last.npz")
    for name in straight.model_state:
        np.testing.assert_array_equal(straight.model_state[name], resumed.model_state[name], err_msg=name)
    assert len(resumed.header["warmup"]) == 1
    final = json.loads((tmp_path / "halted" / "metrics.json").read_text())["final"]
    assert final["warmup"] == resumed.header["warmup"]


def test_multilabel_trains_on_crops_and_scores_whole_images(tiny_glass, tmp_path):
    out = tmp_path / "crops"
    assert run_train("--task", "multilabel", "--data", tiny_glass, "--img-size", 32, "--crop", 16, "--epochs", 2,
                     "--warmup-epochs", 0, "--out", out, "--device", "cpu") == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"]["crop"] == 16 and [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert load_checkpoint(out / "best.npz").header["run"]["img_size"] == 32


def test_a_run_on_crops_resumes_to_the_same_weights(tiny_glass, tmp_path):
    common = ["--task", "multilabel", "--data", tiny_glass, "--img-size", 32, "--crop", 16, "--device", "cpu",
              "--warmup-epochs", 0, "--t0", 1]
    assert run_train(*common, "--epochs", 2, "--out", tmp_path / "straight") == 0
    assert run_train(*common, "--epochs", 1, "--out", tmp_path / "halted") == 0
    assert run_train(*common, "--epochs", 2, "--out", tmp_path / "halted", "--resume") == 0
    straight = load_checkpoint(tmp_path / "straight" / "last.npz")
    resumed = load_checkpoint(tmp_path / "halted" / "last.npz")
    for name in straight.model_state:
        np.testing.assert_array_equal(straight.model_state[name], resumed.model_state[name], err_msg=name)


def test_crops_need_a_box_on_every_label_line(tiny_glass, tmp_path, capsys):
    root = tmp_path / "set"
    shutil.copytree(tiny_glass, root)
    label = sorted((root / "train" / "txt").glob("*.txt"))[0]
    label.write_text("".join(line.split()[0] + "\n" for line in label.read_text().splitlines()))
    code = run_train("--task", "multilabel", "--data", root, "--img-size", 32, "--crop", 16, "--epochs", 1,
                     "--warmup-epochs", 0, "--out", tmp_path / "run", "--device", "cpu")
    err = capsys.readouterr().err
    assert code == 2 and f"{label.stem}.png" in err and "has no box" in err


@pytest.mark.parametrize("flags,message", [
    (["--crop", "24"], "--crop must be 0 or a multiple of 16 up to --img-size (128), got 24"),
    (["--crop", "144"], "--crop must be 0 or a multiple of 16 up to --img-size (128), got 144"),
    (["--crop", "64", "--recipe", "seed"], "--crop needs --warmup-epochs 0"),
])
def test_a_crop_the_run_cannot_take_is_refused(flags, message, capsys):
    with pytest.raises(SystemExit) as stop:
        train.parse_args(["--task", "multilabel", *flags])
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_crops_are_not_an_option_of_the_binary_task(capsys):
    with pytest.raises(SystemExit) as stop:
        train.parse_args(["--crop", "64"])
    assert stop.value.code == 2 and "--crop: not an option of the binary task" in capsys.readouterr().err


def test_an_interrupt_in_the_warm_up_says_there_is_nothing_to_resume(tiny_glass, tmp_path, capsys, monkeypatch):
    from glasscuda.tasks import multilabel

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(multilabel, "warm_up", interrupted)
    assert run_train("--task", "multilabel", "--data", tiny_glass, "--img-size", 32, "--epochs", 1,
                     "--out", tmp_path / "run", "--device", "cpu") == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.npz").exists()


def test_an_augmentation_probability_outside_0_1_is_a_usage_error(tiny_glass, tmp_path, capsys):
    code = run_train("--task", "multilabel", "--data", tiny_glass, "--img-size", 32, "--epochs", 1,
                     "--out", tmp_path, "--device", "cpu", "--aug-erase", 1.5)
    assert code == 2 and "--aug-erase must be a probability in [0, 1], got 1.5" in capsys.readouterr().err
    assert not (tmp_path / "best.npz").exists()


def test_negative_warmup_epochs_are_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        train.parse_args(["--task", "multilabel", "--warmup-epochs", "-1"])
    assert stop.value.code == 2 and "--warmup-epochs must be >= 0" in capsys.readouterr().err


def test_heatmaps_need_a_multilabel_checkpoint(tiny_glass, tmp_path, capsys):
    out = tmp_path / "bin"
    assert run_train("--data", tiny_glass, "--img-size", 32, "--epochs", 1, "--out", out, "--device", "cpu") == 0
    code = predict.main(["--checkpoint", str(out / "best.npz"), "--input", str(tiny_glass / "test" / "img"),
                         "--output", str(tmp_path / "p.csv"), "--heatmaps", str(tmp_path / "maps")])
    assert code == 2 and "multi-label checkpoint" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def test_predict_binary_csv_and_unreadable_image(tiny_glass, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_train("--data", tiny_glass, "--img-size", 32, "--epochs", 1, "--out", out,
                     "--device", "cpu") == 0
    images = tmp_path / "imgs"
    shutil.copytree(tiny_glass / "test" / "img", images)
    (images / "broken.png").write_bytes(b"not a png at all")
    preds = tmp_path / "p.csv"
    with pytest.warns(UserWarning, match="broken.png"):
        code = predict.main(["--checkpoint", str(out / "best.npz"), "--input", str(images),
                             "--output", str(preds), "--device", "cpu"])
    assert code == 0
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == 20 and list(rows[0]) == ["id", "probability", "label"]
    threshold = load_checkpoint(out / "best.npz").header["threshold"] or 0.5
    assert all(int(r["label"]) == int(float(r["probability"]) >= threshold) for r in rows)
    assert predict.main(["--checkpoint", str(out / "best.npz"), "--input", str(images),
                         "--output", str(preds), "--strict", "--device", "cpu"]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_corrupt_image_is_skipped_and_counted_or_stops_when_strict(tiny_glass, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_glass, data)
    (data / "train" / "img" / "glass_corrupt.png").write_bytes(b"\x89PNG garbage")
    (data / "train" / "txt" / "glass_corrupt.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    with pytest.warns(UserWarning, match="glass_corrupt.png"):
        assert run_train("--data", data, "--img-size", 32, "--epochs", 1, "--out", tmp_path / "a",
                         "--device", "cpu") == 0
    assert run_train("--data", data, "--img-size", 32, "--epochs", 1, "--out", tmp_path / "b",
                     "--device", "cpu", "--strict") == 2
    assert "glass_corrupt.png" in capsys.readouterr().err


def test_unknown_class_id_and_malformed_line_name_the_file(tiny_glass, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_glass, data)
    stems = sorted(p.stem for p in (data / "train" / "img").glob("*.png"))
    (data / "train" / "txt" / f"{stems[0]}.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    (data / "train" / "txt" / f"{stems[1]}.txt").write_text("1 0.5 zero 0.1 0.1\n")
    assert run_train("--data", data, "--img-size", 32, "--epochs", 1, "--out", tmp_path / "s",
                     "--device", "cpu", "--strict") == 2
    assert f"{stems[0]}.txt" in capsys.readouterr().err
    with pytest.warns(UserWarning) as record:
        assert run_train("--data", data, "--img-size", 32, "--epochs", 1, "--out", tmp_path / "w",
                         "--device", "cpu") == 0
    text = " ".join(str(w.message) for w in record)
    assert f"{stems[0]}.txt" in text and f"{stems[1]}.txt" in text and "skipped 2" in text


def test_empty_folder_and_no_defects_are_clear_errors(tiny_glass, tmp_path, capsys):
    empty = tmp_path / "empty"
    (empty / "train" / "img").mkdir(parents=True)
    (empty / "test" / "img").mkdir(parents=True)
    assert run_train("--data", empty, "--out", tmp_path / "e", "--device", "cpu") == 2
    assert "no images found" in capsys.readouterr().err
    clean = tmp_path / "clean"
    shutil.copytree(tiny_glass, clean)
    shutil.rmtree(clean / "train" / "txt")
    assert run_train("--data", clean, "--img-size", 32, "--out", tmp_path / "c", "--device", "cpu") == 2
    assert "F1 is undefined" in capsys.readouterr().err


def test_help_answers_the_question():
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--help"])
    assert exit_info.value.code == 0
