"""Invariants every registered method must satisfy (in the style of Captum's config list).

Each method is fitted on ``synth`` (small profile) against one shared classifier, then its
declared capabilities are checked: probabilities of the right shape and range, explanations
whose components are non-negative and within the input, relevances in [-1, 1], no autograd
graph kept, and identical results for the same seed.
"""
from __future__ import annotations

import pytest
import torch

from audio_xai_bench import runner
from audio_xai_bench.api import CAPABILITIES, Explainer, TaskData
from audio_xai_bench.audio import Frontend
from audio_xai_bench.data import materialize
from audio_xai_bench.registry import METHODS, TASKS
from audio_xai_bench.train import BatchLoader

NAMES = METHODS.names()


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    task = TASKS.get("synth")(profile="small")
    fold = task.folds()[0]
    fe = task.frontend
    data = TaskData(task=task, fold="0", train=materialize(fold.train, fe),
                    valid=materialize(fold.valid, fe), test=materialize(fold.test, fe),
                    frontend=Frontend(fe), seed=0)
    cfg = runner.resolve_classifier_config(task, "small", {"epochs": "4"})
    f, _ = runner.get_classifier(data, cfg, cache, 0, log=lambda *_: None)
    # synth keeps its sources: methods that declare needs_sources (oracle) read them
    batch = BatchLoader(data.test, data.frontend, 6, with_phase=True,
                        with_sources=True).batch(torch.arange(6))
    return task, data, f, cache, batch


def _fit(name, setting, seed=0):
    task, data, f, cache, _ = setting
    cls = METHODS.get(name)
    cfg = cls.resolve_config(task, "small", {})
    if cls.needs_dictionary:
        data.dictionary, _ = runner.get_dictionary(data, int(cfg["K"]), seed, cache, cfg,
                                                   log=lambda *_: None)
    torch.manual_seed(seed)
    ex = cls(cfg, seed=seed, device="cpu")
    ex.fit(data, f if cls.posthoc else None)
    return ex


def _outputs(ex: Explainer, batch, classes):
    out = {}
    with torch.inference_mode():
        if "surrogate" in ex.capabilities:
            out["surrogate"] = ex.surrogate_predict(batch)
        if "predict" in ex.capabilities:
            out["predict"] = ex.predict(batch)
        if "explain" in ex.capabilities:
            e = ex.explain(batch, classes)
            out["relevance"] = e.relevance
            out["all"] = e.mixture(torch.ones_like(e.relevance, dtype=torch.bool))
            out["top"] = e.mixture(e.relevance >= e.relevance.amax(1, keepdim=True))
    return out


@pytest.mark.parametrize("name", NAMES)
def test_method_invariants(name, setting):
    task, data, f, _, batch = setting
    cls = METHODS.get(name)
    assert issubclass(cls, Explainer)
    assert cls.capabilities and set(cls.capabilities) <= set(CAPABILITIES), cls.capabilities
    ex = _fit(name, setting)
    classes = f(batch.logmel).argmax(1)
    out = _outputs(ex, batch, classes)
    C = task.num_classes
    for key in ("surrogate", "predict"):
        if key in out:
            p = out[key]
            assert p.shape == (6, C) and not p.requires_grad
            assert torch.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
            assert torch.allclose(p.sum(1), torch.ones(6), atol=1e-4)  # synth is multiclass
    if "relevance" in out:
        r = out["relevance"]
        assert r.dim() == 2 and r.shape[0] == 6 and not r.requires_grad
        assert torch.isfinite(r).all() and (r.abs() <= 1 + 1e-5).all()
        for key in ("all", "top"):
            comp = out[key]
            assert comp.shape == batch.X.shape
            assert (comp >= -1e-6).all(), "components must be non-negative"
            assert (comp <= batch.X + 1e-4).all(), "components must lie within the input"
    again = _outputs(_fit(name, setting), batch, classes)
    for key, value in out.items():
        assert torch.allclose(value, again[key], atol=1e-5), f"{name}: {key} not deterministic"
