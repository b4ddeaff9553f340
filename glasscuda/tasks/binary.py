"""Job 1: the binary defect detector (is anything wrong with this glass?).

The seed recipe: BinaryDetector + BCE (probability clamped) + Adam,
ReduceLROnPlateau on validation F1 (patience 3, factor 0.5), early stopping
(patience 8), balanced batches with random flips and quarter turns on the
device, a decision threshold searched on validation, and the test split
scored only at that threshold. The other flags (their values per
``--recipe`` in :mod:`glasscuda.tasks.recipes`) add batch norm, an average-
or max-pooled head, a wider backbone, AdamW, a warm-up + cosine schedule, a
moving average of the weights, more augmentation, flip TTA and the
prevalence threshold rule.
"""
from __future__ import annotations

import numpy as np

from .. import training
from ..checkpoint import save_checkpoint
from ..data.sampling import BalancedBatchSampler, random_flips_and_quarter_turns
from ..losses import BCEWithLogitsLoss
from ..metrics import auc_pr, precision_recall_f1, search_threshold
from ..models import BinaryDetector
from ..plots import plot_training_curves
from ..optim import Adam, AdamW, ReduceLROnPlateau, WarmupCosine, WeightAverage
from ..reports import write_json_atomic
from .common import (AUGMENT_FLAGS, augmentation, dataset_files, describe, fmt, glass_recipe, load_glass_splits,
                     single_class_note)
from .loop import fit
from .options import BinaryOptions

RUN_KEYS = ("task", "recipe", "data", "synthetic_train", "img_size", "batch_size", "lr", "seed", "weight_decay",
            "head", "batchnorm", "width", "schedule", "lr_warmup", "ema", "tta", "threshold_rule", *AUGMENT_FLAGS)


def score(y_true, probs, threshold=None) -> dict:
    """P/R/F1 at ``threshold``, or at the best grid threshold searched on these scores."""
    y_true = np.asarray(y_true).reshape(-1).astype(int)
    probs = np.asarray(probs).reshape(-1)
    note = single_class_note(y_true)
    if threshold is None:   # a search on one class only would pick a meaningless threshold
        threshold = 0.5 if note else search_threshold(y_true, probs).threshold
    if threshold is None or np.isnan(threshold):
        metrics = precision_recall_f1(y_true, np.zeros_like(y_true))
        metrics["threshold"] = None
        return metrics
    metrics = precision_recall_f1(y_true, (probs >= threshold).astype(int))
    metrics["threshold"] = float(threshold)
    if note:
        metrics.update(f1=float("nan"), undefined=note)
        if y_true.all():
            metrics["precision"] = float("nan")
    return metrics


def train_augmentation(options: BinaryOptions):
    """Random flips and quarter turns, then the ``--aug-*`` steps when any has a probability."""
    extra = augmentation(options)
    if not any(getattr(options, flag) for flag in AUGMENT_FLAGS):
        return random_flips_and_quarter_turns

    def augment(be, x, generator):
        return extra(be, random_flips_and_quarter_turns(be, x, generator), generator)
    return augment


def run(options: BinaryOptions, be, files) -> dict:
    run_config = {k: getattr(options, k) for k in RUN_KEYS}
    # A cosine schedule spans the run's epochs, so --resume must keep them (a plateau schedule need not).
    run_config["cosine_epochs"] = options.epochs if options.schedule == "cosine" else None
    data = load_glass_splits(options, class_names=options.classes)
    print(f"{describe('train', data.train)}, {describe('validation', data.val)}, "
          f"{describe('test', data.test)} from {data.root}")
    model = BinaryDetector(in_channels=1, image_size=options.img_size, head=options.head,
                           batchnorm=options.batchnorm, width=options.width, seed=options.seed).to(be)
    if options.weight_decay:
        optimizer = AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    else:
        optimizer = Adam(model.parameters(), lr=options.lr)
    if options.schedule == "cosine":   # the schedule sets the run's length: no early stopping
        scheduler = WarmupCosine(optimizer, total=options.epochs, warmup=options.lr_warmup)
        hooks = {"batch_step": scheduler.step, "patience": None}
    else:
        scheduler = ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3)
        hooks = {"epoch_end": scheduler.step}
    y_val = data.val.is_defective

    def validate(probs, targets=None, fixed_threshold=None):
        truth = y_val if targets is None else targets
        metrics = score(truth, probs, fixed_threshold)
        return ({k: metrics[k] for k in ("precision", "recall", "f1", "threshold")},
                metrics["f1"])

    recipe = glass_recipe(
        "binary", data, validate, tta=options.tta, model=model, loss_fn=BCEWithLogitsLoss(device=be),
        optimizer=optimizer, scheduler=scheduler,
        sampler=BalancedBatchSampler(data.train.is_defective, options.batch_size),
        train_targets=data.train.is_defective.astype(np.float32)[:, None], augment=train_augmentation(options),
        average=WeightAverage(optimizer, options.ema) if options.ema else None, **hooks)
    header = {"class_names": ["defect"], "tta": options.tta}
    history, stopper = fit(options, files, recipe, run_config, header, dataset_files(data))
    return finish(model, data, history, run_config, files, stopper, header, threshold_rule=options.threshold_rule,
                  progress=options.progress)


def prevalence_threshold(probs, prevalence: float) -> float:
    """The score at which the detector flags ``prevalence`` of the images ``probs`` were scored on.

    The k-th highest score, k = round(prevalence * N) (at least 1): a
    threshold that depends on the ranking only, not on where a small
    validation set's F1 curve happens to peak.
    """
    ranked = np.sort(np.asarray(probs, dtype=np.float64).reshape(-1))[::-1]
    k = min(max(1, int(round(prevalence * ranked.size))), ranked.size)
    return float(ranked[k - 1])


def finish(model, data, history, run_config, files, stopper, header, *, threshold_rule: str = "f1",
           progress: bool = False) -> dict:
    """Choose the threshold on validation, score test at it, write the final artifacts.

    ``threshold_rule``: "f1", the threshold of the best validation F1; "prevalence",
    the one at which the detector flags the training set's fraction of
    defective images on validation (:func:`prevalence_threshold`).
    """
    val_probs, test_probs = (training.probabilities(training.predict_logits(
        model, split.images, data.normalizer, tta=header.get("tta", False), progress=progress,
        description=f"scoring {name}"))[:, 0]
        for name, split in (("validation", data.val), ("test", data.test)))
    search = search_threshold(data.val.is_defective, val_probs)
    val_note = single_class_note(data.val.is_defective)
    threshold = None if val_note or np.isnan(search.threshold) else search.threshold
    if threshold is not None and threshold_rule == "prevalence":
        threshold = prevalence_threshold(val_probs, float(np.mean(data.train.is_defective)))
    used = threshold if threshold is not None else 0.5
    val, test = score(data.val.is_defective, val_probs, used), score(data.test.is_defective, test_probs, used)
    for metrics, split, probs in ((val, data.val, val_probs), (test, data.test, test_probs)):
        metrics["auc_pr"] = auc_pr(split.is_defective, probs)
    final = {"best_epoch": stopper.best_epoch, "threshold": threshold, "threshold_rule": threshold_rule,
             "pr_optimum_threshold": search.pr_optimum_threshold, "pr_optimum_f1": search.pr_optimum_f1,
             "threshold_table": search.table, "validation": val, "test": test}
    if val_note or search.undefined:
        final["note"] = f"validation: {val_note or search.undefined}; threshold left at 0.5"
    training.write_metrics(files.metrics, history, final, run_config)
    write_json_atomic(files.thresholds, {"defect": threshold, "pr_optimum": search.pr_optimum_threshold})
    if history:
        plot_training_curves(history, files.curves, "binary defect detector")
    save_checkpoint(files.best, model, {"task": "binary", "run": run_config, "epoch": stopper.best_epoch,
                                        "normalization": data.normalizer.to_dict(),
                                        "threshold": threshold, **header})
    print(f"best epoch {stopper.best_epoch}: threshold {fmt(threshold, '.2f')} "
          f"(exact PR optimum {fmt(search.pr_optimum_threshold, '.3f')})")
    for name, m in (("validation", val), ("test", test)):
        note = f"  ({m['undefined']})" if m.get("undefined") else ""
        print(f"{name:>10}: precision {fmt(m['precision'])}  recall {fmt(m['recall'])}  "
              f"F1 {fmt(m['f1'])}  AUC-PR {fmt(m['auc_pr'])}{note}")
    return final
