"""What the glass tasks (binary and multi-label) share: data, splits, and their recipe of the loop."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import training
from ..data.augment import Augment
from ..data import DatasetError, GlassDataset, load_split, stratified_split, synthetic_dataset
from ..data.sampling import Normalizer
from ..plots import plot_training_curves
from .loop import Recipe
from .options import TaskOptions, UsageError


AUGMENT_FLAGS = {"aug_flip": "p_flip", "aug_rotate": "p_rotate", "aug_jitter": "p_jitter",
                 "aug_sharpness": "p_sharpness", "aug_noise": "p_noise", "aug_erase": "p_erase"}


def augmentation(options) -> Augment:
    """The ``--aug-*`` probabilities as an :class:`Augment`."""
    try:
        return Augment(**{field: getattr(options, flag) for flag, field in AUGMENT_FLAGS.items()})
    except ValueError as error:
        raise UsageError(str(error).replace("p_", "--aug-", 1)) from error


@dataclass
class GlassSplits:
    root: Path
    train: GlassDataset
    val: GlassDataset
    test: GlassDataset
    normalizer: Normalizer


def resolve_data_root(options: TaskOptions) -> Path:
    """``--data`` when given, else the cached synthetic glass set (generated on first use)."""
    if options.data:
        root = Path(options.data)
        if not root.exists():
            raise UsageError(f"--data {root}: no such folder")
        return root
    print(f"no --data given: using the built-in synthetic glass set ({options.synthetic_train} training images)",
          file=sys.stderr)
    return synthetic_dataset(cache_dir=options.cache_dir, progress=options.progress, n_train=options.synthetic_train)


def load_glass_splits(options: TaskOptions, *, channels: int = 1, class_names=None) -> GlassSplits:
    """Train/validation (stratified 80/20 by ``--seed``) and test splits at ``--img-size``.

    The label files' class ids are named by ``class_names`` (in id order)
    when given, else by the dataset's classes.txt (the course's three without one).
    """
    root = resolve_data_root(options)
    try:
        kwargs = dict(image_size=options.img_size, channels=channels, strict=options.strict,
                      progress=options.progress,
                      class_map=dict(enumerate(class_names)) if class_names else None)
        full = load_split(root, "train", **kwargs)
        test = load_split(root, "test", **kwargs)
    except DatasetError as error:
        raise UsageError(str(error)) from error
    train_idx, val_idx = stratified_split(full.labels, val_fraction=0.2, seed=options.seed)
    train, val = full.subset(train_idx), full.subset(val_idx)
    if not train.is_defective.any():
        raise UsageError(f"the training split of {root} has no defective image, so there is "
                         "nothing to detect: F1 is undefined. Add labelled defects (ROOT/train/txt).")
    for name, split in (("validation", val), ("test", test)):
        note = single_class_note(split.is_defective)
        if note:
            print(f"note: the {name} split of {root} has {note}; no F1 is reported for it", file=sys.stderr)
    return GlassSplits(root, train, val, test, Normalizer.fit(train.images))


def single_class_note(is_defective) -> str | None:
    """Why precision, recall and F1 say nothing about labels of one class only; None when both are present."""
    defective = np.asarray(is_defective, dtype=bool).reshape(-1)
    if defective.size and not defective.any():
        return "no defective image: recall and F1 are undefined"
    if defective.all():
        return "no defect-free image: precision and F1 are meaningless, as calling every image defective scores 1.0"
    return None


def describe(name: str, data: GlassDataset) -> str:
    n_def = int(data.is_defective.sum())
    return f"{name} {len(data)} images ({n_def} defective)"


def dataset_files(data: GlassSplits) -> dict:
    """The image file names of each split as this run found them (skipped ones included)."""
    train = data.train.paths + data.val.paths + [path for path, _ in data.train.skipped]
    test = data.test.paths + [path for path, _ in data.test.skipped]
    return {split: sorted({Path(p).name for p in paths}) for split, paths in (("train", train), ("test", test))}


def fmt(value, spec=".3f") -> str:
    return "  n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def glass_recipe(name: str, data: GlassSplits, validate, *, tta: bool = False, patience: int | None = 8,
                 **parts) -> Recipe:
    """The :class:`Recipe` of a glass task: early stopping on validation F1, P/R/F1 curves.

    ``validate(probs, targets=None, fixed_threshold=None)`` scores
    probabilities [N, K] (the validation set's when ``targets`` is None) and
    returns (metrics with precision/recall/f1 and threshold(s), the value
    early stopping and plateau scheduling watch). The training batches are
    scored at 0.5; validation, with ``tta``, on the mean of the image and its
    flips. ``patience``: epochs without a better validation F1 before the run
    stops (None: never). ``parts`` are the rest of the recipe (model, loss, optimizer, ...).
    """
    model = parts["model"]

    def score_epoch(result):
        train_metrics, _ = validate(result.scores, result.targets, fixed_threshold=0.5)
        val_probs = training.probabilities(training.predict_logits(model, data.val.images, data.normalizer, tta=tta))
        val_metrics, watched = validate(val_probs)
        return ({**{f"train_{k}": train_metrics[k] for k in ("precision", "recall", "f1")},
                 **{f"val_{k}": v for k, v in val_metrics.items()}}, watched)

    def summary(entry) -> str:
        return (f"train F1 {fmt(entry['train_f1'])}  val P {fmt(entry['val_precision'])} "
                f"R {fmt(entry['val_recall'])} F1 {fmt(entry['val_f1'])}  lr {entry['lr']:.2e}")

    return Recipe(name=name, train_images=data.train.images, normalizer=data.normalizer, score_epoch=score_epoch,
                  summary=summary, plot=lambda history, path: plot_training_curves(history, path, name),
                  patience=patience, watched="F1", **parts)
