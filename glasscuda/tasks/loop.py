"""The one epoch loop every task runs: train, score, keep the best, checkpoint, resume.

A task describes itself as a :class:`Recipe` (model, loss, optimizer,
batches, how an epoch is scored and plotted) and hands it to :func:`fit`.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .. import training
from ..checkpoint import load_checkpoint, save_checkpoint
from ..optim import EarlyStopping
from .options import TaskOptions, UsageError


def changed_files(stored: dict, now: dict) -> str | None:
    """What was added to or removed from each split since ``stored`` was taken; None when nothing."""
    changes = []
    for split in sorted(set(stored) | set(now)):
        before, after = set(stored.get(split, [])), set(now.get(split, []))
        for what, names in (("added", sorted(after - before)), ("removed", sorted(before - after))):
            if names:
                shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                changes.append(f"{split}: {len(names)} {what} ({shown})")
    return "; ".join(changes) or None


def resume_state(options: TaskOptions, files, run_config: dict, files_now: dict | None = None):
    """The last checkpoint of ``--out`` when ``--resume``; checks it belongs to this run (and its data)."""
    if not options.resume:
        return None
    if not files.last.exists():
        raise UsageError(f"--resume: no checkpoint to resume from at {files.last}")
    checkpoint = load_checkpoint(files.last)
    stored = checkpoint.header.get("run", {})
    differing = {k: (stored.get(k), v) for k, v in run_config.items()
                 if k not in ("epochs", "resume", "device", "out") and stored.get(k) != v}
    if differing:
        shown = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differing.items())
        raise UsageError(f"--resume: {files.last} was trained with other settings ({shown}); "
                         "resume with the same settings or use a new --out")
    stored_files = checkpoint.header.get("dataset_files")
    changes = changed_files(stored_files, files_now) if stored_files and files_now else None
    if changes:
        raise UsageError(f"--resume: the dataset changed since the run began ({changes}); "
                         "restore those files or start a new run in another --out")
    return checkpoint


@dataclass
class Recipe:
    """What a task plugs into :func:`fit`.

    ``score_epoch(result)`` turns an epoch's :class:`~glasscuda.training.EpochResult`
    into the history entry's metrics (training and validation) and the value
    that decides the best epoch (higher is better); ``summary(entry)`` is the
    middle of the epoch's printed line; ``plot(history, path)`` draws the
    curves. ``crop`` is :func:`~glasscuda.training.train_epoch`'s (None: whole
    images). ``epoch_start(epoch)``, ``batch_step(fraction)`` and
    ``epoch_end(value)`` are optional hooks (a loss that reports, per-batch
    and per-epoch schedules). With ``patience`` the run stops after that many
    epochs without a better ``watched`` value. With an ``average``
    (:class:`~glasscuda.optim.WeightAverage`) it is updated after every step,
    and epochs are scored, kept and saved with the averaged weights.
    """

    name: str
    model: object
    loss_fn: object
    optimizer: object
    sampler: object
    train_images: np.ndarray
    train_targets: np.ndarray
    normalizer: object
    score_epoch: Callable
    summary: Callable
    plot: Callable
    scheduler: object = None
    augment: object = None
    crop: object = None
    epoch_start: Callable | None = None
    batch_step: Callable | None = None
    epoch_end: Callable | None = None
    patience: int | None = None
    watched: str = "F1"
    average: object = None


class TrainingState:
    """The optimizer's state and the weight average's, saved into and loaded from one checkpoint together."""

    def __init__(self, optimizer, average=None):
        self.parts = [part for part in (optimizer, average) if part is not None]

    def state_dict(self) -> dict:
        return {k: v for part in self.parts for k, v in part.state_dict().items()}

    def load_state_dict(self, state: dict) -> None:
        for part in self.parts:
            part.load_state_dict(state)


def fit(options: TaskOptions, files, recipe: Recipe, run_config: dict, header_extra: dict,
        dataset_files: dict | None = None):
    """Train for ``options.epochs`` epochs (or until early stopping); returns (history, stopper).

    Writes ``last.npz``, ``metrics.json`` and the curves after every epoch and
    ``best.npz`` when the watched value improves; leaves the model holding the
    best weights. ``dataset_files`` (the files each split was read from) is
    kept in the checkpoints so that a resumed run can tell whether they changed.
    """
    model, optimizer, scheduler, average = recipe.model, recipe.optimizer, recipe.scheduler, recipe.average
    training_state = TrainingState(optimizer, average)
    stopper = EarlyStopping(patience=recipe.patience or 0, mode="max")
    rng = np.random.default_rng(options.seed)
    history, best_state, start_epoch = [], None, 0

    checkpoint = resume_state(options, files, run_config, dataset_files)
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model_state)
        training_state.load_state_dict(checkpoint.optimizer_state)
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint.header["scheduler"])
        stopper.load_state_dict(checkpoint.header["early_stopping"])
        history = checkpoint.header["history"]
        rng = training.rng_from_state(checkpoint.header["rng"])
        start_epoch = checkpoint.header["epoch"]
        if files.best.exists():
            best_state = load_checkpoint(files.best).model_state
        print(f"resuming from {files.last} after epoch {start_epoch}")

    def header(epoch):
        state = {"task": recipe.name, "run": run_config, "epoch": epoch,
                 "normalization": recipe.normalizer.to_dict()}
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        state.update({"early_stopping": stopper.state_dict(), "history": history, "rng": training.rng_state(rng)})
        if dataset_files is not None:
            state["dataset_files"] = dataset_files
        return {**state, **header_extra}

    for epoch in range(start_epoch + 1, options.epochs + 1):
        if recipe.patience is not None and stopper.should_stop:
            print(f"early stopping: no better validation {recipe.watched} for {stopper.patience} epochs")
            break
        if recipe.epoch_start is not None:
            recipe.epoch_start(epoch)
        def batch_step(fraction, e=epoch):
            if average is not None:
                average.update()
            if recipe.batch_step is not None:
                recipe.batch_step(e - 1 + fraction)
        result = training.train_epoch(
            model, recipe.loss_fn, optimizer, recipe.train_images, recipe.train_targets,
            recipe.sampler.epoch(rng), recipe.normalizer, rng, augment=recipe.augment, crop=recipe.crop,
            scheduler_step=batch_step if average is not None or recipe.batch_step is not None else None,
            description=f"epoch {epoch}/{options.epochs}",
            progress=options.progress)
        lr = optimizer.lr
        averaged = average.applied if average is not None else nullcontext
        with averaged():
            scores, watched = recipe.score_epoch(result)
        entry = {"epoch": epoch, "train_loss": result.loss, "lr": lr, "seconds": result.seconds, **scores}
        history.append(entry)
        improved = stopper.step(-1.0 if np.isnan(watched) else watched, epoch)
        if recipe.epoch_end is not None:
            recipe.epoch_end(watched)
        print(f"epoch {epoch:3d}  loss {result.loss:.4f}  {recipe.summary(entry)}  {result.seconds:.0f}s"
              f"{'  *best*' if improved else ''}", flush=True)
        if improved:
            with averaged():
                best_state = model.state_dict()
                save_checkpoint(files.best, model, header(epoch))
        save_checkpoint(files.last, model, header(epoch), training_state)
        training.write_metrics(files.metrics, history, None, run_config)
        recipe.plot(history, files.curves)

    model.load_state_dict(best_state if best_state is not None else model.state_dict())
    return history, stopper
