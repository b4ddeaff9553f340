"""What the glass tasks (binary and multi-label) share: data, splits, resuming, reporting."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoint import load_checkpoint
from ..data import DatasetError, GlassDataset, load_split, stratified_split, synthetic_dataset
from ..data.sampling import Normalizer
from ..plots import plot_training_curves


class UsageError(Exception):
    """A problem with the command line or the data that the user must fix (exit code 2)."""


@dataclass
class GlassSplits:
    root: Path
    train: GlassDataset
    val: GlassDataset
    test: GlassDataset
    normalizer: Normalizer


def resolve_data_root(args) -> Path:
    """``--data`` when given, else the cached synthetic glass set (generated on first use)."""
    if args.data:
        root = Path(args.data)
        if not root.exists():
            raise UsageError(f"--data {root}: no such folder")
        return root
    print(f"no --data given: using the built-in synthetic glass set ({args.synthetic_train} training images)",
          file=sys.stderr)
    return synthetic_dataset(cache_dir=args.cache_dir, progress=not args.no_progress, n_train=args.synthetic_train)


def load_glass_splits(args, *, channels: int = 1) -> GlassSplits:
    """Train/validation (stratified 80/20 by ``--seed``) and test splits at ``--img-size``."""
    root = resolve_data_root(args)
    try:
        kwargs = dict(image_size=args.img_size, channels=channels, strict=args.strict,
                      progress=not args.no_progress)
        full = load_split(root, "train", **kwargs)
        test = load_split(root, "test", **kwargs)
    except DatasetError as error:
        raise UsageError(str(error)) from error
    train_idx, val_idx = stratified_split(full.labels, val_fraction=0.2, seed=args.seed)
    train, val = full.subset(train_idx), full.subset(val_idx)
    if not train.is_defective.any():
        raise UsageError(f"the training split of {root} has no defective image, so there is "
                         "nothing to detect: F1 is undefined. Add labelled defects (ROOT/train/txt).")
    return GlassSplits(root, train, val, test, Normalizer.fit(train.images))


def describe(name: str, data: GlassDataset) -> str:
    n_def = int(data.is_defective.sum())
    return f"{name} {len(data)} images ({n_def} defective)"


def dataset_files(data: GlassSplits) -> dict:
    """The image file names of each split as this run found them (skipped ones included)."""
    train = data.train.paths + data.val.paths + [path for path, _ in data.train.skipped]
    test = data.test.paths + [path for path, _ in data.test.skipped]
    return {split: sorted({Path(p).name for p in paths}) for split, paths in (("train", train), ("test", test))}


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


def resume_state(args, files, run_config: dict, files_now: dict | None = None):
    """The last checkpoint of ``--out`` when ``--resume``; checks it belongs to this run (and its data)."""
    if not args.resume:
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


def fmt(value, spec=".3f") -> str:
    return "  n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


@dataclass
class Recipe:
    """What a task plugs into :func:`fit`.

    ``validate(probs)`` scores validation probabilities [N, K] and returns
    (metrics dict with precision/recall/f1 and threshold(s), the value early
    stopping and plateau scheduling watch). ``epoch_end(value)`` and
    ``batch_step(fraction)`` drive the learning-rate schedule.
    """

    name: str
    model: object
    loss_fn: object
    optimizer: object
    scheduler: object
    sampler: object
    train_targets: np.ndarray
    validate: object
    augment: object = None
    epoch_end: object = None
    batch_step: object = None
    tta: bool = False


def fit(args, files, data: GlassSplits, recipe: Recipe, run_config: dict, header_extra: dict):
    """The epoch loop shared by the glass tasks; returns (history, stopper).

    Writes ``last.npz`` after every epoch and ``best.npz`` when the watched
    validation value improves; leaves the model holding the best weights.
    """
    from .. import training
    from ..checkpoint import save_checkpoint
    from ..optim import EarlyStopping

    model, optimizer, scheduler = recipe.model, recipe.optimizer, recipe.scheduler
    stopper = EarlyStopping(patience=8, mode="max")
    rng = np.random.default_rng(args.seed)
    history, best_state, start_epoch = [], None, 0

    files_now = dataset_files(data)
    checkpoint = resume_state(args, files, run_config, files_now)
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        scheduler.load_state_dict(checkpoint.header["scheduler"])
        stopper.load_state_dict(checkpoint.header["early_stopping"])
        history = checkpoint.header["history"]
        rng = training.rng_from_state(checkpoint.header["rng"])
        start_epoch = checkpoint.header["epoch"]
        if files.best.exists():
            best_state = load_checkpoint(files.best).model_state
        print(f"resuming from {files.last} after epoch {start_epoch}")

    def header(epoch, **extra):
        return {"task": recipe.name, "run": run_config, "epoch": epoch,
                "normalization": data.normalizer.to_dict(), "scheduler": scheduler.state_dict(),
                "early_stopping": stopper.state_dict(), "history": history,
                "rng": training.rng_state(rng), "dataset_files": files_now, **header_extra, **extra}

    for epoch in range(start_epoch + 1, args.epochs + 1):
        if stopper.should_stop:
            print(f"early stopping: no better validation F1 for {stopper.patience} epochs")
            break
        batch_step = None
        if recipe.batch_step is not None:
            batch_step = lambda fraction, e=epoch: recipe.batch_step(e - 1 + fraction)  # noqa: E731
        result = training.train_epoch(
            model, recipe.loss_fn, optimizer, data.train.images, recipe.train_targets,
            recipe.sampler.epoch(rng), data.normalizer, rng, augment=recipe.augment,
            scheduler_step=batch_step, description=f"epoch {epoch}/{args.epochs}",
            progress=not args.no_progress)
        lr = optimizer.lr
        train_metrics, _ = recipe.validate(result.scores, result.targets, fixed_threshold=0.5)
        val_probs = training.probabilities(training.predict_logits(
            model, data.val.images, data.normalizer, tta=recipe.tta))
        val_metrics, watched = recipe.validate(val_probs)
        entry = {"epoch": epoch, "train_loss": result.loss, "lr": lr, "seconds": result.seconds,
                 **{f"train_{k}": train_metrics[k] for k in ("precision", "recall", "f1")},
                 **{f"val_{k}": v for k, v in val_metrics.items()}}
        history.append(entry)
        improved = stopper.step(-1.0 if np.isnan(watched) else watched, epoch)
        if recipe.epoch_end is not None:
            recipe.epoch_end(watched)
        print(f"epoch {epoch:3d}  loss {result.loss:.4f}  train F1 {fmt(train_metrics['f1'])}  "
              f"val P {fmt(val_metrics['precision'])} R {fmt(val_metrics['recall'])} "
              f"F1 {fmt(val_metrics['f1'])}  lr {lr:.2e}  {result.seconds:.0f}s"
              f"{'  *best*' if improved else ''}", flush=True)
        if improved:
            best_state = model.state_dict()
            save_checkpoint(files.best, model, header(epoch))
        save_checkpoint(files.last, model, header(epoch), optimizer)
        training.write_metrics(files.metrics, history, None, run_config)
        plot_training_curves(history, files.curves, recipe.name)

    model.load_state_dict(best_state if best_state is not None else model.state_dict())
    return history, stopper
