"""Significance tests between systems (DESIGN "Significance").

Per-sample scores of two systems evaluated on the same samples are compared with paired tests
(Wilcoxon signed-rank for continuous scores such as FF, McNemar for per-sample correctness,
a paired bootstrap for set-level metrics such as AUPRC / F1); scores across seeds / folds with
t-tests (the paper's appendix uses a two-sample Student t-test with equal variances over runs,
reference facts sec. 10). Holm's step-down correction across pairs. Every test returns a dict
with the statistic, the p-value, the sample size and an effect size.
"""
from __future__ import annotations

from itertools import combinations
from typing import Any, Callable, Mapping

import numpy as np
from torch import Tensor

__all__ = [
    "wilcoxon_paired",
    "mcnemar_paired",
    "signed_rank_z",
    "mcnemar_z",
    "stouffer",
    "stratified_paired_test",
    "paired_bootstrap",
    "paired_ttest",
    "welch_ttest",
    "student_ttest",
    "holm",
    "pairwise_comparisons",
]


def _np(x: Any, dtype: Any = np.float64) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    return x.astype(dtype) if dtype is not None else x


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    x, y = _np(a).ravel(), _np(b).ravel()
    if x.shape != y.shape:
        raise ValueError(f"paired samples must have the same length; got {x.size} and {y.size}")
    ok = ~(np.isnan(x) | np.isnan(y))
    return x[ok], y[ok]


# ---------------------------------------------------------------------------------------------
# Paired tests on per-sample scores
# ---------------------------------------------------------------------------------------------
def wilcoxon_paired(a: Any, b: Any) -> dict[str, float]:
    """Two-sided Wilcoxon signed-rank test of the paired differences d = a - b
    (``scipy.stats.wilcoxon(a, b)``, zero_method='wilcox': zero differences dropped, method
    'auto': exact for n <= 50 without ties, else normal approximation). Pairs with a NaN are
    dropped.

    Effect size: the matched-pairs rank-biserial correlation (Kerby 2014),
    r = (W+ - W-) / (W+ + W-) with W+- the sums of the ranks of |d| over positive / negative
    non-zero differences; in [-1, 1], positive when a > b.
    All differences zero: statistic 0, p = 1, effect 0.
    Returns dict(statistic, p, n (non-zero pairs), n_total, effect_size).
    """
    from scipy.stats import rankdata, wilcoxon

    x, y = _paired(a, b)
    d = x - y
    d_nz = d[d != 0]
    n = int(d_nz.size)
    if n == 0:
        return {"statistic": 0.0, "p": 1.0, "n": 0, "n_total": int(d.size), "effect_size": 0.0}
    ranks = rankdata(np.abs(d_nz))
    w_plus, w_minus = ranks[d_nz > 0].sum(), ranks[d_nz < 0].sum()
    res = wilcoxon(x, y, alternative="two-sided", zero_method="wilcox")
    return {"statistic": float(res.statistic), "p": float(res.pvalue), "n": n, "n_total": int(d.size),
            "effect_size": float((w_plus - w_minus) / (w_plus + w_minus))}


# ---------------------------------------------------------------------------------------------
# Per-cell tests combined across cells (compare: one cell = one (fold, seed))
# ---------------------------------------------------------------------------------------------
def signed_rank_z(a: Any, b: Any) -> tuple[float, int, float]:
    """Signed z of the Wilcoxon signed-rank statistic of d = a - b (zero differences dropped):
    z = (W+ - n(n+1)/4) / sqrt(n(n+1)(2n+1)/24 - sum(t^3 - t)/48), t = sizes of tied |d|
    groups; positive when a > b. ``2 * Phi(-|z|)`` is ``scipy.stats.wilcoxon(a, b,
    method='approx', correction=False)``'s p. Returns (z, n non-zero, rank-biserial r);
    (0, 0, 0) when every difference is zero (no evidence either way)."""
    from scipy.stats import rankdata

    x, y = _paired(a, b)
    d = x - y
    d = d[d != 0]
    n = int(d.size)
    if n == 0:
        return 0.0, 0, 0.0
    ranks = rankdata(np.abs(d))
    w_plus = float(ranks[d > 0].sum())
    _, t = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24.0 - float((t ** 3 - t).sum()) / 48.0
    z = 0.0 if var <= 0 else (w_plus - n * (n + 1) / 4.0) / np.sqrt(var)
    r = (2.0 * w_plus - n * (n + 1) / 2.0) / (n * (n + 1) / 2.0)  # (W+ - W-) / (W+ + W-)
    return float(z), n, float(r)


def mcnemar_z(correct_a: Any, correct_b: Any) -> tuple[float, int, float]:
    """Signed z of McNemar's test without continuity correction, z = (b - c) / sqrt(b + c)
    (z^2 is the uncorrected McNemar chi-square); positive when a is right more often on the
    discordant clips. Returns (z, b + c, Cohen's g); (0, 0, 0) without discordant clips."""
    ca = _np(correct_a, None).astype(bool).ravel()
    cb = _np(correct_b, None).astype(bool).ravel()
    if ca.shape != cb.shape:
        raise ValueError("correct_a and correct_b must be paired (same length)")
    b, c = int((ca & ~cb).sum()), int((~ca & cb).sum())
    if b + c == 0:
        return 0.0, 0, 0.0
    return float((b - c) / np.sqrt(b + c)), b + c, float(b / (b + c) - 0.5)


def stouffer(z: Any) -> dict[str, float]:
    """Stouffer's combination of k independent signed z-scores with equal weights:
    Z = sum z_i / sqrt(k), two-sided p = 2 Phi(-|Z|). Equals
    ``scipy.stats.combine_pvalues(Phi(-z_i), method='stouffer')`` turned two-sided."""
    from scipy.stats import norm

    zz = _np(z).ravel()
    if zz.size == 0:
        return {"z": float("nan"), "p": float("nan"), "k": 0}
    Z = float(zz.sum() / np.sqrt(zz.size))
    return {"z": Z, "p": float(min(1.0, 2.0 * norm.sf(abs(Z)))), "k": int(zz.size)}


def stratified_paired_test(strata: Any, kind: str = "wilcoxon") -> dict[str, Any]:
    """Paired test run **within each stratum** (one (fold, seed) cell: the same test clips
    and, for post-hoc methods, the same f) and combined across strata with Stouffer's Z.

    Why: pooling the pairs of every seed into one test treats seed replicates of a clip as new
    independent clips (overstating n) and ranks differences of different models together.
    Here each stratum gives a signed z (``kind='wilcoxon'``: :func:`signed_rank_z` on
    continuous scores; ``'mcnemar'``: :func:`mcnemar_z` on correctness) and the strata count
    equally (a cell is a replicate of the whole experiment, whatever its number of pairs).
    A paired test on the per-seed medians was the alternative; with the usual 3 seeds its
    smallest two-sided p is 0.25 (Wilcoxon) so it could never find a difference. Caveat:
    Stouffer assumes the strata are independent; cells that share test clips (seeds of one
    fold) are positively correlated under a shared clip effect, which makes the combined p
    optimistic. ``strata``: iterable of (a, b) paired arrays. Returns dict(z, p, k strata,
    n (non-zero pairs or discordant clips, summed), effect_size (mean of the per-stratum
    rank-biserial r / Cohen's g), per_stratum_z)."""
    fn = {"wilcoxon": signed_rank_z, "mcnemar": mcnemar_z}.get(kind)
    if fn is None:
        raise ValueError(f"kind must be 'wilcoxon' or 'mcnemar', not {kind!r}")
    zs, ns, es = [], [], []
    for a, b in strata:
        z, n, e = fn(a, b)
        zs.append(z)
        ns.append(n)
        es.append(e)
    comb = stouffer(zs)
    return {"z": comb["z"], "p": comb["p"], "k": comb["k"], "n": int(sum(ns)),
            "effect_size": float(np.mean(es)) if es else float("nan"),
            "per_stratum_z": [float(v) for v in zs]}


def mcnemar_paired(correct_a: Any, correct_b: Any, exact_below: int = 25) -> dict[str, float]:
    """McNemar's test on paired per-sample correctness (two-sided).

    b = #(a right, b wrong), c = #(a wrong, b right). If b + c < ``exact_below`` (25): exact
    binomial test, statistic = min(b, c), p = min(1, 2 * Binom(b + c, 1/2).cdf(min(b, c)));
    otherwise chi-square with continuity correction, statistic = (|b - c| - 1)^2 / (b + c),
    p = chi2(1).sf(statistic). Identical to
    ``statsmodels.stats.contingency_tables.mcnemar(table, exact=..., correction=True)``.
    b + c = 0 gives statistic 0, p = 1.

    Effect size: Cohen's g = b / (b + c) - 1/2 in [-1/2, 1/2], positive when a is right more
    often on the discordant pairs (0 when b + c = 0); the odds ratio b / c (inf when c = 0) is
    reported as ``odds_ratio``. Returns dict(statistic, p, b, c, n, effect_size, odds_ratio, exact).
    """
    from scipy.stats import binom, chi2

    ca = _np(correct_a, None).astype(bool).ravel()
    cb = _np(correct_b, None).astype(bool).ravel()
    if ca.shape != cb.shape:
        raise ValueError("correct_a and correct_b must be paired (same length)")
    b = int((ca & ~cb).sum())
    c = int((~ca & cb).sum())
    n_disc = b + c
    exact = n_disc < exact_below
    if n_disc == 0:
        stat, p = 0.0, 1.0
    elif exact:
        stat = float(min(b, c))
        p = float(min(1.0, 2.0 * binom.cdf(min(b, c), n_disc, 0.5)))
    else:
        stat = float((abs(b - c) - 1.0) ** 2 / n_disc)
        p = float(chi2.sf(stat, 1))
    g = 0.0 if n_disc == 0 else b / n_disc - 0.5
    odds = float("nan") if n_disc == 0 else (float("inf") if c == 0 else b / c)
    return {"statistic": stat, "p": p, "b": b, "c": c, "n": int(ca.size), "effect_size": float(g),
            "odds_ratio": odds, "exact": bool(exact)}


def paired_bootstrap(metric_fn: Callable[..., Any], y_true: Any, scores_a: Any, scores_b: Any,
                     n_boot: int = 1000, seed: int = 0, alpha: float = 0.05,
                     batched: bool = False, **metric_kwargs: Any) -> dict[str, float]:
    """Paired bootstrap of a set-level metric difference m(y, a) - m(y, b) (e.g. AUPRC, F1).

    Rows (samples) are resampled with replacement, the **same** rows for both systems and the
    labels (Efron & Tibshirani 1993; Koehn 2004 style paired resampling). Reported:
    ``diff`` = the observed difference on the full set; ``ci_low`` / ``ci_high`` = percentile
    interval (alpha/2, 1 - alpha/2) of the bootstrap differences; ``p`` = two-sided p of
    H0: diff = 0 from the bootstrap distribution shifted to mean zero (centred):
    p = (1 + #{|d*_i - mean(d*)| >= |diff|}) / (n_valid + 1). Replicates whose metric is NaN
    (e.g. a class without positives) are dropped and counted in ``n_valid``.

    ``metric_fn(y_true, scores, **metric_kwargs) -> float``; row-wise arrays in ``metric_kwargs``
    (e.g. ``mask=``) are resampled with the rows. With ``batched=True`` the function is called
    once per system on stacked replicates, (n_boot, N, ...) arrays, and must return (n_boot,)
    values (vectorised metrics; one call instead of n_boot).
    """
    y = _np(y_true, None)
    sa, sb = _np(scores_a), _np(scores_b)
    N = y.shape[0]
    if sa.shape[0] != N or sb.shape[0] != N:
        raise ValueError("y_true, scores_a and scores_b must have the same number of rows")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, N, size=(n_boot, N))
    kw_np = {k: _np(v, None) for k, v in metric_kwargs.items()}
    diff = float(metric_fn(y, sa, **kw_np)) - float(metric_fn(y, sb, **kw_np))

    def resample(kws: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, Any]:
        return {k: (v[rows] if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == N else v)
                for k, v in kws.items()}

    if batched:
        kw = resample(kw_np, idx)
        d = (np.asarray(metric_fn(y[idx], sa[idx], **kw), dtype=np.float64)
             - np.asarray(metric_fn(y[idx], sb[idx], **kw), dtype=np.float64))
    else:
        d = np.empty(n_boot)
        for i in range(n_boot):  # one metric call per replicate (metric_fn is opaque)
            rows = idx[i]
            kw = resample(kw_np, rows)
            d[i] = float(metric_fn(y[rows], sa[rows], **kw)) - float(metric_fn(y[rows], sb[rows], **kw))
    d = d[~np.isnan(d)]
    if d.size == 0:
        nan = float("nan")
        return {"diff": diff, "ci_low": nan, "ci_high": nan, "p": nan, "n_valid": 0, "n_boot": n_boot}
    lo, hi = np.percentile(d, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    centred = d - d.mean()
    p = (1.0 + np.count_nonzero(np.abs(centred) >= abs(diff))) / (d.size + 1.0)
    return {"diff": diff, "ci_low": float(lo), "ci_high": float(hi), "p": float(min(1.0, p)),
            "n_valid": int(d.size), "n_boot": n_boot}


# ---------------------------------------------------------------------------------------------
# Tests across seeds / folds
# ---------------------------------------------------------------------------------------------
def paired_ttest(a: Any, b: Any) -> dict[str, float]:
    """Paired t-test (``scipy.stats.ttest_rel``, two-sided) for scores of two systems on the same
    seeds / folds. Effect size Cohen's d_z = mean(d) / sd(d) (ddof=1), d = a - b.
    All differences equal to zero: statistic 0, p = 1, d_z 0 (scipy gives NaN).
    Returns dict(statistic, p, mean_diff, effect_size, n)."""
    from scipy.stats import ttest_rel

    x, y = _paired(a, b)
    d = x - y
    if d.size and np.all(d == 0):
        return {"statistic": 0.0, "p": 1.0, "mean_diff": 0.0, "effect_size": 0.0, "n": int(d.size)}
    res = ttest_rel(x, y)
    sd = d.std(ddof=1) if d.size > 1 else float("nan")
    dz = float(d.mean() / sd) if sd and sd > 0 else (float("inf") * np.sign(d.mean()) if sd == 0 else float("nan"))
    return {"statistic": float(res.statistic), "p": float(res.pvalue), "mean_diff": float(d.mean()),
            "effect_size": dz, "n": int(d.size)}


def _two_sample(a: Any, b: Any, equal_var: bool) -> dict[str, float]:
    from scipy.stats import ttest_ind

    x, y = _np(a).ravel(), _np(b).ravel()
    x, y = x[~np.isnan(x)], y[~np.isnan(y)]
    mean_diff = float(x.mean() - y.mean()) if x.size and y.size else float("nan")
    nx, ny = x.size, y.size
    pooled = np.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2)) \
        if nx > 1 and ny > 1 else float("nan")
    if pooled == 0 and mean_diff == 0:
        return {"statistic": 0.0, "p": 1.0, "mean_diff": 0.0, "effect_size": 0.0, "n_a": nx, "n_b": ny}
    res = ttest_ind(x, y, equal_var=equal_var)
    d = mean_diff / pooled if pooled and pooled > 0 else (float("inf") * np.sign(mean_diff) if pooled == 0 else float("nan"))
    return {"statistic": float(res.statistic), "p": float(res.pvalue), "mean_diff": mean_diff,
            "effect_size": float(d), "n_a": int(nx), "n_b": int(ny)}


def welch_ttest(a: Any, b: Any) -> dict[str, float]:
    """Welch's unequal-variance two-sample t-test (``scipy.stats.ttest_ind(equal_var=False)``,
    two-sided) for independent runs of two systems. Effect size Cohen's d with the pooled SD
    sqrt(((n_a-1)s_a^2 + (n_b-1)s_b^2) / (n_a+n_b-2)). Both samples constant and equal: p = 1.
    Returns dict(statistic, p, mean_diff, effect_size, n_a, n_b)."""
    return _two_sample(a, b, equal_var=False)


def student_ttest(a: Any, b: Any) -> dict[str, float]:
    """Two-sample Student t-test with equal variances (``scipy.stats.ttest_ind(equal_var=True)``,
    two-sided): the paper's significance test over runs (appendix; reference facts sec. 10).
    Effect size Cohen's d (pooled SD). Returns dict(statistic, p, mean_diff, effect_size, n_a, n_b)."""
    return _two_sample(a, b, equal_var=True)


# ---------------------------------------------------------------------------------------------
# Multiple comparisons
# ---------------------------------------------------------------------------------------------
def holm(pvalues: Any) -> np.ndarray:
    """Holm step-down corrected p-values,
    ``statsmodels.stats.multitest.multipletests(p, method='holm')[1]``. NaN entries are left
    NaN and do not count as tests. Returns an array of the input's length."""
    from statsmodels.stats.multitest import multipletests

    p = _np(pvalues).ravel()
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = multipletests(p[ok], method="holm")[1]
    return out


def pairwise_comparisons(per_system: Mapping[str, Any], test: str = "wilcoxon") -> list[dict[str, Any]]:
    """All pairs of systems compared with one test, p corrected with :func:`holm`.

    ``per_system`` maps a system name to its per-sample scores (``test`` = 'wilcoxon' |
    'paired_t') or per-sample correctness ('mcnemar') on the same samples in the same order, or
    to per-run scores ('student' | 'welch'). Returns one row per pair (a, b) with the test's
    fields plus ``p_holm``: the pairwise table of DESIGN "Significance".
    """
    tests: dict[str, Callable[[Any, Any], dict[str, Any]]] = {
        "wilcoxon": wilcoxon_paired, "mcnemar": mcnemar_paired, "paired_t": paired_ttest,
        "student": student_ttest, "welch": welch_ttest,
    }
    if test not in tests:
        raise KeyError(f"unknown test {test!r}; valid: {', '.join(tests)}")
    rows = []
    for a, b in combinations(list(per_system), 2):
        res = tests[test](per_system[a], per_system[b])
        rows.append({"a": a, "b": b, "test": test, **res})
    corrected = holm([r["p"] for r in rows]) if rows else np.array([])
    for r, pc in zip(rows, corrected):
        r["p_holm"] = float(pc)
    return rows
