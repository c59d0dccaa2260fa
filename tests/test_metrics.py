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
