"""The pieces every training task shares: the epoch loop, batched inference, run artifacts.

A task (``glasscuda/tasks/*.py``) supplies the model, the loss, the optimizer
and how to score a validation set; this module runs batches through them,
keeps the history, and writes ``metrics.json``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .numerics import logit, sigmoid
from .reports import write_json_atomic


@dataclass
class EpochResult:
    loss: float
    scores: np.ndarray        # the model's probabilities on the batches seen, [n_seen, K]
    targets: np.ndarray       # their targets, [n_seen, K]
    seconds: float


def train_epoch(model, loss_fn, optimizer, images, targets, batches, normalizer, rng, *,
                augment=None, scheduler_step=None, description="train", progress=True) -> EpochResult:
    """One pass over ``batches`` (lists of indices into ``images``/``targets``).

    Each batch is normalised on the host, moved to the model's device,
    augmented there (``augment(backend, x, rng)``), and takes one optimizer
    step. ``scheduler_step(fraction_of_epoch)`` is called after each step
    when given (for per-batch schedules).
    """
    be = model.backend
    model.train()
    start = time.perf_counter()
    total, seen = 0.0, 0
    all_scores, all_targets = [], []
    bar = tqdm(batches, desc=description, leave=False, disable=not progress, unit="batch")
    for b, index in enumerate(bar):
        x = be.asarray(normalizer(images[index], model.dtype))
        y = be.asarray(targets[index], dtype=model.dtype)
        if augment is not None:
            x = augment(be, x, rng)
        optimizer.zero_grad()
        logits = model.forward(x)
        loss = loss_fn.forward(logits, y)
        if not math.isfinite(loss):
            raise FloatingPointError(f"{description}, step {b + 1} of {len(batches)}: the training loss became "
                                     f"{loss}; the learning rate ({optimizer.lr:g}) is likely too high: lower --lr")
        model.backward(loss_fn.backward(), need_input_grad=False)
        # One host sync per step: the largest |gradient| of each parameter, summed, is finite only if all are.
        if not math.isfinite(float(sum(be.xp.max(be.xp.abs(p.grad)) for p in model.parameters()))):
            raise FloatingPointError(f"{description}, step {b + 1} of {len(batches)}: a gradient became NaN or "
                                     f"infinite (loss {loss:.4g}); the learning rate ({optimizer.lr:g}) is likely "
                                     "too high: lower --lr")
        optimizer.step()
        if scheduler_step is not None:
            scheduler_step((b + 1) / len(batches))
        total += loss * len(index)
        seen += len(index)
        all_scores.append(be.to_numpy(sigmoid(logits, be.xp)))
        all_targets.append(targets[index])
        bar.set_postfix(loss=f"{total / seen:.4f}")
    bar.close()
    return EpochResult(total / max(seen, 1), np.concatenate(all_scores), np.concatenate(all_targets),
                       time.perf_counter() - start)


def predict_logits(model, images, normalizer, *, batch_size=128, tta=False, progress=False,
                   description="predict") -> np.ndarray:
    """Logits [N, K] of ``images`` (host array [N, C, H, W]) in eval mode.

    With ``tta`` the logits are those of the mean probability over the image,
    its left-right flip and its up-down flip.
    """
    be = model.backend
    out = []
    bar = tqdm(total=len(images), desc=description, leave=False, disable=not progress, unit="image")
    with model.evaluating():
        for start in range(0, len(images), batch_size):
            x = be.asarray(normalizer(images[start:start + batch_size], model.dtype))
            if tta:
                views = (x, x[:, :, :, ::-1], x[:, :, ::-1, :])
                probs = sum(sigmoid(model.forward(be.xp.ascontiguousarray(v)), be.xp) for v in views) / 3
                out.append(be.to_numpy(logit(be.xp.clip(probs, 1e-7, 1 - 1e-7), be.xp)))
            else:
                out.append(be.to_numpy(model.forward(x)))
            bar.update(len(x))
    bar.close()
    if not out:
        return np.empty((0, 0), np.float32)
    return np.concatenate(out).astype(np.float64)


def probabilities(logits: np.ndarray) -> np.ndarray:
    return sigmoid(np.asarray(logits, dtype=np.float64))


@dataclass
class RunFiles:
    """The files a training run writes into ``--out``."""

    out: Path
    best: Path = field(init=False)
    last: Path = field(init=False)
    metrics: Path = field(init=False)
    curves: Path = field(init=False)
    thresholds: Path = field(init=False)

    def __post_init__(self):
        self.out = Path(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        # A write killed mid-way (SIGKILL, power loss) leaves its temporary file; the next run clears it.
        for stale in self.out.glob(".*.partial"):
            stale.unlink(missing_ok=True)
        self.best = self.out / "best.npz"
        self.last = self.out / "last.npz"
        self.metrics = self.out / "metrics.json"
        self.curves = self.out / "curves.png"
        self.thresholds = self.out / "thresholds.json"


def write_metrics(path, history: list[dict], final: dict | None, run: dict) -> None:
    write_json_atomic(path, {"run": run, "history": history, "final": final})


def rng_state(rng: np.random.Generator) -> dict:
    return rng.bit_generator.state


def rng_from_state(state: dict) -> np.random.Generator:
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
