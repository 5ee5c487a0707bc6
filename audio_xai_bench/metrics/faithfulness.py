"""Faithfulness by component removal (paper eq. 7, sec. IV-C; reference facts secs. 7-8).

The engine removes the relevant components L_{c,x} = {k : r_k > tau} of an explanation,
re-synthesises x_2 = INV(X - sum_{k in L} X_k, P_x), and scores FF_x = f(x)_c - f(x_2)_c. The
random baseline removes as many components drawn at random. This module holds the pure parts:
the selections, the counts, FF and its summaries and tests. No model code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "PAPER_TAUS",
    "select_relevant",
    "random_outside",
    "random_any",
    "baseline_counts",
    "ff_values",
    "ff_summary",
    "classwise_median",
    "wilcoxon_vs_baseline",
    "count_matchable",
    "random_mass_outside",
    "energy_count",
    "energy_mass",
    "FaithfulnessFamily",
    "summarise",
    "METRIC_INFO",
]

#: Thresholds of paper Table V.
PAPER_TAUS: tuple[float, ...] = (0.9, 0.7, 0.5, 0.3, 0.1)


def _np(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def select_relevant(relevance: Tensor, tau: float) -> Tensor:
    """L_{c,x} = {k : r_{k,c,x} > tau} (paper sec. IV-C, strict ">"; same in the authors' code
    ``imp_max_comp[i] > thresh``). relevance (B, K) in [-1, 1] -> (B, K) bool.
    The authors' code keeps all such k for faithfulness (no top-5 cap; facts sec. 7)."""
    return relevance > tau


def _random_keys(shape: tuple[int, int], generator: torch.Generator, device: torch.device) -> Tensor:
    keys = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float64)
    return keys.to(device)


def _first_by_keys(keys: Tensor, counts: Tensor) -> Tensor:
    """Mask of the ``counts[b]`` entries of row b with the smallest keys (batched argsort)."""
    B, K = keys.shape
    order = keys.argsort(dim=1)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(K, device=keys.device).expand(B, K).contiguous())
    return ranks < counts.to(keys.device).view(-1, 1)


def random_outside(selected: Tensor, counts: Tensor, generator: torch.Generator) -> Tensor:
    """Paper's random baseline (sec. IV-C): remove ``counts[b]`` components drawn uniformly at
    random among those NOT in L (``~selected[b]``); if fewer are available, all of them.

    Batched, no loop over rows: each component gets a uniform random key from ``generator``,
    selected components get key +inf, and the ``min(counts[b], available[b])`` smallest keys
    of each row are taken (a uniformly random subset of the unselected ones). Deterministic given
    the generator's state; consumes B*K doubles from it.

    Args: selected (B, K) bool; counts (B,) long (>= 0); generator a torch.Generator (its device
    draws the keys). Returns (B, K) bool on ``selected``'s device, disjoint from ``selected``.
    """
    if selected.dim() != 2:
        raise ValueError("selected must be (B, K)")
    sel = selected.bool()
    keys = _random_keys(tuple(sel.shape), generator, sel.device)
    keys = keys.masked_fill(sel, float("inf"))
    counts = torch.as_tensor(counts, device=sel.device).long().clamp_min(0)
    available = (~sel).sum(1)
    return _first_by_keys(keys, torch.minimum(counts, available)) & ~sel


def random_any(num_rows: int, K: int, counts: Tensor, generator: torch.Generator,
               device: torch.device | str | None = None) -> Tensor:
    """The authors' code variant of the random baseline (facts sec. 8): shuffle **all** K
    component indices and remove the first ``counts[b]`` (so relevant components may be
    removed too). Batched like :func:`random_outside`; ``min(counts[b], K)`` per row.
    Returns (num_rows, K) bool."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    keys = _random_keys((num_rows, K), generator, dev)
    counts = torch.as_tensor(counts, device=dev).long().clamp(0, K)
    if counts.dim() == 0:
        counts = counts.expand(num_rows)
    return _first_by_keys(keys, counts)


def baseline_counts(selected: Tensor, mode: str, classes: Tensor | None = None) -> Tensor:
    """How many components the random baseline removes from each row.

    - ``"mean"`` (paper sec. IV-C, "the same number of components that are present in L_{c,x}
      on average"): round(mean_b |L_b|) for every row. Rounding is half-to-even
      (``torch.round``). The mean is over the rows given, so pass the **whole** evaluation set
      (all test (clip, class) pairs), not one batch.
    - ``"class_mean"``: round(mean |L|) over the rows of the same class (``classes`` (B,) long
      required); this is what the authors' SONYC counts [4,3,2,1,3,1,4,1] look like (facts 8).
    - ``"per_sample"``: |L_b| of the row itself (paper-compatible option: matched per sample).
    - an int-like string (e.g. ``"7"``): that fixed count for every row (authors' ESC code).

    selected (B, K) bool -> (B,) long.
    """
    sizes = selected.bool().sum(1)
    B = sizes.shape[0]
    if mode == "per_sample":
        return sizes.long()
    if mode == "mean":
        if B == 0:
            return sizes.long()
        return torch.round(sizes.double().mean()).long().expand(B).clone()
    if mode == "class_mean":
        if classes is None:
            raise ValueError("mode 'class_mean' needs classes (B,)")
        classes = torch.as_tensor(classes, device=sizes.device).long()
        n_cls = int(classes.max()) + 1 if B else 0
        tot = torch.zeros(n_cls, dtype=torch.float64, device=sizes.device).index_add_(0, classes, sizes.double())
        cnt = torch.zeros(n_cls, dtype=torch.float64, device=sizes.device).index_add_(
            0, classes, torch.ones(B, dtype=torch.float64, device=sizes.device))
        means = torch.round(tot / cnt.clamp_min(1))
        return means[classes].long()
    try:
        n = int(str(mode))
    except ValueError:
        raise ValueError(f"baseline count mode must be 'mean', 'class_mean', 'per_sample' or an "
                         f"integer, not {mode!r}") from None
    if n < 0:
        raise ValueError("a fixed baseline count must be >= 0")
    return torch.full((B,), n, dtype=torch.long, device=sizes.device)


def ff_values(p_orig: Tensor, p_removed: Tensor) -> Tensor:
    """FF_x = f(x)_c - f(x_2)_c (paper eq. 7): drop of the class-c probability (softmax for
    multiclass, sigmoid for multi-label, as the authors' code) when L is removed. Positive =
    faithful. Elementwise; any shape."""
    return p_orig - p_removed


def ff_summary(ff: Any) -> dict[str, float]:
    """Summary of FF values over the test set: FF_median (paper sec. IV-C: "the median of FF_x
    over the test set"), plus mean, IQR (q75 - q25, numpy linear percentiles), q25, q75, the
    fraction of positive values and n. NaN entries are dropped (n counts the rest)."""
    x = _np(ff).astype(np.float64).ravel()
    x = x[~np.isnan(x)]
    if x.size == 0:
        nan = float("nan")
        return {"median": nan, "mean": nan, "iqr": nan, "q25": nan, "q75": nan,
                "frac_positive": nan, "n": 0}
    q25, q50, q75 = np.percentile(x, [25, 50, 75])
    return {"median": float(q50), "mean": float(x.mean()), "iqr": float(q75 - q25),
            "q25": float(q25), "q75": float(q75), "frac_positive": float((x > 0).mean()),
            "n": int(x.size)}


def classwise_median(ff: Any, classes: Any, num_classes: int, exclude: Iterable[int] = ()) -> np.ndarray:
    """Per-class FF_median (paper Fig. 2-3; authors' SONYC code: median over the (clip, class)
    pairs of each class). Returns (num_classes,) float64 with NaN for classes without pairs and
    for ``exclude``d classes (the paper drops SONYC's 'non-machinery-impact')."""
    x = _np(ff).astype(np.float64).ravel()
    c = _np(classes).astype(np.int64).ravel()
    if x.shape != c.shape:
        raise ValueError("ff and classes must have the same length")
    out = np.full(num_classes, np.nan)
    ok = ~np.isnan(x)
    excl = set(int(e) for e in exclude)
    for k in range(num_classes):
        if k in excl:
            continue
        v = x[(c == k) & ok]
        if v.size:
            out[k] = np.median(v)
    return out


def wilcoxon_vs_baseline(ff: Any, ff_random: Any) -> dict[str, float]:
    """Is FF above the random baseline's FF on the same (clip, class) pairs? One-sided paired
    Wilcoxon signed-rank test, alternative ``'greater'`` (ff - ff_random > 0), via
    ``scipy.stats.wilcoxon`` (zero_method='wilcox': zero differences are dropped; method
    'auto'). Pairs with a NaN are dropped. If every difference is zero (or no pair is left) the
    test has no evidence: statistic 0, p = 1.0. Returns dict(statistic, p, n, n_nonzero)."""
    from scipy.stats import wilcoxon

    a = _np(ff).astype(np.float64).ravel()
    b = _np(ff_random).astype(np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError("ff and ff_random must be paired (same length)")
    ok = ~(np.isnan(a) | np.isnan(b))
    d = a[ok] - b[ok]
    nz = int(np.count_nonzero(d))
    if nz == 0:
        return {"statistic": 0.0, "p": 1.0, "n": int(d.size), "n_nonzero": 0}
    res = wilcoxon(d, alternative="greater", zero_method="wilcox")
    return {"statistic": float(res.statistic), "p": float(res.pvalue), "n": int(d.size), "n_nonzero": nz}


# ---------------------------------------------------------------------------------------------
# Budget-aware baselines (issue 10 item 0): matched in removed mass, class-blind energy
# ---------------------------------------------------------------------------------------------
def count_matchable(selected: Tensor, counts: Tensor, pool: str = "outside") -> Tensor:
    """(B,) bool: can the count-matched baseline remove ``counts[b]`` components from its pool
    (outside L, or all K)? Where it cannot (e.g. L holds every component), the paper's baseline
    would remove fewer than asked, down to nothing; the scorer then gives NaN, not a score."""
    sel = selected.bool()
    counts = torch.as_tensor(counts, device=sel.device).long()
    available = (~sel).sum(1) if pool == "outside" else torch.full_like(counts, sel.shape[1])
    return available >= counts


def random_mass_outside(selected: Tensor, mass: Tensor, target: Tensor,
                        generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random baseline matched in removed log1p **mass**: components outside L in a uniformly
    random order, taken until their mass reaches ``target`` (L's mass); the component that
    crosses it is taken with a partial weight so the removed mass equals the target exactly
    (``mixture`` is linear in float weights). Rows whose outside mass is below the target are
    not matched. Returns (weights (B, K) float, matched (B,) bool)."""
    from .curves import mass_matched_weights, random_order

    B, K = mass.shape
    order = random_order(B, K, generator, mass.device)
    return mass_matched_weights(mass, order, target, allowed=~selected.bool())


def energy_count(mass: Tensor, counts: Tensor) -> Tensor:
    """Class-blind ``energy`` baseline at equal count: the ``counts[b]`` components of largest
    log1p mass (ties by index), whatever their relevance. (B, K) bool."""
    order = torch.argsort(mass, dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order).scatter_(
        1, order, torch.arange(mass.shape[1], device=mass.device).expand_as(order).contiguous())
    return ranks < torch.as_tensor(counts, device=mass.device).long().view(-1, 1)


def energy_mass(mass: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Class-blind ``energy`` baseline at equal mass: largest components first until ``target``
    (partial last component). Returns (weights (B, K), matched (B,))."""
    from .curves import mass_matched_weights

    order = torch.argsort(mass, dim=1, descending=True, stable=True)
    return mass_matched_weights(mass, order, target)


@dataclass
class FaithfulnessFamily:
    """Per-pair FF (eq. 7) at every tau, with the baselines that need no whole-set statistic:

    - ``ff@tau``: FF with the operator ``removal`` (``subtract`` = paper, the default here);
    - ``mass_share@tau``: share of the input's log1p mass that L removes;
    - ``random_mass_ff@tau`` / ``random_mass_share@tau``: random components from outside L
      until the same mass (NaN where outside L holds less mass than L);
    - ``energy_ff@tau`` / ``energy_share@tau``: the |L| largest components, class-blind;
    - ``energy_mass_ff@tau``: largest components until L's mass.
    Costs 4 forward passes of n rows per tau (stacked into one call per tau).
    The count-matched random baseline of the paper needs mean |L| over the whole set and is run
    by the scorer in a second pass (:func:`random_outside`, :func:`count_matchable`)."""

    taus: tuple[float, ...] = PAPER_TAUS
    removal: str = "subtract"
    quantile: float = 0.1
    name: str = "faithfulness"

    def pair_columns(self, ctx: Any) -> dict[str, Tensor]:
        from . import removal as rm

        e = ctx.explanation
        X = e.X
        n = X.shape[0]
        mass = e.component_mass()
        total = X.flatten(1).sum(1).clamp_min(1e-12)
        bg = rm.background_level(X, self.quantile) if self.removal == "fill" else None
        p0 = ctx.p0
        rows = torch.arange(n, device=X.device).repeat(4)
        nan = torch.tensor(float("nan"), device=X.device)
        bad = torch.isnan(e.relevance).any(1).to(X.device)  # NaN relevances: no L to speak of
        cols: dict[str, Tensor] = {}
        for tau in self.taus:
            sel = select_relevant(e.relevance, tau)
            w_l = sel.to(mass.dtype)
            target = (mass * w_l).sum(1)
            w_r, ok_r = random_mass_outside(sel, mass, target, ctx.generator)
            w_e = energy_count(mass, sel.sum(1)).to(mass.dtype)
            w_m, _ = energy_mass(mass, target)
            X2 = torch.cat([rm.remove(X, e.mixture(w), self.removal, self.quantile, bg)
                            for w in (w_l, w_r, w_e, w_m)])
            ff = ff_values(p0.repeat(4), ctx.class_probs(X2, rows)).view(4, n)
            cols[f"ff@{tau}"] = torch.where(bad, nan, ff[0])
            cols[f"n_selected@{tau}"] = sel.sum(1).float()
            cols[f"mass_share@{tau}"] = target / total
            cols[f"random_mass_ff@{tau}"] = torch.where(ok_r & ~bad, ff[1], nan)
            cols[f"random_mass_share@{tau}"] = torch.where(ok_r, (mass * w_r).sum(1) / total, nan)
            cols[f"energy_ff@{tau}"] = torch.where(bad, nan, ff[2])
            cols[f"energy_share@{tau}"] = (mass * w_e).sum(1) / total
            cols[f"energy_mass_ff@{tau}"] = torch.where(bad, nan, ff[3])
        return cols

    def summarise(self, pairs: Any) -> dict[str, float]:
        return summarise(pairs, self.taus)


def _nanmed(x: Any) -> float:
    v = _np(x).astype(np.float64).ravel()
    v = v[~np.isnan(v)]
    return float(np.median(v)) if v.size else float("nan")


def _nanmean(x: Any) -> float:
    v = _np(x).astype(np.float64).ravel()
    v = v[~np.isnan(v)]
    return float(np.mean(v)) if v.size else float("nan")


def summarise(pairs: Any, taus: Iterable[float] = PAPER_TAUS, prefix: str = "faithfulness/"
              ) -> dict[str, float]:
    """Set-level FF values from the per-pair table: the paper's FF and count-matched random
    baseline with its Wilcoxon p (as before; pairs whose count cannot be matched are NaN, leave
    the test and are counted in ``random_n_unmatched``), plus the mass-matched random baseline,
    the energy baselines and the removed mass shares. NaN pairs are dropped from every median."""
    out: dict[str, float] = {}
    for tau in taus:
        ff = _np(pairs[f"ff@{tau}"]).astype(np.float64)
        out[f"{prefix}ff_median@{tau}"] = _nanmed(ff)
        out[f"{prefix}ff_mean@{tau}"] = _nanmean(ff)
        out[f"{prefix}n_selected_mean@{tau}"] = _nanmean(pairs[f"n_selected@{tau}"])
        for name, col in (("random", "random_ff"), ("random_mass", "random_mass_ff")):
            if f"{col}@{tau}" not in pairs:
                continue
            rnd = _np(pairs[f"{col}@{tau}"]).astype(np.float64)
            ok = ~(np.isnan(ff) | np.isnan(rnd))
            out[f"{prefix}{name}_ff_median@{tau}"] = _nanmed(rnd)
            w = wilcoxon_vs_baseline(ff, rnd)
            stem = "wilcoxon_p" if name == "random" else "random_mass_wilcoxon_p"
            out[f"{prefix}{stem}@{tau}"] = float(w["p"]) if ok.any() else float("nan")
            unmatched = int((np.isnan(rnd) & ~np.isnan(ff)).sum())
            out[f"{prefix}{name}_n_unmatched@{tau}"] = float(unmatched)
        if f"random_n@{tau}" in pairs:
            out[f"{prefix}random_n_mean@{tau}"] = _nanmean(pairs[f"random_n@{tau}"])
        for col in ("mass_share", "random_mass_share", "random_share", "energy_share"):
            if f"{col}@{tau}" in pairs:
                out[f"{prefix}{col}_median@{tau}"] = _nanmed(pairs[f"{col}@{tau}"])
        for col in ("energy_ff", "energy_mass_ff"):
            if f"{col}@{tau}" in pairs:
                out[f"{prefix}{col}_median@{tau}"] = _nanmed(pairs[f"{col}@{tau}"])
    return out


def _info() -> dict[str, Any]:
    from ..api import MetricInfo

    ref = "paper eq. 7 and sec. IV-C (FF_x = f(x)_c - f(x_2)_c, median over the test set)"
    return {
        "ff_median": MetricInfo("ff_median", True, ref),
        "ff_mean": MetricInfo("ff_mean", True, ref),
        "ff_random_median": MetricInfo("ff_random_median", False, ref + "; random baseline",
                                       "near 0 for a faithful explainer; reported for comparison"),
        "ff_vs_random_p": MetricInfo("ff_vs_random_p", False, "one-sided paired Wilcoxon, scipy.stats.wilcoxon"),
        "random_mass_ff_median": MetricInfo(
            "random_mass_ff_median", False, ref + "; random baseline matched in removed log1p mass",
            "reported for comparison; near 0 for a faithful explainer"),
        "random_mass_wilcoxon_p": MetricInfo("random_mass_wilcoxon_p", False,
                                             "one-sided paired Wilcoxon, FF > mass-matched random FF"),
        "energy_ff_median": MetricInfo("energy_ff_median", False, "class-blind energy baseline, |L| largest units",
                                       "reported for comparison; a method should beat it"),
        "energy_mass_ff_median": MetricInfo("energy_mass_ff_median", False,
                                            "class-blind energy baseline at L's mass"),
    }


METRIC_INFO = _info()
