"""Known-behaviour tests of VIBI, SLIME and the Captum region baselines (and _regions)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from audio_xai_bench.api import Batch, FrontendConfig, SegmentExplanation
from audio_xai_bench.audio import Frontend
from audio_xai_bench.classifier import KumarCNN
from audio_xai_bench.methods import _regions, attribution, slime, vibi

FE_CFG = FrontendConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=32,
                        clip_seconds=1.0)


class _Task:
    kind = "multiclass"
    num_classes = 4


class _Data:
    def __init__(self, fe):
        self.task, self.frontend = _Task(), fe


@pytest.fixture(scope="module")
def fe():
    return Frontend(FE_CFG)


def _batch(fe, B=3, seed=0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    wave = torch.randn(B, FE_CFG.clip_samples, generator=g) * 0.1
    X, phase, logmel = fe.analyze(wave)
    return Batch(wave, X, phase, logmel, torch.zeros(B, 4), torch.ones(B, 4, dtype=torch.bool),
                 torch.arange(B))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return KumarCNN(4, width=0.0625, head_mid=16).eval()


class _Toy(nn.Module):
    """A small fixed network whose outputs depend on where energy is in time and frequency."""

    def __init__(self, T, M, C=4):
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(1, 4, 5, padding=2)
        self.fc = nn.Linear(4 * M, C)
        self.pool = nn.AdaptiveMaxPool2d((1, M))

    def forward(self, x):
        h = torch.relu(self.conv((x + 40.0) / 20.0))
        return self.fc(self.pool(h).flatten(1)) * 3.0


@pytest.fixture(scope="module")
def toy():
    return _Toy(FE_CFG.n_frames, FE_CFG.n_mels).eval()


# -- region grid ---------------------------------------------------------------------------
def test_grid_partitions_stft_and_logmel(fe):
    T = FE_CFG.n_frames
    grid = _regions.grid_for(fe, T, 4, 5)
    seg = grid.segments(2)
    assert seg.shape == (2, FE_CFG.n_freq, T)
    assert int(seg.min()) == 0 and int(seg.max()) == grid.K - 1
    assert len(torch.unique(seg)) == grid.K  # every region non-empty
    # bands are contiguous and increasing in frequency
    assert bool((grid.band_of_bin[1:] >= grid.band_of_bin[:-1]).all())
    a = torch.rand(2, 1, T, FE_CFG.n_mels)
    assert torch.allclose(grid.region_sum(a).sum(1), a.sum(dim=(1, 2, 3)), rtol=1e-5)
    v = torch.rand(2, grid.K)
    assert torch.equal(grid.expand_logmel(v)[:, 0], v[:, grid.logmel_segments().flatten()]
                       .view(2, T, -1))


# -- SLIME ---------------------------------------------------------------------------------
def test_slime_ranking_agrees_with_lime_base(fe, toy):
    model = toy
    from lime.lime_base import LimeBase
    from scipy.stats import spearmanr

    ex = slime.SLIME({**slime.SLIME.defaults, "n_samples": 300, "chunk": 150}, seed=3)
    ex.fit(_Data(fe), model)
    b = _batch(fe, B=2)
    classes = model(b.logmel).argmax(1)
    with torch.inference_mode():
        d = ex.lime_data(b, classes)
        e = ex.explain(b, classes)
    assert isinstance(e, SegmentExplanation)
    width = ex.config["kernel_width"]
    base = LimeBase(lambda dist: np.sqrt(np.exp(-(dist ** 2) / width ** 2)), random_state=0)
    for p in range(2):
        Z = d["Z"][p].numpy()
        labels = np.zeros((Z.shape[0], 4))
        labels[:, int(classes[p])] = d["labels"][p].numpy()
        # distances as lime_image computes them
        from sklearn.metrics import pairwise_distances
        dist = pairwise_distances(Z, Z[0].reshape(1, -1), metric="cosine").ravel()
        assert np.allclose(dist, d["distances"][p].numpy(), atol=1e-6)
        _, exp, _, _ = base.explain_instance_with_data(Z, labels, dist, int(classes[p]),
                                                       num_features=Z.shape[1],
                                                       feature_selection="none")
        ref = np.zeros(Z.shape[1])
        for k, w in exp:
            ref[k] = w
        rho = spearmanr(ref, e.relevance[p].numpy()).correlation
        assert rho > 0.9, rho
        assert np.allclose(ref / np.abs(ref).max(), e.relevance[p].numpy(), atol=1e-4)


def test_slime_segmentations_and_determinism(fe, toy):
    model = toy
    b = _batch(fe)
    classes = torch.tensor([0, 1, 2])
    for cls, K in ((slime.SLIMETime, 20), (slime.SLIMEFreq, 20), (slime.SLIME, 20)):
        cfg = cls.resolve_config(None, "small", {})
        outs = []
        for _ in range(2):
            ex = cls(cfg, seed=1)
            ex.fit(_Data(fe), model)
            with torch.inference_mode():
                outs.append(ex.explain(b, classes))
        e = outs[0]
        assert e.relevance.shape == (3, K)
        assert float(e.relevance.abs().max()) <= 1.0 + 1e-6
        assert torch.equal(outs[0].relevance, outs[1].relevance)
        assert int(e.segments.min()) >= 0 and int(e.segments.max()) < K
        assert torch.allclose(e.mixture(torch.ones(3, K)), b.X)
        if cls is slime.SLIMETime:  # time segments vary along time only
            assert bool((e.segments == e.segments[:, :1, :]).all())
        if cls is slime.SLIMEFreq:  # frequency bands along frequency only
            assert bool((e.segments == e.segments[:, :, :1]).all())


def test_weighted_ridge_matches_sklearn():
    from sklearn.linear_model import Ridge

    g = torch.Generator().manual_seed(0)
    Z = torch.randint(0, 2, (2, 50, 6), generator=g).float()
    y = torch.rand(2, 50, generator=g)
    w = torch.rand(2, 50, generator=g)
    coef, icpt = slime.weighted_ridge(Z, y, w, 1.0)
    for p in range(2):
        r = Ridge(alpha=1.0).fit(Z[p].numpy(), y[p].numpy(), sample_weight=w[p].numpy())
        assert np.allclose(r.coef_, coef[p].numpy(), atol=1e-6)
        assert np.isclose(r.intercept_, float(icpt[p]), atol=1e-6)


# -- VIBI ----------------------------------------------------------------------------------
def test_vibi_relaxation_and_hard_mask():
    g = torch.Generator().manual_seed(0)
    logp = torch.log_softmax(torch.randn(5, 40, generator=g), -1)
    z = vibi.relaxed_topk(logp, 8, 0.5, generator=g)
    assert z.shape == (5, 40)
    assert bool(((z >= 0) & (z <= 1)).all())
    s = z.sum(-1)
    assert bool(((s >= 1 - 1e-5) & (s <= 8 + 1e-5)).all())  # max of 8 simplex points
    m = vibi.hard_topk(logp, 8)
    assert torch.equal(m.sum(-1), torch.full((5,), 8.0))
    assert torch.equal(m.bool(), torch.zeros_like(m).scatter_(-1, logp.topk(8).indices, 1)
                       .bool())


def test_vibi_test_mask_has_k_chunks_and_explains(fe, model):
    ex = vibi.VIBI({**vibi.VIBI.defaults, "width": 4, "k": 6}, seed=0)
    ex.f, ex.kind, ex.frontend, ex._grids, ex.k = model, "multiclass", fe, {}, 6
    torch.manual_seed(0)
    ex.net = vibi.VIBINet(4, 4, 0.0).eval()
    b = _batch(fe, B=4)
    with torch.inference_mode():
        m = ex.test_mask(b)
        assert m.shape == (4, 40) and torch.equal(m.sum(1), torch.full((4,), 6.0))
        p = ex.surrogate_predict(b)
        assert torch.allclose(p.sum(1), torch.ones(4), atol=1e-5)
        e = ex.explain(b, torch.zeros(4, dtype=torch.long))
    top = e.relevance.topk(6, dim=1).indices
    assert torch.equal(torch.zeros_like(m).scatter_(1, top, 1.0), m)  # selected = most relevant
    assert float(e.relevance.max()) == pytest.approx(1.0) and float(e.relevance.min()) > 0


# -- attribution ---------------------------------------------------------------------------
class _Linear(nn.Module):
    def __init__(self, T, M, C=3):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.W = nn.Parameter(torch.randn(C, T, M, generator=g))

    def forward(self, x):
        return torch.einsum("btm,ctm->bc", x[:, 0], self.W)


def test_saliency_on_linear_model_is_abs_weights(fe):
    T, M = FE_CFG.n_frames, FE_CFG.n_mels
    lin = _Linear(T, M)
    ex = attribution.SaliencyRegions(attribution.SaliencyRegions.defaults)
    ex.fit(_Data(fe), lin)
    b = _batch(fe, B=2)
    classes = torch.tensor([2, 0])
    grid = ex.grid(T)
    with torch.inference_mode():  # as the scorer calls it
        with torch.inference_mode(False), torch.enable_grad():
            att = ex.attribute(b.logmel.clone(), classes, grid)
        e = ex.explain(b, classes)
    assert torch.allclose(att[:, 0], lin.W.detach()[classes].abs(), atol=1e-6)
    expected = grid.region_sum(lin.W.detach()[classes].abs())
    assert torch.allclose(e.relevance, expected / expected.amax(1, keepdim=True), atol=1e-5)
    assert int(e.segments.min()) >= 0 and int(e.segments.max()) < grid.K


@pytest.mark.parametrize("cls", [attribution.SaliencyRegions,
                                 attribution.IntegratedGradientsRegions,
                                 attribution.GradCAMRegions, attribution.OcclusionRegions])
def test_attribution_regions_cover_input(fe, model, cls):
    ex = cls(cls.resolve_config(None, "small", {}))
    ex.fit(_Data(fe), model)
    b = _batch(fe, B=2)
    classes = torch.tensor([1, 3])
    with torch.inference_mode():
        e = ex.explain(b, classes)
        e2 = ex.explain(b, classes)
    K = ex.grid(b.X.shape[-1]).K
    assert e.relevance.shape == (2, K) and torch.isfinite(e.relevance).all()
    assert float(e.relevance.abs().max()) <= 1.0 + 1e-6
    assert int(e.segments.min()) >= 0 and int(e.segments.max()) < K
    assert torch.allclose(e.mixture(torch.ones(2, K)), b.X)
    assert torch.equal(e.relevance, e2.relevance)


def test_occlusion_is_removal_delta(fe, model):
    ex = attribution.OcclusionRegions(attribution.OcclusionRegions.defaults)
    ex.fit(_Data(fe), model)
    b = _batch(fe, B=2)
    classes = torch.tensor([1, 3])
    grid = ex.grid(b.X.shape[-1])
    with torch.no_grad():
        s = ex.region_scores(b.logmel, classes, grid)
        k = 7
        gate = torch.ones(2, grid.K)
        gate[:, k] = 0
        off = model(_regions.mask_logmel(b.logmel, grid.expand_logmel(gate)))
        full = model(b.logmel)
    rows = torch.arange(2)
    assert torch.allclose(s[:, k], full[rows, classes] - off[rows, classes], atol=1e-4)
