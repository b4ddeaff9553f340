"""Train and test one recipe on one dataset over several seeds; write a Markdown table of the results.

    python -m bench.quality DATA [--task {binary,multilabel}] [--recipe {seed,default}] [--seeds 0,1,2]
                            [--name NAME] [--label LABEL] [--runs DIR] [--out FILE] [--localise] [--add]
                            [-- EXTRA TRAIN ARGS...]

Each seed is one ``python -m glasscuda.train`` process on the CPU, writing into
RUNS/<name>/<label>/seed<S> (its output in train.log there). The table has one
row per seed (test metrics from the run's metrics.json, wall time, the child's
peak RSS) and a mean ± std row (sample std). ``--localise`` (multilabel) also
runs ``python -m glasscuda.predict --heatmaps`` on DATA/test/img and scores the
peaks with glasscuda.evaluation.localisation.

The results file (default bench/results/quality-<name>.md) holds one ``## <label>``
section per label; a run replaces its own section and keeps the others. The
Markdown is rendered from a JSON twin next to it, which holds the same
sections as numbers. ``--add`` puts more seeds into a label's section instead
of replacing it, when their train command is the section's (a seed run again
replaces its own row); the header then names each commit and date with its
seeds.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.report import RESULTS, ROOT, cpu_name, peer_environment, versions
from glasscuda.evaluation.annotations import load_annotations
from glasscuda.evaluation.inputs import EvaluationError
from glasscuda.evaluation.localisation import heatmap_localisation
from glasscuda.glass import NO_DEFECT
from glasscuda.reports import markdown_table, write_json_atomic, write_text_atomic

LOG_TAIL = 20


class BenchError(RuntimeError):
    """A problem the benchmark reports in one message and stops on."""


# Running ----------------------------------------------------------------------

def train_command(args, seed, out: Path) -> list[str]:
    return [sys.executable, "-m", "glasscuda.train", "--task", args.task, "--data", str(args.data),
            "--recipe", args.recipe, "--seed", str(seed), "--out", str(out), "--no-progress",
            "--device", "cpu", *args.train_args]


def run_child(command: list[str], log: Path, what: str) -> tuple[float, float]:
    """Run ``command`` with its output in ``log``; returns (wall seconds, peak RSS in MiB)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        start = time.perf_counter()
        # Same environment as bench.report gives its peers: no OpenBLAS pins, as on a user's machine.
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=peer_environment(False))
        # wait4, not Popen.wait: its rusage is this child's own peak RSS (KiB on Linux).
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-LOG_TAIL:])
        raise BenchError(f"{what} failed (exit {child.returncode}):\n  {shlex.join(command)}\n"
                         f"last lines of {log}:\n{tail}")
    return wall, usage.ru_maxrss / 1024


def run_seed(args, seed: int) -> dict:
    out = args.runs / args.name / slug(args.label) / f"seed{seed}"
    wall, peak = run_child(train_command(args, seed, out), out / "train.log", f"seed {seed}: training")
    metrics = json.loads((out / "metrics.json").read_text())
    row = {"seed": seed, **(binary_row if args.task == "binary" else multilabel_row)(metrics),
           "wall_s": wall, "peak_mib": peak}
    if args.localise:
        row.update(localise(args, seed, out, classes=[c for c in metrics["final"]["test"]["per_class"]
                                                      if c != NO_DEFECT]))
    print(f"[bench.quality] seed {seed}: {wall:.1f} s, peak {peak:.0f} MiB  ({out})", flush=True)
    return row


def binary_row(metrics: dict) -> dict:
    final = metrics["final"]
    test = final["test"]
    return {"precision": test["precision"], "recall": test["recall"], "f1": test["f1"],
            "auc_pr": test.get("auc_pr"), "threshold": test["threshold"],
            "best_epoch": final["best_epoch"], "epochs": len(metrics["history"])}


def multilabel_row(metrics: dict) -> dict:
    test = metrics["final"]["test"]
    defects = {name: m for name, m in test["per_class"].items() if name != NO_DEFECT}
    row = {f"{name}.{key}": m[key] for name, m in defects.items() for key in ("precision", "recall", "f1")}
    # The project's macro_f1 includes no_defect; this one is over the defect classes only
    # (those whose F1 is defined: metrics.json holds null for an undefined one).
    row["defect_macro_f1"] = mean_std([m["f1"] for m in defects.values()])[0]
    row["micro_f1"] = test["micro_f1"]
    return row


def localise(args, seed: int, run: Path, classes: list[str]) -> dict:
    folder = run / "localise"
    command = [sys.executable, "-m", "glasscuda.predict", "--checkpoint", str(run / "best.npz"),
               "--input", str(args.data / "test" / "img"), "--output", str(folder / "predictions.csv"),
               "--heatmaps", str(folder / "heatmaps"), "--device", "cpu", "--no-progress"]
    run_child(command, folder / "predict.log", f"seed {seed}: predict --heatmaps")
    try:
        scores = heatmap_localisation(folder / "heatmaps" / "peaks.csv",
                                      load_annotations(args.data, "test", classes=classes))
    except EvaluationError as error:
        raise BenchError(f"seed {seed}: localisation: {error}") from None
    return {f"{name}.peak_in_box": scores["per_class"][name]["rate"] for name in classes}


# Table ------------------------------------------------------------------------

def columns(task: str, rows: list[dict]) -> list[tuple[str, str]]:
    """(key, header) of each numeric column, in table order."""
    if task == "binary":
        cols = [("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("auc_pr", "AUC-PR"),
                ("threshold", "threshold"), ("best_epoch", "best epoch"), ("epochs", "epochs")]
    else:
        names = list(dict.fromkeys(k.split(".")[0] for k in rows[0] if k.endswith(".f1")))
        cols = [(f"{n}.{k}", f"{n} {h}") for n in names for k, h in (("precision", "P"), ("recall", "R"),
                                                                         ("f1", "F1"))]
        cols += [("defect_macro_f1", "defect macro-F1"), ("micro_f1", "micro-F1")]
        cols += [(k, f"{k.split('.')[0]} peak in box") for k in rows[0] if k.endswith(".peak_in_box")]
    return cols + [("wall_s", "wall s"), ("peak_mib", "peak MiB")]


def mean_std(values: list) -> tuple[float | None, float | None]:
    """Mean and sample std of the values present (None where too few)."""
    present = [v for v in values if v is not None]
    mean = statistics.fmean(present) if present else None
    return mean, statistics.stdev(present) if len(present) > 1 else None


def fmt(key: str, value) -> str:
    if value is None:
        return "n/a"
    if key == "wall_s":
        return f"{value:.1f}"
    if key == "peak_mib":
        return f"{value:.0f}"
    if key in ("best_epoch", "epochs"):
        return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
    return f"{value:.3f}"


def section_markdown(label: str, section: dict) -> str:
    cols = [tuple(c) for c in section["columns"]]
    rows = [[str(r["seed"])] + [fmt(k, r.get(k)) for k, _ in cols] for r in section["rows"]]
    summary = ["mean ± std"]
    for key, _ in cols:
        mean, std = section["mean"][key], section["std"][key]
        cell = fmt(key, mean) if mean is None else f"{fmt(key, mean)} ± {fmt(key, std)}"
        if key == "wall_s" and mean is not None:
            cell += f" ({int(mean // 60)}:{round(mean % 60):02d})"
        summary.append(cell)
    lines = [f"## {label}", ""] + [f"- {k}: {v}" for k, v in section["header"].items()]
    return "\n".join(lines + ["", markdown_table(rows + [summary], headers=["seed", *(h for _, h in cols)])])


def render(sections: dict) -> str:
    return "# glasscuda quality benchmark\n\n" + "\n\n".join(
        section_markdown(label, s) for label, s in sections.items()) + "\n"


# Header -----------------------------------------------------------------------

def git_commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    return commit + (" + local changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def header(args) -> dict:
    placeholder = args.runs / args.name / slug(args.label) / "seedSEED"
    command = shlex.join(train_command(args, "SEED", placeholder)).replace(sys.executable, "python", 1)
    return {"dataset": Path(args.data).resolve().name, "task": args.task,
            "recipe": args.recipe, "label": args.label, "seeds": ",".join(map(str, args.seeds)),
            "train command": f"`{command}`", "commit": git_commit(), "CPU": cpu_name(), "CPUs": os.cpu_count(),
            "versions": ", ".join(f"{k} {v}" for k, v in versions().items()),
            "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")}


def slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", label).strip("-") or "run"


# Command line -----------------------------------------------------------------

def parse_args(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality",
        usage="%(prog)s DATA [--task {binary,multilabel}] [--recipe {seed,default}] [--seeds 0,1,2]\n"
              "       [--name NAME] [--label LABEL] [--runs DIR] [--out FILE] [--localise] [--add]\n"
              "       [-- EXTRA TRAIN ARGS...]",
        description="Train and test one recipe on one dataset for several seeds (one python -m "
                    "glasscuda.train process each, on the CPU) and write a Markdown table of the test "
                    "metrics, wall time and peak memory per seed, with mean ± std.",
        epilog="Arguments after -- go to every python -m glasscuda.train run, e.g. "
               "--label 'default, no EMA' --recipe default -- --ema 0. Each --label is one section "
               "of the results file; running a label again replaces only its section.")
    parser.add_argument("data", metavar="DATA", type=Path,
                        help="dataset root laid out as DATA/{train,test}/{img,txt}")
    parser.add_argument("--task", choices=("binary", "multilabel"), default="binary",
                        help="what to train (default: binary)")
    parser.add_argument("--recipe", choices=("seed", "default"), default="default",
                        help="glasscuda.train's --recipe (default: default)")
    parser.add_argument("--seeds", type=seed_list, default=[0, 1, 2], metavar="0,1,2",
                        help="comma-separated training seeds (default: 0,1,2)")
    parser.add_argument("--name", help="results name (default: DATA's folder name)")
    parser.add_argument("--label", help="this section's heading (default: the recipe)")
    parser.add_argument("--runs", type=Path, default=Path("runs/quality"), metavar="DIR",
                        help="run folders go to DIR/<name>/<label>/seed<S> (default: runs/quality)")
    parser.add_argument("--out", type=Path, metavar="FILE",
                        help="results Markdown (default: bench/results/quality-<name>.md; its JSON "
                             "twin is FILE with .json)")
    parser.add_argument("--localise", action="store_true",
                        help="multilabel: also score where the heatmap peaks fall (predict --heatmaps "
                             "on DATA/test/img; peak-in-box rate per defect class)")
    parser.add_argument("--add", action="store_true",
                        help="add these seeds to the label's section (run with the same train command) "
                             "instead of replacing the section")
    args = parser.parse_args(argv)
    args.train_args = train_args
    if args.localise and args.task != "multilabel":
        parser.error("--localise needs --task multilabel (heatmaps come from multi-label checkpoints)")
    for split in ("train", "test"):
        for sub in ("img", "txt"):
            if not (args.data / split / sub).is_dir():
                parser.error(f"{args.data / split / sub}: not found (DATA must be laid out as "
                             "DATA/{train,test}/{img,txt})")
    args.name = args.name or args.data.resolve().name
    args.label = args.label or args.recipe
    args.out = args.out or RESULTS / f"quality-{args.name}.md"
    return args


def seed_list(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"repeated seed in {text!r}")
    return seeds


def main(argv=None) -> int:
    args = parse_args(argv)
    started = header(args)
    json_path = args.out.with_suffix(".json")
    sections = json.loads(json_path.read_text())["sections"] if json_path.exists() else {}
    try:
        kept = kept_rows(args, sections.get(args.label), started)
        rows = [run_seed(args, seed) for seed in args.seeds]
    except BenchError as error:
        print(f"[bench.quality] error: {error}\n[bench.quality] {args.out} left unchanged", file=sys.stderr)
        return 1
    if kept:
        started = merged_header(sections[args.label]["header"], started)
    rows = sorted(kept + rows, key=lambda row: row["seed"])
    cols = columns(args.task, rows)
    stats = {key: mean_std([r.get(key) for r in rows]) for key, _ in cols}
    section = {"header": started, "columns": cols, "rows": rows,
               "mean": {k: m for k, (m, _) in stats.items()}, "std": {k: s for k, (_, s) in stats.items()}}
    sections[args.label] = section     # replaces that label's section in place, keeps the others
    write_json_atomic(json_path, {"sections": sections})
    write_text_atomic(args.out, render(sections))
    print(section_markdown(args.label, section))
    print(f"[bench.quality] wrote {args.out} and {json_path}")
    return 0


def kept_rows(args, section: dict | None, started: dict) -> list[dict]:
    """With --add, the section's rows of the seeds not run again; checked before anything trains."""
    if not args.add:
        return []
    if section is None:
        raise BenchError(f"--add: {args.out.with_suffix('.json')} has no section {args.label!r} to add to")
    if section["header"]["train command"] != started["train command"]:
        raise BenchError(f"--add: section {args.label!r} was run as\n  {section['header']['train command']}\n"
                         f"not as\n  {started['train command']}\n(give the same flags and --runs, "
                         "or a new --label)")
    return [row for row in section["rows"] if row["seed"] not in args.seeds]


def merged_header(old: dict, new: dict) -> dict:
    """``new`` with the seeds of both runs, and commit and date per run where they differ."""
    merged = dict(new)
    merged["seeds"] = ",".join(sorted(set(old["seeds"].split(",")) | set(new["seeds"].split(",")), key=int))
    for key in ("commit", "date", "versions", "CPU"):
        if old.get(key, "not recorded") != new[key]:
            merged[key] = f"{old.get(key, 'not recorded')} (seeds {old['seeds']}); {new[key]} (seeds {new['seeds']})"
    return merged


if __name__ == "__main__":
    sys.exit(main())
