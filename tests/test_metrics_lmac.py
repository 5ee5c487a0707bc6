"""Known-answer tests of the L-MAC metric set (metrics/lmac.py) on hand-made inputs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from audio_xai_bench.api import FactorExplanation, SegmentExplanation
from audio_xai_bench.metrics import lmac

P = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]])
O = torch.tensor([[0.3, 0.5, 0.2], [0.1, 0.8, 0.1]])
C = torch.tensor([0, 1])


def test_ai_ad_ag_fid_in_by_hand():
    y, o = P[torch.arange(2), C], O[torch.arange(2), C]
    # pair 0: 0.6 -> 0.3 (drop of half, decision lost); pair 1: 0.7 -> 0.8 (gain 0.1 of 0.3)
    assert lmac.average_increase(y, o).tolist() == [0.0, 100.0]
    assert lmac.average_drop(y, o).tolist() == pytest.approx([50.0, 0.0], rel=1e-6)
    assert lmac.average_gain(y, o).tolist() == pytest.approx([0.0, 100 / 3], rel=1e-5)
    assert lmac.input_fidelity(P, O, C).tolist() == [0.0, 100.0]
    # multilabel extension: the explained class is still above the threshold
    assert lmac.input_fidelity(P, O, C, "multilabel", 0.5).tolist() == [0.0, 100.0]
    assert lmac.input_fidelity(P, O, torch.tensor([1, 1]), "multilabel", 0.5).tolist() == [0.0, 100.0]
    per_class = torch.tensor([0.2, 0.45, 0.5])  # one threshold per class, picked by the pair's
    assert lmac.input_fidelity(P, O, torch.tensor([0, 1]), "multilabel", per_class).tolist() == [100.0, 100.0]


def test_sparseness_and_complexity_by_hand_and_against_independent_formulas():
    one_hot = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    flat = torch.ones(1, 4)
    # Gini of (1, 0, 0, 0) is (n - 1) / n = 0.75 (+1e-7 shifts it by ~1e-7); uniform: 0
    assert lmac.sparseness(one_hot).item() == pytest.approx(0.75, abs=1e-6)
    assert lmac.sparseness(flat).item() == pytest.approx(0.0, abs=1e-6)
    # entropy: one bin -> 0; m equal bins -> ln m
    assert lmac.complexity(one_hot).item() == pytest.approx(0.0, abs=1e-9)
    assert lmac.complexity(flat).item() == pytest.approx(math.log(4), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    m = torch.rand(3, 5, 7, generator=g) ** 3
    a = m.flatten(1).double().numpy()
    a = a / a.max(1, keepdims=True) + 1e-7
    # Gini as mean absolute difference / (2 mean), an independent formula of the same index
    gini = np.abs(a[:, :, None] - a[:, None, :]).sum((1, 2)) / (2 * a.shape[1] ** 2 * a.mean(1))
    assert lmac.sparseness(m).double().numpy() == pytest.approx(gini, rel=1e-5)
    ent = scipy.stats.entropy(m.flatten(1).numpy(), axis=1)  # natural log, normalises
    assert lmac.complexity(m).numpy() == pytest.approx(ent, rel=1e-5)
    # scale-free, like Quantus after normalise_by_max
    assert lmac.complexity(5 * m).numpy() == pytest.approx(lmac.complexity(m).numpy(), rel=1e-5)


def test_empty_or_nan_mask_gives_named_nan_not_zero():
    masks = torch.stack([torch.zeros(2, 3), torch.full((2, 3), float("nan")), torch.ones(2, 3)])
    sps, comp = lmac.sparseness(masks), lmac.complexity(masks)
    assert torch.isnan(sps[:2]).all() and torch.isnan(comp[:2]).all()
    assert torch.isfinite(sps[2]) and torch.isfinite(comp[2])
    pairs = pd.DataFrame({k: v.numpy() for k, v in lmac.pair_values(
        P.repeat(2, 1)[:3], O.repeat(2, 1)[:3], torch.tensor([0, 1, 0]), masks).items()})
    s = lmac.summarize(pairs)
    assert s["lmac/n_empty"] == 2.0
    assert s["lmac/sps"] == pytest.approx(float(sps[2]))
    assert "lmac/sps_soft" not in s


def test_masks_of_explanations():
    X = torch.tensor([[[2.0, 1.0], [0.0, 4.0]]])
    seg = SegmentExplanation(X, torch.tensor([[[0, 1], [1, 2]]]), torch.tensor([[1.0, -0.5, 0.25]]))
    kept = seg.mixture(seg.relevance > 0.1)
    assert lmac.mask_of(kept, X).tolist() == [[[1.0, 0.0], [0.0, 1.0]]]
    soft, soft_kept = lmac.soft_mask_of(seg)
    assert soft.tolist() == [[[1.0, 0.0], [0.0, 0.25]]]  # max(r, 0) per bin; X = 0 -> 0
    assert torch.allclose(soft_kept, soft * X)
    # NMF components: the mask is the recipe's L2I mask W_L H_L / (W H)
    W = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    H = torch.tensor([[[1.0, 2.0], [3.0, 1.0]]])
    X2 = torch.tensor([[[1.0, 2.0], [4.0, 3.0]]])
    fe = FactorExplanation(X2, W, H, torch.tensor([[1.0, 0.05]]), eps=0.0)
    m = lmac.mask_of(fe.mixture(fe.relevance > 0.1), X2)
    WH = W @ H[0]
    assert torch.allclose(m[0], (W[:, :1] @ H[0, :1]) / WH)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="masked-in"):
        lmac.average_drop(torch.ones(3), torch.ones(2))
    with pytest.raises(ValueError, match="kept spectrogram"):
        lmac.mask_of(torch.ones(1, 2, 2), torch.ones(1, 2, 3))
