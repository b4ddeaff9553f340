"""The CIFAR-10 preset: CifarNet on the CIFAR-10 python batches.

CifarNet (two conv blocks, two Linear layers, ten logits), softmax
cross-entropy, Adam, plain shuffled batches with optional random horizontal
flips on the device, and inputs standardised per channel with the training
images' mean and std. 5000 images of the training batches (a tenth of a
smaller set), drawn by ``--seed``, are held out for validation; the epoch with
the best validation accuracy is kept in ``best.npz`` and scored once on the
test batch at the end. The mean loss of the last 100 batches is printed every
100 batches. The epochs run in the loop every task shares (:mod:`glasscuda.tasks.loop`),
so ``--resume`` continues from ``last.npz`` as for the glass tasks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from .. import ops, training
from ..data.cifar10 import HOW_TO_GET, SIDE, load_cifar10
from ..data.dataset import DatasetError
from ..data.sampling import Normalizer, ShuffledBatchSampler
from ..losses import CrossEntropyLoss
from ..models import CifarNet
from ..optim import Adam
from ..plots import plot_accuracy_curves
from .loop import Recipe, fit
from .options import CifarOptions, UsageError

RUN_KEYS = ("task", "data", "img_size", "batch_size", "lr", "seed", "hflip")
VAL_SIZE = 5000
REPORT_EVERY = 100


@dataclass
class CifarSplits:
    """Training, validation and test images (float32 [N, 3, 32, 32] in [0, 1]) and int64 labels."""

    folder: Path
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: tuple
    normalizer: Normalizer


def validation_size(n_train: int) -> int:
    """Images held out for validation: 5000 of the full 50 000, a tenth (at least 1) of a smaller set."""
    return min(VAL_SIZE, max(1, n_train // 10))


def fit_normalizer(images: np.ndarray, chunk: int = 4096) -> Normalizer:
    """Per-channel mean and std of [N, C, H, W] ``images``, accumulated in float64 chunk by chunk.

    Gives what :meth:`Normalizer.fit` gives without a float64 copy of the
    whole set (1.1 GB for CIFAR-10's 45 000 training images).
    """
    count = images.shape[0] * images.shape[2] * images.shape[3]
    chunks = [images[i:i + chunk] for i in range(0, len(images), chunk)]
    mean = sum(c.sum(axis=(0, 2, 3), dtype=np.float64) for c in chunks) / count
    centred = mean.reshape(1, -1, 1, 1)
    squares = sum(np.square(c - centred).sum(axis=(0, 2, 3)) for c in chunks)
    std = np.sqrt(squares / count)
    return Normalizer(mean, np.where(std > 1e-8, std, 1.0))


def load_splits(options: CifarOptions) -> CifarSplits:
    """Read ``--data``, hold out the validation images by ``--seed``, fit the normaliser on the rest."""
    if not options.data:
        raise UsageError(f"--task cifar10 needs --data DIR: {HOW_TO_GET}")
    try:
        cifar = load_cifar10(options.data)
    except DatasetError as error:
        raise UsageError(str(error)) from error
    n = len(cifar.train_labels)
    order = np.random.default_rng(options.seed).permutation(n)
    val_idx, train_idx = np.sort(order[:validation_size(n)]), np.sort(order[validation_size(n):])
    if len(train_idx) == 0:
        raise UsageError(f"{cifar.folder}: {n} training image(s) leave none to train on "
                         "after holding out validation images")
    train_images = cifar.train_images[train_idx]
    return CifarSplits(cifar.folder, train_images, cifar.train_labels[train_idx],
                       cifar.train_images[val_idx], cifar.train_labels[val_idx],
                       cifar.test_images, cifar.test_labels, cifar.class_names,
                       fit_normalizer(train_images))


class ReportingLoss:
    """A loss that prints the mean of its last ``every`` batch losses as ``epoch E batch B: loss L``.

    Parameters
    ----------
    loss : the loss computed (``forward``/``backward`` are passed through).
    every : int
        Batches between two printed lines.
    """

    def __init__(self, loss, every: int = REPORT_EVERY):
        self.loss, self.every = loss, int(every)
        self.start_epoch(0)

    def start_epoch(self, epoch: int) -> None:
        """Restart the batch count for ``epoch``."""
        self.epoch, self.batch, self.window = epoch, 0, 0.0

    def forward(self, logits, targets):
        value = self.loss.forward(logits, targets)
        self.batch += 1
        self.window = self.window + value   # summed where the loss lives, read once per printed line
        if self.batch % self.every == 0:
            tqdm.write(f"epoch {self.epoch} batch {self.batch}: loss {float(self.window) / self.every:.4f}")
            self.window = 0.0
        return value

    def backward(self):
        return self.loss.backward()


def random_hflips(be, x, rng: np.random.Generator):
    """Each image flipped left-right with probability 1/2, on the device (flip_rotate90 codes 0/1)."""
    return ops.flip_rotate90(be, x, rng.integers(0, 2, size=x.shape[0]))


def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose largest score is at the true label."""
    labels = np.asarray(labels).reshape(-1)
    return float(np.mean(np.argmax(scores, axis=1) == labels)) if len(labels) else float("nan")


def per_class_accuracy(predicted: np.ndarray, labels: np.ndarray, names) -> dict:
    """Accuracy on the images of each class (None for a class with no image)."""
    return {name: (float(np.mean(predicted[labels == k] == k)) if (labels == k).any() else None)
            for k, name in enumerate(names)}


def run(options: CifarOptions, be, files) -> dict:
    """Train CifarNet on ``--data``, write the run's artifacts into ``files``; returns the final block."""
    if options.img_size != SIDE:
        raise UsageError(f"CIFAR-10 images are {SIDE}x{SIDE}: leave --img-size out or set it to {SIDE}")
    run_config = {k: getattr(options, k) for k in RUN_KEYS}
    data = load_splits(options)
    print(f"train {len(data.train_labels)} images, validation {len(data.val_labels)}, "
          f"test {len(data.test_labels)} from {data.folder}")
    model = CifarNet(in_channels=3, n_classes=len(data.class_names), image_size=SIDE,
                     seed=options.seed).to(be)
    loss_fn = ReportingLoss(CrossEntropyLoss(device=be))

    def score_epoch(result):
        val_accuracy = accuracy(training.predict_logits(model, data.val_images, data.normalizer), data.val_labels)
        return {"train_accuracy": accuracy(result.scores, result.targets), "val_accuracy": val_accuracy}, val_accuracy

    recipe = Recipe(
        name="cifar10", model=model, loss_fn=loss_fn, optimizer=Adam(model.parameters(), lr=options.lr),
        sampler=ShuffledBatchSampler(len(data.train_labels), options.batch_size),
        train_images=data.train_images, train_targets=data.train_labels, normalizer=data.normalizer,
        score_epoch=score_epoch,
        summary=lambda entry: f"train acc {entry['train_accuracy']:.4f}  val acc {entry['val_accuracy']:.4f}",
        plot=lambda history, path: plot_accuracy_curves(history, path, "CIFAR-10"),
        augment=random_hflips if options.hflip else None, epoch_start=loss_fn.start_epoch,
        watched="accuracy")
    history, stopper = fit(options, files, recipe, run_config, {"class_names": list(data.class_names)})
    return finish(model, data, history, max(stopper.best_epoch, 0), run_config, files)


def finish(model, data: CifarSplits, history, best_epoch, run_config, files) -> dict:
    """Score the kept model on validation and test; write the final metrics.json block."""
    val_logits = training.predict_logits(model, data.val_images, data.normalizer)
    test_logits = training.predict_logits(model, data.test_images, data.normalizer)
    final = {"best_epoch": best_epoch,
             "validation_accuracy": accuracy(val_logits, data.val_labels),
             "test_accuracy": accuracy(test_logits, data.test_labels),
             "test_per_class_accuracy": per_class_accuracy(np.argmax(test_logits, axis=1),
                                                           data.test_labels, data.class_names),
             "n_validation": len(data.val_labels), "n_test": len(data.test_labels)}
    training.write_metrics(files.metrics, history, final, run_config)
    print(f"best epoch {best_epoch}: validation accuracy {final['validation_accuracy']:.4f}")
    print(f"test accuracy {final['test_accuracy']:.4f} on {final['n_test']} images")
    return final
