"""Lining predictions up with the truth on their normalised ids."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .annotations import Annotations, truth_matrix
from .inputs import ID_NORMALISATION, SAMPLE_SIZE, EvaluationError, Predictions


@dataclass
class Join:
    """Predictions and truth lined up on their normalised ids.

    Attributes
    ----------
    ids : list of str
        Matched ids, in prediction-file order.
    scores, truth : numpy.ndarray of shape (M, K)
    only_in_predictions, only_in_annotations : list of str
        Ids (as written) found on one side only, sorted.
    """

    ids: list
    scores: np.ndarray
    truth: np.ndarray
    only_in_predictions: list = field(default_factory=list)
    only_in_annotations: list = field(default_factory=list)

    def summary(self, sample_size: int = SAMPLE_SIZE) -> dict:
        """Counts and samples of the join, for the report."""
        return {
            "matched": len(self.ids),
            "only_in_predictions": len(self.only_in_predictions),
            "only_in_annotations": len(self.only_in_annotations),
            "sample_only_in_predictions": self.only_in_predictions[:sample_size],
            "sample_only_in_annotations": self.only_in_annotations[:sample_size],
        }


def join(predictions: Predictions, annotations: Annotations) -> Join:
    """Line predictions up with the truth on their normalised ids.

    Raises
    ------
    EvaluationError
        When no id is common to both sides.
    """
    truth_by_id = dict(zip(annotations.ids, annotations.defects))
    predicted_ids = set(predictions.ids)
    rows = [i for i, key in enumerate(predictions.ids) if key in truth_by_id]
    only_predicted = sorted(raw for raw, key in zip(predictions.raw_ids, predictions.ids) if key not in truth_by_id)
    only_annotated = sorted(raw for raw, key in zip(annotations.raw_ids, annotations.ids) if key not in predicted_ids)
    if not rows:
        raise EvaluationError(
            f"{predictions.path}: no id in common with {annotations.path} "
            f"({len(predictions.ids)} prediction ids, e.g. {', '.join(predictions.raw_ids[:3])}; "
            f"{len(annotations.ids)} annotated ids, e.g. {', '.join(annotations.raw_ids[:3])}); "
            + ID_NORMALISATION
        )
    ids = [predictions.ids[i] for i in rows]
    return Join(
        ids=ids,
        scores=predictions.scores[rows],
        truth=truth_matrix([truth_by_id[key] for key in ids], predictions.classes),
        only_in_predictions=only_predicted,
        only_in_annotations=only_annotated,
    )
