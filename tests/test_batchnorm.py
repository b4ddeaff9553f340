"""BatchNorm2d and fold_batchnorm: against the float64 oracles, finite differences, and torch.nn.BatchNorm2d.

The kernels themselves are tested with every other kernel (tests/test_kernels.py:
the batchnorm_* runners and the "batchnorm" op case, which the GPU parity and
emulated-grid tests run too); the gradients of the op are checked by finite
differences in tests/test_ops_gradcheck.py. Here: the layer's semantics and
state, a whole network's gradients through it, and PyTorch parity.

Tolerances, on rel_err = max|a - b| / max|b| (conftest.rel_err), as in
tests/test_kernels.py: against the float64 oracle and float64 PyTorch <= 1e-10;
float32 against the oracle and float32 PyTorch <= 1e-5 (elementwise and
per-channel results), <= 1e-4 where a convolution's GEMM is involved.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from conftest import numerical_gradient, rel_err
from glasscuda import nn
from glasscuda.backend import get_backend
from glasscuda import reference as ref
from test_kernels import GEMM, TOLERANCE, bn_input, check, normal, run_op_batchnorm

DTYPES = (np.float32, np.float64)
each_dtype = pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])


def assert_close(actual, expected, dtype, what, kind="elementwise"):
    error, tolerance = rel_err(actual, expected), TOLERANCE[kind][dtype]
    assert error <= tolerance, f"{what} ({np.dtype(dtype).name}): relative error {error:.3g} > {tolerance:g}"


def batch(rng, N, C, H, W, dtype, offset=3.0):
    return bn_input(rng, N, C, H * W, dtype, offset).reshape(N, C, H, W)


def random_layer(rng, C, dtype, **options):
    """A BatchNorm2d whose weight, bias and running statistics are not the initial ones."""
    bn = nn.BatchNorm2d(C, **options).to("cpu", dtype)
    bn.load_state_dict({"weight": rng.uniform(0.5, 2.0, C), "bias": rng.standard_normal(C),
                        "running_mean": rng.standard_normal(C), "running_var": rng.uniform(0.5, 2.0, C),
                        "num_batches_tracked": np.array(3)})
    return bn


# The op on random shapes -----------------------------------------------------

@each_dtype
@given(N=st.integers(1, 4), C=st.integers(1, 4), H=st.integers(1, 9), W=st.integers(1, 9),
       momentum=st.sampled_from([0.0, 0.1, 1.0]), seed=st.integers(0, 2**32 - 1))
def test_batchnorm_op_random_shapes(cpu, dtype, N, C, H, W, momentum, seed):
    # Two values per channel normalise to -1, +1 whatever they are: dx is then nothing but rounding.
    assume(N * H * W >= 3)
    check(run_op_batchnorm(cpu, dtype, np.random.default_rng(seed), N=N, C=C, H=H, W=W, momentum=momentum),
          dtype, "ops batchnorm: ")


# The layer -------------------------------------------------------------------

def test_initial_state_and_layouts_are_pytorchs():
    bn = nn.BatchNorm2d(4)
    state = bn.state_dict()
    assert list(state) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    np.testing.assert_array_equal(state["weight"], np.ones(4))
    np.testing.assert_array_equal(state["bias"], np.zeros(4))
    np.testing.assert_array_equal(state["running_mean"], np.zeros(4))
    np.testing.assert_array_equal(state["running_var"], np.ones(4))
    assert state["num_batches_tracked"].dtype == np.int64 and state["num_batches_tracked"].shape == ()
    assert [name for name, _ in bn.named_parameters()] == ["weight", "bias"]
    assert (bn.eps, bn.momentum) == (1e-5, 0.1)


@each_dtype
def test_training_normalises_with_the_batch_and_updates_the_running_statistics(rng, dtype):
    bn = random_layer(rng, 3, dtype)
    start = bn.state_dict()
    x = batch(rng, 4, 3, 5, 6, dtype)
    y = bn.train().forward(x)
    mean, var = ref.batchnorm_stats(x)
    assert_close(y, ref.batchnorm(x, mean, var, start["weight"], start["bias"], 1e-5), dtype, "y")
    running = ref.batchnorm_running_update(start["running_mean"], start["running_var"], mean, var, 4 * 5 * 6, 0.1)
    assert_close(bn.running_mean, running[0], dtype, "running_mean")
    assert_close(bn.running_var, running[1], dtype, "running_var")
    assert bn.num_batches_tracked == 4


@each_dtype
def test_eval_normalises_with_the_running_statistics_and_changes_nothing(rng, dtype):
    bn = random_layer(rng, 3, dtype)
    start = bn.state_dict()
    x = batch(rng, 2, 3, 4, 4, dtype)
    y = bn.eval().forward(x)
    assert_close(y, ref.batchnorm(x, start["running_mean"], start["running_var"], start["weight"], start["bias"],
                                  1e-5), dtype, "y")
    for name, value in bn.state_dict().items():
        np.testing.assert_array_equal(value, start[name], err_msg=name)
    with pytest.raises(RuntimeError, match="training mode"):
        bn.backward(np.ones_like(y))


def test_momentum_none_is_the_cumulative_average(rng):
    bn = nn.BatchNorm2d(2, momentum=None).to("cpu", np.float64)
    batches = [batch(rng, 3, 2, 4, 5, np.float64) for _ in range(4)]
    for x in batches:
        bn.forward(x)
    stats = [ref.batchnorm_stats(x) for x in batches]
    assert_close(bn.running_mean, np.mean([m for m, _ in stats], axis=0), np.float64, "running_mean")
    assert_close(bn.running_var, np.mean([v * 60 / 59 for _, v in stats], axis=0), np.float64, "running_var")


def test_bad_inputs_and_options_are_refused(rng):
    bn = nn.BatchNorm2d(3)
    with pytest.raises(ValueError, match="3 channels|num_features"):
        bn.forward(np.zeros((2, 4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn.forward(np.zeros((1, 3, 1, 1), np.float32))
    bn.eval().forward(np.zeros((1, 3, 1, 1), np.float32))   # eval mode needs no batch statistics
    with pytest.raises(ValueError, match="4-D"):
        bn.forward(np.zeros((2, 3), np.float32))
    with pytest.raises(ValueError, match="momentum"):
        nn.BatchNorm2d(3, momentum=1.5)
    with pytest.raises(ValueError, match="num_features"):
        nn.BatchNorm2d(0)


def test_state_moves_between_precisions_and_loads_back(rng):
    bn = random_layer(rng, 5, np.float32)
    bn.forward(batch(rng, 2, 5, 3, 3, np.float32))
    state = bn.state_dict()
    bn.to("cpu", np.float64)
    assert bn.running_mean.dtype == np.float64 and bn.running_var.dtype == np.float64
    assert bn.state_dict()["num_batches_tracked"].dtype == np.int64
    twin = nn.BatchNorm2d(5).to("cpu", np.float64)
    twin.load_state_dict(bn.state_dict())
    for name, value in twin.state_dict().items():
        np.testing.assert_array_equal(value, state[name].astype(value.dtype), err_msg=name)
    with pytest.raises(KeyError, match="running_var"):
        twin.load_state_dict({k: v for k, v in state.items() if k != "running_var"})
    with pytest.raises(ValueError, match="running_mean"):
        twin.load_state_dict(dict(state, running_mean=np.zeros(4)))


def test_a_network_with_batch_norm_passes_a_finite_difference_check(rng):
    """Conv -> BatchNorm2d -> ReLU -> MaxPool -> Linear in float64 through the real kernels:
    the gradient of a loss with respect to every parameter (BN's weight and bias among them) and the input."""
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, rng=rng), nn.BatchNorm2d(3), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(3 * 3 * 3, 2, rng=rng)).to("cpu", np.float64)
    model.load_state_dict(dict(model.state_dict(), **{"1.weight": rng.uniform(0.5, 2.0, 3),
                                                       "1.bias": rng.standard_normal(3)}))
    x = rng.standard_normal((3, 2, 6, 7))
    R = rng.standard_normal((3, 2))

    def loss():
        return float(np.sum(model.forward(x) * R))

    model.zero_grad()
    model.forward(x)
    dx = model.backward(R)
    for name, param in model.named_parameters():
        numerical = numerical_gradient(loss, param.data)
        if name == "0.bias":   # a constant per channel is what batch norm subtracts: no gradient reaches it
            assert np.abs(param.grad).max() <= 1e-12 and np.abs(numerical).max() <= 1e-8
            continue
        assert rel_err(param.grad, numerical) <= 1e-6, name
    assert rel_err(dx, numerical_gradient(loss, x)) <= 1e-6


# Folding into the convolution --------------------------------------------------

@each_dtype
@pytest.mark.parametrize("K,stride,padding", [(3, 1, 1), (5, 2, 2), (1, 1, 0)])
def test_folded_convolution_equals_conv_then_batch_norm_in_eval(rng, dtype, K, stride, padding):
    conv = nn.Conv2d(3, 4, K, stride=stride, padding=padding, rng=rng).to("cpu", dtype)
    bn = random_layer(rng, 4, dtype, eps=1e-3)
    bn.forward(conv.forward(batch(rng, 2, 3, 9, 8, dtype)))    # running statistics of a real batch
    x = batch(rng, 2, 3, 9, 8, dtype)
    conv.eval(), bn.eval()
    want = bn.forward(conv.forward(x))
    folded = nn.fold_batchnorm(conv, bn)
    assert not folded.training and folded.dtype == dtype
    assert_close(folded.forward(x), want, dtype, "folded conv", GEMM)
    expected = ref.fold_batchnorm_conv(conv.weight.data, conv.bias.data, bn.running_mean, bn.running_var,
                                       bn.weight.data, bn.bias.data, 1e-3)
    assert_close(folded.weight.data, expected[0], dtype, "folded weight")
    assert_close(folded.bias.data, expected[1], dtype, "folded bias")


@each_dtype
@pytest.mark.parametrize("relu", [True, False])
def test_eval_mode_runs_conv_and_batch_norm_as_one_folded_convolution(rng, dtype, relu):
    """Sequential in eval mode folds each Conv2d -> BatchNorm2d (-> ReLU) into one convolution, afresh on every
    call; in training mode it runs the layers one by one. Checked against the float64 oracle of the layers."""
    from counting_backend import COUNTS, CountingBackend

    be = CountingBackend(get_backend("cpu"))
    conv = nn.Conv2d(3, 4, 3, padding=1, rng=rng)
    bn = random_layer(rng, 4, dtype)
    layers = [conv, bn, nn.ReLU(), nn.MaxPool2d(2)] if relu else [conv, bn, nn.MaxPool2d(2)]
    net = nn.Sequential(*layers).to(be, dtype)
    x = batch(rng, 2, 3, 8, 8, dtype)

    def oracle():
        y = ref.conv2d(x, be.to_numpy(conv.weight.data), be.to_numpy(conv.bias.data), padding=1)
        y = ref.batchnorm(y, *(be.to_numpy(a) for a in (bn.running_mean, bn.running_var, bn.weight.data,
                                                         bn.bias.data)), bn.eps)
        return ref.maxpool2d(ref.relu(y) if relu else y, 2)[0]

    for _ in range(2):
        COUNTS.__init__()
        with net.evaluating():
            got = be.to_numpy(net.forward(be.asarray(x)))
        assert COUNTS.launches["batchnorm_fold_conv"] == 1 and COUNTS.launches["batchnorm_forward"] == 0
        assert_close(got, oracle(), dtype, "folded eval forward", GEMM)
        net.train()
        net.forward(be.asarray(batch(rng, 2, 3, 8, 8, dtype)))   # new running statistics: the next fold follows them
        assert COUNTS.launches["batchnorm_forward"] == 1


def test_fold_refuses_mismatched_layers(rng):
    with pytest.raises(ValueError, match="output channels"):
        nn.fold_batchnorm(nn.Conv2d(1, 4, 3, rng=rng), nn.BatchNorm2d(5))
    with pytest.raises(ValueError, match="float64"):
        nn.fold_batchnorm(nn.Conv2d(1, 4, 3, rng=rng), nn.BatchNorm2d(4).to("cpu", np.float64))


# PyTorch ------------------------------------------------------------------------

def torch_twin(torch, bn, dtype):
    twin = torch.nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum).to(
        torch.float64 if dtype == np.float64 else torch.float32)
    twin.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in bn.state_dict().items()}, strict=True)
    return twin


@each_dtype
@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("N,C,H,W", [(4, 3, 7, 5), (8, 16, 16, 16), (16, 5, 1, 1)])
def test_matches_torch_in_training_and_eval(rng, dtype, momentum, N, C, H, W):
    torch = pytest.importorskip("torch")
    bn = random_layer(rng, C, dtype, momentum=momentum)
    twin = torch_twin(torch, bn, dtype)
    for step in range(4):
        x, dy = batch(rng, N, C, H, W, dtype, offset=5.0), normal(rng, (N, C, H, W), dtype)
        bn.train().zero_grad()
        y = bn.forward(x)
        dx = bn.backward(dy)
        twin.train().zero_grad()
        xt = torch.from_numpy(x.copy()).requires_grad_()
        yt = twin(xt)
        yt.backward(torch.from_numpy(dy))
        at = f"step {step}: "
        assert_close(y, yt.detach().numpy(), dtype, at + "y")
        assert_close(dx, xt.grad.numpy(), dtype, at + "dx")
        assert_close(bn.weight.grad, twin.weight.grad.numpy(), dtype, at + "dweight")
        assert_close(bn.bias.grad, twin.bias.grad.numpy(), dtype, at + "dbias")
        assert_close(bn.running_mean, twin.running_mean.numpy(), dtype, at + "running_mean")
        assert_close(bn.running_var, twin.running_var.numpy(), dtype, at + "running_var")
        assert bn.num_batches_tracked == int(twin.num_batches_tracked)
    x = batch(rng, N, C, H, W, dtype, offset=5.0)
    with torch.no_grad():
        theirs = twin.eval()(torch.from_numpy(x)).numpy()
    assert_close(bn.eval().forward(x), theirs, dtype, "eval y")


def test_state_dicts_load_strictly_both_ways_with_torch(rng):
    torch = pytest.importorskip("torch")
    ours = nn.Sequential(nn.Conv2d(1, 3, 3, rng=rng), nn.BatchNorm2d(3))
    ours.forward(rng.standard_normal((2, 1, 6, 6)).astype(np.float32))
    theirs = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
    theirs.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in ours.state_dict().items()}, strict=True)
    assert int(theirs[1].num_batches_tracked) == 1
    with torch.no_grad():
        theirs(torch.randn(4, 1, 6, 6))                                  # one more training step there
    back = nn.Sequential(nn.Conv2d(1, 3, 3, rng=rng), nn.BatchNorm2d(3))
    back.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert back[1].num_batches_tracked == 2
    np.testing.assert_array_equal(back[1].running_var, theirs[1].running_var.numpy())


@each_dtype
def test_fold_matches_torchs_fuse_conv_bn_eval(rng, dtype):
    torch = pytest.importorskip("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_eval
    conv = nn.Conv2d(3, 4, 3, padding=1, rng=rng).to("cpu", dtype)
    bn = random_layer(rng, 4, dtype)
    tconv = torch.nn.Conv2d(3, 4, 3, padding=1).to(torch.float64 if dtype == np.float64 else torch.float32)
    tconv.load_state_dict({k: torch.from_numpy(v) for k, v in conv.state_dict().items()})
    fused = fuse_conv_bn_eval(tconv.eval(), torch_twin(torch, bn, dtype).eval())
    folded = nn.fold_batchnorm(conv, bn)
    assert_close(folded.weight.data, fused.weight.detach().numpy(), dtype, "folded weight")
    assert_close(folded.bias.data, fused.bias.detach().numpy(), dtype, "folded bias")
