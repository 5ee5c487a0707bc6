"""Plots and an HTML page next to a run cell (``<cell>/plots/``).

- ``classwise_ff.png``: class-wise FF medians of the method against its random baseline at
  τ = 0.1, one pair of bars per class (paper Figs. 2-3), from ``pairs.csv``.
- ``ff_vs_tau.png``: FF_median against τ with the random baseline (paper Table V as a plot).
- ``tsne_relevance.png``: t-SNE (``sklearn.manifold.TSNE``) of the pairs' relevance vectors
  (``relevance.npy``) coloured by explained class; perplexity min(30, (n - 1) / 3), at least 1;
  exact gradients up to n = 1000 rows, Barnes-Hut above.
- ``history.png``: training curves of the method (``history.csv``) and of the classifier f
  (``classifier_history.csv``): every logged loss term and the validation score per epoch.
- ``<wav stem>.png``: the spectrogram of every listened WAV (one colour scale per pair).
- ``index.html``: the plots, the cell's metrics, and per listened pair the input, the
  interpretation and the components by relevance, each with its spectrogram and a player.

``report --task T`` also writes ``<out>/<task>/report/index.html`` comparing the methods
(:func:`report_task`).

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

__all__ = ["report_cell", "report_cells", "report_task", "plot_classwise", "plot_ff_vs_tau",
           "plot_tsne", "plot_history", "spectrograms", "listened"]


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
    ax.set_title(title or f"class-wise faithfulness, τ = {tau:g}", fontsize=10, pad=22)
    # above the axes, so that no bar is hidden behind the legend
    ax.legend(fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
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
    handles, labels = ax.get_legend_handles_labels()
    if all(c is not None for c in nc):
        ax2 = ax.twinx()
        ax2.plot(taus, [float(pairs[c].mean()) for c in nc], ":", color="tab:orange",
                 label="mean |L| (right axis)")
        ax2.set_ylabel("mean |L|", color="tab:orange")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("relevance threshold τ")
    ax.set_ylabel("median FF")
    ax.set_title(title or "faithfulness against τ", fontsize=10, pad=30)
    # one legend for both axes, above the plot
    ax.legend(handles, labels, fontsize=8, loc="lower center", bbox_to_anchor=(0.5, 1.0),
              ncol=3, frameon=False)
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
    spectrograms(cell)
    html_path = out / "index.html"
    html_path.write_text(_html(label, cell, made, metrics, cfg))
    return html_path


_WAV = re.compile(r"(?P<pair>\d+_.+)_(?P<key>input|interpretation|component(?P<k>\d+))$")


def listened(cell: Path) -> dict[str, dict[str, Path]]:
    """The cell's WAVs grouped by listened pair: {pair stem: {input, interpretation,
    component<k>...: path}} (``results.write_cell`` names them ``<pair>_<key>.wav``)."""
    groups: dict[str, dict[str, Path]] = {}
    folder = cell / "interpretations"
    for w in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
        m = _WAV.match(w.stem)
        if m:
            groups.setdefault(m.group("pair"), {})[m.group("key")] = w
    return groups


def _component_relevance(cell: Path, pair: str) -> dict[int, float]:
    """r_k of the listened pair's components, from ``relevance.npy`` (rows aligned with
    ``pairs.csv``; the listened pairs are the first rows with their id and class)."""
    pairs = _read_csv(cell / "pairs.csv")
    if pairs is None or not (cell / "relevance.npy").is_file():
        return {}
    rel = np.load(cell / "relevance.npy")
    _, rest = pair.split("_", 1)
    for j, (pid, cls) in enumerate(zip(pairs["id"].astype(str), pairs["class"].astype(str))):
        if f"{pid}_{cls}".replace("/", "_") == rest and j < rel.shape[0]:
            return {k: float(v) for k, v in enumerate(rel[j])}
    return {}


def spectrograms(cell: Path) -> list[Path]:
    """A log-magnitude spectrogram PNG (``plots/<wav stem>.png``) for every listened WAV, all
    of one pair on the same colour scale as its input."""
    import soundfile as sf

    plt = _plt()
    made = []
    for pair, files in listened(cell).items():
        ref = None
        for key in sorted(files, key=_listen_order):
            wave, sr = sf.read(files[key], dtype="float32", always_2d=False)
            n_fft = 1024 if sr >= 32000 else 512
            if wave.size < n_fft:
                wave = np.pad(wave, (0, n_fft - wave.size))
            fig, ax = plt.subplots(figsize=(4.2, 2.4))
            kw = {} if ref is None else {"vmin": ref[0], "vmax": ref[1]}
            _, _, _, im = ax.specgram(wave + 1e-9, NFFT=n_fft, Fs=sr, noverlap=n_fft // 2,
                                      scale="dB", cmap="magma", **kw)
            if ref is None:
                ref = im.get_clim()
            ax.set_xlabel("time (s)", fontsize=8)
            ax.set_ylabel("Hz", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.set_title(key, fontsize=9)
            fig.tight_layout()
            target = cell / "plots" / f"{files[key].stem}.png"
            fig.savefig(target, dpi=80)
            plt.close(fig)
            made.append(target)
    return made


def _listen_order(key: str) -> tuple[int, str]:
    return ({"input": 0, "interpretation": 1}.get(key, 2), key)


def _listen_html(cell: Path) -> list[str]:
    """Per listened pair: input, then interpretation, then the components by relevance, each
    with its spectrogram and a player that loads its duration."""
    e = html.escape
    groups = listened(cell)
    parts = ["<h2>Listen</h2>"]
    if not groups:
        return parts + ["<p>No interpretation written.</p>"]
    for pair, files in groups.items():
        rel = _component_relevance(cell, pair)
        keys = sorted(files, key=_listen_order)
        comps = sorted((k for k in keys if k.startswith("component")),
                       key=lambda k: -rel.get(int(k[9:]), 0.0))
        keys = [k for k in keys if not k.startswith("component")] + comps
        parts.append(f"<h3>{e(pair)}</h3><div class='row'>")
        for key in keys:
            w = files[key]
            caption = key
            if key.startswith("component"):
                r = rel.get(int(key[9:]))
                caption = f"{key}" + (f" (relevance {r:.3f})" if r is not None else "")
            elif key == "interpretation":
                caption = "interpretation (components with r > τ)"
            parts.append(f"<figure><img src='{e(w.stem)}.png' alt='spectrogram of {e(key)}'>"
                         f"<figcaption>{e(caption)}<br><audio controls preload='metadata' "
                         f"src='../interpretations/{e(w.name)}'></audio></figcaption></figure>")
        parts.append("</div>")
    return parts


def _html(label: str, cell: Path, made: list[tuple[str, str]], metrics: dict, cfg: dict) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(label)}</title>",
             "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}"
             "td.v{text-align:right;font-family:monospace}img{max-width:100%}"
             ".row{display:flex;flex-wrap:wrap;gap:8px}.row figure{margin:0}</style></head><body>",
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
    parts.extend(_listen_html(cell))
    parts.append("</body></html>")
    return "\n".join(parts)


def report_cells(out: str | os.PathLike, task: str, method: str | None = None,
                 tau: float = 0.1) -> list[Path]:
    """:func:`report_cell` for every finished cell of a task (and method), then the
    task-level page :func:`report_task` (last in the returned list)."""
    from .results import find_cells

    cells = find_cells(out, task, method)
    pages = [report_cell(p, tau) for p in cells]
    if cells:
        pages.append(report_task(out, task, method))
    return pages


# the scorer writes ``deletion_randorder@b`` (metrics/curves.py); ``deletion@b_randorder`` is
# accepted too
_CURVE = re.compile(r"faithfulness/(deletion|insertion)(_randorder)?@([0-9.]+)(_randorder)?$")


def plot_methods_ff_vs_tau(pairs_by_method: dict[str, pd.DataFrame], path: Path) -> bool:
    """Median FF against τ of every method on one plot (pairs pooled over its cells)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    drawn = 0
    for name, pairs in sorted(pairs_by_method.items()):
        taus = _taus(pairs)
        if not taus:
            continue
        ax.plot(taus, [float(pairs[_col(pairs, "ff", t)].median()) for t in taus], "o-",
                label=name, lw=1.2, ms=3)
        drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("relevance threshold τ")
    ax.set_ylabel("median FF (paper eq. 7)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_methods_curves(metrics_by_method: dict[str, list[dict]], path: Path) -> bool:
    """Deletion (left) and insertion (right) curves of every method at the mass budgets,
    mean over its cells; the same units in random order dashed in the same colour."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 3.8), sharey=True)
    drawn = 0
    colors = plt.get_cmap("tab20").colors
    for i, (name, cells) in enumerate(sorted(metrics_by_method.items())):
        curves: dict[tuple[str, bool], dict[float, list[float]]] = {}
        for m in cells:
            for key, v in m.items():
                hit = _CURVE.match(key)
                if hit and v is not None and np.isfinite(v):
                    rnd = bool(hit.group(2) or hit.group(4))
                    c = curves.setdefault((hit.group(1), rnd), {})
                    c.setdefault(float(hit.group(3)), []).append(float(v))
        for (kind, randorder), pts in curves.items():
            ax = axes[0 if kind == "deletion" else 1]
            b = sorted(pts)
            ax.plot(b, [np.mean(pts[x]) for x in b], "--" if randorder else "o-",
                    color=colors[i % len(colors)], lw=1.0 if randorder else 1.4, ms=3,
                    label=None if randorder else name)
            drawn += 1
    if not drawn:
        plt.close(fig)
        return False
    for ax, kind in zip(axes, ("deletion (most relevant removed first)",
                               "insertion (most relevant kept first)")):
        ax.set_title(kind, fontsize=9)
        ax.set_xlabel("budget: share of the input's log1p mass")
    axes[0].set_ylabel("f's class probability")
    by_label: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            by_label.setdefault(lab, h)
    axes[1].legend(list(by_label.values()), list(by_label), fontsize=7, loc="center left",
                   bbox_to_anchor=(1.0, 0.5), frameon=False,
                   title="solid: method\ndashed: random order")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def report_task(out: str | os.PathLike, task: str, method: str | None = None) -> Path:
    """The task-level page ``<out>/<task>/report/index.html`` comparing methods: the
    leaderboard summary (mean ± std over cells, ranks), every method's FF against τ and its
    deletion / insertion curves on one plot each, and links to each cell's page."""
    from .leaderboard import collect, format_summary, summary
    from .results import find_cells

    e = html.escape
    target = Path(out) / task / "report"
    target.mkdir(parents=True, exist_ok=True)
    cells = find_cells(out, task, method)
    pairs_by: dict[str, list[pd.DataFrame]] = {}
    metrics_by: dict[str, list[dict]] = {}
    for c in cells:
        name = json.loads((c / "config.json").read_text()).get("method", c.parent.name)
        metrics_by.setdefault(name, []).append(json.loads((c / "metrics.json").read_text()))
        pairs = _read_csv(c / "pairs.csv")
        if pairs is not None and len(pairs):
            pairs_by.setdefault(name, []).append(pairs)
    made = []
    pooled = {k: pd.concat(v, ignore_index=True) for k, v in pairs_by.items()}
    if plot_methods_ff_vs_tau(pooled, target / "ff_vs_tau.png"):
        made.append(("ff_vs_tau.png", "Median FF against τ, every method (paper eq. 7)"))
    if plot_methods_curves(metrics_by, target / "curves.png"):
        made.append(("curves.png", "Deletion and insertion curves at equal mass budgets"))
    long_df = collect(out, task)
    if method:
        long_df = long_df[long_df["method"] == method]
    table = format_summary(summary(long_df)) if len(long_df) else pd.DataFrame()
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(task)}: methods"
             "</title><style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:"
             "collapse}td,th{border:1px solid #ccc;padding:2px 6px;font-size:12px}"
             "img{max-width:100%}</style></head><body>",
             f"<h1>{e(task)}: {len(metrics_by)} method(s), {len(cells)} cell(s)</h1>",
             "<h2>Summary (mean ± std over cells, #rank)</h2>",
             table.to_html(index=False, escape=True) if len(table) else "<p>No metric.</p>",
             "<h2>Plots</h2>"]
    for name, caption in made:
        parts.append(f"<figure><img src='{e(name)}' alt='{e(caption)}'>"
                     f"<figcaption>{e(caption)}</figcaption></figure>")
    parts.append("<h2>Cells</h2><ul>")
    for c in cells:
        page = c / "plots" / "index.html"
        rel = os.path.relpath(page, target)
        link = f"<a href='{e(rel)}'>{e(c.parent.name)}/{e(c.name)}</a>" if page.is_file() \
            else f"{e(c.parent.name)}/{e(c.name)} (no page: run report on it)"
        parts.append(f"<li>{link}</li>")
    parts.append("</ul></body></html>")
    page = target / "index.html"
    page.write_text("\n".join(parts))
    return page
