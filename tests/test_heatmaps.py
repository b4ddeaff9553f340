"""Class activation map overlays and peaks, and scoring peaks against boxes."""
import json

import numpy as np
import pytest

from glasscuda import evaluate
from glasscuda.data.sampling import Normalizer
from glasscuda.heatmaps import inside_box, peak_location, upsample_bilinear, write_heatmaps
from glasscuda.models import MultiLabelNet

CONV_LAYERS = (0, 3, 6, 9)
HEAD = 13


def test_upsample_bilinear_closed_form():
    # 2 -> 4 with align_corners=False: sources at -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    got = upsample_bilinear(np.array([[1.0, 5.0]]), 1, 4)
    np.testing.assert_allclose(got, [[1.0, 2.0, 4.0, 5.0]], rtol=1e-15)
    ramp = np.add.outer(np.arange(3.0), 10 * np.arange(4.0))
    np.testing.assert_allclose(upsample_bilinear(ramp, 3, 4), ramp, rtol=1e-15)
    assert upsample_bilinear(np.full((2, 5, 5), 3.0), 7, 9).shape == (2, 7, 9)


def test_upsample_bilinear_matches_torch_when_installed(rng):
    torch = pytest.importorskip("torch")
    maps = rng.standard_normal((2, 3, 5, 4))
    expected = torch.nn.functional.interpolate(torch.from_numpy(maps), size=(20, 13), mode="bilinear",
                                               align_corners=False).numpy()
    np.testing.assert_allclose(upsample_bilinear(maps, 20, 13), expected, rtol=1e-12, atol=1e-12)


def test_peak_location_is_the_hottest_pixel_centre_as_x_then_y():
    heat = np.zeros((4, 8))
    heat[1, 6] = 1.0
    assert peak_location(heat) == (6.5 / 8, 1.5 / 4)


def pattern_detector(image_size=64, target_class=2):
    """A MultiLabelNet whose channel 0 passes the image through, and whose ``target_class`` reads it."""
    model = MultiLabelNet(image_size=image_size, seed=0)
    state = {name: np.zeros_like(value) for name, value in model.state_dict().items()}
    for index in CONV_LAYERS:
        weight = state[f"body.{index}.weight"]
        weight[0, 0, weight.shape[2] // 2, weight.shape[3] // 2] = 1.0
    state[f"body.{HEAD}.weight"][target_class, 0] = 1.0
    state[f"body.{HEAD}.bias"][:] = -0.25
    model.load_state_dict(state)
    return model


@pytest.mark.parametrize("top, left", [(36, 20), (20, 36), (18, 18), (40, 40)])
def test_heatmap_peaks_on_a_planted_pattern(tmp_path, top, left):
    model = pattern_detector()
    images = np.zeros((2, 1, 64, 64), np.float32)
    images[0, 0, top:top + 6, left:left + 6] = 1.0
    images[1, 0, 8:12, 50:54] = 1.0            # a pattern in another place, another image
    predicted = np.zeros((2, 4), int)
    predicted[:, 2] = 1
    probs = np.full((2, 4), 0.5)
    peaks = write_heatmaps(model, images, ["planted", "other"], ["no_defect", "a", "pattern", "b"], probs,
                           predicted, Normalizer([0.0], [1.0]), tmp_path)
    assert [(p.id, p.class_name) for p in peaks] == [("planted", "pattern"), ("other", "pattern")]
    # The maps' cells are 16 pixels wide with centres 4 apart (2, 6, 10, ...). Every cell that
    # overlaps the pattern reads 1; the hottest is the first of them, row-major.
    first_centre = lambda start: next(c for c in range(2, 64, 4) if c + 8 > start)  # noqa: E731
    assert (peaks[0].x * 64, peaks[0].y * 64) == (first_centre(left), first_centre(top))
    box = ((left + 3) / 64, (top + 3) / 64, 22 / 64, 22 / 64)
    assert not inside_box(peaks[1].x, peaks[1].y, box)
    overlay = tmp_path / "planted_pattern.png"
    assert overlay.stat().st_size > 0 and (tmp_path / "peaks.csv").exists()


def test_heatmaps_are_written_only_for_marked_classes(tmp_path):
    model = pattern_detector()
    images = np.random.default_rng(0).random((3, 1, 64, 64)).astype(np.float32)
    predicted = np.array([[0, 1, 0, 1], [0, 0, 0, 0], [0, 0, 1, 0]])
    peaks = write_heatmaps(model, images, ["a", "b", "c"], ["no_defect", "x", "y", "z"], np.zeros((3, 4)),
                           predicted, Normalizer([0.5], [0.25]), tmp_path, batch_size=2)
    assert [(p.id, p.class_name) for p in peaks] == [("a", "x"), ("a", "z"), ("c", "y")]
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["a_x.png", "a_z.png", "c_y.png"]
    rows = (tmp_path / "peaks.csv").read_text().splitlines()
    assert rows[0] == "id,class,probability,peak_x,peak_y" and len(rows) == 4


def write_annotated_set(root):
    (root / "test" / "img").mkdir(parents=True)
    (root / "test" / "txt").mkdir(parents=True)
    for stem in ("g1", "g2", "g3", "g4"):
        (root / "test" / "img" / f"{stem}.png").write_bytes(b"")
    (root / "test" / "txt" / "g1.txt").write_text("1 0.25 0.25 0.2 0.2\n2 0.75 0.75 0.1 0.1\n")
    (root / "test" / "txt" / "g2.txt").write_text("0 0.5 0.1 0.2 0.1\n")
    (root / "test" / "txt" / "g3.txt").write_text("2\n")          # a stain without a box
    # g4: no defect
    return root


def test_evaluate_scores_peaks_inside_true_boxes(tmp_path, capsys):
    root = write_annotated_set(tmp_path / "data")
    peaks = tmp_path / "peaks.csv"
    peaks.write_text("id,class,probability,peak_x,peak_y\n"
                     "g1,scratch,0.9,0.30,0.20\n"       # inside the scratch box: hit
                     "g1,stain,0.8,0.25,0.25\n"         # in the scratch box, not the stain's: miss
                     "g2,chipped_edge,0.7,0.5,0.14\n"   # inside: hit
                     "g2,scratch,0.6,0.5,0.5\n"         # g2 has no scratch: not scored
                     "g3,stain,0.9,0.5,0.5\n"           # no box to compare with: not scored
                     "G4.png,stain,0.9,0.5,0.5\n"       # no defect there: not scored
                     "zz,stain,0.9,0.5,0.5\n")          # not annotated
    preds = tmp_path / "preds.csv"
    preds.write_text("id,probability\ng1,0.9\ng2,0.8\ng3,0.7\ng4,0.1\n")
    code = evaluate.main(["--predictions", str(preds), "--annotations", str(root),
                          "--heatmap-peaks", str(peaks), "--out", str(tmp_path / "report")])
    out = capsys.readouterr().out
    assert code == 0
    assert "## Heatmap localisation" in out
    result = json.loads((tmp_path / "report" / "report.json").read_text())["heatmaps"]
    assert (result["scored"], result["inside"]) == (3, 2)
    assert result["rate"] == pytest.approx(2 / 3)
    assert result["per_class"]["stain"] == {"scored": 1, "inside": 0, "rate": 0.0}
    assert (result["class_not_present"], result["no_box_for_class"], result["not_in_annotations"]) == (2, 1, 1)


def test_evaluate_peaks_with_an_unknown_class_names_the_file_and_line(tmp_path, capsys):
    root = write_annotated_set(tmp_path / "data")
    peaks = tmp_path / "peaks.csv"
    peaks.write_text("id,class,probability,peak_x,peak_y\ng1,crack,0.9,0.3,0.2\n")
    preds = tmp_path / "preds.csv"
    preds.write_text("id,probability\ng1,0.9\ng2,0.8\n")
    code = evaluate.main(["--predictions", str(preds), "--annotations", str(root), "--heatmap-peaks", str(peaks)])
    err = capsys.readouterr().err
    assert code == 2 and "peaks.csv" in err and "line 2" in err and "crack" in err


def test_evaluate_peaks_need_annotations_with_boxes(tmp_path, capsys):
    peaks = tmp_path / "peaks.csv"
    peaks.write_text("id,class,probability,peak_x,peak_y\ng1,scratch,0.9,0.3,0.2\n")
    truth = tmp_path / "truth.csv"
    truth.write_text("id,labels\ng1,scratch\ng2,\n")
    preds = tmp_path / "preds.csv"
    preds.write_text("id,probability\ng1,0.9\ng2,0.2\n")
    code = evaluate.main(["--predictions", str(preds), "--annotations", str(truth), "--heatmap-peaks", str(peaks)])
    assert code == 2 and "dataset root" in capsys.readouterr().err
