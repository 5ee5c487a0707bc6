"""f's outputs on a split, computed once: the frozen classifier read by post-hoc interpreters.

A post-hoc interpreter (L2I, FLINT, VIBI) reads the frozen f's logits and hidden maps for
every training clip in every epoch. f is in ``eval()`` mode (BatchNorm on running statistics,
dropout off) and the loader's features are a deterministic function of the waveform (no
augmentation: ``BatchLoader`` only reshuffles the order, and each batch carries its rows'
``index``), so these outputs are the same every epoch and are computed here once.

Storage is bounded: when logits + maps of the whole split fit in ``budget_bytes`` they are
kept as tensors on the device; otherwise they go to a float32 memory-mapped file under
``cache_dir`` (a temporary file, removed by ``close()`` or when the object is collected) and
each batch's rows are read from it. Paper-scale figure: the full-width f's B4+B5+B6 maps of
one 5 s ESC-50 clip are 188 k floats (0.75 MB), 1.2 GB for the 1,600 training clips.
"""
from __future__ import annotations

import os
import tempfile
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from audio_xai_bench.model import classifier_input

DEFAULT_BUDGET = 1e9  # bytes kept in memory before falling back to a memory-mapped file


class FrozenOutputs:
    """Logits (N, C) and hidden maps {name: (N, C_l, T_l, M_l)} of a frozen f on one split,
    looked up by the split's row index (``batch.index``)."""

    def __init__(self, f: nn.Module, loader, layers: Sequence[str] = (),
                 budget_bytes: float = DEFAULT_BUDGET, cache_dir: str | None = None) -> None:
        self.layers = tuple(layers)
        self.device = loader.device
        self._file: str | None = None
        n = len(loader.split)
        self.store: dict[str, Tensor | np.ndarray] = {}
        with torch.no_grad():  # not inference_mode: the stored tensors feed autograd graphs
            for batch in loader:  # unshuffled; every row once
                x = classifier_input(f, batch)
                if self.layers:
                    logits, hidden = f.forward_hidden(x)
                else:  # logits only: any classifier with a forward (black-box too)
                    logits, hidden = f(x), {}
                outs = {"__logits__": logits, **{k: hidden[k] for k in self.layers}}
                if not self.store:
                    self._allocate(n, {k: v.shape[1:] for k, v in outs.items()},
                                   budget_bytes, cache_dir)
                for k, v in outs.items():
                    dst = self.store[k]
                    if isinstance(dst, np.ndarray):
                        dst[batch.index.cpu().numpy()] = v.float().cpu().numpy()
                    else:
                        dst[batch.index] = v.float()
        self.in_memory = self._file is None

    def _allocate(self, n: int, shapes: dict[str, torch.Size], budget: float,
                  cache_dir: str | None) -> None:
        sizes = {k: int(np.prod(s)) for k, s in shapes.items()}
        self.nbytes = 4 * n * sum(sizes.values())
        if self.nbytes <= budget:
            for k, s in shapes.items():
                self.store[k] = torch.empty((n, *s), device=self.device)
            return
        folder = os.path.join(cache_dir or tempfile.gettempdir(), "f_outputs")
        os.makedirs(folder, exist_ok=True)
        fd, self._file = tempfile.mkstemp(dir=folder, suffix=".f32")
        os.close(fd)
        mm = np.memmap(self._file, dtype=np.float32, mode="w+", shape=(self.nbytes // 4,))
        offset = 0
        for k, s in shapes.items():
            self.store[k] = mm[offset:offset + n * sizes[k]].reshape(n, *s)
            offset += n * sizes[k]

    def _get(self, key: str, index: Tensor) -> Tensor:
        src = self.store[key]
        if isinstance(src, np.ndarray):
            rows = np.asarray(src[np.sort(index.cpu().numpy())])  # sorted reads from disk
            order = torch.argsort(torch.argsort(index.cpu()))
            return torch.from_numpy(rows)[order].to(self.device, non_blocking=True)
        return src[index.to(self.device)]

    def __call__(self, index: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(logits, {layer: map}) of the rows ``index`` of the split."""
        return self._get("__logits__", index), {k: self._get(k, index) for k in self.layers}

    def close(self) -> None:
        """Drop the stored outputs (and the memory-mapped file, if any)."""
        self.store = {}
        if self._file is not None and os.path.exists(self._file):
            os.remove(self._file)
        self._file = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass
