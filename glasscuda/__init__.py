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
__version__ = "0.1.0"
