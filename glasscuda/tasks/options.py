"""The settings of a training task, typed; ``python -m glasscuda.train`` fills them from its flags.

The defaults live in one place, the command line's parser.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, fields


class UsageError(Exception):
    """A problem with the command line or the data that the user must fix (exit code 2)."""


@dataclass(kw_only=True)
class TaskOptions:
    """What every task reads; the binary task reads nothing else.

    ``data`` is the dataset root (None: the synthetic glass set, of
    ``synthetic_train`` training images, cached in ``cache_dir``); ``classes``
    names the defect classes in class-id order instead of the dataset's
    classes.txt (None: the dataset's); ``strict``
    stops at the first unusable file; ``resume`` continues from ``last.npz``.
    """

    task: str
    recipe: str
    epochs: int
    batch_size: int
    lr: float
    img_size: int
    seed: int
    data: str | None
    classes: tuple | None
    synthetic_train: int | None
    cache_dir: str | None
    strict: bool
    resume: bool
    progress: bool

    @classmethod
    def from_namespace(cls, args: argparse.Namespace):
        """The options of parsed ``python -m glasscuda.train`` arguments."""
        values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name != "progress"}
        return cls(**values, progress=not args.no_progress)


@dataclass(kw_only=True)
class GlassOptions(TaskOptions):
    """What both glass tasks read besides the common options: the network's head and batch norm, decay,
    TTA, augmentation."""

    head: str
    batchnorm: bool
    weight_decay: float
    tta: bool
    aug_flip: float
    aug_rotate: float
    aug_jitter: float
    aug_sharpness: float
    aug_noise: float
    aug_erase: float


@dataclass(kw_only=True)
class BinaryOptions(GlassOptions):
    """The binary task: the detector's width, the schedule, the weight average."""

    width: int
    schedule: str
    lr_warmup: float
    ema: float
    threshold_rule: str


@dataclass(kw_only=True)
class MultilabelOptions(GlassOptions):
    """The multi-label task: focal loss, AdamW with warm restarts, warm-up, training crops."""

    gamma: float
    class_weights: str | None
    warmup_epochs: int
    t0: int
    t_mult: int
    eta_min: float
    channels: int
    crop: int


@dataclass(kw_only=True)
class CifarOptions(TaskOptions):
    """The CIFAR-10 preset: random horizontal flips or not."""

    hflip: bool


OPTIONS = {"binary": BinaryOptions, "multilabel": MultilabelOptions, "cifar10": CifarOptions}
"""The options class of each task."""
