"""Run the benchmark suite peer by peer and write bench/results/report.md and report.json.

    python -m bench.report                   every peer, full rounds
    python -m bench.report --quick           fewer rounds
    python -m bench.report --only cpu --only reference
    python -m bench.report --quick -k im2col  (unknown options go to pytest)
    python -m bench.report --keep-blas-env   keep OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE for the peers

Each peer library runs in its own pytest process, one after the other: two
thread pools busy on the same cores slow each other down by orders of
magnitude, so competing libraries are never timed side by side. The
processes are

    cpu        glasscuda CPU rows, and the copy bandwidth of this machine (all cores, and one thread)
    reference  the NumPy reference rows
    torch      PyTorch CPU rows, and PyTorch CUDA rows where CUDA answers
    gpu        glasscuda GPU rows, and the cupy.copyto bandwidth of the GPU

Each process runs with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from its
environment, as on a user's machine: set, they pin NumPy's OpenBLAS to the
kernels they name instead of those it picks for the CPU (PyTorch's MKL ignores
them). ``--keep-blas-env`` keeps them, for comparison. Each process records the
BLAS it ran (threadpoolctl; see ``bench.common.blas_info``).

The report gives each benchmark group's median per peer and the ratios
measured in this run, the BLAS each peer used, and for every memory-bound
kernel the fraction of the copy bandwidth it reaches: (bytes read + bytes
written) / median time, divided by 2 × bytes / time of a large copy on the same
device, on every core (see ``bench/bench_memory.py``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import importlib.util
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"

PROCESSES = {
    "cpu": ("cpu",),
    "reference": ("reference",),
    "torch": ("torch", "torch-cuda"),
    "gpu": ("gpu",),
}
REQUIRES = {"torch": "torch", "gpu": "cupy"}      # process -> module it cannot run without
LABELS = {
    "cpu": "glasscuda CPU",
    "reference": "NumPy reference",
    "torch": "PyTorch CPU",
    "gpu": "glasscuda GPU",
    "torch-cuda": "PyTorch CUDA",
}
# (column, numerator peer, denominator peer): a speedup of the denominator.
RATIOS = (
    ("CPU vs reference", "reference", "cpu"),
    ("CPU vs PyTorch", "torch", "cpu"),
    ("GPU vs CPU", "cpu", "gpu"),
    ("GPU vs PyTorch CUDA", "torch-cuda", "gpu"),
)
# (target, kind of benchmark, ratio column, least value): the speed targets each report is read against.
SPEED_TARGETS = (
    ("training step ≥ 1.33× PyTorch CPU's speed (≤ 0.75× its time)", "step", "CPU vs PyTorch", 4 / 3),
    ("inference ≥ 2× PyTorch CPU's throughput", "inference", "CPU vs PyTorch", 2.0),
    ("training step ≥ 10× the NumPy reference", "step", "CPU vs reference", 10.0),
)
MIN_FRACTION_OF_COPY = 0.70     # what a memory-bound kernel should reach, at every layer's shape
KIND_ORDER = ("kernel", "step", "inference", "copy", "copy-single")
COPY_KINDS = ("copy", "copy-single")     # the fastest "copy" per device is the denominator
# They pin NumPy's OpenBLAS to older kernels; a user's machine does not set them.
BLAS_ENV = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ROUNDS = {"full": ["--benchmark-min-rounds=5", "--benchmark-max-time=1.0"],
          "quick": ["--benchmark-min-rounds=3", "--benchmark-max-time=0.1"]}


# Running ----------------------------------------------------------------------

def pytest_command(process: str, json_path: Path, quick: bool, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", str(BENCH_DIR), "-q", "-p", "no:cacheprovider",
            "--peer", ",".join(PROCESSES[process]), f"--benchmark-json={json_path}",
            "--benchmark-columns=min,median,max,rounds", *ROUNDS["quick" if quick else "full"],
            *extra]


def peer_environment(keep_blas_env: bool, environ=None) -> dict[str, str]:
    """The environment of a peer process: ``environ`` (default os.environ) less BLAS_ENV unless kept."""
    env = dict(os.environ if environ is None else environ)
    if not keep_blas_env:
        for name in BLAS_ENV:
            env.pop(name, None)
    return env


def blas_environment(keep_blas_env: bool, environ=None) -> dict:
    """What the report says about BLAS_ENV: whether it was kept, and the values this shell had."""
    environ = os.environ if environ is None else environ
    return {"kept": keep_blas_env, "set": {name: environ[name] for name in BLAS_ENV if name in environ}}


def run_process(process: str, quick: bool, extra: list[str], env: dict[str, str] | None = None) -> dict:
    """Run one peer library's benchmarks in a fresh pytest process with ``env``; returns what happened."""
    module = REQUIRES.get(process)
    if module and importlib.util.find_spec(module) is None:
        print(f"[bench.report] {process}: skipped, {module} is not installed", flush=True)
        return {"process": process, "status": "skipped", "reason": f"{module} is not installed"}
    json_path = RESULTS / f"pytest-{process}.json"
    json_path.unlink(missing_ok=True)
    command = pytest_command(process, json_path, quick, extra)
    print(f"[bench.report] {process}: {' '.join(command[1:])}", flush=True)
    code = subprocess.call(command, cwd=ROOT, env=env)
    status = {0: "passed", 5: "nothing collected"}.get(code, "failed")
    run = {"process": process, "status": status, "returncode": code}
    text = json_path.read_text() if json_path.exists() else ""
    if text.strip():            # pytest-benchmark leaves an empty file when nothing ran
        run["json"] = str(json_path.relative_to(ROOT)) if json_path.is_relative_to(ROOT) else str(json_path)
        run["data"] = json.loads(text)
        run["blas"] = run["data"].get("machine_info", {}).get("blas", [])
    return run


# Collating --------------------------------------------------------------------

def collate(runs: list[dict]) -> list[dict]:
    """One entry per benchmark group: kind, bytes, images and each peer's median."""
    groups: dict[str, dict] = {}
    for run in runs:
        for bench in run.get("data", {}).get("benchmarks", []):
            info = bench.get("extra_info", {})
            group = groups.setdefault(bench["group"], {
                "group": bench["group"], "kind": info.get("kind", "kernel"),
                "bytes": info.get("bytes"), "images": info.get("images"),
                "median_s": {}, "rounds": {}})
            peer = bench["params"]["peer"]
            group["median_s"][peer] = bench["stats"]["median"]
            group["rounds"][peer] = bench["stats"]["rounds"]
            if "method" in info:
                group.setdefault("method", {})[peer] = info["method"]
    return sorted(groups.values(), key=lambda g: KIND_ORDER.index(g["kind"]))


def copy_bandwidth(groups: list[dict]) -> dict[str, tuple[float, str]]:
    """(bytes per second, group) of the fastest all-core copy (read + write), per device: the denominator."""
    bandwidth: dict[str, tuple[float, str]] = {}
    for g in groups:
        if g["kind"] == "copy":
            for peer, median in g["median_s"].items():
                rate = g["bytes"] / median
                if rate > bandwidth.get(peer, (0.0, ""))[0]:
                    bandwidth[peer] = (rate, g["group"])
    return bandwidth


def annotate(groups: list[dict], bandwidth: dict[str, tuple[float, str]]) -> None:
    """Add ratios, throughputs and fractions of copy bandwidth to each group."""
    for g in groups:
        medians = g["median_s"]
        g["ratios"] = {name: medians[num] / medians[den] for name, num, den in RATIOS
                       if num in medians and den in medians}
        if g["images"]:
            g["images_per_s"] = {peer: g["images"] / t for peer, t in medians.items()}
        if g["bytes"] and g["kind"] == "kernel":
            g["bytes_per_s"] = {peer: g["bytes"] / t for peer, t in medians.items()}
            g["fraction_of_copy"] = {peer: rate / bandwidth[copy_device(peer)][0]
                                     for peer, rate in g["bytes_per_s"].items()
                                     if copy_device(peer) in bandwidth}


def copy_device(peer: str) -> str:
    """Whose copy bandwidth a peer's kernels are measured against: the GPU's or the host's."""
    return "gpu" if peer in ("gpu", "torch-cuda") else "cpu"


# Writing ----------------------------------------------------------------------

def fmt_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def fmt_ratio(value) -> str:
    return "" if value is None else f"{value:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(header) - 1)
    return ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"] \
        + ["| " + " | ".join(row) + " |" for row in rows]


def peers_present(groups: list[dict]) -> list[str]:
    present = {peer for g in groups for peer in g["median_s"]}
    return [peer for peer in LABELS if peer in present]


def medians_table(groups: list[dict]) -> list[str]:
    timed = [g for g in groups if g["kind"] not in COPY_KINDS]
    peers = peers_present(timed)
    ratios = [name for name, num, den in RATIOS if num in peers and den in peers]
    rows = [[g["group"]] + [fmt_time(g["median_s"][p]) if p in g["median_s"] else "" for p in peers]
            + [fmt_ratio(g["ratios"].get(name)) for name in ratios] for g in timed]
    return table(["benchmark"] + [LABELS[p] for p in peers] + ratios, rows)


def throughput_table(groups: list[dict]) -> list[str]:
    rated = [g for g in groups if g["kind"] == "inference"]
    peers = peers_present(rated)
    rows = [[g["group"]] + [f"{g['images_per_s'][p]:,.0f}" if p in g["images_per_s"] else ""
                            for p in peers] for g in rated]
    return table(["images/s"] + [LABELS[p] for p in peers], rows)


def bandwidth_table(groups: list[dict]) -> list[str]:
    bound = [g for g in groups if "fraction_of_copy" in g]
    peers = peers_present(bound)
    header = ["kernel", "moved"]
    for p in peers:
        header += [f"{LABELS[p]} GB/s", "of copy"]
    rows = []
    for g in bound:
        row = [g["group"], fmt_bytes(g["bytes"])]
        for p in peers:
            rate, fraction = g["bytes_per_s"].get(p), g["fraction_of_copy"].get(p)
            row += ["" if rate is None else f"{rate / 1e9:.2f}",
                    "" if fraction is None else f"{fraction:.0%}"]
        rows.append(row)
    return table(header, rows)


def targets_lines(groups: list[dict]) -> list[str]:
    """Each speed target with what this run measured, and the memory-bound kernels below their target."""
    rows = [[target, g["group"], fmt_ratio(g["ratios"][ratio]), "holds" if g["ratios"][ratio] >= least else "misses"]
            for target, kind, ratio, least in SPEED_TARGETS
            for g in groups if g["kind"] == kind and ratio in g["ratios"]]
    below = {}
    for peer in ("cpu", "gpu"):
        bound = [g for g in groups if peer in g.get("fraction_of_copy", {})]
        if bound:
            below[peer] = [g for g in bound if g["fraction_of_copy"][peer] < MIN_FRACTION_OF_COPY]
            rows.append([f"memory-bound kernels ≥ {MIN_FRACTION_OF_COPY:.0%} of copy bandwidth, {LABELS[peer]}",
                         f"{len(bound)} kernel shapes", f"{len(bound) - len(below[peer])} of {len(bound)} reach it",
                         "misses" if below[peer] else "holds"])
    lines = table(["target", "benchmark", "measured", "result"], rows) + [""]
    for peer, groups_below in below.items():
        if groups_below:
            lines += [f"Below {MIN_FRACTION_OF_COPY:.0%} on {LABELS[peer]}: " + "; ".join(
                f"{g['group']} {g['fraction_of_copy'][peer]:.0%}" for g in groups_below) + ".", ""]
    return lines


def copy_table(groups: list[dict], denominators: dict[str, str]) -> list[str]:
    rows = []
    for g in (g for g in groups if g["kind"] in COPY_KINDS):
        for peer, median in g["median_s"].items():
            role = ("denominator" if denominators.get(peer) == g["group"]
                    else "all cores, slower" if g["kind"] == "copy" else "context")
            rows.append([g["group"], LABELS[peer], g.get("method", {}).get(peer, ""),
                         f"{g['bytes'] / median / 1e9:.2f}", role])
    return table(["copy", "device", "how", "GB/s", "used as"], rows)


def blas_section(report: dict) -> list[str]:
    env = report["blas_env"]
    named = ", ".join(f"`{name}={value}`" for name, value in env["set"].items())
    if env["kept"]:
        text = (f"Kept (`--keep-blas-env`): {named} stayed set for every peer process, so NumPy's "
                "OpenBLAS ran the kernels they pin, not those it picks for this CPU."
                if named else "`--keep-blas-env`: neither " + " nor ".join(BLAS_ENV) + " was set.")
    elif named:
        text = (f"{named} {'was' if len(env['set']) == 1 else 'were'} set in the shell that ran "
                "the report and unset for every peer process, as on a user's machine: NumPy's "
                "OpenBLAS picks its kernels for this CPU (`--keep-blas-env` keeps them, for "
                "comparison). PyTorch's CPU build does not read them.")
    else:
        text = "Neither " + " nor ".join(f"`{n}`" for n in BLAS_ENV) + " was set; nothing was unset."
    rows = [[run["process"], pool.get("library") or "", pool.get("internal_api") or "",
             pool.get("version") or "", pool.get("architecture") or "", str(pool.get("num_threads") or "")]
            for run in report["runs"] for pool in run.get("blas", [])]
    lines = ["## BLAS", "", text, "",
             "Every peer process imports glasscuda before NumPy, as its command lines do, so NumPy's OpenBLAS "
             "threads sleep soon after a GEMM (`OPENBLAS_THREAD_TIMEOUT=4`, glasscuda's default where the "
             "environment sets none) instead of spinning on the cores the next kernel needs.", ""]
    if rows:
        lines += ["What each peer process ran, read by threadpoolctl after its benchmarks (PyTorch's "
                  "statically linked MKL from its build configuration; its architecture is the CPU "
                  "capability PyTorch dispatches to):", ""]
        lines += table(["process", "library", "internal_api", "version", "architecture", "threads"], rows)
        lines.append("")
    return lines


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for dist in ("numpy", "torch", "cupy-cuda12x", "cupy-cuda13x", "pytest-benchmark"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def cpu_name() -> str:
    """This machine's processor model (wall times compare only on the same one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(runs: list[dict]) -> str:
    for run in runs:
        info = run.get("data", {}).get("machine_info", {})
        cpu = info.get("cpu", {})
        if cpu:
            return f"{cpu.get('brand_raw', 'unknown CPU')}, {cpu.get('count', '?')} cores, {info.get('system', '')}"
    return platform.platform()


def markdown(report: dict) -> str:
    groups = report["groups"]
    bandwidth = report["copy_bandwidth_GBps"]
    lines = ["# glasscuda benchmarks", "",
             f"`python -m bench.report{' --quick' if report['quick'] else ''}"
             f"{' --keep-blas-env' if report['blas_env']['kept'] else ''}` on {report['date']}; "
             f"{report['machine']}; " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + ".",
             "",
             "Each peer library ran in its own pytest process, one after the other. Times are "
             "medians. Ratios are measured in this run and are speedups: *CPU vs reference* is the "
             "NumPy reference's median ÷ glasscuda CPU's, *CPU vs PyTorch* PyTorch CPU's ÷ "
             "glasscuda CPU's, *GPU vs CPU* glasscuda CPU's ÷ glasscuda GPU's, *GPU vs PyTorch "
             "CUDA* PyTorch CUDA's ÷ glasscuda GPU's; above 1× the glasscuda side is faster.", ""]
    lines += ["## Runs", ""]
    for run in report["runs"]:
        detail = run.get("reason") or f"exit code {run.get('returncode')}"
        lines.append(f"- **{run['process']}** ({', '.join(PROCESSES[run['process']])}): "
                     f"{run['status']} ({detail})")
    lines.append("")
    lines += blas_section(report)
    if not groups:
        lines.append("No benchmark produced a result.")
        return "\n".join(lines) + "\n"
    lines += ["## Medians", ""] + medians_table(groups) + [""]
    if any(g["kind"] == "inference" for g in groups):
        lines += ["## Inference throughput", ""] + throughput_table(groups) + [""]
    lines += ["## Targets", "", "Ratios from this run; *measured* is a speedup as in *Medians*."]
    lines += [""] + targets_lines(groups)
    if any(g["kind"] in COPY_KINDS for g in groups):
        lines += ["## Copy bandwidth", "",
                  "2 × bytes ÷ median time of one copy between page-aligned buffers (each byte "
                  "read once and written once). The *denominator* of each device, what "
                  "memory-bound kernels are judged against, is its fastest copy on every core: on "
                  "the host the faster of a STREAM-style loop (rows that OpenMP's static schedule "
                  "hands out as one contiguous block per thread, on the thread team glasscuda's "
                  "kernels use) and `np.copyto` on one contiguous chunk per core, each on its own "
                  "thread; on the GPU `cupy.copyto`. The one-thread `np.copyto` is context only.", ""]
        lines += copy_table(groups, report["copy_denominator"]) + [""]
    if bandwidth:
        copies = ", ".join(f"{LABELS[d]} {v:.2f} GB/s, *{report['copy_denominator'][d]}*"
                           for d, v in bandwidth.items())
        lines += ["## Memory-bound kernels against copy bandwidth", "",
                  f"Denominator: the fastest all-core copy of the same device ({copies}; see *Copy "
                  "bandwidth*). A kernel's rate is (bytes the float32 operation must read + bytes "
                  "it must write, each array once) ÷ its median time; *of copy* divides that by "
                  "the denominator (the host's for the NumPy reference, which moves more than "
                  "that: it computes in float64). Kernels whose arrays stay in cache can pass 100%.",
                  ""]
        lines += bandwidth_table(groups) + [""]
    return "\n".join(lines)


def build_report(runs: list[dict], quick: bool, blas_env: dict) -> dict:
    groups = collate(runs)
    bandwidth = copy_bandwidth(groups)
    annotate(groups, bandwidth)
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "quick": quick,
        "machine": machine(runs),
        "versions": versions(),
        "blas_env": blas_env,
        "copy_bandwidth_GBps": {d: rate / 1e9 for d, (rate, _) in bandwidth.items()},
        "copy_denominator": {d: group for d, (_, group) in bandwidth.items()},
        "runs": [{k: v for k, v in run.items() if k != "data"} for run in runs],
        "groups": groups,
    }


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench.report",
        description="Run glasscuda's benchmarks, one pytest process per peer library, and write "
                    "bench/results/report.md and report.json. Unrecognised options go to pytest.")
    parser.add_argument("--quick", action="store_true", help="fewer rounds per benchmark")
    parser.add_argument("--only", action="append", choices=tuple(PROCESSES), metavar="PEER",
                        help=f"run only this peer library ({', '.join(PROCESSES)}); repeatable")
    parser.add_argument("--keep-blas-env", action="store_true",
                        help=f"keep {' and '.join(BLAS_ENV)} in the peers' environment (by default "
                             "they are removed, as on a user's machine: set, they pin NumPy's "
                             "OpenBLAS to older kernels); for comparison")
    return parser.parse_known_args(argv)


def main(argv=None) -> int:
    args, pytest_extra = parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    selected = args.only or list(PROCESSES)
    env = peer_environment(args.keep_blas_env)
    runs = [run_process(p, args.quick, pytest_extra, env) for p in PROCESSES if p in selected]
    report = build_report(runs, args.quick, blas_environment(args.keep_blas_env))
    (RESULTS / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    text = markdown(report)
    (RESULTS / "report.md").write_text(text)
    print(text)
    print(f"[bench.report] wrote {RESULTS / 'report.md'} and {RESULTS / 'report.json'}")
    return 1 if any(run["status"] == "failed" for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
