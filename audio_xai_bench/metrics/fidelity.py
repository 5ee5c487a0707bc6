"""Fidelity and classification metrics (pure functions, no model code).

Fidelity (paper sec. IV-C, V-B1) scores a surrogate / interpreter against the classifier f's
outputs taken as ground truth; the same functions score a by-design model against the labels
(paper sec. V-A, Table I). Multiclass: top-k fidelity / accuracy. Multi-label: average precision
(scikit-learn), the authors' 11-threshold trapezoid AUPRC and max-F1 (L2I code
``calc_PRC_metrics``), the official DCASE 2020 task 5 AUPRC, and OpenMIC's weighted F1.

Inputs may be torch tensors or numpy arrays; the set-level metrics work in numpy (float64,
except that the 11-threshold AUPRC compares scores with thresholds in the scores' dtype).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "L2I_THRESHOLDS",
    "topk_hits",
    "topk_accuracy",
    "average_precision_macro_micro",
    "auprc_11pt",
    "auprc_dcase",
    "max_f1",
    "weighted_f1_openmic",
    "fit_class_thresholds",
    "METRIC_INFO",
]

#: The authors' threshold grid (L2I code, ``test()``: [0.05, 0.1, 0.2, ..., 0.9, 0.95] reversed).
L2I_THRESHOLDS: tuple[float, ...] = (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05)

#: DCASE 2020 task 5 evaluation (``src/metrics.py`` ``evaluate``): scores below this never
#: become thresholds.
DCASE_MIN_THRESHOLD = 0.01


def _np(x: Any, dtype: Any = None) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x.astype(dtype) if dtype is not None else x


def _check_2d(y_true: np.ndarray, scores: np.ndarray, mask: np.ndarray | None) -> None:
    if y_true.ndim != 2 or y_true.shape != scores.shape:
        raise ValueError(f"y_true and scores must both be (N, C); got {y_true.shape} and {scores.shape}")
    if mask is not None and mask.shape != y_true.shape:
        raise ValueError(f"mask must be (N, C) like y_true; got {mask.shape}")


# ---------------------------------------------------------------------------------------------
# Multiclass: top-k
# ---------------------------------------------------------------------------------------------
def topk_hits(scores: Tensor, reference_class: Tensor, k: int, ties: str = "pessimistic") -> Tensor:
    """Whether ``reference_class[b]`` is among the top-``k`` entries of ``scores[b]``.

    Paper sec. IV-C (eq. none, "top-k fidelity"): the fraction of samples where the class
    predicted by f is among the top-k classes predicted by the interpreter; the authors' code
    (``analyze``) tests ``pred_f in argsort(-theta)[:k]``. With ``reference_class`` = labels it is
    the usual top-k accuracy (ESC-50, paper Table I).

    Computed by ranks, batched: ``rank = #{j : s_j > s_ref} + (ties counted per rule)``, hit iff
    ``rank < k``. Tie rules (ties only matter for degenerate scores, e.g. a constant surrogate):

    - ``"pessimistic"`` (default): every other class tied with the reference ranks ahead of it,
      so a constant output never earns a hit by luck (top-1 of a constant row is a miss).
    - ``"optimistic"``: tied classes rank behind the reference.
    - ``"sklearn"``: tied classes with a larger index rank ahead, which reproduces
      ``sklearn.metrics.top_k_accuracy_score`` (stable mergesort ascending, then reversed).

    Args: scores (B, C) float; reference_class (B,) long; k >= 1.
    Returns: (B,) bool tensor on the scores' device.
    """
    if scores.dim() != 2:
        raise ValueError(f"scores must be (B, C), got {tuple(scores.shape)}")
    if k < 1:
        raise ValueError("k must be >= 1")
    ref = reference_class.to(device=scores.device, dtype=torch.long).view(-1, 1)
    s_ref = scores.gather(1, ref)  # (B, 1)
    greater = (scores > s_ref).sum(1)
    equal = scores == s_ref
    if ties == "pessimistic":
        rank = greater + equal.sum(1) - 1
    elif ties == "optimistic":
        rank = greater
    elif ties == "sklearn":
        idx = torch.arange(scores.shape[1], device=scores.device).view(1, -1)
        rank = greater + (equal & (idx > ref)).sum(1)
    else:
        raise ValueError(f"ties must be 'pessimistic', 'optimistic' or 'sklearn', not {ties!r}")
    return rank < k


def topk_accuracy(scores: Tensor, reference_class: Tensor, k: int, ties: str = "pessimistic") -> float:
    """Mean of :func:`topk_hits` (paper's top-k fidelity, sec. IV-C; top-k accuracy for labels).

    Cross-checked against ``sklearn.metrics.top_k_accuracy_score`` (``ties="sklearn"``, and any
    rule when there are no ties). Returns a fraction in [0, 1] (the paper prints %).
    """
    scores = torch.as_tensor(scores)
    reference_class = torch.as_tensor(reference_class)
    if scores.shape[0] == 0:
        return float("nan")
    return float(topk_hits(scores, reference_class, k, ties=ties).float().mean())


# ---------------------------------------------------------------------------------------------
# Multi-label: average precision (scikit-learn)
# ---------------------------------------------------------------------------------------------
def average_precision_macro_micro(y_true: Any, scores: Any, mask: Any | None = None) -> dict[str, Any]:
    """Macro and micro average precision exactly as ``sklearn.metrics.average_precision_score``.

    AP = sum_n (R_n - R_{n-1}) P_n (step rule, no interpolation; scikit-learn docs). Entries with
    ``mask == False`` (OpenMIC's unannotated labels) are dropped before anything is computed.

    - ``per_class``: AP of each class over its annotated rows; NaN for a class with no positive
      (AP is undefined there; scikit-learn would warn and return 0 for that class).
    - ``macro``: plain mean over the classes that have a positive; the skipped class indices are
      listed in ``skipped`` (so ``macro`` equals scikit-learn's ``average='macro'`` whenever no
      class is skipped and there is no mask).
    - ``micro``: AP of all annotated (row, class) entries pooled, i.e. ``average='micro'``.

    Args: y_true (N, C) bool / {0,1}; scores (N, C) float; mask (N, C) bool or None.
    """
    from sklearn.metrics import average_precision_score

    y = _np(y_true).astype(bool)
    s = _np(scores, np.float64)
    m = None if mask is None else _np(mask).astype(bool)
    _check_2d(y, s, m)
    per_class: list[float] = []
    skipped: list[int] = []
    for c in range(y.shape[1]):  # loop over classes only (C <= 50)
        keep = slice(None) if m is None else m[:, c]
        yc, sc = y[keep, c], s[keep, c]
        if yc.sum() == 0:
            per_class.append(float("nan"))
            skipped.append(c)
            continue
        per_class.append(float(average_precision_score(yc, sc)))
    valid = [v for v in per_class if not np.isnan(v)]
    yf, sf = (y.ravel(), s.ravel()) if m is None else (y[m], s[m])
    micro = float(average_precision_score(yf, sf)) if yf.any() else float("nan")
    return {
        "macro": float(np.mean(valid)) if valid else float("nan"),
        "micro": micro,
        "per_class": per_class,
        "skipped": skipped,
    }


# ---------------------------------------------------------------------------------------------
# Multi-label: the authors' 11-threshold AUPRC and max-F1 (L2I code calc_PRC_metrics)
# ---------------------------------------------------------------------------------------------
def _counts_strict(y: np.ndarray, s: np.ndarray, m: np.ndarray | None,
                   thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """tp, fp, fn of shape (n_thresholds, C) for the rule ``score > threshold`` (vectorised)."""
    pred = s[None, :, :] > thresholds[:, None, None]  # (T, N, C)
    yy = y[None]
    w = np.ones_like(y) if m is None else m
    tp = (pred & yy & w).sum(1).astype(np.float64)
    fp = (pred & ~yy & w).sum(1).astype(np.float64)
    fn = (~pred & yy & w).sum(1).astype(np.float64)
    return tp, fp, fn


def _trapezoid_auc(x: np.ndarray, y: np.ndarray) -> float:
    from sklearn.metrics import auc

    return float(auc(x, y))


def auprc_11pt(y_true: Any, scores: Any, mask: Any | None = None,
               thresholds: Sequence[float] = L2I_THRESHOLDS) -> dict[str, Any]:
    """The authors' fidelity AUPRC for SONYC-UST (L2I code ``test`` + ``calc_PRC_metrics``).

    Reference facts sec. 9. For each threshold t in [0.95, 0.9, 0.8, ..., 0.1, 0.05] (descending),
    predict ``score > t`` (strict) and count tp / fp / fn against ``y_true`` (f's binarised
    outputs for fidelity). Then, exactly as the code:

    - per class: P = (tp + 1e-9) / (tp + fp + 1e-9), R = tp / (tp + fn); the points (R=0, P=1) and
      (R=1, P=0) are added at the two ends, in threshold order (recall is then non-decreasing),
      and the area is ``sklearn.metrics.auc`` (trapezoid). ``macro`` = mean over classes.
      A class with no positive has R = 0/0 in the code (NaN); here it is NaN in ``per_class``,
      listed in ``skipped`` and left out of ``macro``.
    - micro: tp / fp / fn summed over classes, P = (1e-9 + TP) / (1e-9 + TP + FP),
      R = (1e-9 + TP) / (1e-9 + TP + FN), same end points and trapezoid.
    - ``max_f1``: max over the curve points (end points included, where F1 = 0) of the micro
      F1 = 2PR / (P + R) with those P and R.

    ``mask`` (N, C) bool drops unannotated entries from the counts (not in the code; SONYC has no
    mask). Returns dict(macro, micro, max_f1, per_class, skipped, thresholds).

    Scores are compared with the thresholds **in the scores' own floating dtype** (the authors
    compare float32 sigmoid outputs with a float32 threshold tensor), so a float32 score equal
    to ``float32(0.1)`` is *not* above the threshold 0.1; in float64 it would be (0.1 rounds up
    in float32). Non-float scores (ints, bools) are compared in float64.
    """
    y = _np(y_true).astype(bool)
    s = _np(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    m = None if mask is None else _np(mask).astype(bool)
    _check_2d(y, s, m)
    t = np.asarray(thresholds, dtype=np.float64)
    t_cmp = t.astype(s.dtype)  # comparison in the scores' dtype; reported values stay float64
    tp, fp, fn = _counts_strict(y, s, m, t_cmp)
    ones, zeros = np.ones((1,)), np.zeros((1,))
    with np.errstate(invalid="ignore", divide="ignore"):
        mac_p = (tp + 1e-9) / (tp + fp + 1e-9)
        mac_r = tp / (tp + fn)
    per_class: list[float] = []
    skipped: list[int] = []
    for c in range(y.shape[1]):
        if (tp[:, c] + fn[:, c])[0] == 0:
            per_class.append(float("nan"))
            skipped.append(c)
            continue
        r = np.concatenate([zeros, mac_r[:, c], ones])
        p = np.concatenate([ones, mac_p[:, c], zeros])
        per_class.append(_trapezoid_auc(r, p))
    TP, FP, FN = tp.sum(1), fp.sum(1), fn.sum(1)
    mic_p = np.concatenate([ones, (1e-9 + TP) / (1e-9 + TP + FP), zeros])
    mic_r = np.concatenate([zeros, (1e-9 + TP) / (1e-9 + TP + FN), ones])
    f1 = 2 * mic_p * mic_r / (mic_p + mic_r)
    valid = [v for v in per_class if not np.isnan(v)]
    return {
        "macro": float(np.mean(valid)) if valid else float("nan"),
        "micro": _trapezoid_auc(mic_r, mic_p) if (TP + FN)[0] > 0 else float("nan"),
        "max_f1": float(np.max(f1)),
        "per_class": per_class,
        "skipped": skipped,
        "thresholds": [float(v) for v in t],
    }


def max_f1(y_true: Any, scores: Any, mask: Any | None = None,
           thresholds: Sequence[float] = L2I_THRESHOLDS) -> float:
    """Micro F1 maximised over a threshold grid (paper Table IV "max-F1" for SONYC-UST).

    Grid: by default the authors' 11 thresholds [0.95, 0.9, 0.8, ..., 0.1, 0.05] with the strict
    rule ``score > t``, pooled tp / fp / fn over classes and the code's F1 (P and R with 1e-9
    smoothing, ``calc_PRC_metrics``), so it equals ``auprc_11pt(...)["max_f1"]``. Pass another
    ``thresholds`` sequence for a finer grid. ``mask`` drops unannotated entries.
    """
    return auprc_11pt(y_true, scores, mask=mask, thresholds=thresholds)["max_f1"]


def fit_class_thresholds(y_true: Any, scores: Any, mask: Any | None = None,
                         grid: Sequence[float] = L2I_THRESHOLDS,
                         fallback: float = 0.5) -> np.ndarray:
    """Per-class F1-maximising decision thresholds (the authors' ``compute_multilabel_threshold``,
    reference/l2i_protocol_facts.md sec. 9: class-specific thresholds chosen on the **training**
    loader against the true labels, from the grid {0.95, 0.9, ..., 0.1, 0.05}).

    For each class c and each t of ``grid``, predict ``score > t`` (strict, the rule of
    :func:`auprc_11pt`, compared in the scores' dtype) and take the t with the largest F1 =
    2TP / (2TP + FP + FN) over the annotated rows (``mask``). Ties go to the first t in
    ``grid`` order (the highest threshold for the default descending grid). A class with no
    positive in ``y_true`` has F1 = 0 everywhere and gets ``fallback``. The caller must pass
    training-split outputs: fitting on the split that is then scored would be selection on test.

    Args: y_true (N, C) labels; scores (N, C) probabilities. Returns a (C,) float64 array.
    """
    y = _np(y_true).astype(bool)
    s = _np(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    m = None if mask is None else _np(mask).astype(bool)
    _check_2d(y, s, m)
    t = np.asarray(grid, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"grid must be a non-empty sequence of thresholds, got {grid!r}")
    tp, fp, fn = _counts_strict(y, s, m, t.astype(s.dtype))  # (T, C)
    denom = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    best = t[np.argmax(f1, axis=0)]  # argmax returns the first maximum
    has_pos = (tp + fn)[0] > 0
    return np.where(has_pos, best, float(fallback))


# ---------------------------------------------------------------------------------------------
# Multi-label: official DCASE 2020 task 5 (SONYC-UST) coarse evaluation
# ---------------------------------------------------------------------------------------------
def _counts_geq(y: np.ndarray, s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN of one class for ``score >= t`` at each threshold t (searchsorted, O(N log N))."""
    pos = np.sort(s[y])
    neg = np.sort(s[~y])
    tp = pos.size - np.searchsorted(pos, t, side="left")
    fp = neg.size - np.searchsorted(neg, t, side="left")
    fn = pos.size - tp
    return tp, fp, fn


def _dcase_pr(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = tp / np.maximum(tp + fp, 0.5)
    r = tp / np.maximum(tp + fn, 0.5)
    return p, r


def _dcase_area(r: np.ndarray, p: np.ndarray, order: np.ndarray) -> float:
    recalls = np.concatenate([[0.0], r[order], [1.0]])
    precisions = np.concatenate([[1.0], p[order], [0.0]])
    return _trapezoid_auc(recalls, precisions)


def auprc_dcase(y_true: Any, scores: Any, micro_order: str = "official") -> dict[str, Any]:
    """Official DCASE 2020 task 5 (SONYC-UST v2) coarse-level AUPRC and micro-F1@0.5.

    Re-implements ``src/metrics.py`` (``evaluate`` in coarse mode, ``macro_averaged_auprc``,
    ``micro_averaged_auprc``) and ``evaluate_predictions.py`` (dataset facts sec. 1c):

    - thresholds of a class: its unique scores >= 0.01, plus 1.0, in descending order;
    - a clip is positive at threshold t iff ``score >= t``;
    - P = TP / max(TP + FP, 0.5) (so P = 0 when nothing is predicted), R = TP / max(TP + FN, 0.5);
    - per class the (R, P) points are sorted by recall, (0, 1) is put in front and (1, 0) at the
      end, area by ``sklearn.metrics.auc`` (trapezoid); ``macro`` = unweighted mean over classes
      (a class with no positive is kept, as the formula gives, and listed in ``no_positive``);
    - micro: thresholds = union of all classes' thresholds; at each t the counts of
      ``score >= t`` are summed over classes; same P, R, end points and trapezoid;
    - ``micro_f1``: pooled counts at ``score >= 0.5``, F = 2 / (1/P + 1/R), 0 when TP = 0.

    Order of points with equal recall: per class the table is in descending-threshold order and
    already sorted by recall, so the sort is stable and changes nothing. For micro the official
    code sorts an ascending-threshold table with ``np.argsort`` (default quicksort, not stable),
    so the order among equal recalls is implementation-defined (up to ~4e-4 in micro-AUPRC,
    dataset facts 1c(v)). ``micro_order="official"`` runs that same expression;
    ``micro_order="curve"`` uses the descending-threshold order (geometric curve order,
    deterministic everywhere).

    Differs from average precision by (i) trapezoid vs step rule, (ii) the 1.0 threshold adding
    a (R=0, P=0) point unless a score reaches 1.0, (iii) the 0.01 floor, (iv) the end points
    (see ``dataset_facts.md`` 1c). Returns dict(macro, micro, micro_f1, per_class, no_positive).
    """
    y = _np(y_true).astype(bool)
    s = _np(scores, np.float64)
    _check_2d(y, s, None)
    C = y.shape[1]
    per_class: list[float] = []
    class_thresholds: list[np.ndarray] = []
    for c in range(C):
        sc = s[:, c]
        t = np.unique(np.append(sc[sc >= DCASE_MIN_THRESHOLD], 1.0))[::-1]  # descending
        class_thresholds.append(t)
        tp, fp, fn = _counts_geq(y[:, c], sc, t)
        p, r = _dcase_pr(tp, fp, fn)
        per_class.append(_dcase_area(r, p, np.argsort(r, kind="stable")))
    # micro: union of thresholds, ascending (np.unique), pooled counts of score >= t
    t_all = np.unique(np.concatenate(class_thresholds))
    TP = np.zeros(t_all.size, dtype=np.int64)
    FP = np.zeros_like(TP)
    FN = np.zeros_like(TP)
    for c in range(C):
        tp, fp, fn = _counts_geq(y[:, c], s[:, c], t_all)
        TP += tp
        FP += fp
        FN += fn
    P, R = _dcase_pr(TP, FP, FN)
    if micro_order == "official":
        order = np.argsort(list(R))  # exactly the official expression (ascending-threshold table)
    elif micro_order == "curve":
        order = np.argsort(R[::-1], kind="stable")
        order = (t_all.size - 1) - order  # indices into the ascending table
    else:
        raise ValueError(f"micro_order must be 'official' or 'curve', not {micro_order!r}")
    micro = _dcase_area(R, P, order)
    # micro-F1 at 0.5: pooled counts with score >= 0.5
    pred = s >= 0.5
    tp5 = float((pred & y).sum())
    fp5 = float((pred & ~y).sum())
    fn5 = float((~pred & y).sum())
    p5 = tp5 / max(tp5 + fp5, 0.5)
    r5 = tp5 / max(tp5 + fn5, 0.5)
    f5 = 0.0 if tp5 == 0 else 2.0 / (1.0 / p5 + 1.0 / r5)
    return {
        "macro": float(np.mean(per_class)) if per_class else float("nan"),
        "micro": micro,
        "micro_f1": f5,
        "per_class": per_class,
        "no_positive": [c for c in range(C) if not y[:, c].any()],
    }


# ---------------------------------------------------------------------------------------------
# OpenMIC-2018 weighted F1
# ---------------------------------------------------------------------------------------------
def weighted_f1_openmic(y_true: Any, y_pred: Any, mask: Any | None = None) -> dict[str, Any]:
    """OpenMIC "average weighted F1" (paper sec. V-A; OpenMIC baseline notebook).

    For each class c, over the annotated entries only (``mask[:, c]``; all rows if None): the
    support-weighted mean of the F1 of the negative class and of the positive class,
    (n_neg F1_neg + n_pos F1_pos) / (n_neg + n_pos), which is
    ``sklearn.metrics.f1_score(y_true, y_pred, average='weighted')`` (zero_division -> 0). Then the
    plain mean over classes (``mean``). A class with no annotated entry is NaN in ``per_class``
    and left out of the mean. Binarisation (labels: ``Y_true >= 0.5``; predictions: a threshold,
    0.5 by default in the engine) is the caller's; the paper states neither (dataset facts 2b).
    Vectorised over classes.
    """
    y = _np(y_true).astype(bool)
    yp = _np(y_pred).astype(bool)
    m = np.ones_like(y) if mask is None else _np(mask).astype(bool)
    _check_2d(y, yp.astype(np.float64), m)
    tp = (y & yp & m).sum(0).astype(np.float64)
    fp = (~y & yp & m).sum(0).astype(np.float64)
    fn = (y & ~yp & m).sum(0).astype(np.float64)
    tn = (~y & ~yp & m).sum(0).astype(np.float64)
    n_pos, n_neg = tp + fn, tn + fp
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_pos = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), 0.0)
        f1_neg = np.where(2 * tn + fp + fn > 0, 2 * tn / (2 * tn + fp + fn), 0.0)
        w = (n_pos * f1_pos + n_neg * f1_neg) / (n_pos + n_neg)
    per_class = [float(v) for v in w]
    valid = w[~np.isnan(w)]
    return {"mean": float(valid.mean()) if valid.size else float("nan"), "per_class": per_class}


def _info() -> dict[str, Any]:
    from ..api import MetricInfo

    return {
        "top1": MetricInfo("top1", True, "paper sec. IV-C top-k fidelity; sklearn top_k_accuracy_score"),
        "top5": MetricInfo("top5", True, "paper sec. IV-C top-k fidelity; sklearn top_k_accuracy_score"),
        "ap_macro": MetricInfo("ap_macro", True, "sklearn.metrics.average_precision_score(average='macro')"),
        "ap_micro": MetricInfo("ap_micro", True, "sklearn.metrics.average_precision_score(average='micro')"),
        "auprc11_macro": MetricInfo("auprc11_macro", True, "L2I code calc_PRC_metrics (11 thresholds, trapezoid)"),
        "auprc11_micro": MetricInfo("auprc11_micro", True, "L2I code calc_PRC_metrics (11 thresholds, trapezoid)"),
        "max_f1": MetricInfo("max_f1", True, "L2I code calc_PRC_metrics: max micro-F1 over 11 thresholds"),
        "dcase_macro_auprc": MetricInfo("dcase_macro_auprc", True, "DCASE 2020 task 5 src/metrics.py"),
        "dcase_micro_auprc": MetricInfo("dcase_micro_auprc", True, "DCASE 2020 task 5 src/metrics.py"),
        "dcase_micro_f1": MetricInfo("dcase_micro_f1", True, "DCASE 2020 task 5 evaluate_predictions.py"),
        "weighted_f1": MetricInfo("weighted_f1", True, "OpenMIC baseline; sklearn f1_score(average='weighted') per class"),
    }


METRIC_INFO = _info()
