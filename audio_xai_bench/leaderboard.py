"""Long-format leaderboard (DESIGN.md "Files"): collect finished cells, summarise, publish.

``collect`` turns every finished cell ``runs/<task>/<method>/<fold>-<seed>-<hash>/`` into rows
of the long format, one row per value::

    task, method, variant, fold, seed, metric, value, n, higher_is_better, suite_version,
    git_commit, run_id, date

``summary`` derives the wide table (mean ± std over cells and a rank per metric, rank 1 = best
given ``higher_is_better``); ``publish`` merges rows into ``leaderboard/<task>.csv`` and
rewrites ``leaderboard/<task>_summary.csv``, under an exclusive ``fcntl.flock`` lock and with
atomic ``os.replace`` writes, so concurrent publishers never lose each other's rows and a reader
never sees a half-written file. ``aggregate`` is the per-invocation mean / std / n over the
cells of one ``run`` (``runs/<task>/<method>/aggregate.csv``).

Direction of metrics (``higher_is_better``): looked up in the ``METRIC_INFO`` dicts of
``metrics/fidelity.py``, ``faithfulness.py`` and ``groundtruth.py`` through the aliases below,
then by prefix rules:

- ``classifier/``, ``classification/``, ``official/``, ``fidelity/``: higher is better
  (accuracies, AUPRC, F1).
- ``faithfulness/ff_*`` and ``classwise/ff_*``: higher is better (paper eq. 7).
- ``faithfulness/random_ff_*`` (and the class-wise one): marked **lower is better**. It is the
  random baseline of the explainer, not a score of its own: a low baseline FF next to a high
  FF is what a faithful explainer shows (``METRIC_INFO['ff_random_median']``). Its rank is
  reported for completeness and should not be read as a ranking of methods.
- ``faithfulness/wilcoxon_p``: lower is better (stronger evidence that FF > random).
- counts (``n_test``, ``faithfulness/n_pairs``, ``n_selected_mean``, ``random_n_mean``) and
  ``groundtruth/energy_precision_input_mean`` (a property of the input clips): not applicable,
  left empty (no rank).
- ``groundtruth/si_sdri_*``, ``groundtruth/energy_precision_*``, ``rank_accuracy_*``,
  ``time_auc_*``: higher is better; ``groundtruth/distractor*_share_*``: lower is better.
- ``lmac/*`` and ``sanity/*``: from the ``METRIC_INFO`` of ``metrics/lmac.py`` and
  ``metrics/sanity.py`` (AD, COMP and the Spearman values lower is better; counts none).
- ``resources/*`` (wall / fit / eval seconds, peak RSS from ``done.json``): lower is better.
- ``faithfulness/deletion*``: lower is better; ``faithfulness/insertion*``: higher is better;
  ``energy_*`` and ``random_mass_*`` baselines: lower (like ``random_ff``); removed-mass shares
  and unmatched counts: no direction.

Ranks (``summary``): only metrics that compare methods fairly are ranked (:func:`rankable`):
FF at a fixed tau, its baselines and p-values are **not** ranked (a method that marks more of
the input removes more and scores more); faithfulness is ranked on the budget-matched
deletion / insertion values only.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd

from . import __version__
from .results import find_cells, umask_mode

__all__ = ["COLUMNS", "higher_is_better", "rankable", "collect", "cell_rows", "summary", "format_summary",
           "publish", "aggregate", "write_aggregate", "MAIN_METRICS", "main_metrics"]

#: Columns of the long-format CSV, in order.
COLUMNS: list[str] = ["task", "method", "variant", "fold", "seed", "metric", "value", "n",
                      "higher_is_better", "suite_version", "git_commit", "run_id", "date",
                      "metrics_digest", "mixed"]

#: Columns that say which code wrote a row; ``publish`` keeps them uniform per (task, method).
PROVENANCE: tuple[str, ...] = ("suite_version", "git_commit", "metrics_digest")


class ProvenanceMismatch(ValueError):
    """``publish`` refused rows written by other code than the rows of the same method."""

#: metrics.json stem (after the prefix, before ``@tau``) -> (module, METRIC_INFO key)
_ALIASES: dict[str, tuple[str, str]] = {
    "top1": ("fidelity", "top1"), "top5": ("fidelity", "top5"),
    "accuracy_top1": ("fidelity", "top1"), "accuracy_top5": ("fidelity", "top5"),
    "macro_auprc": ("fidelity", "ap_macro"), "micro_auprc": ("fidelity", "ap_micro"),
    "macro_auprc_11pt": ("fidelity", "auprc11_macro"),
    "micro_auprc_11pt": ("fidelity", "auprc11_micro"),
    "max_f1": ("fidelity", "max_f1"), "weighted_f1": ("fidelity", "weighted_f1"),
    "ff_median": ("faithfulness", "ff_median"), "ff_mean": ("faithfulness", "ff_mean"),
    "random_ff_median": ("faithfulness", "ff_random_median"),
    "random_ff_mean": ("faithfulness", "ff_random_median"),
    "wilcoxon_p": ("faithfulness", "ff_vs_random_p"),
    "si_sdri_median": ("groundtruth", "si_sdri"), "si_sdr_median": ("groundtruth", "si_sdr"),
    "energy_precision_mean": ("groundtruth", "mask_precision"),
    "energy_recall_mean": ("groundtruth", "mask_recall"),
    "mask_precision_mean": ("groundtruth", "mask_precision"),
    "rank_accuracy_mean": ("groundtruth", "rank_accuracy"),
    "time_auc_mean": ("groundtruth", "time_auc"),
    "distractor_share_mean": ("groundtruth", "distractor_share"),
    "distractor_energy_share_mean": ("groundtruth", "distractor_share"),
}
_NOT_APPLICABLE = {"n_test", "n_pairs", "n_selected_mean", "random_n_mean",
                   "energy_precision_input_mean", "mask_precision_input_mean",
                   "distractor_share_input_mean"}
_HIGHER_GROUPS = {"classifier", "classification", "official", "fidelity"}

#: Metrics shown by ``audio-xai-bench leaderboard`` (those present are printed).
MAIN_METRICS: list[str] = [
    "official/accuracy_top1", "official/macro_auprc", "official/micro_auprc",
    "official/weighted_f1", "fidelity/top1", "fidelity/macro_auprc",
    "faithfulness/deletion_auc", "faithfulness/deletion_auc_randorder",
    "faithfulness/insertion_auc", "faithfulness/insertion_auc_randorder",
    "faithfulness/ff_median@0.1", "faithfulness/random_ff_median@0.1",
    "faithfulness/energy_ff_median@0.1", "faithfulness/ff_median@0.5",
    "groundtruth/si_sdri_median@0.1",
    "groundtruth/energy_precision_mean@0.1", "resources/fit_s",
]


def _metric_info() -> dict[str, Mapping[str, Any]]:
    from .metrics import faithfulness, fidelity, groundtruth, lmac, sanity

    return {"fidelity": fidelity.METRIC_INFO, "faithfulness": faithfulness.METRIC_INFO,
            "groundtruth": groundtruth.METRIC_INFO, "lmac": lmac.METRIC_INFO,
            "sanity": sanity.METRIC_INFO}


def _stem(name: str) -> tuple[str, str]:
    """'faithfulness/ff_median@0.1' -> ('faithfulness', 'ff_median');
    'classwise/ff_median@0.1/dog' -> ('classwise', 'ff_median'); 'n_test' -> ('', 'n_test')."""
    base = name.split("@", 1)[0]
    if "/" not in base:
        return "", base
    group, rest = base.split("/", 1)
    return group, rest.split("/", 1)[0]


#: Faithfulness stems that compare methods at equal budget (the only ones ranked, issue 10).
_BUDGET_MATCHED = ("deletion_auc", "insertion_auc", "deletion", "insertion")


def rankable(name: str) -> bool:
    """May ``summary`` rank methods on this metric? Not FF at a fixed tau (``ff_*``, its
    baselines and p-values, class-wise FF): |L| differs tenfold between methods there, and a
    method that marks more scores more (issue 10). Faithfulness is ranked only on the
    budget-matched curve values (``deletion_auc``, ``insertion_auc``, ``deletion@b``,
    ``insertion@b``); other groups as their direction says."""
    group, stem = _stem(name)
    if group == "classwise":
        return False
    if group == "faithfulness":
        return stem in _BUDGET_MATCHED
    return higher_is_better(name) is not None


def higher_is_better(name: str) -> bool | None:
    """Direction of a metric name of ``metrics.json`` (see module docstring); None = not
    applicable (counts, properties of the input)."""
    group, stem = _stem(name)
    if stem in _NOT_APPLICABLE or stem.startswith("n_"):
        return None
    if group == "resources":
        return False
    if group == "faithfulness":
        if "share" in stem or stem.endswith("n_unmatched") or stem.endswith("n_pairs"):
            return None  # how much a method / baseline removes, pairs counted: no direction
        if stem.endswith("_p"):
            return False
        if stem.startswith("deletion"):
            return False  # class probability left after deleting: lower = better order
        if stem.startswith("insertion"):
            return True
        if stem.startswith("energy") or stem.startswith("random_mass"):
            return False  # baselines (like random_ff): reported, not a score of the method
    if stem in _ALIASES:
        module, key = _ALIASES[stem]
        info = _metric_info()[module].get(key)
        if info is not None and group not in _HIGHER_GROUPS:
            return bool(info.higher_is_better)
    if group in ("lmac", "sanity"):  # their own METRIC_INFO, '_soft' variants alike
        info = _metric_info()[group].get(stem.removesuffix("_soft"))
        return None if info is None else bool(info.higher_is_better)
    if group in _HIGHER_GROUPS:
        return True
    if stem.endswith("_p") or stem == "p":
        return False
    if "random_ff" in stem:
        return False
    if group in ("faithfulness", "classwise", "groundtruth"):
        return True
    return None


# ---------------------------------------------------------------------------------------------
# collect
# ---------------------------------------------------------------------------------------------
def _default_method_config(method: str, task_name: str, profile: str) -> dict[str, Any] | None:
    """The method's resolved settings without ``--set`` overrides, or None if unavailable."""
    from .registry import METHODS, TASKS

    try:
        cls = METHODS.get(method)
    except Exception:
        return None
    task = None
    try:
        task = TASKS.get(task_name)(data_root=None, profile=profile, seed=0)
    except Exception:
        task = None  # e.g. a real dataset without its data root: class defaults only
    try:
        return cls.resolve_config(task, profile, {})
    except Exception:
        return None


def _fmt(v: Any) -> str:
    if isinstance(v, float) and v.is_integer():
        return str(int(v)) if abs(v) < 1e15 else str(v)
    if isinstance(v, (list, tuple)):
        return "+".join(str(x) for x in v)
    return str(v)


def variant_of(config: Mapping[str, Any], defaults_cache: dict | None = None) -> str:
    """Short name of a cell's settings: ``''`` for the method's defaults on the task's default
    profile; otherwise ``profile=small`` and/or ``key=value`` for every method, classifier or
    eval setting that differs from its default (sorted, ``;``-separated)."""
    from .evaluate import EvalConfig

    parts: list[str] = []
    profile = config.get("profile", "default") or "default"
    if profile != "default":
        parts.append(f"profile={profile}")
    task_name = (config.get("task") or {}).get("name", "")
    key = (config.get("method", ""), task_name, profile)
    cache = defaults_cache if defaults_cache is not None else {}
    if key not in cache:
        cache[key] = _default_method_config(*key)
    defaults = cache[key]
    if defaults is not None:
        for k, v in sorted((config.get("method_config") or {}).items()):
            if k not in defaults or _jsonable(defaults[k]) != _jsonable(v):
                parts.append(f"{k}={_fmt(v)}")
    ev = config.get("eval_config") or {}
    ev_def = EvalConfig().as_dict()
    for k, v in sorted(ev.items()):
        if k == "seed" or k not in ev_def:
            continue
        if _jsonable(ev_def[k]) != _jsonable(v):
            parts.append(f"eval.{k}={_fmt(v)}")
    if config.get("classifier_weights"):
        parts.append(f"classifier_weights={Path(str(config['classifier_weights'])).name}")
    clf = config.get("classifier_spec")  # a non-default model explained (``run --classifier``)
    ident = (config.get("classifier_identity") or {})
    if isinstance(clf, Mapping):
        name = clf.get("name") or Path(str(clf.get("checkpoint", ""))).name
        digest = ident.get("weights") or clf.get("sha256")
        parts.append(f"classifier={name}" + (f"@{digest}" if digest else ""))
    return ";".join(parts)


def _jsonable(v: Any) -> Any:
    return json.loads(json.dumps(v, default=str))


def _count_n(name: str, metrics: Mapping[str, float], class_counts: Mapping[str, int]) -> float:
    group, _ = _stem(name)
    n_test = metrics.get("n_test", np.nan)
    n_pairs = metrics.get("faithfulness/n_pairs", np.nan)
    if group == "classwise":  # classwise/<metric>@<tau>/<class>
        tail = name.split("@", 1)[1] if "@" in name else ""
        cls = tail.split("/", 1)[1] if "/" in tail else ""
        return float(class_counts.get(cls, np.nan))
    if group in ("faithfulness", "groundtruth"):
        return float(n_pairs)
    if group == "resources":
        return 1.0
    return float(n_test)


def cell_rows(path: str | os.PathLike, defaults_cache: dict | None = None) -> pd.DataFrame:
    """Long-format rows of one finished cell (``results.read_cell`` plus ``pairs.csv`` for the
    class counts behind the class-wise values, plus ``done.json`` resources)."""
    from .results import read_cell

    path = Path(path)
    rec = read_cell(path)
    cfg, metrics, done = rec["config"], dict(rec["metrics"]), rec["done"]
    for k in ("wall_s", "fit_s", "eval_s", "peak_rss_mb"):
        v = done.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            metrics[f"resources/{k}"] = float(v)
    class_counts: dict[str, int] = {}
    if any(k.startswith("classwise/") for k in metrics) and (path / "pairs.csv").is_file():
        try:
            pairs = pd.read_csv(path / "pairs.csv", usecols=["class"])
            class_counts = pairs["class"].astype(str).value_counts().to_dict()
        except (ValueError, pd.errors.EmptyDataError):
            class_counts = {}
    versions = cfg.get("versions") or {}
    task = (cfg.get("task") or {}).get("name") or path.parent.parent.name
    base = {"task": task, "method": cfg.get("method") or path.parent.name,
            "variant": variant_of(cfg, defaults_cache), "fold": str(cfg.get("fold", "")),
            "seed": int(cfg.get("seed", 0)),
            "suite_version": versions.get("audio_xai_bench", __version__),
            "git_commit": versions.get("git_commit", "unknown"), "run_id": path.name,
            "date": done.get("date", ""), "metrics_digest": versions.get("metrics_digest", ""),
            "mixed": ""}
    rows = []
    for name in sorted(metrics):
        value = metrics[name]
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        hib = higher_is_better(name)
        rows.append({**base, "metric": name, "value": value,
                     "n": _count_n(name, metrics, class_counts),
                     "higher_is_better": "" if hib is None else bool(hib)})
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["n"] = pd.to_numeric(df["n"], errors="coerce").round().astype("Int64")
    return df


def collect(out: str | os.PathLike = "runs", task: str | None = None,
            method: str | None = None) -> pd.DataFrame:
    """Long-format rows (``COLUMNS``) of every finished cell below ``out`` (one task / method
    if given). Unfinished cells (no ``done.json``) are never read."""
    cache: dict = {}
    frames = [cell_rows(p, cache) for p in find_cells(out, task, method)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)[COLUMNS]


# ---------------------------------------------------------------------------------------------
# summary
# ---------------------------------------------------------------------------------------------
def _hib_value(v: Any) -> bool | None:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, str):
        s = v.strip().lower()
        return True if s == "true" else False if s == "false" else None
    if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
        return bool(v)
    return None


def summary(long_df: pd.DataFrame, metrics: Iterable[str] | None = None,
            include_classwise: bool = False) -> pd.DataFrame:
    """Wide table, one row per (task, method, variant): ``n_cells`` (distinct run ids) and for
    each metric the columns ``<metric>:mean``, ``<metric>:std`` (sample std over cells, ddof=1;
    0 for one cell) and ``<metric>:rank`` (1 = best among the rows of the same task given
    ``higher_is_better``; ties share the best rank; empty when the direction is not
    applicable, and for ``classifier/*``, which is the shared f's score, not the method's).
    Class-wise values and the per-class decision thresholds (``threshold/*``) are left out
    unless ``include_classwise``. ``mixed`` (when the rows carry it) is True for a row whose
    cells were published from several code versions (``publish(on_mismatch='mark')``)."""
    keys = ["task", "method", "variant"]
    df = long_df.copy()
    if not include_classwise:  # class-wise values and the per-class decision thresholds
        df = df[~df["metric"].astype(str).str.startswith(("classwise/", "threshold/"))]
    if metrics is not None:
        df = df[df["metric"].isin(list(metrics))]
    if df.empty:
        return pd.DataFrame(columns=keys + ["n_cells"])
    df["variant"] = df["variant"].fillna("").astype(str)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    n_cells = df.groupby(keys)["run_id"].nunique().rename("n_cells")
    if "mixed" in df:  # rows published with on_mismatch='mark' (several code versions)
        n_cells = n_cells.to_frame().join(
            df.assign(mixed=df["mixed"].astype(str).str.lower() == "true")
            .groupby(keys)["mixed"].any())
    g = df.groupby(keys + ["metric"])["value"]
    stats = pd.DataFrame({"mean": g.mean(), "std": g.std(ddof=1)}).reset_index()
    stats["std"] = stats["std"].fillna(0.0).where(stats["mean"].notna())
    direction = df.groupby("metric")["higher_is_better"].first().map(_hib_value)
    stats["rank"] = np.nan
    for (task, metric), idx in stats.groupby(["task", "metric"]).groups.items():
        hib = direction.get(metric)
        if hib is None or _stem(metric)[0] == "classifier" or not rankable(str(metric)):
            continue  # classifier/* is f's score (same f for every method); FF at fixed tau
        stats.loc[idx, "rank"] = stats.loc[idx, "mean"].rank(ascending=not hib, method="min")
    order = list(dict.fromkeys(sorted(stats["metric"].unique(), key=_metric_sort_key)))
    wide = stats.set_index(keys + ["metric"])[["mean", "std", "rank"]].unstack("metric")
    cols = {}
    for m in order:
        for stat in ("mean", "std", "rank"):
            cols[f"{m}:{stat}"] = wide[(stat, m)] if (stat, m) in wide.columns else np.nan
    out = pd.DataFrame(cols, index=wide.index)
    out = out.join(n_cells).reset_index()
    extra = ["n_cells"] + (["mixed"] if "mixed" in out else [])
    return out[keys + extra + list(cols)].sort_values(keys, ignore_index=True)


def _metric_sort_key(name: str) -> tuple:
    groups = ["official", "classification", "classifier", "fidelity", "faithfulness",
              "groundtruth", "classwise", "resources", ""]
    group, _ = _stem(name)
    return (groups.index(group) if group in groups else len(groups), name)


def main_metrics(columns: Iterable[str]) -> list[str]:
    """The ``MAIN_METRICS`` present among the ``<metric>:mean`` columns of a summary."""
    have = {c.rsplit(":", 1)[0] for c in columns if c.endswith(":mean")}
    return [m for m in MAIN_METRICS if m in have]


def format_summary(wide: pd.DataFrame, metrics: Iterable[str] | None = None,
                   digits: int = 3) -> pd.DataFrame:
    """Printable table: ``mean ± std (#rank)`` strings for ``metrics`` (default: the main ones
    present), one row per (task, method, variant)."""
    metrics = list(metrics) if metrics is not None else main_metrics(wide.columns)
    out = wide[["task", "method", "variant", "n_cells"]].copy()
    for m in metrics:
        if f"{m}:mean" not in wide:
            continue
        mean, std, rank = wide[f"{m}:mean"], wide[f"{m}:std"], wide[f"{m}:rank"]
        out[m] = [("" if pd.isna(a) else f"{a:.{digits}f} ± {0.0 if pd.isna(s) else s:.{digits}f}"
                   + ("" if pd.isna(r) else f" (#{int(r)})")) for a, s, r in zip(mean, std, rank)]
    return out


# ---------------------------------------------------------------------------------------------
# publish
# ---------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask_mode(tmp)
    try:
        with os.fdopen(fd, "w", newline="") as fh:
            df.to_csv(fh, index=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; published files are meant to be read
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_long(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame(columns=COLUMNS)
    df = pd.read_csv(path, dtype={"variant": str, "fold": str, "run_id": str, "git_commit": str,
                                  "suite_version": str, "date": str, "metrics_digest": str,
                                  "mixed": str},
                     keep_default_na=False, na_values={"value": [""], "n": [""]})
    for c in COLUMNS:
        if c not in df:
            df[c] = ""
    return df[COLUMNS]


def _normalise(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in ("variant", "fold", "run_id", "git_commit", "suite_version", "date", "task",
              "method", "metric", "metrics_digest", "mixed"):
        df[c] = df[c].fillna("").astype(str)
    df["higher_is_better"] = df["higher_is_better"].map(_hib_value).map(
        lambda v: "" if v is None else str(bool(v)))
    df["seed"] = pd.to_numeric(df["seed"], errors="coerce").astype("Int64")
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["n"] = pd.to_numeric(df["n"], errors="coerce").round().astype("Int64")
    return df


def _provenance(df: pd.DataFrame) -> set[tuple[str, ...]]:
    return set(map(tuple, df[list(PROVENANCE)].astype(str).to_numpy().tolist()))


def _describe(prov: Iterable[tuple[str, ...]]) -> str:
    return "; ".join(", ".join(f"{k}={v or '?'}" for k, v in zip(PROVENANCE, p))
                     for p in sorted(prov))


def publish(long_df: pd.DataFrame, task: str, root: str | os.PathLike = "leaderboard",
            on_mismatch: str = "refuse") -> tuple[Path, Path]:
    """Merge ``long_df``'s rows of ``task`` into ``<root>/<task>.csv`` and rewrite
    ``<root>/<task>_summary.csv``.

    Rows already published for the same (method, run_id) are replaced (re-publishing a run
    never duplicates it); all other rows are kept. The read-merge-write happens under an
    exclusive ``fcntl.flock`` on ``<root>/.<task>.lock`` and each file is written to a
    temporary sibling and moved into place with ``os.replace``. Returns both paths.

    Provenance: every row of one method in the file must come from the same code, i.e. the
    same ``suite_version``, ``git_commit`` and ``metrics_digest`` (digest of the metric code,
    ``results.metrics_digest``). When the merged rows of a method published here would mix
    several, ``on_mismatch`` decides: ``"refuse"`` (default) raises
    :class:`ProvenanceMismatch` and writes nothing; ``"mark"`` writes them and sets
    ``mixed = True`` on every row of that method (the summary shows it); ``"replace"`` drops
    the method's older rows that differ from the new ones (the incoming rows must then agree
    among themselves).
    """
    if on_mismatch not in ("refuse", "mark", "replace"):
        raise ValueError(f"on_mismatch must be 'refuse', 'mark' or 'replace', not {on_mismatch!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path, spath = root / f"{task}.csv", root / f"{task}_summary.csv"
    new = long_df[long_df["task"].astype(str) == task] if len(long_df) else long_df
    new = _normalise(new.reindex(columns=COLUMNS)) if len(new) else new
    with _locked(root / f".{task}.lock"):
        old = _read_long(path)
        if len(old):
            old = _normalise(old)
            if len(new):
                replaced = set(zip(new["method"], new["run_id"]))
                keep = [(m, r) not in replaced for m, r in zip(old["method"], old["run_id"])]
                old = old[keep].copy()
        old = old if len(old) else pd.DataFrame(columns=COLUMNS)
        conflicts = []
        for method in (sorted(new["method"].unique()) if len(new) else []):
            mine = new[new["method"] == method]
            prev = old[old["method"] == method]
            incoming, before = _provenance(mine), _provenance(prev) if len(prev) else set()
            if len(incoming | before) <= 1:
                continue
            if on_mismatch == "replace" and len(incoming) == 1:
                old = old[~((old["method"] == method)
                            & ~old[list(PROVENANCE)].astype(str).apply(tuple, axis=1)
                            .isin(incoming))]
            elif on_mismatch == "mark":
                new.loc[new["method"] == method, "mixed"] = "True"
                old.loc[old["method"] == method, "mixed"] = "True"
            else:
                conflicts.append(f"method {method!r}: new rows from {_describe(incoming)}"
                                 + (f"; already published from {_describe(before)}"
                                    if before else ""))
        if conflicts:
            raise ProvenanceMismatch(
                f"refusing to publish to {path}: rows of one method would come from different "
                "code (suite version / git commit / metric definitions):\n  "
                + "\n  ".join(conflicts) + "\nRe-run the cells with one commit, or publish with "
                "on_mismatch='replace' (drop the older rows) or 'mark' (flag them mixed).")
        parts = [d for d in (old, new) if len(d)]
        merged = (pd.concat(parts, ignore_index=True) if parts
                  else pd.DataFrame(columns=COLUMNS))
        merged = merged.drop_duplicates(["method", "run_id", "metric"], keep="last")
        merged = merged.sort_values(["method", "variant", "fold", "seed", "run_id", "metric"],
                                    ignore_index=True)[COLUMNS]
        _atomic_csv(merged, path)
        _atomic_csv(_with_meta(summary(merged), root, task), spath)
    return path, spath


def _with_meta(wide: pd.DataFrame, root: Path, task: str) -> pd.DataFrame:
    """``<metric>:valid`` columns from ``<root>/<task>_meta.csv`` (``audio-xai-bench meta
    --publish``), when it exists."""
    mpath = root / f"{task}_meta.csv"
    if not mpath.is_file():
        return wide
    from .metrics import meta

    return meta.apply_validity(wide, meta.validity(pd.read_csv(mpath)))


def publish_meta(table: pd.DataFrame, task: str, root: str | os.PathLike = "leaderboard"
                 ) -> list[Path]:
    """Write the meta table to ``<root>/<task>_meta.csv`` and, when the summary exists, rewrite
    ``<root>/<task>_summary.csv`` with its ``:valid`` columns (same lock as ``publish``)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    mpath, spath = root / f"{task}_meta.csv", root / f"{task}_summary.csv"
    with _locked(root / f".{task}.lock"):
        _atomic_csv(table, mpath)
        written = [mpath]
        long_path = root / f"{task}.csv"
        if long_path.is_file():
            old = _read_long(long_path)
            if len(old):
                _atomic_csv(_with_meta(summary(_normalise(old)), root, task), spath)
                written.append(spath)
    return written


# ---------------------------------------------------------------------------------------------
# aggregate (multi-run)
# ---------------------------------------------------------------------------------------------
def aggregate(records: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Mean, std (ddof=1; 0 for one cell) and n (cells with a finite value) of every metric over
    the cells of one ``run`` (``records`` as returned by ``runner.run``: ``read_cell`` dicts).
    Columns: metric, mean, std, n, higher_is_better, cells (the run ids, ``;``-joined)."""
    cols = ["metric", "mean", "std", "n", "higher_is_better", "cells"]
    if not records:
        return pd.DataFrame(columns=cols)
    table = pd.DataFrame([r["metrics"] for r in records]).apply(pd.to_numeric, errors="coerce")
    ids = ";".join(Path(str(r.get("path", ""))).name for r in records)
    rows = []
    for m in sorted(table.columns, key=_metric_sort_key):
        v = table[m].dropna()
        hib = higher_is_better(m)
        rows.append({"metric": m, "mean": float(v.mean()) if len(v) else np.nan,
                     "std": float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) else np.nan),
                     "n": int(len(v)), "higher_is_better": "" if hib is None else bool(hib),
                     "cells": ids})
    return pd.DataFrame(rows, columns=cols)


def write_aggregate(records: list[Mapping[str, Any]]) -> list[Path]:
    """Write one aggregate per method folder **and variant** of ``records``, atomically:
    ``runs/<task>/<method>/aggregate.csv`` for the method's default settings, and
    ``aggregate_<variant hash>.csv`` for any other variant (its ``variant`` column names it),
    so a later ``--profile small`` or ``--set`` run never overwrites the default's aggregate.
    Returns the written paths."""
    import hashlib

    by_key: dict[tuple[Path, str], list] = {}
    cache: dict = {}
    for r in records:
        p = Path(str(r.get("path", "")))
        if p.name:
            variant = variant_of(r.get("config") or {}, cache)
            by_key.setdefault((p.parent, variant), []).append(r)
    written = []
    for (folder, variant), recs in by_key.items():
        name = "aggregate.csv" if not variant else \
            f"aggregate_{hashlib.sha256(variant.encode()).hexdigest()[:8]}.csv"
        table = aggregate(recs)
        table.insert(0, "variant", variant)
        _atomic_csv(table, folder / name)
        written.append(folder / name)
    return written


#: The paper's result tables and the metrics that fill them (those present are shown).
PAPER_TABLES: dict[str, list[str]] = {
    "Classifier f (Table I; BASE-f of Table VIII), shown once": [
        "classifier/accuracy_top1", "classifier/accuracy_top5", "classifier/macro_auprc",
        "classifier/macro_auprc_dcase", "classifier/micro_auprc", "classifier/weighted_f1"],
    "Table IV: fidelity of post-hoc surrogates": [
        "fidelity/top1", "fidelity/top5", "fidelity/macro_auprc", "fidelity/micro_auprc",
        "fidelity/weighted_f1"],
    "Table VIII: classification of by-design models": [
        "official/accuracy_top1", "official/macro_auprc", "official/weighted_f1",
        "classification/accuracy_top1", "classification/accuracy_top5",
        "classification/macro_auprc", "classification/micro_auprc",
        "classification/weighted_f1"],
    "Table V / Figs. 2-3: faithfulness at tau = 0.1": [
        "faithfulness/ff_median@0.1", "faithfulness/random_ff_median@0.1",
        "faithfulness/wilcoxon_p@0.1", "faithfulness/n_selected_mean@0.1",
        "groundtruth/si_sdri_median@0.1", "groundtruth/mask_precision_mean@0.1",
        "groundtruth/mask_precision_input_mean"],
    "Resources (2 CPU cores unless stated)": ["resources/fit_s", "resources/wall_s"],
}


def paper_tables(wide: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Cut a ``summary`` table into the paper's tables: for each, the methods that report
    any of its metrics, with ``mean ± std`` cells (and ``n_cells``)."""
    out: dict[str, pd.DataFrame] = {}
    for title, metrics in PAPER_TABLES.items():
        present = [m for m in metrics if f"{m}:mean" in wide.columns]
        if not present:
            continue
        rows = wide[wide[[f"{m}:mean" for m in present]].notna().any(axis=1)]
        if rows.empty:
            continue
        table = rows[["method", "variant", "n_cells"]].copy()
        for m in present:
            mean, std = rows[f"{m}:mean"], rows[f"{m}:std"]
            table[m] = [("" if pd.isna(a) else f"{a:.3f} ± {b:.3f}") for a, b in zip(mean, std)]
        if all(m.startswith("classifier/") for m in present):
            # every method's cells carry the same f (cached per task, fold, seed): one row
            # per distinct value set, named by the methods that share it
            table = (table.groupby(present + ["n_cells"], sort=False)["method"]
                     .agg(lambda s: "f (" + ", ".join(sorted(s)) + ")" if len(s) < 4
                          else f"f (shared by {len(s)} methods)").reset_index())
            table.insert(1, "variant", "")
            table = table[["method", "variant", "n_cells"] + present]
        out[title] = table.reset_index(drop=True)
    return out
