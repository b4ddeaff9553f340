"""Optimizers, learning-rate schedules and early stopping, written out by hand.

``Adam`` and ``AdamW`` follow PyTorch's update rules exactly (see
kernels/adam.cu); each step is one fused kernel launch over all parameters.
The schedules follow PyTorch's definitions of ``ReduceLROnPlateau`` and
``CosineAnnealingWarmRestarts``; ``WarmupCosine`` is a linear warm-up into one
cosine decay, and ``WeightAverage`` keeps an exponential moving average of
the weights. Everything has ``state_dict`` /
``load_state_dict`` of plain numbers and NumPy arrays, so a run can resume.
"""
from __future__ import annotations

import math

import numpy as np

from contextlib import contextmanager

from . import ops
from .backend.launch import address


def flatten_parameters(params):
    """Put the parameters' data and gradients into two flat buffers; each ``p.data`` / ``p.grad`` becomes a view.

    Returns (data, grad, offsets): the flat buffers on the parameters' backend
    and each parameter's first element in them. The values are copied, so the
    model is unchanged; afterwards one kernel launch can update every parameter.
    """
    be, dtype = params[0].backend, params[0].data.dtype
    for p in params:
        if p.backend is not be or p.data.dtype != dtype:
            raise ValueError("all parameters of one optimizer must live on one device in one precision; "
                             f"got {be.name}/{dtype} and {p.backend.name}/{p.data.dtype} "
                             "(call model.to(...) before building the optimizer)")
    sizes = [int(p.data.size) for p in params]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    data = be.xp.empty(int(offsets[-1]), dtype=dtype)
    grad = be.xp.empty_like(data)
    for p, start, size in zip(params, offsets, sizes):
        shape = p.data.shape
        data[start:start + size] = p.data.reshape(-1)
        grad[start:start + size] = p.grad.reshape(-1)
        p.data = data[start:start + size].reshape(shape)
        p.grad = grad[start:start + size].reshape(shape)
    return data, grad, offsets[:-1]


class Adam:
    """Adam (Kingma & Ba, 2015) with optional L2 weight decay added to the gradient.

    The parameters' data and gradients are moved into one flat buffer each
    (:func:`flatten_parameters`), so a step is a single fused kernel launch
    and ``zero_grad`` a single fill. Build the optimizer after ``model.to(...)``:
    moving the model afterwards gives its parameters new arrays, and ``step``
    refuses to update buffers the model no longer uses.

    Parameters
    ----------
    params : the model's ``parameters()``.
    lr, betas, eps, weight_decay : as in ``torch.optim.Adam``.
    """

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        self.params = list({id(p): p for p in params}.values())
        if not self.params:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if lr < 0 or eps <= 0 or weight_decay < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"{type(self).__name__}: need lr >= 0, eps > 0, weight_decay >= 0 "
                             f"and betas in [0, 1); got lr={lr}, betas={betas}, eps={eps}, "
                             f"weight_decay={weight_decay}")
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), tuple(betas), float(eps), float(weight_decay)
        self.step_count = 0
        self.backend = self.params[0].backend
        self.data, self.grad, self.offsets = flatten_parameters(self.params)
        self.m = self.backend.xp.zeros_like(self.data)
        self.v = self.backend.xp.zeros_like(self.data)

    def _check_views(self) -> None:
        base = address(self.data)
        itemsize = self.data.dtype.itemsize
        for i, (p, start) in enumerate(zip(self.params, self.offsets)):
            if address(p.data) != base + int(start) * itemsize or address(p.grad) != \
                    address(self.grad) + int(start) * itemsize:
                raise RuntimeError(f"{type(self).__name__}: parameter {i} no longer lives in the optimizer's "
                                   "buffer (the model was moved or cast after the optimizer was built); "
                                   "build the optimizer after model.to(...)")

    def zero_grad(self) -> None:
        self.grad.fill(0)

    def step(self) -> None:
        """One update of every parameter from its ``.grad``: one kernel launch over the flat buffer."""
        self._check_views()
        self.step_count += 1
        beta1, beta2 = self.betas
        ops.adam_update(self.backend, self.data, self.grad, self.m, self.v, step=self.step_count,
                        lr=self.lr, beta1=beta1, beta2=beta2, eps=self.eps,
                        weight_decay=self.weight_decay, decoupled=self.decoupled)

    def _slices(self, flat):
        for p, start in zip(self.params, self.offsets):
            yield p, flat[int(start):int(start) + int(p.data.size)]

    def state_dict(self) -> dict:
        state = {"lr": self.lr, "step_count": self.step_count}
        for name, flat in (("m", self.m), ("v", self.v)):
            for i, (p, part) in enumerate(self._slices(flat)):
                state[f"{name}.{i}"] = self.backend.to_numpy(part).reshape(p.shape).copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, flat in (("m", self.m), ("v", self.v)):
            for i, (p, part) in enumerate(self._slices(flat)):
                value = np.asarray(state[f"{name}.{i}"])
                if value.shape != tuple(p.shape):
                    raise ValueError(f"optimizer state {name}.{i} has shape {value.shape}; "
                                     f"parameter {i} has {tuple(p.shape)}")
                part[...] = self.backend.asarray(value.astype(self.data.dtype).reshape(-1))
        self.lr = float(state["lr"])
        self.step_count = int(state["step_count"])


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019), as ``torch.optim.AdamW``."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


class ReduceLROnPlateau:
    """Multiply the learning rate by ``factor`` when a metric stops improving.

    As ``torch.optim.lr_scheduler.ReduceLROnPlateau`` with ``threshold_mode="rel"``:
    a value improves on the best if it beats it by more than ``threshold``
    (relative); after more than ``patience`` epochs without improvement the rate
    drops, then ``cooldown`` epochs pass before counting again.
    """

    def __init__(self, optimizer, mode: str = "max", factor: float = 0.5, patience: int = 3,
                 threshold: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        self.optimizer, self.mode, self.factor = optimizer, mode, float(factor)
        self.patience, self.threshold = int(patience), float(threshold)
        self.cooldown, self.min_lr = int(cooldown), float(min_lr)
        self.best = -math.inf if mode == "max" else math.inf
        self.bad_epochs = 0
        self.cooldown_left = 0

    def _improves(self, value: float) -> bool:
        if self.mode == "max":
            return value > self.best * (1 + self.threshold) if self.best > 0 else value > self.best
        return value < self.best * (1 - self.threshold) if self.best > 0 else value < self.best

    def step(self, value: float) -> None:
        value = float(value)
        if math.isnan(value):
            value = -math.inf if self.mode == "max" else math.inf
        if self._improves(value):
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.bad_epochs = 0
        if self.bad_epochs > self.patience:
            self.optimizer.lr = max(self.optimizer.lr * self.factor, self.min_lr)
            self.cooldown_left, self.bad_epochs = self.cooldown, 0

    def state_dict(self) -> dict:
        return {"best": self.best, "bad_epochs": self.bad_epochs, "cooldown_left": self.cooldown_left}

    def load_state_dict(self, state: dict) -> None:
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.cooldown_left = int(state["cooldown_left"])


class _EpochSchedule:
    """A learning rate that is a function ``lr_at(epoch)`` of the (possibly fractional) epoch; subclasses
    define ``lr_at`` and set ``optimizer``, ``base_lr`` and ``epoch``."""

    def step(self, epoch: float | None = None) -> None:
        self.epoch = self.epoch + 1 if epoch is None else float(epoch)
        if self.epoch < 0:
            raise ValueError(f"epoch must be non-negative, got {epoch}")
        self.optimizer.lr = self.lr_at(self.epoch)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "base_lr": self.base_lr}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.base_lr = float(state["epoch"]), float(state["base_lr"])
        self.optimizer.lr = self.lr_at(self.epoch)


class CosineAnnealingWarmRestarts(_EpochSchedule):
    """Cosine annealing with warm restarts (Loshchilov & Hutter, 2017), as PyTorch defines it.

    ``lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2``, where the
    i-th cycle lasts ``T_i = T_0 * T_mult**i`` epochs and ``T_cur`` counts epochs (possibly
    fractional) since the last restart. Call ``step()`` once per epoch, or
    ``step(epoch + batch / batches_per_epoch)`` per batch.
    """

    def __init__(self, optimizer, T_0: int, T_mult: int = 1, eta_min: float = 0.0):
        if T_0 < 1 or int(T_0) != T_0:
            raise ValueError(f"T_0 must be a positive integer, got {T_0}")
        if T_mult < 1 or int(T_mult) != T_mult:
            raise ValueError(f"T_mult must be an integer >= 1, got {T_mult}")
        self.optimizer, self.T_0, self.T_mult, self.eta_min = optimizer, int(T_0), int(T_mult), float(eta_min)
        self.base_lr = optimizer.lr
        self.epoch = 0.0
        self.optimizer.lr = self.lr_at(0.0)

    def cycle_position(self, epoch: float) -> tuple[float, float]:
        """(T_cur, T_i) at ``epoch``."""
        if self.T_mult == 1:
            return epoch % self.T_0, float(self.T_0)
        if epoch < self.T_0:
            return epoch, float(self.T_0)
        n = int(math.log(epoch / self.T_0 * (self.T_mult - 1) + 1, self.T_mult))
        T_cur = epoch - self.T_0 * (self.T_mult ** n - 1) / (self.T_mult - 1)
        return T_cur, float(self.T_0 * self.T_mult ** n)

    def lr_at(self, epoch: float) -> float:
        T_cur, T_i = self.cycle_position(epoch)
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * T_cur / T_i)) / 2


class WarmupCosine(_EpochSchedule):
    """A linear warm-up from ``base_lr / 100`` over ``warmup`` epochs, then one cosine decay to ``eta_min``.

    ``lr = base_lr * (0.01 + 0.99 * e / warmup)`` for ``e < warmup``, then
    ``eta_min + (base_lr - eta_min) * (1 + cos(pi * (e - warmup) / (total - warmup))) / 2``
    until ``total`` epochs (``eta_min`` after). ``e`` may be fractional: call
    ``step(epoch + batch / batches_per_epoch)`` per batch.
    """

    def __init__(self, optimizer, total: float, warmup: float = 0.0, eta_min: float = 0.0):
        if not 0 <= warmup < total:
            raise ValueError(f"WarmupCosine needs 0 <= warmup < total epochs, got warmup={warmup}, total={total}")
        self.optimizer, self.total, self.warmup, self.eta_min = optimizer, float(total), float(warmup), float(eta_min)
        self.base_lr = optimizer.lr
        self.epoch = 0.0
        self.optimizer.lr = self.lr_at(0.0)

    def lr_at(self, epoch: float) -> float:
        if epoch < self.warmup:
            return self.base_lr * (0.01 + 0.99 * epoch / self.warmup)
        done = min(1.0, (epoch - self.warmup) / (self.total - self.warmup))
        return self.eta_min + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * done)) / 2


class WeightAverage:
    """An exponential moving average of an optimizer's parameters (Polyak averaging).

    After every ``update()``: ``average = d * average + (1 - d) * weights``
    with ``d = min(decay, (1 + n) / (10 + n))`` after ``n`` updates, so the
    first steps' random weights fade quickly. ``applied()`` puts the average
    into the model for a while (to validate or save it) and restores the
    trained weights after. Batch-norm running statistics are not averaged:
    those of the trained weights serve, as in PyTorch's ``swa_utils`` without
    ``update_bn``.
    """

    def __init__(self, optimizer, decay: float = 0.999):
        if not 0 < decay < 1:
            raise ValueError(f"WeightAverage: decay must lie in (0, 1), got {decay}")
        self.optimizer, self.decay, self.updates = optimizer, float(decay), 0
        self.average = optimizer.data.copy()

    def update(self) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.average *= d
        self.average += (1 - d) * self.optimizer.data

    @contextmanager
    def applied(self):
        trained = self.optimizer.data.copy()
        self.optimizer.data[...] = self.average
        try:
            yield
        finally:
            self.optimizer.data[...] = trained

    def state_dict(self) -> dict:
        return {"average_updates": self.updates, "average": self.optimizer.backend.to_numpy(self.average).copy()}

    def load_state_dict(self, state: dict) -> None:
        self.updates = int(state["average_updates"])
        self.average[...] = self.optimizer.backend.asarray(np.asarray(state["average"], dtype=self.average.dtype))


class EarlyStopping:
    """Stop when a metric has not improved for ``patience`` consecutive epochs."""

    def __init__(self, patience: int = 8, mode: str = "max", min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.patience, self.mode, self.min_delta = int(patience), mode, float(min_delta)
        self.best = -math.inf if mode == "max" else math.inf
        self.best_epoch = -1
        self.bad_epochs = 0

    def step(self, value: float, epoch: int) -> bool:
        """Record this epoch's value; True when it is the best so far."""
        value = float(value)
        better = (value > self.best + self.min_delta) if self.mode == "max" else (value < self.best - self.min_delta)
        if better and not math.isnan(value):
            self.best, self.best_epoch, self.bad_epochs = value, int(epoch), 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
