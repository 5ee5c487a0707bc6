"""Pairwise significance tables between methods (DESIGN.md "Significance").

``compare(out, task, methods, metric)`` reads the finished cells of each method and, for every
pair of methods and every metric asked for, runs the test that fits the data
(``audio_xai_bench.metrics.stats``):

=====================================================  ==========================================
metric                                                 test
=====================================================  ==========================================
``faithfulness/ff_median@τ`` / ``ff_mean@τ``            Wilcoxon signed-rank on per-pair ``ff@τ``
                                                       within each cell, Stouffer across cells
``faithfulness/random_ff_*@τ``                          same on ``random_ff@τ``
``faithfulness/deletion_auc``, ``insertion_auc``,        same on the per-pair column of that name
``deletion@b``, ... (budget-matched curves)             (lower deletion / higher insertion wins)
``faithfulness/energy_ff_median@τ``, ``random_mass_*``   same on ``energy_ff@τ`` / ``random_mass_ff@τ``
``groundtruth/si_sdri_median@τ``, ``energy_precision_``  same on ``si_sdri@τ`` / ``energy_precision@τ``
``fidelity/top1|top5``                                  McNemar on per-clip ``fid_top1|fid_top5``
                                                       (per cell, Stouffer across cells)
``classification/accuracy_top1``, ``official/`` (mc)    McNemar on per-clip ``correct``
``classifier/accuracy_top1``                            McNemar on per-clip ``f_correct``
multilabel ``fidelity/*``, ``classification/*`` AUPRC   paired bootstrap over clips from
/ F1 (``official/`` too)                                ``per_sample.csv`` probabilities
anything else in ``metrics.json``                       paired t-test over matched (fold, seed)
                                                        cells, else Welch's t-test
=====================================================  ==========================================

Per-sample tests join the two methods' rows on (fold, seed, id[, class]) over the cells that
exist for both methods at the same (fold, seed): the same test clips, and for post-hoc methods
the same classifier f (it is cached per task, fold and seed). If no (fold, seed) is shared the
metric falls back to the cell-level test (Welch). When a method has several finished cells for
one (fold, seed) (different settings), the most recent one (``done.json`` date) is used.

Columns: metric, method_a, method_b, n, mean_a, mean_b, mean_diff, effect_size, test, p,
p_holm, winner, unit. ``mean_*`` are means of the paired per-sample scores (FF, correctness), the
set-level metric on the pooled clips (bootstrap) or the mean over cells (t-tests);
``mean_diff = mean_a - mean_b``. ``effect_size``: rank-biserial r (Wilcoxon), Cohen's g
(McNemar), the observed metric difference (bootstrap), Cohen's d_z (paired t) or d (Welch).
``p_holm``: Holm's correction over every row of the table (all pairs and all metrics).
``winner``: 'a' or 'b' when ``p_holm < alpha`` (0.05), the better one given
``higher_is_better`` (direction of the effect for Wilcoxon / McNemar, of ``mean_diff``
otherwise); '' when not significant or the metric has no direction.

Several cells (seeds, folds): per-pair and per-clip tests are never pooled across cells.
Each (fold, seed) cell is tested on its own (the same clips; for post-hoc methods the same
f) and the cells' signed z-scores are combined with Stouffer's method, every cell weighing
the same (``stats.stratified_paired_test``: the signed-rank z with tie correction, or
McNemar's z = (b - c) / sqrt(b + c)); ``test`` is then ``wilcoxon_stouffer`` /
``mcnemar_stouffer``, ``n`` the pairs / clips over all cells, ``effect_size`` the mean of
the cells' rank-biserial r / Cohen's g. A paired test on per-seed medians would treat the
seed as the unit, which is right, but with 3 seeds it can never reach p < 0.05; Stouffer
keeps each cell's clips as the evidence and assumes the cells independent (seeds that share
test clips are positively correlated, which makes p somewhat optimistic). One cell: McNemar's
exact / corrected test itself; Wilcoxon through its normal approximation (equal to
``scipy.stats.wilcoxon(method='approx', correction=False)``).

Approximations: multilabel bootstraps pool the clips of all matched cells into one set
(different seeds' f count as different rows); OpenMIC's label mask (``mask/<class>`` columns
of ``per_sample.csv``) is resampled with the rows, so unannotated labels count in no metric.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from .leaderboard import higher_is_better
from .metrics import stats
from .results import find_cells

__all__ = ["COLUMNS", "compare", "default_metrics", "load_method"]

COLUMNS = ["metric", "method_a", "method_b", "n", "mean_a", "mean_b", "mean_diff",
           "effect_size", "test", "p", "p_holm", "winner", "unit"]

_PAIR_COLS = {"ff_median": "ff", "ff_mean": "ff", "random_ff_median": "random_ff",
              "random_ff_mean": "random_ff", "si_sdri_median": "si_sdri",
              "energy_precision_mean": "energy_precision",
              "random_mass_ff_median": "random_mass_ff", "energy_ff_median": "energy_ff",
              "energy_mass_ff_median": "energy_mass_ff"}
#: budget-matched curve metrics: the per-pair column has the metric's own name
_CURVE_COLS = ("deletion", "insertion", "deletion_randorder", "insertion_randorder",
               "deletion_auc", "insertion_auc", "deletion_auc_randorder", "insertion_auc_randorder")


@dataclass
class _Cell:
    path: Path
    fold: str
    seed: int
    config: dict
    metrics: dict
    date: str
    _cache: dict = field(default_factory=dict)

    def table(self, name: str) -> pd.DataFrame | None:
        if name not in self._cache:
            p = self.path / name
            try:
                self._cache[name] = pd.read_csv(p, dtype={"id": str}) if p.is_file() else None
            except pd.errors.EmptyDataError:
                self._cache[name] = None
        return self._cache[name]


def load_method(out: str | os.PathLike, task: str, method: str) -> dict[tuple[str, int], _Cell]:
    """The finished cells of one method, keyed by (fold, seed) (latest cell per key)."""
    cells: dict[tuple[str, int], _Cell] = {}
    for path in find_cells(out, task, method):
        cfg = json.loads((path / "config.json").read_text())
        met = json.loads((path / "metrics.json").read_text())
        done = json.loads((path / "done.json").read_text())
        for k in ("wall_s", "fit_s", "eval_s", "peak_rss_mb"):  # as in the leaderboard
            if isinstance(done.get(k), (int, float)) and not isinstance(done.get(k), bool):
                met[f"resources/{k}"] = float(done[k])
        c = _Cell(path, str(cfg.get("fold", "")), int(cfg.get("seed", 0)), cfg, met,
                  str(done.get("date", "")))
        key = (c.fold, c.seed)
        if key not in cells or c.date >= cells[key].date:
            cells[key] = c
    return cells


def _kind(cells: dict) -> str:
    for c in cells.values():
        return (c.config.get("task") or {}).get("kind", "multiclass")
    return "multiclass"


def default_metrics(per_method: dict[str, dict]) -> list[str]:
    """The task's main metrics that at least two methods report: deletion / insertion AUC
    (budget-matched), FF median at τ = 0.1,
    fidelity top-1 (multiclass) or macro AUPRC (multilabel), the official metric."""
    have: dict[str, int] = {}
    for cells in per_method.values():
        names = set()
        for c in cells.values():
            names.update(c.metrics)
        for n in names:
            have[n] = have.get(n, 0) + 1
    want = ["faithfulness/deletion_auc", "faithfulness/insertion_auc",
            "faithfulness/ff_median@0.1", "fidelity/top1", "fidelity/macro_auprc"]
    want += sorted(n for n in have if n.startswith("official/"))
    return [m for m in want if have.get(m, 0) >= 2]


# ---------------------------------------------------------------------------------------------
# per-sample extraction
# ---------------------------------------------------------------------------------------------
def _tau_of(metric: str) -> str | None:
    m = re.search(r"@([0-9.]+)$", metric)
    return m.group(1) if m else None


def _pair_column(metric: str) -> str | None:
    if metric.startswith("ff@") or metric.startswith("random_ff@"):
        return metric
    group, _, rest = metric.partition("/")
    if group not in ("faithfulness", "groundtruth"):
        return None
    stem, tau = rest.split("@")[0], _tau_of(metric)
    if group == "faithfulness" and stem in _CURVE_COLS:
        return rest  # deletion_auc, deletion@0.1, ... are pairs.csv columns as they are
    if stem in _PAIR_COLS and tau is not None:
        return f"{_PAIR_COLS[stem]}@{tau}"
    return None


def _clip_column(metric: str, kind: str, cell: _Cell) -> str | None:
    if kind != "multiclass":
        return None
    group, _, stem = metric.partition("/")
    if group == "fidelity" and stem in ("top1", "top5"):
        return f"fid_{stem}"
    if stem != "accuracy_top1":
        return None
    if group == "classification":
        return "correct"
    if group == "classifier":
        return "f_correct"
    if group == "official":  # only a method's own predictor has official/* (never f's)
        return "correct"
    return None


def _official_source(task: str, stem: str) -> str:
    """The metric stem behind ``official/<stem>`` for a task (its ``official_source``)."""
    from .registry import TASKS

    try:
        return getattr(TASKS.get(task), "official_source", None) or stem
    except Exception:  # an unregistered task: the official metric is the plain one
        return stem


def _set_metric(metric: str, kind: str, task: str = "") -> tuple[str, str, Callable] | None:
    """(truth source, score prefix, metric function) of a multilabel set-level metric."""
    if kind == "multiclass":
        return None
    from .metrics import fidelity as fid

    group, _, stem = metric.partition("/")
    if group == "official":
        stem = _official_source(task, stem)
    fns: dict[str, Callable] = {
        "macro_auprc": lambda y, s, mask=None: fid.average_precision_macro_micro(y, s, mask)["macro"],
        "micro_auprc": lambda y, s, mask=None: fid.average_precision_macro_micro(y, s, mask)["micro"],
        "macro_auprc_11pt": lambda y, s, mask=None: fid.auprc_11pt(y, s, mask)["macro"],
        "micro_auprc_11pt": lambda y, s, mask=None: fid.auprc_11pt(y, s, mask)["micro"],
        "max_f1": lambda y, s, mask=None: fid.max_f1(y, s, mask),
        # DCASE 2020 evaluation (SONYC-UST; no label mask in that data set)
        "macro_auprc_dcase": lambda y, s, mask=None: fid.auprc_dcase(y, s)["macro"],
        "micro_auprc_dcase": lambda y, s, mask=None: fid.auprc_dcase(y, s)["micro"],
    }
    if group == "fidelity" and stem in fns:
        return "f", "surrogate_prob/", fns[stem]
    if group == "fidelity" and stem == "weighted_f1":
        return "f", "surrogate_prob/", "weighted_f1"  # type: ignore[return-value]
    if group in ("classification", "official") and stem in fns:
        return "labels", "prob/", fns[stem]
    if group in ("classification", "official") and stem == "weighted_f1":
        return "labels", "prob/", "weighted_f1"  # type: ignore[return-value]
    return None


def _joined(cells_a: dict, cells_b: dict, table: str, keys: list[str], column: str | None,
            prefix: str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Row-aligned frames of the two methods over shared (fold, seed) cells."""
    fa, fb = [], []
    for key in sorted(set(cells_a) & set(cells_b)):
        ta, tb = cells_a[key].table(table), cells_b[key].table(table)
        if ta is None or tb is None:
            continue
        if column is not None and (column not in ta or column not in tb):
            continue
        if prefix is not None:
            if not any(c.startswith(prefix) for c in ta) or not any(c.startswith(prefix) for c in tb):
                continue
        ta = ta.assign(_fold=key[0], _seed=key[1])
        tb = tb.assign(_fold=key[0], _seed=key[1])
        k = ["_fold", "_seed"] + keys
        m = ta.merge(tb, on=k, suffixes=("__a", "__b"))
        if not len(m):
            continue
        cols_a = {c: c[:-3] for c in m if c.endswith("__a")}
        cols_b = {c: c[:-3] for c in m if c.endswith("__b")}
        fa.append(m[k + list(cols_a)].rename(columns=cols_a))
        fb.append(m[k + list(cols_b)].rename(columns=cols_b))
    if not fa:
        return pd.DataFrame(), pd.DataFrame()
    return pd.concat(fa, ignore_index=True), pd.concat(fb, ignore_index=True)


def _strata(joined: pd.DataFrame, x: np.ndarray, y: np.ndarray
            ) -> list[tuple[np.ndarray, np.ndarray]]:
    """The paired values split by (fold, seed) cell, in cell order."""
    keys = joined["_fold"].astype(str) + "\x00" + joined["_seed"].astype(str)
    codes, _ = pd.factorize(keys, sort=True)
    return [(x[codes == i], y[codes == i]) for i in range(int(codes.max()) + 1)]


def _winner(p_holm: float, direction: float, hib: bool | None, alpha: float) -> str:
    if hib is None or not np.isfinite(p_holm) or p_holm >= alpha or direction == 0 \
            or not np.isfinite(direction):
        return ""
    a_better = (direction > 0) == bool(hib)
    return "a" if a_better else "b"


def _row(metric: str, a: str, b: str, **kw: Any) -> dict[str, Any]:
    base = {"metric": metric, "method_a": a, "method_b": b, "n": 0, "mean_a": np.nan,
            "mean_b": np.nan, "mean_diff": np.nan, "effect_size": np.nan, "test": "",
            "p": np.nan, "unit": "", "_direction": np.nan}
    base.update(kw)
    return base


def _compare_pair(metric: str, a: str, b: str, ca: dict, cb: dict, kind: str,
                  n_boot: int, seed: int) -> dict[str, Any]:
    # 1) per-pair continuous scores -> Wilcoxon
    col = _pair_column(metric)
    if col is not None:
        ja, jb = _joined(ca, cb, "pairs.csv", ["id", "class"], col)
        if len(ja):
            x, y = ja[col].to_numpy(float), jb[col].to_numpy(float)
            ok = ~(np.isnan(x) | np.isnan(y))
            if ok.any():
                r = stats.stratified_paired_test(_strata(ja[ok], x[ok], y[ok]), "wilcoxon")
                x, y = x[ok], y[ok]
                return _row(metric, a, b, n=int(x.size), mean_a=float(x.mean()),
                            mean_b=float(y.mean()), mean_diff=float((x - y).mean()),
                            effect_size=r["effect_size"], test="wilcoxon_stouffer", p=r["p"],
                            unit=f"pairs ({col}) in {r['k']} cells", _direction=r["z"])
    # 2) per-clip correctness -> McNemar
    any_cell = next(iter(ca.values()), None)
    ccol = _clip_column(metric, kind, any_cell) if any_cell is not None else None
    if ccol is not None:
        ja, jb = _joined(ca, cb, "per_sample.csv", ["id"], ccol)
        if len(ja):
            x, y = ja[ccol].to_numpy(float), jb[ccol].to_numpy(float)
            strata = _strata(ja, x > 0.5, y > 0.5)
            if len(strata) == 1:  # one cell: the exact / corrected McNemar test itself
                r = stats.mcnemar_paired(x > 0.5, y > 0.5)
                test, unit, direction = "mcnemar", f"clips ({ccol})", r["effect_size"]
            else:
                r = stats.stratified_paired_test(strata, "mcnemar")
                test, unit, direction = ("mcnemar_stouffer", f"clips ({ccol}) in {r['k']} cells",
                                         r["z"])
            return _row(metric, a, b, n=int(x.size), mean_a=float(x.mean()),
                        mean_b=float(y.mean()), mean_diff=float(x.mean() - y.mean()),
                        effect_size=r["effect_size"], test=test, p=r["p"],
                        unit=unit, _direction=direction)
    # 3) multilabel set-level metric -> paired bootstrap over clips
    task = str(((any_cell.config.get("task") or {}).get("name", "")) if any_cell else "")
    sm = _set_metric(metric, kind, task)
    if sm is not None:
        truth, prefix, fn = sm
        ja, jb = _joined(ca, cb, "per_sample.csv", ["id"], None, prefix)
        if len(ja):
            res = _bootstrap(ja, jb, truth, prefix, fn, ca, n_boot, seed)
            if res is not None:
                ma, mb, r, n = res
                return _row(metric, a, b, n=n, mean_a=ma, mean_b=mb, mean_diff=r["diff"],
                            effect_size=r["diff"], test="paired_bootstrap", p=r["p"],
                            unit=f"clips ({prefix}*)", _direction=r["diff"])
    # 4) cell-level metric -> paired t over matched cells, else Welch
    va = {k: c.metrics.get(metric, np.nan) for k, c in ca.items()}
    vb = {k: c.metrics.get(metric, np.nan) for k, c in cb.items()}
    va = {k: float(v) for k, v in va.items() if v is not None and np.isfinite(float(v))}
    vb = {k: float(v) for k, v in vb.items() if v is not None and np.isfinite(float(v))}
    if not va or not vb:
        return _row(metric, a, b, test="unavailable")
    shared = sorted(set(va) & set(vb))
    if len(shared) >= 2:
        x = np.array([va[k] for k in shared])
        y = np.array([vb[k] for k in shared])
        r = stats.paired_ttest(x, y)
        return _row(metric, a, b, n=len(shared), mean_a=float(x.mean()), mean_b=float(y.mean()),
                    mean_diff=float((x - y).mean()), effect_size=r["effect_size"],
                    test="paired_t", p=r["p"], unit="cells (fold, seed)",
                    _direction=float((x - y).mean()))
    x, y = np.array(list(va.values())), np.array(list(vb.values()))
    if x.size >= 2 and y.size >= 2:
        r = stats.welch_ttest(x, y)
        p, es = r["p"], r["effect_size"]
    else:
        p, es = np.nan, np.nan
    return _row(metric, a, b, n=int(x.size + y.size), mean_a=float(x.mean()),
                mean_b=float(y.mean()), mean_diff=float(x.mean() - y.mean()), effect_size=es,
                test="welch" if np.isfinite(p) else "too_few_cells", p=p, unit="cells",
                _direction=float(x.mean() - y.mean()))


def _bootstrap(ja: pd.DataFrame, jb: pd.DataFrame, truth: str, prefix: str, fn: Any,
               cells: dict, n_boot: int, seed: int):
    from .metrics import fidelity as fid

    classes = [c[len(prefix):] for c in ja if c.startswith(prefix)]
    classes = [c for c in classes if f"{prefix}{c}" in jb]
    if not classes:
        return None
    sa = ja[[f"{prefix}{c}" for c in classes]].to_numpy(float)
    sb = jb[[f"{prefix}{c}" for c in classes]].to_numpy(float)
    thr = _row_thresholds(ja, cells, classes, "f" if truth == "f" else "g")
    if truth == "f":
        # the task's excluded classes are left out of multilabel fidelity, as in the scorer
        cfg = next(iter(cells.values())).config if cells else {}
        excluded = set((cfg.get("task") or {}).get("classwise_exclude") or [])
        keep = [i for i, c in enumerate(classes) if c not in excluded]
        classes = [classes[i] for i in keep]
        sa, sb, thr = sa[:, keep], sb[:, keep], thr[:, keep]
        fcols = [f"f_prob/{c}" for c in classes]
        if not all(c in ja for c in fcols):
            return None
        y = ja[fcols].to_numpy(float) > thr
    else:
        labels = ja["labels"].fillna("").astype(str).str.split(";")
        y = np.array([[c in set(row) for c in classes] for row in labels], dtype=bool)
    # labels that were never annotated (OpenMIC) count in no metric
    mcols = [f"mask/{c}" for c in classes]
    mask = (ja[mcols].to_numpy(int) > 0) if truth != "f" and all(c in ja for c in mcols) else None
    if fn == "weighted_f1":
        def fn(yy, ss, mask=None):  # noqa: E306 - the binarised-at-threshold OpenMIC F1
            return fid.weighted_f1_openmic(yy, ss >= thr, mask)["mean"]
    extra = {} if mask is None else {"mask": mask}
    r = stats.paired_bootstrap(fn, y, sa, sb, n_boot=n_boot, seed=seed, **extra)
    return float(fn(y, sa, mask)), float(fn(y, sb, mask)), r, int(len(y))


def _thresholds(cell: _Cell, classes: list[str], who: str) -> np.ndarray:
    """The decision threshold of each class as the scorer used it in ``cell``:
    ``threshold/<who>/<class>`` of ``metrics.json`` (``who`` = 'f' or 'g'; per class, possibly
    fitted on that cell's training split), else the cell's ``eval.threshold``."""
    for w in (who, "f"):
        if all(f"threshold/{w}/{k}" in cell.metrics for k in classes):
            return np.array([float(cell.metrics[f"threshold/{w}/{k}"]) for k in classes])
    t = (cell.config.get("eval_config") or {}).get("threshold", 0.5)
    if isinstance(t, (list, tuple)) and len(t) == len(classes):
        return np.asarray(t, dtype=float)
    try:
        return np.full(len(classes), float(t))
    except (TypeError, ValueError):
        raise ValueError(f"cannot tell the per-class thresholds of {cell.path}: eval.threshold="
                         f"{t!r} and no threshold/{who}/* in metrics.json") from None


def _row_thresholds(joined: pd.DataFrame, cells: dict, classes: list[str], who: str
                    ) -> np.ndarray:
    """(N, C) thresholds of the joined rows, each from the cell the row comes from."""
    keys = list(zip(joined["_fold"].astype(str), joined["_seed"].astype(int)))
    per_cell = {k: _thresholds(cells[k], classes, who) for k in set(keys)}
    return np.stack([per_cell[k] for k in keys]) if keys else np.empty((0, len(classes)))


def compare(out: str | os.PathLike, task: str, methods: Sequence[str],
            metric: str | Iterable[str] | None = None, alpha: float = 0.05,
            n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Pairwise comparison table of ``methods`` on ``task`` (see the module docstring).

    ``metric``: one name, several, or None for :func:`default_metrics`. Raises ``ValueError``
    if fewer than two methods are given or a method has no finished cell."""
    methods = list(dict.fromkeys(methods))
    if len(methods) < 2:
        raise ValueError("compare needs at least two methods")
    per_method = {}
    for m in methods:
        cells = load_method(out, task, m)
        if not cells:
            raise ValueError(f"no finished cell for method {m!r} on task {task!r} under {out}")
        per_method[m] = cells
    if metric is None:
        metrics = default_metrics(per_method)
    elif isinstance(metric, str):
        metrics = [s.strip() for s in metric.split(",") if s.strip()]
    else:
        metrics = list(metric)
    kind = _kind(per_method[methods[0]])
    rows = []
    for met in metrics:
        for a, b in combinations(methods, 2):
            rows.append(_compare_pair(met, a, b, per_method[a], per_method[b], kind,
                                      n_boot, seed))
    df = pd.DataFrame(rows, columns=COLUMNS + ["_direction"]) if rows else \
        pd.DataFrame(columns=COLUMNS + ["_direction"])
    df["p_holm"] = stats.holm(df["p"].to_numpy(float)) if len(df) else []
    df["winner"] = [_winner(ph, d, higher_is_better(m), alpha)
                    for ph, d, m in zip(df["p_holm"], df["_direction"], df["metric"])]
    return df[COLUMNS].reset_index(drop=True)
