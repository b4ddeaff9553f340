"""The multi-label job's pieces: several defects per image, the decision rule, test-time augmentation."""
import numpy as np
import pytest

from glasscuda import training
from glasscuda.data import generate_synthetic, load_split
from glasscuda.data.sampling import Normalizer
from glasscuda.models import MultiLabelNet
from glasscuda.tasks.multilabel import decide, report, targets_of

NAMES = ["no_defect", "chipped_edge", "scratch", "stain"]


@pytest.fixture(scope="module")
def glass(tmp_path_factory):
    root = generate_synthetic(tmp_path_factory.mktemp("glass") / "set", n_train=40, n_test=0, image_size=32,
                              defect_rate=0.5, seed=11, progress=False)
    return root, load_split(root, "train", image_size=32, progress=False)


def test_targets_mark_every_defect_of_an_image_with_several(glass):
    root, data = glass
    targets = targets_of(data)
    several = 0
    for row, stem in zip(targets, data.ids):
        label_file = root / "train" / "txt" / f"{stem}.txt"
        classes = {int(line.split()[0]) for line in label_file.read_text().splitlines()} if label_file.exists() else set()
        expected = np.zeros(4, np.float32)
        expected[0] = not classes
        expected[[1 + c for c in classes]] = 1
        np.testing.assert_array_equal(row, expected, err_msg=stem)
        several += len(classes) > 1
    assert several >= 2


def test_decision_rule_reports_every_defect_that_passes_and_no_defect_only_alone():
    thresholds = [0.5, 0.4, 0.6, 0.7]
    probs = np.array([[0.9, 0.5, 0.6, 0.1],    # two defects pass: both, and not no_defect
                      [0.9, 0.1, 0.1, 0.1],    # none passes: no_defect
                      [0.1, 0.1, 0.1, 0.1],    # none passes, no_defect does not either: still no_defect
                      [0.2, 0.4, 0.59, 0.7]])  # at the threshold counts as passing
    np.testing.assert_array_equal(decide(probs, thresholds), [[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1]])


def test_report_counts_each_defect_of_a_multi_defect_image():
    truth = np.array([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1]])
    probs = np.array([[0.1, 0.9, 0.9, 0.1], [0.9, 0.1, 0.1, 0.1], [0.1, 0.1, 0.9, 0.2]])
    result = report(truth, probs, [0.5] * 4, NAMES)
    assert result["per_class"]["scratch"]["f1"] == 1.0
    assert result["per_class"]["stain"]["recall"] == 0.0
    # 5 true labels (image 0: two, image 1: no_defect, image 2: two); 4 found, no false alarm
    assert result["micro_precision"] == 1.0 and result["micro_recall"] == pytest.approx(4 / 5)


def symmetric_images(rng, n, size):
    quarter = rng.random((n, 1, size // 2, size // 2)).astype(np.float32)
    top = np.concatenate([quarter, quarter[..., ::-1]], axis=3)
    return np.ascontiguousarray(np.concatenate([top, top[:, :, ::-1, :]], axis=2))


def test_tta_leaves_a_flip_symmetric_input_unchanged(rng):
    model = MultiLabelNet(image_size=32, seed=3)
    images = symmetric_images(rng, 3, 32)
    assert np.array_equal(images, images[..., ::-1]) and np.array_equal(images, images[:, :, ::-1])
    normalizer = Normalizer([0.5], [0.25])
    plain = training.predict_logits(model, images, normalizer, tta=False)
    averaged = training.predict_logits(model, images, normalizer, tta=True)
    np.testing.assert_allclose(averaged, plain, rtol=1e-5, atol=1e-5)


def test_tta_is_the_mean_probability_of_the_image_and_its_two_flips(rng):
    model = MultiLabelNet(image_size=32, seed=3)
    images = rng.random((4, 1, 32, 32)).astype(np.float32)
    normalizer = Normalizer([0.5], [0.25])
    views = [images, images[..., ::-1], images[:, :, ::-1]]
    probs = np.mean([training.probabilities(training.predict_logits(model, np.ascontiguousarray(v), normalizer))
                     for v in views], axis=0)
    got = training.probabilities(training.predict_logits(model, images, normalizer, tta=True))
    np.testing.assert_allclose(got, probs, rtol=1e-5)
    plain = training.probabilities(training.predict_logits(model, images, normalizer))
    assert not np.allclose(got, plain, rtol=1e-5)
