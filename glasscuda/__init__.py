"""glasscuda — from-scratch CNNs for glass defect inspection on hand-written CUDA kernels.

Layers of the package, bottom up:

* ``kernels/`` (CUDA C, one source for GPU and CPU) and :mod:`glasscuda.backend`
  (array module + launcher for each target);
* :mod:`glasscuda.ops` (convolution, pooling, losses, optimizer update over the
  kernels) and :mod:`glasscuda.reference` (their float64 NumPy oracles);
* :mod:`glasscuda.nn` (layers) and :mod:`glasscuda.models` (the two networks);
* :mod:`glasscuda.losses`, :mod:`glasscuda.optim`, :mod:`glasscuda.data`,
  :mod:`glasscuda.metrics`, :mod:`glasscuda.calibration`, :mod:`glasscuda.checkpoint`;
* the command lines ``python -m glasscuda.train``, ``.predict``, ``.evaluate``.
"""
import os

# OpenBLAS's worker threads spin for a while after each GEMM (2^n cycles, OPENBLAS_THREAD_TIMEOUT=n,
# 4 <= n <= 30) before they sleep, holding the cores that the OpenMP kernel launched next needs, as
# the OpenMP workers would hold them from the next GEMM if they spun (glasscuda.backend.cpu sets
# OMP_WAIT_POLICY=PASSIVE). OpenBLAS reads it once, when NumPy loads it: it takes effect where
# glasscuda is imported before NumPy (the command lines are), and only where the user chose nothing.
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

__version__ = "0.1.0"
