"""Known-behaviour tests of L2I by design (l2i-bd, l2i-bd-nopred, l2i-posthoc) and FLINT
(flint, flint-bd) on a tiny synthetic task."""
from __future__ import annotations

import pytest
import torch

from audio_xai_bench.api import TaskData
from audio_xai_bench.audio import Frontend
from audio_xai_bench.classifier import build_classifier
from audio_xai_bench.data import materialize
from audio_xai_bench.methods.flint import FLINT, FLINTByDesign, concise_diverse_loss
from audio_xai_bench.methods.l2i import L2I
from audio_xai_bench.methods.l2i_bd import (L2IByDesign, L2IByDesignNoPred,
                                            L2IPosthocPredictor)
from audio_xai_bench.tasks.synth import SynthMultilabelTask, SynthTask
from audio_xai_bench.train import BatchLoader

K = 8


def _data(task) -> TaskData:
    fold = task.folds()[0]
    fe = task.frontend
    keep = lambda xs, n: xs[:n]  # noqa: E731  (a few clips are enough)
    data = TaskData(task=task, fold="0", train=materialize(keep(fold.train, 24), fe),
                    valid=materialize(keep(fold.valid, 8), fe),
                    test=materialize(keep(fold.test, 8), fe), frontend=Frontend(fe), seed=0)
    X = torch.log1p(data.frontend.stft(data.train.wave).abs())
    data.dictionary, _ = task.dictionary_recipe(X, data.train.target, K, n_iter=10)
    return data


@pytest.fixture(scope="module")
def data() -> TaskData:
    return _data(SynthTask(profile="small"))


@pytest.fixture(scope="module")
def data_ml() -> TaskData:
    return _data(SynthMultilabelTask(profile="small"))


@pytest.fixture(scope="module")
def f(data) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_classifier(data.task.num_classes,
                            {"width": 0.125, "head_mid": 16, "dropout": 0.0}).eval()


def _cfg(cls, **kw):
    cfg = cls.resolve_config(None, "small", {})
    cfg.update({"K": K, "epochs": 1}, **kw)
    return cfg


def _batch(data, n=8):
    return BatchLoader(data.test, data.frontend, n).batch(torch.arange(n))


def _fitted(cls, data, f=None, seed=0, **kw):
    m = cls(_cfg(cls, **kw), seed=seed)
    m.fit(data, f if cls.posthoc else None)
    return m


# ------------------------------------------------------------------------------ declarations
def test_declarations():
    assert not L2IByDesign.posthoc and L2IByDesign.capabilities == {"predict", "explain"}
    assert L2IByDesign.needs_dictionary and L2IByDesignNoPred.needs_dictionary
    assert L2IPosthocPredictor.posthoc
    assert L2IPosthocPredictor.capabilities == {"predict", "explain"}
    assert FLINT.posthoc and FLINT.capabilities == {"surrogate"} and not FLINT.listenable
    assert not FLINTByDesign.posthoc and FLINTByDesign.capabilities == {"predict"}
    d = L2IByDesign.defaults  # paper Table III, ESC-50 row
    assert (d["gamma"], d["alpha"], d["beta"], d["K"], d["epochs"]) == (1.0, 3.0, 0.2, 100, 51)


def test_task_defaults_are_used():
    from audio_xai_bench.tasks.esc50 import ESC50Task
    task = ESC50Task()
    assert L2IByDesignNoPred.resolve_config(task, "default", {})["alpha"] == 3.0
    assert L2IPosthocPredictor.resolve_config(task, "default", {})["alpha"] == 10.0
    cfg = FLINT.resolve_config(task, "default", {})
    assert cfg["alpha"] == 10.0 and cfg["K"] == 100 and "beta" not in cfg  # L2I's α, J = K
    with pytest.raises(KeyError):
        FLINT.resolve_config(task, "default", {"beta": "1"})
    assert FLINTByDesign.resolve_config(task, "default", {})["epochs"] == 51


# ------------------------------------------------------------------------------ L2I_BD
def _grad_norms(m, batch):
    m.model.train()
    m.model.zero_grad(set_to_none=True)
    logs = m.loss_fn(batch, 0)
    logs["loss"].backward()
    norm = lambda mod: sum(float(p.grad.abs().sum()) for p in mod.parameters()  # noqa: E731
                           if p.grad is not None)
    return logs, norm


def test_l2i_bd_loss_decreases_and_all_parts_get_gradients(data):
    m = _fitted(L2IByDesign, data, epochs=0)
    batch = BatchLoader(data.train, data.frontend, 16).batch(torch.arange(16))
    logs, norm = _grad_norms(m, batch)
    assert "cls_f" in logs and "cls_g" not in logs
    assert norm(m.f.blocks) > 0 and norm(m.f.fc) > 0
    assert norm(m.net.psi) > 0 and norm(m.net.theta) > 0
    opt = torch.optim.Adam(m.model.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        opt.zero_grad()
        loss = m.loss_fn(batch, 0)["loss"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def test_nopred_f_head_gets_no_label_gradient(data):
    m = _fitted(L2IByDesignNoPred, data, epochs=0, gamma=0.0)
    batch = _batch(data)
    logs, norm = _grad_norms(m, batch)
    assert "cls_g" in logs and "cls_f" not in logs
    # with γ = 0 nothing reaches f's output layer: the label loss is on g only
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0.0 for p in m.f.fc.parameters())
    assert norm(m.f.blocks) > 0 and norm(m.net.theta) > 0  # hidden layers are trained via g
    m2 = _fitted(L2IByDesign, data, epochs=0, gamma=0.0)
    _, norm2 = _grad_norms(m2, batch)
    assert norm2(m2.f.fc) > 0  # ... whereas L2I_BD's L_f trains f's head


def test_l2i_bd_predict_explain_and_determinism(data):
    a = _fitted(L2IByDesign, data, epochs=1)
    b = _fitted(L2IByDesign, data, epochs=1)
    batch = _batch(data)
    p = a.predict(batch)
    assert p.shape == (8, data.task.num_classes)
    assert torch.allclose(p.sum(1), torch.ones(8), atol=1e-5)
    assert torch.equal(p, b.predict(batch))
    cls = p.argmax(1)
    e = a.explain(batch, cls)
    assert e.relevance.shape == (8, K) and float(e.relevance.abs().max()) <= 1 + 1e-6
    mix = e.mixture(torch.ones(8, K))
    assert float(mix.min()) >= 0 and bool((mix <= batch.X + 1e-4).all())
    assert torch.equal(e.relevance, b.explain(batch, cls).relevance)
    assert len(a.history) == 1 and "valid_score" in a.history[0]


def test_l2i_bd_multilabel_masked_loss(data_ml):
    m = _fitted(L2IByDesign, data_ml, epochs=1)
    batch = _batch(data_ml)
    p = m.predict(batch)
    assert p.shape == (8, data_ml.task.num_classes) and float(p.min()) >= 0 and float(p.max()) <= 1
    # unannotated labels contribute nothing to the label loss
    from audio_xai_bench.methods.l2i_bd import label_loss
    logits = torch.randn(8, data_ml.task.num_classes)
    batch.mask[:, 0] = False
    base = label_loss(logits, batch, "multilabel")
    logits2 = logits.clone()
    logits2[:, 0] += 50.0
    assert torch.allclose(base, label_loss(logits2, batch, "multilabel"))


def test_l2i_posthoc_predictor_is_the_l2i_interpreter_scored_as_a_predictor(data, f):
    # the same interpreter as `l2i` (fitted independently with the same seed), declared as a
    # predictor so that the scorer reports classification/* and official/* for it, not fidelity
    a = _fitted(L2IPosthocPredictor, data, f)
    b = _fitted(L2I, data, f)
    batch = _batch(data)
    assert torch.equal(a.predict(batch), b.surrogate_predict(batch))
    assert "predict" in a.capabilities and "surrogate" not in a.capabilities
    assert "surrogate" in b.capabilities and "predict" not in b.capabilities


# ------------------------------------------------------------------------------ FLINT
def test_flint_attributes_and_losses(data, f):
    m = _fitted(FLINT, data, f)
    batch = _batch(data)
    with torch.inference_mode():
        phi = m.attributes(batch)
    assert phi.shape == (8, K) and float(phi.min()) >= 0
    with torch.no_grad():
        f_logits, hidden = f.forward_hidden(batch.logmel)
        total, logs = m.interpreter_losses(batch, f_logits, hidden)
    assert set(logs) == {"of", "if", "conc", "div", "l1"}
    assert all(torch.isfinite(v) for v in [total, *logs.values()])
    s = m.surrogate_predict(batch)
    assert s.shape == (8, data.task.num_classes)
    assert torch.allclose(s.sum(1), torch.ones(8), atol=1e-5)
    with torch.no_grad():
        assert m.net.decoder(phi.clone()).shape == batch.logmel.shape


def test_flint_diversity_prefers_diverse_attributes():
    J = 6
    diverse = 10.0 * torch.eye(J)               # each sample uses its own attribute
    identical = 10.0 * torch.eye(J)[[0] * J]   # every sample uses attribute 0
    conc_d, div_d = concise_diverse_loss(diverse)
    conc_i, div_i = concise_diverse_loss(identical)
    assert float(div_d) < float(div_i)
    # both equally concise (one attribute per sample)
    assert torch.allclose(conc_d, conc_i, atol=1e-5)
    spread = torch.ones(J, J)               # every attribute on in every sample
    assert float(concise_diverse_loss(spread)[0]) > float(conc_d)


def test_flint_bd_trains_f_and_predicts_with_interpreter(data):
    a = _fitted(FLINTByDesign, data, epochs=1)
    b = _fitted(FLINTByDesign, data, epochs=1)
    batch = _batch(data)
    p = a.predict(batch)
    assert torch.equal(p, b.predict(batch))  # deterministic given the seed
    with torch.inference_mode():
        g = torch.softmax(a.net.head(a.attributes(batch)), -1)
    assert torch.allclose(p, g)
    m = _fitted(FLINTByDesign, data, epochs=0)
    m.model.train()
    logs = m.loss_fn(_batch(data), 0)
    logs["loss"].backward()
    assert all(torch.isfinite(v) for v in logs.values())
    assert float(sum(p.grad.abs().sum() for p in m.f.fc.parameters())) > 0  # L_pred on f
    assert float(sum(p.grad.abs().sum() for p in m.net.phi.parameters())) > 0


def test_flint_deterministic(data, f):
    a, b = _fitted(FLINT, data, f), _fitted(FLINT, data, f)
    batch = _batch(data)
    assert torch.equal(a.surrogate_predict(batch), b.surrogate_predict(batch))
