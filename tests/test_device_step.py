"""A training step stays on the device: per step, one host-to-device copy, no read back, no sync.

The step runs on tests/counting_backend.py's backend, whose kernels are the
device code on the emulated grid and whose array module refuses host arrays
as CuPy does. Counts per step are the difference between an epoch of 8 and an
epoch of 4 batches (the per-epoch work — uploading the standardised training
set, reading the loss and the scores at the end — cancels out).
"""
from __future__ import annotations

import numpy as np
import pytest

from counting_backend import COUNTS, CountingBackend
from glasscuda import models, training
from glasscuda.data.augment import Augment
from glasscuda.data.sampling import Normalizer, random_flips_and_quarter_turns
from glasscuda.losses import BCEWithLogitsLoss, FocalLoss
from glasscuda.optim import Adam, AdamW

SIDE, BATCH = 32, 4

# The launches of one step, kernel by kernel (README, "A step on the device"): the binary network has
# 4 conv blocks and 2 Linear layers (conv1 needs no input gradient), the multi-label one 4 conv blocks,
# global average pooling and 1 Linear; each block's convolution and bias take one forward pass after
# the GEMM, and its ReLU runs inside the max-pool, forward and backward;
# each step has one augmentation launch or two, one loss, one Adam.
# conv1 (one input channel, 5x5) runs on the direct kernels: one forward launch, two for its gradients.
FIRST_CONV = {"conv_direct_forward": 1, "conv_direct_grad_partial": 1, "conv_direct_grad_reduce": 1}
BINARY_STEP = {"flip_rotate90": 1, "im2col": 3, "swap_outer_axes_bias": 3, "swap_outer_axes": 3, "bias_add": 2,
               "relu_forward": 1,
               "maxpool_forward": 4, "bias_grad_partial": 5, "bias_grad_reduce": 5, "col2im": 3,
               "maxpool_backward_disjoint": 4, "relu_backward": 1, "bce_with_logits": 1, "adam_update": 1,
               **FIRST_CONV}
MULTILABEL_STEP = {"flip_rotate90": 1, "rotate_bilinear": 1, "im2col": 3, "swap_outer_axes_bias": 3,
                   "swap_outer_axes": 3, "bias_add": 1, "maxpool_forward": 4, "global_avgpool_forward": 1, "bias_grad_partial": 4,
                   "bias_grad_reduce": 4, "col2im": 3, "maxpool_backward_disjoint": 4,
                   "global_avgpool_backward": 1, "focal_with_logits": 1, "adam_update": 1, **FIRST_CONV}


def binary(be):
    model = models.BinaryDetector(image_size=SIDE, seed=1).to(be)
    return model, BCEWithLogitsLoss(device=be), Adam(model.parameters()), random_flips_and_quarter_turns, 1


def multilabel(be):
    model = models.MultiLabelNet(image_size=SIDE, seed=1).to(be)
    loss = FocalLoss([1.0, 3.0, 3.0, 3.0], device=be)
    return model, loss, AdamW(model.parameters()), Augment(), 4


def epoch_counts(setup, be, n_batches):
    model, loss_fn, optimizer, augment, K = setup(be)
    rng = np.random.default_rng(0)
    images = rng.random((3 * BATCH, 1, SIDE, SIDE)).astype(np.float32)
    targets = (rng.random((3 * BATCH, K)) < 0.5).astype(np.float32)
    batches = [rng.choice(len(images), BATCH, replace=False) for _ in range(n_batches)]
    COUNTS.__init__()
    result = training.train_epoch(model, loss_fn, optimizer, images, targets, batches, Normalizer([0.5], [0.25]),
                                  rng, augment=augment, progress=False, read_every=10 ** 9)
    assert np.isfinite(result.loss) and result.scores.shape == (n_batches * BATCH, K)
    return COUNTS.snapshot(), dict(COUNTS.launches)


@pytest.mark.parametrize("setup,expected", [(binary, BINARY_STEP), (multilabel, MULTILABEL_STEP)],
                         ids=["binary", "multilabel"])
def test_a_training_step_copies_once_and_never_waits(emulated, setup, expected):
    be = CountingBackend(emulated)
    (short, short_launches), (long, long_launches) = epoch_counts(setup, be, 4), epoch_counts(setup, be, 8)
    per_step = {k: (long[k] - short[k]) / 4 for k in short}
    launches = {k: (long_launches.get(k, 0) - short_launches.get(k, 0)) / 4 for k in long_launches}
    assert per_step["h2d"] == 1, per_step          # the batch's indices
    assert per_step["d2h"] == 0 and per_step["syncs"] == 0, per_step
    assert {k: v for k, v in launches.items() if v} == expected
    assert short["d2h"] == long["d2h"] == 2        # the loss and flags, then the scores: at the epoch's end


def test_host_arrays_in_a_step_are_refused_as_the_gpu_refuses_them(emulated):
    be = CountingBackend(emulated)
    with pytest.raises(TypeError, match="host"):
        be.xp.maximum(np.zeros(3, np.float32), be.asarray(np.ones(3, np.float32)))
    with pytest.raises(ValueError, match="relu_forward: argument.*host"):
        be.launch("relu_forward", x=np.zeros(3, np.float32), y=be.xp.zeros(3, dtype=np.float32), n=3)


def test_reading_a_device_scalar_is_counted(emulated):
    be = CountingBackend(emulated)
    COUNTS.__init__()
    value = be.xp.ones(4, dtype=np.float32).sum()
    assert COUNTS.snapshot()["d2h"] == 0
    assert float(value) == 4.0 and COUNTS.snapshot()["d2h"] == 1 and COUNTS.snapshot()["syncs"] == 1
