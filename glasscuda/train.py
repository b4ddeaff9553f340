"""python -m glasscuda.train — train a glasscuda network.

Tasks:
  binary      is anything wrong with this glass? (BinaryDetector, BCE, Adam)
  multilabel  which defects? (MultiLabelNet, focal loss, AdamW, warm restarts)
  cifar10     the small-CNN preset on CIFAR-10's python batches (--data required)

With no --data the glass tasks use the built-in synthetic glass set, generated
on first use into the cache folder (--cache-dir, $GLASSCUDA_CACHE, or
~/.cache/glasscuda) and reused after.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from .backend import get_backend
from .checkpoint import CheckpointError
from .cli import (check_writable_folder, non_negative_float, plain_warnings, positive_float, positive_int,
                  remove_empty_folders)
from .data.augment import Augment
from .data.dataset import DatasetError
from .glass import CLASSES_FILE, DEFECT_CLASSES, NO_DEFECT, ClassNamesError, check_class_names
from .models import HEADS, MULTILABEL_HEADS
from .tasks.common import UsageError
from .tasks.recipes import RECIPES, SYNTHETIC_EPOCHS, recipe_values
from .training import RunFiles

TASK_DEFAULTS = {   # what does not change with --recipe (see glasscuda/tasks/recipes.py for what does)
    "binary": {"out": "runs/binary", "synthetic_train": 2000},
    "multilabel": {"out": "runs/multilabel", "synthetic_train": 6000},
    "cifar10": {"out": "runs/cifar10", "synthetic_train": None},
}


# The flags only some tasks read (a default of None, filled from the task's recipe): given to another task, an error.
TASK_FLAGS = {**{flag: ("binary",) for flag in ("width", "schedule", "lr_warmup", "ema", "threshold_rule")},
              **{flag: ("multilabel",) for flag in ("warmup_epochs", "crop")},
              **{flag: ("binary", "multilabel") for flag in ("head", "batchnorm", "weight_decay", "tta", "aug_flip",
                                                             "aug_rotate", "aug_jitter", "aug_sharpness",
                                                             "aug_noise", "aug_erase")}}

# The smallest synthetic training set whose 80/20 stratified split puts a defective and a
# defect-free image in validation for every --seed (one image in ten defective; checked in the tests).
MIN_SYNTHETIC_TRAIN = 25


def _wrapped(text: str) -> str:
    """A group description wrapped for the terminal (the raw formatter keeps line breaks as written)."""
    return textwrap.fill(text, 76)


def recipe_help(key: str) -> str:
    """'recipe default: binary X, multilabel Y; seed: ...' for the help of a flag the recipes set."""
    def shown(value):
        return ("on" if value else "off") if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) \
            else str(value)
    parts = []
    for recipe in ("default", "seed"):
        values = [f"{task} {shown(RECIPES[recipe][task][key])}" for task in RECIPES[recipe]
                  if key in RECIPES[recipe][task]]
        parts.append(f"{recipe}: {', '.join(values)}")
    return "recipe " + "; ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m glasscuda.train", description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
A run writes into --out (each file atomically):
  best.npz, last.npz   checkpoints (.npz arrays + JSON header; last.npz also holds
                       the optimizer, schedule and sampler state for --resume)
  metrics.json         per-epoch history and a final block: validation and test
                       precision, recall, F1 and threshold (binary); micro/macro-F1,
                       per-class table and thresholds (multilabel); validation and
                       test accuracy, per-class test accuracy (cifar10)
  curves.png           training loss and training/validation metrics per epoch
  thresholds.json      decision threshold(s) searched on validation (glass tasks)
  confusion_matrices.png  per-class 2x2 matrices on the test split (multilabel)
Interrupt a run and add --resume to continue from last.npz.
Score new images with python -m glasscuda.predict --checkpoint OUT/best.npz.""")
    parser.add_argument("--task", choices=sorted(TASK_DEFAULTS), default="binary",
                        help="what to train (default: binary)")
    parser.add_argument("--data", metavar="DIR",
                        help="dataset root laid out as DIR/{train,test}/{img,txt} "
                             "(default: the synthetic glass set); for cifar10 (required): the "
                             "cifar-10-batches-py folder or its parent")
    parser.add_argument("--classes", metavar="A,B,...",
                        help=f"glass tasks: the defect classes in class-id order (label id 0 is A) instead of "
                             f"the dataset's ROOT/{CLASSES_FILE} (line i names class id i) or, without one, "
                             f"{','.join(DEFECT_CLASSES)}; names are unique, without , ; / or \\, and "
                             f"'{NO_DEFECT}' is reserved")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: runs/<task>)")
    parser.add_argument("--recipe", choices=sorted(RECIPES), default="default",
                        help="the defaults of the training flags below: 'seed' is the source report's recipe "
                             "as written, 'default' the best measured on real images (each flag's help gives its value in both); "
                             "a flag given explicitly overrides its recipe value")
    parser.add_argument("--epochs", type=positive_int,
                        help=f"maximum epochs ({recipe_help('epochs')}; on the built-in synthetic set "
                             + ", ".join(f"{recipe} recipe {task} {n}" for (recipe, task), n in SYNTHETIC_EPOCHS.items())
                             + "; the plateau schedule's early stopping after 8 epochs without a better "
                             "validation F1 may end sooner)")
    parser.add_argument("--batch-size", type=positive_int, help=f"images per batch ({recipe_help('batch_size')})")
    parser.add_argument("--lr", type=positive_float, help=f"learning rate ({recipe_help('lr')})")
    parser.add_argument("--img-size", type=int, help="images are resized to this square size "
                                                     f"(multiple of 16; {recipe_help('img_size')})")
    parser.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto",
                        help="auto: the GPU when CuPy and a CUDA device answer, else the CPU")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the split, initialisation, batches and augmentation (default 0)")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in --out from its last.npz (same settings)")
    parser.add_argument("--strict", action="store_true",
                        help="stop at the first unreadable image or malformed label line "
                             "instead of skipping it with a warning")
    parser.add_argument("--cache-dir", metavar="DIR", help="where the synthetic set is cached")
    parser.add_argument("--synthetic-train", type=int, metavar="N",
                        help="training images of the synthetic set, one in ten defective "
                             "(binary 2000, multilabel 6000; ignored with --data)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    glass = parser.add_argument_group(
        "glass tasks (binary and multilabel)",
        _wrapped("Defaults: the --recipe's value for the task, given in each flag's help."))
    glass.add_argument("--head", choices=HEADS,
                       help="the network's head. dense (binary only): Flatten, Linear(.., 128), ReLU, "
                            "Linear(128, outputs); pooled: global average pooling and one Linear; max: global max "
                            f"pooling and one Linear ({recipe_help('head')})")
    glass.add_argument("--batchnorm", action=argparse.BooleanOptionalAction,
                       help=f"batch normalisation after every convolution ({recipe_help('batchnorm')})")
    glass.add_argument("--weight-decay", type=non_negative_float,
                       help=f"decoupled (AdamW) weight decay; 0 is plain Adam ({recipe_help('weight_decay')})")
    glass.add_argument("--tta", action=argparse.BooleanOptionalAction,
                       help=f"validate and test on the mean of the image and its flips ({recipe_help('tta')})")
    defaults = Augment()
    for flag, what in (("flip", "a left-right flip, an up-down flip or both"),
                       ("rotate", f"a rotation within +-{defaults.max_angle:g} degrees"),
                       ("jitter", "brightness/contrast jitter"),
                       ("sharpness", "sharpening"),
                       ("noise", "Gaussian noise"),
                       ("erase", f"erasing a random box of up to {defaults.erase_fraction * 100:g}%% of the image")):
        glass.add_argument(f"--aug-{flag}", type=float, metavar="P",
                           help=f"probability of {what} per training image ({recipe_help(f'aug_{flag}')})")
    binary = parser.add_argument_group(
        "binary task", _wrapped("Every training image is also flipped and turned by a random multiple of 90 "
                                "degrees (the dihedral group: 8 views)."))
    binary.add_argument("--width", type=positive_int,
                        help=f"multiplies the channels of every conv block ({recipe_help('width')})")
    binary.add_argument("--schedule", choices=("plateau", "cosine"),
                        help="plateau: halve the rate after 3 epochs without a better validation F1, stop after 8; "
                             "cosine: --lr-warmup epochs of linear warm-up, then a cosine decay over all --epochs "
                             "(no early stopping) "
                             f"({recipe_help('schedule')})")
    binary.add_argument("--lr-warmup", type=non_negative_float, metavar="EPOCHS",
                        help="epochs of linear learning-rate warm-up of the cosine schedule (default: the recipe's "
                             "share of --epochs; " + ", ".join(
                                 f"{name} recipe: {r['binary']['lr_warmup']:g} of {r['binary']['epochs']}"
                                 for name, r in RECIPES.items()) + ")")
    binary.add_argument("--threshold-rule", choices=("f1", "prevalence"),
                        help="the decision threshold, chosen on validation: f1, where validation F1 peaks; "
                             "prevalence, where the detector flags the training set's fraction of defective "
                             f"images ({recipe_help('threshold_rule')})")
    binary.add_argument("--ema", type=non_negative_float, metavar="DECAY",
                        help="validate and keep an exponential moving average of the weights with this decay per "
                             f"step; 0 keeps the trained weights ({recipe_help('ema')})")
    multilabel = parser.add_argument_group(
        "multilabel task", _wrapped("The network (the conv backbone, global average or, with --head max, max "
        "pooling, one Linear) trains with focal loss, AdamW and warm restarts; with --warmup-epochs N (the seed "
        "recipe's 10) the backbone first trains for N epochs under the binary detector's dense head. "
        "Predicted defects are the classes that reach their own threshold "
        "(searched on validation); when none does, the image is 'no_defect'; when 'no_defect' "
        "passes together with a defect, the defect is reported."))
    multilabel.add_argument("--gamma", type=non_negative_float, default=2.0, help="focal loss gamma, >= 0 (default 2)")
    multilabel.add_argument("--class-weights", metavar="W0,W1,...",
                            help=f"positive weights for {NO_DEFECT}, then each defect class in class-id order "
                                 "(default: inverse class frequency in the training batches)")
    multilabel.add_argument("--warmup-epochs", type=int, metavar="N",
                            help="epochs that first train the backbone under the binary detector's dense "
                                 "head (one output per class) before the pooled head takes over; 0 skips "
                                 f"it ({recipe_help('warmup_epochs')})")
    multilabel.add_argument("--crop", type=int, metavar="N",
                            help="train on random N x N crops of the --img-size images, each labelled with the "
                                 "classes whose box centre it holds (every label line needs a box); validation "
                                 f"and test score whole images; 0 trains on whole images ({recipe_help('crop')})")
    multilabel.add_argument("--t0", type=positive_int, default=3, help="warm-restart period T_0 in epochs (default 3)")
    multilabel.add_argument("--t-mult", type=positive_int, default=2, help="period multiplier T_mult (default 2)")
    multilabel.add_argument("--eta-min", type=non_negative_float, default=1e-5, help="lowest learning rate (default 1e-5)")
    multilabel.add_argument("--channels", type=int, choices=(1, 3), default=1, help="1 grayscale, 3 RGB")
    cifar10 = parser.add_argument_group(
        "cifar10 task", _wrapped("Adam, softmax cross-entropy; defaults 10 epochs, batch 64, lr 1e-3. 5000 "
        "training images (drawn by --seed) are held out for validation and the epoch with the best "
        "validation accuracy is kept in best.npz; the running loss is printed every 100 batches and "
        "the test accuracy at the end (also in metrics.json). --resume works as for the glass tasks."))
    cifar10.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=True,
                         help="random horizontal flips of training images (default on)")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    recipe = recipe_values(args.recipe, args.task)
    warmup_given = getattr(args, "lr_warmup", None) is not None
    if args.epochs is None and not args.data:
        args.epochs = SYNTHETIC_EPOCHS.get((args.recipe, args.task))
    for key, value in {**TASK_DEFAULTS[args.task], **recipe}.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if not warmup_given and recipe.get("lr_warmup"):   # the recipe's warm-up is a share of its epochs
        args.lr_warmup = recipe["lr_warmup"] * args.epochs / recipe["epochs"]
    if args.data:   # one dataset, one path: a relative and an absolute --data are the same run for --resume
        args.data = str(Path(args.data).expanduser().resolve())
    if args.classes is not None:
        try:
            args.classes = check_class_names(args.classes.split(","), f"--classes {args.classes!r}")
        except ClassNamesError as error:
            parser.error(str(error))
    if args.warmup_epochs is not None and args.warmup_epochs < 0:
        parser.error(f"--warmup-epochs must be >= 0, got {args.warmup_epochs}")
    if args.task == "multilabel" and args.crop:
        if args.crop < 16 or args.crop % 16 or args.crop > args.img_size:
            parser.error(f"--crop must be 0 or a multiple of 16 up to --img-size ({args.img_size}), got {args.crop}")
        if args.warmup_epochs:
            parser.error("--crop needs --warmup-epochs 0: the warm-up's dense head takes whole images only")
    foreign = [flag for flag, tasks in TASK_FLAGS.items() if args.task not in tasks and getattr(args, flag) is not None]
    if foreign:
        parser.error(f"{', '.join('--' + f.replace('_', '-') for f in foreign)}: not an option of the "
                     f"{args.task} task")
    if args.task == "multilabel" and args.head not in MULTILABEL_HEADS:
        parser.error(f"--head {args.head}: the multilabel network's head is one of {', '.join(MULTILABEL_HEADS)} "
                     "(its class activation maps need pooled features)")
    if args.task == "binary":   # what WeightAverage and WarmupCosine would refuse with a traceback
        if not args.ema < 1:
            parser.error(f"--ema must be 0 (off) or a decay below 1, got {args.ema:g}")
        if warmup_given and args.schedule != "cosine":
            parser.error("--lr-warmup is the warm-up of --schedule cosine; the plateau schedule has none")
        if args.schedule == "cosine" and not args.lr_warmup < args.epochs:
            parser.error(f"--lr-warmup ({args.lr_warmup:g} epochs) must be shorter than --epochs ({args.epochs}) "
                         "with --schedule cosine")
    if args.synthetic_train is not None and args.synthetic_train < MIN_SYNTHETIC_TRAIN:
        parser.error(f"--synthetic-train must be at least {MIN_SYNTHETIC_TRAIN} (one image in ten is defective; "
                     "fewer leaves the validation split without a defective image), got "
                     f"{args.synthetic_train}")
    if args.img_size < 16 or args.img_size % 16:
        parser.error(f"--img-size must be a positive multiple of 16, got {args.img_size}")
    return args


def main(argv=None) -> int:
    with plain_warnings():
        return _main(argv)


def next_command(args) -> str | None:
    """The predict command that scores the test images with the checkpoint a glass run wrote."""
    if args.task == "cifar10":
        return None
    if args.data:
        root = Path(args.data)
    else:
        from .data import synthetic_dataset
        root = synthetic_dataset(cache_dir=args.cache_dir, progress=False, n_train=args.synthetic_train)
    out = Path(args.out)
    return (f"python -m glasscuda.predict --checkpoint {shlex.quote(str(out / 'best.npz'))} "
            f"--input {shlex.quote(str(root / 'test' / 'img'))} "
            f"--output {shlex.quote(str(out / 'test_predictions.csv'))}")


def _main(argv) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    try:   # before any work: a run must not fail at its first save
        created = check_writable_folder(args.out, "--out")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        be = get_backend(args.device)
        print(f"glasscuda: task {args.task} on {be.name}, writing to {args.out}")
        files = RunFiles(args.out)
        from .tasks import binary, cifar10, multilabel
        from .tasks.options import OPTIONS
        runner = {"binary": binary.run, "multilabel": multilabel.run, "cifar10": cifar10.run}[args.task]
        options = OPTIONS[args.task].from_namespace(args)
        # A NaN or overflow stops the run with one message (train_epoch checks); NumPy's warnings would only add noise.
        with np.errstate(invalid="ignore", over="ignore"):
            runner(options, be, files)
    except (UsageError, CheckpointError, DatasetError, RuntimeError) as error:
        remove_empty_folders(created)
        print(f"error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:
        remove_empty_folders(created)
        last = Path(args.out) / "last.npz"
        kept = (f"the last good epoch is kept in {last}" if last.exists()
                else "no epoch had finished, so no checkpoint was written")
        print(f"error: training stopped at {error}; {kept}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if (Path(args.out) / "last.npz").exists():
            print(f"\ninterrupted: the last finished epoch is in {args.out}/last.npz; "
                  "continue with --resume", file=sys.stderr)
        else:
            print("\ninterrupted before the first epoch (after any warm-up) ended: there is nothing "
                  "to resume; run the command again without --resume", file=sys.stderr)
        remove_empty_folders(created)
        return 130
    except BaseException:
        remove_empty_folders(created)
        raise
    print(f"done in {time.perf_counter() - started:.0f}s; artifacts in {args.out}")
    command = next_command(args)
    if command:
        print(f"next, score the test images:\n  {command}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
