"""Shared helpers of the real dataset adapters: data-root and file checks, CSV reading with
named columns, seeded hold-out splits, subsampling for the ``small`` profile.

Every error raised here is a ``DatasetLayoutError`` whose message names the file or column at
fault, shows the layout that was expected, and points to the README section "Getting the data"
(and ``docs/datasets.md``), because these datasets cannot be fetched by the suite.
"""
from __future__ import annotations

import os
from typing import Any, Iterable

import numpy as np

GETTING_DATA = ("see the README section 'Getting the data' and docs/datasets.md for where to "
                "download it and how to unpack it")

# Per-split caps applied by the ``small`` profile (a smoke test on real data); a tiny fixture
# stays below them, so the profile changes nothing there. Override with ``max_clips=N``.
SMALL_PROFILE_CAPS = {"train": 200, "valid": 50, "test": 100}


class DatasetLayoutError(FileNotFoundError):
    """The data root does not hold the official layout; the message says what is wrong."""


def require_root(task_name: str, data_root: str | os.PathLike | None, layout: str) -> str:
    """The data root as a string, or a ``DatasetLayoutError`` showing the expected layout."""
    if data_root is None or str(data_root) == "":
        raise DatasetLayoutError(
            f"task {task_name!r} needs --data-root pointing at the dataset in its official "
            f"layout:\n{layout}\n{GETTING_DATA}")
    root = os.fspath(data_root)
    if not os.path.isdir(root):
        raise DatasetLayoutError(
            f"task {task_name!r}: data root {root} does not exist or is not a folder. Expected "
            f"the official layout:\n{layout}\n{GETTING_DATA}")
    return root


def archive_root(task_name: str, data_root: str | os.PathLike | None, layout: str,
                 marker: str, archive_folder: str) -> str:
    """``require_root``, or its subfolder ``archive_folder`` when the root lacks ``marker`` (a
    file every copy of the dataset has) and that subfolder holds it: the data root may be
    the folder the official archive was unpacked in (``ESC-50-master/``, ``openmic-2018/``)."""
    root = require_root(task_name, data_root, layout)
    inner = os.path.join(root, archive_folder)
    if not os.path.isfile(os.path.join(root, marker)) and os.path.isfile(
            os.path.join(inner, marker)):
        return inner
    return root


def require_file(task_name: str, root: str, rel: str | Iterable[str], layout: str) -> str:
    """Path of the first existing candidate ``rel`` under ``root``, else a layout error."""
    cands = [rel] if isinstance(rel, str) else list(rel)
    for c in cands:
        p = os.path.join(root, c)
        if os.path.isfile(p):
            return p
    names = " or ".join(os.path.join(root, c) for c in cands)
    raise DatasetLayoutError(
        f"task {task_name!r}: metadata file {names} is missing. Expected the official "
        f"layout:\n{layout}\n{GETTING_DATA}")


def read_csv(task_name: str, path: str, required: Iterable[str], **kwargs: Any):
    """Read a CSV with pandas and check that every ``required`` column is present."""
    import pandas as pd

    try:
        df = pd.read_csv(path, **kwargs)
    except Exception as exc:  # pandas raises several parser errors
        raise DatasetLayoutError(f"task {task_name!r}: cannot read {path}: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DatasetLayoutError(
            f"task {task_name!r}: {path} lacks column(s) {missing} (it has "
            f"{len(df.columns)} columns: {', '.join(map(str, df.columns[:12]))}"
            f"{', ...' if len(df.columns) > 12 else ''}). {GETTING_DATA}")
    return df


def missing_files(paths: Iterable[str]) -> list[str]:
    return [p for p in paths if not os.path.isfile(p)]


def summarize_missing(task_name: str, missing: list[str], total: int, limit: int = 10) -> str:
    shown = "\n  ".join(missing[:limit])
    more = f"\n  ... and {len(missing) - limit} more" if len(missing) > limit else ""
    return (f"task {task_name!r}: {len(missing)} of {total} listed audio files are absent:\n  "
            f"{shown}{more}")


def rng_for(seed: int, *salt: int) -> np.random.Generator:
    """A generator determined by the task seed (and a per-fold salt)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, *[int(s) for s in salt]])


def stratified_holdout(labels: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a held-out subset of about ``fraction`` of the rows, stratified by the
    integer ``labels``: each class gives floor(n_c * fraction) rows, and the rows still needed to
    reach round(n * fraction) (at least one when n >= 2) go to the classes with the largest
    remainders (ties broken at random). Rows inside a class are drawn at random."""
    labels = np.asarray(labels)
    n = len(labels)
    out = np.zeros(n, bool)
    if n < 2 or fraction <= 0:
        return out
    total = max(1, int(round(n * fraction)))
    classes = np.unique(labels)
    exact = {c: (labels == c).sum() * fraction for c in classes}
    take = {c: int(np.floor(exact[c])) for c in classes}
    # a class never gives all of its rows
    take = {c: min(take[c], int((labels == c).sum()) - 1) for c in classes}
    order = sorted(classes, key=lambda c: (-(exact[c] - np.floor(exact[c])), rng.random()))
    i = 0
    while sum(take.values()) < total and i < 10 * len(order):
        c = order[i % len(order)]
        if take[c] < int((labels == c).sum()) - 1:
            take[c] += 1
        i += 1
    for c in classes:
        idx = np.flatnonzero(labels == c)
        out[rng.permutation(idx)[:take[c]]] = True
    return out


def random_holdout(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of round(n * fraction) random rows (at least one when n >= 2)."""
    out = np.zeros(n, bool)
    if n < 2 or fraction <= 0:
        return out
    out[rng.permutation(n)[:max(1, int(round(n * fraction)))]] = True
    return out


def profile_cap(profile: str, options: dict, split: str) -> int | None:
    """Clip cap for ``split``: option ``max_clips`` wins, else the ``small`` profile's cap."""
    if options.get("max_clips") is not None:
        return int(options["max_clips"])
    if profile == "small":
        return SMALL_PROFILE_CAPS[split]
    return None


def cap_indices(idx: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``cap`` of ``idx``, drawn at random, kept in their original order."""
    idx = np.asarray(idx)
    if cap is None or len(idx) <= cap:
        return idx
    return np.sort(rng.choice(idx, size=cap, replace=False))


def split_atoms(k: int, n_blocks: int) -> list[int]:
    """``k`` atoms over ``n_blocks`` blocks: k // n each, the remainder to the first blocks,
    and at least one per block."""
    base, rem = divmod(max(int(k), n_blocks), n_blocks)
    return [base + (1 if b < rem else 0) for b in range(n_blocks)]


def block_dictionary(train_X, positives: list[np.ndarray], atoms: list[int], seed: int, *,
                     max_clips: int, names: list[str], W_fixed=None, nmf_kwargs=None,
                     fallback: np.ndarray | None = None):
    """Learn one block of atoms per entry of ``positives`` (row indices of ``train_X``, the
    (B, F, T) log1p magnitudes), each from up to ``max_clips`` randomly drawn clips, with
    ``W_fixed`` held fixed when given; return the stacked new columns and per-block records.
    A block with no clip falls back to the ``fallback`` rows (all training clips)."""
    import torch

    from audio_xai_bench import nmf

    nmf_kwargs = dict(nmf_kwargs or {})
    rng = np.random.default_rng(seed)
    blocks, records = [], []
    n_fixed = 0 if W_fixed is None else W_fixed.shape[1]
    for b, (rows, n_atoms, name) in enumerate(zip(positives, atoms, names)):
        rows = np.asarray(rows, dtype=np.int64)
        rec: dict[str, Any] = {"block": name, "atoms": int(n_atoms),
                               "positive_clips": int(len(rows))}
        if len(rows) == 0:
            rows = np.arange(train_X.shape[0]) if fallback is None else np.asarray(fallback)
            rec["fallback"] = "no positive clip: atoms learnt from all training clips"
        if len(rows) > max_clips:
            rows = np.sort(rng.choice(rows, size=max_clips, replace=False))
        rec["clips_used"] = int(len(rows))
        sel = train_X[torch.as_tensor(rows)]
        frames = sel.permute(1, 0, 2).reshape(sel.shape[1], -1)
        frames, sub = nmf.subsample_frames(frames, seed=seed + 1 + b)
        rec.update(sub if isinstance(sub, dict) else {})
        W, _ = nmf.sparse_nmf(frames, int(n_atoms), seed=seed + 1 + b, W_fixed=W_fixed,
                              **nmf_kwargs)
        blocks.append(W[:, n_fixed:])
        records.append(rec)
    return blocks, records
