"""The scorer at scale (issue "Performance", item 4): pairs are scored in groups of at most
``eval.pair_batch``, modified inputs go through f in chunks of at most ``eval.forward_batch``,
and the explanations the count baseline's second pass needs are spilled to disk (or
recomputed past ``eval.keep_bytes``), never held for the whole split. None of that changes a
value: every column of ``pairs`` and every metric is the same as when everything is kept."""
from __future__ import annotations

import glob
import os

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from audio_xai_bench.api import Explainer, SegmentExplanation, TaskData
from audio_xai_bench.evaluate import EvalConfig, Scorer
from plugin_helpers import task_data


class _ProjF(nn.Module):
    """A fixed multilabel f with spread logits: standardised log-mel through a projection."""

    def __init__(self, d: int, C: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(3)
        self.P = nn.Parameter(torch.randn(d, C, generator=g) * 2.0 / d ** 0.5,
                              requires_grad=False)
        self.sizes: list[int] = []

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        self.sizes.append(logmel.shape[0])
        z = logmel.flatten(1)
        z = (z - z.mean(1, keepdim=True)) / z.std(1, keepdim=True).clamp_min(1e-6)
        return z @ self.P


class _Grid(Explainer):
    """8 time x 2 frequency regions; relevance = the region's mean log1p magnitude times a
    per-class sign pattern: deterministic per (clip, class), different across classes."""

    capabilities = frozenset({"explain"})

    def fit(self, data, classifier):
        self.n_explained = 0

    def explain(self, batch, classes):
        self.n_explained += len(classes)
        X = batch.X
        B, F, T = X.shape
        t = torch.arange(T, device=X.device) * 8 // T
        fr = (torch.arange(F, device=X.device) * 2 // F).unsqueeze(1)
        seg = (fr * 8 + t).expand(B, F, T)
        mass = torch.zeros(B, 16, dtype=X.dtype, device=X.device).scatter_add_(
            1, seg.flatten(1), X.flatten(1))
        sign = torch.where((torch.arange(16, device=X.device) + classes.view(-1, 1)) % 3 == 0,
                           -1.0, 1.0)
        v = mass * sign
        return SegmentExplanation(X, seg, v / v.abs().amax(1, keepdim=True))


@pytest.fixture(scope="module")
def setting():
    data = task_data("synth-multilabel", n_test=18)
    fe = data.task.frontend
    f = _ProjF(fe.n_frames * fe.n_mels, data.task.num_classes).eval()
    return data, f


def _score(data, f, cache_dir=None, batch_size=16, **cfg):
    ex = _Grid({})
    ex.fit(data, f)
    f.sizes.clear()
    d = TaskData(**{**data.__dict__, "cache_dir": cache_dir})
    res = Scorer(ex, f, d, EvalConfig(listen=0, batch_size=batch_size, taus=(0.9, 0.5), budgets=(0.1, 0.3), **cfg)).run()
    return res, list(f.sizes), ex.n_explained


def _same(a: pd.DataFrame, b: pd.DataFrame, cols=None) -> None:
    cols = list(a.columns) if cols is None else cols
    assert list(a["id"]) == list(b["id"]) and list(a["class"]) == list(b["class"])
    num = [c for c in cols if c not in ("id", "class")]
    np.testing.assert_allclose(a[num].to_numpy(float), b[num].to_numpy(float),
                               rtol=1e-5, atol=1e-6, equal_nan=True)


def test_groups_chunks_and_spill_change_no_value(setting, tmp_path):
    data, f = setting
    ref, ref_sizes, ref_n = _score(data, f, batch_size=6, keep_bytes=1e12, pair_batch=10_000,
                                   forward_batch=10_000)
    n_pairs = len(ref.pairs)
    assert n_pairs > len(data.test)  # multilabel: several pairs per clip, the case at stake
    assert max(ref_sizes) > 6 * 2  # unbounded, a curve pass stacks every pair of a batch
    # forward passes chunked to at most 7 inputs, explanations spilled under the cache folder
    small, sizes, n_ex = _score(data, f, cache_dir=str(tmp_path), batch_size=6,
                                keep_bytes=1e12, pair_batch=10_000, forward_batch=7)
    assert max(sizes) <= 7  # 7 modified inputs, or one loader batch of 6 clips for f(x)
    assert n_ex == ref_n  # everything came back from the spill: nothing explained twice
    _same(ref.pairs, small.pairs)
    assert small.metrics.keys() == ref.metrics.keys()
    for k, v in ref.metrics.items():
        assert small.metrics[k] == pytest.approx(v, rel=1e-5, abs=1e-6, nan_ok=True), k
    assert not glob.glob(os.path.join(tmp_path, ".scorer-spill-*"))  # removed at the end
    # a spill budget too small for all of it: the rest is recomputed, the values stay
    fe = data.frontend.config
    per_pair = 4.0 * (fe.clip_samples + 2 * fe.n_freq * fe.n_frames)  # what a group spills
    part, _, n_part = _score(data, f, cache_dir=str(tmp_path), batch_size=6,
                             keep_bytes=per_pair * n_pairs / 2, pair_batch=10_000,
                             forward_batch=7)
    assert ref_n < n_part < 2 * ref_n
    _same(ref.pairs, part.pairs)


def test_pair_groups_bound_the_work_and_keep_the_deterministic_values(setting):
    """Groups of 5 pairs: every value that does not depend on a random draw is the same; the
    random baselines are drawn per group (hence ``pair_batch`` is part of a set cell's hash)
    and stay close in distribution."""
    data, f = setting
    ref, _, _ = _score(data, f, pair_batch=10_000)
    grp, sizes, _ = _score(data, f, pair_batch=5)
    fixed = [c for c in ref.pairs.columns
             if c.startswith(("ff@", "n_selected@", "mass_share@", "energy_", "deletion@",
                              "insertion@", "lmac_")) or c in ("deletion_auc", "insertion_auc")]
    assert len(fixed) > 10
    _same(ref.pairs, grp.pairs, ["id", "class", *fixed])
    # 5 pairs x (2 curves x 3 orders) = 30 modified inputs per forward at most (+ f(x) of 16)
    assert max(sizes) <= 30
    a, b = ref.pairs["random_ff@0.5"].dropna(), grp.pairs["random_ff@0.5"].dropna()
    assert abs(a.median() - b.median()) < 0.15


def test_pair_batch_enters_the_cell_hash_only_when_set():
    base = EvalConfig().identity()
    assert "pair_batch" not in base and "forward_batch" not in base
    assert EvalConfig(forward_batch=3).identity() == base
    assert EvalConfig(pair_batch=4).identity()["pair_batch"] == 4


def test_pair_batch_from_the_command_line_is_an_integer():
    from audio_xai_bench.runner import resolve_eval_config

    c = resolve_eval_config({"pair_batch": "4"}, 0)
    assert c.pair_batch == 4 and isinstance(c.pair_batch, int)
    assert isinstance(c.identity()["pair_batch"], int)


def test_scorer_uses_an_inference_copy_of_f_with_the_same_values(setting):
    """Every forward pass of the scorer goes through ``fastforward.inference_copy`` of a
    foldable f (BN folded, strided pools): f itself is untouched and every pairs column and
    metric equals the plain f's up to float rounding. A network with nothing to fold (the
    projection f above) is used as it is."""
    from audio_xai_bench.classifier import KumarCNN
    from audio_xai_bench.fastforward import StridedMaxPool2d, foldable

    data, f_proj = setting
    assert not foldable(f_proj)
    ex = _Grid({})
    ex.fit(data, f_proj)
    assert Scorer(ex, f_proj, data, EvalConfig(listen=0)).f_fast is f_proj
    torch.manual_seed(0)
    f = KumarCNN(data.task.num_classes, width=0.125, head_mid=32).eval()
    for m in f.modules():  # non-trivial BN statistics, so that folding changes the weights
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in f.state_dict().items()}
    assert foldable(f)
    cfg = EvalConfig(listen=0, taus=(0.9, 0.5), budgets=(0.1, 0.3), threshold=0.3)
    fast = Scorer(ex, f, data, cfg)
    assert fast.f_fast is not f and isinstance(fast.f_fast.pool, StridedMaxPool2d)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.f_fast.modules())
    plain = Scorer(ex, f, data, cfg)
    plain._f_fast = f  # the scorer as it was: every pass through f itself
    a, b = fast.run(), plain.run()
    assert len(a.pairs) > len(data.test)  # multilabel pairs were scored
    assert list(a.pairs["id"]) == list(b.pairs["id"])
    num = [c for c in a.pairs.columns if c not in ("id", "class")]
    diff = np.abs(a.pairs[num].to_numpy(float) - b.pairs[num].to_numpy(float))
    assert np.nanmax(diff) < 1e-4  # probabilities differ by float rounding (~1e-5 here)
    assert np.array_equal(np.isnan(a.pairs[num].to_numpy(float)),
                          np.isnan(b.pairs[num].to_numpy(float)))
    for k, v in b.metrics.items():  # a rank test's p moves a little where FF is ~0 (ties)
        tol = 0.01 if "_p" in k else 1e-4
        assert a.metrics[k] == pytest.approx(v, rel=1e-3, abs=tol, nan_ok=True), k
    assert all(torch.equal(before[k], v) for k, v in f.state_dict().items())


def test_recomputing_unspilled_groups_loads_only_their_batches(setting, tmp_path):
    """With a spill budget for part of the groups, the second pass loads (and runs f on)
    only the loader batches that hold a group that was not stored, not the whole split."""
    data, f = setting
    fe = data.frontend.config
    per_pair = 4.0 * (fe.clip_samples + 2 * fe.n_freq * fe.n_frames)
    ex = _Grid({})
    ex.fit(data, f)
    d = TaskData(**{**data.__dict__, "cache_dir": str(tmp_path)})
    cfg = dict(pair_batch=10_000, forward_batch=7)
    sc = Scorer(ex, f, d, EvalConfig(listen=0, batch_size=3, taus=(0.9, 0.5),
                                     budgets=(0.1, 0.3), keep_bytes=per_pair * 20, **cfg))
    loads: list[int] = []
    real = sc.loader.batch
    sc.loader.batch = lambda idx: (loads.append(int(idx[0])), real(idx))[1]
    part = sc.run()
    n_batches = len(sc.loader)
    assert n_batches == 6 and len(sc._group_batch) == n_batches  # one group per batch here
    pass2 = loads[n_batches:]
    assert 0 < len(pass2) < n_batches  # the batches past the budget, and only those
    assert pass2 == sorted(pass2) and pass2[-1] == 3 * (n_batches - 1)
    full, _, _ = _score(data, f, cache_dir=str(tmp_path), batch_size=3, keep_bytes=1e12, **cfg)
    _same(full.pairs, part.pairs)
