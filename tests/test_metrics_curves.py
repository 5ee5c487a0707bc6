"""Known-answer tests of the removal operators, mass matching, curves / AUC and the
budget-aware FF baselines (issue 10 items 0-1)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audio_xai_bench.api import FactorExplanation, SegmentExplanation
from audio_xai_bench.metrics import curves as cv
from audio_xai_bench.metrics import faithfulness as ffm
from audio_xai_bench.metrics import removal as rm
from audio_xai_bench.metrics.base import PairContext


# -- removal operators ---------------------------------------------------------------------
def test_background_level_is_per_bin_quantile_capped_by_x():
    X = torch.tensor([[[1.0, 2.0, 3.0, 4.0, 5.0], [0.5, 0.5, 9.0, 9.0, 9.0]]])  # (1, 2, 5)
    bg = rm.background_level(X, 0.5)
    # medians 3 and 9, capped by each bin
    assert torch.allclose(bg, torch.tensor([[[1.0, 2.0, 3.0, 3.0, 3.0], [0.5, 0.5, 9.0, 9.0, 9.0]]]))
    np.testing.assert_allclose(rm.background_level(X, 0.0)[0, :, -1].numpy(), [1.0, 0.5])


def test_remove_subtract_and_fill_by_hand():
    X = torch.tensor([[[1.0, 1.0, 4.0, 6.0]]])          # one frequency, four frames
    removed = torch.tensor([[[0.0, 0.5, 4.0, 3.0]]])    # nothing, half, all, half
    assert torch.equal(rm.remove(X, removed, "subtract"), X - removed)
    # floor = quantile 0 over frames = 1.0; B = min(1, X) = 1 everywhere
    out = rm.remove(X, removed, "fill", quantile=0.0)
    # X - removed + (removed / X) * B
    expect = torch.tensor([[[1.0, 0.5 + 0.5 * 1.0, 0.0 + 1.0, 3.0 + 0.5]]])
    assert torch.allclose(out, expect)
    # never louder than x, never below plain subtraction
    assert (out <= X + 1e-7).all() and (out >= X - removed - 1e-7).all()
    # keep_only = removal of the complement
    kept = torch.tensor([[[1.0, 0.0, 0.0, 6.0]]])
    assert torch.allclose(rm.keep_only(X, kept, "fill", 0.0), torch.tensor([[[1.0, 1.0, 1.0, 6.0]]]))
    with pytest.raises(ValueError, match="removal operator"):
        rm.remove(X, removed, "zero")


def test_fill_leaves_a_background_bin_unchanged():
    torch.manual_seed(0)
    X = torch.rand(2, 5, 40) * 0.1 + 0.2   # stationary background
    X[:, :, 10:20] += 2.0                  # an event
    seg = torch.zeros(2, 5, 40, dtype=torch.long)
    seg[:, :, 10:20] = 1
    e = SegmentExplanation(X, seg, torch.tensor([[0.0, 1.0]] * 2))
    quiet = e.mixture(torch.tensor([[1.0, 0.0]] * 2))
    out = rm.remove(X, quiet, "fill", 0.1)
    # removing background frames changes them by at most the spread below the 10th percentile
    assert (X - out).abs().max() < 0.1
    assert (rm.remove(X, quiet, "subtract")[:, :, :10] == 0).all()  # the paper's hole


# -- component masses ----------------------------------------------------------------------
def test_component_mass_matches_mixture_for_both_explanations():
    torch.manual_seed(0)
    X = torch.rand(3, 6, 7)
    W, H = torch.rand(6, 4), torch.rand(3, 4, 7)
    fe = FactorExplanation(X, W, H, torch.rand(3, 4))
    seg = torch.randint(-1, 5, (3, 6, 7))
    se = SegmentExplanation(X, seg, torch.rand(3, 5))
    for e in (fe, se):
        loop = torch.stack([e.component(k).sum((1, 2)) for k in range(e.num_components)], 1)
        assert torch.allclose(e.component_mass(), loop, atol=1e-5)
        # mixture is linear in float weights: the basis of partial units
        w = torch.rand_like(e.relevance)
        assert torch.allclose(e.mixture(w).sum((1, 2)), (e.component_mass() * w).sum(1), atol=1e-4)
    Wb = torch.rand(3, 6, 4)
    fb = FactorExplanation(X, Wb, H, torch.rand(3, 4))
    loop = torch.stack([fb.component(k).sum((1, 2)) for k in range(4)], 1)
    assert torch.allclose(fb.component_mass(), loop, atol=1e-5)


# -- mass matching -------------------------------------------------------------------------
def test_mass_matched_weights_partial_last_unit_by_hand():
    mass = torch.tensor([[4.0, 3.0, 2.0, 1.0], [4.0, 3.0, 2.0, 1.0]])
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    w, ok = cv.mass_matched_weights(mass, order, torch.tensor([5.0, 5.0]))
    assert torch.allclose(w, torch.tensor([[1.0, 1 / 3, 0.0, 0.0], [0.0, 2 / 3, 1.0, 1.0]]))
    assert ok.all() and torch.allclose((w * mass).sum(1), torch.tensor([5.0, 5.0]))
    # not allowed units count for nothing; an unreachable target is flagged
    allowed = torch.tensor([[False, True, True, True], [True, True, True, True]])
    w, ok = cv.mass_matched_weights(mass, order, torch.tensor([7.0, 11.0]), allowed)
    assert ok.tolist() == [False, False]
    assert torch.allclose(w[0], torch.tensor([0.0, 1.0, 1.0, 1.0]))
    w, ok = cv.mass_matched_weights(mass, order, torch.tensor([6.0, 10.0]), allowed)
    assert ok.tolist() == [True, True]


def test_auc_is_normalised_trapezoid():
    b = (0.05, 0.1, 0.2, 0.3, 0.5)
    v = np.random.default_rng(0).random((5, 7))
    ref = np.trapezoid(v, b, axis=0) / 0.45 if hasattr(np, "trapezoid") else np.trapz(v, b, axis=0) / 0.45
    np.testing.assert_allclose(cv.auc(b, v), ref)
    np.testing.assert_allclose(cv.auc(b, np.full((5, 2), 0.7)), [0.7, 0.7])
    v[2, 1] = np.nan
    assert np.isnan(cv.auc(b, v)[1]) and not np.isnan(cv.auc(b, v)[0])


def test_degenerate_rows():
    r = torch.tensor([[0.2, 0.2, 0.2], [0.1, float("nan"), 0.3], [1.0, 0.0, 0.5]])
    assert cv.degenerate_rows(r).tolist() == [True, True, False]


# -- curves with a known model -------------------------------------------------------------
def _strip_case():
    """X is 1 x 10 frames of mass 1; 10 segments (one per frame); the 'class' lives in frames
    0-1; the toy model's probability is the share of the class frames' mass still present."""
    X = torch.ones(2, 1, 10)
    seg = torch.arange(10).view(1, 1, 10).expand(2, 1, 10).contiguous()
    right = torch.tensor([1.0, 0.9] + [0.0] * 8)        # marks exactly the class part
    whole = torch.linspace(1.0, 0.5, 10).flip(0)         # marks everything, class part last
    rel = torch.stack([right, whole])

    def probs(X2, rows):
        return X2[:, 0, :2].sum(-1) / 2.0
    return SegmentExplanation(X, seg, rel), probs


def test_curves_by_hand_subtract():
    e, probs = _strip_case()
    budgets = (0.1, 0.2, 0.3)
    c = cv.curves(e, probs, [cv.relevance_order(e.relevance)], budgets, removal="subtract")
    # row 0: frames 0 then 1 removed: class share left 0.5 at b=0.1, 0 after
    np.testing.assert_allclose(c["deletion"][0, :, 0].numpy(), [0.5, 0.0, 0.0])
    np.testing.assert_allclose(c["insertion"][0, :, 0].numpy(), [0.5, 1.0, 1.0])
    # row 1: frames 9, 8, 7 first: the class part is untouched
    np.testing.assert_allclose(c["deletion"][0, :, 1].numpy(), [1.0, 1.0, 1.0])
    np.testing.assert_allclose(c["insertion"][0, :, 1].numpy(), [0.0, 0.0, 0.0])
    # partial unit: b = 0.15 removes frame 0 and half of frame 1
    c = cv.curves(e, probs, [cv.relevance_order(e.relevance)], (0.15, 0.5), removal="subtract")
    assert c["deletion"][0, 0, 0].item() == pytest.approx(0.25)


def test_marking_everything_does_not_gain_on_deletion_but_does_on_ff():
    """The confound of issue 10 as a test: at tau = 0.1 the method that marks the whole input
    removes everything and wins FF; at equal mass budgets it loses on deletion AUC."""
    e, probs = _strip_case()
    fam = cv.CurvesFamily((0.05, 0.1, 0.2, 0.3), draws=0, removal="subtract")
    ctx = PairContext(None, e, torch.tensor([0, 0]), torch.ones(2, 1),
                      lambda X2, r: probs(X2, r).unsqueeze(1), torch.Generator().manual_seed(0),
                      cv.degenerate_rows(e.relevance))
    cols = fam.pair_columns(ctx)
    assert cols["deletion_auc"][0] < cols["deletion_auc"][1]
    assert cols["insertion_auc"][0] > cols["insertion_auc"][1]
    assert cols["deletion@0.1"][0] < cols["deletion@0.1"][1]
    ff_fam = ffm.FaithfulnessFamily((0.1,), "subtract")
    ff = ff_fam.pair_columns(ctx)["ff@0.1"]
    assert ff[1] >= ff[0]  # FF at fixed tau rewards marking everything


def test_degenerate_relevances_give_nan_curves_not_zero():
    e, probs = _strip_case()
    e.relevance = torch.tensor([[0.5] * 10, [float("nan")] + [0.1] * 9])
    fam = cv.CurvesFamily((0.1, 0.2), draws=1, removal="fill")
    ctx = PairContext(None, e, torch.tensor([0, 0]), torch.ones(2, 1),
                      lambda X2, r: probs(X2, r).unsqueeze(1), torch.Generator().manual_seed(0),
                      cv.degenerate_rows(e.relevance))
    cols = fam.pair_columns(ctx)
    for k, v in cols.items():
        assert torch.isnan(v).all(), k
    s = cv.summarise({k: v.numpy() for k, v in cols.items()}, (0.1, 0.2))
    assert math.isnan(s["faithfulness/deletion_auc"]) and s["faithfulness/curve_n_pairs"] == 0


def test_random_order_curve_matches_method_when_order_is_random():
    """Summary + Wilcoxon direction: a method better than random order gets a small p."""
    rng = np.random.default_rng(0)
    n = 30
    a = rng.random(n) * 0.3
    r = a + 0.2 + rng.random(n) * 0.1
    cols = {f"{k}@{b}": rng.random(n) for k in ("deletion", "insertion", "deletion_randorder",
                                                  "insertion_randorder") for b in (0.1, 0.2)}
    cols.update(deletion_auc=a, deletion_auc_randorder=r, insertion_auc=r, insertion_auc_randorder=a)
    s = cv.summarise(cols, (0.1, 0.2))
    assert s["faithfulness/deletion_wilcoxon_p"] < 1e-4 and s["faithfulness/insertion_wilcoxon_p"] < 1e-4
    assert s["faithfulness/deletion_auc"] == pytest.approx(a.mean())
    s = cv.summarise({**cols, "deletion_auc": r, "deletion_auc_randorder": a}, (0.1, 0.2))
    assert s["faithfulness/deletion_wilcoxon_p"] > 0.99


# -- FF baselines --------------------------------------------------------------------------
def test_energy_and_mass_baselines_by_hand():
    mass = torch.tensor([[1.0, 5.0, 3.0, 1.0]])
    assert ffm.energy_count(mass, torch.tensor([2])).tolist() == [[False, True, True, False]]
    w, ok = ffm.energy_mass(mass, torch.tensor([6.5]))
    assert torch.allclose(w, torch.tensor([[0.0, 1.0, 0.5, 0.0]])) and ok.all()
    sel = torch.tensor([[False, True, False, False]])
    g = torch.Generator().manual_seed(0)
    w, ok = ffm.random_mass_outside(sel, mass, torch.tensor([4.0]), g)
    assert ok.all() and w[0, 1] == 0 and (w * mass).sum().item() == pytest.approx(4.0)
    w, ok = ffm.random_mass_outside(sel, mass, torch.tensor([5.5]), g)
    assert not ok.any()  # outside L holds 5 < 5.5
    assert ffm.count_matchable(torch.tensor([[True, True, False]]), torch.tensor([2])).tolist() == [False]
    assert ffm.count_matchable(torch.tensor([[True, True, False]]), torch.tensor([2]), "all").tolist() == [True]


def test_summarise_drops_unmatched_pairs_and_counts_them():
    ff = np.array([0.5, 0.4, 0.3, 0.9])
    rnd = np.array([0.1, np.nan, 0.0, np.nan])
    s = ffm.summarise({"ff@0.1": ff, "n_selected@0.1": np.ones(4), "random_ff@0.1": rnd,
                       "random_n@0.1": np.ones(4)}, (0.1,))
    assert s["faithfulness/random_n_unmatched@0.1"] == 2
    assert s["faithfulness/random_ff_median@0.1"] == pytest.approx(0.05)
    w = ffm.wilcoxon_vs_baseline(ff[[0, 2]], rnd[[0, 2]])
    assert s["faithfulness/wilcoxon_p@0.1"] == pytest.approx(w["p"])
    s = ffm.summarise({"ff@0.1": ff, "n_selected@0.1": np.ones(4),
                       "random_ff@0.1": np.full(4, np.nan)}, (0.1,))
    assert math.isnan(s["faithfulness/wilcoxon_p@0.1"])  # nothing matched: no p-value


def test_ff_family_subtract_is_the_papers_ff_and_shares_are_by_hand():
    e, probs = _strip_case()
    ctx = PairContext(None, e, torch.tensor([0, 0]), torch.ones(2, 1),
                      lambda X2, r: probs(X2, r).unsqueeze(1), torch.Generator().manual_seed(0),
                      cv.degenerate_rows(e.relevance))
    cols = ffm.FaithfulnessFamily((0.5, 0.95), "subtract").pair_columns(ctx)
    for tau in (0.5, 0.95):
        sel = ffm.select_relevant(e.relevance, tau)
        paper = 1.0 - probs(e.X - e.mixture(sel), None)  # eq. 7 with f(x)_c = 1
        assert torch.allclose(cols[f"ff@{tau}"], paper)
    # tau = 0.5: row 0 marks frames 0-1 (2 of 10 units of mass 1), row 1 nine frames (r > 0.5)
    assert torch.allclose(cols["mass_share@0.5"], torch.tensor([0.2, 0.9]))
    assert torch.allclose(cols["energy_share@0.5"], torch.tensor([0.2, 0.9]))
    # row 1: outside L holds 1 < 9 of mass: the mass baseline cannot be matched -> NaN, not 0
    assert not torch.isnan(cols["random_mass_ff@0.5"][0]) and torch.isnan(cols["random_mass_ff@0.5"][1])
