"""Known-answer and cross-check tests of audio_xai_bench.metrics.stats."""
import numpy as np
import pytest
from scipy import stats as sps
from sklearn.metrics import average_precision_score
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.multitest import multipletests

from audio_xai_bench.metrics import stats as S


# -------------------------------------------------------------------------------------- Wilcoxon
def test_wilcoxon_paired_hand_and_scipy():
    a = np.array([2.0, 1.0, 5.0, 6.0, 3.0])
    b = np.array([1.0, 3.0, 2.0, 2.0, 3.0])
    # d = [1, -2, 3, 4, 0]: zero dropped, ranks of |d| = 1,2,3,4 -> W+ = 8, W- = 2
    # rank-biserial r = (8 - 2)/10 = .6; scipy statistic (two-sided) = min(W+, W-) = 2
    res = S.wilcoxon_paired(a, b)
    assert res["effect_size"] == pytest.approx(0.6)
    assert res["statistic"] == 2.0 and res["n"] == 4 and res["n_total"] == 5
    assert res["p"] == pytest.approx(sps.wilcoxon(a, b).pvalue)
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=80), rng.normal(0.2, 1, 80)
    ref = sps.wilcoxon(x, y)
    res = S.wilcoxon_paired(x, y)
    assert res["p"] == pytest.approx(ref.pvalue) and res["statistic"] == pytest.approx(ref.statistic)
    assert S.wilcoxon_paired(y, x)["effect_size"] == pytest.approx(-res["effect_size"])
    assert S.wilcoxon_paired(x, x)["p"] == 1.0


# --------------------------------------------------------------------------------------- McNemar
def _correct_from_counts(n11, b, c, n00):
    ca = np.r_[np.ones(n11), np.ones(b), np.zeros(c), np.zeros(n00)].astype(bool)
    cb = np.r_[np.ones(n11), np.zeros(b), np.ones(c), np.zeros(n00)].astype(bool)
    return ca, cb


def test_mcnemar_hand_and_statsmodels():
    # b = 10, c = 2 (< 25: exact): p = 2 * P(X <= 2), X ~ Bin(12, .5) = 2*(1+12+66)/4096
    ca, cb = _correct_from_counts(30, 10, 2, 8)
    res = S.mcnemar_paired(ca, cb)
    assert res["b"] == 10 and res["c"] == 2 and res["exact"]
    assert res["p"] == pytest.approx(2 * 79 / 4096)
    assert res["statistic"] == 2.0
    assert res["effect_size"] == pytest.approx(10 / 12 - 0.5) and res["odds_ratio"] == 5.0
    sm = sm_mcnemar([[30, 10], [2, 8]], exact=True)
    assert res["p"] == pytest.approx(sm.pvalue) and res["statistic"] == pytest.approx(sm.statistic)
    # b + c >= 25: chi2 with continuity correction: (|30 - 15| - 1)^2 / 45 = 196/45
    ca, cb = _correct_from_counts(50, 30, 15, 5)
    res = S.mcnemar_paired(ca, cb)
    sm = sm_mcnemar([[50, 30], [15, 5]], exact=False, correction=True)
    assert not res["exact"]
    assert res["statistic"] == pytest.approx(196 / 45) and res["statistic"] == pytest.approx(sm.statistic)
    assert res["p"] == pytest.approx(sm.pvalue)
    # no discordant pairs
    same = S.mcnemar_paired(ca, ca)
    assert same["p"] == 1.0 and same["effect_size"] == 0.0


# ------------------------------------------------------------------------------------------ Holm
def test_holm_hand_and_statsmodels():
    # sorted .01, .03, .04 -> .01*3 = .03, .03*2 = .06, .04*1 = .04 -> monotone: .03, .06, .06
    np.testing.assert_allclose(S.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    p = np.random.default_rng(1).random(12) ** 3
    np.testing.assert_allclose(S.holm(p), multipletests(p, method="holm")[1])
    out = S.holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)


# ---------------------------------------------------------------------------------------- t-tests
def test_ttests_vs_scipy_and_effect_sizes():
    a = np.array([0.80, 0.82, 0.79, 0.85, 0.83])
    b = np.array([0.78, 0.80, 0.80, 0.81, 0.79])
    d = a - b  # [.02, .02, -.01, .04, .04]: mean .022, sd .02588 -> dz .8500
    res = S.paired_ttest(a, b)
    ref = sps.ttest_rel(a, b)
    assert res["statistic"] == pytest.approx(ref.statistic) and res["p"] == pytest.approx(ref.pvalue)
    assert res["mean_diff"] == pytest.approx(0.022)
    assert res["effect_size"] == pytest.approx(d.mean() / d.std(ddof=1))
    for fn, eq in ((S.student_ttest, True), (S.welch_ttest, False)):
        res = fn(a, b)
        ref = sps.ttest_ind(a, b, equal_var=eq)
        assert res["statistic"] == pytest.approx(ref.statistic) and res["p"] == pytest.approx(ref.pvalue)
        # Cohen's d, pooled SD (equal n): sqrt((var_a + var_b)/2)
        assert res["effect_size"] == pytest.approx((a.mean() - b.mean()) / np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2))
    assert S.paired_ttest(a, a)["p"] == 1.0
    assert S.student_ttest(np.ones(3), np.ones(3))["p"] == 1.0


# ------------------------------------------------------------------------------------- bootstrap
def _ap_micro(y, s):
    return average_precision_score(y.ravel(), s.ravel())


def test_paired_bootstrap_set_metric():
    rng = np.random.default_rng(2)
    y = rng.random((150, 4)) < 0.3
    good = np.clip(0.5 * y + rng.random(y.shape) * 0.6, 0, 1)
    bad = np.clip(0.1 * y + rng.random(y.shape) * 0.9, 0, 1)
    res = S.paired_bootstrap(_ap_micro, y, good, bad, n_boot=150, seed=0)
    assert res["diff"] == pytest.approx(_ap_micro(y, good) - _ap_micro(y, bad))
    assert res["ci_low"] <= res["diff"] <= res["ci_high"] and res["ci_low"] > 0
    assert res["p"] < 0.01 and res["n_valid"] == 150
    same = S.paired_bootstrap(_ap_micro, y, good, good.copy(), n_boot=20, seed=0)
    assert same["diff"] == 0 and same["p"] == 1.0
    # deterministic with the seed
    again = S.paired_bootstrap(_ap_micro, y, good, bad, n_boot=150, seed=0)
    assert again == res


def test_paired_bootstrap_batched_equals_loop_and_resamples_kwargs():
    rng = np.random.default_rng(3)
    y = rng.random((60, 3)) < 0.5
    sa, sb = rng.random((60, 3)), rng.random((60, 3))
    mask = rng.random((60, 3)) < 0.8

    def acc(yt, s, mask):  # masked accuracy at .5, works on (N, C) and (n_boot, N, C)
        hit = ((s >= 0.5) == yt) & mask
        return hit.sum(axis=(-1, -2)) / mask.sum(axis=(-1, -2))

    loop = S.paired_bootstrap(acc, y, sa, sb, n_boot=300, seed=5, mask=mask)
    vec = S.paired_bootstrap(acc, y, sa, sb, n_boot=300, seed=5, batched=True, mask=mask)
    for k in ("diff", "ci_low", "ci_high", "p"):
        assert loop[k] == pytest.approx(vec[k])


# ------------------------------------------------------------------------ significance sanity
def test_significance_sanity_wilcoxon_and_mcnemar():
    """An injected better system is detected (p < .01) and an identical-distribution copy is not
    (p > .05) in at least 18 of 20 seeded repeats."""
    det_w = null_w = det_m = null_m = 0
    for seed in range(20):
        rng = np.random.default_rng(1000 + seed)
        a = rng.normal(size=200)
        better = a + 0.3 + rng.normal(size=200)
        copy = a + rng.normal(size=200)
        det_w += S.wilcoxon_paired(better, a)["p"] < 0.01
        null_w += S.wilcoxon_paired(copy, a)["p"] > 0.05
        ca = rng.random(300) < 0.6
        cb_better = rng.random(300) < 0.8
        cb_same = rng.random(300) < 0.6
        det_m += S.mcnemar_paired(cb_better, ca)["p"] < 0.01
        null_m += S.mcnemar_paired(cb_same, ca)["p"] > 0.05
    assert det_w >= 18 and null_w >= 18, (det_w, null_w)
    assert det_m >= 18 and null_m >= 18, (det_m, null_m)


def test_pairwise_comparisons_table():
    rng = np.random.default_rng(4)
    base = rng.normal(size=100)
    systems = {"a": base, "b": base + 1.0, "c": base + rng.normal(0, 0.01, 100)}
    rows = S.pairwise_comparisons(systems, test="wilcoxon")
    assert [(r["a"], r["b"]) for r in rows] == [("a", "b"), ("a", "c"), ("b", "c")]
    np.testing.assert_allclose([r["p_holm"] for r in rows], S.holm([r["p"] for r in rows]))
    assert rows[0]["effect_size"] == pytest.approx(-1.0)
    with pytest.raises(KeyError):
        S.pairwise_comparisons(systems, test="anova")
