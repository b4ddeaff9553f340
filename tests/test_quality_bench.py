"""python -m bench.quality end to end on the CLI tests' tiny synthetic set (a few 1-2 epoch runs)."""
import json
import statistics

import pytest

from bench import quality
from test_train_cli import tiny_glass  # noqa: F401  (the CLI tests' tiny synthetic set)

TRAIN = ["--", "--img-size", "32", "--epochs", "2"]


def run_quality(data, tmp_path, *args) -> int:
    return quality.main([str(data), "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "q.md"), *args])


def section(text: str, label: str) -> str:
    """The Markdown of ``## label`` up to the next section."""
    start = text.index(f"## {label}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def table(text: str) -> dict[str, dict[str, str]]:
    """The table of one section as {first cell: {header: cell}}."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split(" | ")] for line in lines]
    headers = cells[0]
    return {row[0]: dict(zip(headers, row)) for row in cells[2:]}


def metrics(tmp_path, label: str, seed: int) -> dict:
    return json.loads((tmp_path / "runs" / "set" / label / f"seed{seed}" / "metrics.json").read_text())


def test_seeds_mean_and_sections_accumulate(tiny_glass, tmp_path, capsys):  # noqa: F811
    assert run_quality(tiny_glass, tmp_path, "--recipe", "seed", "--seeds", "0,1", "--label", "A", *TRAIN) == 0
    text = (tmp_path / "q.md").read_text()
    first = section(text, "A")
    rows = table(first)
    assert list(rows) == ["0", "1", "mean ± std"]
    f1s = [metrics(tmp_path, "A", seed)["final"]["test"]["f1"] for seed in (0, 1)]
    for seed, f1 in zip((0, 1), f1s):
        assert rows[str(seed)]["F1"] == f"{f1:.3f}"
        auc_pr = metrics(tmp_path, "A", seed)["final"]["test"].get("auc_pr")
        assert rows[str(seed)]["AUC-PR"] == ("n/a" if auc_pr is None else f"{auc_pr:.3f}")
        assert rows[str(seed)]["epochs"] == str(len(metrics(tmp_path, "A", seed)["history"]))
        assert float(rows[str(seed)]["peak MiB"]) > 0 and float(rows[str(seed)]["wall s"]) > 0
    assert rows["mean ± std"]["F1"] == f"{statistics.fmean(f1s):.3f} ± {statistics.stdev(f1s):.3f}"
    assert "--recipe seed --seed SEED" in first and "- task: binary" in first
    saved = json.loads((tmp_path / "q.json").read_text())["sections"]["A"]
    assert saved["mean"]["f1"] == pytest.approx(statistics.fmean(f1s))
    assert [row["seed"] for row in saved["rows"]] == [0, 1]
    assert all(row["peak_mib"] > 0 for row in saved["rows"])

    assert run_quality(tiny_glass, tmp_path, "--recipe", "default", "--seeds", "2", "--label", "B", *TRAIN) == 0
    text = (tmp_path / "q.md").read_text()
    assert section(text, "A") == first, "writing section B changed section A"
    rows = table(section(text, "B"))
    assert list(rows) == ["2", "mean ± std"] and rows["mean ± std"]["F1"].endswith("± n/a")
    assert set(json.loads((tmp_path / "q.json").read_text())["sections"]) == {"A", "B"}

    before = {name: (tmp_path / name).read_bytes() for name in ("q.md", "q.json")}
    capsys.readouterr()
    assert run_quality(tiny_glass, tmp_path, "--seeds", "0", "--label", "C", "--", "--epochs", "0") != 0
    err = capsys.readouterr().err
    assert "seed 0" in err and "--epochs 0" in err and "train.log" in err
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_multilabel_with_localisation(tiny_glass, tmp_path):  # noqa: F811
    assert run_quality(tiny_glass, tmp_path, "--task", "multilabel", "--seeds", "0", "--localise",
                       "--", "--img-size", "32", "--epochs", "1", "--warmup-epochs", "1") == 0
    row = json.loads((tmp_path / "q.json").read_text())["sections"]["default"]["rows"][0]
    per_class = metrics(tmp_path, "default", 0)["final"]["test"]["per_class"]
    defects = [name for name in per_class if name != "no_defect"]
    assert row["defect_macro_f1"] == pytest.approx(statistics.fmean(per_class[n]["f1"] for n in defects))
    for name in defects:
        assert row[f"{name}.f1"] == per_class[name]["f1"]
        rate = row[f"{name}.peak_in_box"]
        assert rate is None or 0 <= rate <= 1
    assert (tmp_path / "runs" / "set" / "default" / "seed0" / "localise" / "heatmaps" / "peaks.csv").exists()
    assert "scratch peak in box" in (tmp_path / "q.md").read_text()


def test_a_dataset_without_the_layout_is_named(tmp_path, capsys):
    (tmp_path / "data" / "train" / "img").mkdir(parents=True)
    with pytest.raises(SystemExit):
        quality.main([str(tmp_path / "data"), "--out", str(tmp_path / "q.md")])
    assert "train/txt: not found" in capsys.readouterr().err
    assert not (tmp_path / "q.md").exists()


def test_add_puts_seeds_into_a_section_run_the_same_way(tiny_glass, tmp_path, capsys):  # noqa: F811
    assert run_quality(tiny_glass, tmp_path, "--recipe", "seed", "--seeds", "0,1", "--label", "A", *TRAIN) == 0
    first = json.loads((tmp_path / "q.json").read_text())["sections"]["A"]

    before = {name: (tmp_path / name).read_bytes() for name in ("q.md", "q.json")}
    capsys.readouterr()
    assert run_quality(tiny_glass, tmp_path, "--recipe", "seed", "--seeds", "2", "--label", "A", "--add",
                       "--", "--img-size", "32", "--epochs", "1") != 0
    assert "was run as" in capsys.readouterr().err
    assert run_quality(tiny_glass, tmp_path, "--seeds", "2", "--label", "B", "--add", *TRAIN) != 0
    assert "no section 'B'" in capsys.readouterr().err
    assert {name: (tmp_path / name).read_bytes() for name in before} == before
    assert not (tmp_path / "runs" / "set" / "A" / "seed2").exists(), "a refused --add trained anyway"

    assert run_quality(tiny_glass, tmp_path, "--recipe", "seed", "--seeds", "2", "--label", "A", "--add",
                       *TRAIN) == 0
    merged = json.loads((tmp_path / "q.json").read_text())["sections"]["A"]
    assert [row["seed"] for row in merged["rows"]] == [0, 1, 2]
    assert merged["rows"][:2] == first["rows"]
    f1s = [metrics(tmp_path, "A", seed)["final"]["test"]["f1"] for seed in (0, 1, 2)]
    assert merged["mean"]["f1"] == pytest.approx(statistics.fmean(f1s))
    assert merged["std"]["f1"] == pytest.approx(statistics.stdev(f1s))
    assert merged["header"]["seeds"] == "0,1,2" and merged["header"]["CPU"] == quality.cpu_name()
    assert list(table(section((tmp_path / "q.md").read_text(), "A"))) == ["0", "1", "2", "mean ± std"]
