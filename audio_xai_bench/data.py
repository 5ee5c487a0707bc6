"""Turn a task's ``Example`` lists into batched ``SplitData`` tensors, with an on-disk cache.

Examples that carry ``audio`` are used as they are; examples with a ``path`` are loaded with
``audio.load_audio`` (down-mix, soxr resample) and padded / cropped to the task's clip length,
several files at a time (a thread pool: libsndfile and soxr release the GIL) with a progress
bar. A file that cannot be used either stops the run with a message naming it
(``on_bad_file='fail'``, the default) or is skipped and counted (``'skip'``).

Waveform cache (``cache_dir`` given, every example has a path)::

    <cache_dir>/waves/<namespace>/<frontend key>/<file-list key>/wave.npy + meta.json

- The front-end key hashes the front-end config (rate, clip length, ...) and the cache format.
- The file-list key hashes each file's fingerprint: absolute path, size and mtime (a missing
  file has its own fingerprint, so adding it later invalidates the entry).
- An entry is written to a temporary folder and published with one ``os.replace``; a run
  killed or failing midway leaves only a ``*.tmp-*`` folder, which is never read (and is
  removed when the failure is an exception). ``meta.json`` is written last inside the folder.
- An entry is built under a file lock (``locks.artefact_lock`` on ``.<file-list key>.lock``):
  a second process needing the same entry waits, then memory-maps the finished one; stale
  ``*.tmp-*`` folders of that entry are removed under the lock. An entry whose ``wave.npy``
  cannot be read (truncated, wrong shape) is reported by name, removed and rebuilt.
- On reuse ``wave.npy`` is memory-mapped copy-on-write (``np.load(mmap_mode='c')``): pages are
  read lazily from disk as with ``'r'``, but an in-place write by a method changes only its
  private copy, never the cache, and torch accepts the array without a read-only warning.
- An entry also serves a subset of its files (``prepare`` caches a task's whole file set, then
  each split's rows are gathered from it), so ESC-50's five folds do not store the clips five
  times. Files that were bad when the entry was built are recorded with their error: under
  ``on_bad_file='fail'`` they raise it again, under ``'skip'`` they are skipped and counted.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import tempfile
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
from .progress import bar as progress_bar

from .api import Example, FrontendConfig, SplitData
from .audio import MIN_CLIP_FRACTION, AudioError, check_waveform, fix_length, load_audio
from .locks import artefact_lock, clean_stale, report_unreadable
from .results import umask_mode

CACHE_VERSION = 2  # 2: rows record padding; short and truncated files are bad files


@dataclass
class LoadReport:
    """What happened while loading a split (written to config.json)."""

    skipped: list[dict] = field(default_factory=list)
    resampled: int = 0
    downmixed: int = 0
    cache: str = "off"  # 'off' | 'hit' | 'built'
    padded: int = 0  # clips shorter than the clip length, zero-padded at the end
    cache_path: str | None = None

    def as_dict(self) -> dict:
        return {"skipped": self.skipped, "n_skipped": len(self.skipped), "padded": self.padded,
                "resampled": self.resampled, "downmixed": self.downmixed,
                "cache": self.cache, "cache_path": self.cache_path}


def load_example_audio(ex: Example, fe: FrontendConfig, report: LoadReport) -> np.ndarray:
    wave, flags = _load_one(ex, fe)
    report.resampled += flags[0]
    report.downmixed += flags[1]
    report.padded += flags[2]
    return wave


def _load_one(ex: Example, fe: FrontendConfig) -> tuple[np.ndarray, tuple[int, int, int]]:
    """(waveform of exactly clip_samples, (resampled, downmixed, padded)). A clip shorter
    than ``MIN_CLIP_FRACTION`` of the clip length is an ``AudioError`` naming it."""
    flags = (0, 0)
    if ex.audio is not None:
        wave = np.asarray(ex.audio, dtype=np.float32)
    elif ex.path is not None:
        wave, info = load_audio(ex.path, fe.sample_rate)
        flags = (int("resampled_from" in info), int(info["channels"] > 1))
    else:
        raise AudioError(f"example {ex.id} has neither audio nor a path")
    check_waveform(wave, ex.path or ex.id)
    n = wave.shape[-1]
    if n < MIN_CLIP_FRACTION * fe.clip_samples:
        raise AudioError(f"clip {ex.path or ex.id} is too short: {n / fe.sample_rate:.2f} s, "
                         f"under {MIN_CLIP_FRACTION:.0%} of the task's "
                         f"{fe.clip_seconds:g} s clips")
    return fix_length(wave, fe.clip_samples), (*flags, int(n < fe.clip_samples))


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _iter_loaded(examples: list[Example], fe: FrontendConfig, num_workers: int | None,
                 desc: str):
    """Yield (i, wave | AudioError, flags) in example order, loading in a thread pool."""
    def task(ex):
        try:
            return _load_one(ex, fe)
        except AudioError as exc:
            return exc, (0, 0, 0)

    workers = _default_workers() if num_workers is None else max(1, int(num_workers))
    bar = progress_bar(total=len(examples), desc=desc, leave=False, disable=len(examples) < 64)
    try:
        if workers == 1:
            for i, ex in enumerate(examples):
                yield (i, *task(ex))
                bar.update()
        else:
            with ThreadPoolExecutor(workers) as pool:
                # bounded look-ahead keeps memory flat on large splits
                window = 4 * workers
                futures = {}
                for i in range(min(window, len(examples))):
                    futures[i] = pool.submit(task, examples[i])
                try:
                    for i in range(len(examples)):
                        res = futures.pop(i).result()
                        nxt = i + window
                        if nxt < len(examples):
                            futures[nxt] = pool.submit(task, examples[nxt])
                        yield (i, *res)
                        bar.update()
                finally:
                    for f in futures.values():
                        f.cancel()
    finally:
        bar.close()


def _handle_bad(exc: AudioError, ex: Example, on_bad_file: str, report: LoadReport) -> None:
    if on_bad_file == "fail":
        raise exc
    report.skipped.append({"id": ex.id, "path": ex.path, "error": str(exc)})


def _assemble(kept: list[Example], wave: torch.Tensor, fe: FrontendConfig) -> SplitData:
    C = len(kept[0].target)
    target = torch.from_numpy(np.stack([np.asarray(e.target, np.float32) for e in kept]))
    mask = torch.from_numpy(np.stack([
        np.ones(C, bool) if e.mask is None else np.asarray(e.mask, bool) for e in kept]))
    sources = source_classes = None
    if all(e.sources is not None for e in kept):
        E = max(e.sources.shape[0] for e in kept)
        sources = torch.zeros(len(kept), E, fe.clip_samples)
        source_classes = torch.full((len(kept), E), -1, dtype=torch.long)
        for i, e in enumerate(kept):
            n = e.sources.shape[0]
            sources[i, :n] = torch.from_numpy(fix_length(e.sources.astype(np.float32),
                                                         fe.clip_samples))
            source_classes[i, :n] = torch.from_numpy(np.asarray(e.source_classes, np.int64))
    return SplitData(ids=[e.id for e in kept], wave=wave, target=target, mask=mask,
                     sources=sources, source_classes=source_classes)


def empty_split(num_classes: int, fe: FrontendConfig) -> SplitData:
    """A split with no clip (a task evaluated without training: ``csv`` with ``all_test``)."""
    return SplitData(ids=[], wave=torch.zeros(0, fe.clip_samples),
                     target=torch.zeros(0, num_classes), mask=torch.zeros(0, num_classes, dtype=torch.bool))


def materialize(examples: list[Example], fe: FrontendConfig, *, on_bad_file: str = "fail",
                desc: str = "loading", report: LoadReport | None = None,
                cache_dir: str | os.PathLike | None = None, namespace: str = "default",
                num_workers: int | None = None) -> SplitData:
    """Load every example into one ``SplitData`` (waves, targets, masks, sources).

    With ``cache_dir`` (and every example given by path) the waveforms come from / go to the
    on-disk cache described in the module docstring; ``namespace`` is usually the task name.
    """
    if on_bad_file not in ("fail", "skip"):
        raise ValueError(f"on_bad_file must be 'fail' or 'skip', not {on_bad_file!r}")
    report = report if report is not None else LoadReport()
    if cache_dir is not None and examples and all(e.audio is None and e.path for e in examples):
        return _materialize_cached(examples, fe, on_bad_file, desc, report, os.fspath(cache_dir),
                                   namespace, num_workers)
    waves, kept = [], []
    for i, res, flags in _iter_loaded(examples, fe, num_workers, desc):
        if isinstance(res, AudioError):
            _handle_bad(res, examples[i], on_bad_file, report)
            continue
        report.resampled += flags[0]
        report.downmixed += flags[1]
        report.padded += flags[2]
        waves.append(res)
        kept.append(examples[i])
    if not kept:
        raise ValueError(f"{desc}: no usable clip (of {len(examples)})")
    return _assemble(kept, torch.from_numpy(np.stack(waves)), fe)


# --------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------
def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def fingerprint(path: str) -> str:
    """Identity of one audio file: absolute path, size and modification time."""
    p = os.path.abspath(path)
    try:
        st = os.stat(p)
    except OSError:
        return f"{p}|missing"
    return f"{p}|{st.st_size}|{st.st_mtime_ns}"


def frontend_key(fe: FrontendConfig) -> str:
    cfg = {"sample_rate": fe.sample_rate, "clip_samples": fe.clip_samples,
           "version": CACHE_VERSION, "resampler": "soxr-HQ", "downmix": "mean"}
    return _sha(json.dumps(cfg, sort_keys=True))


def list_key(fingerprints: list[str]) -> str:
    return _sha("\n".join(fingerprints))


def _namespace_dir(cache_dir: str, namespace: str, fe: FrontendConfig) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in namespace)
    return os.path.join(cache_dir, "waves", safe, frontend_key(fe))


def _read_meta(entry: str) -> dict | None:
    try:
        with open(os.path.join(entry, "meta.json")) as fh:
            meta = json.load(fh)
        if meta.get("version") != CACHE_VERSION or not os.path.isfile(
                os.path.join(entry, "wave.npy")):
            return None
        return meta
    except (OSError, ValueError):
        return None


def _find_entry(base: str, fps: list[str]) -> tuple[str, dict] | None:
    """A complete entry holding every fingerprint: the exact one first, else any superset."""
    exact = os.path.join(base, list_key(fps))
    meta = _read_meta(exact)
    if meta is not None:
        return exact, meta
    if not os.path.isdir(base):
        return None
    need = set(fps)
    for name in sorted(os.listdir(base)):
        if ".tmp-" in name:
            continue  # an unfinished write is never reused
        entry = os.path.join(base, name)
        meta = _read_meta(entry)
        if meta is not None and need <= set(meta["rows"]) | set(meta["bad"]):
            return entry, meta
    return None


def _materialize_cached(examples, fe, on_bad_file, desc, report, cache_dir, namespace,
                        num_workers) -> SplitData:
    base = _namespace_dir(cache_dir, namespace, fe)
    fps = [fingerprint(e.path) for e in examples]
    arr = None
    for _attempt in range(2):  # a second pass only after an unreadable entry was removed
        found = _find_entry(base, fps)
        if found is None:
            final = os.path.join(base, list_key(fps))
            with artefact_lock(final):  # one process decodes, the others wait and reuse it
                found = _find_entry(base, fps)
                if found is None:
                    clean_stale(final, ("{name}.tmp-*",))  # left by a killed builder
                    entry = build_cache_entry(examples, fe, base, fps, desc=desc,
                                              num_workers=num_workers)
                    meta = _read_meta(entry)
                    report.cache = "built"
        if found is not None:
            entry, meta = found
            report.cache = "hit"
        wave_file = os.path.join(entry, "wave.npy")
        try:
            arr = np.load(wave_file, mmap_mode="c")
            if arr.ndim != 2 or arr.shape[0] != meta["n"]:
                raise ValueError(f"shape {arr.shape}, {meta['n']} rows expected")
            break
        except (OSError, ValueError, EOFError) as exc:
            report_unreadable(wave_file, exc)
            with artefact_lock(entry):
                shutil.rmtree(entry, ignore_errors=True)
            arr = None
    if arr is None:
        raise OSError(f"waveform cache {base} could not be rebuilt readably")
    report.cache_path = entry
    rows, kept = [], []
    for ex, fp in zip(examples, fps):
        if fp in meta["bad"]:
            _handle_bad(AudioError(meta["bad"][fp]), ex, on_bad_file, report)
            continue
        r, resampled, downmixed, padded = meta["rows"][fp]
        report.resampled += resampled
        report.downmixed += downmixed
        report.padded += padded
        rows.append(r)
        kept.append(ex)
    if not kept:
        raise ValueError(f"{desc}: no usable clip (of {len(examples)})")
    if rows == list(range(arr.shape[0])):
        wave = torch.from_numpy(arr)  # zero-copy view of the memory map
        _MAPPED[wave.data_ptr()] = arr
    else:
        wave = torch.from_numpy(np.ascontiguousarray(arr[np.asarray(rows)]))
    return _assemble(kept, wave, fe)


# waveform tensors that are zero-copy views of a cache entry's memory map (data_ptr -> map)
_MAPPED: "weakref.WeakValueDictionary[int, np.memmap]" = weakref.WeakValueDictionary()


def _drop_pages(arr: np.memmap, lo: int, hi: int) -> None:
    """Let the kernel take back the pages of rows [lo, hi) of a memory-mapped (n, N) array
    (``madvise(MADV_DONTNEED)``; clean file-backed pages are simply re-read on next access).
    Without it every row ever read stays resident, so a pass over a split would hold the whole
    split in memory. No-op where the platform lacks it."""
    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not hasattr(mmap, "MADV_DONTNEED") or hi <= lo:
        return
    row = arr.strides[0]
    base = arr.offset - arr.offset % mmap.ALLOCATIONGRANULARITY  # where the mapping starts
    start = arr.offset - base + lo * row
    end = arr.offset - base + hi * row
    page = mmap.PAGESIZE
    start, end = -(-start // page) * page, end // page * page
    if end > start:
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, end - start)
        except (OSError, ValueError):
            pass


def release_rows(wave: torch.Tensor, index: torch.Tensor) -> None:
    """After a batch's rows were copied out of a memory-mapped split: release their pages,
    so that memory is bounded by the batch, not by the split (evaluation's single pass)."""
    arr = _MAPPED.get(wave.data_ptr()) if wave.numel() else None
    if arr is not None and len(index):
        _drop_pages(arr, int(index.min()), int(index.max()) + 1)


def build_cache_entry(examples: list[Example], fe: FrontendConfig, base: str,
                      fps: list[str] | None = None, *, desc: str = "caching",
                      num_workers: int | None = None) -> str:
    """Decode ``examples`` into a new cache entry under ``base``; returns its folder.

    Every file is attempted; bad ones are recorded with their error (the caller decides
    whether that fails the run). Written to a temporary folder and published atomically."""
    fps = fps if fps is not None else [fingerprint(e.path) for e in examples]
    final = os.path.join(base, list_key(fps))
    os.makedirs(base, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(final) + ".tmp-", dir=base)
    umask_mode(tmp, directory=True)
    try:
        full = np.lib.format.open_memmap(os.path.join(tmp, "full.npy"), mode="w+",
                                         dtype=np.float32, shape=(len(examples), fe.clip_samples))
        rows: dict[str, list[int]] = {}
        bad: dict[str, str] = {}
        n = 0
        for i, res, flags in _iter_loaded(examples, fe, num_workers, desc):
            if isinstance(res, AudioError):
                bad[fps[i]] = str(res)
                continue
            full[n] = res
            rows[fps[i]] = [n, flags[0], flags[1], flags[2]]
            n += 1
            if n % 64 == 0:  # written rows leave the process's memory (they are on disk)
                full.flush()
                _drop_pages(full, n - 64, n)
        full.flush()
        if n == len(examples):
            del full
            os.replace(os.path.join(tmp, "full.npy"), os.path.join(tmp, "wave.npy"))
        else:  # compact the kept rows into the final array, chunk by chunk
            out = np.lib.format.open_memmap(os.path.join(tmp, "wave.npy"), mode="w+",
                                            dtype=np.float32, shape=(n, fe.clip_samples))
            for s in range(0, n, 256):
                out[s:s + 256] = full[s:min(s + 256, n)]
            out.flush()
            del out, full
            os.remove(os.path.join(tmp, "full.npy"))
        meta = {"version": CACHE_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "frontend": {"sample_rate": fe.sample_rate, "clip_samples": fe.clip_samples},
                "n": n, "rows": rows, "bad": bad}
        with open(os.path.join(tmp, "meta.json"), "w") as fh:
            json.dump(meta, fh)
        if os.path.isdir(final) and _read_meta(final) is None:
            shutil.rmtree(final, ignore_errors=True)  # an unusable leftover of an old format
        try:
            os.replace(tmp, final)
        except OSError:  # another process published the same entry first
            if _read_meta(final) is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
