"""--device auto / gpu: the GPU only after a probe kernel and GEMM run right; otherwise one line says why."""
from __future__ import annotations

import pytest

import glasscuda.backend as backend_module
from glasscuda.backend import gpu as gpu_module


@pytest.fixture
def fresh_selection(monkeypatch):
    """Forget earlier probes and backends for the test's duration."""
    monkeypatch.setattr(backend_module, "_probe", None)
    monkeypatch.setattr(backend_module, "_told_why", [])
    monkeypatch.setattr(backend_module, "_backends", {})


def no_cupy(*args, **kwargs):
    raise RuntimeError('the GPU backend needs CuPy, which does not import (No module named \'cupy\'); '
                       'install it with `pip install -e ".[gpu]"` on a machine with an NVIDIA driver')


def test_auto_runs_on_the_cpu_after_one_line_saying_why(fresh_selection, monkeypatch, capsys):
    monkeypatch.setattr(gpu_module, "import_cupy", no_cupy)
    assert backend_module.get_backend("auto").name == "cpu"
    assert backend_module.get_backend("auto").name == "cpu"
    err = capsys.readouterr().err.splitlines()
    assert err == ["device auto: running on the CPU (the GPU backend needs CuPy, which does not import "
                   "(No module named 'cupy'); install it with `pip install -e \".[gpu]\"` on a machine "
                   "with an NVIDIA driver)"]


def test_gpu_names_the_missing_piece_and_the_install_command(fresh_selection, monkeypatch):
    monkeypatch.setattr(gpu_module, "import_cupy", no_cupy)
    with pytest.raises(RuntimeError, match=r'^no usable GPU: the GPU backend needs CuPy.*pip install -e "\.\[gpu\]"'):
        backend_module.get_backend("gpu")


def test_a_gpu_whose_probe_kernel_fails_is_not_used(fresh_selection, monkeypatch, capsys):
    class BrokenLauncher:
        def __init__(self):
            raise RuntimeError("relu_forward_f32: kernels/activation.cu (float) compiled, but the device "
                               "would not load it: CUDA_ERROR_NO_BINARY_FOR_GPU")
    monkeypatch.setattr(gpu_module, "GpuLauncher", BrokenLauncher)
    assert backend_module.get_backend("auto").name == "cpu"
    assert "CUDA_ERROR_NO_BINARY_FOR_GPU" in capsys.readouterr().err
    assert not backend_module.gpu_available()


def test_without_a_driver_the_message_says_so(fresh_selection):
    """This machine's case when CuPy is installed: no device answers."""
    pytest.importorskip("cupy")
    reason = backend_module.probe_gpu()[1]
    if backend_module.gpu_available():
        pytest.skip("a GPU answers here")
    assert "no CUDA device answers" in reason and "nvidia-smi" in reason
