"""The evaluation report as Markdown."""
from __future__ import annotations

from ..reports import format_value, markdown_table
from .inputs import ID_NORMALISATION
from .report import EvaluationReport


def _render_inputs(report: dict) -> list[str]:
    inputs = report["inputs"]
    lines = [
        "## Inputs",
        "",
        f"- predictions: {inputs['predictions']} ({inputs['task']}; id column "
        f"'{inputs['id_column']}', scores {', '.join(inputs['score_columns'])})",
        f"- annotations: {inputs['annotations']}",
    ]
    stored = inputs["stored_label_thresholds"]
    if stored is not None:
        if not stored["consistent"]:
            lines.append("- the file's label column does not follow any single threshold on its probabilities")
        else:
            low = "0" if stored["greater_than"] is None else format_value(stored["greater_than"])
            high = "1" if stored["at_most"] is None else format_value(stored["at_most"])
            lines.append(f"- the file's label column matches a stored threshold in ({low}, {high}]")
    return lines + [""]


def _render_join(report: dict) -> list[str]:
    summary = report["join"]
    lines = [
        "## Join",
        "",
        markdown_table(
            [
                ("matched", summary["matched"]),
                ("only in predictions", summary["only_in_predictions"]),
                ("only in annotations", summary["only_in_annotations"]),
            ],
            headers=["ids", "count"],
        ),
        "",
    ]
    for key, label in (
        ("sample_only_in_predictions", "only in predictions"),
        ("sample_only_in_annotations", "only in annotations"),
    ):
        if summary[key]:
            lines.append(f"- e.g. {label}: {', '.join(summary[key])}")
    lines.append(f"- {ID_NORMALISATION}")
    return lines + [""]


def _render_truth(report: dict) -> list[str]:
    rows = [(name, c["positives"], c["negatives"]) for name, c in report["truth"].items()]
    return ["## Truth in the matched set", "", markdown_table(rows, headers=["class", "positives", "negatives"]), ""]


def _render_single_class(report: dict) -> list[str]:
    if not report["single_class"]:
        return []
    if report["single_class_overall"]:
        lines = [
            "## The matched set holds a single class",
            "",
            "Precision, recall and F1 are undefined or meaningless here, so none is "
            "reported, and there is no threshold sweep or operating point.",
            "",
        ]
    else:
        lines = [
            "## Classes with a single truth value",
            "",
            "These classes are left out of the metrics table, the threshold sweep and "
            "the operating points.",
            "",
        ]
    for name, block in report["single_class"].items():
        distribution = block["score_distribution"]
        keys = ["mean", "std", "min", "p05", "p25", "median", "p75", "p95", "max"]
        lines += [
            f"### {name}",
            "",
            block["explanation"],
            "",
            "Score distribution:",
            "",
            markdown_table([[distribution[k] for k in keys]], headers=keys, align=["right"] * len(keys)),
            "",
            "Fraction of images at or above each threshold:",
            "",
            markdown_table(
                [(row["threshold"], row["count"], row["fraction_above"]) for row in block["fraction_above"]],
                headers=["threshold", "images", "fraction"],
                float_format=".4g",
                align=["right"] * 3,
            ),
            "",
        ]
    return lines


def _render_metrics(report: dict) -> list[str]:
    if report["single_class_overall"]:
        return []
    result = report["metrics"]
    single = report["single_class"]
    if report["inputs"]["task"] == "binary":
        name = report["inputs"]["classes"][0]
        per_class = {name: result}
    else:
        per_class = result["per_class"]
    rows = [
        (name, m["threshold"], m["precision"], m["recall"], m["f1"], m["support"], m["n"])
        for name, m in per_class.items()
        if name not in single
    ]
    lines = [
        "## Metrics at the chosen threshold",
        "",
        markdown_table(rows, headers=["class", "threshold", "precision", "recall", "F1", "positives", "images"]),
        "",
    ]
    if report["inputs"]["task"] == "multilabel":
        lines += [
            f"- micro-F1 (pooled over all classes): {format_value(result['micro_f1'])}",
            f"- macro-F1 (mean over {', '.join(result['macro_f1_classes'])}): "
            f"{format_value(result['macro_f1'])}",
            "",
            "Confusion matrices:",
            "",
            markdown_table(
                [
                    (name, m[0][0], m[0][1], m[1][0], m[1][1])
                    for name, m in result["confusion_matrices"].items()
                ],
                headers=["class", "TN", "FP", "FN", "TP"],
            ),
            "",
        ]
    return lines


def _render_sweep(report: dict) -> list[str]:
    if not report["sweep"]:
        return []
    summary = [
        (
            name,
            s["threshold"],
            s["precision"],
            s["recall"],
            s["f1"],
            s["pr_optimum_threshold"],
            s["pr_optimum_f1"],
        )
        for name, s in report["sweep"].items()
    ]
    lines = [
        "## Threshold sweep",
        "",
        "Best threshold on the grid 0.10…0.95 (ties go to the lower threshold) and "
        "the exact F1 optimum over every distinct score:",
        "",
        markdown_table(
            summary,
            headers=["class", "best threshold", "precision", "recall", "F1", "F1-optimal threshold", "optimal F1"],
        ),
        "",
    ]
    for name, s in report["sweep"].items():
        lines += [
            f"### {name}: threshold table",
            "",
            markdown_table(
                [(r["threshold"], r["precision"], r["recall"], r["f1"], r["fraction_above"]) for r in s["table"]],
                headers=["threshold", "precision", "recall", "F1", "fraction above"],
                align=["right"] * 5,
            ),
            "",
        ]
    return lines


def _render_operating_points(report: dict) -> list[str]:
    rows = []
    for name, points in report["operating_points"].items():
        for p in points:
            requirement = f"{p['requirement']} >= {p['target']:g}"
            if p["reachable"]:
                rows.append((name, requirement, p["threshold"], p["precision"], p["recall"], p["f1"]))
            else:
                rows.append((name, requirement, p["reason"], None, None, None))
    if not rows:
        return []
    return [
        "## Operating points",
        "",
        markdown_table(rows, headers=["class", "requirement", "threshold", "precision", "recall", "F1"]),
        "",
    ]


def _render_calibration(report: dict) -> list[str]:
    result = report["calibration"]
    if result is None:
        return []
    lines = [
        "## Calibration (temperature scaling)",
        "",
        f"- fitted on {result['fit_n']} images ({result['source']}"
        + (f", fraction {result['fraction']:g}, seed {result['seed']}" if result["source"] == "split" else "")
        + f"); measured on {result['eval_n']} images: {result['eval_set']}",
        f"- ECE: {result['n_bins']} equal-width bins, {result['ece_definition']}",
        "",
        markdown_table(
            [
                (name, c["temperature"], c["ece_before"], c["ece_after"], c["nll_before"], c["nll_after"])
                for name, c in result["per_class"].items()
            ]
            + [("all outputs", None, result["ece_before"], result["ece_after"], result["nll_before"], result["nll_after"])],
            headers=["class", "temperature", "ECE before", "ECE after", "NLL before", "NLL after"],
        ),
        "",
    ]
    for note in result["notes"] + ([result["overlap_note"]] if "overlap_note" in result else []):
        lines.append(f"- {note}")
    return lines + ([""] if result["notes"] or "overlap_note" in result else [])


def _render_heatmaps(report: dict) -> list[str]:
    result = report.get("heatmaps")
    if not result:
        return []
    lines = ["## Heatmap localisation", "",
             f"Peaks from {result['peaks']}: a peak is scored when its image truly has that defect "
             "and a box for it; it counts when it lies inside one of those boxes.", ""]
    rows = [{"class": name, "scored": c["scored"], "inside a box": c["inside"], "rate": c["rate"]}
            for name, c in result["per_class"].items()]
    rows.append({"class": "all", "scored": result["scored"], "inside a box": result["inside"],
                 "rate": result["rate"]})
    lines += [markdown_table(rows, float_format=".3f"), ""]
    lines.append(f"Not scored: {result['class_not_present']} peak(s) of a class the image does not have, "
                 f"{result['no_box_for_class']} without a box of their class, "
                 f"{result['not_in_annotations']} of images not in the annotations.")
    return lines + [""]


def render_markdown(report: EvaluationReport) -> str:
    """The report as Markdown for people."""
    report = report.to_dict()
    lines = ["# glasscuda evaluation", ""]
    for section in (
        _render_inputs,
        _render_join,
        _render_truth,
        _render_single_class,
        _render_metrics,
        _render_sweep,
        _render_operating_points,
        _render_calibration,
        _render_heatmaps,
    ):
        lines += section(report)
    if report.get("files"):
        lines += ["## Files written", ""] + [f"- {path}" for path in report["files"]] + [""]
    return "\n".join(lines).rstrip() + "\n"
