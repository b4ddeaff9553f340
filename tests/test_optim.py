"""Optimizers and schedules against their closed forms, step by step."""
import math

import numpy as np
import pytest

from glasscuda.backend import get_backend
from glasscuda.nn import Parameter as _Parameter
from glasscuda.optim import Adam, AdamW, CosineAnnealingWarmRestarts, EarlyStopping, ReduceLROnPlateau


def Parameter(values):
    return _Parameter(np.asarray(values, dtype=np.float64), get_backend("cpu"))


def adam_closed_form(p, grads, *, lr, betas, eps, weight_decay, decoupled):
    """float64 Adam / AdamW as written in the papers (and torch.optim), one row per step."""
    b1, b2 = betas
    m, v, history = np.zeros_like(p), np.zeros_like(p), []
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat, v_hat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        history.append(p.copy())
    return history


@pytest.mark.parametrize("optimizer_class, decoupled", [(Adam, False), (AdamW, True)])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adam_and_adamw_follow_the_closed_form_over_several_steps(rng, optimizer_class, decoupled,
                                                                  weight_decay):
    start = rng.standard_normal(37)
    grads = [rng.standard_normal(37) * 10.0 ** rng.uniform(-3, 1) for _ in range(12)]
    kwargs = dict(lr=3e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=weight_decay)
    param = Parameter(start.copy())
    optimizer = optimizer_class([param], **kwargs)
    expected = adam_closed_form(start, grads, decoupled=decoupled, **kwargs)
    for step, (g, want) in enumerate(zip(grads, expected), start=1):
        optimizer.zero_grad()
        param.grad[...] = g
        optimizer.step()
        np.testing.assert_allclose(param.data, want, rtol=1e-12, atol=1e-14, err_msg=f"step {step}")


def test_adamw_decay_differs_from_l2_decay(rng):
    """Decoupled decay shrinks the weights even where Adam's normalised step cancels L2 decay."""
    start = np.full(4, 2.0)
    grads = [np.zeros(4)] * 3
    kwargs = dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.5)
    adamw = adam_closed_form(start, grads, decoupled=True, **kwargs)[-1]
    l2 = adam_closed_form(start, grads, decoupled=False, **kwargs)[-1]
    param = Parameter(start.copy())
    optimizer = AdamW([param], **kwargs)
    for _ in grads:
        optimizer.step()
    np.testing.assert_allclose(param.data, adamw, rtol=1e-12)
    assert not np.allclose(adamw, l2)


def cosine_warm_restarts(epoch, base_lr, T_0, T_mult, eta_min):
    """Closed form: find the cycle by walking the cycle lengths, then the cosine within it."""
    start, length = 0.0, T_0
    while epoch >= start + length:
        start, length = start + length, length * T_mult
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * (epoch - start) / length)) / 2


@pytest.mark.parametrize("T_0, T_mult, eta_min", [(3, 1, 0.0), (2, 2, 1e-4), (1, 3, 1e-5)])
def test_warm_restarts_follow_the_closed_form_per_batch_over_several_cycles(T_0, T_mult, eta_min):
    param = Parameter(np.zeros(1))
    optimizer = AdamW([param], lr=0.01)
    scheduler = CosineAnnealingWarmRestarts(optimizer, T_0=T_0, T_mult=T_mult, eta_min=eta_min)
    assert optimizer.lr == pytest.approx(0.01)
    batches = 7
    for epoch in range(20):
        for b in range(batches):
            position = epoch + (b + 1) / batches
            scheduler.step(position)
            assert optimizer.lr == pytest.approx(
                cosine_warm_restarts(position, 0.01, T_0, T_mult, eta_min), rel=1e-12, abs=1e-15), position


def test_warm_restarts_restart_at_the_cycle_boundaries():
    optimizer = AdamW([Parameter(np.zeros(1))], lr=1.0)
    scheduler = CosineAnnealingWarmRestarts(optimizer, T_0=2, T_mult=2, eta_min=0.0)
    lrs = []
    for epoch in range(1, 15):
        scheduler.step()
        lrs.append(optimizer.lr)
    # cycles [0, 2), [2, 6), [6, 14): back to the base rate at epochs 2, 6 and 14
    assert [e for e, lr in zip(range(1, 15), lrs) if lr == pytest.approx(1.0)] == [2, 6, 14]
    assert lrs[0] == pytest.approx(0.5) and lrs[3] == pytest.approx(0.5)


def test_warm_restarts_match_torch_when_installed():
    torch = pytest.importorskip("torch")
    weight = torch.nn.Parameter(torch.zeros(1))
    reference = torch.optim.AdamW([weight], lr=0.05)
    theirs = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(reference, T_0=3, T_mult=2, eta_min=1e-3)
    optimizer = AdamW([Parameter(np.zeros(1))], lr=0.05)
    ours = CosineAnnealingWarmRestarts(optimizer, T_0=3, T_mult=2, eta_min=1e-3)
    for epoch in range(1, 30):
        position = epoch * 0.5
        theirs.step(position)
        ours.step(position)
        assert optimizer.lr == pytest.approx(reference.param_groups[0]["lr"], rel=1e-12), position


def test_reduce_on_plateau_halves_after_patience_epochs_without_improvement():
    optimizer = Adam([Parameter(np.zeros(1))], lr=1.0)
    scheduler = ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3)
    values = [0.5, 0.6, 0.6, 0.6, 0.6, 0.59, 0.7, 0.7, 0.7, 0.7, 0.7]
    lrs = []
    for value in values:
        scheduler.step(value)
        lrs.append(optimizer.lr)
    # 0.6 at epoch 2 is the best; epochs 3-6 do not beat it: the 4th bad epoch halves the rate
    assert lrs == [1.0] * 5 + [0.5] * 5 + [0.25]


def test_early_stopping_counts_epochs_since_the_best():
    stopper = EarlyStopping(patience=2, mode="max")
    assert stopper.step(0.3, 1) and not stopper.should_stop
    assert not stopper.step(0.3, 2) and not stopper.should_stop
    assert stopper.step(0.4, 3)
    assert not stopper.step(0.1, 4) and not stopper.step(0.2, 5)
    assert stopper.should_stop and stopper.best_epoch == 3 and stopper.best == 0.4


# One flat buffer ---------------------------------------------------------------------------

class CountingLaunches:
    def __init__(self, backend):
        self.inner, self.name, self.launched = backend.launcher, "cpu", []

    def __call__(self, kernel_name, **args):
        self.launched.append(kernel_name)
        self.inner(kernel_name, **args)

    def synchronize(self):
        pass


def test_adam_updates_every_tensor_in_one_launch_with_the_per_tensor_result():
    from glasscuda.backend import Backend
    rng = np.random.default_rng(0)
    shapes = [(3, 2, 5, 5), (3,), (7, 4), (7,), (1,)]
    values = [rng.standard_normal(s) for s in shapes]
    grads = [[rng.standard_normal(s) for s in shapes] for _ in range(3)]
    counting = CountingLaunches(get_backend("cpu"))
    be = Backend(counting, np)
    params = [_Parameter(v, be) for v in values]
    opt = AdamW(params, lr=0.01, weight_decay=0.1)
    for step_grads in grads:
        opt.zero_grad()
        for p, g in zip(params, step_grads):
            p.grad += g
        counting.launched.clear()
        opt.step()
        assert counting.launched == ["adam_update"]
    for i, v in enumerate(values):
        expected = adam_closed_form(v, [g[i] for g in grads], lr=0.01, betas=(0.9, 0.999), eps=1e-8,
                                    weight_decay=0.1, decoupled=True)[-1]
        np.testing.assert_allclose(params[i].data, expected, rtol=1e-12, atol=1e-15)
        assert params[i].data.shape == shapes[i] and np.shares_memory(params[i].data, opt.data)


def test_a_model_moved_after_its_optimizer_was_built_is_refused_at_step():
    p = Parameter([1.0, 2.0])
    opt = Adam([p], lr=0.1)
    p.data = p.data.copy()   # what model.to(...) does to every parameter
    with pytest.raises(RuntimeError, match="build the optimizer after model.to"):
        opt.step()


def test_optimizer_state_round_trips_through_the_per_tensor_state_dict():
    params = [Parameter(np.arange(6.0).reshape(2, 3)), Parameter([0.5])]
    opt = Adam(params, lr=0.1)
    for p in params:
        p.grad += 1.0
    opt.step()
    state = opt.state_dict()
    assert state["m.0"].shape == (2, 3) and state["v.1"].shape == (1,)
    fresh = Adam([Parameter(np.zeros((2, 3))), Parameter([0.0])], lr=0.5)
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.m, opt.m)
    np.testing.assert_array_equal(fresh.v, opt.v)
    assert fresh.lr == 0.1 and fresh.step_count == 1
