"""Meta-evaluation: does each metric of the suite order explainers of known quality as it must?

The reference explainers (``methods/reference.py``: ``oracle``, ``energy``, ``anti-oracle``,
plus ``random``) share their units and differ only in their ranking, so their order of quality
is known. ``EXPECTATIONS`` below is the one table of what each metric must show about them;
the first row whose pattern matches a metric name applies. For every metric of their
``metrics.json`` this module reports

- the four methods' values (mean over seeds) and whether every expected relation "a better
  than b" holds in that mean, in the metric's direction (``leaderboard.higher_is_better``);
- for metrics with per-pair values in ``pairs.csv``: a one-sided Wilcoxon signed-rank test of
  each relation on the pairs (clip, class) where both methods have a value (``n_pairs``: the
  fewest over the relations, all seeds), within each seed, the seeds' p-values combined with
  Stouffer's method (seeds are not pooled as if they were i.i.d. pairs), then Holm-
  corrected over every test of the table (``statsmodels.stats.multitest.multipletests``);
  metrics without per-pair values must hold their relations in every seed instead;
- stability (MetaQuantus-style, Hedström et al., TMLR 2023, "noise resilience"): the mean
  Kendall τ between the methods' orderings in each pair of seeds. The perturbation is the
  seed: with ``data_seed=run`` each seed draws new clips and trains a new f (and dictionary),
  so this is rank agreement under a change of data and model, not under small input noise;
  NaN with one seed.

``valid`` = every relation holds (and is significant at ``alpha`` after Holm where it can be
tested). Metrics with no expectation (counts, properties of the input, f's own scores) are
reported with ``valid`` empty. New metrics (deletion / insertion curves, ``lmac/*``) are
picked up by the patterns as soon as they appear in ``metrics.json``.
"""
from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

REFERENCE_METHODS: tuple[str, ...] = ("oracle", "energy", "random", "anti-oracle")
FULL = (("oracle", "energy"), ("energy", "random"), ("random", "anti-oracle"))


@dataclass(frozen=True)
class Expectation:
    """Metrics matching ``pattern`` must rank each (better, worse) of ``relations``; an empty
    ``relations`` means no expectation (the metric does not score the explanation)."""

    pattern: str
    relations: tuple[tuple[str, str], ...]
    why: str


#: The one table of expectations, first match wins (direction from ``higher_is_better``).
EXPECTATIONS: tuple[Expectation, ...] = (
    Expectation(r"^(n_test$|faithfulness/n_|faithfulness/random_n_|.*_input_mean$)", (),
                "a count or a property of the input, not a score of the explanation"),
    Expectation(r"^(classifier|classification|official|fidelity|resources)/", (),
                "f's or a surrogate's score, the same for every post-hoc explainer"),
    Expectation(r"^groundtruth/distractor(_energy)?_share", (
        ("oracle", "energy"), ("oracle", "random"), ("random", "anti-oracle")),
        "the oracle avoids the distractors; the anti-oracle selects them and the noise; "
        "energy is class-blind (no expectation against random)"),
    Expectation(r"^groundtruth/", FULL,
                "ground truth: the true source first, the class-blind loud part next, chance, "
                "then the reversed oracle"),
    Expectation(r"(deletion|insertion)", (("oracle", "random"), ("energy", "random")),
                "removal curves: the oracle's and the loud part's units matter more to f than "
                "random ones"),
    Expectation(r"^(faithfulness|classwise)/(random_ff|wilcoxon_p)", (("oracle", "anti-oracle"),),
                "the random baseline outside L (resp. the test against it): removing what the "
                "oracle leaves out must hurt f less than what the anti-oracle leaves out"),
    Expectation(r"^(faithfulness|classwise)/ff_", (("oracle", "random"), ("random", "anti-oracle")),
                "FF: removing the target source drops f's score more than removing random "
                "units, which drops it more than removing the rest"),
    Expectation(r"^lmac/", (("oracle", "random"), ("random", "anti-oracle")),
                "L-MAC faithfulness: the target's units first"),
    Expectation(r".", (("oracle", "anti-oracle"),),
                "default for any other explanation metric: the oracle beats its reverse"),
)


def expectation_for(metric: str) -> Expectation:
    for e in EXPECTATIONS:
        if re.search(e.pattern, metric):
            return e
    raise AssertionError("the last expectation matches every name")  # pragma: no cover


def pair_column(metric: str, columns: Iterable[str]) -> str | None:
    """The pairs.csv column holding the per-pair values behind ``metric``: the stem without
    its group and ``_mean`` / ``_median`` suffix, with the same ``@tau``
    ('groundtruth/time_auc_mean@0.5' -> 'time_auc@0.5', 'faithfulness/ff_median@0.1' -> 'ff@0.1')."""
    if metric.startswith("classwise/"):
        return None
    base, _, tau = metric.partition("@")
    stem = base.split("/", 1)[-1]
    stem = re.sub(r"_(mean|median)$", "", stem)
    cols = set(columns)
    for cand in (f"{stem}@{tau}" if tau else stem, stem):
        if cand in cols:
            return cand
    return None


def _one_sided_wilcoxon(better: np.ndarray, worse: np.ndarray, hib: bool) -> float:
    from scipy.stats import wilcoxon

    d = (better - worse) if hib else (worse - better)
    d = d[np.isfinite(d)]
    if len(d) == 0 or np.all(d == 0):
        return 1.0
    return float(wilcoxon(d, alternative="greater", zero_method="zsplit").pvalue)


def _stratified_p(both: pd.DataFrame, a: str, b: str, hib: bool) -> float:
    """One-sided Wilcoxon of "a better than b" within each seed (the pairs of one cell), the
    seeds' p-values combined with Stouffer's method (``scipy.stats.combine_pvalues``): each
    seed is its own data set and f, so pairs are not pooled across seeds as if i.i.d."""
    from scipy.stats import combine_pvalues

    ps = [_one_sided_wilcoxon(g[a].to_numpy(), g[b].to_numpy(), hib)
          for _, g in both.groupby(level="_seed")]
    if not ps:
        return 1.0
    if len(ps) == 1:
        return ps[0]
    return float(combine_pvalues(np.clip(ps, 1e-300, 1.0), method="stouffer").pvalue)


def _stability(per_seed: pd.DataFrame, hib: bool) -> float:
    """Mean Kendall τ between the methods' orderings of every two seeds (rows = seeds,
    columns = methods); NaN with fewer than two complete seeds."""
    from scipy.stats import kendalltau

    rows = per_seed.dropna().to_numpy()
    if len(rows) < 2:
        return float("nan")
    taus = []
    for a, b in itertools.combinations(range(len(rows)), 2):
        t = kendalltau(rows[a], rows[b]).statistic
        taus.append(0.0 if np.isnan(t) else float(t))
    return float(np.mean(taus))


def meta_table(metrics: Mapping[str, Mapping[int, Mapping[str, float]]],
               pairs: Mapping[str, Mapping[int, pd.DataFrame]] | None = None,
               alpha: float = 0.01, methods: Sequence[str] = REFERENCE_METHODS,
               direction=None) -> pd.DataFrame:
    """The meta-evaluation table. ``metrics[method][seed]`` is a cell's metrics.json,
    ``pairs[method][seed]`` its pairs.csv (optional). One row per metric present for every
    method: mean value per method, expected order, ``order_holds``, ``p_holm`` (largest Holm-
    corrected p of its relations; NaN when untested), ``stability``, ``valid``."""
    from statsmodels.stats.multitest import multipletests

    if direction is None:
        from ..leaderboard import higher_is_better as direction
    pairs = pairs or {}
    missing = [m for m in methods if m not in metrics or not metrics[m]]
    if missing:
        raise ValueError(f"meta-evaluation needs results of {list(methods)}; missing {missing}")
    seeds = sorted(set.intersection(*(set(metrics[m]) for m in methods)))
    names = sorted(set.intersection(*(set(k for s in seeds for k in metrics[m][s])
                                      for m in methods)))
    rows: list[dict[str, Any]] = []
    tests: list[tuple[int, str, float]] = []  # (row index, relation, raw p)
    for name in names:
        exp = expectation_for(name)
        hib = direction(name)
        per_seed = pd.DataFrame({m: [metrics[m][s].get(name, np.nan) for s in seeds]
                                 for m in methods}, index=seeds, dtype=float)
        mean = per_seed.mean()
        row: dict[str, Any] = {"metric": name, "higher_is_better": "" if hib is None else hib,
                               **{m: float(mean[m]) for m in methods},
                               "expected": "; ".join(f"{a} > {b}" for a, b in exp.relations),
                               "why": exp.why, "n_seeds": len(seeds)}
        if not exp.relations or hib is None or mean.isna().any():
            row.update(order_holds="", holds_every_seed="", test="", n_pairs=0,
                       p_holm=np.nan, p_holm_by_relation="", stability=np.nan, valid="")
            if exp.relations and hib is None:
                row["why"] += " (metric has no known direction: not checked)"
            rows.append(row)
            continue
        sign = 1.0 if hib else -1.0
        holds = all(sign * (mean[a] - mean[b]) > 0 for a, b in exp.relations)
        every = all(bool((sign * (per_seed[a] - per_seed[b]) > 0).all()) for a, b in exp.relations)
        row.update(order_holds=holds, holds_every_seed=every,
                   stability=_stability(per_seed * sign, hib))
        col = None
        frames = {}
        if all(m in pairs and all(s in pairs[m] for s in seeds) for m in methods):
            col = pair_column(name, pairs[methods[0]][seeds[0]].columns)
        if col is not None and all(col in pairs[m][s] for m in methods for s in seeds):
            for m in methods:
                frames[m] = pd.concat([pairs[m][s].assign(_seed=s) for s in seeds],
                                      ignore_index=True).set_index(
                    ["_seed", "id", "class_index"])[col]
            joined = pd.DataFrame(frames)
            n_used = []
            for a, b in exp.relations:  # pairs where both methods have a value
                both = joined[[a, b]].dropna()
                n_used.append(len(both))
                tests.append((len(rows), f"{a}>{b}", _stratified_p(both, a, b, hib)))
            row.update(test="wilcoxon one-sided per seed, Stouffer-combined",
                       n_pairs=min(n_used))
        else:
            row.update(test="no per-pair values: must hold in every seed", n_pairs=0)
        row["p_holm"] = np.nan
        row["p_holm_by_relation"] = ""
        rows.append(row)
    if tests:
        reject = multipletests([p for _, _, p in tests], alpha=alpha, method="holm")
        for (i, rel, _), p in zip(tests, reject[1]):
            prev = rows[i]["p_holm"]
            rows[i]["p_holm"] = float(p) if np.isnan(prev) else max(prev, float(p))
            sep = "; " if rows[i]["p_holm_by_relation"] else ""
            rows[i]["p_holm_by_relation"] += f"{sep}{rel}: {float(p):.3g}"
    for row in rows:
        if row["order_holds"] == "":
            continue
        if row["n_pairs"]:
            row["valid"] = bool(row["order_holds"] and row["p_holm"] < alpha)
        else:
            row["valid"] = bool(row["order_holds"] and row["holds_every_seed"])
    cols = ["metric", "higher_is_better", *methods, "expected", "order_holds",
            "holds_every_seed", "test", "n_pairs", "p_holm", "p_holm_by_relation", "stability",
            "n_seeds", "valid", "why"]
    return pd.DataFrame(rows, columns=cols)


def load_cells(out: str | Path, task: str, methods: Sequence[str] = REFERENCE_METHODS,
               seeds: Sequence[int] | None = None) -> tuple[dict, dict]:
    """metrics and pairs of the finished cells of ``methods`` on ``task`` under ``out``
    (the newest cell per (method, seed))."""
    import json

    from ..results import find_cells

    metrics: dict[str, dict[int, dict]] = {}
    pairs: dict[str, dict[int, pd.DataFrame]] = {}
    for m in methods:
        metrics[m], pairs[m] = {}, {}
        cells = sorted(find_cells(out, task, m), key=lambda p: (p / "done.json").stat().st_mtime)
        for cell in cells:
            cfg = json.loads((cell / "config.json").read_text())
            seed = int(cfg["seed"])
            if seeds is not None and seed not in seeds:
                continue
            metrics[m][seed] = json.loads((cell / "metrics.json").read_text())
            if (cell / "pairs.csv").is_file():
                pairs[m][seed] = pd.read_csv(cell / "pairs.csv")
    return metrics, pairs


def validity(table: pd.DataFrame) -> dict[str, bool]:
    """metric -> valid, for the metrics that have an expectation."""
    t = table[table["valid"].astype(str).isin(["True", "False"])]
    return {str(m): str(v) == "True" for m, v in zip(t["metric"], t["valid"])}


def apply_validity(wide: pd.DataFrame, valid: Mapping[str, bool]) -> pd.DataFrame:
    """Add ``<metric>:valid`` columns (True / False from the meta table, empty when the metric
    was not meta-evaluated) next to each ``<metric>:mean`` of a leaderboard summary."""
    out = wide.copy()
    for col in list(wide.columns):
        if col.endswith(":mean"):
            metric = col[: -len(":mean")]
            out[f"{metric}:valid"] = valid.get(metric, "")
    return out


def format_table(table: pd.DataFrame, methods: Sequence[str] = REFERENCE_METHODS) -> str:
    """The printed table: metric, the methods' values, expected order, holds, p_holm,
    stability, valid (metrics without expectation left out)."""
    t = table[table["valid"].astype(str) != ""]
    show = t[["metric", *methods, "order_holds", "p_holm", "stability", "valid"]]
    with pd.option_context("display.max_rows", 1000, "display.width", 160,
                           "display.max_colwidth", 48):
        return show.to_string(index=False, float_format=lambda v: f"{v:.3g}")
