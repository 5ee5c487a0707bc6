"""Leaderboard (long format, summary, publish), compare (significance) and report, on hand-made
run cells written with ``results.write_cell``; one end-to-end CLI run on synth small."""
from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from audio_xai_bench import leaderboard as lb
from audio_xai_bench.compare import compare
from audio_xai_bench.results import cell_dir, config_hash, find_cells, read_cell, write_cell

CLASSES = ["tone", "sweep", "noise"]
TAUS = (0.9, 0.5, 0.1)


def make_cell(out: Path, method: str, seed: int, metrics: dict, *, task: str = "toy",
              pairs: pd.DataFrame | None = None, per_sample: pd.DataFrame | None = None,
              relevance: np.ndarray | None = None, history: pd.DataFrame | None = None,
              listen: list | None = None, fold: str = "0", date: str = "2024-01-01T00:00:00",
              kind: str = "multiclass", profile: str = "default") -> Path:
    chash = config_hash({"m": method, "s": seed, "f": fold, "p": profile})
    config = {"method": method, "task": {"name": task, "kind": kind,
                                         "classes": CLASSES, "profile": "default"},
              "fold": fold, "seed": seed, "method_config": {"K": 4}, "profile": profile,
              "eval_config": {"seed": seed}, "config_hash": chash,
              "versions": {"git_commit": "abc1234", "audio_xai_bench": "0.1.0"}}
    path = cell_dir(out, task, method, fold, seed, chash)
    write_cell(path, config=config, metrics=metrics,
               per_sample=per_sample if per_sample is not None else pd.DataFrame({"id": ["a"]}),
               pairs=pairs if pairs is not None else pd.DataFrame({"id": []}),
               history=history, listen=listen or [], sample_rate=8000,
               done={"wall_s": 10.0 + seed, "date": date, "device": "cpu"},
               relevance=relevance)
    return path


def ff_pairs(rng: np.random.Generator, base: np.ndarray, shift: float, noise: float
             ) -> pd.DataFrame:
    n = base.size
    df = pd.DataFrame({"id": [f"clip{i:03d}" for i in range(n)],
                       "class": [CLASSES[i % 3] for i in range(n)],
                       "class_index": [i % 3 for i in range(n)], "f_prob": 0.8})
    for tau in TAUS:
        df[f"ff@{tau}"] = base + shift + rng.normal(0, noise, n)
        df[f"n_selected@{tau}"] = 2.0
        df[f"random_ff@{tau}"] = rng.normal(0, noise, n)
        df[f"random_n@{tau}"] = 2.0
    return df


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------
FF = {"alpha": [0.1, 0.2, 0.3], "beta": [0.4, 0.5, 0.6], "gamma": [0.0, 0.0, 0.3]}
ACC = {"alpha": [0.5, 0.7, 0.9], "beta": [0.6, 0.6, 0.6], "gamma": [0.9, 0.9, 0.9]}
RND = {"alpha": [0.05, 0.05, 0.05], "beta": [0.0, 0.1, 0.2], "gamma": [0.3, 0.3, 0.3]}
DEL = {"alpha": [0.2, 0.2, 0.2], "beta": [0.5, 0.4, 0.6], "gamma": [0.1, 0.1, 0.1]}


def toy_metrics(method: str, seed: int) -> dict:
    return {"n_test": 30.0, "faithfulness/n_pairs": 12.0,
            "official/accuracy_top1": ACC[method][seed],
            "faithfulness/ff_median@0.1": FF[method][seed],
            "faithfulness/random_ff_median@0.1": RND[method][seed],
            "faithfulness/n_selected_mean@0.1": 2.0,
            "faithfulness/deletion_auc": DEL[method][seed],
            "classwise/ff_median@0.1/tone": FF[method][seed]}


@pytest.fixture()
def toy_runs(tmp_path):
    out = tmp_path / "runs"
    pairs = pd.DataFrame({"id": [f"c{i}" for i in range(12)],
                          "class": ["tone"] * 5 + ["sweep"] * 7, "ff@0.1": 0.0})
    for m in ("alpha", "beta", "gamma"):
        for s in range(3):
            make_cell(out, m, s, toy_metrics(m, s), pairs=pairs)
    return out


# ---------------------------------------------------------------------------------------------
# leaderboard
# ---------------------------------------------------------------------------------------------
def test_higher_is_better_rules():
    hib = lb.higher_is_better
    assert hib("faithfulness/ff_median@0.1") is True
    assert hib("faithfulness/ff_mean@0.5") is True
    assert hib("faithfulness/random_ff_median@0.1") is False
    assert hib("faithfulness/wilcoxon_p@0.1") is False
    assert hib("faithfulness/n_selected_mean@0.1") is None
    assert hib("faithfulness/n_pairs") is None and hib("n_test") is None
    assert hib("fidelity/top1") is True and hib("fidelity/macro_auprc_11pt") is True
    assert hib("classifier/accuracy_top5") is True and hib("official/weighted_f1") is True
    assert hib("classification/macro_auprc") is True
    assert hib("classwise/ff_median@0.1/dog") is True
    assert hib("classwise/random_ff_median@0.1/dog") is False
    assert hib("groundtruth/si_sdri_median@0.3") is True
    assert hib("groundtruth/energy_precision_mean@0.3") is True
    assert hib("groundtruth/energy_precision_input_mean") is None
    assert hib("resources/wall_s") is False
    assert hib("faithfulness/deletion_auc") is False and hib("faithfulness/deletion@0.1") is False
    assert hib("faithfulness/insertion_auc") is True
    assert hib("faithfulness/insertion_wilcoxon_p") is False
    assert hib("faithfulness/energy_ff_median@0.1") is False
    assert hib("faithfulness/mass_share_median@0.1") is None
    assert hib("faithfulness/random_n_unmatched@0.1") is None
    assert lb.rankable("faithfulness/deletion_auc") and lb.rankable("faithfulness/insertion@0.1")
    assert not lb.rankable("faithfulness/ff_median@0.1")
    assert not lb.rankable("faithfulness/deletion_auc_randorder")
    assert lb.rankable("fidelity/top1") and not lb.rankable("classwise/ff_median@0.1/dog")


def test_collect_long_format(toy_runs):
    df = lb.collect(toy_runs, "toy")
    assert list(df.columns) == lb.COLUMNS
    # 9 cells x (8 metrics + resources/wall_s)
    assert len(df) == 9 * 9
    assert set(df["method"]) == {"alpha", "beta", "gamma"}
    assert set(df["variant"]) == {""}
    assert df["run_id"].nunique() == 9 and (df["git_commit"] == "abc1234").all()
    row = df[(df.method == "beta") & (df.seed == 1) & (df.metric == "faithfulness/ff_median@0.1")]
    assert row["value"].item() == pytest.approx(0.5) and row["n"].item() == 12
    assert row["higher_is_better"].item() is True
    assert df[(df.metric == "official/accuracy_top1")]["n"].eq(30).all()
    # class-wise n = pairs of that class in pairs.csv
    assert df[df.metric == "classwise/ff_median@0.1/tone"]["n"].eq(5).all()
    assert df[df.metric == "faithfulness/n_selected_mean@0.1"]["higher_is_better"].eq("").all()
    assert (df[df.metric == "resources/wall_s"].sort_values(["method", "seed"])["value"]
            .to_numpy() == np.tile([10.0, 11.0, 12.0], 3)).all()


def test_summary_means_stds_ranks(toy_runs):
    wide = lb.summary(lb.collect(toy_runs, "toy")).set_index("method")
    assert (wide["n_cells"] == 3).all()
    ff = "faithfulness/ff_median@0.1"
    assert wide.loc["alpha", f"{ff}:mean"] == pytest.approx(0.2)
    assert wide.loc["alpha", f"{ff}:std"] == pytest.approx(0.1)
    assert wide.loc["gamma", f"{ff}:mean"] == pytest.approx(0.1)
    assert wide.loc["gamma", f"{ff}:std"] == pytest.approx(np.std([0, 0, 0.3], ddof=1))
    # FF at a fixed tau is never ranked (|L| differs between methods, issue 10) ...
    assert wide[f"{ff}:rank"].isna().all()
    # ... faithfulness is ranked on the budget-matched deletion AUC (lower is better)
    assert wide["faithfulness/deletion_auc:rank"].to_dict() == {"alpha": 2, "beta": 3, "gamma": 1}
    acc = "official/accuracy_top1"
    assert wide[f"{acc}:mean"].to_dict() == pytest.approx({"alpha": 0.7, "beta": 0.6, "gamma": 0.9})
    assert wide.loc["beta", f"{acc}:std"] == pytest.approx(0.0)
    assert wide[f"{acc}:rank"].to_dict() == {"alpha": 2, "beta": 3, "gamma": 1}
    rnd = "faithfulness/random_ff_median@0.1"  # a baseline: lower, but not ranked
    assert wide[f"{rnd}:rank"].isna().all()
    assert wide["faithfulness/n_selected_mean@0.1:rank"].isna().all()
    assert not any(c.startswith("classwise/") for c in wide.columns)
    text = lb.format_summary(wide.reset_index())
    assert text.set_index("method").loc["beta", ff] == "0.500 ± 0.100"  # no rank
    # a second variant of one method is its own row; no spurious (method, variant) rows
    make_cell(toy_runs, "alpha", 0, toy_metrics("beta", 2), profile="small")
    wide2 = lb.summary(lb.collect(toy_runs, "toy"))
    assert len(wide2) == 4 and wide2["n_cells"].tolist() == [3, 1, 3, 3]
    small = wide2[wide2.variant == "profile=small"].iloc[0]
    assert small["method"] == "alpha" and small["faithfulness/deletion_auc:rank"] == 4


def test_publish_merges_and_replaces(toy_runs, tmp_path):
    root = tmp_path / "leaderboard"
    full = lb.collect(toy_runs, "toy")
    lb.publish(full[full.method.isin(["alpha", "beta"])], "toy", root)
    first = pd.read_csv(root / "toy.csv")
    assert len(first) == 6 * 9 and set(first.method) == {"alpha", "beta"}
    lb.publish(full[full.method == "gamma"], "toy", root)  # a new method: old rows kept
    second = pd.read_csv(root / "toy.csv")
    assert len(second) == 9 * 9 and set(second.method) == {"alpha", "beta", "gamma"}
    again = full[full.method == "alpha"].copy()
    again.loc[again.metric == "official/accuracy_top1", "value"] = 1.0
    lb.publish(again, "toy", root)  # same run ids: replaced, not duplicated
    third = pd.read_csv(root / "toy.csv")
    assert len(third) == 9 * 9
    assert not third.duplicated(["method", "run_id", "metric"]).any()
    assert third[(third.method == "alpha") & (third.metric == "official/accuracy_top1")
                 ]["value"].eq(1.0).all()
    summ = pd.read_csv(root / "toy_summary.csv").set_index("method")
    assert summ.loc["alpha", "official/accuracy_top1:mean"] == pytest.approx(1.0)
    assert summ.loc["alpha", "official/accuracy_top1:rank"] == 1
    assert not list(root.glob(".toy.csv.*"))  # no temporary file left behind


def test_publish_refuses_or_marks_rows_from_other_code(toy_runs, tmp_path):
    root = tmp_path / "leaderboard"
    full = lb.collect(toy_runs, "toy")
    alpha = full[full.method == "alpha"].copy()
    assert set(alpha["metrics_digest"]) == {""}  # toy cells carry no digest: uniform anyway
    lb.publish(alpha[alpha.seed < 2], "toy", root)
    before = (root / "toy.csv").read_bytes()
    # a later cell of the same method written by another commit: refused, nothing written
    later = alpha[alpha.seed == 2].assign(git_commit="fffffff")
    with pytest.raises(lb.ProvenanceMismatch, match="alpha.*fffffff.*abc1234"):
        lb.publish(later, "toy", root)
    assert (root / "toy.csv").read_bytes() == before
    # incoming rows that disagree among themselves (metric code changed) are refused too
    mixed_in = alpha.assign(metrics_digest=np.where(alpha.seed == 0, "d1", "d2"))
    with pytest.raises(lb.ProvenanceMismatch, match="metrics_digest=d1"):
        lb.publish(mixed_in, "toy", tmp_path / "other")
    # another method from another commit is fine (the rule is per task and method)
    lb.publish(full[full.method == "beta"].assign(git_commit="0000000"), "toy", root)
    # 'mark': written, every row of the method flagged, the summary says so
    lb.publish(later, "toy", root, on_mismatch="mark")
    marked = pd.read_csv(root / "toy.csv", keep_default_na=False)
    assert (marked[marked.method == "alpha"]["mixed"].astype(str) == "True").all()
    assert (marked[marked.method == "beta"]["mixed"].astype(str) == "").all()
    summ = pd.read_csv(root / "toy_summary.csv").set_index("method")
    assert bool(summ.loc["alpha", "mixed"]) and not bool(summ.loc["beta", "mixed"])
    # 'replace': the method's older rows from other code are dropped
    root2 = tmp_path / "lb2"
    lb.publish(alpha[alpha.seed < 2], "toy", root2)
    lb.publish(later, "toy", root2, on_mismatch="replace")
    rep = pd.read_csv(root2 / "toy.csv", dtype={"git_commit": str})
    assert set(rep["git_commit"]) == {"fffffff"} and set(rep["seed"]) == {2}
    with pytest.raises(ValueError, match="on_mismatch"):
        lb.publish(later, "toy", root2, on_mismatch="ignore")


def _publisher(args):
    out, root, method, repeats = args
    df = lb.collect(out, "toy", method)
    for _ in range(repeats):
        lb.publish(df, "toy", root)
    return len(df)


def test_concurrent_publishers(toy_runs, tmp_path):
    root = tmp_path / "lb"
    ctx = mp.get_context("fork")
    with ctx.Pool(2) as pool:
        sizes = pool.map(_publisher, [(str(toy_runs), str(root), "alpha", 6),
                                      (str(toy_runs), str(root), "beta", 6)])
    df = pd.read_csv(root / "toy.csv")
    assert set(df.method) == {"alpha", "beta"} and len(df) == sum(sizes)
    assert not df.duplicated(["method", "run_id", "metric"]).any()
    assert set(pd.read_csv(root / "toy_summary.csv")["method"]) == {"alpha", "beta"}


def test_aggregate(toy_runs):
    records = [read_cell(p) for p in find_cells(toy_runs, "toy", "alpha")]
    agg = lb.aggregate(records).set_index("metric")
    assert agg.loc["faithfulness/ff_median@0.1", "mean"] == pytest.approx(0.2)
    assert agg.loc["faithfulness/ff_median@0.1", "std"] == pytest.approx(0.1)
    assert agg.loc["faithfulness/ff_median@0.1", "n"] == 3
    assert agg.loc["faithfulness/random_ff_median@0.1", "higher_is_better"] is False
    paths = lb.write_aggregate(records)
    assert paths == [toy_runs / "toy" / "alpha" / "aggregate.csv"]
    assert len(pd.read_csv(paths[0])) == len(agg)
    assert find_cells(toy_runs, "toy", "alpha")  # aggregate.csv is no cell


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------
def _compare_runs(out: Path, rng: np.random.Generator, n_pairs: int = 60,
                  methods=(("ref", 0.0), ("better", 0.3), ("copy", 0.0))) -> None:
    for s in range(3):
        base = rng.normal(0.1, 0.2, n_pairs)
        truth = rng.random(40) < 0.7
        for m, shift in methods:
            pairs = ff_pairs(rng, base, shift, 0.1)
            correct = (truth ^ (rng.random(40) < 0.1)).astype(int)
            ps = pd.DataFrame({"id": [f"clip{i:03d}" for i in range(40)], "fid_top1": correct,
                               "f_correct": 1})
            met = {"faithfulness/ff_median@0.1": float(np.median(pairs["ff@0.1"])),
                   "fidelity/top1": float(correct.mean()), "official/accuracy_top1": 1.0,
                   "n_test": 40.0, "faithfulness/n_pairs": float(n_pairs)}
            make_cell(out, m, s, met, pairs=pairs, per_sample=ps)


def test_compare_finds_shift_and_holm(tmp_path):
    from statsmodels.stats.multitest import multipletests

    out = tmp_path / "runs"
    _compare_runs(out, np.random.default_rng(0))
    t = compare(out, "toy", ["ref", "better", "copy"])
    assert list(t.columns) == ["metric", "method_a", "method_b", "n", "mean_a", "mean_b",
                               "mean_diff", "effect_size", "test", "p", "p_holm", "winner", "unit"]
    assert set(t.metric) == {"faithfulness/ff_median@0.1", "fidelity/top1",
                             "official/accuracy_top1"}
    ff = t[t.metric == "faithfulness/ff_median@0.1"].set_index(["method_a", "method_b"])
    assert (ff["test"] == "wilcoxon_stouffer").all() and (ff["n"] == 180).all()
    assert ff["unit"].str.endswith("in 3 cells").all()
    assert ff.loc[("ref", "better"), "winner"] == "b"
    assert ff.loc[("ref", "better"), "p_holm"] < 0.01
    assert ff.loc[("ref", "better"), "mean_diff"] == pytest.approx(-0.3, abs=0.05)
    assert ff.loc[("better", "copy"), "winner"] == "a"
    assert (t[t.metric == "fidelity/top1"]["test"] == "mcnemar_stouffer").all()
    assert (t[t.metric == "fidelity/top1"]["n"] == 120).all()
    # Holm over every row of the table, as statsmodels computes it
    ok = t["p"].notna()
    np.testing.assert_allclose(t.loc[ok, "p_holm"], multipletests(t.loc[ok, "p"], method="holm")[1])
    # a metrics.json-only metric: paired t-test over the three matched (fold, seed) cells
    tt = compare(out, "toy", ["ref", "better"], "faithfulness/n_pairs")
    assert tt["test"].item() == "paired_t" and tt["n"].item() == 3


def test_compare_tests_each_cell_and_combines_with_stouffer(tmp_path):
    from scipy.stats import combine_pvalues, wilcoxon

    from audio_xai_bench.metrics import stats

    # known answer: stratum 1 d = [1, 2, 3]: W+ = 6, E = 3, Var = 3*4*7/24 = 3.5, z = 1.603567;
    # stratum 2 d = [-1, 2]: W+ = 2, E = 1.5, Var = 1.25, z = .447214;
    # Z = (1.603567 + .447214) / sqrt(2) = 1.450121, p = 2 Phi(-Z) = .147025
    r = stats.stratified_paired_test([([1, 2, 3], [0, 0, 0]), ([-1, 2], [0, 0])])
    assert r["per_stratum_z"] == pytest.approx([3 / 3.5 ** 0.5, 0.5 / 1.25 ** 0.5])
    assert r["z"] == pytest.approx(1.450121, abs=1e-6) and r["p"] == pytest.approx(0.147025, abs=1e-6)
    assert r["k"] == 2 and r["n"] == 5 and r["effect_size"] == pytest.approx((1 + 1 / 3) / 2)
    # McNemar strata: b, c = (6, 2) and (1, 3): z = 4/sqrt(8), -2/2
    m = stats.stratified_paired_test([([1] * 6 + [0] * 2, [0] * 6 + [1] * 2),
                                      ([1] + [0] * 3, [0] + [1] * 3)], "mcnemar")
    assert m["z"] == pytest.approx((4 / 8 ** 0.5 - 1.0) / 2 ** 0.5)
    # through compare: each (fold, seed) cell tested alone, cells combined; cross-checked with
    # scipy's normal-approximation Wilcoxon per cell and scipy's Stouffer combination
    out = tmp_path / "runs"
    rng = np.random.default_rng(3)
    _compare_runs(out, rng, n_pairs=30, methods=(("ref", 0.0), ("better", 0.1)))
    t = compare(out, "toy", ["ref", "better"], "faithfulness/ff_median@0.1")
    from audio_xai_bench.compare import load_method

    ca, cb = load_method(out, "toy", "ref"), load_method(out, "toy", "better")
    one_sided = []
    for key in sorted(ca):
        a = pd.read_csv(ca[key].path / "pairs.csv")["ff@0.1"]
        b = pd.read_csv(cb[key].path / "pairs.csv")["ff@0.1"]
        one_sided.append(wilcoxon(a, b, method="approx", correction=False,
                                  alternative="greater").pvalue)
    p1 = combine_pvalues(one_sided, method="stouffer").pvalue
    assert t["p"].item() == pytest.approx(2 * min(p1, 1 - p1), rel=1e-6)
    assert t["n"].item() == 90 and t["test"].item() == "wilcoxon_stouffer"


def test_compare_identical_copy_rarely_significant(tmp_path):
    significant = 0
    for rep in range(20):
        out = tmp_path / f"r{rep}"
        _compare_runs(out, np.random.default_rng(100 + rep), n_pairs=40,
                      methods=(("ref", 0.0), ("copy", 0.0)))
        t = compare(out, "toy", ["ref", "copy"], "faithfulness/ff_median@0.1")
        significant += int(t["p_holm"].item() < 0.05)
        assert t["winner"].item() in ("", "a", "b")
    assert significant <= 2


def test_compare_falls_back_to_welch_without_shared_cells(tmp_path):
    out = tmp_path / "runs"
    for s in range(3):
        make_cell(out, "x", s, {"fidelity/top1": 0.5 + 0.01 * s})
        make_cell(out, "y", s + 10, {"fidelity/top1": 0.9 + 0.01 * s})
    t = compare(out, "toy", ["x", "y"], "fidelity/top1")
    assert t["test"].item() == "welch" and t["winner"].item() == "b"
    with pytest.raises(ValueError):
        compare(out, "toy", ["x", "nobody"])


def test_compare_multilabel_bootstrap(tmp_path):
    out = tmp_path / "runs"
    rng = np.random.default_rng(0)
    n = 80
    for s in range(2):
        f_prob = rng.random((n, 3))
        y = f_prob > 0.5
        ps = {"id": [f"c{i}" for i in range(n)],
              "labels": [";".join(np.asarray(CLASSES)[r]) for r in y]}
        for m, noise in (("sharp", 0.1), ("blurry", 1.0)):
            s_prob = np.clip(y + rng.normal(0, noise, y.shape), 0, 1)
            df = pd.DataFrame(ps)
            for c, name in enumerate(CLASSES):
                df[f"f_prob/{name}"] = f_prob[:, c]
                df[f"surrogate_prob/{name}"] = s_prob[:, c]
            make_cell(out, m, s, {"fidelity/macro_auprc": 0.5}, per_sample=df, kind="multilabel")
    t = compare(out, "toy", ["sharp", "blurry"], "fidelity/macro_auprc", n_boot=200)
    assert t["test"].item() == "paired_bootstrap" and t["n"].item() == 2 * n
    assert t["mean_a"].item() > t["mean_b"].item() and t["winner"].item() == "a"


def test_compare_bootstrap_ignores_unannotated_labels(tmp_path):
    """OpenMIC-style masks: where only the annotated labels count, 'a' is perfect and 'b' is
    not; the unannotated entries (where 'a' looks wrong) must not decide the comparison."""
    out = tmp_path / "runs"
    rng = np.random.default_rng(1)
    n = 60
    y = rng.random((n, 3)) > 0.5
    mask = rng.random((n, 3)) > 0.3
    for m in ("a", "b"):
        df = pd.DataFrame({"id": [f"c{i}" for i in range(n)],
                           "labels": [";".join(np.asarray(CLASSES)[r]) for r in y]})
        if m == "a":  # right on annotated labels, inverted on the others
            score = np.where(mask, y, ~y).astype(float)
        else:         # right everywhere, with noise
            score = np.clip(y + rng.normal(0, 0.6, y.shape), 0, 1)
        for c, name in enumerate(CLASSES):
            df[f"prob/{name}"] = score[:, c]
            df[f"mask/{name}"] = mask[:, c].astype(int)
        make_cell(out, m, 0, {"classification/macro_auprc": 0.5}, per_sample=df,
                  kind="multilabel")
    t = compare(out, "toy", ["a", "b"], "classification/macro_auprc", n_boot=200)
    assert t["test"].item() == "paired_bootstrap"
    assert t["mean_a"].item() == pytest.approx(1.0) and t["winner"].item() == "a"


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def test_report_writes_plots_and_html(tmp_path):
    from audio_xai_bench.report import report_cell

    rng = np.random.default_rng(0)
    pairs = ff_pairs(rng, rng.normal(0.2, 0.1, 12), 0.0, 0.05)
    hist = pd.DataFrame({"loss": [3.0, 2.0, 1.5], "fid": [1.0, 0.8, 0.7], "epoch": [1, 2, 3],
                         "lr": 1e-3, "valid_score": [0.2, 0.4, 0.5]})
    wave = (0.1 * np.sin(np.arange(800) / 5.0)).astype(np.float32)
    cell = make_cell(tmp_path, "alpha", 0, {"faithfulness/ff_median@0.1": 0.2}, pairs=pairs,
                     relevance=rng.random((12, 6)), history=hist,
                     listen=[{"id": "clip000", "class": "tone", "input": wave,
                              "interpretation": wave * 0.5}])
    hist.to_csv(cell / "classifier_history.csv", index=False)
    page = report_cell(cell)
    names = {p.name for p in (cell / "plots").glob("*.png")}
    plots = {"classwise_ff.png", "ff_vs_tau.png", "tsne_relevance.png", "history.png"}
    assert names == plots | {"00_clip000_tone_input.png", "00_clip000_tone_interpretation.png"}
    assert all((cell / "plots" / n).stat().st_size > 5000 for n in plots)
    text = page.read_text()
    assert all(n in text for n in names)
    assert text.count("<audio") == 2 and "../interpretations/" in text
    assert "preload='metadata'" in text  # players show their duration
    assert text.index("tone_input.wav") < text.index("tone_interpretation.wav")
    assert "faithfulness/ff_median@0.1" in text
    check_html(page)


def check_html(page):
    """Every file an HTML page references exists next to it and decodes (PNG, WAV, HTML)."""
    from html.parser import HTMLParser

    import soundfile as sf
    from matplotlib.image import imread

    refs = []

    class P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            refs.extend(v for k, v in attrs if k in ("src", "href") and v)

    P().feed(page.read_text())
    assert refs
    for ref in refs:
        path = (page.parent / ref).resolve()
        assert path.is_file(), ref
        if path.suffix == ".png":
            assert imread(path).shape[0] > 10
        elif path.suffix == ".wav":
            assert sf.read(path)[0].size > 0
        elif path.suffix == ".html":
            assert "<html>" in path.read_text()
    return refs


def test_report_orders_components_by_relevance_and_writes_the_task_page(tmp_path):
    from audio_xai_bench.report import report_cells

    rng = np.random.default_rng(0)
    wave = (0.1 * np.sin(np.arange(4000) / 5.0)).astype(np.float32)
    rel = rng.random((12, 6))
    rel[0] = [0.1, 0.9, 0.2, 0.5, 0.0, 0.3]
    for m, shift in (("alpha", 0.3), ("beta", 0.0)):
        for seed in (0, 1):
            pairs = ff_pairs(rng, rng.normal(shift, 0.1, 12), 0.0, 0.05)
            metrics = {"faithfulness/ff_median@0.1": shift,
                       **{f"faithfulness/deletion@{b}": 0.9 - b - shift for b in (0.1, 0.3, 0.5)},
                       **{f"faithfulness/deletion@{b}_randorder": 0.9 - b / 2 for b in (0.1, 0.3, 0.5)}}
            make_cell(tmp_path, m, seed, metrics, pairs=pairs, relevance=rel,
                      listen=[{"id": pairs["id"][0], "class": pairs["class"][0], "input": wave,
                               "interpretation": wave * 0.5, "component3": wave * 0.2,
                               "component1": wave * 0.1}])
    pages = report_cells(tmp_path, "toy")
    assert len(pages) == 5 and pages[-1].name == "index.html"
    cell_text = pages[0].read_text()
    # input, interpretation, then components by relevance: r_1 = 0.9 before r_3 = 0.5
    order = [cell_text.index(k) for k in ("_input.wav", "_interpretation.wav",
                                          "_component1.wav", "_component3.wav")]
    assert order == sorted(order) and "relevance 0.900" in cell_text
    check_html(pages[0])
    task_page = pages[-1]
    text = task_page.read_text()
    assert "ff_vs_tau.png" in text and "curves.png" in text and "alpha" in text and "beta" in text
    refs = check_html(task_page)
    assert sum(r.endswith("index.html") for r in refs) == 4


@pytest.mark.skipif(not any(__import__("shutil").which(b) for b in ("chromium", "chromium-browser")),
                    reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_report_page_loads_in_headless_chromium(tmp_path):
    import shutil
    import subprocess

    from audio_xai_bench.report import report_cell

    rng = np.random.default_rng(0)
    pairs = ff_pairs(rng, rng.normal(0.2, 0.1, 12), 0.0, 0.05)
    wave = (0.1 * np.sin(np.arange(4000) / 5.0)).astype(np.float32)
    cell = make_cell(tmp_path, "alpha", 0, {"x": 1.0}, pairs=pairs, relevance=rng.random((12, 6)),
                     listen=[{"id": "c", "class": "t", "input": wave, "interpretation": wave}])
    page = report_cell(cell)
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                           page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "<audio" in proc.stdout and "alpha on" in proc.stdout


# ---------------------------------------------------------------------------------------------
# end to end
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow  # ~40 s on a quiet 2-core machine (trains f and L2I for two seeds)
def test_cli_end_to_end(tmp_path, capsys):
    from audio_xai_bench.cli import main

    out = str(tmp_path / "runs")
    t0 = time.time()
    for method in ("l2i", "random"):
        assert main(["run", "--method", method, "--task", "synth", "--profile", "small",
                     "--seeds", "0,1", "--out", out]) == 0
    aggs = list((Path(out) / "synth" / "l2i").glob("aggregate*.csv"))
    assert len(aggs) == 1 and pd.read_csv(aggs[0])["variant"].iloc[0] == "profile=small"
    assert main(["leaderboard", "--task", "synth", "--out", out, "--publish", "--root",
                 str(tmp_path / "lb")]) == 0
    long_df = pd.read_csv(tmp_path / "lb" / "synth.csv")
    assert set(long_df.method) == {"l2i", "random"} and long_df.run_id.nunique() == 4
    # the small profile's f learns (chance = 1/8): the tests run against a real classifier
    acc = long_df[long_df.metric == "classifier/accuracy_top1"].value
    assert acc.min() > 0.25
    assert main(["compare", "--task", "synth", "--methods", "l2i,random", "--out", out]) == 0
    table = pd.read_csv(Path(out) / "synth" / "compare_main.csv")
    assert "faithfulness/ff_median@0.1" in set(table.metric)
    cell = find_cells(out, "synth", "l2i")[0]
    assert main(["report", "--run", str(cell)]) == 0
    assert (cell / "plots" / "index.html").is_file() and (cell / "plots" / "history.png").is_file()
    printed = capsys.readouterr().out
    assert "±" in printed and "wilcoxon" in printed
    print(f"end to end: {time.time() - t0:.1f} s")


def test_paper_tables_cut_the_summary_by_capability():
    import pandas as pd

    from audio_xai_bench.leaderboard import paper_tables

    wide = pd.DataFrame({
        "task": ["synth", "synth"], "method": ["a", "b"], "variant": ["", ""], "n_cells": [3, 3],
        "fidelity/top1:mean": [0.9, float("nan")], "fidelity/top1:std": [0.01, float("nan")],
        "classification/accuracy_top1:mean": [float("nan"), 0.8],
        "classification/accuracy_top1:std": [float("nan"), 0.02]})
    tables = paper_tables(wide)
    (fid,) = [t for k, t in tables.items() if k.startswith("Table IV")]
    (cls,) = [t for k, t in tables.items() if k.startswith("Table VIII")]
    assert fid["method"].tolist() == ["a"] and fid["fidelity/top1"][0] == "0.900 ± 0.010"
    assert cls["method"].tolist() == ["b"] and cls["classification/accuracy_top1"][0] == "0.800 ± 0.020"
