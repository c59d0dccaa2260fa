"""Pixel and object metrics, each named for what it computes.

Pixel metrics follow ``sklearn.metrics`` on the flattened binary masks of one image
(``average="binary"``, ``zero_division`` at its default, i.e. 0 when a ratio is undefined):
accuracy, F1 (= Dice), Jaccard (= IoU), recall, precision. Reduction: per image, then the mean
over images.

Object metrics match predicted to true instances by IoU (a match needs IoU > threshold; at
thresholds >= 0.5 a match is unique, so no assignment problem arises):

>>> import numpy as np
>>> true = np.zeros((8, 8), int); true[1:4, 1:4] = 1; true[5:8, 5:8] = 2
>>> pred = np.zeros((8, 8), int); pred[1:4, 1:4] = 7
>>> object_counts(true, pred, 0.5)
(1, 0, 1)
>>> round(dsb_score(true, pred), 3)
0.5
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

PIXEL_METRICS = ("accuracy", "f1", "jaccard", "recall", "precision")
IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 1.0, 0.05), 2))


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def pixel_counts(pred: np.ndarray, true: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) of two binary masks."""
    pred, true = np.asarray(pred, bool).ravel(), np.asarray(true, bool).ravel()
    tp = int(np.count_nonzero(pred & true))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(true)) - tp
    return tp, fp, fn, pred.size - tp - fp - fn


def pixel_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Accuracy, F1, Jaccard, recall, precision of one image, as sklearn computes them."""
    tp, fp, fn, tn = pixel_counts(pred, true)
    return {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "jaccard": _ratio(tp, tp + fp + fn),
        "recall": _ratio(tp, tp + fn),
        "precision": _ratio(tp, tp + fp),
    }


def mean_scores(rows: Iterable[dict[str, float]], keys: Iterable[str]) -> dict[str, float]:
    """Mean over images of each key (the per-image-then-mean reduction)."""
    rows = list(rows)
    return {k: float(np.mean([r[k] for r in rows])) if rows else float("nan") for k in keys}


def overlaps(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels shared by every true instance (rows) and every predicted one (columns), the true
    instances' areas, the predicted instances' areas); background left out."""
    true_ids, true_inv = np.unique(true, return_inverse=True)
    pred_ids, pred_inv = np.unique(pred, return_inverse=True)
    overlap = np.zeros((len(true_ids), len(pred_ids)), np.int64)
    np.add.at(overlap, (true_inv.ravel(), pred_inv.ravel()), 1)
    # drop background rows/columns (label 0) after counting areas
    area_true, area_pred = overlap.sum(1), overlap.sum(0)
    rows, cols = true_ids > 0, pred_ids > 0
    return overlap[rows][:, cols], area_true[rows], area_pred[cols]


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every true instance (rows) and every predicted instance (columns)."""
    overlap, area_true, area_pred = overlaps(true, pred)
    union = area_true[:, None] + area_pred[None, :] - overlap
    return np.where(union > 0, overlap / np.maximum(union, 1), 0.0)


def aji(true: np.ndarray, pred: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017, IEEE TMI 36(7)): each true nucleus is paired
    with the predicted one of highest IoU with it; the pairs' intersections over their unions,
    the unions also counting unpaired true nuclei and every predicted nucleus no true one chose.
    1.0 when both are empty.

    >>> t = np.zeros((4, 8), int); t[:, :4] = 1; t[:, 4:] = 2
    >>> aji(t, t), aji(t, (t > 0).astype(int))  # perfect; a merged pair: 16 / 32 twice over
    (1.0, 0.5)
    """
    overlap, area_true, area_pred = overlaps(true, pred)
    if not len(area_true) and not len(area_pred):
        return 1.0
    union = area_true[:, None] + area_pred[None, :] - overlap
    iou = np.where(union > 0, overlap / np.maximum(union, 1), 0.0)
    intersection, total = 0, 0
    used = np.zeros(len(area_pred), bool)
    for i in range(len(area_true)):
        j = int(np.argmax(iou[i])) if len(area_pred) else -1
        if j < 0 or overlap[i, j] == 0:
            total += int(area_true[i])
            continue
        intersection += int(overlap[i, j])
        total += int(union[i, j])
        used[j] = True
    total += int(area_pred[~used].sum())
    return _ratio(intersection, total)


def detection_scores(true: np.ndarray, pred: np.ndarray, iou: np.ndarray | None = None) -> dict[str, float]:
    """Detection F1 at IoU 0.5 (F1d = 2TP / (2TP + FP + FN)) and panoptic quality (Kirillov et al.
    2019: F1d times the mean IoU of the matched pairs); both 1.0 when both images are empty.

    >>> t = np.zeros((4, 8), int); t[:, :4] = 1; t[:, 4:] = 2
    >>> detection_scores(t, t)
    {'f1d': 1.0, 'pq': 1.0}
    >>> detection_scores(t, np.where(t == 1, 1, 0))  # one missed
    {'f1d': 0.6666666666666666, 'pq': 0.6666666666666666}
    """
    iou = iou_matrix(true, pred) if iou is None else iou
    if iou.shape[0] == 0 and iou.shape[1] == 0:
        return {"f1d": 1.0, "pq": 1.0}
    tp, fp, fn = object_counts(true, pred, 0.5, iou)
    f1d = _ratio(2 * tp, 2 * tp + fp + fn)
    matched = iou[iou > 0.5]
    return {"f1d": f1d, "pq": f1d * float(matched.mean()) if tp else 0.0}


def object_counts(
    true: np.ndarray, pred: np.ndarray, threshold: float, iou: np.ndarray | None = None
) -> tuple[int, int, int]:
    """(TP, FP, FN) instances, a match being a pair with IoU > threshold (unique for threshold >= 0.5)."""
    iou = iou_matrix(true, pred) if iou is None else iou
    tp = int(np.count_nonzero(iou > threshold))
    return tp, iou.shape[1] - tp, iou.shape[0] - tp


def dsb_score(true: np.ndarray, pred: np.ndarray) -> float:
    """The DSB-2018 score of one image: mean over IoU thresholds 0.5..0.95 of TP / (TP + FP + FN);
    1.0 when both are empty."""
    iou = iou_matrix(true, pred)
    if iou.shape == (0, 0):
        return 1.0
    values = []
    for t in IOU_THRESHOLDS:
        tp, fp, fn = object_counts(true, pred, t, iou)
        values.append(_ratio(tp, tp + fp + fn))
    return float(np.mean(values))


def object_scores(true: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Per-image object metrics: DSB-2018 score, TP/(TP+FP+FN) at IoU 0.5, relative count error,
    and pathology's detection F1 (F1d), panoptic quality (PQ) and AJI."""
    iou = iou_matrix(true, pred)
    tp, fp, fn = object_counts(true, pred, 0.5, iou)
    n_true, n_pred = iou.shape
    return {
        "dsb_score": dsb_score(true, pred),
        "tp_fp_fn_ratio_at_0.5": _ratio(tp, tp + fp + fn) if (n_true or n_pred) else 1.0,
        "relative_count_error": _ratio(abs(n_pred - n_true), n_true) if n_true else float(n_pred > 0),
        **detection_scores(true, pred, iou),
        "aji": aji(true, pred),
        "n_true": float(n_true),
        "n_pred": float(n_pred),
    }
