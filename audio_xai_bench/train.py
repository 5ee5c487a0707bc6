"""The one training loop every model of the suite uses (classifier f and every method).

Adam, shuffled mini-batches whose features are computed on the device from the waveforms,
bf16 autocast on CUDA, a progress bar, model selection on a validation score (or the last
epoch), and a checkpoint written atomically after each epoch so an interrupted run resumes
where it stopped.
"""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn
from .progress import bar as progress_bar

from .api import Batch, SplitData
from .data import release_rows
from .results import umask_mode


class BatchLoader:
    """Mini-batches of a split with features computed on the device by the front-end.

    When the split's X and log-mel fit in ``cache_bytes`` they are computed once and kept on
    the device (training re-reads them every epoch); otherwise they are computed per batch.
    The phase is only computed when ``with_phase`` (evaluation needs it, training does not).
    """

    def __init__(self, split: SplitData, frontend, batch_size: int = 32, shuffle: bool = False,
                 seed: int = 0, device: torch.device | str = "cpu", with_phase: bool = False,
                 cache_bytes: float = 2e9, with_sources: bool = False) -> None:
        self.split, self.frontend = split, frontend
        # fill Batch.sources / source_classes (methods that declare ``needs_sources``)
        self.with_sources = with_sources and split.sources is not None
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.device = torch.device(device)
        self.with_phase = with_phase
        # a single ordered pass (evaluation): rows read from a memory-mapped waveform cache are
        # released once copied, so the pass holds one batch, not the split
        self.release = with_phase and not shuffle
        self.epoch = 0
        pin = self.device.type == "cuda"
        self.wave = split.wave.pin_memory() if pin else split.wave
        cfg = frontend.config
        per_clip = 4 * cfg.n_frames * (cfg.n_freq + cfg.n_mels)
        self._cache: tuple[Tensor, Tensor] | None = None
        if not with_phase and per_clip * len(split) <= cache_bytes:
            self._cache = self._precompute()

    @torch.no_grad()  # not inference_mode: the cached tensors feed autograd graphs later
    def _precompute(self) -> tuple[Tensor, Tensor]:
        Xs, Ls = [], []
        for i in range(0, len(self.split), 64):
            wave = self.wave[i:i + 64].to(self.device)
            S = self.frontend.stft(wave).abs()
            Xs.append(torch.log1p(S))
            Ls.append(self.frontend.logmel_from_magnitude(S))
        return torch.cat(Xs), torch.cat(Ls)

    def __len__(self) -> int:
        return (len(self.split) + self.batch_size - 1) // self.batch_size

    def batch(self, index: Tensor) -> Batch:
        s = self.split
        wave = self.wave[index]
        if self.release:
            release_rows(s.wave, index)
        if self.device.type == "cuda":  # indexing a pinned tensor gives an unpinned copy:
            wave = wave.pin_memory()    # pin it, so that the copy below is asynchronous
        wave = wave.to(self.device, non_blocking=True)
        if self._cache is not None:
            dev_index = index.to(self.device)
            X, logmel = self._cache[0][dev_index], self._cache[1][dev_index]
            phase = torch.empty(0, device=self.device)
        elif self.with_phase:
            X, phase, logmel = self.frontend.analyze(wave)
        else:
            S = self.frontend.stft(wave).abs()
            X, logmel = torch.log1p(S), self.frontend.logmel_from_magnitude(S)
            phase = torch.empty(0, device=self.device)
        src = src_cls = None
        if self.with_sources:
            src = s.sources[index].to(self.device)
            src_cls = s.source_classes[index].to(self.device)
        return Batch(wave=wave, X=X, phase=phase, logmel=logmel,
                     target=s.target[index].to(self.device), mask=s.mask[index].to(self.device),
                     index=index.to(self.device), sources=src, source_classes=src_cls)

    def batch_indices(self) -> list[Tensor]:
        """The rows of each batch of an ordered (unshuffled) pass, in order."""
        if self.shuffle:
            raise ValueError("batch_indices is for an ordered pass (shuffle=False)")
        return list(torch.arange(len(self.split)).split(self.batch_size))

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.split)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        self.epoch += 1
        for i in range(0, n, self.batch_size):
            yield self.batch(order[i:i + self.batch_size])


def atomic_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same folder, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask_mode(tmp)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class CheckpointError(ValueError):
    """A checkpoint or cache file that cannot be read as a plain state dict; names the file."""


def load_checkpoint(path: str | os.PathLike, map_location="cpu"):
    """torch.load with ``weights_only=True`` (never unpickle arbitrary objects). A missing,
    truncated or corrupt file, or one that holds more than tensors and plain values, raises
    :class:`CheckpointError` naming the file."""
    import pickle

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path} is not a plain state dict (tensors, numbers, strings, lists, dicts): "
            f"it holds pickled Python objects, which the suite refuses to load; save "
            f"model.state_dict() instead") from None
    except (EOFError, OSError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path} is truncated or not a torch checkpoint "
                              f"({type(exc).__name__}); delete it to rebuild it") from None


def get_rng_state() -> dict:
    """Every random state a training epoch draws from (torch CPU and CUDA, numpy, Python), in
    tensors and plain values so that ``torch.load(weights_only=True)`` reads it back. The
    loaders' shuffling needs none: it is seeded by (seed, epoch)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    py = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                      "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
            "python": {"version": py[0], "state": torch.tensor(py[1], dtype=torch.int64),
                       "gauss": py[2]}}


def set_rng_state(state: dict) -> None:
    """Restore what :func:`get_rng_state` saved (exact resume: the resumed run draws the same
    dropout masks and random numbers as an uninterrupted one)."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))


def fit(model: nn.Module, params: Iterable[nn.Parameter],
        loss_fn: Callable[[Batch, int], dict[str, Tensor]], loader: BatchLoader, *,
        epochs: int, lr: float,
        validate: Callable[[], float | tuple[float, float]] | None = None,
        select: str = "valid", checkpoint: str | os.PathLike | None = None,
        desc: str = "training", lr_schedule: Callable[[int], float] | None = None,
        stop: Callable[[list[dict[str, float]]], bool] | None = None
        ) -> list[dict[str, float]]:
    """Train ``model`` with Adam over ``params`` for ``epochs`` epochs.

    ``loss_fn(batch, epoch)`` returns a dict with the key ``"loss"`` (the one minimised) and any
    other scalars to log. ``validate()`` returns a score (higher is better) after each epoch,
    or ``(score, loss)``: then an epoch that ties the best score replaces it when its
    validation loss is lower (so a score that saturates, e.g. agreement 1.0, does not freeze
    the selection at the first epoch that reaches it). With ``select='valid'`` the best
    epoch's weights are restored at the end, with ``select='last'`` the last epoch's.
    ``stop(history)``, checked after each epoch, ends training early when it returns True.
    Returns the per-epoch history (means of the logged scalars, the validation score and
    loss, the learning rate).
    """
    if select not in ("valid", "last"):
        raise ValueError(f"select must be 'valid' or 'last', not {select!r}")
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    device = loader.device
    amp = device.type == "cuda"
    history: list[dict[str, float]] = []
    best_score, best_loss, best_state, start = -float("inf"), float("inf"), None, 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        start, history = int(state["epoch"]), list(state["history"])
        best_score, best_state = float(state["best_score"]), state["best_state"]
        best_loss = float(state.get("best_loss", float("inf")))
        loader.epoch = start
        if "rng" in state:
            set_rng_state(state["rng"])
    bar = progress_bar(range(start, epochs), desc=desc, leave=False, initial=start, total=epochs,
               disable=epochs == 0)
    for epoch in bar:
        factor = lr_schedule(epoch) if lr_schedule else 1.0
        for group in opt.param_groups:
            group["lr"] = lr * factor
        model.train()
        sums: dict[str, float] = {}
        n = 0
        for batch in loader:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logs = loss_fn(batch, epoch)
            opt.zero_grad(set_to_none=True)
            logs["loss"].backward()
            opt.step()
            bs = len(batch)
            n += bs
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * bs
        record = {k: v / max(n, 1) for k, v in sums.items()}
        record["epoch"], record["lr"] = epoch + 1, lr * factor
        if validate is not None:
            model.eval()
            out = validate()
            score, vloss = (float(out[0]), float(out[1])) if isinstance(out, tuple) \
                else (float(out), float("inf"))
            record["valid_score"] = score
            if isinstance(out, tuple):
                record["valid_loss"] = vloss
            if score > best_score or (score == best_score and vloss < best_loss):
                best_score, best_loss = score, vloss
                best_state = copy.deepcopy(model.state_dict())
        history.append(record)
        bar.set_postfix(loss=f"{record.get('loss', float('nan')):.4f}",
                        **({"valid": f"{record['valid_score']:.3f}"} if validate else {}))
        if ckpt is not None:
            atomic_save({"model": model.state_dict(), "optim": opt.state_dict(),
                         "epoch": epoch + 1, "history": history, "best_score": best_score,
                         "best_loss": best_loss, "best_state": best_state,
                         "rng": get_rng_state()}, ckpt)
        if stop is not None and stop(history):
            break
    if select == "valid" and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    if ckpt is not None and ckpt.exists():
        ckpt.unlink()  # the caller stores the final weights; the resume state is no longer needed
    return history
