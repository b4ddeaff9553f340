"""Module and Parameter: what every layer and model shares.

A module owns parameters (``.data`` and ``.grad`` arrays on its backend), has
an explicit ``forward(x)`` and ``backward(grad_out) -> grad_in``, and moves
between devices and precisions with ``to``. Gradients accumulate into
``.grad`` across backward calls, as in PyTorch; ``zero_grad`` clears them.
Buffers are state that is saved but not learned (batch norm's running
statistics), under the same names as PyTorch's, so state dicts load both ways.
"""
from __future__ import annotations

import contextlib

import numpy as np

from ..backend import Backend, get_backend


class Parameter:
    """A learnable array and its gradient, both on the owning module's backend."""

    def __init__(self, data, backend: Backend):
        self.backend = backend
        self.data = backend.asarray(data)
        self.grad = backend.xp.zeros_like(self.data)

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter(shape={tuple(self.shape)}, dtype={self.data.dtype}, device={self.backend.name})"


class Module:
    """Base class of layers and models.

    Subclasses set ``self._params`` (name -> Parameter), ``self._buffers``
    (name -> array: real arrays live on the module's backend in its precision
    and move with it; integer arrays, such as counters, stay NumPy arrays on the
    host) and/or ``self._children`` (name -> Module), and implement
    ``forward``/``backward``.
    """

    def __init__(self):
        self.backend = get_backend("cpu")
        self.dtype = np.dtype(np.float32)
        self.training = True
        self._params: dict[str, Parameter] = {}
        self._buffers: dict = {}
        self._children: dict[str, Module] = {}
        self._cache = None

    # Calling -----------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} must implement forward")

    def backward(self, grad_out, need_input_grad: bool = True):
        raise NotImplementedError(f"{type(self).__name__} must implement backward")

    def __call__(self, x):
        return self.forward(x)

    def _input(self, x):
        """``x`` as a contiguous array of this module's backend and precision."""
        if not isinstance(x, self.backend.xp.ndarray):
            raise TypeError(f"{type(self).__name__} is on {self.backend.name}; got a "
                            f"{type(x).__module__}.{type(x).__name__} input — move it with "
                            "backend.asarray or call model.to(...) first")
        if x.dtype != self.dtype:
            raise TypeError(f"{type(self).__name__} holds {self.dtype} parameters; got {x.dtype} input")
        return self.backend.xp.ascontiguousarray(x)

    # Parameters --------------------------------------------------------------
    def named_parameters(self, prefix: str = ""):
        for name, param in self._params.items():
            yield prefix + name, param
        for child_name, child in self._children.items():
            yield from child.named_parameters(f"{prefix}{child_name}.")

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = ""):
        for name, buffer in self._buffers.items():
            yield prefix + name, buffer
        for child_name, child in self._children.items():
            yield from child.named_buffers(f"{prefix}{child_name}.")

    def _named_state(self, prefix: str = ""):
        """(name, Parameter or buffer) in PyTorch's state-dict order: own parameters, own buffers, children."""
        for name, param in self._params.items():
            yield prefix + name, param
        for name, buffer in self._buffers.items():
            yield prefix + name, buffer
        for child_name, child in self._children.items():
            yield from child._named_state(f"{prefix}{child_name}.")

    def modules(self):
        yield self
        for child in self._children.values():
            yield from child.modules()

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad.fill(0)

    # Modes, devices, precisions ------------------------------------------------
    def train(self, mode: bool = True):
        for m in self.modules():
            m.training = mode
        return self

    def eval(self):
        return self.train(False)

    @contextlib.contextmanager
    def evaluating(self):
        """Evaluation mode inside the block; the mode the module was in is restored after it."""
        was_training = self.training
        self.eval()
        try:
            yield self
        finally:
            self.train(was_training)

    def to(self, device=None, dtype=None):
        """Move parameters to ``device`` ("cpu", "gpu", "auto" or a Backend) and/or cast to ``dtype``."""
        backend = self.backend if device is None else get_backend(device)
        dtype = self.dtype if dtype is None else np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"parameters must be float32 or float64, got {dtype}")
        for m in self.modules():
            for param in m._params.values():
                host = param.backend.to_numpy(param.data).astype(dtype)
                param.backend = backend
                param.data = backend.asarray(host)
                param.grad = backend.xp.zeros_like(param.data)
            for name, buffer in m._buffers.items():
                if buffer.dtype.kind == "f":
                    m._buffers[name] = backend.asarray(m._host(buffer).astype(dtype))
            m.backend, m.dtype = backend, dtype
            m._clear_cache()
        return self

    def _keep(self, value) -> None:
        """Keep what backward will need, in training mode only."""
        self._cache = value if self.training else None

    def _take(self):
        """What forward kept; it is used once, then forgotten."""
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called without a forward pass in "
                               "training mode (call model.train() before forward)")
        value, self._cache = self._cache, None
        return value

    def _clear_cache(self) -> None:
        self._cache = None

    # State -------------------------------------------------------------------
    def _host(self, buffer) -> np.ndarray:
        return buffer if isinstance(buffer, np.ndarray) else self.backend.to_numpy(buffer)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters and buffers as NumPy arrays (copies), keyed by dotted name."""
        return {name: np.array(value.backend.to_numpy(value.data) if isinstance(value, Parameter)
                               else self._host(value), copy=True)
                for name, value in self._named_state()}

    def load_state_dict(self, state: dict) -> None:
        """Copy arrays into the parameters and buffers; names and shapes must match exactly."""
        own = dict(self._named_state())
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        if missing or unexpected:
            raise KeyError(f"state dict does not match {type(self).__name__}: "
                           f"missing {missing or 'nothing'}, unexpected {unexpected or 'nothing'}")
        for name, param in own.items():
            value = np.asarray(state[name])
            if value.shape != tuple(param.shape):
                raise ValueError(f"state dict entry {name!r} has shape {value.shape}, "
                                 f"the model expects {tuple(param.shape)}")
        for name, target in own.items():
            if isinstance(target, Parameter):
                target.data[...] = target.backend.asarray(np.asarray(state[name], dtype=target.data.dtype))
            elif isinstance(target, np.ndarray):
                target[...] = np.asarray(state[name], dtype=target.dtype)
            else:
                target[...] = self.backend.asarray(np.asarray(state[name], dtype=target.dtype))

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, child in self._children.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)
