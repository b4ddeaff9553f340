"""The pieces every training task shares: the epoch loop, batched inference, run artifacts.

A task (``glasscuda/tasks/*.py``) supplies the model, the loss, the optimizer
and how to score a validation set; this module runs batches through them,
keeps the history, and writes ``metrics.json``.
"""
from __future__ import annotations

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


READ_EVERY = 25   # steps between two reads of the running loss and the finiteness flags


def train_epoch(model, loss_fn, optimizer, images, targets, batches, normalizer, rng, *,
                augment=None, crop=None, scheduler_step=None, description="train", progress=True,
                read_every: int = READ_EVERY) -> EpochResult:
    """One pass over ``batches`` (lists of indices into ``images``/``targets``).

    The standardised training images and their targets go to the model's
    device once, at the start of the epoch. A step then copies one thing to
    the device — the batch's indices — gathers its batch there, augments it
    with random numbers drawn there (``augment(backend, x, generator)``, the
    generator from ``Backend.random_generator``), and takes one optimizer
    step; nothing in a step waits for the host. With ``crop``, the model
    trains on ``crop(x, rows, generator)``, a batch cut from the gathered one
    and its targets (for example :class:`glasscuda.data.crops.BoxCrops`),
    augmented after cutting. The running loss and whether
    a loss or gradient has become NaN or infinite accumulate on the device and
    are read every ``read_every`` steps and at the end of the epoch; the
    scores, once, at the end. ``scheduler_step(fraction_of_epoch)`` is called
    after each step when given (for per-batch schedules).
    """
    be, xp = model.backend, model.backend.xp
    model.train()
    start = time.perf_counter()
    device_images = xp.empty(images.shape, dtype=model.dtype)
    for first in range(0, len(images), 256):   # standardise in chunks: no float64 copy of the whole set
        device_images[first:first + 256] = be.asarray(normalizer(images[first:first + 256], model.dtype))
    device_targets = be.asarray(targets, dtype=model.dtype)
    generator = be.random_generator(rng)
    total, seen = 0.0, 0
    first_bad_loss = first_bad_grad = xp.full((), -1, dtype=np.int64)
    scores, all_targets = [], []

    def read():
        """The running loss; raises at the first step whose loss or gradient was not finite."""
        values = be.to_numpy(xp.stack([xp.asarray(total, dtype=np.float64),
                                       first_bad_loss.astype(np.float64), first_bad_grad.astype(np.float64)]))
        bad_loss, bad_grad = int(values[1]), int(values[2])
        if bad_loss >= 0 or bad_grad >= 0:
            bad = min(s for s in (bad_loss, bad_grad) if s >= 0)
            what = "the training loss" if bad == bad_loss else "a gradient"
            raise FloatingPointError(f"{description}, step {bad + 1} of {len(batches)}: {what} became NaN or "
                                     f"infinite; the learning rate ({optimizer.lr:g}) is likely too high: "
                                     "lower --lr")
        return float(values[0]) / max(seen, 1)

    bar = tqdm(batches, desc=description, leave=False, disable=not progress, unit="batch")
    for b, index in enumerate(bar):
        rows = be.asarray(np.asarray(index, dtype=np.int64))
        x, y = device_images[rows], device_targets[rows]
        if crop is not None:
            x, y = crop(x, rows, generator)
        if augment is not None:
            x = augment(be, x, generator)
        optimizer.zero_grad()
        logits = model.forward(x)
        loss = xp.asarray(loss_fn.forward(logits, y))   # a 0-d device array stays where it is
        model.backward(loss_fn.backward(), need_input_grad=False)
        first_bad_loss = xp.where((first_bad_loss < 0) & ~xp.isfinite(loss), b, first_bad_loss)
        first_bad_grad = xp.where((first_bad_grad < 0) & ~xp.isfinite(optimizer.grad).all(), b, first_bad_grad)
        optimizer.step()
        if scheduler_step is not None:
            scheduler_step((b + 1) / len(batches))
        total = total + loss.astype(np.float64) * len(index)
        seen += len(index)
        scores.append(sigmoid(logits, xp))
        all_targets.append(y)
        if (b + 1) % read_every == 0:
            bar.set_postfix(loss=f"{read():.4f}")
    bar.close()
    mean_loss = read()
    if not scores:
        return EpochResult(mean_loss, np.empty((0, 0)), np.empty((0, 0)), time.perf_counter() - start)
    scores, all_targets = xp.concatenate(scores), xp.concatenate(all_targets)
    both = be.to_numpy(xp.concatenate([scores.ravel(), all_targets.ravel()]))   # one read for the two
    return EpochResult(mean_loss, both[:scores.size].reshape(scores.shape),
                       both[scores.size:].reshape(all_targets.shape), time.perf_counter() - start)


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
