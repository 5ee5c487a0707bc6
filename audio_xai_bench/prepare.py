"""``audio-xai-bench prepare``: check a task's data on disk and build its waveform cache.

Nothing here names a dataset: a task may offer ``validate_layout() -> list[str]`` (the real
dataset adapters do); otherwise building its folds is the check. Then every clip the task's
folds use is decoded once (in parallel, with a progress bar) into the content-hashed,
atomically written cache of ``data.py``, so later runs memory-map it instead of decoding.
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from .api import Example, Task
from .data import LoadReport, materialize

GETTING_DATA = ("See the README section 'Getting the data' (and docs/datasets.md) for where to "
                "get the dataset and the layout it must have.")


class PrepareError(RuntimeError):
    """The data cannot be prepared; the message lists every problem found."""


def validate_layout(task: Task) -> list[str]:
    """Problems with ``task``'s data on disk: missing root, metadata files, columns or audio
    files. Empty when everything the task needs is in place."""
    check = getattr(task, "validate_layout", None)
    if callable(check):
        return list(check())
    try:
        folds = task.folds(None)
    except Exception as exc:  # noqa: BLE001 - any failure to build folds is a layout problem
        return [f"{type(exc).__name__}: {exc}"]
    missing = sorted({e.path for f in folds for e in (*f.train, *f.valid, *f.test)
                      if e.audio is None and e.path and not os.path.isfile(e.path)})
    return [f"{len(missing)} listed audio files are absent, e.g. {missing[:5]}"] if missing else []


def _label_counts(task: Task, examples: list[Example], kept: set[str]) -> dict[str, int]:
    exs = [e for e in examples if e.id in kept]
    if not exs:
        return {c: 0 for c in task.classes}
    t = np.stack([np.asarray(e.target) > 0.5 for e in exs])
    m = np.stack([np.ones(t.shape[1], bool) if e.mask is None else np.asarray(e.mask, bool)
                  for e in exs])
    return {c: int(n) for c, n in zip(task.classes, (t & m).sum(0))}


def prepare(task: Task, *, on_bad_file: str = "fail", cache_dir: str | os.PathLike | None,
            num_workers: int | None = None, folds: list[str] | None = None) -> dict[str, Any]:
    """Validate ``task``'s layout and decode every clip of its folds into the cache.

    Returns a summary: clips per fold and split, label counts, missing and skipped files,
    resampled / down-mixed counts and the cache entry. ``on_bad_file='fail'`` (default) stops
    at missing or undecodable audio, naming the files; ``'skip'`` leaves them out and counts
    them. Layout problems (no data root, metadata file or column) always stop."""
    if on_bad_file not in ("fail", "skip"):
        raise ValueError(f"on_bad_file must be 'fail' or 'skip', not {on_bad_file!r}")
    problems = validate_layout(task)
    try:
        fold_list = [f for name in (folds or [None]) for f in task.folds(name)]
    except Exception as exc:  # noqa: BLE001
        raise PrepareError(f"cannot prepare task {task.name!r}:\n- "
                           + "\n- ".join(problems or [str(exc)]) + f"\n{GETTING_DATA}") from exc
    every: dict[str, Example] = {}
    for f in fold_list:
        for e in (*f.train, *f.valid, *f.test):
            every.setdefault(e.path or e.id, e)
    union = [every[k] for k in sorted(every)]
    missing = sorted(e.path for e in union
                     if e.audio is None and e.path and not os.path.isfile(e.path))
    if missing and on_bad_file == "fail":
        shown = "\n  ".join(missing[:20])
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        layout = "".join(f"\n- {p}" for p in problems)  # e.g. the folders searched
        raise PrepareError(f"task {task.name!r}: {len(missing)} of {len(union)} listed audio "
                           f"files are absent:\n  {shown}{more}{layout}\nRun prepare with "
                           f"on_bad_file='skip' (--on-bad-file skip) to leave them out. "
                           f"{GETTING_DATA}")
    report = LoadReport()
    materialize(union, task.frontend, on_bad_file=on_bad_file, report=report,
                desc=f"prepare {task.name}", cache_dir=cache_dir, namespace=task.name,
                num_workers=num_workers)
    bad = {s["path"] or s["id"] for s in report.skipped}
    kept_ids = {e.id for e in union if (e.path or e.id) not in bad}
    clips: dict[str, dict[str, int]] = {}
    labels: dict[str, dict[str, dict[str, int]]] = {}
    for f in fold_list:
        clips[f.name], labels[f.name] = {}, {}
        for split in ("train", "valid", "test"):
            exs = getattr(f, split)
            clips[f.name][split] = sum(e.id in kept_ids for e in exs)
            labels[f.name][split] = _label_counts(task, exs, kept_ids)
    return {
        "task": task.name, "data_root": getattr(task, "data_root", None),
        "frontend": dict(task.frontend.__dict__), "clips": clips, "label_counts": labels,
        "unique_clips": len(kept_ids), "missing_files": missing,
        "skipped_files": report.skipped, "n_skipped": len(report.skipped),
        "resampled": report.resampled, "downmixed": report.downmixed,
        "cache": report.cache, "cache_path": report.cache_path,
        "problems": problems,
        "task_info": getattr(task, "info", None) or None,
    }
