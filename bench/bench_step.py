"""The whole binary network: one training step, and inference throughput.

A training step is zero_grad, forward, BCE, backward and an Adam step (lr
1e-3) of the binary network at batch 32, 128×128, float32. Inference is an
eval-mode forward of 128 images. Peers: glasscuda CPU and GPU, the NumPy
reference network (``bench/reference_model.py``), PyTorch CPU and CUDA when
installed. Every peer starts from the same parameters; before timing, each
one's loss and gradients (and inference logits) are checked against the
reference network.
"""
from __future__ import annotations

import numpy as np
import pytest

from glasscuda.export import torch_model
from glasscuda.losses import BCEWithLogitsLoss
from glasscuda.optim import Adam

from .common import (BATCH, IMAGE, IN_CHANNELS, INFERENCE_BATCH, NETWORK_PEERS, assert_close,
                     glasscuda_backend, glasscuda_detector, import_torch)
from .reference_model import ReferenceDetector, ReferenceTrainer

LR = 1e-3
LOSS_TOL = 1e-4
# Relative error allowed against the reference network (float64 accumulation).
# conv1's weight gradient sums 524,288 float32 terms that largely cancel:
# PyTorch's CPU backward lands 0.7% away from the reference there, and its
# CUDA convolutions may run in TF32. Any broken layer is off by far more.
TOLERANCE = {"cpu": 1e-3, "gpu": 1e-3, "torch": 2e-2, "torch-cuda": 5e-2}


class GlasscudaNetwork:
    """glasscuda's BinaryDetector, BCEWithLogitsLoss and Adam on the CPU or GPU backend."""

    def __init__(self, peer, params):
        self.backend = glasscuda_backend(peer)
        self.model = glasscuda_detector(self.backend, params)
        self.loss_fn = BCEWithLogitsLoss(device=self.backend)
        self.optimizer = Adam(self.model.parameters(), lr=LR)

    def device(self, array):
        return self.backend.asarray(array)

    def to_host(self, array) -> np.ndarray:
        return self.backend.to_numpy(array)

    def forward_backward(self, x, y) -> float:
        self.model.train()
        self.optimizer.zero_grad()
        loss = self.loss_fn.forward(self.model.forward(x), y)
        self.model.backward(self.loss_fn.backward(), need_input_grad=False)
        return loss

    def gradients(self, x, y):
        loss = self.forward_backward(x, y)
        return loss, [self.to_host(p.grad) for p in self.model.parameters()]

    def train_step(self, x, y) -> float:
        loss = self.forward_backward(x, y)
        self.optimizer.step()
        self.backend.synchronize()
        return loss

    def infer(self, x):
        self.model.eval()
        logits = self.model.forward(x)
        self.backend.synchronize()
        return logits


class TorchNetwork:
    """The same architecture in PyTorch, with nn.BCEWithLogitsLoss and torch.optim.Adam."""

    def __init__(self, peer, params):
        torch = self.torch = import_torch(peer)
        nn = torch.nn
        self.on_cuda = peer == "torch-cuda"
        self.target = torch.device("cuda" if self.on_cuda else "cpu")
        self.model = torch_model({"architecture": "binary", "in_channels": IN_CHANNELS, "image_size": IMAGE})
        own = list(self.model.parameters())
        assert [tuple(p.shape) for p in own] == [p.shape for p in params], "parameter shapes differ"
        with torch.no_grad():
            for p, value in zip(own, params):
                p.copy_(torch.from_numpy(value))
        self.model.to(self.target)
        self.loss_fn = nn.BCEWithLogitsLoss()
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=LR)

    def synchronize(self) -> None:
        if self.on_cuda:
            self.torch.cuda.synchronize()

    def device(self, array):
        return self.torch.from_numpy(array).to(self.target)

    def to_host(self, tensor) -> np.ndarray:
        return tensor.detach().cpu().numpy()

    def forward_backward(self, x, y):
        self.model.train()
        self.optimizer.zero_grad()
        loss = self.loss_fn(self.model(x), y)
        loss.backward()
        return loss

    def gradients(self, x, y):
        loss = self.forward_backward(x, y)
        return loss.item(), [self.to_host(p.grad) for p in self.model.parameters()]

    def train_step(self, x, y):
        loss = self.forward_backward(x, y)
        self.optimizer.step()
        self.synchronize()
        return loss

    def infer(self, x):
        self.model.eval()
        with self.torch.inference_mode():
            logits = self.model(x)
        self.synchronize()
        return logits


class ReferenceNetwork:
    """The NumPy reference network and its plain NumPy Adam (bench/reference_model.py)."""

    def __init__(self, peer, params):
        self.trainer = ReferenceTrainer(params, lr=LR)

    def device(self, array):
        return array

    def to_host(self, array) -> np.ndarray:
        return array

    def gradients(self, x, y):
        return self.trainer.model.loss_and_gradients(x, y)

    def train_step(self, x, y) -> float:
        return self.trainer.step(x, y)

    def infer(self, x):
        return self.trainer.model.forward(x, train=False)[0]


NETWORKS = {"cpu": GlasscudaNetwork, "gpu": GlasscudaNetwork, "reference": ReferenceNetwork,
            "torch": TorchNetwork, "torch-cuda": TorchNetwork}
peers = pytest.mark.parametrize("peer", NETWORK_PEERS)


@pytest.fixture(scope="session")
def reference_gradients(batch, initial_params):
    """(loss, gradients) of the reference network's first forward and backward."""
    return ReferenceDetector(initial_params).loss_and_gradients(*batch)


@pytest.fixture(scope="session")
def reference_logits(inference_batch, initial_params):
    return ReferenceDetector(initial_params).forward(inference_batch, train=False)[0]


def check_gradients(peer, loss, grads, request):
    """The first pass's loss and every gradient against the reference network's."""
    if peer == "reference":
        assert np.isfinite(loss) and all(np.isfinite(g).all() for g in grads)
        return
    ref_loss, ref_grads = request.getfixturevalue("reference_gradients")
    assert abs(loss - ref_loss) <= LOSS_TOL * abs(ref_loss), f"loss {loss} != reference {ref_loss}"
    assert len(grads) == len(ref_grads)
    for i, (g, ref) in enumerate(zip(grads, ref_grads)):
        assert_close(g, ref, TOLERANCE[peer], f"gradient of parameter {i}")


@peers
def test_training_step(benchmark, peer, batch, initial_params, request):
    network = NETWORKS[peer](peer, initial_params)
    x, y = (network.device(a) for a in batch)
    loss, grads = network.gradients(x, y)
    check_gradients(peer, float(loss), grads, request)
    benchmark.group = f"training step, batch {BATCH}, {IMAGE}×{IMAGE}"
    benchmark.extra_info["kind"] = "step"
    benchmark.extra_info["images"] = BATCH
    benchmark(network.train_step, x, y)


@peers
def test_inference(benchmark, peer, inference_batch, initial_params, request):
    network = NETWORKS[peer](peer, initial_params)
    x = network.device(inference_batch)
    logits = network.to_host(network.infer(x))
    if peer == "reference":
        assert np.isfinite(logits).all()
    else:
        assert_close(logits, request.getfixturevalue("reference_logits"), TOLERANCE[peer],
                     "inference logits")
    benchmark.group = f"inference, batch {INFERENCE_BATCH}, {IMAGE}×{IMAGE}"
    benchmark.extra_info["kind"] = "inference"
    benchmark.extra_info["images"] = INFERENCE_BATCH
    benchmark(network.infer, x)
