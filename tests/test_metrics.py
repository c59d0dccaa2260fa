"""Pixel metrics against sklearn; object matching on hand-drawn disks."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays
from sklearn import metrics as skm

from attention_unet import metrics

from .conftest import disks


def sklearn_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    y, p = true.ravel().astype(int), pred.ravel().astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "accuracy": skm.accuracy_score(y, p),
            "f1": skm.f1_score(y, p, average="binary"),
            "jaccard": skm.jaccard_score(y, p, average="binary"),
            "recall": skm.recall_score(y, p, average="binary"),
            "precision": skm.precision_score(y, p, average="binary"),
        }


@settings(max_examples=60, deadline=None, derandomize=True)
@given(arrays(bool, (6, 7)), arrays(bool, (6, 7)))
def test_pixel_scores_equal_sklearn(pred: np.ndarray, true: np.ndarray) -> None:
    ours, theirs = metrics.pixel_scores(pred, true), sklearn_scores(pred, true)
    assert ours == pytest.approx(theirs)


@pytest.mark.parametrize("pred_empty", [True, False])
def test_empty_masks_follow_sklearn_zero_division(pred_empty: bool) -> None:
    true = np.zeros((5, 5), bool)
    pred = np.zeros((5, 5), bool) if pred_empty else np.eye(5, dtype=bool)
    assert metrics.pixel_scores(pred, true) == pytest.approx(sklearn_scores(pred, true))


def test_object_counts_on_disks() -> None:
    true = disks((40, 40), [(10, 10), (10, 30), (30, 20)], 5)
    pred = disks((40, 40), [(10, 10), (11, 30), (30, 35)], 5)  # exact, shifted by 1, wrong place
    assert metrics.object_counts(true, pred, 0.5) == (2, 1, 1)
    assert metrics.object_counts(true, pred, 0.95) == (1, 2, 2)
    scores = metrics.object_scores(true, pred)
    assert scores["tp_fp_fn_ratio_at_0.5"] == pytest.approx(2 / 4)
    assert scores["relative_count_error"] == 0.0
    assert 0.25 < scores["dsb_score"] < 0.5


def test_merged_nuclei_count_as_one_miss_and_one_false_positive() -> None:
    true = disks((20, 30), [(10, 9), (10, 20)], 5)
    merged = (true > 0).astype(int)
    assert metrics.object_counts(true, merged, 0.5) == (0, 1, 2)
    assert metrics.object_scores(true, merged)["relative_count_error"] == 0.5


def test_dsb_score_of_empty_images() -> None:
    empty = np.zeros((5, 5), int)
    assert metrics.dsb_score(empty, empty) == 1.0
    assert metrics.dsb_score(empty, disks((5, 5), [(2, 2)], 1)) == 0.0


def _halves() -> np.ndarray:
    """Two 4 x 4 nuclei side by side (labels 1 and 2) in a 4 x 8 image."""
    labels = np.zeros((4, 8), int)
    labels[:, :4], labels[:, 4:] = 1, 2
    return labels


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        # (true, predicted): F1d, PQ, AJI, worked out by hand
        ("perfect", (1.0, 1.0, 1.0)),
        # one 32-px nucleus cut in two: each half has IoU 16/32 = 0.5, not > 0.5: no match;
        # AJI pairs the nucleus with one half (16 / 32) and adds the other half's 16 px: 16 / 48
        ("split", (0.0, 0.0, 16 / 48)),
        # two nuclei merged into one prediction: no match; both pair with it: (16 + 16) / (32 + 32)
        ("merged", (0.0, 0.0, 0.5)),
        # one of two missed: 2TP / (2TP + FP + FN) = 2 / 3, matched IoU 1; AJI 16 / (16 + 16)
        ("missed", (2 / 3, 2 / 3, 0.5)),
    ],
)
def test_pathology_measures_on_hand_computed_cases(case: str, expected: tuple[float, float, float]) -> None:
    halves = _halves()
    whole = (halves > 0).astype(int)
    true, pred = {
        "perfect": (halves, halves),
        "split": (whole, halves),
        "merged": (halves, whole),
        "missed": (halves, np.where(halves == 1, 1, 0)),
    }[case]
    scores = metrics.object_scores(true, pred)
    assert (scores["f1d"], scores["pq"], scores["aji"]) == pytest.approx(expected)


def test_pathology_measures_of_empty_images() -> None:
    empty = np.zeros((4, 4), int)
    assert metrics.detection_scores(empty, empty) == {"f1d": 1.0, "pq": 1.0} and metrics.aji(empty, empty) == 1.0
    one = empty.copy()
    one[1:3, 1:3] = 1
    assert metrics.detection_scores(one, empty)["f1d"] == 0.0 and metrics.aji(one, empty) == 0.0
    assert metrics.aji(empty, one) == 0.0
