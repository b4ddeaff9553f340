"""pytest configuration of the benchmark suite.

* Collects ``bench_*.py`` files in this folder (the default ``python -m pytest``
  never visits it: the project's ``testpaths`` is ``tests``).
* ``--peer NAME`` (repeatable, or comma-separated) keeps only that peer's rows:
  cpu, reference, torch, gpu, torch-cuda. ``bench/report.py`` runs one pytest
  process per peer library so that no two thread pools share the cores.
* Adds ``blas`` to the benchmark JSON's ``machine_info``: the BLAS and OpenMP
  libraries this process ran, read when the JSON is written (after the
  benchmarks), for the report's BLAS table.

Fixtures
    batch             a standardised-looking input batch [32, 1, 128, 128] and its targets
    inference_batch   128 images for the inference benchmarks
    initial_params    the network's initial parameters, shared by every peer
"""
from __future__ import annotations

import glasscuda  # noqa: F401  (before NumPy, as the command lines: its OpenBLAS thread default applies then)
import numpy as np
import pytest

from .common import BATCH, IMAGE, IN_CHANNELS, INFERENCE_BATCH, PEERS, blas_info
from .reference_model import initial_parameters


def pytest_addoption(parser):
    parser.getgroup("glasscuda benchmarks").addoption(
        "--peer", action="append", default=[], metavar="NAME",
        help=f"run only these peers' rows ({', '.join(PEERS)}); repeatable or comma-separated")


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["blas"] = blas_info()


def pytest_collect_file(file_path, parent):
    """Collect bench_*.py as test modules (explicit file arguments are collected by pytest itself)."""
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def selected_peers(config) -> set[str]:
    names = {n.strip() for value in config.getoption("--peer") for n in value.split(",") if n.strip()}
    unknown = names - set(PEERS)
    if unknown:
        raise pytest.UsageError(f"--peer: unknown peer(s) {', '.join(sorted(unknown))}; "
                                f"choose from {', '.join(PEERS)}")
    return names or set(PEERS)


def pytest_collection_modifyitems(config, items):
    peers = selected_peers(config)
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        peer = callspec.params.get("peer") if callspec else None
        (keep if peer is None or peer in peers else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def batch():
    """(x [32, 1, 128, 128] float32, zero mean and unit variance; targets [32, 1], half ones)."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((BATCH, IN_CHANNELS, IMAGE, IMAGE)).astype(np.float32)
    y = (np.arange(BATCH) % 2).astype(np.float32).reshape(BATCH, 1)
    return x, y


@pytest.fixture(scope="session")
def inference_batch():
    rng = np.random.default_rng(2)
    return rng.standard_normal((INFERENCE_BATCH, IN_CHANNELS, IMAGE, IMAGE)).astype(np.float32)


@pytest.fixture(scope="session")
def initial_params():
    return initial_parameters(seed=0)
