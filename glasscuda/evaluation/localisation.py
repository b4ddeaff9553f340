"""How often a heatmap's peak falls inside a true box of its class."""
from __future__ import annotations

from pathlib import Path

from ..heatmaps import inside_box
from .annotations import Annotations
from .inputs import EvaluationError, column_index, normalise_id, parse_score, read_csv


def heatmap_localisation(path: str | Path, annotations: Annotations) -> dict:
    """How often a heatmap's peak falls inside a true box of its class.

    Reads the ``peaks.csv`` that ``predict --heatmaps`` writes (one row per
    image and predicted defect: id, class, peak_x, peak_y in normalised image
    coordinates). A peak counts when its image truly has that class and that
    class has at least one located box there; it is a hit when it lies inside
    one of them.
    """
    if not annotations.boxes:
        raise EvaluationError(f"--heatmap-peaks needs the defects' boxes: give a dataset root as "
                              f"--annotations ({annotations.path} carries labels only)")
    header, rows = read_csv(path)
    hint = "expected the peaks.csv written by python -m glasscuda.predict --heatmaps"
    index = {name: column_index(path, header, name, hint) for name in ("id", "class", "peak_x", "peak_y")}
    truth = dict(zip(annotations.ids, zip(annotations.defects, annotations.boxes)))
    per_class = {name: {"scored": 0, "inside": 0} for name in annotations.classes}
    unmatched = wrong_class = unlocated = 0
    for line, cells in rows:
        name = cells[index["class"]].strip()
        if name not in per_class:
            raise EvaluationError(f"{path}: line {line}: unknown class {name!r} "
                                  f"(known: {', '.join(annotations.classes)})")
        x, y = (parse_score(path, line, column, cells[index[column]]) for column in ("peak_x", "peak_y"))
        key = normalise_id(cells[index["id"]])
        if key not in truth:
            unmatched += 1
            continue
        present, located = truth[key]
        boxes = [box for box_class, box in located if box_class == name]
        if name not in present:
            wrong_class += 1
        elif not boxes:
            unlocated += 1
        else:
            per_class[name]["scored"] += 1
            per_class[name]["inside"] += any(inside_box(x, y, box) for box in boxes)
    for counts in per_class.values():
        counts["rate"] = counts["inside"] / counts["scored"] if counts["scored"] else None
    scored = sum(c["scored"] for c in per_class.values())
    inside = sum(c["inside"] for c in per_class.values())
    return {
        "peaks": str(path),
        "rows": len(rows),
        "scored": scored,
        "inside": inside,
        "rate": inside / scored if scored else None,
        "per_class": per_class,
        "not_in_annotations": unmatched,
        "class_not_present": wrong_class,
        "no_box_for_class": unlocated,
    }
