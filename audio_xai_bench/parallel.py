"""Concurrent forward passes on CPU: independent chunks of work on a few threads.

Many small forward passes (SLIME's N perturbed inputs per clip) leave CPU cores idle: a
(32, 4, 94, 64) convolution is too small for PyTorch's intra-op threads to split well. PyTorch
releases the GIL inside its kernels, so running two such chunks at once on two Python threads
can keep both cores busy (SLIME's perturbed inputs through the synth classifier: 1.1-1.7x on
2 shared cores, depending on the host's load; README, "Performance benchmarks"). It does not pay
everywhere: the scorer's chunks (inverse STFT, STFT, f) ran 10 % slower this way on synth,
since their STFTs already use the intra-op threads, so the scorer does not use it. Every
call runs on one intra-op thread, so a chunk's result does not depend on which thread
computed it, in which order, or how many ran at once (tested bit for bit), and results come
back in input order. On a GPU one stream of large batches is what
pays, so the helper runs serially there.

Grad mode is thread-local in PyTorch: ``map_chunks`` runs every call in inference mode, the
only mode its callers use.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")


def default_workers(device: torch.device | str) -> int:
    """Threads for concurrent chunks: torch's intra-op thread count on CPU, 1 elsewhere."""
    return max(1, torch.get_num_threads()) if torch.device(device).type == "cpu" else 1


_HEAP_WARM = False


def warm_heap() -> None:
    """Once per process: allocate and free one 30 MB block, which raises glibc's dynamic mmap
    threshold to 30 MB (its cap is 32 MB) and the trim threshold to 60 MB.

    A fresh process that has only run small forward passes still has glibc's default 128 KB
    threshold, so every activation of a few MB is a fresh mapping, page-faulted and zeroed on
    every call (the synth f's inference copy on 32 inputs: 8,300 minor faults per 5 forward
    passes, 0 after this; SLIME one chunk at a time 1.5x faster). glibc moves the threshold
    here by itself the first time a block of that size is freed (the scorer's 10 s clips do
    it), so this only makes the state explicit; it changes no result. The block is never
    touched, so it costs no page. Elsewhere than glibc it is a harmless allocation."""
    global _HEAP_WARM
    if not _HEAP_WARM:
        _HEAP_WARM = True
        torch.empty((30 << 20) // 4, dtype=torch.float32)  # freed at once: the point


def map_chunks(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """``[fn(x) for x in items]`` in inference mode, ``workers`` calls at a time, each call on
    ONE intra-op thread.

    One thread per call makes every result independent of how many run at once and of the
    machine's thread count (oneDNN's convolutions round differently with 1 and 2 threads),
    and two calls at once on two cores no longer each start a team of OpenMP threads that
    spin against each other (SLIME benchmark: 1.1x -> 1.2x over one chunk at a time). So
    ``workers`` is a pure speed setting: 1 runs the calls one after another on one core.
    PyTorch keeps the intra-op count per thread, but a new thread starts with the last count
    set anywhere, so the caller's count is set again afterwards. An exception in any call is
    raised here (the first in input order)."""
    def call(x: T) -> R:
        with torch.inference_mode():
            return fn(x)

    warm_heap()
    workers = max(1, min(int(workers), len(items)))
    threads = torch.get_num_threads()
    try:
        if workers == 1:
            torch.set_num_threads(1)
            return [call(x) for x in items]
        with ThreadPoolExecutor(workers, thread_name_prefix="axb-chunk",
                                initializer=torch.set_num_threads, initargs=(1,)) as pool:
            return list(pool.map(call, items))
    finally:
        if threads != 1:
            torch.set_num_threads(threads)  # the caller's count, and what new threads start with
