"""Recipes (--recipe seed/default) and the binary options they bring: WarmupCosine, WeightAverage,
the pooled / batch-norm / wider BinaryDetector, its checkpoints and exports, auc_pr, and a run end to end."""
from __future__ import annotations

import csv
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import numerical_gradient
from glasscuda import predict, training
from glasscuda.checkpoint import CheckpointError, check_model_config, load_checkpoint, load_model, save_checkpoint
from glasscuda.data import load_split
from glasscuda.data.augment import Augment
from glasscuda.losses import BCEWithLogitsLoss
from glasscuda.metrics import auc_pr
from glasscuda.models import BinaryDetector, MultiLabelNet
from glasscuda.nn import BatchNorm2d, Conv2d, GlobalMaxPool2d, Linear
from glasscuda.optim import Adam, WarmupCosine, WeightAverage
from glasscuda.tasks.recipes import RECIPES
from glasscuda.train import parse_args
from test_train_cli import run_train, tiny_glass  # noqa: F401  (the tiny synthetic set and the train runner)

# The source report's recipes, written out by hand (what the parser's defaults were before recipes existed).
REPORT_BINARY = {"epochs": 50, "img_size": 128, "lr": 1e-3, "batch_size": 32, "weight_decay": 0.0, "head": "dense",
                 "batchnorm": False, "width": 1, "schedule": "plateau", "lr_warmup": 0.0, "ema": 0.0, "tta": False,
                 "aug_flip": 0.0, "aug_rotate": 0.0, "aug_jitter": 0.0, "aug_sharpness": 0.0, "aug_noise": 0.0,
                 "aug_erase": 0.0, "threshold_rule": "f1"}
_AUGMENT = Augment()
REPORT_MULTILABEL = {"epochs": 9, "img_size": 128, "lr": 1e-3, "batch_size": 32, "weight_decay": 1e-2, "tta": True,
                     "head": "pooled", "batchnorm": False, "warmup_epochs": 10, "crop": 0, "aug_flip": _AUGMENT.p_flip, "aug_rotate": _AUGMENT.p_rotate, "aug_jitter": _AUGMENT.p_jitter,
                     "aug_sharpness": _AUGMENT.p_sharpness, "aug_noise": _AUGMENT.p_noise,
                     "aug_erase": _AUGMENT.p_erase}
OPTIONS = dict(head="pooled", batchnorm=True, width=2)


# --recipe -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,report", [("binary", REPORT_BINARY), ("multilabel", REPORT_MULTILABEL)])
def test_recipe_seed_sets_every_flag_it_names(task, report):
    args = parse_args(["--task", task, "--recipe", "seed"])
    assert set(RECIPES["seed"][task]) == set(report)
    for key, value in report.items():
        got = getattr(args, key)
        assert got == value and type(got) is type(value), (key, got, value)
    # whatever the default recipe holds, it fills the same flags (on a dataset: the synthetic set has its own epochs)
    default = parse_args(["--task", task, "--data", "somewhere"])
    assert default.recipe == "default"
    assert {k: getattr(default, k) for k in RECIPES["default"][task]} == RECIPES["default"][task]


def test_explicit_flags_override_the_recipe():
    args = parse_args(["--recipe", "seed", "--ema", "0.9", "--epochs", "3", "--tta", "--head", "pooled",
                       "--batchnorm", "--lr", "0.01", "--schedule", "cosine", "--aug-erase", "0.25"])
    assert (args.ema, args.epochs, args.tta, args.head, args.batchnorm, args.lr, args.schedule, args.aug_erase) == \
           (0.9, 3, True, "pooled", True, 0.01, "cosine", 0.25)
    assert (args.width, args.batch_size, args.img_size) == (1, 32, 128)   # untouched ones keep the recipe's
    # falsy explicit values win over truthy recipe values
    ml = parse_args(["--task", "multilabel", "--recipe", "seed", "--no-tta", "--weight-decay", "0",
                     "--aug-flip", "0"])
    assert (ml.tta, ml.weight_decay, ml.aug_flip, ml.epochs) == (False, 0.0, 0.0, 9)


@pytest.mark.parametrize("argv, message", [
    (["--task", "multilabel", "--ema", "0.9"], "--ema: not an option of the multilabel task"),
    (["--task", "multilabel", "--width", "2", "--schedule", "cosine"],
     "--width, --schedule: not an option of the multilabel"),
    (["--task", "multilabel", "--head", "dense"], "--head dense: the multilabel network's head is one of pooled, max"),
    (["--warmup-epochs", "2"], "--warmup-epochs: not an option of the binary task"),
    (["--task", "cifar10", "--data", ".", "--batchnorm"], "--batchnorm: not an option of the cifar10 task"),
    (["--task", "cifar10", "--data", ".", "--tta"], "--tta: not an option of the cifar10 task"),
    (["--recipe", "seed", "--lr-warmup", "1"], "--lr-warmup is the warm-up of --schedule cosine"),
])
def test_flags_a_task_does_not_read_are_usage_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(argv)
    assert stop.value.code == 2 and message in capsys.readouterr().err


def test_the_default_recipes_warm_up_is_its_share_of_the_epochs():
    recipe = RECIPES["default"]["binary"]
    for epochs in (recipe["epochs"], 2, 100):
        args = parse_args(["--epochs", str(epochs)])
        assert args.lr_warmup == pytest.approx(recipe["lr_warmup"] / recipe["epochs"] * epochs)
    assert parse_args(["--epochs", "2", "--lr-warmup", "1"]).lr_warmup == 1.0


def test_the_synthetic_set_trains_for_its_own_epochs_only_without_data_and_epochs():
    from glasscuda.tasks.recipes import SYNTHETIC_EPOCHS
    synthetic = SYNTHETIC_EPOCHS[("default", "binary")]
    assert synthetic < RECIPES["default"]["binary"]["epochs"]
    assert parse_args([]).epochs == synthetic
    assert parse_args(["--data", "somewhere"]).epochs == RECIPES["default"]["binary"]["epochs"]
    assert parse_args(["--epochs", "7"]).epochs == 7
    assert parse_args(["--recipe", "seed"]).epochs == RECIPES["seed"]["binary"]["epochs"]


def test_the_seed_binary_model_config_is_the_one_before_recipes():
    args = parse_args(["--recipe", "seed"])
    model = BinaryDetector(in_channels=1, image_size=args.img_size, head=args.head, batchnorm=args.batchnorm,
                           width=args.width, seed=0)
    assert model.config() == {"architecture": "binary", "in_channels": 1, "image_size": 128}
    # and the seed network's weights are the ones the plain constructor draws
    plain = BinaryDetector(image_size=128, seed=0).state_dict()
    assert all(np.array_equal(v, plain[k]) for k, v in model.state_dict().items())


# WarmupCosine ---------------------------------------------------------------------------------------

def _warmup_cosine_oracle(e, base, total, warmup, eta_min):
    if e < warmup:
        return base * (0.01 + 0.99 * e / warmup)
    done = min(1.0, (e - warmup) / (total - warmup))
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * done)) / 2


def test_warmup_cosine_follows_its_formula():
    base, total, warmup, eta = 0.1, 10, 2, 0.001
    opt = SimpleNamespace(lr=base)
    sched = WarmupCosine(opt, total=total, warmup=warmup, eta_min=eta)
    assert opt.lr == pytest.approx(base / 100, rel=1e-12)                     # epoch 0
    hand = {0.0: 0.001, 1.0: 0.1 * (0.01 + 0.495), 2.0: base, 6.0: (base + eta) / 2, 10.0: eta, 12.0: eta, 25.0: eta}
    for e, expected in hand.items():
        sched.step(e)
        assert opt.lr == pytest.approx(expected, rel=1e-12, abs=1e-15), e
    for e in (0.25, 1.5, 3.0, 4.4, 7.75, 9.9):
        sched.step(e)
        assert opt.lr == pytest.approx(_warmup_cosine_oracle(e, base, total, warmup, eta), rel=1e-12), e
    # step() without an epoch advances by one
    sched.step(3.0)
    sched.step()
    assert sched.epoch == 4.0 and opt.lr == pytest.approx(_warmup_cosine_oracle(4.0, base, total, warmup, eta))
    # no warm-up: the base rate at once
    opt0 = SimpleNamespace(lr=0.5)
    WarmupCosine(opt0, total=4)
    assert opt0.lr == 0.5


def test_warmup_cosine_state_round_trip_and_invalid_warmup():
    opt = SimpleNamespace(lr=0.02)
    sched = WarmupCosine(opt, total=6, warmup=1.5, eta_min=1e-4)
    sched.step(2.3)
    twin_opt = SimpleNamespace(lr=0.02)
    twin = WarmupCosine(twin_opt, total=6, warmup=1.5, eta_min=1e-4)
    twin.load_state_dict(json.loads(json.dumps(sched.state_dict())))   # plain numbers: as a checkpoint header
    assert twin_opt.lr == opt.lr == pytest.approx(_warmup_cosine_oracle(2.3, 0.02, 6, 1.5, 1e-4), rel=1e-12)
    for e in (2.9, 4.0, 7.0):
        sched.step(e)
        twin.step(e)
        assert twin_opt.lr == opt.lr
    for warmup, total in ((2, 2), (3, 2), (-0.5, 2)):
        with pytest.raises(ValueError, match="warmup"):
            WarmupCosine(SimpleNamespace(lr=1.0), total=total, warmup=warmup)


# WeightAverage --------------------------------------------------------------------------------------

def _optimizer(rng, seed=0):
    layer = Linear(5, 3, rng=np.random.default_rng(seed))
    return layer, Adam(layer.parameters(), lr=1e-3)


@pytest.mark.parametrize("decay", [0.5, 0.95])
def test_weight_average_follows_its_recurrence(rng, decay):
    layer, opt = _optimizer(rng)
    average = WeightAverage(opt, decay)
    oracle = opt.data.astype(np.float64).copy()
    for n in range(1, 16):
        weights = rng.standard_normal(opt.data.shape)
        opt.data[...] = weights
        average.update()
        d = min(decay, (1 + n) / (10 + n))
        oracle = d * oracle + (1 - d) * opt.data.astype(np.float64)
    assert average.updates == 15
    np.testing.assert_allclose(average.average, oracle, rtol=1e-5, atol=1e-6)
    # the optimizer's buffer (the trained weights) is left alone
    np.testing.assert_array_equal(opt.data, weights.astype(opt.data.dtype))


def _averaged(rng, decay, steps):
    """An optimizer's layer, the optimizer, and its WeightAverage after ``steps`` random weights."""
    layer, opt = _optimizer(rng)
    average = WeightAverage(opt, decay)
    for _ in range(steps):
        opt.data[...] = rng.standard_normal(opt.data.shape)
        average.update()
    return layer, opt, average


def test_weight_average_applied_swaps_in_and_restores_even_on_error(rng):
    layer, opt, average = _averaged(rng, 0.9, 4)
    trained = opt.data.copy()
    trained_weight = layer.weight.data.copy()
    kept = average.average.copy()
    assert not np.array_equal(trained, kept)
    with average.applied():
        np.testing.assert_array_equal(opt.data, kept)
        np.testing.assert_array_equal(layer.weight.data.reshape(-1), kept[:layer.weight.data.size])   # the model sees it
    np.testing.assert_array_equal(opt.data, trained)
    np.testing.assert_array_equal(layer.weight.data, trained_weight)
    with pytest.raises(KeyError):
        with average.applied():
            opt.data[...] = 123.0   # even a body that writes the buffer and fails
            raise KeyError("boom")
    np.testing.assert_array_equal(opt.data, trained)
    np.testing.assert_array_equal(average.average, kept)


def test_weight_average_state_round_trip(rng):
    layer, opt, average = _averaged(rng, 0.8, 5)
    state = average.state_dict()
    twin_layer, twin_opt = _optimizer(rng, seed=1)
    twin = WeightAverage(twin_opt, 0.8)
    twin.load_state_dict(state)
    assert twin.updates == 5
    np.testing.assert_array_equal(twin.average, average.average)
    step = rng.standard_normal(opt.data.shape)
    for o, a in ((opt, average), (twin_opt, twin)):
        o.data[...] = step
        a.update()
    np.testing.assert_array_equal(twin.average, average.average)
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(opt, 1.0)


# The pooled, batch-norm, wider BinaryDetector -------------------------------------------------------

def test_pooled_head_is_independent_of_the_input_size(rng):
    model = BinaryDetector(image_size=32, seed=2, **OPTIONS).eval()
    assert model.config() == {"architecture": "binary", "in_channels": 1, "image_size": 32, **OPTIONS}
    assert sum(isinstance(layer, BatchNorm2d) for layer in model.body.layers) == 4
    assert [layer.out_channels for layer in model.body.layers if isinstance(layer, Conv2d)] == [32, 64, 128, 128]
    for side in (32, 48):
        out = model.forward(rng.standard_normal((3, 1, side, side)).astype(np.float32))
        assert out.shape == (3, 1) and np.isfinite(out).all()


BATCHNORM_NETWORKS = {
    "binary pooled": lambda: BinaryDetector(image_size=32, seed=5, **OPTIONS),
    "binary max": lambda: BinaryDetector(image_size=32, seed=5, **{**OPTIONS, "head": "max"}),
    "multilabel max": lambda: MultiLabelNet(image_size=32, head="max", batchnorm=True, seed=5),
}


@pytest.mark.parametrize("network", list(BATCHNORM_NETWORKS))
def test_pooled_batchnorm_networks_gradients_match_finite_differences(rng, network):
    model = BATCHNORM_NETWORKS[network]().to("cpu", dtype=np.float64).train()
    x = rng.standard_normal((2, 1, 32, 32))
    R = rng.standard_normal(model.forward(x).shape)

    def loss():
        return float(np.sum(model.forward(x) * R))

    model.zero_grad()
    model.forward(x)
    grad_x = model.backward(R)
    params = dict(model.named_parameters())
    before_bn = {f"body.{i}.bias" for i, layer in enumerate(model.body.layers)
                 if isinstance(layer, Conv2d) and isinstance(model.body.layers[i + 1], BatchNorm2d)}
    assert len(before_bn) == 4 and before_bn <= set(params)
    checked = 0
    for name, param in params.items():
        picks = rng.choice(param.data.size, size=min(3, param.data.size), replace=False)
        numerical = numerical_gradient(loss, param.data, indices=picks)
        analytic = param.grad.reshape(-1)[picks]
        if name in before_bn:   # batch norm subtracts any per-channel constant: no gradient reaches these
            assert np.abs(analytic).max() <= 1e-10 and np.abs(numerical).max() <= 1e-7, name
            continue
        np.testing.assert_allclose(analytic, numerical, rtol=1e-5, atol=1e-9, err_msg=name)
        checked += 1
    assert checked == len(params) - 4
    picks = rng.choice(x.size, size=8, replace=False)
    np.testing.assert_allclose(grad_x.reshape(-1)[picks], numerical_gradient(loss, x, indices=picks),
                               rtol=1e-5, atol=1e-9, err_msg="input")


def _one_step_checkpoint(path, rng, tta=False, head="pooled"):
    """A BN + pooled detector after one Adam step in train mode (running statistics moved), saved."""
    model = BinaryDetector(image_size=32, seed=7, **{**OPTIONS, "head": head})
    x = rng.standard_normal((4, 1, 32, 32)).astype(np.float32) + 0.3
    y = np.array([[1.0], [0.0], [1.0], [0.0]], dtype=np.float32)
    optimizer, loss_fn = Adam(model.parameters(), lr=1e-2), BCEWithLogitsLoss()
    model.train()
    optimizer.zero_grad()
    loss_fn.forward(model.forward(x), y)
    model.backward(loss_fn.backward(), need_input_grad=False)
    optimizer.step()
    model.eval()
    header = {"task": "binary", "run": {"task": "binary"}, "epoch": 1, "normalization": {"mean": [0.47], "std": [0.11]},
              "threshold": 0.4, "class_names": ["defect"], "tta": tta}
    return save_checkpoint(path, model, header), model


def test_checkpoint_round_trip_gives_identical_logits(rng, tmp_path):
    path, model = _one_step_checkpoint(tmp_path / "bn.npz", rng)
    bn = model.body.layers[1]
    assert int(np.asarray(bn.state_dict()["num_batches_tracked"])) == 1
    assert not np.allclose(bn.state_dict()["running_mean"], 0)
    loaded, header = load_model(path, device="cpu")
    assert header["model"] == model.config()
    x = rng.standard_normal((3, 1, 32, 32)).astype(np.float32)
    np.testing.assert_array_equal(loaded.eval().forward(x), model.eval().forward(x))
    state = load_checkpoint(path).model_state
    counters = [k for k in state if k.endswith("num_batches_tracked")]
    assert len(counters) == 4 and all(state[k].dtype == np.int64 for k in counters)


def test_check_model_config_optional_keys():
    old = {"architecture": "binary", "in_channels": 1, "image_size": 128}
    check_model_config("old.npz", old)                       # a checkpoint from before recipes
    check_model_config("new.npz", {**old, **OPTIONS})
    check_model_config("same.npz", {**old, "head": "dense", "batchnorm": False, "width": 1})
    for key, bad in (("head", 3), ("batchnorm", 1), ("width", True), ("width", "2")):
        with pytest.raises(CheckpointError, match=key) as error:
            check_model_config("bad.npz", {**old, key: bad})
        assert "bad.npz" in str(error.value)
    with pytest.raises(CheckpointError, match="image_size"):
        check_model_config("missing.npz", {"architecture": "binary", "in_channels": 1, **OPTIONS})
    for key, bad in (("width", 17), ("width", 0), ("head", "bogus")):
        with pytest.raises(CheckpointError, match=f"model {key}"):
            check_model_config("bad.npz", {**old, key: bad})
    with pytest.raises(CheckpointError, match="depth"):
        check_model_config("extra.npz", {**old, "depth": 3})


@pytest.mark.parametrize("head, pool", [("pooled", "GlobalAveragePool"), ("max", "GlobalMaxPool")])
def test_bn_pooled_checkpoint_exports_to_onnx_and_torch(rng, tmp_path, head, pool):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from glasscuda.export import export_onnx
    import onnx
    path, model = _one_step_checkpoint(tmp_path / "bn.npz", rng, head=head)
    report = export_onnx(path, tmp_path / "bn.onnx")
    assert report.n_checked > 0 and report.max_abs_diff <= 1e-5 and report.path.stat().st_size > 0
    assert report.tta is False   # as the checkpoint was validated
    ops = [node.op_type for node in onnx.load(str(report.path)).graph.node]
    assert ops.count("BatchNormalization") == 4 and pool in ops

    torch = pytest.importorskip("torch")
    from glasscuda.export import to_torch_state_dict, torch_model
    network = torch_model(load_checkpoint(path).header["model"])
    state = to_torch_state_dict(path)
    assert state["body.1.num_batches_tracked"].dtype == torch.int64
    network.load_state_dict(state, strict=True)
    x = rng.standard_normal((5, 1, 32, 32)).astype(np.float32)
    with torch.no_grad():
        theirs = network.eval()(torch.from_numpy(x)).numpy()
    ours = model.eval().forward(x)
    assert theirs.shape == ours.shape == (5, 1)
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-5)


# The multi-label network's options ---------------------------------------------------------------

def test_multilabel_network_options_keep_the_course_network_and_its_maps(rng):
    """The default MultiLabelNet is the course network, weight for weight; with --head max --batchnorm the
    class activation maps still come with the network's own logits (for the max head not their mean)."""
    course = MultiLabelNet(image_size=32, seed=3)
    assert course.config() == {"architecture": "multilabel", "in_channels": 1, "n_classes": 4, "image_size": 32}
    new = MultiLabelNet(image_size=32, head="max", batchnorm=True, seed=3)
    assert new.config() == {**course.config(), "head": "max", "batchnorm": True}
    convs = [layer for layer in new.body.layers if isinstance(layer, Conv2d)]
    assert [np.array_equal(c.weight.data, d.weight.data) for c, d in
            zip(convs, [layer for layer in course.body.layers if isinstance(layer, Conv2d)])] == [True] * 4
    assert isinstance(new.body.layers[-2], GlobalMaxPool2d) and len(new.body) == len(course.body) + 4
    x = rng.standard_normal((3, 1, 32, 32)).astype(np.float32)
    new.train().forward(x)                      # running statistics move off their initial values
    for model in (course, new):
        logits, cams = model.class_activation_maps(x)
        np.testing.assert_allclose(logits, model.eval().forward(x), rtol=1e-5, atol=1e-6)
        assert cams.shape == (3, 4, 2, 2)
    with pytest.raises(ValueError, match="head must be one of pooled, max"):
        MultiLabelNet(head="dense")
    check_model_config("ml.npz", new.config())
    with pytest.raises(CheckpointError, match="model head must be one of pooled, max"):
        check_model_config("ml.npz", {**course.config(), "head": "dense"})


def test_multilabel_max_head_with_batchnorm_trains_predicts_maps_and_exports(tiny_glass, tmp_path):  # noqa: F811
    out = tmp_path / "ml"
    assert run_train("--task", "multilabel", "--data", tiny_glass, "--out", out, "--img-size", 32, "--epochs", 1,
                     "--warmup-epochs", 1, "--head", "max", "--batchnorm", "--device", "cpu") == 0
    header = load_checkpoint(out / "best.npz").header
    assert header["model"]["head"] == "max" and header["model"]["batchnorm"] is True
    assert header["run"]["head"] == "max" and header["run"]["batchnorm"] is True
    maps = tmp_path / "maps"
    assert predict.main(["--checkpoint", str(out / "best.npz"), "--input", str(tiny_glass / "test" / "img"),
                         "--output", str(tmp_path / "ml.csv"), "--heatmaps", str(maps), "--no-progress",
                         "--device", "cpu"]) == 0
    assert (maps / "peaks.csv").exists() and len(list(maps.glob("*.png"))) > 0
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from glasscuda.export import export_onnx
    report = export_onnx(out / "best.npz", tmp_path / "ml.onnx")
    assert report.n_checked > 0 and report.max_abs_diff <= 1e-5


# Training end to end --------------------------------------------------------------------------------

NEW_BINARY = ["--recipe", "seed", "--head", "pooled", "--batchnorm", "--schedule", "cosine", "--lr-warmup", 1,
              "--ema", 0.9, "--tta", "--aug-jitter", 0.5, "--weight-decay", 0.01]


def _without_seconds(metrics):
    strip = lambda d: {k: v for k, v in d.items() if k != "seconds"}  # noqa: E731
    return json.dumps({"history": [strip(h) for h in metrics["history"]], "final": strip(metrics["final"])},
                      sort_keys=True)


def _probabilities(csv_path):
    with open(csv_path, newline="") as f:
        return {row["id"]: float(row["probability"]) for row in csv.DictReader(f)}


def _average_precision(truth, scores):
    """sum_k (R_k - R_{k-1}) P_k over the distinct scores, highest first."""
    truth, scores = np.asarray(truth, bool), np.asarray(scores, np.float64)
    total, recall_before = 0.0, 0.0
    for t in sorted(set(scores.tolist()), reverse=True):
        chosen = scores >= t
        tp = int(np.sum(chosen & truth))
        precision, recall = tp / int(chosen.sum()), tp / int(truth.sum())
        total += (recall - recall_before) * precision
        recall_before = recall
    return total


def test_new_binary_recipe_resumes_exactly_and_predict_takes_tta_from_the_checkpoint(tiny_glass, tmp_path,  # noqa: F811
                                                                                      monkeypatch, capsys):
    common = ["--data", tiny_glass, "--img-size", 32, "--device", "cpu", "--seed", 3, "--epochs", 2, *NEW_BINARY]
    assert run_train(*common, "--out", tmp_path / "straight") == 0

    real_train_epoch, calls = training.train_epoch, []

    def interrupted_in_epoch_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_train_epoch(*args, **kwargs)
    with monkeypatch.context() as patch:
        patch.setattr(training, "train_epoch", interrupted_in_epoch_2)
        assert run_train(*common, "--out", tmp_path / "halted") == 130
    assert load_checkpoint(tmp_path / "halted" / "last.npz").header["epoch"] == 1
    assert run_train(*common, "--out", tmp_path / "halted", "--resume") == 0

    straight_metrics = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    resumed_metrics = json.loads((tmp_path / "halted" / "metrics.json").read_text())
    assert _without_seconds(straight_metrics) == _without_seconds(resumed_metrics)
    # the schedule: warm-up ends at the base rate after epoch 1, the cosine reaches 0 at epoch 2
    assert [h["lr"] for h in straight_metrics["history"]] == pytest.approx([1e-3, 0.0], abs=1e-15)
    for name in ("last.npz", "best.npz"):
        straight, resumed = (load_checkpoint(tmp_path / run / name) for run in ("straight", "halted"))
        for key in straight.model_state:
            np.testing.assert_array_equal(straight.model_state[key], resumed.model_state[key], err_msg=f"{name} {key}")
    straight, resumed = (load_checkpoint(tmp_path / run / "last.npz") for run in ("straight", "halted"))
    np.testing.assert_array_equal(straight.optimizer_state["average"], resumed.optimizer_state["average"])
    assert straight.optimizer_state["average_updates"] == resumed.optimizer_state["average_updates"] > 0

    best = load_checkpoint(tmp_path / "straight" / "best.npz")
    assert best.header["tta"] is True
    assert best.header["model"] == {"architecture": "binary", "in_channels": 1, "image_size": 32,
                                    "head": "pooled", "batchnorm": True}
    outputs = {}
    for name, flag in (("default", []), ("tta", ["--tta"]), ("plain", ["--no-tta"])):
        outputs[name] = tmp_path / f"{name}.csv"
        assert predict.main(["--checkpoint", str(tmp_path / "straight" / "best.npz"), "--input",
                             str(tiny_glass / "test" / "img"), "--output", str(outputs[name]), "--device", "cpu",
                             "--no-progress", *flag]) == 0
    probs = {name: _probabilities(p) for name, p in outputs.items()}
    assert probs["default"] == probs["tta"]
    assert probs["default"] != probs["plain"]   # TTA does change something, so the equality above means something
    # the test AUC-PR in metrics.json is average precision of what predict gives on the test images
    test = load_split(tiny_glass, "test", image_size=32)
    truth = dict(zip(test.ids, test.is_defective))
    ids = sorted(probs["default"])
    expected = _average_precision([truth[i] for i in ids], [probs["default"][i] for i in ids])
    assert straight_metrics["final"]["test"]["auc_pr"] == pytest.approx(expected, abs=1e-9)
    capsys.readouterr()


# auc_pr ----------------------------------------------------------------------------------------------

def test_auc_pr_is_average_precision():
    # ranks: P = 1, 1/2, 2/3, 3/4, 3/5, 1/2 ; R = 1/3, 1/3, 2/3, 1, 1, 1
    truth = [1, 0, 1, 1, 0, 0]
    scores = [0.9, 0.8, 0.7, 0.6, 0.4, 0.3]
    assert auc_pr(truth, scores) == pytest.approx(1 / 3 * 1 + 1 / 3 * 2 / 3 + 1 / 3 * 3 / 4, rel=1e-12)  # 29/36
    assert auc_pr(truth, scores) == pytest.approx(29 / 36, rel=1e-12)
    # ties are one threshold: {0.8: 1 pos + 1 neg} -> P 1/2 at R 1/2, then P 2/3 at R 1
    assert auc_pr([1, 0, 1], [0.8, 0.8, 0.2]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3, rel=1e-12)
    rng = np.random.default_rng(3)
    truth = rng.random(40) < 0.3
    scores = np.round(rng.random(40), 1)   # many ties
    assert auc_pr(truth, scores) == pytest.approx(_average_precision(truth, scores), rel=1e-12)
    assert auc_pr([1, 1], [0.2, 0.9]) == 1.0
    assert math.isnan(auc_pr([0, 0, 0], [0.1, 0.5, 0.9]))


@pytest.mark.parametrize("flags,message", [
    (["--schedule", "cosine", "--lr-warmup", "1", "--epochs", "1"], "--lr-warmup (1 epochs) must be shorter"),
    (["--schedule", "cosine", "--lr-warmup", "5", "--epochs", "3"], "--lr-warmup (5 epochs) must be shorter"),
    (["--ema", "1"], "--ema must be 0 (off) or a decay below 1, got 1"),
    (["--ema", "1.5"], "--ema must be 0 (off) or a decay below 1, got 1.5"),
])
def test_settings_the_schedule_or_the_average_would_refuse_are_usage_errors(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--recipe", "seed", *flags])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    # a decay below 1 is fine
    assert parse_args(["--recipe", "seed", "--epochs", "3", "--ema", "0.999"]).ema == 0.999


def test_prevalence_threshold_flags_the_training_fraction_of_images():
    """The rule's threshold flags round(prevalence * N) images, whatever the scores' scale."""
    from glasscuda.tasks.binary import prevalence_threshold

    rng = np.random.default_rng(3)
    for n, prevalence in ((40, 0.1), (655, 0.313), (7, 0.5), (10, 0.0)):
        probs = rng.random(n) ** 3
        t = prevalence_threshold(probs, prevalence)
        expected = max(1, round(prevalence * n))
        assert (probs >= t).sum() == expected
        assert t in probs


def test_a_checkpoint_whose_tta_is_not_a_boolean_is_refused(rng, tmp_path):
    """'"tta": "false"' would turn TTA on through bool(); the loader names the field instead."""
    _, model = _one_step_checkpoint(tmp_path / "good.npz", rng)
    header = {"task": "binary", "run": {"task": "binary"}, "epoch": 1, "normalization": {"mean": [0.5], "std": [0.2]},
              "threshold": 0.4, "class_names": ["defect"], "tta": "false"}
    path = save_checkpoint(tmp_path / "bad.npz", model, header)
    with pytest.raises(CheckpointError, match="header tta must be true or false"):
        load_checkpoint(path)


def test_the_default_recipe_trains_and_predicts_on_images_of_any_size_and_aspect(tiny_glass, tmp_path):  # noqa: F811
    """Real images come in their own sizes: each is resized to the recipe's input size, in training and predict."""
    from PIL import Image

    data = tmp_path / "mixed"
    sizes = [(40, 24), (31, 57), (64, 64), (100, 33), (18, 18)]
    for split in ("train", "test"):
        for sub in ("img", "txt"):
            (data / split / sub).mkdir(parents=True)
        source = sorted((tiny_glass / split / "img").iterdir())
        for i, path in enumerate(source):
            side = sizes[i % len(sizes)]
            Image.open(path).resize(side).save(data / split / "img" / path.name)
            label = tiny_glass / split / "txt" / (path.stem + ".txt")
            if label.exists():
                (data / split / "txt" / label.name).write_text(label.read_text())
    out = tmp_path / "run"
    assert run_train("--data", data, "--img-size", 32, "--epochs", 2, "--out", out, "--device", "cpu") == 0
    header = load_checkpoint(out / "best.npz").header
    assert header["model"]["image_size"] == 32 and header["model"]["head"] == RECIPES["default"]["binary"]["head"]
    preds = tmp_path / "preds.csv"
    assert predict.main(["--checkpoint", str(out / "best.npz"), "--input", str(data / "test" / "img"),
                         "--output", str(preds), "--device", "cpu", "--no-progress"]) == 0
    rows = list(csv.DictReader(preds.open()))
    assert len(rows) == len(list((data / "test" / "img").iterdir()))
    assert all(0.0 <= float(row["probability"]) <= 1.0 for row in rows)
