"""What the glass tasks (binary and multi-label) share: data, splits, resuming, reporting."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..checkpoint import load_checkpoint
from ..data import DatasetError, GlassDataset, load_split, stratified_split, synthetic_dataset
from ..data.sampling import Normalizer


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
    print("no --data given: using the built-in synthetic glass set", file=sys.stderr)
    return synthetic_dataset(cache_dir=args.cache_dir, progress=not args.no_progress)


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


def resume_state(args, files, run_config: dict):
    """The last checkpoint of ``--out`` when ``--resume``; checks it belongs to this run."""
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
    return checkpoint


def fmt(value, spec=".3f") -> str:
    return "  n/a" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)
