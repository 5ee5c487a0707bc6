"""File locks for shared artefacts (classifier f, NMF dictionaries, waveform caches).

Several processes (a local sweep's workers, Slurm jobs on a shared file system) may need the
same artefact. Each artefact is built under an exclusive ``fcntl.flock`` on a sibling lock
file ``.<name>.lock``: the first process builds it, the others wait on the lock and then load
the finished file. Under the lock no other process can be writing the artefact, so leftover
temporary files of it (from a killed process) are stale and removed (:func:`clean_stale`).

``flock`` works between processes on one machine and on NFSv4 / Lustre / GPFS mounts that
support POSIX locks (the usual cluster scratch file systems); on a file system without lock
support ``flock`` raises and the error names the lock file.
"""
from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Iterator


def lock_path(artefact: str | os.PathLike) -> Path:
    """The lock file of ``artefact``: ``<dir>/.<name>.lock``."""
    p = Path(artefact)
    return p.parent / f".{p.name}.lock"


@contextlib.contextmanager
def artefact_lock(artefact: str | os.PathLike, log=None) -> Iterator[None]:
    """Hold an exclusive lock for building ``artefact``; blocks while another process holds it.

    ``log`` (a callable) is told once when the lock is busy, so a waiting job says what it
    waits for.
    """
    lp = lock_path(artefact)
    lp.parent.mkdir(parents=True, exist_ok=True)
    try:
        fh = open(lp, "a+")
    except OSError as exc:
        raise OSError(f"cannot create the lock file {lp}: {exc.strerror}") from exc
    with fh:
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if log is not None:
                    log(f"waiting for another process building {artefact}")
                t0 = time.time()
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                if log is not None:
                    log(f"lock on {artefact} acquired after {time.time() - t0:.1f} s")
        except OSError as exc:
            if isinstance(exc, BlockingIOError):
                raise
            raise OSError(f"cannot lock {lp} (does this file system support flock?): "
                          f"{exc.strerror}") from exc
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def clean_stale(artefact: str | os.PathLike, patterns: tuple[str, ...]) -> list[str]:
    """Remove leftovers of ``artefact`` matching ``patterns`` (globs relative to its folder,
    ``{name}`` / ``{stem}`` replaced by the artefact's file name / stem). Call only while
    holding its lock."""
    p = Path(artefact)
    removed = []
    for pat in patterns:
        expanded = pat.format(name=glob.escape(p.name), stem=glob.escape(p.stem))
        for leftover in glob.glob(str(p.parent / expanded)):
            if os.path.isdir(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(leftover)
            removed.append(leftover)
    return removed


def report_unreadable(path: str | os.PathLike, exc: BaseException, log=None) -> None:
    """Say that a cache file cannot be read (naming it) and that it will be rebuilt."""
    import pickle

    if isinstance(exc, pickle.UnpicklingError):
        why = "not a plain state dict: refused to unpickle it"
    else:
        lines = str(exc).strip().splitlines()
        why = f"{type(exc).__name__}: {lines[0] if lines else 'no detail'}"
    msg = f"warning: cache file {path} is unreadable ({why}); removing it and rebuilding"
    (log or (lambda m: print(m, file=sys.stderr)))(msg)
