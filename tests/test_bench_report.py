"""python -m bench.report: the peers' environment, their BLAS, and the copy bandwidth kernels are judged by.

Nothing here times anything: the peer processes are replaced by a fake that
writes canned pytest-benchmark JSON, and the copies run on a few megabytes.
"""
from __future__ import annotations

import json
import os
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bench import bench_memory, report
from bench.common import blas_info, cpu_threads, torch_blas

BLAS_VALUES = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "512"}


def pools(architecture: str) -> list[dict]:
    return [{"library": "libscipy_openblas64_.so", "user_api": "blas", "internal_api": "openblas",
             "version": "0.3.31", "architecture": architecture, "threading_layer": "pthreads",
             "num_threads": 2}]


def bench_entry(group: str, peer: str, median: float, **info) -> dict:
    return {"group": group, "params": {"peer": peer}, "extra_info": info,
            "stats": {"median": median, "rounds": 5}}


class FakePeers:
    """Stands for subprocess.call: records each peer process's environment, writes its JSON."""

    def __init__(self):
        self.envs: dict[str, dict] = {}

    def __call__(self, command, cwd=None, env=None):
        peers = command[command.index("--peer") + 1]
        json_path = next(a.split("=", 1)[1] for a in command if a.startswith("--benchmark-json="))
        process = next(p for p, names in report.PROCESSES.items() if ",".join(names) == peers)
        self.envs[process] = env
        blas = pools("SkylakeX" if process == "cpu" else "Haswell")
        benchmarks = [bench_entry("relu conv1", peers.split(",")[0], 0.01, kind="kernel", bytes=10 ** 8)]
        with open(json_path, "w") as f:
            json.dump({"machine_info": {"blas": blas}, "benchmarks": benchmarks}, f)
        return 0


@pytest.fixture
def fake_peers(monkeypatch, tmp_path):
    for name, value in BLAS_VALUES.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "REQUIRES", {})      # every process runs, installed or not
    fake = FakePeers()
    monkeypatch.setattr(report.subprocess, "call", fake)
    return fake


# Item 6: the peers run without the variables that pin OpenBLAS -------------------------

def test_peer_environment_drops_only_the_blas_variables():
    shell = {"PATH": "/bin", "OMP_NUM_THREADS": "2", **BLAS_VALUES}
    env = report.peer_environment(False, shell)
    assert env == {"PATH": "/bin", "OMP_NUM_THREADS": "2"}
    assert shell["OPENBLAS_CORETYPE"] == "Haswell", "the shell's own environment was changed"
    assert report.peer_environment(True, shell) == shell


def test_every_peer_process_runs_without_the_blas_variables(fake_peers, tmp_path, capsys):
    assert report.main(["--quick"]) == 0
    assert set(fake_peers.envs) == set(report.PROCESSES)
    for process, env in fake_peers.envs.items():
        assert env is not None, f"{process} inherited the shell's environment unchanged"
        assert not set(BLAS_VALUES) & set(env), f"{process} ran with an OpenBLAS pin"
        assert "PATH" in env
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell", "the report's own environment was changed"
    text = (tmp_path / "report.md").read_text()
    assert "`OPENBLAS_CORETYPE=Haswell`, `OPENBLAS_L2_SIZE=512` were set" in text
    assert "unset for every peer process" in text
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["blas_env"] == {"kept": False, "set": BLAS_VALUES}


def test_keep_blas_env_passes_the_variables_through(fake_peers, tmp_path):
    assert report.main(["--quick", "--only", "cpu", "--keep-blas-env"]) == 0
    env = fake_peers.envs["cpu"]
    assert {name: env.get(name) for name in BLAS_VALUES} == BLAS_VALUES
    text = (tmp_path / "report.md").read_text()
    assert "--keep-blas-env" in text.splitlines()[2]
    assert "Kept (`--keep-blas-env`)" in text


def test_keep_blas_env_is_documented_in_help(capsys):
    with pytest.raises(SystemExit):
        report.parse_args(["--help"])
    assert "--keep-blas-env" in capsys.readouterr().out


def test_each_peers_blas_reaches_the_report(fake_peers, tmp_path):
    assert report.main(["--only", "cpu", "--only", "reference"]) == 0
    text = (tmp_path / "report.md").read_text()
    assert "| process | library | internal_api | version | architecture | threads |" in text
    assert "| cpu | libscipy_openblas64_.so | openblas | 0.3.31 | SkylakeX | 2 |" in text
    assert "| reference | libscipy_openblas64_.so | openblas | 0.3.31 | Haswell | 2 |" in text
    runs = json.loads((tmp_path / "report.json").read_text())["runs"]
    assert [run["blas"][0]["architecture"] for run in runs] == ["SkylakeX", "Haswell"]


def test_blas_info_reads_numpys_openblas_in_this_process():
    np.ones((64, 64)) @ np.ones((64, 64))
    found = [p for p in blas_info() if p["internal_api"] == "openblas"]
    assert found, "NumPy's OpenBLAS was not found by threadpoolctl"
    assert found[0]["architecture"] and found[0]["num_threads"] >= 1 and found[0]["version"]


def test_the_benchmark_json_carries_the_blas():
    from bench import conftest as bench_conftest
    machine_info = {}
    bench_conftest.pytest_benchmark_update_machine_info(None, machine_info)
    assert any(p["internal_api"] == "openblas" for p in machine_info["blas"])


def test_torch_blas_is_read_from_its_build_configuration():
    config = ("  - Intel(R) oneAPI Math Kernel Library Version 2024.2-Product Build 20240605\n"
              "  - Build settings: BLAS_INFO=mkl, BUILD_TYPE=Release, LAPACK_INFO=mkl\n")
    torch = types.SimpleNamespace(
        __version__="2.13.0", __config__=types.SimpleNamespace(show=lambda: config),
        backends=types.SimpleNamespace(cpu=types.SimpleNamespace(get_cpu_capability=lambda: "AVX512")),
        get_num_threads=lambda: 2)
    assert torch_blas(torch) == {"library": "torch 2.13.0", "user_api": "blas", "internal_api": "mkl",
                                 "version": "2024.2-Product", "architecture": "AVX512",
                                 "threading_layer": None, "num_threads": 2}


# Item 7: the denominator is a copy on every core ----------------------------------------

@pytest.mark.parametrize("n, rows", [(1, 4), (7, 3), (1000, 1), (100_003, 128), (3 * 65_536, 6)])
@pytest.mark.parametrize("backend", ["cpu", "emulated"])
def test_parallel_copy_equals_its_source(request, backend, n, rows):
    be = request.getfixturevalue(backend)
    src = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    dst = np.full(n, np.nan, dtype=np.float32)
    bench_memory.parallel_copy(be, dst, src, rows)
    np.testing.assert_array_equal(dst, src)


def test_parallel_copy_runs_the_copy_kernel_on_rows(cpu, monkeypatch):
    calls = []
    launch = cpu.launch
    monkeypatch.setattr(cpu, "launch", lambda name, **args: (calls.append((name, args)), launch(name, **args)))
    src = np.arange(1000, dtype=np.float32)
    bench_memory.parallel_copy(cpu, np.empty_like(src), src, 8)
    [(name, args)] = calls
    assert (name, args["A"], args["B"], args["L"]) == ("swap_outer_axes", 1, 8, 125)


def test_parallel_copy_refuses_a_destination_of_another_size(cpu):
    with pytest.raises(ValueError, match="destination has 9 elements, source 10"):
        bench_memory.parallel_copy(cpu, np.empty(9, np.float32), np.empty(10, np.float32), 2)


@pytest.mark.parametrize("n, threads", [(1, 2), (7, 3), (100_003, 2), (1000, 1)])
def test_threaded_copy_equals_its_source(n, threads):
    src = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    dst = np.full(n, np.nan, dtype=np.float32)
    with ThreadPoolExecutor(threads) as pool:
        bench_memory.threaded_copy(pool, dst, src, threads)
    np.testing.assert_array_equal(dst, src)


def test_threaded_copy_gives_each_thread_one_contiguous_chunk(monkeypatch):
    chunks = []
    monkeypatch.setattr(bench_memory.np, "copyto", lambda dst, src: chunks.append(
        (src.ctypes.data - base.ctypes.data) // 4))
    base = np.zeros(10, dtype=np.float32)
    with ThreadPoolExecutor(3) as pool:
        bench_memory.threaded_copy(pool, np.empty_like(base), base, 3)
    assert sorted(chunks) == [0, 3, 6]


class FakeBenchmark:
    def __init__(self):
        self.group, self.extra_info, self.calls = None, {}, 0

    def __call__(self, fn):
        fn()
        self.calls += 1


def test_the_cpu_copy_row_times_the_all_core_copy(monkeypatch):
    monkeypatch.setattr(bench_memory, "COPY_BYTES", 2 ** 20)
    rows_used = []
    copy = bench_memory.parallel_copy
    monkeypatch.setattr(bench_memory, "parallel_copy",
                        lambda be, dst, src, rows: (rows_used.append(rows), copy(be, dst, src, rows)))
    benchmark = FakeBenchmark()
    bench_memory.test_copy(benchmark, "cpu")
    threads = cpu_threads()
    assert benchmark.group == bench_memory.COPY_GROUP and benchmark.calls == 1
    assert benchmark.extra_info["kind"] == "copy" and benchmark.extra_info["threads"] == threads
    assert f"OpenMP team of {threads} threads" in benchmark.extra_info["method"]
    assert set(rows_used) == {bench_memory.ROWS_PER_THREAD * threads}

    threaded = FakeBenchmark()
    bench_memory.test_copy_threaded(threaded, "cpu")
    assert threaded.group == bench_memory.THREADED_COPY_GROUP and threaded.calls == 1
    assert (threaded.extra_info["kind"], threaded.extra_info["threads"]) == ("copy", threads)

    single = FakeBenchmark()
    bench_memory.test_copy_one_thread(single, "cpu")
    assert single.group == bench_memory.SINGLE_COPY_GROUP
    assert (single.extra_info["kind"], single.extra_info["threads"]) == ("copy-single", 1)


def test_the_report_divides_kernels_by_the_all_core_copy():
    gb = 10 ** 9
    benchmarks = [
        bench_entry("copy 256 MiB", "cpu", 0.1, kind="copy", bytes=2 * gb, method="OpenMP copy"),
        bench_entry("copy 256 MiB, np.copyto per core", "cpu", 0.125, kind="copy", bytes=2 * gb,
                    method="threads"),
        bench_entry("copy 256 MiB, one thread", "cpu", 0.05, kind="copy-single", bytes=2 * gb,
                    method="np.copyto on one thread"),
        bench_entry("im2col conv2", "cpu", 0.1, kind="kernel", bytes=gb),
    ]
    runs = [{"process": "cpu", "status": "passed", "returncode": 0, "blas": pools("SkylakeX"),
             "data": {"benchmarks": benchmarks}}]
    built = report.build_report(runs, quick=True, blas_env={"kept": False, "set": {}})
    assert built["copy_bandwidth_GBps"] == {"cpu": pytest.approx(20.0)}
    assert built["copy_denominator"] == {"cpu": "copy 256 MiB"}
    kernel = next(g for g in built["groups"] if g["group"] == "im2col conv2")
    assert kernel["fraction_of_copy"]["cpu"] == pytest.approx(0.5)     # not 0.25, the one-thread copy
    text = report.markdown(built)
    assert "| copy 256 MiB | glasscuda CPU | OpenMP copy | 20.00 | denominator |" in text
    assert "| copy 256 MiB, np.copyto per core | glasscuda CPU | threads | 16.00 | all cores, slower |" in text
    assert "| copy 256 MiB, one thread | glasscuda CPU | np.copyto on one thread | 40.00 | context |" in text
    assert "| im2col conv2 | 1.0 GB | 10.00 | 50% |" in text
    medians = text.split("## Medians")[1].split("##")[0]
    assert "copy 256 MiB" not in medians


def test_the_faster_all_core_copy_is_the_denominator():
    gb = 10 ** 9
    benchmarks = [bench_entry("copy 256 MiB", "cpu", 0.1, kind="copy", bytes=2 * gb),
                  bench_entry("copy 256 MiB, np.copyto per core", "cpu", 0.08, kind="copy", bytes=2 * gb),
                  bench_entry("relu conv1", "cpu", 0.1, kind="kernel", bytes=gb)]
    built = report.build_report([{"process": "cpu", "status": "passed", "returncode": 0,
                                  "data": {"benchmarks": benchmarks}}], quick=True,
                                blas_env={"kept": False, "set": {}})
    assert built["copy_denominator"] == {"cpu": "copy 256 MiB, np.copyto per core"}
    assert built["groups"][0]["fraction_of_copy"]["cpu"] == pytest.approx(0.4)


# The targets: each measured against its bound --------------------------------------------

def test_targets_say_which_hold_and_name_the_kernels_below_the_copy_target():
    groups = [{"group": "step", "kind": "step", "ratios": {"CPU vs PyTorch": 1.40, "CPU vs reference": 9.0}},
              {"group": "inference", "kind": "inference", "ratios": {"CPU vs PyTorch": 2.5}},
              {"group": "relu a", "kind": "kernel", "ratios": {}, "fraction_of_copy": {"cpu": 0.71}},
              {"group": "relu b", "kind": "kernel", "ratios": {}, "fraction_of_copy": {"cpu": 0.69}}]
    text = "\n".join(report.targets_lines(groups))
    assert "| training step ≥ 1.33× PyTorch CPU's speed (≤ 0.75× its time) | step | 1.40× | holds |" in text
    assert "| inference ≥ 2× PyTorch CPU's throughput | inference | 2.50× | holds |" in text
    assert "| training step ≥ 10× the NumPy reference | step | 9.00× | misses |" in text
    assert "| 2 kernel shapes | 1 of 2 reach it | misses |" in text
    assert "Below 70% on glasscuda CPU: relu b 69%." in text
    assert "relu a" not in text
