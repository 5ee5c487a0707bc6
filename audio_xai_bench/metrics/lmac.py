"""The L-MAC protocol's metrics (Paissan, Subakan & Ravanelli, "Posthoc interpretation via
Listenable Maps for Audio Classifiers", 2024) as SpeechBrain's ESC-50 interpret recipe computes
them (``recipes/ESC50/interpret/interpreter_brain.py``: ``compute_AI``, ``compute_AD``,
``compute_AG``, ``compute_fidelity``, ``compute_sparseness``, ``compute_complexity``, fed by
``train_lmac.py`` / ``train_l2i.py``; SPS and COMP call Quantus' ``Sparseness`` and
``Complexity`` with ``abs=True`` and the default ``normalise_by_max``).

Notation for one explained pair (clip x, class c): ``p`` = the explained model's probabilities
on x, ``o`` = its probabilities on the **masked-in** input x_in (only what the explanation
keeps), ``y_c = p[c]``, ``o_c = o[c]``; ``M`` (F, T) the explanation's mask of X.
The recipe takes c = argmax p (multiclass); for multilabel tasks the suite uses each
explained class (every class with p above ``eval.threshold``), as for FF.

Per pair (the recipe's values, in percent where it multiplies by 100):

- **AI** (average increase) = 100 · [y_c < o_c]: masking-in raised the class's confidence.
  Higher is better.
- **AD** (average drop) = 100 · max(0, y_c − o_c) / (y_c + 1e-10). Lower is better.
  *Departure*: the recipe's ``compute_AD`` applies ``softmax`` to inputs that
  ``train_lmac.py`` / ``train_l2i.py`` have already soft-maxed (AI and AG do not), which squashes
  AD towards 0 for 50 classes; the suite applies the model's probabilities once, the definition
  of the L-MAC paper (after Chattopadhay et al. 2018, Grad-CAM++).
- **AG** (average gain) = 100 · max(0, o_c − y_c) / (1 − y_c + 1e-10). Higher is better.
- **Fid-In** (input fidelity) = 100 · [argmax o = argmax p] (recipe ``compute_fidelity`` with
  k = 1: the masked-in input keeps the model's decision). Multilabel *extension*: o_c > the
  class's threshold (``eval.threshold``, the one that chose the pair: still predicted). Higher is better. The recipe reports it
  as a share; the suite reports percent like AI/AD/AG.
- **SPS** (sparseness, Chalasani et al. 2020 via Quantus ``Sparseness``): the Gini index of
  a = |M| / max|M| + 1e-7 flattened and sorted ascending, G = Σ_i (2i − n − 1) a_(i) /
  (n Σ_i a_(i)). In [0, 1); higher is sparser (better).
- **COMP** (complexity, Bhatt et al. 2020 via Quantus ``Complexity``): the entropy
  −Σ_i q_i ln(q_i + 1e-12) of q = |M| / Σ|M|. In [0, ln n]; lower is better.

The recipe averages each value over the test clips (SPS and COMP first per batch through
Quantus' ``return_aggregate``, over a batch of 1 in its ``eval.py``, which is the per-pair
value computed here; Quantus normalises by the max over the whole batch, so per pair equals
a batch of 1). A pair whose mask is all zero has no SPS / COMP (the recipe skips such maps
and drops NaN COMP): NaN here, left out of the mean, and counted in ``lmac/n_empty``.

What the masked-in input is. The recipe multiplies the log1p STFT by the mask and feeds
``log1p(mel(expm1(·)))`` straight to the classifier. The suite builds x_in = INV(X_in, P_x)
and re-analyses it, exactly as it does for FF (eq. 7), so the interpretation is the audio a
listener hears: with L = {k : r_k > τ} at the listening threshold τ (``eval.listen_tau``),
X_in = Σ_{k∈L} X_k and M = X_in / X (0 where X = 0) — for NMF components this is the
recipe's L2I mask ``W_L H_L / (W H)``, for region methods the 0/1 gate. The ``_soft``
variants use the continuous mask every explanation has, M = Σ_k max(r_k, 0) X_k / X (in
[0, 1] since r_k ≤ 1 and Σ_k X_k ≤ X; L-MAC's own sigmoid mask is of this kind), and
X_in = M · X.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..api import MetricInfo

__all__ = ["EPS", "mask_of", "soft_mask_of", "average_increase", "average_drop",
           "average_gain", "input_fidelity", "sparseness", "complexity", "pair_values",
           "summarize", "METRIC_INFO"]

EPS = 1e-10  # interpreter_brain.py ``eps``


def _check(p: Tensor, o: Tensor) -> None:
    if p.shape != o.shape:
        raise ValueError(f"L-MAC metrics: probabilities of the original {tuple(p.shape)} and of "
                         f"the masked-in input {tuple(o.shape)} must have the same shape")


def mask_of(kept: Tensor, X: Tensor) -> Tensor:
    """M = X_in / X where X > 0, else 0: the mask of X that the interpretation X_in keeps."""
    if kept.shape != X.shape:
        raise ValueError(f"kept spectrogram {tuple(kept.shape)} must match X {tuple(X.shape)}")
    pos = X > 0
    return torch.where(pos, kept / torch.where(pos, X, torch.ones_like(X)),
                       torch.zeros_like(X)).clamp(0.0, 1.0)


def soft_mask_of(explanation: Any) -> tuple[Tensor, Tensor]:
    """(M, X_in) of the continuous mask Σ_k max(r_k, 0) X_k / X of an ``Explanation``."""
    kept = explanation.mixture(explanation.relevance.clamp_min(0.0))
    return mask_of(kept, explanation.X), kept


def average_increase(y_c: Tensor, o_c: Tensor) -> Tensor:
    """AI per pair: 100 · [y_c < o_c] (recipe ``compute_AI``)."""
    _check(y_c, o_c)
    return (y_c < o_c).to(y_c.dtype) * 100.0


def average_drop(y_c: Tensor, o_c: Tensor) -> Tensor:
    """AD per pair: 100 · max(0, y_c − o_c) / (y_c + eps) (recipe ``compute_AD``, without its
    second softmax; see the module docstring)."""
    _check(y_c, o_c)
    return torch.relu(y_c - o_c) / (y_c + EPS) * 100.0


def average_gain(y_c: Tensor, o_c: Tensor) -> Tensor:
    """AG per pair: 100 · max(0, o_c − y_c) / (1 − y_c + eps) (recipe ``compute_AG``)."""
    _check(y_c, o_c)
    return torch.relu(o_c - y_c) / (1.0 - y_c + EPS) * 100.0


def input_fidelity(p: Tensor, o: Tensor, classes: Tensor, kind: str = "multiclass",
                   threshold: float | Tensor = 0.5) -> Tensor:
    """Fid-In per pair, percent: argmax o == argmax p (multiclass, recipe ``compute_fidelity``
    top-1), or o_c > threshold (multilabel, the suite's extension; ``threshold`` a float or
    one per class (C,), the thresholds that chose the pairs)."""
    _check(p, o)
    if kind == "multiclass":
        return (o.argmax(1) == p.argmax(1)).to(p.dtype) * 100.0
    idx = classes.view(-1).to(o.device)
    o_c = o.gather(1, idx.view(-1, 1)).squeeze(1)
    t = torch.as_tensor(threshold, dtype=o.dtype, device=o.device)
    if t.dim() == 1:
        t = t[idx]
    return (o_c > t).to(p.dtype) * 100.0


def _flat_abs_norm(mask: Tensor) -> tuple[Tensor, Tensor]:
    """|M| flattened per row, normalised by its max (Quantus ``normalise_by_max`` + ``abs``),
    and a flag of the rows that are all zero (or not finite)."""
    a = mask.flatten(1).abs().double()
    mx = a.amax(1, keepdim=True)
    empty = ~(mx.squeeze(1) > 0) | ~torch.isfinite(a).all(1)
    return a / torch.where(mx > 0, mx, torch.ones_like(mx)), empty


def sparseness(mask: Tensor) -> Tensor:
    """SPS per row of (B, ...) masks: Gini index of |M|/max|M| + 1e-7 (Quantus ``Sparseness``);
    NaN for an all-zero or non-finite mask."""
    a, empty = _flat_abs_norm(mask)
    a = torch.sort(a + 1e-7, dim=1).values
    n = a.shape[1]
    i = torch.arange(1, n + 1, device=a.device, dtype=a.dtype)
    g = ((2 * i - n - 1) * a).sum(1) / (n * a.sum(1))
    return torch.where(empty, torch.full_like(g, float("nan")), g).to(mask.dtype)


def complexity(mask: Tensor) -> Tensor:
    """COMP per row of (B, ...) masks: entropy −Σ q ln(q + 1e-12), q = |M|/Σ|M| (Quantus
    ``Complexity``, natural log); NaN for an all-zero or non-finite mask."""
    a, empty = _flat_abs_norm(mask)
    q = a / a.sum(1, keepdim=True).clamp_min(1e-300)
    h = -(q * torch.log(q + 1e-12)).sum(1)
    return torch.where(empty, torch.full_like(h, float("nan")), h).to(mask.dtype)


def pair_values(p: Tensor, o: Tensor, classes: Tensor, mask: Tensor, kind: str = "multiclass",
                threshold: float | Tensor = 0.5, suffix: str = "") -> dict[str, Tensor]:
    """Every L-MAC value per pair. p, o: (n, C) probabilities of the original and of the
    masked-in input; classes (n,); mask (n, F, T). Keys ``lmac_ai{suffix}`` etc. (pairs.csv
    columns)."""
    if p.dim() != 2 or len(classes) != p.shape[0] or len(mask) != p.shape[0]:
        raise ValueError("L-MAC metrics: p (n, C), classes (n,) and mask (n, ...) must agree on n")
    idx = classes.view(-1, 1).to(p.device)
    y_c, o_c = p.gather(1, idx).squeeze(1), o.to(p.device).gather(1, idx).squeeze(1)
    return {f"lmac_ai{suffix}": average_increase(y_c, o_c),
            f"lmac_ad{suffix}": average_drop(y_c, o_c),
            f"lmac_ag{suffix}": average_gain(y_c, o_c),
            f"lmac_fid_in{suffix}": input_fidelity(p, o.to(p.device), classes, kind, threshold),
            f"lmac_sps{suffix}": sparseness(mask).to(p.device),
            f"lmac_comp{suffix}": complexity(mask).to(p.device)}


_NAMES = ("ai", "ad", "ag", "fid_in", "sps", "comp")


def summarize(pairs: pd.DataFrame) -> dict[str, float]:
    """``lmac/<name>[_soft]`` = mean over pairs of the pairs.csv columns (NaN left out), and
    ``lmac/n_empty[_soft]`` = pairs whose mask is all zero (no SPS / COMP)."""
    out: dict[str, float] = {}
    for suffix in ("", "_soft"):
        if f"lmac_ai{suffix}" not in pairs:
            continue
        for name in _NAMES:
            v = pairs[f"lmac_{name}{suffix}"].to_numpy(dtype=float)
            out[f"lmac/{name}{suffix}"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
        out[f"lmac/n_empty{suffix}"] = float(np.isnan(pairs[f"lmac_sps{suffix}"].to_numpy(float)).sum())
    return out


_REF = "L-MAC (Paissan et al. 2024); SpeechBrain recipes/ESC50/interpret/interpreter_brain.py"
METRIC_INFO: dict[str, MetricInfo] = {
    "ai": MetricInfo("ai", True, _REF + " compute_AI", "% pairs whose masked-in p_c rises"),
    "ad": MetricInfo("ad", False, _REF + " compute_AD", "mean relative drop of p_c, %"),
    "ag": MetricInfo("ag", True, _REF + " compute_AG", "mean relative gain of p_c, %"),
    "fid_in": MetricInfo("fid_in", True, _REF + " compute_fidelity",
                         "% pairs whose masked-in input keeps the decision"),
    "sps": MetricInfo("sps", True, "Quantus Sparseness (Chalasani et al. 2020), Gini of |M|"),
    "comp": MetricInfo("comp", False, "Quantus Complexity (Bhatt et al. 2020), entropy of |M|"),
}
