"""Known-answer tests of audio_xai_bench.metrics.groundtruth."""
import math

import pytest
import torch

from audio_xai_bench.metrics import groundtruth as G

N = 4000
_t = torch.arange(N, dtype=torch.float64)
# sin and cos of the same frequency over an integer number of periods: zero-mean, orthogonal,
# equal power (N/2 each)
SRC = torch.sin(2 * math.pi * 10 * _t / N)
ORTHO = torch.cos(2 * math.pi * 10 * _t / N)


def test_si_sdr_identical_scaled_and_orthogonal():
    s = torch.stack([SRC, 2 * SRC]).float()
    # identical: 10 log10((||s||^2 + eps)/eps) with ||s||^2 = 2000 -> ~ 113 dB
    assert torch.all(G.si_sdr(s, s) > 100)
    mix = (SRC + ORTHO).float().unsqueeze(0)
    ref = SRC.float().unsqueeze(0)
    # source + equal-power orthogonal noise: alpha = 1, target = s, residual = n -> 0 dB
    assert G.si_sdr(mix, ref).item() == pytest.approx(0.0, abs=1e-4)
    # scale invariance in the estimate and in the reference
    assert G.si_sdr(3.0 * mix, ref).item() == pytest.approx(0.0, abs=1e-4)
    assert G.si_sdr(mix, -0.5 * ref).item() == pytest.approx(0.0, abs=1e-4)
    # half-power noise (amplitude 1/sqrt 2): 10 log10(2) = 3.0103 dB
    half = (SRC + ORTHO / math.sqrt(2)).float().unsqueeze(0)
    assert G.si_sdr(half, ref).item() == pytest.approx(10 * math.log10(2), abs=1e-4)
    # a DC offset is removed first (zero_mean=True)
    assert G.si_sdr(mix + 5.0, ref).item() == pytest.approx(0.0, abs=1e-4)
    assert G.si_sdr(mix, ref).shape == (1,)
    with pytest.raises(ValueError):
        G.si_sdr(mix, ref[:, :-1])


def test_si_sdr_improvement_known_value():
    # mixture = s + n (0 dB); interpretation = s + n/2 -> power ratio 4 -> 6.0206 dB; SI-SDRi 6.02
    mix = (SRC + ORTHO).unsqueeze(0)
    x_int = (SRC + 0.5 * ORTHO).unsqueeze(0)
    src = SRC.unsqueeze(0)
    assert G.si_sdr_improvement(x_int, mix, src).item() == pytest.approx(10 * math.log10(4), abs=1e-6)
    assert G.si_sdr_improvement(mix, mix, src).item() == pytest.approx(0.0, abs=1e-9)


def test_oracle_mask_rule():
    src = torch.tensor([[[1.0, 0.4], [0.0, 2.0]]])
    mix = torch.tensor([[[1.5, 1.0], [0.0, 4.0]]])
    # 1 >= .75 yes; .4 >= .5 no; 0 >= 0 but silent source -> no; 2 >= 2 yes (inclusive)
    assert G.oracle_mask(src, mix).tolist() == [[[True, False], [False, True]]]
    assert G.oracle_mask(src, mix, ratio=1.0).tolist() == [[[False, False], [False, False]]]


def test_mask_energy_precision_recall_hand():
    mask = torch.tensor([[[True, False], [False, True]]])
    comp = torch.tensor([[[3.0, 1.0], [0.0, 0.0]]])
    src = torch.tensor([[[2.0, 0.0], [0.0, 1.0]]])
    # precision: energy inside mask 9 of total 9 + 1 = 10 -> .9
    assert G.mask_energy_precision(comp, mask).item() == pytest.approx(0.9)
    # recall: masked source energy 4 + 1 = 5; covered min(9,4) + min(0,1) = 4 -> .8
    assert G.mask_energy_recall(comp, mask, src).item() == pytest.approx(0.8)
    # batched, silent interpretation -> NaN precision, 0 recall
    comp2 = torch.stack([comp[0], torch.zeros(2, 2)])
    mask2, src2 = mask.expand(2, 2, 2), src.expand(2, 2, 2)
    p = G.mask_energy_precision(comp2, mask2)
    r = G.mask_energy_recall(comp2, mask2, src2)
    assert p.shape == (2,) and p[0].item() == pytest.approx(0.9) and torch.isnan(p[1])
    assert r[1].item() == 0.0
    # the whole mixture as interpretation: recall 1 (capped per bin)
    assert G.mask_energy_recall(src * 5, mask, src).item() == pytest.approx(1.0)
