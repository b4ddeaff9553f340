"""Job 2: multi-label defect typing (which defects: the dataset's classes, by default chipped edge, scratch, stain).

MultiLabelNet (the binary network's conv backbone, global average or max
pooling, one Linear to 1 + K logits: no_defect + one per defect class),
weighted focal loss, AdamW, cosine annealing with warm restarts stepped per
batch, the stronger augmentation of :class:`glasscuda.data.augment.Augment`,
test-time augmentation, and one threshold per class searched on validation.

Warm-up (the seed recipe's): the backbone is first trained for
``--warmup-epochs`` under the binary detector's dense head (one output per
class), then the pooled head takes over. Through global average pooling a
defect covering one of the 64 cells of a 128-pixel image moves the logit by
only 1/64 of its local evidence, so a pooled head on a random backbone learns
slowly; the dense head sees each cell with its own weights and learns the
defect types first, and the pooled head trained after it keeps the class
activation maps. The default recipe's batch norm and max-pooled head train
from the start without it.

Crops (``--crop N``): the images load at ``--img-size`` and each training
step sees a random N-pixel crop of each, labelled with the classes whose box
centre it holds (:class:`glasscuda.data.crops.BoxCrops`), so small defects keep
their pixels while a step costs what an N-pixel image costs; validation and
test score whole images.

Decision rule: :func:`glasscuda.glass.decide` (the defect classes that reach
their threshold, else "no_defect"). The no_defect column of the reported
metrics is this rule's, not its raw threshold's.
"""
from __future__ import annotations

import numpy as np

from .. import training
from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.crops import BoxCrops
from ..data.sampling import BalancedBatchSampler
from ..glass import NO_DEFECT, decide
from ..losses import FocalLoss, inverse_frequency_weights
from ..metrics import multilabel_report, search_thresholds_per_class
from ..models import MultiLabelNet
from ..optim import AdamW, CosineAnnealingWarmRestarts
from ..plots import plot_confusion_matrices
from ..reports import markdown_table, write_json_atomic
from .common import (AUGMENT_FLAGS, augmentation, dataset_files, describe, fmt, glass_recipe, load_glass_splits,
                     single_class_note)
from .loop import fit
from .options import MultilabelOptions, UsageError

RUN_KEYS = ("task", "recipe", "data", "synthetic_train", "img_size", "batch_size", "lr", "seed", "gamma",
            "class_weights", "weight_decay", "t0", "t_mult", "eta_min", "channels", "warmup_epochs", "tta", "head",
            "batchnorm", "crop")


def targets_of(dataset) -> np.ndarray:
    """[N, 1 + K] targets: no_defect, then one column per defect class."""
    return np.concatenate([(~dataset.is_defective)[:, None], dataset.labels], axis=1).astype(np.float32)


def report(truth, probs, thresholds, names) -> dict:
    result = multilabel_report(truth, decide(probs, thresholds), 0.5, names)
    result["thresholds"] = [float(t) for t in thresholds]
    for name, t in zip(names, thresholds):
        result["per_class"][name]["threshold"] = float(t)
    note = single_class_note(np.asarray(truth)[:, 1:].any(axis=1))
    if note:   # the pooled scores would be those of the one class present
        result.update(micro_precision=float("nan"), micro_recall=float("nan"), micro_f1=float("nan"),
                      macro_f1=float("nan"), undefined=note)
    return result


def training_crops(options, data, be):
    """``crop(x, rows, generator)`` cutting ``--crop`` pixel crops with their targets (no_defect first), or None."""
    if not options.crop:
        return None
    try:
        crops = BoxCrops(data.train, options.crop, be)
    except ValueError as error:
        raise UsageError(f"--crop {options.crop}: {error}") from None

    def crop(x, rows, generator):
        x, holds = crops(x, rows, generator)
        return x, be.xp.concatenate([1 - holds.max(axis=1, keepdims=True), holds], axis=1)
    return crop


def class_weights(options, sampler, targets, rng_seed) -> np.ndarray:
    """``--class-weights`` when given, else inverse frequency in the batches the model sees."""
    if options.class_weights:
        try:
            weights = np.array([float(v) for v in options.class_weights.split(",")])
        except ValueError:
            raise UsageError(f"--class-weights must be comma-separated numbers, got {options.class_weights!r}")
        if weights.size != targets.shape[1] or (weights < 0).any():
            raise UsageError(f"--class-weights needs {targets.shape[1]} non-negative numbers "
                             f"(no_defect, then each defect class), got {options.class_weights!r}")
        return weights
    seen = np.concatenate(sampler.epoch(np.random.default_rng(rng_seed)))
    return inverse_frequency_weights(targets[seen])


def warm_up(options, model, data, train_targets, sampler, loss_fn, augment, rng) -> list[dict]:
    """Train ``model``'s backbone under a dense head for ``--warmup-epochs``; returns their history.

    AdamW at the constant ``--lr``, the task's loss and augmentation; the
    dense head is dropped afterwards.
    """
    if options.warmup_epochs == 0:
        return []
    network = model.with_dense_head(seed=options.seed + 2)
    optimizer = AdamW(network.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    history = []
    for epoch in range(1, options.warmup_epochs + 1):
        result = training.train_epoch(
            network, loss_fn, optimizer, data.train.images, train_targets, sampler.epoch(rng),
            data.normalizer, rng, augment=augment, description=f"warm-up {epoch}/{options.warmup_epochs}",
            progress=options.progress)
        train_f1 = report(result.targets, result.scores, np.full(train_targets.shape[1], 0.5),
                          [str(k) for k in range(train_targets.shape[1])])["micro_f1"]
        history.append({"epoch": epoch, "train_loss": result.loss, "train_micro_f1": train_f1,
                        "seconds": result.seconds})
        print(f"warm-up {epoch:3d}  loss {result.loss:.4f}  train micro-F1 {fmt(train_f1)}  "
              f"{result.seconds:.0f}s", flush=True)
    return history


def resumed_warmup_history(files) -> list[dict]:
    """The warm-up history kept in the checkpoint a resumed run continues from (the backbone is in its weights)."""
    if not files.last.exists():
        return []
    return load_checkpoint(files.last).header.get("warmup", [])


def table_rows(result) -> list[dict]:
    return [{"class": name, "precision": m["precision"], "recall": m["recall"], "f1": m["f1"],
             "support": m["support"], "threshold": m["threshold"]}
            for name, m in result["per_class"].items()]


def run(options: MultilabelOptions, be, files) -> dict:
    run_config = {k: getattr(options, k) for k in RUN_KEYS}
    augment = augmentation(options)
    run_config["augment"] = {field: getattr(augment, field) for field in AUGMENT_FLAGS.values()}
    data = load_glass_splits(options, channels=options.channels, class_names=options.classes)
    print(f"{describe('train', data.train)}, {describe('validation', data.val)}, "
          f"{describe('test', data.test)} from {data.root}")
    run_config["classes"] = list(data.train.class_names)   # so that --resume refuses other classes
    names = [NO_DEFECT, *data.train.class_names]
    model = MultiLabelNet(in_channels=options.channels, n_classes=len(names), image_size=options.img_size,
                          head=options.head, batchnorm=options.batchnorm, seed=options.seed).to(be)
    sampler = BalancedBatchSampler(data.train.is_defective, options.batch_size)
    train_targets = targets_of(data.train)
    weights = class_weights(options, sampler, train_targets, options.seed + 1)
    print("focal loss: gamma", options.gamma, "class weights",
          ", ".join(f"{n} {w:.2f}" for n, w in zip(names, weights)))
    loss_fn = FocalLoss(weights, gamma=options.gamma, device=be)
    if options.resume:
        warmup_history = resumed_warmup_history(files)
    else:
        warmup_history = warm_up(options, model, data, train_targets, sampler, loss_fn, augment,
                                 np.random.default_rng([options.seed, 1]))
    optimizer = AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    scheduler = CosineAnnealingWarmRestarts(optimizer, T_0=options.t0, T_mult=options.t_mult,
                                            eta_min=options.eta_min)
    val_truth = targets_of(data.val)

    def validate(probs, targets=None, fixed_threshold=None):
        truth = val_truth if targets is None else targets
        thresholds = (np.full(len(names), fixed_threshold) if fixed_threshold is not None
                      else search_thresholds_per_class(truth, probs))
        result = report(truth, probs, thresholds, names)
        metrics = {"precision": result["micro_precision"], "recall": result["micro_recall"],
                   "f1": result["micro_f1"], "macro_f1": result["macro_f1"]}
        return metrics, result["micro_f1"]

    recipe = glass_recipe(
        "multilabel", data, validate, tta=options.tta, model=model, loss_fn=loss_fn,
        optimizer=optimizer, scheduler=scheduler, sampler=sampler, train_targets=train_targets,
        augment=augment, crop=training_crops(options, data, be), batch_step=scheduler.step)
    header = {"class_names": names, "class_weights": weights.tolist(), "gamma": options.gamma,
              "warmup": warmup_history}
    history, stopper = fit(options, files, recipe, run_config, header, dataset_files(data))

    val_probs, test_probs = (training.probabilities(training.predict_logits(
        model, split.images, data.normalizer, tta=options.tta, progress=options.progress,
        description=f"scoring {name}")) for name, split in (("validation", data.val), ("test", data.test)))
    thresholds = search_thresholds_per_class(val_truth, val_probs)
    val = report(val_truth, val_probs, thresholds, names)
    test = report(targets_of(data.test), test_probs, thresholds, names)
    final = {"best_epoch": stopper.best_epoch, "thresholds": dict(zip(names, thresholds.tolist())),
             "tta": options.tta, "warmup": warmup_history, "validation": val, "test": test}
    training.write_metrics(files.metrics, history, final, run_config)
    write_json_atomic(files.thresholds, dict(zip(names, thresholds.tolist())))
    plot_confusion_matrices(test, files.out / "confusion_matrices.png", title="test split")
    save_checkpoint(files.best, model, {"task": "multilabel", "run": run_config, "epoch": stopper.best_epoch,
                                        "normalization": data.normalizer.to_dict(),
                                        "thresholds": thresholds.tolist(), "tta": options.tta, **header})
    for split, result in (("validation", val), ("test", test)):
        note = f"  ({result['undefined']})" if result.get("undefined") else ""
        print(f"\n{split}: micro-F1 {fmt(result['micro_f1'])}  macro-F1 {fmt(result['macro_f1'])}{note}")
        print(markdown_table(table_rows(result)))
        for name, matrix in result["confusion_matrices"].items():
            (tn, fp), (fn, tp) = matrix
            print(f"  {name:>13}: tn {tn:5d}  fp {fp:4d}  fn {fn:4d}  tp {tp:4d}")
    return final
