"""Job 1: the binary defect detector (is anything wrong with this glass?).

BinaryDetector + BCE (probability clamped) + Adam, ReduceLROnPlateau on
validation F1, early stopping, balanced batches with random flips and quarter
turns on the device, a decision threshold searched on validation, and the test
split scored only at that threshold.
"""
from __future__ import annotations

import numpy as np

from .. import training
from ..checkpoint import load_checkpoint, save_checkpoint
from ..data.sampling import BalancedBatchSampler, random_flips_and_quarter_turns
from ..losses import BCEWithLogitsLoss
from ..metrics import precision_recall_f1, search_threshold
from ..models import BinaryDetector
from ..optim import Adam, EarlyStopping, ReduceLROnPlateau
from ..reports import write_json_atomic
from .common import describe, fmt, load_glass_splits, resume_state

RUN_KEYS = ("task", "data", "img_size", "batch_size", "lr", "seed", "epochs")


def score(y_true, probs, threshold=None) -> dict:
    """P/R/F1 at ``threshold``, or at the best threshold searched on these scores."""
    if threshold is None:
        search = search_threshold(y_true, probs)
        threshold = search.threshold
    if threshold is None or np.isnan(threshold):
        metrics = precision_recall_f1(y_true, np.zeros_like(y_true))
        metrics["threshold"] = None
        return metrics
    metrics = precision_recall_f1(y_true, (probs >= threshold).astype(int))
    metrics["threshold"] = float(threshold)
    return metrics


def run(args, be, files) -> dict:
    run_config = {k: getattr(args, k) for k in RUN_KEYS}
    data = load_glass_splits(args)
    print(f"{describe('train', data.train)}, {describe('validation', data.val)}, "
          f"{describe('test', data.test)} from {data.root}")
    model = BinaryDetector(in_channels=1, image_size=args.img_size, seed=args.seed).to(be)
    loss_fn = BCEWithLogitsLoss(device=be)
    optimizer = Adam(model.parameters(), lr=args.lr)
    scheduler = ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=3)
    stopper = EarlyStopping(patience=8, mode="max")
    sampler = BalancedBatchSampler(data.train.is_defective, args.batch_size)
    y_train = data.train.is_defective.astype(np.float32)[:, None]
    y_val = data.val.is_defective.astype(int)
    rng = np.random.default_rng(args.seed)
    history, best_state, start_epoch = [], None, 0

    checkpoint = resume_state(args, files, run_config)
    if checkpoint is not None:
        model.load_state_dict(checkpoint.model_state)
        optimizer.load_state_dict(checkpoint.optimizer_state)
        scheduler.load_state_dict(checkpoint.header["scheduler"])
        stopper.load_state_dict(checkpoint.header["early_stopping"])
        history = checkpoint.header["history"]
        rng = training.rng_from_state(checkpoint.header["rng"])
        start_epoch = checkpoint.header["epoch"]
        best_state = load_best_state(files, model)
        print(f"resuming from {files.last} after epoch {start_epoch}")

    def header(epoch, threshold=None):
        return {"task": "binary", "run": run_config, "epoch": epoch, "class_names": ["defect"],
                "normalization": data.normalizer.to_dict(), "threshold": threshold,
                "scheduler": scheduler.state_dict(), "early_stopping": stopper.state_dict(),
                "history": history, "rng": training.rng_state(rng)}

    for epoch in range(start_epoch + 1, args.epochs + 1):
        if stopper.should_stop:
            break
        result = training.train_epoch(
            model, loss_fn, optimizer, data.train.images, y_train, sampler.epoch(rng),
            data.normalizer, rng, augment=random_flips_and_quarter_turns,
            description=f"epoch {epoch}/{args.epochs}", progress=not args.no_progress)
        train_metrics = score(result.targets[:, 0].astype(int), result.scores[:, 0], 0.5)
        val_probs = training.probabilities(training.predict_logits(
            model, data.val.images, data.normalizer))[:, 0]
        val_metrics = score(y_val, val_probs)
        val_f1 = val_metrics["f1"]
        entry = {"epoch": epoch, "train_loss": result.loss, "lr": optimizer.lr,
                 "seconds": result.seconds,
                 **{f"train_{k}": train_metrics[k] for k in ("precision", "recall", "f1")},
                 **{f"val_{k}": val_metrics[k] for k in ("precision", "recall", "f1", "threshold")}}
        history.append(entry)
        improved = stopper.step(-1.0 if np.isnan(val_f1) else val_f1, epoch)
        scheduler.step(val_f1)
        print(f"epoch {epoch:3d}  loss {result.loss:.4f}  train F1 {fmt(train_metrics['f1'])}  "
              f"val P {fmt(val_metrics['precision'])} R {fmt(val_metrics['recall'])} "
              f"F1 {fmt(val_f1)} @ {fmt(val_metrics['threshold'], '.2f')}  lr {entry['lr']:.2e}  "
              f"{result.seconds:.1f}s{'  *best*' if improved else ''}", flush=True)
        if improved:
            best_state = model.state_dict()
            save_checkpoint(files.best, model, header(epoch, val_metrics["threshold"]))
        save_checkpoint(files.last, model, header(epoch), optimizer)
        training.write_metrics(files.metrics, history, None, run_config)
        training.plot_curves(history, files.curves, "binary defect detector")

    if best_state is None:
        best_state = model.state_dict()
    model.load_state_dict(best_state)
    return finish(args, model, data, history, run_config, files, stopper)


def load_best_state(files, model):
    return load_checkpoint(files.best).model_state if files.best.exists() else None


def finish(args, model, data, history, run_config, files, stopper) -> dict:
    """Search the threshold on validation, score test at it, write the final artifacts."""
    val_probs = training.probabilities(training.predict_logits(model, data.val.images, data.normalizer))[:, 0]
    test_probs = training.probabilities(training.predict_logits(model, data.test.images, data.normalizer))[:, 0]
    y_val, y_test = data.val.is_defective.astype(int), data.test.is_defective.astype(int)
    search = search_threshold(y_val, val_probs)
    threshold = None if np.isnan(search.threshold) else search.threshold
    val = score(y_val, val_probs, threshold if threshold is not None else 0.5)
    test = score(y_test, test_probs, threshold if threshold is not None else 0.5)
    final = {"best_epoch": stopper.best_epoch, "threshold": threshold,
             "pr_optimum_threshold": search.pr_optimum_threshold, "pr_optimum_f1": search.pr_optimum_f1,
             "threshold_table": search.table, "validation": val, "test": test}
    if search.undefined:
        final["note"] = f"validation: {search.undefined}; threshold left at 0.5"
    training.write_metrics(files.metrics, history, final, run_config)
    write_json_atomic(files.thresholds, {"defect": threshold, "grid": [0.10, 0.95],
                                         "pr_optimum": search.pr_optimum_threshold})
    if history:
        training.plot_curves(history, files.curves, "binary defect detector")
    # The best checkpoint carries the threshold chosen on validation.
    best_header = load_checkpoint(files.best).header if files.best.exists() else {}
    header = {k: v for k, v in best_header.items() if k not in ("format_version", "model", "versions")}
    header.update({"task": "binary", "threshold": threshold, "class_names": ["defect"],
                   "normalization": data.normalizer.to_dict()})
    save_checkpoint(files.best, model, header)
    print(f"best epoch {stopper.best_epoch}: threshold {fmt(threshold, '.2f')} "
          f"(exact PR optimum {fmt(search.pr_optimum_threshold, '.3f')})")
    for name, m in (("validation", val), ("test", test)):
        note = f"  ({m['undefined']})" if m.get("undefined") else ""
        print(f"{name:>10}: precision {fmt(m['precision'])}  recall {fmt(m['recall'])}  "
              f"F1 {fmt(m['f1'])}{note}")
    return final
