"""A logistic regression on raw pixels: what the binary CNN has to beat.

``python -m bench.baseline [--data ROOT] [--img-size 128] [--seed 0]``

The same data, split and threshold rule as ``python -m glasscuda.train``
(default: the built-in synthetic set; stratified 80/20 split by seed; pixels
standardised with the training mean and std; threshold searched on
validation over 0.10…0.95; test scored only at it). The model is
scikit-learn's ``LogisticRegression`` with balanced class weights and L2
strength chosen on validation F1.
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from glasscuda.data import load_split, stratified_split, synthetic_dataset
from glasscuda.data.sampling import Normalizer
from glasscuda.metrics import precision_recall_f1, search_threshold

C_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.baseline", description=__doc__.split("\n\n")[1])
    parser.add_argument("--data", help="dataset root (default: the synthetic glass set)")
    parser.add_argument("--img-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = args.data or synthetic_dataset(progress=False)
    full = load_split(root, "train", image_size=args.img_size, progress=False)
    test = load_split(root, "test", image_size=args.img_size, progress=False)
    train_idx, val_idx = stratified_split(full.labels, val_fraction=0.2, seed=args.seed)
    train, val = full.subset(train_idx), full.subset(val_idx)
    normalizer = Normalizer.fit(train.images)

    def features(data):
        return normalizer(data.images, np.float64).reshape(len(data), -1)

    x_train, x_val, x_test = features(train), features(val), features(test)
    best = None
    for c in C_GRID:
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model = LogisticRegression(C=c, class_weight="balanced", max_iter=500).fit(
                x_train, train.is_defective)
        val_probs = model.predict_proba(x_val)[:, 1]
        search = search_threshold(val.is_defective, val_probs)
        val_f1 = precision_recall_f1(val.is_defective, val_probs >= search.threshold)["f1"]
        print(f"C={c:g}: validation F1 {val_f1:.3f} at threshold {search.threshold:.2f} "
              f"({time.perf_counter() - started:.0f}s)")
        if best is None or val_f1 > best[0]:
            best = (val_f1, c, search.threshold, model)
    val_f1, c, threshold, model = best
    test_scores = precision_recall_f1(test.is_defective, model.predict_proba(x_test)[:, 1] >= threshold)
    print(f"logistic regression on raw pixels (C={c:g}, threshold {threshold:.2f}): "
          f"validation F1 {val_f1:.3f}, test precision {test_scores['precision']:.3f} "
          f"recall {test_scores['recall']:.3f} F1 {test_scores['f1']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
