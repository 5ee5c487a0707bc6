"""Run directories and their files (DESIGN.md "Files").

``runs/<task>/<method>/<fold>-<seed>-<confighash>/`` holds ``config.json``, ``metrics.json``
(a flat ``{name: value}`` map), ``per_sample.csv`` (one row per test clip), ``pairs.csv`` (one
row per explained (clip, class) pair: FF at each τ, random baseline, ground truth),
``history.csv`` (training curves), ``relevance.npy`` (relevance vectors of the pairs),
``interpretations/*.wav`` and ``done.json``. A cell is
written into a hidden temporary folder and renamed into place only when complete, so an
interrupted run leaves no half-written cell: a folder without ``done.json`` is never read.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import __version__


def config_hash(config: dict[str, Any], n: int = 10) -> str:
    """Stable short hash of a JSON-able config."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


def cell_dir(out: str | os.PathLike, task: str, method: str, fold: str, seed: int,
             chash: str) -> Path:
    safe = method.replace(":", "_").replace("/", "_")
    return Path(out) / task / safe / f"{fold}-{seed}-{chash}"


def git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def metrics_digest() -> str:
    """Short digest of the code that defines the metrics (``evaluate.py`` and ``metrics/*.py``):
    two cells with the same digest computed every metric the same way, whatever the git state
    (it also catches uncommitted edits, which ``git_commit`` does not)."""
    import hashlib

    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in [here / "evaluate.py", *sorted((here / "metrics").glob("*.py"))]:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:10]


def is_done(path: Path) -> bool:
    return (path / "done.json").is_file()


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    return str(o)


def umask_mode(path: str | os.PathLike, directory: bool = False) -> None:
    """Give a file made by ``tempfile`` (created 0600 / 0700 whatever the umask) the mode an
    ordinary ``open`` / ``mkdir`` would have had, so results and caches are shareable on a
    group machine exactly as the user's umask says."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, (0o777 if directory else 0o666) & ~mask)


def write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))


def write_cell(path: Path, *, config: dict, metrics: dict[str, float], per_sample: pd.DataFrame,
               pairs: pd.DataFrame, history: pd.DataFrame | None, listen: list[dict],
               sample_rate: int, done: dict, relevance: np.ndarray | None = None,
               tables: dict[str, pd.DataFrame] | None = None) -> None:
    """Write every file of a cell into a temporary sibling, then rename it into place."""
    import soundfile as sf

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    umask_mode(tmp, directory=True)
    try:
        write_json(tmp / "config.json", config)
        write_json(tmp / "metrics.json", metrics)
        per_sample.to_csv(tmp / "per_sample.csv", index=False)
        pairs.to_csv(tmp / "pairs.csv", index=False)
        if relevance is not None:
            np.save(tmp / "relevance.npy", relevance.astype(np.float32))
        if history is not None and len(history):
            history.to_csv(tmp / "history.csv", index=False)
        for name, table in (tables or {}).items():
            if len(table):
                table.to_csv(tmp / name, index=False)
        wav_dir = tmp / "interpretations"
        wav_dir.mkdir()
        for i, item in enumerate(listen):
            stem = f"{i:02d}_{item['id']}_{item['class']}".replace("/", "_")
            for key, wave in item.items():
                if isinstance(wave, np.ndarray):
                    peak = float(np.abs(wave).max()) if wave.size else 0.0
                    scale = 0.99 / peak if peak > 0.99 else 1.0  # avoid clipping, keep levels
                    sf.write(wav_dir / f"{stem}_{key}.wav", wave * scale, sample_rate,
                             subtype="PCM_16")
        write_json(tmp / "done.json", done)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_cell(path: Path) -> dict[str, Any]:
    """config, metrics and done records of a finished cell."""
    return {"path": str(path),
            "config": json.loads((path / "config.json").read_text()),
            "metrics": json.loads((path / "metrics.json").read_text()),
            "done": json.loads((path / "done.json").read_text())}


def find_cells(out: str | os.PathLike, task: str | None = None,
               method: str | None = None) -> list[Path]:
    """Finished cells below ``out`` (optionally one task / method)."""
    root = Path(out)
    pattern = f"{task or '*'}/{(method or '*').replace(':', '_')}/*/done.json"
    return sorted(p.parent for p in root.glob(pattern) if not p.parent.name.startswith("."))


def versions() -> dict[str, str]:
    import platform

    import torch

    return {"audio_xai_bench": __version__, "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "git_commit": git_commit(), "metrics_digest": metrics_digest()}
