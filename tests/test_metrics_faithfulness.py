"""Known-answer tests of audio_xai_bench.metrics.faithfulness."""
import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon

from audio_xai_bench.metrics import faithfulness as FF


def test_select_relevant_is_strict():
    r = torch.tensor([[1.0, 0.3, 0.31, -0.5], [0.1, 0.9, 0.3, 0.0]])
    assert FF.select_relevant(r, 0.3).tolist() == [[True, False, True, False], [False, True, False, False]]


def _random_case(seed=0, B=64, K=20):
    g = torch.Generator().manual_seed(seed)
    selected = torch.rand(B, K, generator=g) < 0.3
    selected[0] = True                     # nothing available
    selected[1] = False                    # everything available
    counts = torch.randint(0, 16, (B,), generator=g)
    counts[2] = 0
    counts[3] = 100                        # more than available
    return selected, counts


def test_random_outside_disjoint_exact_count_deterministic():
    selected, counts = _random_case()
    out = FF.random_outside(selected, counts, torch.Generator().manual_seed(7))
    assert out.dtype == torch.bool and out.shape == selected.shape
    assert not (out & selected).any()                       # never a selected component
    available = (~selected).sum(1)
    assert torch.equal(out.sum(1), torch.minimum(counts, available))  # exactly min(count, avail)
    assert out[0].sum() == 0 and out[2].sum() == 0
    assert torch.equal(out[3], ~selected[3])                 # takes all that are available
    again = FF.random_outside(selected, counts, torch.Generator().manual_seed(7))
    assert torch.equal(out, again)                           # deterministic with the generator
    other = FF.random_outside(selected, counts, torch.Generator().manual_seed(8))
    assert not torch.equal(out, other)


def test_random_outside_is_uniform_over_unselected():
    # one row, K = 10, components 0..3 selected, draw 3 of the 6 others, 6000 times (batched as
    # rows): each unselected component should be drawn with probability 3/6 = .5
    B, K = 6000, 10
    selected = torch.zeros(B, K, dtype=torch.bool)
    selected[:, :4] = True
    out = FF.random_outside(selected, torch.full((B,), 3), torch.Generator().manual_seed(0))
    freq = out.float().mean(0)
    assert torch.all(freq[:4] == 0)
    assert torch.allclose(freq[4:], torch.full((6,), 0.5), atol=0.03)  # sd ~ .0065


def test_random_any_counts_and_determinism():
    counts = torch.tensor([0, 3, 7, 50])
    out = FF.random_any(4, 10, counts, torch.Generator().manual_seed(1))
    assert out.shape == (4, 10)
    assert out.sum(1).tolist() == [0, 3, 7, 10]
    assert torch.equal(out, FF.random_any(4, 10, counts, torch.Generator().manual_seed(1)))
    # scalar count (the authors' ESC code: n = 7 for every clip)
    assert FF.random_any(5, 100, 7, torch.Generator().manual_seed(2)).sum(1).tolist() == [7] * 5


def test_baseline_counts_modes():
    sel = torch.zeros(3, 6, dtype=torch.bool)
    sel[0, :1] = True
    sel[1, :2] = True
    sel[2, :4] = True
    # |L| = 1, 2, 4: mean 7/3 = 2.33 -> 2
    assert FF.baseline_counts(sel, "mean").tolist() == [2, 2, 2]
    assert FF.baseline_counts(sel, "per_sample").tolist() == [1, 2, 4]
    assert FF.baseline_counts(sel, "7").tolist() == [7, 7, 7]
    # class_mean: class 0 rows |L| = 1, 4 -> 2.5 -> 2 (half to even); class 1 row -> 2
    assert FF.baseline_counts(sel, "class_mean", classes=torch.tensor([0, 1, 0])).tolist() == [2, 2, 2]
    assert FF.baseline_counts(sel, "class_mean", classes=torch.tensor([1, 0, 1])).tolist() == [2, 2, 2]
    sel[2, :5] = True  # 1, 2, 5 -> mean 8/3 = 2.67 -> 3
    assert FF.baseline_counts(sel, "mean").tolist() == [3, 3, 3]
    with pytest.raises(ValueError):
        FF.baseline_counts(sel, "median")


def test_ff_values_and_summary_hand():
    p = torch.tensor([0.9, 0.8, 0.5, 0.6])
    p2 = torch.tensor([0.2, 0.8, 0.7, 0.1])
    assert torch.allclose(FF.ff_values(p, p2), torch.tensor([0.7, 0.0, -0.2, 0.5]))
    # [1,2,3,4]: median 2.5, mean 2.5, q25 1.75, q75 3.25 (linear), IQR 1.5
    s = FF.ff_summary(np.array([4.0, 1.0, np.nan, 3.0, 2.0]))
    assert s["median"] == 2.5 and s["mean"] == 2.5 and s["n"] == 4
    assert s["q25"] == pytest.approx(1.75) and s["q75"] == pytest.approx(3.25)
    assert s["iqr"] == pytest.approx(1.5) and s["frac_positive"] == 1.0
    assert FF.ff_summary([])["n"] == 0


def test_classwise_median_hand():
    ff = np.array([0.1, 0.5, 0.3, -0.2, 0.9, 0.4])
    cls = np.array([0, 0, 0, 2, 3, 3])
    out = FF.classwise_median(ff, cls, num_classes=5, exclude=(3,))
    # class 0: median(.1,.5,.3) = .3; class 1: no pairs; class 2: -.2; class 3 excluded; 4 none
    assert out[0] == pytest.approx(0.3) and out[2] == pytest.approx(-0.2)
    assert np.isnan(out[1]) and np.isnan(out[3]) and np.isnan(out[4])
    out = FF.classwise_median(ff, cls, num_classes=5)
    assert out[3] == pytest.approx(0.65)


def test_wilcoxon_vs_baseline():
    rng = np.random.default_rng(0)
    ff_rand = rng.normal(0, 0.05, 60)
    ff = ff_rand + rng.normal(0.1, 0.1, 60)
    res = FF.wilcoxon_vs_baseline(ff, ff_rand)
    ref = wilcoxon(ff, ff_rand, alternative="greater")
    assert res["statistic"] == pytest.approx(ref.statistic) and res["p"] == pytest.approx(ref.pvalue)
    assert res["p"] < 1e-3 and res["n"] == 60
    # reversed: no evidence that the random baseline is greater
    assert FF.wilcoxon_vs_baseline(ff_rand, ff)["p"] > 0.99
    # all-zero differences: p = 1
    z = FF.wilcoxon_vs_baseline(ff, ff.copy())
    assert z["p"] == 1.0 and z["n_nonzero"] == 0
