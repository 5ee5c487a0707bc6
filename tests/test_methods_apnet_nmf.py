"""Known-behaviour tests of the by-design baselines APNet, unsupervised NMF and TDL-NMF."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from audio_xai_bench import nmf
from audio_xai_bench.api import TaskData
from audio_xai_bench.audio import Frontend
from audio_xai_bench.data import materialize
from audio_xai_bench.methods import apnet as ap
from audio_xai_bench.methods import nmf_baselines as nb
from audio_xai_bench.registry import METHODS
from audio_xai_bench.tasks.synth import SynthTask
from audio_xai_bench.train import BatchLoader


# --------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def data() -> TaskData:
    task = SynthTask(profile="small")
    fold = task.folds()[0]
    fe = task.frontend
    # a quarter of synth small's training clips keeps the file fast (2 per class)
    train = [e for i, e in enumerate(fold.train) if i % 4 == 0]
    return TaskData(task=task, fold="0", train=materialize(train, fe),
                    valid=materialize(fold.valid, fe), test=materialize(fold.test[:16], fe),
                    frontend=Frontend(fe, "cpu"))


def first_batch(data: TaskData, n: int = 8):
    return next(iter(BatchLoader(data.test, data.frontend, n, with_phase=True)))


def build(name: str, data: TaskData, **over):
    cls = METHODS.get(name)
    cfg = cls.resolve_config(data.task, "small", over)
    return cls(cfg, seed=0)


# --------------------------------------------------------------------------- APNet: known values
def test_apnet_weighted_distance_hand_values_and_flip():
    # latent with C = 1 channel, T' = 1 frame, M' = 2 bands: z[b, 0, 0, f]
    z = torch.tensor([[0.0, 0.0], [2.0, 3.0]]).view(2, 1, 1, 2)
    protos = torch.tensor([[0.0, 3.0], [2.0, 0.0]]).view(2, 1, 1, 2)
    d = ap.prototype_distances(z, protos)
    expected = torch.tensor([[[0.0, 9.0], [4.0, 0.0]],     # input 0 vs prototypes 0, 1
                             [[4.0, 0.0], [0.0, 9.0]]])    # input 1
    torch.testing.assert_close(d, expected)
    # weights on band 0 only: input 0 is nearest prototype 0; on band 1 only: prototype 1
    w_band0 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    w_band1 = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    s0 = ap.weighted_similarity(d, w_band0)
    s1 = ap.weighted_similarity(d, w_band1)
    torch.testing.assert_close(s0, torch.tensor([[1.0, math.exp(-4)], [math.exp(-4), 1.0]]))
    torch.testing.assert_close(s1, torch.tensor([[math.exp(-9), 1.0], [1.0, math.exp(-9)]]))
    assert s0.argmax(1).tolist() == [0, 1] and s1.argmax(1).tolist() == [1, 0]
    # mixed weights: s = sum_f w[j, f] exp(-d[b, j, f])
    w = torch.tensor([[0.3, 0.7], [0.6, 0.4]])
    hand = torch.tensor([[0.3 + 0.7 * math.exp(-9), 0.6 * math.exp(-4) + 0.4],
                         [0.3 * math.exp(-4) + 0.7, 0.6 + 0.4 * math.exp(-9)]])
    torch.testing.assert_close(ap.weighted_similarity(d, w), hand)


def test_apnet_prototype_loss_hand_value():
    d = torch.tensor([[[0.0, 9.0], [4.0, 0.0]], [[4.0, 0.0], [0.0, 9.0]]])
    # band means D = [[4.5, 2], [2, 4.5]]: min over inputs per prototype [2, 2], min over
    # prototypes per input [2, 2] -> 2 + 2
    assert float(ap.prototype_loss(d)) == pytest.approx(4.0)


def test_apnet_frequency_weights_unit_norm_and_last_layer_init():
    net = ap.APNetModel(n_classes=3, n_prototypes=6, latent_tf=(4, 5), n_filters=2)
    net.init_last_layer(torch.Generator().manual_seed(0))
    w = net.freq_weights
    torch.testing.assert_close(w.norm(dim=0), torch.ones(5))
    W = net.logits.weight.detach()  # (C, P): +1/2 on own prototypes, -1/2 elsewhere, +-0.05 noise
    assert torch.equal(W.argmax(0), torch.tensor([0, 0, 1, 1, 2, 2]))
    assert float((W.abs() - 0.5).abs().max()) <= 0.05 + 1e-6


def test_apnet_fit_predict_losses_finite_and_prototype_audio(data):
    m = build("apnet", data, epochs=2, n_prototypes=8, n_filters=4)
    m.fit(data, None)
    assert m.capabilities == frozenset({"predict"}) and not m.posthoc
    for rec in m.history:
        for key in ("loss", "cls", "rec", "proto"):
            assert np.isfinite(rec[key]), (key, rec)
    b = first_batch(data)
    p = m.predict(b)
    assert p.shape == (len(b), data.task.num_classes)
    torch.testing.assert_close(p.sum(1), torch.ones(len(b)))
    m2 = build("apnet", data, epochs=2, n_prototypes=8, n_filters=4)
    m2.fit(data, None)
    torch.testing.assert_close(m2.predict(b), p)  # deterministic given the seed
    waves = m.prototype_audio(data.frontend, n_iter=4)
    assert len(waves) == 8
    assert all(w.ndim == 1 and np.isfinite(w).all() for w in waves)
    assert m.prototype_logmel().shape == (8, data.frontend.config.n_frames,
                                          data.frontend.config.n_mels)


def test_apnet_prototypes_default_to_l2i_K(data, monkeypatch):
    monkeypatch.setattr(type(data.task), "method_defaults", {"l2i": {"K": 5}})
    m = build("apnet", data, epochs=0, n_filters=2)
    m.config["n_prototypes"] = None
    m.fit(data, None)
    assert m.net.prototypes.shape[0] == 5


# ------------------------------------------------------------------------------ NMF baselines
def test_sqrt_mel_representation_and_mel_atoms():
    g = torch.Generator().manual_seed(0)
    mel = torch.rand(3, 7, generator=g)
    mel[:, 0] = 0.0  # a bin that no band covers
    S = torch.rand(2, 7, 4, generator=g)
    V = nb.representation(torch.log1p(S), "sqrt_mel", mel)
    torch.testing.assert_close(V, torch.sqrt(torch.einsum("mf,bft->bmt", mel, S ** 2)))
    W = torch.rand(3, 5, generator=g)
    WF = nb.mel_to_stft_atoms(W, mel)
    A = mel.T / mel.sum(0).clamp_min(1e-12)[:, None]
    torch.testing.assert_close(WF, A @ W)
    assert torch.all(WF[0] == 0) and WF.shape == (7, 5)
    with pytest.raises(ValueError, match="representation"):
        nb.representation(S, "cqt", mel)


def test_unrolled_projection_matches_nmf_project_and_is_differentiable():
    g = torch.Generator().manual_seed(1)
    W = torch.rand(12, 4, generator=g)
    W = W / W.norm(dim=0)
    V = W @ (torch.rand(3, 4, 20, generator=g) * 2)  # (3, 12, 20) planted
    H = nb.unrolled_projection(V, W, mu=0.0, steps=400)
    ref = nmf.project(V, W, mu=0.0, n_iter=400)
    obj = lambda H_: 0.5 * ((V - torch.einsum("fk,bkt->bft", W, H_)) ** 2).sum()  # noqa: E731
    assert float(obj(H)) <= 1e-3 * float((V ** 2).sum())
    assert float(obj(H)) == pytest.approx(float(obj(ref)), abs=1e-3 * float((V ** 2).sum()))
    Wp = W.clone().requires_grad_(True)
    z = nb.unrolled_projection(V, Wp, mu=0.1, steps=10).mean(-1)
    z.sum().backward()
    assert torch.isfinite(Wp.grad).all() and float(Wp.grad.abs().sum()) > 0


@pytest.mark.parametrize("name,rep", [("nmf-unsup", "log1p"), ("nmf-unsup", "sqrt_mel"),
                                      ("tdl-nmf", "log1p")])
def test_nmf_baselines_fit_predict_explain(data, name, rep):
    m = build(name, data, representation=rep, n_components=6, epochs=5, nmf_iter=10)
    m.fit(data, None)
    assert m.capabilities == frozenset({"predict", "explain"}) and not m.posthoc
    b = first_batch(data)
    p = m.predict(b)
    torch.testing.assert_close(p.sum(1), torch.ones(len(b)))
    classes = p.argmax(1)
    e = m.explain(b, classes)
    assert e.relevance.shape == (len(b), 6)
    assert float(e.relevance.abs().max()) == pytest.approx(1.0)
    allc = e.mixture(torch.ones_like(e.relevance))
    assert float(allc.min()) >= 0 and bool((allc <= b.X + 1e-5).all())
    assert float(e.component(0).min()) >= 0
    # relevance = what each component adds to the explained class's logit: knock component k
    # out of the pooled activations and run the model's own head (no formula re-derived here)
    rows = torch.arange(len(b))
    with torch.inference_mode():
        z = e.H.mean(-1)
        logit = m.model.head(z)[rows, classes]
        drop = torch.stack([logit - m.model.head(z * (torch.arange(6) != k))[rows, classes]
                            for k in range(6)], 1)
        assert torch.allclose(m.predict(b), torch.softmax(m.model.head(z), -1), atol=1e-6)
    torch.testing.assert_close(e.relevance, drop / drop.abs().amax(1, keepdim=True),
                               atol=1e-4, rtol=1e-4)
    if name == "tdl-nmf":
        W = m.model.W.detach()
        assert float(W.min()) >= 0
        torch.testing.assert_close(W.norm(dim=0), torch.ones(W.shape[1]))
        assert any(h.get("stage") == 1.0 for h in m.history)
    # deterministic given the seed
    m2 = build(name, data, representation=rep, n_components=6, epochs=5, nmf_iter=10)
    m2.fit(data, None)
    torch.testing.assert_close(m2.predict(b), p)


def test_tdl_updates_the_dictionary(data):
    m = build("tdl-nmf", data, n_components=6, epochs=3, nmf_iter=10, tdl_epochs=2,
              tdl_lr=1e-2, select="last")
    m.fit(data, None)
    W0, _ = nmf.sparse_nmf(
        nmf.subsample_frames(m._train_V(data).permute(1, 0, 2).reshape(
            data.frontend.config.n_freq, -1), int(m.config["max_frames"]), seed=0)[0],
        6, mu=float(m.config["nmf_mu"]), n_iter=10, seed=0)
    assert float((m.model.W.detach() - W0).abs().max()) > 1e-4
