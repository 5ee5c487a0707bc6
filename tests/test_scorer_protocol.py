"""The scorer's protocol on a controlled model: FF is ~0 when nothing is removed, multilabel
decision thresholds are fitted on the training split only, the task's excluded classes are
left out of multilabel fidelity, and ``official/*`` belongs to the model that predicts."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from audio_xai_bench.api import Explainer, SegmentExplanation, TaskData
from audio_xai_bench.audio import Frontend
from audio_xai_bench.data import materialize
from audio_xai_bench.evaluate import EvalConfig, Scorer, official_metrics
from audio_xai_bench.metrics import fidelity as fid
from audio_xai_bench.registry import TASKS
from audio_xai_bench.train import BatchLoader
from plugin_helpers import task_data


class _ProjF(nn.Module):
    """A fixed f: per-clip standardised log-mel through a random projection (spread logits)."""

    def __init__(self, d: int, C: int, gain: float = 3.0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.P = nn.Parameter(torch.randn(d, C, generator=g) * gain / d ** 0.5,
                              requires_grad=False)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        z = logmel.flatten(1)
        z = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True).clamp_min(1e-6)
        return z @ self.P


class _Stub(Explainer):
    """Surrogate = f's probabilities with class ``flip`` inverted; explanation = 4 time
    segments all marked irrelevant (r = -1), so no component is ever removed."""

    capabilities = frozenset({"surrogate", "explain"})
    flip = 0

    def fit(self, data, classifier):
        self.f = classifier

    def surrogate_predict(self, batch):
        p = torch.sigmoid(self.f(batch.logmel))
        p[:, self.flip] = 1 - p[:, self.flip]
        return p

    def explain(self, batch, classes):
        B, _, T = batch.X.shape
        seg = (torch.arange(T, device=batch.X.device) * 4 // T).expand_as(batch.X)
        return SegmentExplanation(batch.X, seg, -torch.ones(B, 4, device=batch.X.device))


@pytest.fixture(scope="module")
def setting():
    data = task_data("synth-multilabel")
    task, fe = data.task, data.task.frontend
    f = _ProjF(fe.n_frames * fe.n_mels, task.num_classes).eval()
    ex = _Stub({})
    ex.fit(data, f)
    return task, data, f, ex


def _probs(f, data, split):
    loader = BatchLoader(split, data.frontend, 16, cache_bytes=0)
    with torch.inference_mode():
        return torch.cat([torch.sigmoid(f(b.logmel)) for b in loader]).numpy()


def test_per_class_threshold_is_fitted_on_train_only(setting):
    task, data, f, ex = setting
    p_train, p_test = _probs(f, data, data.train), _probs(f, data, data.test)
    C = task.num_classes
    rule_train = np.array([0.6, 0.3, 0.7, 0.4, 0.5, 0.6, 0.3, 0.4])[:C]
    rule_test = np.full(C, 0.8)
    old = data.train.target, data.test.target
    try:
        # labels = f's outputs above a known per-class cut: F1 = 1 exactly at that cut
        data.train.target = torch.from_numpy((p_train > rule_train).astype(np.float32))
        data.test.target = torch.from_numpy((p_test > rule_test).astype(np.float32))
        sc = Scorer(ex, f, data, EvalConfig(threshold="per_class"))
        thr = sc.thresholds()["f"]
        want = fid.fit_class_thresholds(data.train.target.numpy() > 0.5, p_train)
        np.testing.assert_allclose(thr, want)
        # the thresholds separate the TRAINING labels exactly (F1 = 1 on train; ties go to
        # the highest grid value), and are not the test split's cut
        has_pos = data.train.target.numpy().sum(0) > 0
        assert has_pos.sum() >= C // 2
        y_train = data.train.target.numpy() > 0.5
        assert ((p_train > thr) == y_train)[:, has_pos].all()
        assert np.sum(thr[has_pos] == rule_train[has_pos]) >= has_pos.sum() // 2
        assert not np.allclose(thr, rule_test)
        # changing the test split's labels changes nothing
        data.test.target = 1 - data.test.target
        np.testing.assert_allclose(Scorer(ex, f, data, EvalConfig(threshold="per_class"))
                                   .thresholds()["f"], thr)
    finally:
        data.train.target, data.test.target = old


def test_threshold_list_is_checked_and_recorded(setting):
    task, data, f, ex = setting
    C = task.num_classes
    with pytest.raises(ValueError, match="classes"):
        Scorer(ex, f, data, EvalConfig(threshold=(0.5,) * (C - 1))).thresholds()
    vals = tuple(round(0.2 + 0.05 * c, 2) for c in range(C))
    np.testing.assert_allclose(Scorer(ex, f, data, EvalConfig(threshold=vals)).thresholds()["g"],
                               vals)
    from audio_xai_bench.runner import resolve_eval_config

    assert resolve_eval_config({"threshold": "per_class"}, 0).threshold == "per_class"
    assert resolve_eval_config({"threshold": "0.3"}, 0).threshold == 0.3
    assert resolve_eval_config({"threshold": "0.3,0.4"}, 0).threshold == (0.3, 0.4)
    with pytest.raises(ValueError, match="threshold"):
        resolve_eval_config({"threshold": "high"}, 0)


def test_ff_is_zero_when_nothing_is_removed_and_exclusion_reaches_fidelity(setting):
    task, data, f, ex = setting
    res = Scorer(ex, f, data, EvalConfig(taus=(0.5, 0.1), listen=0, threshold=0.4)).run()
    m, pairs = res.metrics, res.pairs
    assert len(pairs) > 0 and (pairs["n_selected@0.1"] == 0).all()
    # x2 = INV(X - 0, P) is the input re-synthesised: FF measures only the round trip
    assert pairs["ff@0.1"].abs().max() < 1e-3, pairs["ff@0.1"].abs().max()
    assert abs(m["faithfulness/ff_median@0.1"]) < 1e-4
    # the surrogate is exact except on class 0: fidelity < 1 with it, = 1 once it is excluded
    assert m["fidelity/macro_auprc"] < 0.99
    assert [m[f"threshold/f/{c}"] for c in task.classes] == [0.4] * task.num_classes
    assert "official/macro_auprc" not in m  # a surrogate predicts no labels
    old = task.classwise_exclude
    try:
        task.classwise_exclude = (task.classes[0],)
        m2 = Scorer(ex, f, data, EvalConfig(taus=(0.1,), listen=0, threshold=0.4)).run().metrics
    finally:
        task.classwise_exclude = old
    assert m2["fidelity/macro_auprc"] == pytest.approx(1.0)
    assert m2["fidelity/macro_auprc_11pt"] == pytest.approx(1.0, abs=1e-6)
    assert not any(k.startswith(f"classwise/ff_median@0.1/{task.classes[0]}") for k in m2)


def test_official_metric_is_the_predictors_and_the_declared_variant():
    synth, sonyc = TASKS.get("synth"), TASKS.get("sonyc-ust")
    f_only = {"classifier/accuracy_top1": 0.97}
    assert official_metrics(synth, f_only) == {}  # post-hoc: f's number is not the method's
    bd = {**f_only, "classification/accuracy_top1": 0.8}
    assert official_metrics(synth, bd) == {"official/accuracy_top1": 0.8}
    ml = {"classification/macro_auprc": 0.7, "classification/macro_auprc_dcase": 0.6,
          "classifier/macro_auprc_dcase": 0.9}
    assert official_metrics(sonyc, ml) == {"official/macro_auprc": 0.6}  # DCASE 2020 AUPRC


class _MeanMelLinear(nn.Module):
    """A learnable f for synth small: linear on the time-averaged log-mel (the small-profile
    CNN stays at chance on 64 training clips, so a value test needs an f that learns)."""

    def __init__(self, M: int, C: int) -> None:
        super().__init__()
        self.fc = nn.Linear(M, C)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.fc(logmel[:, 0].mean(1) / 40.0)


def test_end_to_end_values_random_ff_below_occlusion_on_synth_small(tmp_path):
    from pathlib import Path

    from audio_xai_bench import runner
    from audio_xai_bench.registry import METHODS

    task = TASKS.get("synth")(profile="small")
    fold = task.folds()[0]
    fe = task.frontend
    data = TaskData(task=task, fold="0", train=materialize(fold.train, fe),
                    valid=materialize(fold.valid, fe), test=materialize(fold.test, fe),
                    frontend=Frontend(fe), seed=0)
    torch.manual_seed(0)
    f = _MeanMelLinear(fe.n_mels, task.num_classes)
    loader = BatchLoader(data.train, data.frontend, 64)
    opt = torch.optim.Adam(f.parameters(), lr=0.05)
    for _ in range(150):
        for b in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(f(b.logmel), b.target.argmax(1)).backward()
            opt.step()
    f.eval()
    out = {}
    for name in ("occlusion", "random"):
        cls = METHODS.get(name)
        cfg = cls.resolve_config(task, "small", {})
        if cls.needs_dictionary:
            data.dictionary, _ = runner.get_dictionary(data, int(cfg["K"]), 0, Path(tmp_path),
                                                       cfg, log=lambda *_: None)
        ex = cls(cfg, seed=0)
        ex.fit(data, f)
        out[name] = Scorer(ex, f, data, EvalConfig(taus=(0.9,), listen=0)).run().metrics
    # f learns (8 classes, chance 0.125; measured 0.81 with this seed)
    assert out["random"]["classifier/accuracy_top1"] > 0.5
    # occlusion marks where f looks: removing its 1-2 most relevant regions drops f's
    # probability far more than removing random NMF components (measured .35 vs .09)
    occ, rnd = out["occlusion"], out["random"]
    assert occ["faithfulness/n_selected_mean@0.9"] <= rnd["faithfulness/n_selected_mean@0.9"] + 1
    assert occ["faithfulness/ff_median@0.9"] > rnd["faithfulness/ff_median@0.9"] + 0.1
    assert occ["faithfulness/ff_median@0.9"] > occ["faithfulness/random_ff_median@0.9"]
