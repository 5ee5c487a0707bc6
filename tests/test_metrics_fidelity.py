"""Known-answer and cross-check tests of audio_xai_bench.metrics.fidelity."""
import numpy as np
import pytest
import torch
from sklearn.metrics import auc, average_precision_score, f1_score, top_k_accuracy_score

from audio_xai_bench.metrics import fidelity as F


# ------------------------------------------------------------------------------------------- top-k
def test_topk_hits_hand_example_and_tie_rules():
    scores = torch.tensor([[0.1, 0.5, 0.4],
                           [0.3, 0.3, 0.4],
                           [0.2, 0.2, 0.2]])
    ref = torch.tensor([2, 0, 1])
    # row 0: ref score 0.4, one greater (0.5) -> rank 1 under every rule
    # row 1: ref 0 (0.3): one greater (0.4), one tie (class 1, larger index)
    #        pessimistic rank 2, optimistic rank 1, sklearn rank 2 (class 1 > 0 ranks ahead)
    # row 2: all tied, ref 1: pessimistic rank 2, optimistic 0, sklearn 1 (only class 2 ahead)
    expect_rank = {"pessimistic": [1, 2, 2], "optimistic": [1, 1, 0], "sklearn": [1, 2, 1]}
    for ties, ranks in expect_rank.items():
        for k in (1, 2, 3):
            got = F.topk_hits(scores, ref, k, ties=ties)
            assert got.dtype == torch.bool
            assert got.tolist() == [r < k for r in ranks], (ties, k)
    assert F.topk_accuracy(scores, ref, 2) == pytest.approx(1 / 3)
    assert F.topk_accuracy(scores, ref, 3) == 1.0
    with pytest.raises(ValueError):
        F.topk_hits(scores, ref, 1, ties="random")


def test_topk_matches_sklearn():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(300, 10, generator=g)
    ref = torch.randint(0, 10, (300,), generator=g)
    for k in (1, 3, 5):
        want = top_k_accuracy_score(ref.numpy(), scores.numpy(), k=k, labels=np.arange(10))
        for ties in ("pessimistic", "optimistic", "sklearn"):  # no ties: all rules agree
            assert F.topk_accuracy(scores, ref, k, ties=ties) == pytest.approx(want)
    # heavy ties: only the 'sklearn' rule reproduces sklearn
    tied = torch.round(scores * 3) / 3
    for k in (1, 3, 5):
        want = top_k_accuracy_score(ref.numpy(), tied.numpy(), k=k, labels=np.arange(10))
        assert F.topk_accuracy(tied, ref, k, ties="sklearn") == pytest.approx(want)
        assert F.topk_accuracy(tied, ref, k, ties="pessimistic") <= want
        assert F.topk_accuracy(tied, ref, k, ties="optimistic") >= want


# ----------------------------------------------------------------------------------------- AP
def test_average_precision_hand():
    # y = [1,0,1,0], s = [.9,.8,.7,.1]: ranked: + (P=1,R=.5), -, + (P=2/3,R=1)
    # AP = .5*1 + .5*2/3 = 0.833333
    y = np.array([[1], [0], [1], [0]], bool)
    s = np.array([[0.9], [0.8], [0.7], [0.1]])
    res = F.average_precision_macro_micro(y, s)
    assert res["macro"] == pytest.approx(5 / 6)
    assert res["micro"] == pytest.approx(5 / 6)
    assert res["per_class"] == [pytest.approx(5 / 6)]


def test_average_precision_matches_sklearn_and_mask():
    rng = np.random.default_rng(1)
    y = rng.random((200, 6)) < 0.3
    s = np.clip(y * 0.3 + rng.random((200, 6)) * 0.8, 0, 1)
    res = F.average_precision_macro_micro(y, s)
    assert res["macro"] == pytest.approx(average_precision_score(y, s, average="macro"))
    assert res["micro"] == pytest.approx(average_precision_score(y, s, average="micro"))
    assert res["skipped"] == []
    # mask: unannotated entries dropped per class and from the pooled micro set
    mask = rng.random((200, 6)) < 0.7
    mask[:, 5] = mask[:, 5] & ~y[:, 5]  # class 5: no annotated positive -> skipped
    res = F.average_precision_macro_micro(torch.as_tensor(y), torch.as_tensor(s), torch.as_tensor(mask))
    per = [average_precision_score(y[mask[:, c], c], s[mask[:, c], c]) for c in range(5)]
    np.testing.assert_allclose(res["per_class"][:5], per)
    assert np.isnan(res["per_class"][5]) and res["skipped"] == [5]
    assert res["macro"] == pytest.approx(np.mean(per))
    assert res["micro"] == pytest.approx(average_precision_score(y[mask], s[mask]))


# ------------------------------------------------------------------------------ 11-point AUPRC
def _calc_prc_reference(y, s, thresholds=F.L2I_THRESHOLDS):
    """Transcription of the authors' code: test() counting loop + calc_PRC_metrics."""
    t = np.array(thresholds)
    tp = np.zeros([t.size, y.shape[1]])
    fp = np.zeros_like(tp)
    fn = np.zeros_like(tp)
    for k in range(t.size):
        pred = s > t[k]
        for j in range(y.shape[1]):
            tp[k, j] += ((pred[:, j] == 1) * (y[:, j] == 1)).sum()
            fp[k, j] += ((pred[:, j] == 1) * (y[:, j] == 0)).sum()
            fn[k, j] += ((pred[:, j] == 0) * (y[:, j] == 1)).sum()
    mac_p = (tp + 1e-9) / (tp + fp + 1e-9)
    mac_r = tp / (tp + fn)
    mac = np.zeros(tp.shape[1])
    for k in range(tp.shape[1]):
        mac[k] = auc(np.array([0.0] + list(mac_r[:, k]) + [1.0]), np.array([1.0] + list(mac_p[:, k]) + [0.0]))
    mic_p = (1e-9 + tp.sum(1)) / (1e-9 + tp.sum(1) + fp.sum(1))
    mic_r = (1e-9 + tp.sum(1)) / (1e-9 + tp.sum(1) + fn.sum(1))
    mic_p = np.array([1.0] + list(mic_p) + [0.0])
    mic_r = np.array([0.0] + list(mic_r) + [1.0])
    f1 = 2 * mic_p * mic_r / (mic_p + mic_r)
    return mac, auc(mic_r, mic_p), f1.max()


def test_auprc_11pt_hand():
    # one class, y = [1,0,1,0], s = [.92,.85,.45,.01], rule score > t:
    #  t=.95: nothing      -> (R 0,  P 1)
    #  t=.9 : {.92}        -> (R .5, P 1)
    #  t=.8..0.5: {.92,.85} -> (R .5, P .5)
    #  t=.4..0.05: {.92,.85,.45} -> (R 1, P 2/3)     (.01 is never > .05)
    # curve (0,1),(0,1),(.5,1),(.5,.5)x4,(1,2/3)x7,(1,0):
    #  area = .5*1 + .5*(.5 + 2/3)/2 = .5 + .291667 = .791667
    # micro-F1 at the points: (.5,1) -> 2/3, (.5,.5) -> .5, (1,2/3) -> .8 => max .8
    y = np.array([[1], [0], [1], [0]], bool)
    s = np.array([[0.92], [0.85], [0.45], [0.01]])
    res = F.auprc_11pt(y, s)
    assert res["macro"] == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2, abs=1e-8)
    assert res["micro"] == pytest.approx(res["macro"], abs=1e-8)
    assert res["max_f1"] == pytest.approx(0.8, abs=1e-8)
    assert F.max_f1(y, s) == pytest.approx(0.8, abs=1e-8)
    # strict ">": a score equal to a threshold is not predicted at that threshold
    y2 = np.array([[1], [0]], bool)
    s2 = np.array([[0.5], [0.0]])
    # t >= .5: nothing (R 0, P 1); t <= .4: (R 1, P 1) -> area = 1 (flat at P=1)
    # if ">=" were used, t=.5 would give (R 1,P 1) too: same area, so test counts directly:
    assert F.auprc_11pt(y2, s2, thresholds=[0.5])["max_f1"] == pytest.approx(0.0, abs=1e-6)
    assert F.auprc_11pt(y2, s2, thresholds=[0.49])["max_f1"] == pytest.approx(1.0, abs=1e-6)


def test_auprc_11pt_matches_authors_code_and_skips_empty_class():
    rng = np.random.default_rng(2)
    y = rng.random((150, 5)) < 0.3
    s = np.clip(0.35 * y + rng.random((150, 5)) * 0.7, 0, 1)
    mac, mic, mf1 = _calc_prc_reference(y, s)
    res = F.auprc_11pt(y, s)
    np.testing.assert_allclose(res["per_class"], mac, rtol=1e-12)
    assert res["macro"] == pytest.approx(mac.mean())
    assert res["micro"] == pytest.approx(mic)
    assert res["max_f1"] == pytest.approx(mf1)
    # duplicating a class leaves micro unchanged (pooled P, R identical); empty class skipped
    y1, s1 = y[:, :1], s[:, :1]
    y3 = np.concatenate([y1, y1, np.zeros_like(y1)], 1)
    s3 = np.concatenate([s1, s1, s1], 1)
    r1, r3 = F.auprc_11pt(y1, s1), F.auprc_11pt(y3, s3)
    assert r3["skipped"] == [2] and np.isnan(r3["per_class"][2])
    assert r3["macro"] == pytest.approx(r1["macro"])
    # with the empty class, micro gains FPs only; without it identical
    assert F.auprc_11pt(y3[:, :2], s3[:, :2])["micro"] == pytest.approx(r1["micro"])
    # mask = dropping rows
    mask = np.ones_like(y)
    mask[:40] = False
    assert F.auprc_11pt(y, s, mask)["macro"] == pytest.approx(F.auprc_11pt(y[40:], s[40:])["macro"])


# ------------------------------------------------------------------------------ DCASE AUPRC
def _dcase_reference(y, s):
    """Loop transcription of DCASE 2020 task 5 src/metrics.py (coarse mode), no pandas."""
    tables = []
    for c in range(y.shape[1]):
        th = np.sort(s[:, c].copy())
        th = th[np.searchsorted(th, 0.01):]
        th = np.unique(np.append(th, 1.0))[::-1]
        rows = []
        for t in th:
            pred = s[:, c] >= t
            TP = int((pred & y[:, c]).sum())
            FP = int((pred & ~y[:, c]).sum())
            FN = int((~pred & y[:, c]).sum())
            rows.append((t, TP, FP, FN))
        tables.append(np.array(rows))
    aucs = []
    for tab in tables:
        P = tab[:, 1] / np.maximum(tab[:, 1] + tab[:, 2], 0.5)
        R = tab[:, 1] / np.maximum(tab[:, 1] + tab[:, 3], 0.5)
        o = np.argsort(R)  # pandas Series.argsort (quicksort); recall already sorted here
        aucs.append(auc(np.r_[0.0, R[o], 1.0], np.r_[1.0, P[o], 0.0]))
    thr = np.unique(np.hstack([tab[:, 0] for tab in tables]))
    TPs, FPs, FNs = [], [], []
    for t in thr:
        g = np.zeros(3)
        for tab in tables:
            row = tab[tab[:, 0] >= t][-1]
            g += row[1:]
        TPs.append(g[0]), FPs.append(g[1]), FNs.append(g[2])
    TPs, FPs, FNs = map(np.array, (TPs, FPs, FNs))
    P = TPs / np.maximum(TPs + FPs, 0.5)
    R = TPs / np.maximum(TPs + FNs, 0.5)
    o = np.argsort(list(R))
    micro = auc(np.array([0.0] + list(R[o]) + [1.0]), np.array([1.0] + list(P[o]) + [0.0]))
    return np.array(aucs), micro


def test_auprc_dcase_hand_five_clips():
    # class 0: y = [1,0,1,0,0], s = [.9,.8,.6,.3,.005]; thresholds = unique(s >= .01) + 1.0
    #   = [1.0, .9, .8, .6, .3]; rule score >= t; P = TP/max(TP+FP,.5), R = TP/max(TP+FN,.5)
    #   t=1.0: TP0 FP0 -> (R0, P0)   <- the 1.0 threshold adds (0,0): triangle start
    #   t=.9 : TP1 FP0 -> (R.5, P1)
    #   t=.8 : TP1 FP1 -> (R.5, P.5)
    #   t=.6 : TP2 FP1 -> (R1, P2/3)
    #   t=.3 : TP2 FP2 -> (R1, P.5)
    #   curve (0,1),(0,0),(.5,1),(.5,.5),(1,2/3),(1,.5),(1,0)
    #   area = .5*.5*1 (triangle) + .5*(.5+2/3)/2 = .25 + .291667 = .541667
    #   sklearn AP on the same data: .5*1 + .5*2/3 = .833333 (step rule, no (0,0) start point)
    # class 1: y = [0,1,0,0,1], s = [.2,1.0,.4,0.,.5]; thresholds [1.0,.5,.4,.2]
    #   t=1.0: TP1 FP0 (R.5,P1); t=.5: TP2 (R1,P1); t=.4: (R1,P2/3); t=.2: (R1,P.5)
    #   area = 1.0  -> macro = (.541667 + 1)/2 = .770833
    # micro, union thresholds [.2,.3,.4,.5,.6,.8,.9,1.0], pooled counts (4 positives):
    #   1.0: TP1 FP0 (R.25,P1); .9: TP2 FP0 (R.5,P1); .8: TP2 FP1 (R.5,P2/3);
    #   .6: TP3 FP1 (R.75,P.75); .5: TP4 FP1 (R1,P.8); .4: (R1,P2/3); .3: (R1,P4/7); .2: (R1,P.5)
    #   curve order (descending threshold): area = .25 + .25 + .25*(2/3+.75)/2 + .25*(.75+.8)/2
    #     = .5 + .177083 + .19375 = .870833
    # micro-F1 @ .5: pooled score >= .5 -> TP4 FP1 FN0, P .8, R 1, F = 2/(1.25+1) = .888889
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 0], [0, 1]], bool)
    s = np.array([[0.9, 0.2], [0.8, 1.0], [0.6, 0.4], [0.3, 0.0], [0.005, 0.5]])
    res = F.auprc_dcase(y, s, micro_order="curve")
    assert res["per_class"][0] == pytest.approx(0.25 + 0.5 * (0.5 + 2 / 3) / 2)
    assert res["per_class"][1] == pytest.approx(1.0)
    assert res["macro"] == pytest.approx((0.25 + 0.5 * (0.5 + 2 / 3) / 2 + 1.0) / 2)
    assert res["micro"] == pytest.approx(0.5 + 0.25 * (2 / 3 + 0.75) / 2 + 0.25 * (0.75 + 0.8) / 2)
    assert res["micro_f1"] == pytest.approx(2 / (1.25 + 1))
    assert res["no_positive"] == []
    # documented difference from AP: class 0 AP is .833 but the official value .542
    assert average_precision_score(y[:, 0], s[:, 0]) == pytest.approx(5 / 6)
    assert res["per_class"][0] < average_precision_score(y[:, 0], s[:, 0]) - 0.25
    # 'official' order runs np.argsort on the ascending table: same as the transcription
    mac, mic = _dcase_reference(y, s)
    off = F.auprc_dcase(y, s)
    np.testing.assert_allclose(off["per_class"], mac)
    assert off["micro"] == pytest.approx(mic)


def test_auprc_dcase_matches_official_transcription_random():
    rng = np.random.default_rng(3)
    for rounding in (None, 1):  # continuous scores, then heavy ties
        y = rng.random((120, 8)) < 0.25
        s = np.clip(0.3 * y + rng.random((120, 8)) * 0.75, 0, 1)
        if rounding is not None:
            s = np.round(s, rounding)
        mac, mic = _dcase_reference(y, s)
        res = F.auprc_dcase(torch.as_tensor(y), torch.as_tensor(s))
        np.testing.assert_allclose(res["per_class"], mac, rtol=1e-12, atol=1e-12)
        assert res["macro"] == pytest.approx(mac.mean())
        assert res["micro"] == pytest.approx(mic)
        # the curve-order micro differs at most by the tie-order effect
        assert abs(F.auprc_dcase(y, s, micro_order="curve")["micro"] - mic) < 0.02


# ---------------------------------------------------------------------------- OpenMIC weighted F1
def test_weighted_f1_hand():
    # y = [1,1,0,0,0], p = [1,0,0,0,1]: positive class tp1 fp1 fn1 -> F1+ = 2/(2+1+1) = .5
    # negative class tn2, (its fp = 1, fn = 1)          -> F1- = 4/(4+2) = 2/3
    # weighted = (2*.5 + 3*2/3)/5 = .6
    y = np.array([[1], [1], [0], [0], [0]], bool)
    p = np.array([[1], [0], [0], [0], [1]], bool)
    res = F.weighted_f1_openmic(y, p)
    assert res["per_class"] == [pytest.approx(0.6)]
    assert res["mean"] == pytest.approx(0.6)


def test_weighted_f1_matches_sklearn_per_class_with_mask():
    rng = np.random.default_rng(4)
    N, C = 80, 7
    y = rng.random((N, C)) < 0.4
    p = rng.random((N, C)) < 0.4
    mask = rng.random((N, C)) < 0.6
    y[:, 1] = False                 # no positive at all
    p[:, 2] = True                  # all predicted positive
    y[:, 3] = True                  # all positive
    p[:, 4] = y[:, 4]               # perfect
    y[:, 5], p[:, 5] = False, False  # only negatives, all right
    mask[:, 6] = False              # nothing annotated -> NaN, excluded
    res = F.weighted_f1_openmic(y, p, mask)
    for c in range(6):
        m = mask[:, c]
        want = f1_score(y[m, c], p[m, c], average="weighted", zero_division=0)
        assert res["per_class"][c] == pytest.approx(want), c
    assert np.isnan(res["per_class"][6])
    assert res["mean"] == pytest.approx(np.mean(res["per_class"][:6]))
    assert res["per_class"][4] == pytest.approx(1.0)


def test_auprc_11pt_compares_in_the_scores_dtype():
    # y = [1, 0, 1, 0], s = [.5, .3, float32(.1), .07] (float32, like the authors' sigmoid).
    # float32: 0.1f > 0.1f is False, so at t = .1 only clip 0 is predicted among positives:
    #   t .95-.5: (R 0, P 1); .4, .3: (.5, 1); .2, .1: (.5, .5); .05: (1, .5); ends (0,1),(1,0)
    #   area = .5 * 1 + .5 * .5 = .75, max F1 = 2/3
    # float64 thresholds (the old behaviour): float32(.1) = .10000000149 > .1, so at t = .1
    #   (1, 2/3): area = .5 + .5 * (.5 + 2/3) / 2 = .791667, max F1 = .8
    y = np.array([[1], [0], [1], [0]], bool)
    s32 = np.array([[0.5], [0.3], [0.1], [0.07]], np.float32)
    r32 = F.auprc_11pt(y, s32)
    assert r32["macro"] == pytest.approx(0.75, abs=1e-8)
    assert r32["micro"] == pytest.approx(0.75, abs=1e-8)
    assert r32["max_f1"] == pytest.approx(2 / 3, abs=1e-8)
    r64 = F.auprc_11pt(y, s32.astype(np.float64))  # the same numbers widened first
    assert r64["macro"] == pytest.approx(0.5 + 0.5 * (0.5 + 2 / 3) / 2, abs=1e-8)
    assert r64["max_f1"] == pytest.approx(0.8, abs=1e-8)
    assert F.auprc_11pt(y, torch.from_numpy(s32))["macro"] == pytest.approx(0.75, abs=1e-8)
    assert F.max_f1(y, s32) == pytest.approx(2 / 3, abs=1e-8)


def test_fit_class_thresholds_hand_and_sklearn():
    # class 0: positives .9, .7; negatives .75, .2. F1 of `score > t`:
    #   .95, .9: 0; .8: 2/3; .7: 1/2 (0.7 > 0.7 is False); .6 ... .2: 4/5; .1, .05: 2/3
    #   -> best .6 (the first, i.e. highest, of the tied .6 ... .2)
    # class 1: no positive -> fallback .5
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 0]], bool)
    s = np.array([[0.9, 0.1], [0.7, 0.9], [0.75, 0.3], [0.2, 0.2]])
    thr = F.fit_class_thresholds(y, s)
    assert thr.tolist() == [0.6, 0.5]
    rng = np.random.default_rng(0)
    y = rng.random((200, 3)) < 0.3
    s = np.clip(y * 0.3 + rng.random((200, 3)) * 0.7, 0, 1)
    thr = F.fit_class_thresholds(y, s)
    for c in range(3):
        f1 = [f1_score(y[:, c], s[:, c] > t) for t in F.L2I_THRESHOLDS]
        assert f1_score(y[:, c], s[:, c] > thr[c]) == pytest.approx(max(f1))
        assert thr[c] == F.L2I_THRESHOLDS[int(np.argmax(f1))]
    mask = np.ones_like(y)
    mask[:50] = False  # unannotated rows count in no F1
    np.testing.assert_array_equal(F.fit_class_thresholds(y, s, mask),
                                  F.fit_class_thresholds(y[50:], s[50:]))
