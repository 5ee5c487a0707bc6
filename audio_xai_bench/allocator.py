"""The process's heap policy for loops of forward passes (glibc only; the CLI sets it).

A loop of forward passes frees and reallocates the same few activation tensors (2-30 MB) on
every call. glibc's default returns freed memory at the top of a heap to the system as soon as
it exceeds the trim threshold, so the next call page-faults fresh, zeroed pages for the same
tensors: SLIME's 800 perturbed inputs through the synth f took ~6,000 minor page faults per
explain call (two concurrent chunks) and ~40,000 one chunk at a time, 10-20 % of its time.
``keep_heap_pad`` asks glibc (``mallopt(M_TOP_PAD)``) to keep up to ``pad`` bytes free at the
top of each heap instead (the SLIME benchmark: faults 6,000 -> 8 and 1.1-1.2x faster at 16 MB).
The process then holds at most ``pad`` more bytes per heap than it uses; nothing else
changes, and no result depends on it.

The command line calls it once at start. ``AXB_MALLOC_TOP_PAD`` = bytes sets the pad
(``0`` leaves the allocator alone); a ``MALLOC_TOP_PAD_`` already in the environment (glibc's
own variable) is the user's choice and is left as it is. Off glibc (macOS, Windows, musl) it
does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_TOP_PAD = -2  # glibc <malloc.h>
DEFAULT_PAD = 16 << 20
ENV = "AXB_MALLOC_TOP_PAD"


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def requested_pad(environ: os._Environ | dict[str, str] | None = None) -> int | None:
    """The pad to set: ``AXB_MALLOC_TOP_PAD`` (bytes) or ``DEFAULT_PAD``; None where the user
    set glibc's ``MALLOC_TOP_PAD_`` or asked for 0."""
    env = os.environ if environ is None else environ
    if "MALLOC_TOP_PAD_" in env:
        return None
    raw = env.get(ENV, "").strip()
    if not raw:
        return DEFAULT_PAD
    try:
        pad = int(raw)
    except ValueError:
        raise ValueError(f"{ENV}={raw!r}: expected a whole number of bytes (0 = off)") from None
    if pad < 0 or pad > 2**31 - 1:
        raise ValueError(f"{ENV}={raw!r}: expected 0 .. {2**31 - 1} bytes")
    return pad or None


def keep_heap_pad(pad: int | None = DEFAULT_PAD) -> bool:
    """``mallopt(M_TOP_PAD, pad)``: keep up to ``pad`` freed bytes at the top of each heap.
    True where glibc accepted it; False off glibc or for ``pad`` None / 0."""
    if not pad:
        return False
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_TOP_PAD, int(pad)) == 1)
