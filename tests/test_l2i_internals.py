"""Pins of L2I's internals against the paper (III-D, III-E, eq. (1)-(4)) and the authors' code
(``reference/l2i_protocol_facts.md`` §3-§5, §7). Expected values are computed here with
NumPy from the definitions, never with the implementation's own helpers."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audio_xai_bench.api import Batch
from audio_xai_bench.classifier import build_classifier
from audio_xai_bench.methods.l2i import (L2I, Interpreter, Psi, ThetaAtt, ThetaMax,
                                         fidelity_loss, hidden_shapes, nmf_loss, plateaued,
                                         psi_width)
from audio_xai_bench.train import fit


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _attention_np(theta: ThetaAtt, H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a (B, T, n_att), z (B, n_att, K)): Ilse gated attention with a ReLU gate, softmax
    over time, written out from the weights."""
    Ht = H.transpose(0, 2, 1)  # (B, T, K)
    V = np.tanh(Ht @ _np(theta.V.weight).T + _np(theta.V.bias))
    U = np.maximum(Ht @ _np(theta.U.weight).T + _np(theta.U.bias), 0.0)
    s = (V * U) @ _np(theta.score.weight).T + _np(theta.score.bias)  # (B, T, n_att)
    a = np.exp(s) / np.exp(s).sum(axis=1, keepdims=True)  # over time (axis 1)
    return a, np.einsum("btn,btk->bnk", a, Ht)


# ------------------------------------------------------------------------------ Θ_ATT
@pytest.mark.parametrize("per_class", [False, True])
def test_attention_softmax_runs_over_time(per_class):
    torch.manual_seed(0)
    B, K, T, C = 3, 5, 11, 4
    theta = ThetaAtt(K, C, per_class, hidden=7).eval()
    H = torch.rand(B, K, T)
    a, z = _attention_np(theta, _np(H))
    assert np.allclose(a.sum(axis=1), 1.0)
    with torch.no_grad():
        assert np.allclose(_np(theta.pooled(H)), z, atol=1e-6)
        # a softmax over time makes z invariant to a permutation of the frames
        perm = torch.randperm(T)
        assert torch.allclose(theta.pooled(H[:, :, perm]), theta.pooled(H), atol=1e-6)
        logits = _np(theta(H))
    Wc = _np(theta.fc.weight)  # (C, K), no bias
    expect = (z * Wc[None]).sum(-1) if per_class else z[:, 0] @ Wc.T
    assert theta.fc.bias is None
    assert np.allclose(logits, expect, atol=1e-6)


def test_attention_dropout_only_on_the_scores_input():
    """Dropout (0.4 on ESC-50) masks H before the attention branches; z pools the un-dropped
    H, so each z_k stays between min_t and max_t of H_k even with heavy dropout."""
    torch.manual_seed(1)
    theta = ThetaAtt(6, 3, False, dropout=0.9).train()
    H = torch.rand(2, 6, 9) + 1.0
    z = theta.pooled(H)[:, 0]
    assert bool((z >= H.amin(2) - 1e-6).all()) and bool((z <= H.amax(2) + 1e-6).all())


def test_theta_max_pools_max_over_time():
    torch.manual_seed(0)
    theta = ThetaMax(4, 3).eval()
    H = torch.rand(2, 4, 7)
    with torch.no_grad():
        expect = _np(H).max(axis=2) @ _np(theta.fc.weight).T
        assert np.allclose(_np(theta(H)), expect, atol=1e-6)


# ------------------------------------------------------------------------------ relevance
def _explainer(per_class: bool, kind: str = "multiclass"):
    torch.manual_seed(0)
    C, K, n_mels, T = 5, 6, 64, 40
    f = build_classifier(C, {"width": 0.125, "head_mid": 8, "dropout": 0.0}).eval()
    m = L2I(L2I.resolve_config(None, "small", {"K": K}), seed=0)
    m.f, m.kind, m.layers = f, kind, ("B4", "B5", "B6")
    logmel = torch.randn(3, 1, T, n_mels)
    shapes = hidden_shapes(f, logmel, m.layers)
    W = torch.rand(33, K)
    W = W / W.norm(dim=0)
    m.net = Interpreter(shapes, W, C, "att", per_class, 0.125, 0.0).eval()
    X = torch.rand(3, 33, T)
    batch = Batch(wave=torch.zeros(3, 10), X=X, phase=torch.empty(0), logmel=logmel,
                  target=torch.zeros(3, C), mask=torch.ones(3, C, dtype=torch.bool),
                  index=torch.arange(3))
    return m, batch


@pytest.mark.parametrize("per_class", [False, True])
def test_relevance_is_normalised_contribution_and_sums_to_logit(per_class):
    """Paper III-E: v_k = z_k θ_{c,k}; r = v / max_k |v_k|; Σ_k v_k = the class logit."""
    m, batch = _explainer(per_class)
    classes = torch.tensor([0, 3, 4])
    with torch.no_grad():
        H = m._activations(batch)
        logits = _np(m.net.theta(H))
    e = m.explain(batch, classes)
    _, z = _attention_np(m.net.theta, _np(H))
    Wc = _np(m.net.theta.fc.weight)
    rows = np.arange(3)
    zc = z[rows, classes.numpy()] if per_class else z[:, 0]
    v = zc * Wc[classes.numpy()]
    assert np.allclose(v.sum(-1), logits[rows, classes.numpy()], atol=1e-5)
    r = v / np.abs(v).max(-1, keepdims=True)
    assert np.allclose(_np(e.relevance), r, atol=1e-5)
    assert np.isclose(np.abs(_np(e.relevance)).max(-1), 1.0).all()
    m.config["relevance_norm"] = "code"  # authors' signed max
    assert np.allclose(_np(m.explain(batch, classes).relevance),
                       v / v.max(-1, keepdims=True), atol=1e-5)


# ------------------------------------------------------------------------------ losses
def test_fidelity_loss_multiclass_eq1():
    torch.manual_seed(0)
    g, f = torch.randn(4, 6), torch.randn(4, 6)
    t, p = _softmax(_np(f), -1), _softmax(_np(g), -1)
    expect = -(t * np.log(p)).sum(-1).mean()  # summed over classes, mean over the batch
    assert np.isclose(float(fidelity_loss(g, f, "multiclass")), expect, rtol=1e-6)


def test_fidelity_loss_multilabel_eq2():
    torch.manual_seed(0)
    g, f = torch.randn(4, 6), torch.randn(4, 6)
    t, p = 1 / (1 + np.exp(-_np(f))), 1 / (1 + np.exp(-_np(g)))
    expect = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()  # mean over batch × classes
    assert np.isclose(float(fidelity_loss(g, f, "multilabel")), expect, rtol=1e-6)


def test_nmf_and_sparsity_losses_eq3():
    torch.manual_seed(0)
    X, W, H = torch.rand(2, 7, 5), torch.rand(7, 3), torch.rand(2, 3, 5)
    WH = np.einsum("fk,bkt->bft", _np(W), _np(H))
    assert np.isclose(float(nmf_loss(X, W, H)), ((WH - _np(X)) ** 2).mean(), rtol=1e-6)
    # hand check on one bin: X=1, W=[1,0,0], H=[0.5,...] -> (0.5 - 1)^2
    X1, W1, H1 = torch.ones(1, 1, 1), torch.tensor([[1.0, 0.0]]), torch.tensor([[[0.5], [9.0]]])
    assert float(nmf_loss(X1, W1, H1)) == pytest.approx(0.25)


def test_fidelity_weight_schedule_and_total_loss():
    """λ_fid 0.5 for epochs 1-19 and 1.0 from epoch 20; λ_rec = α/2, λ_spa = β/2 (code)."""
    m = L2I(L2I.resolve_config(None, "default", {}), seed=0)  # α = 10, β = 0.8
    assert [m.loss_weights(e) for e in (0, 18)] == [(0.5, 5.0, 0.4)] * 2
    assert [m.loss_weights(e) for e in (19, 34)] == [(1.0, 5.0, 0.4)] * 2
    m.config["fid_schedule"] = "constant"  # the paper's eq. (4)
    assert m.loss_weights(0) == (1.0, 10.0, 0.8)


def test_logged_total_follows_the_schedule_in_training():
    """The loss fit() minimises, epoch by epoch: λ_fid(e) L_FID + α/2 L_NMF + β/2 L1."""
    from audio_xai_bench.tasks.synth import SynthTask
    from audio_xai_bench.api import TaskData
    from audio_xai_bench.audio import Frontend
    from audio_xai_bench.data import materialize
    task = SynthTask(profile="small")
    fold = task.folds()[0]
    data = TaskData(task=task, fold="0", train=materialize(fold.train[:12], task.frontend),
                    valid=materialize(fold.valid[:4], task.frontend),
                    test=materialize(fold.test[:4], task.frontend),
                    frontend=Frontend(task.frontend), seed=0)
    K = 6
    W = torch.rand(task.frontend.n_freq, K)
    data.dictionary = W / W.norm(dim=0)
    torch.manual_seed(0)
    f = build_classifier(task.num_classes, {"width": 0.125, "head_mid": 8, "dropout": 0.0})
    m = L2I(L2I.resolve_config(task, "small", {"K": K, "epochs": 3, "fid_switch_epoch": 3,
                                                "batch_size": 6}), seed=0)
    m.fit(data, f.eval())
    alpha, beta = m.config["alpha"], m.config["beta"]
    for rec, w_fid in zip(m.history, (0.5, 0.5, 1.0)):
        expect = w_fid * rec["fid"] + alpha / 2 * rec["nmf"] + beta / 2 * rec["l1"]
        assert rec["loss"] == pytest.approx(expect, rel=1e-5)
        assert "valid_loss" in rec


# ------------------------------------------------------------------------------ Ψ layer plan
def _esc_maps(B: int = 1) -> dict[str, torch.Tensor]:
    """The full-width Kumar maps of one 5 s ESC-50 clip (T = 431, 128 mels; facts §2)."""
    g = torch.Generator().manual_seed(0)
    return {"B4": torch.rand(B, 128, 53, 16, generator=g),
            "B5": torch.rand(B, 256, 26, 8, generator=g),
            "B6": torch.rand(B, 512, 13, 4, generator=g)}


def test_psi_reference_layer_plan_channels_and_sizes():
    maps = _esc_maps()
    psi = Psi({n: (m.shape[1], m.shape[3]) for n, m in maps.items()}, K=100).eval()
    conv = lambda seq: seq[0]  # noqa: E731
    assert (conv(psi.b5).in_channels, conv(psi.b5).out_channels) == (256, 256)   # B5 -> 256
    assert (conv(psi.b6).in_channels, conv(psi.b6).out_channels) == (512, 128)   # B6 -> 128
    assert (conv(psi.b4).in_channels, conv(psi.b4).out_channels) == (128, 128)   # B4 -> 128
    assert conv(psi.b4).kernel_size == (1, 4) and conv(psi.b4).stride == (1, 4)  # (4,1) stride
    assert conv(psi.merge).in_channels == 512 and conv(psi.merge).out_channels == 256
    assert conv(psi.collapse).kernel_size == (1, 4)
    seen = {}
    psi.collapse.register_forward_hook(lambda mod, i, o: seen.update(c=o.shape))
    with torch.no_grad():
        H = psi(maps, 431)
    assert H.shape == (1, 100, 431) and float(H.min()) >= 0
    assert seen["c"] == (1, 256, 208, 1)  # 16 · T6 = 208 frames before the resize (facts §3)
    assert sum(p.numel() for p in psi.parameters()) > 1_500_000  # the paper's Ψ, not a toy


def test_psi_reads_every_b4_band_and_averages_b5_pairs():
    """Bilinear 16 -> 4 resampling read only B4 rows 0, 5, 10, 15; the strided conv reads all.
    B5's frequency reduction is an average of band pairs (a swap within a pair is invisible)."""
    maps = _esc_maps()
    psi = Psi({n: (m.shape[1], m.shape[3]) for n, m in maps.items()}, K=8, width=0.25).eval()
    with torch.no_grad():
        H = psi(maps, 431)
        b4 = {**maps, "B4": maps["B4"].clone()}
        b4["B4"][:, :, :, 1] += 1.0
        assert not torch.allclose(psi(b4, 431), H)
        # only B5 frames < 2·T6 = 26 are read; B4 frames < 4·T6 = 52
        late = {**maps, "B4": maps["B4"].clone()}
        late["B4"][:, :, 52:] += 5.0
        assert torch.equal(psi(late, 431), H)
    # average pooling: make b5 a per-band identity, then bands (0,1) swapped give equal H
    with torch.no_grad():
        w = psi.b5[0].weight
        w.zero_()
        for o in range(w.shape[0]):
            w[o, o, 1, 1] = 1.0
        psi.b5[0].bias.zero_()
        H = psi(maps, 431)
        sw = {**maps, "B5": maps["B5"][:, :, :, [1, 0, 2, 3, 4, 5, 6, 7]]}
        assert torch.allclose(psi(sw, 431), H, atol=1e-6)
        sw2 = {**maps, "B5": maps["B5"][:, :, :, [2, 1, 0, 3, 4, 5, 6, 7]]}
        assert not torch.allclose(psi(sw2, 431), H, atol=1e-6)


def test_psi_width_follows_f_and_resample_plan():
    shapes = {"B4": (32, 8), "B5": (64, 4), "B6": (128, 2)}  # synth f: width 0.25, 64 mels
    assert psi_width("auto", shapes) == 0.25
    assert psi_width("auto", {"a": (1, 1), "b": (1, 1), "c": (4096, 1)}) == 1.0
    assert psi_width(0.5, shapes) == 0.5 and psi_width(None, shapes) == 0.25
    resolve = lambda v: L2I.resolve_config(None, "default", {"psi_width": v})["psi_width"]  # noqa: E731
    assert L2I.defaults["psi_width"] is None and resolve("0.5") == 0.5 and resolve("auto") == "auto"
    with pytest.raises(KeyError, match="psi_width"):
        resolve("wide")
    small = Psi(shapes, K=10, width=0.25)
    assert small.b5[0].out_channels == 64 and small.b6[0].out_channels == 32
    with pytest.raises(ValueError, match="resample"):
        Psi({"a": (8, 10), "b": (8, 10), "c": (8, 10)}, K=4)
    odd = Psi({"a": (8, 10), "b": (8, 10), "c": (8, 10)}, K=4, plan="resample")
    H = odd({n: torch.rand(2, 8, 7, 10) for n in "abc"}, 50)
    assert H.shape == (2, 4, 50)


# ------------------------------------------------------------------------------ selection
class _Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))


class _Loader:
    device = torch.device("cpu")
    epoch = 0

    def __iter__(self):
        yield Batch(wave=torch.zeros(1, 1), X=torch.zeros(1), phase=torch.zeros(1),
                    logmel=torch.zeros(1), target=torch.zeros(1), mask=torch.zeros(1),
                    index=torch.zeros(1, dtype=torch.long))


@pytest.mark.parametrize("scores, kept", [
    ([(0.5, 3.0), (1.0, 2.0), (1.0, 1.0), (1.0, 1.5)], 3),   # tie on 1.0: lowest loss wins
    ([(0.5, 3.0), (1.0, 2.0), (0.9, 0.1), (1.0, 2.0)], 2),   # equal tie: earliest kept
    ([0.5, 1.0, 1.0], 2),                                     # plain scores: earliest best
])
def test_model_selection_breaks_ties_on_validation_loss(scores, kept):
    model = _Toy()
    it = iter(scores)

    def loss_fn(batch, epoch):
        return {"loss": (model.w - 1.0 - epoch) ** 2}

    weights = []

    def validate():
        weights.append(float(model.w.detach()))
        return next(it)

    fit(model, model.parameters(), loss_fn, _Loader(), epochs=len(scores), lr=0.1,
        validate=validate)
    assert float(model.w.detach()) == weights[kept - 1]


def test_early_stop_rule():
    h = [{"valid_score": s, "nmf": n} for s, n in [(0.5, 1.0), (0.9, 0.8), (0.9, 0.8),
                                                    (0.8, 0.85)]]
    assert plateaued(h, 2)          # neither improved in the last two epochs
    assert not plateaued(h[:3], 2)  # epoch 2 improved both
    h.append({"valid_score": 0.8, "nmf": 0.7})
    assert not plateaued(h, 2)      # the NMF loss still falls


# ------------------------------------------------------------------------------ f's outputs
def test_frozen_outputs_in_memory_and_memory_mapped(tmp_path):
    """f's logits and maps looked up by row equal f's forward pass on those rows, in memory
    and (budget 0) from a memory-mapped file under the cache dir that close() removes."""
    from audio_xai_bench.api import SplitData
    from audio_xai_bench.audio import Frontend
    from audio_xai_bench.methods._fcache import FrozenOutputs
    from audio_xai_bench.tasks.synth import SynthTask
    from audio_xai_bench.train import BatchLoader
    fe = SynthTask(profile="small").frontend
    g = torch.Generator().manual_seed(0)
    n = 10
    split = SplitData(ids=[str(i) for i in range(n)], wave=0.1 * torch.randn(n, fe.clip_samples,
                                                                           generator=g),
                      target=torch.zeros(n, 3), mask=torch.ones(n, 3, dtype=torch.bool))
    torch.manual_seed(0)
    f = build_classifier(3, {"width": 0.125, "head_mid": 8, "dropout": 0.0}).eval()
    loader = BatchLoader(split, Frontend(fe), 4)
    layers = ("B4", "B6")
    ram = FrozenOutputs(f, loader, layers)
    disk = FrozenOutputs(f, loader, layers, budget_bytes=0, cache_dir=str(tmp_path))
    assert ram.in_memory and not disk.in_memory
    assert len(list((tmp_path / "f_outputs").iterdir())) == 1
    idx = torch.tensor([7, 2, 9, 0])
    batch = loader.batch(idx)
    with torch.no_grad():
        logits, hidden = f.forward_hidden(batch.logmel)
    for store in (ram, disk):
        got_logits, got = store(idx)
        assert torch.allclose(got_logits, logits, atol=1e-5)
        assert set(got) == set(layers)
        assert all(torch.allclose(got[k], hidden[k], atol=1e-5) for k in layers)
    disk.close()
    assert list((tmp_path / "f_outputs").iterdir()) == []
