"""Sanity checks (Adebayo et al. 2018; metrics/sanity.py and ``run --sanity``): batched
Spearman against scipy, the projection, cascading re-initialisation, and the verdicts: an
explainer that ignores f fails, saliency's maps change when f is destroyed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch

from audio_xai_bench.api import SegmentExplanation
from audio_xai_bench.classifier import KumarCNN
from audio_xai_bench.cli import main
from audio_xai_bench.metrics import sanity


def test_spearman_rows_matches_scipy_with_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 60), generator=g).float()  # many ties
    b = a + torch.randint(0, 3, (4, 60), generator=g).float()
    b[3] = torch.rand(60, generator=g)
    ours = sanity.spearman_rows(a, b).numpy()
    ref = [scipy.stats.spearmanr(a[i].numpy(), b[i].numpy()).statistic for i in range(4)]
    assert ours == pytest.approx(ref, rel=1e-9)
    assert sanity.rank_rows(a).numpy() == pytest.approx(
        np.stack([scipy.stats.rankdata(r) for r in a.numpy()]))
    const = sanity.spearman_rows(torch.ones(1, 5), torch.arange(5.0)[None])
    assert torch.isnan(const).all()  # as scipy: undefined for a constant map
    # a randomised map that became constant lost the trained ordering: 0, not NaN
    assert sanity.map_similarity(torch.arange(5.0)[None], torch.zeros(1, 5)).item() == 0.0
    assert torch.isnan(sanity.map_similarity(torch.ones(1, 5), torch.zeros(1, 5))).all()


def test_relevance_density_does_not_carry_the_input_energy():
    """Two explanations with independent relevances: their relevance densities are unrelated,
    while Σ_k r_k X_k would correlate through X alone (why the suite projects to R = ΣrX/X)."""
    g = torch.Generator().manual_seed(1)
    F_, T_, K = 32, 40, 40
    X = torch.exp(4 * torch.rand(1, F_, T_, generator=g))  # energy over ~2 orders of magnitude
    seg = torch.randint(0, K, (1, F_, T_), generator=g)
    r1, r2 = torch.rand(1, K, generator=g), torch.rand(1, K, generator=g)
    e1, e2 = SegmentExplanation(X, seg, r1), SegmentExplanation(X, seg, r2)
    dens = sanity.spearman_rows(sanity.relevance_map(e1), sanity.relevance_map(e2)).item()
    raw = sanity.spearman_rows(e1.mixture(r1).flatten(1), e2.mixture(r2).flatten(1)).item()
    assert abs(dens) < 0.3 < raw
    assert torch.allclose(sanity.relevance_map(e1).view(1, F_, T_), r1[0][seg])


def test_cascade_reinitialises_from_the_top_and_leaves_f_alone():
    torch.manual_seed(0)
    f = KumarCNN(3, width=0.0625, head_mid=8).eval()
    before = {k: v.clone() for k, v in f.state_dict().items()}
    stages = sanity.cascade(f, seed=0, only=["head", "B6", "B1"])
    assert [n for n, _ in stages] == ["head", "B6", "B1"]
    changed = lambda m, prefix: not torch.equal(m.state_dict()[prefix], before[prefix])  # noqa: E731
    head, b6, b1 = (m for _, m in stages)
    assert changed(head, "fc.weight") and not changed(head, "blocks.5.0.weight")
    assert changed(b6, "fc.weight") and changed(b6, "layer18.0.weight")
    assert changed(b6, "blocks.5.0.weight") and not changed(b6, "blocks.4.0.weight")
    assert changed(b1, "blocks.0.0.weight")
    assert all(torch.equal(v, before[k]) for k, v in f.state_dict().items())
    again = sanity.cascade(f, seed=0, only=["head"])[0][1]
    assert torch.equal(again.state_dict()["fc.weight"], head.state_dict()["fc.weight"])
    with pytest.raises(KeyError, match="B7"):
        sanity.cascade(f, seed=0, only=["B7"])


def test_pass_is_judged_on_the_deepest_stage_and_labels():
    v = {"param_rand_spearman@head": np.array([0.9, 0.8]),
         "param_rand_spearman@B1": np.array([0.1, 0.2, np.nan]),
         "label_rand_spearman": np.array([0.3, 0.4])}
    s = sanity.summarize(v)
    assert s["sanity/param_rand_spearman@B1"] == pytest.approx(0.15)
    assert s["sanity/pass"] == 1.0
    v["label_rand_spearman"] = np.array([0.9, 0.95])
    assert sanity.summarize(v)["sanity/pass"] == 0.0


def _sanity_run(out: Path, method: str) -> dict:
    args = ["run", "--method", method, "--task", "synth", "--out", str(out), "--profile", "small",
            "--threads", "1", "--set", "classifier.width=0.125", "--sanity", "head,B1"]
    assert main(args) == 0
    (cell,) = [p.parent for p in (out / "synth" / method).glob("*/done.json")]
    return json.loads((cell / "metrics.json").read_text())


def test_random_explainer_fails_and_saliency_changes(tmp_path):
    out = tmp_path / "runs"
    rnd = _sanity_run(out, "random")
    sal = _sanity_run(out, "saliency")
    # the random explainer never looks at f: its maps are the same under any f
    assert rnd["sanity/param_rand_spearman@B1"] == pytest.approx(1.0)
    assert rnd["sanity/label_rand_spearman"] == pytest.approx(1.0)
    assert rnd["sanity/pass"] == 0.0
    assert sal["sanity/param_rand_spearman@B1"] < 0.9
    for key in ("lmac/ai", "lmac/ad", "lmac/ag", "lmac/fid_in", "lmac/sps", "lmac/comp_soft"):
        assert key in sal and key in rnd
    assert 0.0 <= sal["lmac/fid_in"] <= 100.0


def test_stages_of_a_wrapped_network_are_its_layers():
    """A classifier without ``randomisation_stages()`` behind a one-child wrapper (as
    ``ExplainedModel`` wraps a user's network): the cascade walks the network's layers, top
    first, instead of re-initialising the whole network as one block."""
    from torch import nn

    net = nn.Sequential()
    net.add_module("conv1", nn.Conv1d(1, 4, 3))
    net.add_module("act", nn.ReLU())
    net.add_module("conv2", nn.Conv1d(4, 4, 3))
    net.add_module("head", nn.Linear(4, 2))

    class Wrapper(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.net = inner

    names = [n for n, _ in sanity.randomisation_stages(Wrapper(net))]
    assert names == ["net.head", "net.conv2", "net.conv1"]
    stages = dict(sanity.cascade(Wrapper(net), seed=0))
    top = stages["net.head"].net
    assert not torch.equal(top.head.weight, net.head.weight)
    assert torch.equal(top.conv1.weight, net.conv1.weight)  # only the head so far
    assert not torch.equal(stages["net.conv1"].net.conv1.weight, net.conv1.weight)
