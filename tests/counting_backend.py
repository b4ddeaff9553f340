"""A backend that counts what a GPU would wait for: transfers, synchronisations and kernel launches.

Its arrays are :class:`DeviceArray` (a NumPy subclass standing for device
memory) and its array module is a proxy of NumPy that behaves as CuPy does
where it matters here:

* a plain NumPy array is host memory: the launcher refuses it, as the GPU
  launcher refuses NumPy arrays, and so do the proxy's functions (CuPy's do),
  except the conversions ``asarray``/``array``/``ascontiguousarray``, each of
  which counts one host-to-device copy;
* reading a device array on the host — ``Backend.to_numpy``, ``float()``,
  ``int()``, ``bool()``, ``.item()``, ``.tolist()`` — counts one
  device-to-host copy, and each of those waits for the device, as does
  ``Backend.synchronize``: both count as synchronisations;
* every launch of a hand-written kernel is counted by name; NumPy's own
  functions stand for the array library's device kernels (CuPy's) and are not.

The kernels run on the host over the emulated grid when the emulated backend
is wrapped, or on the CPU library otherwise.
"""
from __future__ import annotations

import types
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from glasscuda.backend import Backend


@dataclass
class Counts:
    h2d: int = 0
    d2h: int = 0
    syncs: int = 0
    launches: Counter = field(default_factory=Counter)

    def snapshot(self) -> dict:
        return {"h2d": self.h2d, "d2h": self.d2h, "syncs": self.syncs,
                "launches": sum(self.launches.values())}


COUNTS = Counts()


def _read(kind):
    COUNTS.d2h += 1
    COUNTS.syncs += 1


class DeviceArray(np.ndarray):
    """An array in the counting backend's 'device memory'."""

    def __float__(self):
        _read("float")
        return float(self.view(np.ndarray))

    def __int__(self):
        _read("int")
        return int(self.view(np.ndarray))

    def __bool__(self):
        _read("bool")
        return bool(self.view(np.ndarray))

    def __index__(self):
        _read("index")
        return self.view(np.ndarray).__index__()

    def item(self, *args):
        _read("item")
        return self.view(np.ndarray).item(*args)

    def tolist(self):
        _read("tolist")
        return self.view(np.ndarray).tolist()

    def __getitem__(self, key):
        result = super().__getitem__(key)
        # CuPy gives a 0-d device array where NumPy gives a host scalar.
        return result if isinstance(result, np.ndarray) else np.asarray(result).view(DeviceArray)


def on_device(array) -> DeviceArray:
    return array if isinstance(array, DeviceArray) else np.asarray(array).view(DeviceArray)


def _is_host(value) -> bool:
    return isinstance(value, np.ndarray) and not isinstance(value, DeviceArray)


def _to_device(result):
    if isinstance(result, np.ndarray):
        return result.view(DeviceArray) if not isinstance(result, DeviceArray) else result
    if isinstance(result, tuple):
        return tuple(_to_device(r) for r in result)
    if isinstance(result, np.generic):   # a reduction's scalar: CuPy keeps it on the device
        return np.asarray(result).view(DeviceArray)
    return result


CONVERSIONS = ("asarray", "array", "ascontiguousarray")


class DeviceNumpy(types.SimpleNamespace):
    """NumPy as a device array module: results on the device, host arrays refused (as CuPy does)."""

    ndarray = DeviceArray

    def __getattr__(self, name):
        attr = getattr(np, name)
        if name == "random":
            raise AttributeError("draw device random numbers through Backend.random_generator")
        if isinstance(attr, type) or not callable(attr):
            return attr

        def call(*args, **kwargs):
            if name in CONVERSIONS:
                if args and not isinstance(args[0], DeviceArray):
                    COUNTS.h2d += 1
            else:
                hosts = [a for a in list(args) + list(kwargs.values()) if _is_host(a)]
                if hosts:
                    raise TypeError(f"xp.{name} got a host (NumPy) array; move it to the device first")
            return _to_device(attr(*args, **kwargs))
        return call


class CountingGenerator:
    """A NumPy Generator whose draws land on the device (as CuPy's do)."""

    def __init__(self, generator: np.random.Generator):
        self.generator = generator

    def __getattr__(self, name):
        method = getattr(self.generator, name)
        return lambda *a, **k: _to_device(method(*a, **k))


class CountingLauncher:
    def __init__(self, inner):
        self.inner, self.name = inner, f"counting-{inner.name}"
        self.threads_per_block = getattr(inner, "threads_per_block", None)
        self.split_reductions = getattr(inner, "split_reductions", False)
        self.max_blocks = getattr(inner, "max_blocks", None)

    def __call__(self, kernel_name, **args):
        hosts = [k for k, v in args.items() if _is_host(v)]
        if hosts:
            raise ValueError(f"{kernel_name}: argument(s) {', '.join(hosts)} are host arrays; "
                             "the GPU launcher refuses those")
        COUNTS.launches[kernel_name] += 1
        self.inner(kernel_name, **{k: v.view(np.ndarray) if isinstance(v, DeviceArray) else v
                                   for k, v in args.items()})

    def synchronize(self):
        COUNTS.syncs += 1


class CountingBackend(Backend):
    """A :class:`~glasscuda.backend.Backend` that counts transfers, synchronisations and launches."""

    def __init__(self, inner: Backend):
        super().__init__(CountingLauncher(inner.launcher), DeviceNumpy())
        self.name = "counting"

    def asarray(self, array, dtype=None):
        if not isinstance(array, DeviceArray):
            COUNTS.h2d += 1
        return on_device(np.ascontiguousarray(np.asarray(array, dtype=dtype)))

    def to_numpy(self, array) -> np.ndarray:
        _read("to_numpy")
        return np.array(array, copy=True).view(np.ndarray)

    def random_generator(self, host_rng):
        return CountingGenerator(np.random.default_rng(int(host_rng.integers(2 ** 63))))
