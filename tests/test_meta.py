"""synth-mix, the distractor ground-truth metrics, the reference explainers and ``meta``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from audio_xai_bench.api import Batch, FactorExplanation
from audio_xai_bench.metrics import groundtruth as gt
from audio_xai_bench.metrics import meta


# -- ground-truth metrics: known answers ---------------------------------------------------
def test_mass_accuracy_known_answer():
    R = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
    M = torch.tensor([[[True, False], [False, True]], [[True, False], [False, False]]])
    out = gt.relevance_mass_accuracy(R, M)
    assert out[0].item() == pytest.approx(5 / 10)
    assert torch.isnan(out[1])  # an all-zero map has no mass to place


def test_rank_accuracy_known_answer_and_ties():
    # |M| = 2; top-2 bins are 4 (in M) and 3 (not): 1/2
    R = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    M = torch.tensor([[True, False, False, True]])
    assert gt.relevance_rank_accuracy(R, M).item() == pytest.approx(0.5)
    # ties: |M| = 2, values [5, 1, 1, 1], mask on bins 0 and 1. Bin 0 is certain; one of the
    # three tied bins fills the second place, in M with probability 1/3 -> (1 + 1/3) / 2
    R = torch.tensor([[5.0, 1.0, 1.0, 1.0]])
    M = torch.tensor([[True, True, False, False]])
    assert gt.relevance_rank_accuracy(R, M).item() == pytest.approx((1 + 1 / 3) / 2)
    # invariant to an increasing map (log1p vs linear energy)
    X = torch.rand(3, 6, 5)
    Ms = torch.rand(3, 6, 5) > 0.6
    a = gt.relevance_rank_accuracy(X, Ms)
    b = gt.relevance_rank_accuracy(torch.expm1(X) ** 2, Ms)
    assert torch.allclose(a, b)
    assert torch.isnan(gt.relevance_rank_accuracy(X[:1], torch.zeros(1, 6, 5, dtype=torch.bool)))[0]


def test_roc_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(0)
    s = torch.randint(0, 5, (6, 40), generator=g).float()  # many ties
    y = torch.rand(6, 40, generator=g) > 0.6
    out = gt.roc_auc(s, y)
    for i in range(6):
        assert out[i].item() == pytest.approx(roc_auc_score(y[i].numpy(), s[i].numpy()), abs=1e-6)
    one_class = gt.roc_auc(s[:1], torch.ones(1, 40, dtype=torch.bool))
    assert torch.isnan(one_class[0])


def test_active_frames():
    S = torch.zeros(1, 3, 5)
    S[0, 0, 1], S[0, 1, 2], S[0, 0, 4] = 1.0, 0.5, 0.01  # energies 1, .25, 1e-4
    assert gt.active_frames(S, rel_db=-20).tolist() == [[False, True, True, False, False]]


# -- reference explainers: invariants ------------------------------------------------------
class _FakeFrontend:
    """stft(target) returns the magnitude given at construction (the target's spectrogram)."""

    def __init__(self, target_mag):
        self.target_mag = target_mag

    def stft(self, wave):
        return self.target_mag.to(torch.complex64)


def _block_case(monkeypatch, method_cls):
    """8 frequency bins, 4 components each owning 2 bins; the target source is exactly the
    mixture on components 0 and 2's bins."""
    from audio_xai_bench import nmf
    from audio_xai_bench.methods import reference

    F, T, K = 8, 6, 4
    W = torch.zeros(F, K)
    for k in range(K):
        W[2 * k:2 * k + 2, k] = 1.0
    H = torch.ones(1, K, T)
    X = torch.rand(1, F, T) + 0.5
    support = torch.zeros(1, F, T, dtype=torch.bool)
    support[:, 0:2] = True
    support[:, 4:6] = True
    target_mag = torch.where(support, torch.expm1(X), torch.zeros_like(X))
    monkeypatch.setattr(nmf, "project", lambda X, W, **kw: H.clone())
    ex = method_cls({"K": K, "nmf_mu": 0.8, "nmf_iter": 1, "project_iter": 1})
    ex.W, ex.frontend = W, _FakeFrontend(target_mag)
    batch = Batch(wave=torch.zeros(1, 10), X=X, phase=torch.empty(0), logmel=torch.empty(0),
                  target=torch.zeros(1, 2), mask=torch.ones(1, 2, dtype=torch.bool),
                  index=torch.zeros(1, dtype=torch.long), sources=torch.zeros(1, 2, 10),
                  source_classes=torch.tensor([[1, -2]]))
    assert reference.OracleExplainer.needs_sources
    return ex.explain(batch, torch.tensor([1])), support


@pytest.mark.parametrize("tau", [0.1, 0.5, 0.9])
def test_oracle_mass_accuracy_is_one_on_the_source_support(monkeypatch, tau):
    from audio_xai_bench.methods.reference import AntiOracleExplainer, OracleExplainer

    e, support = _block_case(monkeypatch, OracleExplainer)
    assert e.relevance.tolist() == [[1.0, 0.0, 1.0, 0.0]]
    keep = e.mixture(e.relevance > tau)
    assert gt.relevance_mass_accuracy(keep, support).item() == pytest.approx(1.0)
    assert gt.relevance_rank_accuracy(keep, support).item() == pytest.approx(1.0)
    a, _ = _block_case(monkeypatch, AntiOracleExplainer)
    anti = a.mixture(a.relevance > tau)
    assert torch.equal(a.relevance > tau, ~(e.relevance > tau))  # the complement
    assert gt.relevance_mass_accuracy(anti, support).item() == pytest.approx(0.0)
    assert gt.relevance_mass_accuracy(anti, ~support).item() == pytest.approx(1.0)


def test_energy_explainer_ranks_by_mass(monkeypatch):
    from audio_xai_bench.methods.reference import EnergyExplainer

    e, _ = _block_case(monkeypatch, EnergyExplainer)
    X = e.X[0]
    mass = torch.stack([X[2 * k:2 * k + 2].sum() for k in range(4)])
    assert torch.allclose(e.relevance[0], mass / mass.max(), atol=1e-5)
    assert not EnergyExplainer.needs_sources


def test_oracle_refused_on_a_task_without_sources(tmp_path, capsys):
    from audio_xai_bench.cli import main

    out = tmp_path / "runs"
    assert main(["run", "--method", "oracle", "--task", "esc50", "--out", str(out),
                 "--profile", "small"]) == 2
    err = capsys.readouterr().err
    assert "oracle" in err and "synth-mix" in err and "synth" in err
    assert not out.exists()  # refused before any work
    assert main(["meta", "--task", "esc50", "--out", str(out)]) == 2
    assert not out.exists()


@pytest.mark.slow  # trains the small f and dictionary: ~20 s on a quiet 2-core machine
def test_oracle_runs_on_synth(tmp_path):
    from audio_xai_bench.cli import main

    out = tmp_path / "runs"
    assert main(["run", "--method", "oracle", "--task", "synth", "--out", str(out),
                 "--profile", "small", "--threads", "1", "--set", "eval.listen=0"]) == 0
    (cell,) = [p.parent for p in out.glob("synth/oracle/*/done.json")]
    m = json.loads((cell / "metrics.json").read_text())
    for name in ("groundtruth/rank_accuracy_mean@0.5", "groundtruth/time_auc_mean@0.5",
                 "groundtruth/mask_precision_mean@0.9"):
        assert name in m
    assert "groundtruth/distractor_share_mean@0.5" not in m  # synth has no distractors
    rel = np.load(cell / "relevance.npy")
    assert rel.min() >= 0 and np.allclose(rel.max(1)[rel.max(1) > 0], 1.0)


# -- tasks ----------------------------------------------------------------------------------
def test_synth_mix_is_deterministic_and_keeps_every_source():
    from audio_xai_bench.tasks.synth_mix import DISTRACTOR_CLASS, SynthMixTask

    a = SynthMixTask(profile="small", seed=0).folds()[0].test
    b = SynthMixTask(profile="small", seed=0).folds()[0].test
    c = SynthMixTask(profile="small", seed=1).folds()[0].test
    assert all(np.array_equal(x.audio, y.audio) for x, y in zip(a, b))
    assert not np.array_equal(a[0].audio, c[0].audio)
    louder = 0
    n_dis = 0
    for ex in a:
        label = int(ex.target.argmax())
        assert ex.source_classes[0] == label
        assert set(ex.source_classes[1:].tolist()) == {DISTRACTOR_CLASS}
        assert 1 <= len(ex.source_classes) - 1 <= 2
        rms = [np.sqrt(np.mean(s[s != 0] ** 2)) for s in ex.sources]
        louder += sum(r >= rms[0] for r in rms[1:])
        n_dis += len(rms) - 1
        assert np.abs(ex.audio - ex.sources.sum(0)).max() < np.abs(ex.audio).max()  # + noise
    assert 0.2 < louder / n_dis < 0.8  # TDR uniform in [-6, 6] dB: about half are louder


def test_synth_data_seed_option():
    from audio_xai_bench.tasks.synth import SynthTask

    assert SynthTask.data_seed_for(3, {}) == 3
    assert SynthTask.data_seed_for(3, {"data_seed": "run"}) == 3
    assert SynthTask.data_seed_for(3, {"data_seed": 7}) == 7
    with pytest.raises(ValueError, match="data_seed"):
        SynthTask.data_seed_for(3, {"data_seed": "x"})
    from audio_xai_bench.settings import SettingsError

    with pytest.raises(SettingsError, match="data_seed"):
        SynthTask(profile="small", bogus=1)
    with pytest.raises(SettingsError, match="data_seed"):
        SynthTask(profile="small", data_seed="often")
    assert SynthTask(profile="small", seed=4, data_seed=4).describe()["data_seed"] == 4


# -- meta-evaluation --------------------------------------------------------------------------
def _fake_results(broken: bool = True):
    """4 reference methods x 3 seeds; 'groundtruth/good_mean@0.5' follows the expected order
    on every pair, 'groundtruth/broken_mean@0.5' ignores the relevance (same value for all)."""
    rng = np.random.default_rng(0)
    quality = {"oracle": 0.9, "energy": 0.6, "random": 0.4, "anti-oracle": 0.1}
    metrics, pairs = {}, {}
    for m, q in quality.items():
        metrics[m], pairs[m] = {}, {}
        for s in range(3):
            base = rng.uniform(0, 0.05, 60)
            clip = np.linspace(0, 0.2, 60)  # shared per-pair difficulty
            good = q + clip + base * 0.1
            brk = clip
            pairs[m][s] = pd.DataFrame({"id": [f"test-{i:04d}" for i in range(60)],
                                        "class_index": np.arange(60) % 8,
                                        "good@0.5": good, "broken@0.5": brk})
            metrics[m][s] = {"groundtruth/good_mean@0.5": float(good.mean()),
                             "groundtruth/broken_mean@0.5": float(brk.mean()),
                             "classifier/accuracy_top1": 0.9, "n_test": 60.0}
    return metrics, pairs


def test_meta_flags_a_metric_that_ignores_the_relevance():
    metrics, pairs = _fake_results()
    t = meta.meta_table(metrics, pairs, alpha=0.01, direction=lambda n: True if "/" in n and
                        not n.startswith("classifier") else None).set_index("metric")
    assert t.loc["groundtruth/good_mean@0.5", "valid"] is True
    assert t.loc["groundtruth/good_mean@0.5", "p_holm"] < 0.01
    assert t.loc["groundtruth/good_mean@0.5", "stability"] == pytest.approx(1.0)
    assert t.loc["groundtruth/broken_mean@0.5", "valid"] is False
    assert t.loc["classifier/accuracy_top1", "valid"] == ""  # no expectation
    assert t.loc["n_test", "valid"] == ""


def test_meta_p_values_match_scipy_and_holm():
    from scipy.stats import wilcoxon
    from statsmodels.stats.multitest import multipletests

    metrics, pairs = _fake_results()
    t = meta.meta_table(metrics, pairs, direction=lambda n: True).set_index("metric")
    from scipy.stats import combine_pvalues

    raw = []
    for name in ("broken@0.5", "good@0.5"):
        for a, b in meta.FULL:
            ps = []
            for s in range(3):
                d = (pairs[a][s][name] - pairs[b][s][name]).to_numpy()
                ps.append(1.0 if np.all(d == 0) else
                          wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue)
            raw.append(combine_pvalues(ps, method="stouffer").pvalue)
    holm = multipletests(raw, method="holm")[1]
    assert t.loc["groundtruth/good_mean@0.5", "p_holm"] == pytest.approx(max(holm[3:]))


def test_meta_picks_up_new_metrics_by_pattern():
    assert meta.expectation_for("faithfulness/deletion_auc@mass").relations == (
        ("oracle", "random"), ("energy", "random"))
    assert meta.expectation_for("curves/insertion_auc").relations[0] == ("oracle", "random")
    assert ("random", "anti-oracle") in meta.expectation_for("lmac/ai@0.5").relations
    assert meta.expectation_for("groundtruth/time_auc_mean@0.5").relations == meta.FULL
    assert meta.expectation_for("groundtruth/distractor_share_input_mean").relations == ()
    assert meta.pair_column("groundtruth/si_sdri_median@0.1", ["si_sdri@0.1"]) == "si_sdri@0.1"
    assert meta.pair_column("faithfulness/ff_median@0.5", ["ff@0.5"]) == "ff@0.5"


def test_meta_validity_reaches_the_published_summary(tmp_path):
    from audio_xai_bench.leaderboard import COLUMNS, publish_meta

    root = tmp_path / "lb"
    root.mkdir()
    rows = [{"task": "synth-mix", "method": m, "variant": "", "fold": "0", "seed": 0,
             "metric": name, "value": v, "n": 1, "higher_is_better": True,
             "suite_version": "x", "git_commit": "x", "run_id": f"{m}-0", "date": "d"}
            for m, v in (("oracle", 0.9), ("random", 0.4))
            for name in ("groundtruth/good_mean@0.5", "groundtruth/broken_mean@0.5")]
    pd.DataFrame(rows, columns=COLUMNS).to_csv(root / "synth-mix.csv", index=False)
    metrics, pairs = _fake_results()
    table = meta.meta_table(metrics, pairs, direction=lambda n: True)
    written = publish_meta(table, "synth-mix", root)
    assert [p.name for p in written] == ["synth-mix_meta.csv", "synth-mix_summary.csv"]
    s = pd.read_csv(root / "synth-mix_summary.csv")
    assert s["groundtruth/good_mean@0.5:valid"].tolist() == [True, True]
    assert s["groundtruth/broken_mean@0.5:valid"].tolist() == [False, False]
    assert Path(root / "synth-mix_meta.csv").is_file()


def test_si_sdri_is_zero_when_every_region_is_selected():
    """Why region methods report SI-SDRi = 0.000 at τ = 0.1: L holds every region, so x_int
    is the input re-synthesised and its improvement over the input is 0."""
    from audio_xai_bench.api import SegmentExplanation
    from audio_xai_bench.audio import Frontend
    from audio_xai_bench.tasks.synth import SynthTask

    task = SynthTask(profile="small")
    fe = Frontend(task.frontend, torch.device("cpu"))
    ex = task.folds()[0].test[:2]
    wave = torch.from_numpy(np.stack([e.audio for e in ex]))
    source = torch.from_numpy(np.stack([e.sources[0] for e in ex]))
    X, phase, _ = fe.analyze(wave)
    seg = torch.randint(0, 20, X.shape)
    e = SegmentExplanation(X, seg, torch.ones(2, 20))
    x_int = fe.invert(e.mixture(torch.ones(2, 20, dtype=torch.bool)), phase, wave.shape[-1])
    assert gt.si_sdr_improvement(x_int, wave, source).abs().max() < 1e-3
    part = fe.invert(e.mixture(torch.arange(20).expand(2, 20) < 10), phase, wave.shape[-1])
    assert gt.si_sdr_improvement(part, wave, source).abs().min() > 1e-2
