"""Layers and models: whole-network gradient checks, training steps, state dicts, devices."""
import numpy as np
import pytest

from conftest import numerical_gradient
from glasscuda import nn, reference
from glasscuda.losses import BCEWithLogitsLoss, FocalLoss
from glasscuda.models import BinaryDetector, MultiLabelNet, build_model
from glasscuda.optim import Adam


def check_network_gradients(model, x, targets, loss_fn, rng, n_checks=6):
    model.to("cpu", dtype=np.float64).train()
    x = x.astype(np.float64)

    def loss_value():
        return loss_fn.forward(model.forward(x), targets)

    model.zero_grad()
    loss_fn.forward(model.forward(x), targets)
    grad_x = model.backward(loss_fn.backward())
    for name, param in model.named_parameters():
        picks = rng.choice(param.data.size, size=min(n_checks, param.data.size), replace=False)
        expected = numerical_gradient(loss_value, param.data, indices=picks)
        got = param.grad.reshape(-1)[picks]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-9, err_msg=name)
    picks = rng.choice(x.size, size=n_checks, replace=False)
    np.testing.assert_allclose(grad_x.reshape(-1)[picks],
                               numerical_gradient(loss_value, x, indices=picks),
                               rtol=1e-5, atol=1e-9, err_msg="input")


def test_binary_detector_gradients_match_finite_differences(rng):
    model = BinaryDetector(image_size=32, seed=3)
    x = rng.standard_normal((3, 1, 32, 32))
    y = np.array([[1.0], [0.0], [1.0]])
    check_network_gradients(model, x, y, BCEWithLogitsLoss(), rng)


def test_multilabel_net_gradients_match_finite_differences(rng):
    model = MultiLabelNet(image_size=32, seed=4)
    x = rng.standard_normal((2, 1, 32, 32))
    y = np.array([[0, 1, 0, 1], [1, 0, 0, 0]], dtype=np.float64)
    check_network_gradients(model, x, y, FocalLoss([1.0, 2.0, 3.0, 0.5], gamma=2.0), rng)


def test_conv_layer_matches_reference_and_pytorch_layout(rng):
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, rng=rng)
    assert conv.weight.shape == (5, 3, 3, 3) and conv.bias.shape == (5,)
    bound = 1 / np.sqrt(3 * 3 * 3)
    assert np.abs(conv.weight.data).max() <= bound
    x = rng.standard_normal((2, 3, 9, 8)).astype(np.float32)
    expected = reference.conv2d(x, conv.weight.data, conv.bias.data, stride=2, padding=1)
    np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_a_one_channel_conv_layer_runs_on_the_direct_kernels(rng, kernel_size, monkeypatch):
    """Forward in both modes and backward by conv_direct_*, with the same results as the reference."""
    P = kernel_size // 2
    conv = nn.Conv2d(1, 4, kernel_size, padding=P, rng=rng)
    x = rng.standard_normal((2, 1, 12, 10)).astype(np.float32)
    dy = rng.standard_normal((2, 4, 12, 10)).astype(np.float32)
    expected = reference.conv2d(x, conv.weight.data, conv.bias.data, stride=1, padding=P)
    _, dweight, dbias = reference.conv2d_backward(dy, x, conv.weight.data, padding=P)
    launched = []
    launch = conv.backend.launch
    monkeypatch.setattr(conv.backend, "launch", lambda name, **args: (launched.append(name), launch(name, **args)))
    for mode in ("eval", "train"):
        getattr(conv, mode)()
        np.testing.assert_allclose(conv.forward(x), expected, rtol=1e-4, atol=1e-5, err_msg=mode)
    conv.weight.grad[...] = 0
    conv.bias.grad[...] = 0
    assert conv.backward(dy, need_input_grad=False) is None
    np.testing.assert_allclose(conv.weight.grad, dweight, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(conv.bias.grad, dbias, rtol=1e-4, atol=1e-4)
    assert launched == ["conv_direct_forward"] * 2 + ["conv_direct_grad_partial", "conv_direct_grad_reduce"]


def test_a_few_adam_steps_lower_the_loss_on_a_fixed_batch(rng):
    model = BinaryDetector(image_size=32, seed=0)
    x = rng.standard_normal((8, 1, 32, 32)).astype(np.float32)
    y = (np.arange(8) % 2).astype(np.float32)[:, None]
    x[y[:, 0] == 1, :, 10:20, 10:20] += 2.0
    loss_fn = BCEWithLogitsLoss()
    optimizer = Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        optimizer.zero_grad()
        losses.append(loss_fn.forward(model.forward(x), y))
        model.backward(loss_fn.backward(), need_input_grad=False)
        optimizer.step()
    assert losses[-1] < 0.5 * losses[0], losses


def test_state_dict_round_trip_rebuilds_the_same_network(rng):
    model = MultiLabelNet(image_size=32, seed=1)
    twin = build_model(model.config(), seed=99)
    x = rng.standard_normal((2, 1, 32, 32)).astype(np.float32)
    assert not np.allclose(twin.eval().forward(x), model.eval().forward(x))
    twin.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(twin.forward(x), model.forward(x))


def test_load_state_dict_rejects_wrong_names_and_shapes():
    model = BinaryDetector(image_size=32)
    state = model.state_dict()
    with pytest.raises(KeyError, match="missing"):
        model.load_state_dict({k: v for k, v in state.items() if not k.endswith("bias")})
    state["body.0.weight"] = np.zeros((1, 1, 1, 1), np.float32)
    with pytest.raises(ValueError, match="body.0.weight"):
        model.load_state_dict(state)


def test_backward_without_training_forward_is_a_clear_error(rng):
    layer = nn.Linear(4, 2, rng=rng).eval()
    layer.forward(np.ones((1, 4), np.float32))
    with pytest.raises(RuntimeError, match="training mode"):
        layer.backward(np.ones((1, 2), np.float32))


def test_wrong_input_dtype_is_a_clear_error():
    with pytest.raises(TypeError, match="float32"):
        nn.ReLU().forward(np.ones(3, np.float64))


def test_class_activation_maps_average_to_the_logits(rng):
    model = MultiLabelNet(image_size=64, seed=2)
    x = rng.standard_normal((2, 1, 64, 64)).astype(np.float32)
    logits, cams = model.class_activation_maps(x)
    assert cams.shape == (2, 4, 4, 4)
    np.testing.assert_allclose(logits, model.eval().forward(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("axis, shift", [(3, 4), (3, 12), (2, 8), (2, 20)])
def test_dense_class_activation_maps_follow_the_image_step_by_step(rng, axis, shift):
    model = MultiLabelNet(image_size=128, seed=1).to("cpu", np.float64)
    x = rng.standard_normal((1, 1, 128, 128))
    maps = model.dense_class_activation_maps(x, step=4)
    assert maps.shape == (1, 4, 32, 32)
    moved = model.dense_class_activation_maps(np.roll(x, shift, axis=axis), step=4)
    cells = shift // 4
    inner = slice(12, 20)                     # far enough from the edges that padding does not reach
    if axis == 3:
        np.testing.assert_allclose(moved[..., inner, 12 + cells:20 + cells], maps[..., inner, inner], rtol=1e-12)
    else:
        np.testing.assert_allclose(moved[..., 12 + cells:20 + cells, inner], maps[..., inner, inner], rtol=1e-12)


def test_dense_maps_at_step_16_are_the_pooled_heads_maps(rng):
    model = MultiLabelNet(image_size=128, seed=3).to("cpu", np.float64)
    x = rng.standard_normal((2, 1, 128, 128))
    _, coarse = model.class_activation_maps(x)
    dense = model.dense_class_activation_maps(x, step=16)
    # the padding sits on the bottom and right: cells out of its reach are the same
    np.testing.assert_allclose(dense[..., :5, :5], coarse[..., :5, :5], rtol=1e-12)
    with pytest.raises(ValueError, match="step must divide 16"):
        model.dense_class_activation_maps(x, step=3)


def test_dense_head_network_trains_the_multilabel_backbone_in_place(rng):
    model = MultiLabelNet(image_size=32, seed=2)
    dense = model.with_dense_head(seed=5)
    backbone = model.parameters()[:-2]
    assert dense.parameters()[:len(backbone)] == backbone
    assert [tuple(p.shape) for p in dense.parameters()[len(backbone):]] == [(128, 64 * 2 * 2), (128,), (4, 128), (4,)]
    x = rng.standard_normal((3, 1, 32, 32)).astype(np.float32)
    assert dense.forward(x).shape == (3, 4)
    before = model.state_dict()
    dense.backward(np.ones((3, 4), np.float32), need_input_grad=False)
    Adam(dense.parameters(), lr=1e-2).step()
    after = model.state_dict()
    changed = [name for name in before if not np.array_equal(before[name], after[name])]
    assert changed == [name for name in before][:-2], changed


def test_linear_layer_gradients_accumulate_until_zero_grad(rng):
    layer = nn.Linear(3, 2, rng=rng)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    dy = rng.standard_normal((4, 2)).astype(np.float32)
    for _ in range(2):
        layer.forward(x)
        layer.backward(dy)
    _, dw, db = reference.linear_backward(dy, x, layer.weight.data)
    np.testing.assert_allclose(layer.weight.grad, 2 * dw, rtol=1e-5)
    layer.zero_grad()
    assert not layer.weight.grad.any()


@pytest.mark.parametrize("kernel,stride,middle", [(2, 2, []), (3, 2, []), (2, 2, ["bn"]), (None, None, [])],
                         ids=["disjoint-pool", "overlapping-pool", "batchnorm-disjoint-pool", "no-pool"])
def test_fused_neighbours_equal_the_layers_one_by_one(rng, kernel, stride, middle):
    """Sequential runs ReLU+MaxPool2d as one pass, and Conv2d+ReLU where no pool follows; the layers called
    one by one are the oracle, forward and backward, to the bit."""
    def build():
        layers = [nn.Conv2d(2, 3, 3, padding=1, rng=np.random.default_rng(5))]
        layers += [nn.BatchNorm2d(3) for _ in middle] + [nn.ReLU()]
        layers += [nn.MaxPool2d(kernel, stride)] if kernel else []
        return nn.Sequential(*layers, nn.Flatten())
    x = rng.standard_normal((2, 2, 9, 9)).astype(np.float32)
    fused, separate = build(), build()
    y_fused = fused.forward(x)
    y = x
    for layer in separate.layers:
        y = layer.forward(y)
    np.testing.assert_array_equal(y_fused, y)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx_fused = fused.backward(dy)
    grad = dy
    for layer in reversed(separate.layers):
        grad = layer.backward(grad)
    np.testing.assert_array_equal(dx_fused, grad)
    for (name, a), (_, b) in zip(fused.named_parameters(), separate.named_parameters()):
        np.testing.assert_array_equal(a.grad, b.grad, err_msg=name)
