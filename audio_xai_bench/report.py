"""Plots and an HTML page next to a run cell (``<cell>/plots/``).

- ``classwise_ff.png``: class-wise FF medians of the method against its random baseline at
  τ = 0.1, one pair of bars per class (paper Figs. 2-3), from ``pairs.csv``.
- ``ff_vs_tau.png``: FF_median against τ with the random baseline (paper Table V as a plot).
- ``tsne_relevance.png``: t-SNE (``sklearn.manifold.TSNE``) of the pairs' relevance vectors
  (``relevance.npy``) coloured by explained class; perplexity min(30, (n - 1) / 3), at least 1;
  exact gradients up to n = 1000 rows, Barnes-Hut above.
- ``history.png``: training curves of the method (``history.csv``) and of the classifier f
  (``classifier_history.csv``): every logged loss term and the validation score per epoch.
- ``index.html``: the plots, the cell's metrics and audio players for ``interpretations/*.wav``.

Matplotlib runs with the Agg backend (no display needed). A plot whose input is missing (e.g.
no pairs for a method without the explain capability) is skipped.
"""
from __future__ import annotations

import html
import json
import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

__all__ = ["report_cell", "report_cells", "plot_classwise", "plot_ff_vs_tau", "plot_tsne",
           "plot_history"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _taus(pairs: pd.DataFrame) -> list[float]:
    out = []
    for c in pairs.columns:
        m = re.fullmatch(r"ff@([0-9.]+)", str(c))
        if m:
            out.append(float(m.group(1)))
    return sorted(set(out))


def _col(pairs: pd.DataFrame, prefix: str, tau: float) -> str | None:
    for c in pairs.columns:
        m = re.fullmatch(re.escape(prefix) + r"@([0-9.]+)", str(c))
        if m and abs(float(m.group(1)) - tau) < 1e-9:
            return str(c)
    return None


def plot_classwise(pairs: pd.DataFrame, path: Path, tau: float = 0.1, title: str = "") -> bool:
    """Bars of the per-class FF median and random-baseline FF median at ``tau``."""
    ff, rnd = _col(pairs, "ff", tau), _col(pairs, "random_ff", tau)
    if ff is None or not len(pairs):
        return False
    plt = _plt()
    g = pairs.groupby(pairs["class"].astype(str))
    med = g[ff].median()
    classes = list(med.index)
    x = np.arange(len(classes))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(classes) + 2), 3.6))
    w = 0.4 if rnd is not None else 0.8
    ax.bar(x - (w / 2 if rnd else 0), med.to_numpy(), w, label="method", color="tab:blue")
    if rnd is not None:
        ax.bar(x + w / 2, g[rnd].median().reindex(classes).to_numpy(), w,
               label="random baseline", color="tab:gray")
    ax.axhline(0, color="black", lw=0.6)
    counts = g.size().reindex(classes).to_numpy()
    ax.set_xticks(x)
    ax.set_xticklabels([f"{c} (n={n})" for c, n in zip(classes, counts)], rotation=45,
                       ha="right", fontsize=8)
    ax.set_ylabel(f"median FF (τ = {tau:g})")
    ax.set_title(title or f"class-wise faithfulness, τ = {tau:g}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_ff_vs_tau(pairs: pd.DataFrame, path: Path, title: str = "") -> bool:
    """FF_median (and the random baseline's) against τ; |L| on a second axis."""
    taus = _taus(pairs)
    if not taus or not len(pairs):
        return False
    plt = _plt()
    ff = [float(pairs[_col(pairs, "ff", t)].median()) for t in taus]
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    ax.plot(taus, ff, "o-", color="tab:blue", label="FF median")
    rc = [_col(pairs, "random_ff", t) for t in taus]
    if all(c is not None for c in rc):
        ax.plot(taus, [float(pairs[c].median()) for c in rc], "s--", color="tab:gray",
                label="random baseline")
    nc = [_col(pairs, "n_selected", t) for t in taus]
    if all(c is not None for c in nc):
        ax2 = ax.twinx()
        ax2.plot(taus, [float(pairs[c].mean()) for c in nc], ":", color="tab:orange",
                 label="mean |L|")
        ax2.set_ylabel("mean |L|", color="tab:orange")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("relevance threshold τ")
    ax.set_ylabel("median FF")
    ax.set_title(title or "faithfulness against τ", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_tsne(relevance: np.ndarray, classes: Iterable[str], path: Path, seed: int = 0,
              title: str = "") -> bool:
    """t-SNE of relevance vectors coloured by class (needs at least 4 rows)."""
    from sklearn.manifold import TSNE

    rel = np.asarray(relevance, dtype=np.float64)
    labels = np.asarray(list(classes), dtype=str)
    n = rel.shape[0] if rel.ndim == 2 else 0
    if n < 4 or labels.shape[0] != n:
        return False
    plt = _plt()
    perplexity = float(max(1.0, min(30.0, (n - 1) / 3.0)))
    init = "pca" if rel.shape[1] >= 2 else "random"
    # exact gradients for small n: Barnes-Hut's OpenMP start-up costs seconds on a busy machine
    method = "exact" if n <= 1000 else "barnes_hut"
    emb = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed,
               learning_rate="auto", method=method).fit_transform(rel + 0.0)
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    names = sorted(set(labels))
    cmap = plt.get_cmap("tab20" if len(names) > 10 else "tab10")
    for i, name in enumerate(names):
        m = labels == name
        ax.scatter(emb[m, 0], emb[m, 1], s=14, color=cmap(i % cmap.N), label=name, alpha=0.85)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title or f"t-SNE of relevance vectors (n = {n}, perplexity {perplexity:.1f})")
    if len(names) <= 20:
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_history(histories: dict[str, pd.DataFrame], path: Path) -> bool:
    """One column of panels per history (method, classifier f): loss terms (top) and the
    validation score (bottom) against the epoch."""
    histories = {k: v for k, v in histories.items() if v is not None and len(v)}
    if not histories:
        return False
    plt = _plt()
    fig, axes = plt.subplots(2, len(histories), figsize=(5.0 * len(histories), 5.6),
                             squeeze=False)
    for j, (name, h) in enumerate(histories.items()):
        h = h.apply(pd.to_numeric, errors="coerce")
        x = h["epoch"] if "epoch" in h else pd.Series(np.arange(1, len(h) + 1))
        losses = [c for c in h.columns if c not in ("epoch", "lr", "valid_score")
                  and h[c].notna().any()]
        ax = axes[0, j]
        for c in losses:
            ax.plot(x, h[c], label=c)
        ax.set_title(f"{name}: training losses")
        ax.set_xlabel("epoch")
        if losses:
            ax.legend(fontsize=7)
        ax = axes[1, j]
        if "valid_score" in h and h["valid_score"].notna().any():
            ax.plot(x, h["valid_score"], "o-", color="tab:green")
        ax.set_title(f"{name}: validation score")
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None


def report_cell(cell: str | os.PathLike, tau: float = 0.1) -> Path:
    """Write the plots and ``index.html`` into ``<cell>/plots/``; returns the HTML path."""
    cell = Path(cell)
    if not (cell / "done.json").is_file():
        raise FileNotFoundError(f"{cell} is not a finished run cell (no done.json)")
    out = cell / "plots"
    out.mkdir(exist_ok=True)
    cfg = json.loads((cell / "config.json").read_text())
    metrics = json.loads((cell / "metrics.json").read_text())
    label = f"{cfg.get('method', cell.parent.name)} on {(cfg.get('task') or {}).get('name', '')}" \
            f", fold {cfg.get('fold', '')}, seed {cfg.get('seed', '')}"
    pairs = _read_csv(cell / "pairs.csv")
    made: list[tuple[str, str]] = []
    if pairs is not None and len(pairs):
        if plot_classwise(pairs, out / "classwise_ff.png", tau, f"class-wise FF, τ = {tau:g}: {label}"):
            made.append(("classwise_ff.png", f"Class-wise FF medians vs random baseline (τ = {tau:g})"))
        if plot_ff_vs_tau(pairs, out / "ff_vs_tau.png", f"FF against τ: {label}"):
            made.append(("ff_vs_tau.png", "FF median against τ, with the random baseline"))
        if (cell / "relevance.npy").is_file():
            rel = np.load(cell / "relevance.npy")
            if rel.shape[0] == len(pairs) and plot_tsne(rel, pairs["class"].astype(str),
                                                        out / "tsne_relevance.png",
                                                        seed=int(cfg.get("seed", 0))):
                made.append(("tsne_relevance.png", "t-SNE of relevance vectors by class"))
    hist = {"method": _read_csv(cell / "history.csv"),
            "classifier f": _read_csv(cell / "classifier_history.csv")}
    if plot_history(hist, out / "history.png"):
        made.append(("history.png", "Training curves"))
    html_path = out / "index.html"
    html_path.write_text(_html(label, cell, made, metrics, cfg))
    return html_path


def _html(label: str, cell: Path, made: list[tuple[str, str]], metrics: dict, cfg: dict) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(label)}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}"
             "td.v{text-align:right;font-family:monospace}img{max-width:100%}</style></head><body>",
             f"<h1>{e(label)}</h1>",
             f"<p>cell <code>{e(str(cell))}</code>, config hash "
             f"<code>{e(str(cfg.get('config_hash', '')))}</code>, commit "
             f"<code>{e(str((cfg.get('versions') or {}).get('git_commit', '')))}</code></p>"]
    parts.append("<h2>Plots</h2>")
    if not made:
        parts.append("<p>No plot (no pairs, relevances or histories in this cell).</p>")
    for name, caption in made:
        parts.append(f"<figure><img src='{e(name)}' alt='{e(caption)}'>"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("<h2>Metrics</h2><table><tr><th>metric</th><th>value</th></tr>")
    for k in sorted(metrics):
        v = metrics[k]
        txt = f"{v:.4f}" if isinstance(v, float) else str(v)
        parts.append(f"<tr><td>{e(k)}</td><td class='v'>{e(txt)}</td></tr>")
    parts.append("</table>")
    wavs = sorted((cell / "interpretations").glob("*.wav")) if (cell / "interpretations").is_dir() else []
    parts.append("<h2>Listen</h2>")
    if not wavs:
        parts.append("<p>No interpretation written.</p>")
    else:
        parts.append("<table><tr><th>file</th><th>audio</th></tr>")
        for w in wavs:
            rel = f"../interpretations/{w.name}"
            parts.append(f"<tr><td>{e(w.stem)}</td><td><audio controls preload='none' "
                         f"src='{e(rel)}'></audio></td></tr>")
        parts.append("</table>")
    parts.append("</body></html>")
    return "\n".join(parts)


def report_cells(out: str | os.PathLike, task: str, method: str | None = None,
                 tau: float = 0.1) -> list[Path]:
    """:func:`report_cell` for every finished cell of a task (and method)."""
    from .results import find_cells

    return [report_cell(p, tau) for p in find_cells(out, task, method)]
