"""The time-frequency region grid shared by SLIME, VIBI and the attribution baselines.

A grid of ``n_freq`` frequency bands x ``n_time`` time segments is defined once and read in
two domains:

- on the classifier's log-mel input (T frames x M mel bands): time segment ``s`` holds the
  frames ``t`` with ``floor(t * n_time / T) == s``; band ``b`` holds the mel bands ``m`` with
  ``floor(m * n_freq / M) == b`` (contiguous, equally many mel bands per band, so the bands
  are uniform on the mel scale);
- on the STFT bins (F bins x T frames) of the log1p spectrogram X that explanations decompose:
  the same frames, and each STFT bin ``f`` belongs to the band of **the mel band whose filter
  weight is largest at f** (``argmax_m mel[m, f]``). Bins no filter reaches (DC, or above
  ``fmax``) take the mel band whose centre frequency (filter peak) is nearest.

Region ``k = b * n_time + s`` (band-major). Every STFT bin belongs to exactly one region, so
the regions partition X (``api.SegmentExplanation``) and a per-region score computed on the
log-mel input (attribution sums, VIBI chunk scores) is the score of the same region of X.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


def time_assignment(T: int, n_time: int, device=None) -> Tensor:
    """(T,) long: the time segment of each frame (contiguous, near-equal lengths)."""
    n_time = max(1, min(int(n_time), T))
    return torch.div(torch.arange(T, device=device) * n_time, T, rounding_mode="floor")


def mel_band_assignment(M: int, n_freq: int, device=None) -> Tensor:
    """(M,) long: the frequency band of each mel band."""
    n_freq = max(1, min(int(n_freq), M))
    return torch.div(torch.arange(M, device=device) * n_freq, M, rounding_mode="floor")


def stft_to_mel_bin(mel: Tensor) -> Tensor:
    """(F,) long: for each STFT bin, the mel band whose filter is largest there; bins outside
    every filter take the mel band with the nearest filter peak."""
    M, F = mel.shape
    best = mel.argmax(dim=0)
    empty = mel.amax(dim=0) <= 0
    if bool(empty.any()):
        peaks = mel.argmax(dim=1).float()  # (M,) STFT bin of each filter's peak
        bins = torch.arange(F, device=mel.device, dtype=torch.float32)
        nearest = (bins[:, None] - peaks[None, :]).abs().argmin(dim=1)
        best = torch.where(empty, nearest, best)
    return best


@dataclass
class RegionGrid:
    """The n_freq x n_time grid for one front-end and clip length."""

    n_freq: int
    n_time: int
    T: int
    M: int
    band_of_mel: Tensor    # (M,) long
    seg_of_frame: Tensor   # (T,) long
    band_of_bin: Tensor    # (F,) long

    @classmethod
    def build(cls, mel: Tensor, T: int, n_freq: int, n_time: int) -> "RegionGrid":
        """``mel`` is the front-end's (M, F) filter matrix, ``T`` the number of frames."""
        M = mel.shape[0]
        n_freq, n_time = max(1, min(int(n_freq), M)), max(1, min(int(n_time), T))
        band_of_mel = mel_band_assignment(M, n_freq, mel.device)
        return cls(n_freq, n_time, T, M, band_of_mel, time_assignment(T, n_time, mel.device),
                   band_of_mel[stft_to_mel_bin(mel)])

    @property
    def K(self) -> int:
        return self.n_freq * self.n_time

    def segments(self, batch: int = 1) -> Tensor:
        """(batch, F, T) long region index of every STFT bin, in [0, K)."""
        seg = self.band_of_bin[:, None] * self.n_time + self.seg_of_frame[None, :]
        return seg.unsqueeze(0).expand(batch, -1, -1)

    def logmel_segments(self) -> Tensor:
        """(T, M) long region index of every log-mel cell."""
        return self.band_of_mel[None, :] * self.n_time + self.seg_of_frame[:, None]

    def _onehots(self, dtype) -> tuple[Tensor, Tensor]:
        ot = torch.nn.functional.one_hot(self.seg_of_frame, self.n_time).to(dtype)  # (T, nt)
        om = torch.nn.functional.one_hot(self.band_of_mel, self.n_freq).to(dtype)   # (M, nf)
        return ot, om

    def region_sum(self, a: Tensor) -> Tensor:
        """(B, [1,] T, M) map on the log-mel grid -> (B, K) sums over each region."""
        if a.dim() == 4:
            a = a.sum(1)
        ot, om = self._onehots(a.dtype)
        r = torch.einsum("btm,ts,mf->bfs", a, ot.to(a.device), om.to(a.device))
        return r.reshape(a.shape[0], -1)

    def region_mean(self, a: Tensor) -> Tensor:
        """(B, C, T, M) -> (B, C, K) means over each region (for pooling feature maps)."""
        ot, om = self._onehots(a.dtype)
        ot, om = ot.to(a.device), om.to(a.device)
        ot, om = ot / ot.sum(0, keepdim=True), om / om.sum(0, keepdim=True)
        r = torch.einsum("bctm,ts,mf->bcfs", a, ot, om)
        return r.reshape(a.shape[0], a.shape[1], -1)

    def expand_logmel(self, v: Tensor) -> Tensor:
        """(B, K) per-region values -> (B, 1, T, M) on the log-mel grid."""
        idx = self.logmel_segments().to(v.device).flatten()
        return v[:, idx].view(v.shape[0], 1, self.T, self.M)

    def stft_region_sum(self, a: Tensor) -> Tensor:
        """(B, F, T) map on the STFT grid -> (B, K) sums over each region (attributions
        computed on X, for classifiers that do not read the task's log-mel)."""
        seg = self.segments(1)[0].to(a.device).flatten()
        out = torch.zeros(a.shape[0], self.K, dtype=a.dtype, device=a.device)
        return out.index_add_(1, seg, a.flatten(1))

    def expand_stft(self, v: Tensor) -> Tensor:
        """(B, K) per-region values -> (B, F, T) on the STFT grid."""
        seg = self.segments(1)[0].to(v.device)
        return v[:, seg.flatten()].view(v.shape[0], *seg.shape)


def grid_for(frontend, T: int, n_freq: int, n_time: int) -> RegionGrid:
    """The grid of ``frontend`` (an ``audio.Frontend``) for clips of T frames."""
    return RegionGrid.build(frontend.mel, T, n_freq, n_time)


def mask_logmel(logmel: Tensor, gate: Tensor) -> Tensor:
    """Switch log-mel cells off towards each clip's floor (its minimum, i.e. top_db below the
    peak): ``floor + gate * (logmel - floor)``; ``gate`` (B, 1, T, M) in [0, 1]."""
    floor = logmel.amin(dim=(1, 2, 3), keepdim=True)
    return floor + gate * (logmel - floor)


def logmel_of_masked(frontend, X: Tensor, gate: Tensor) -> Tensor:
    """f's input for X (B, F, T) with STFT bins gated by ``gate`` (B, F, T) in [0, 1]:
    expm1 of the gated log1p magnitude, then the front-end's log-mel."""
    return frontend.logmel_from_magnitude(torch.expm1(X * gate))


def reads_logmel(f) -> bool:
    """True when f reads the task's log-mel (the Kumar CNN): region methods then perturb and
    attribute on the log-mel as before; otherwise (a waveform classifier) they work on the
    STFT magnitude X and f's input is re-synthesised from it (``model.input_from_magnitude``)."""
    from audio_xai_bench.model import input_kind

    return input_kind(f) == "logmel"


def magnitude_forward(method, phase: Tensor, length: int):
    """``fwd(Xv)``: the region method's outputs (logits or probabilities, ``output``) for log1p
    magnitudes ``Xv`` (n, F, T) of the clips whose phase is ``phase`` (B, F, T); ``n`` may be a
    multiple of B (perturbations stacked batch-major, as Captum does)."""
    from audio_xai_bench.model import input_from_magnitude

    def fwd(Xv: Tensor) -> Tensor:
        reps = Xv.shape[0] // phase.shape[0]
        ph = phase.repeat(reps, 1, 1) if reps > 1 else phase
        x = input_from_magnitude(method.f, method.frontend, torch.expm1(Xv.clamp_min(0.0)),
                                 ph, length)
        return method.model_outputs(x)
    return fwd


class RegionMethod:
    """Mixin of the region-based explainers (SLIME, VIBI, attribution baselines): one cached
    ``RegionGrid`` per clip length, and f's outputs as logits or probabilities (``output``
    setting). Uses ``self.frontend``, ``self.config`` (``n_freq``, ``n_time``, ``output``),
    and, for ``model_outputs``, ``self.f`` and ``self.kind``."""

    def grid(self, T: int) -> RegionGrid:
        grids = self.__dict__.setdefault("_grids", {})
        if T not in grids:
            grids[T] = grid_for(self.frontend, T, int(self.config["n_freq"]),  # type: ignore[attr-defined]
                                int(self.config["n_time"]))  # type: ignore[attr-defined]
        return grids[T]

    def model_outputs(self, logmel: Tensor) -> Tensor:
        from audio_xai_bench.classifier import probabilities

        logits = self.f(logmel)  # type: ignore[attr-defined]
        if self.config.get("output", "logit") == "logit":  # type: ignore[attr-defined]
            return logits
        return probabilities(logits, self.kind)  # type: ignore[attr-defined]


class RelevanceMemo:
    """Remembers the relevances of (rows, classes) already explained, so that a second pass
    over the same batch (the scorer's random-baseline pass) does not redo a costly explanation.
    Keyed by the rows' split indices, the classes and a checksum of X; explanations are
    deterministic, so a hit returns exactly what recomputing would."""

    def __init__(self, max_items: int = 4096) -> None:
        self.store: dict[tuple, Tensor] = {}
        self.max_items = max_items

    @staticmethod
    def key(index: Tensor, classes: Tensor, X: Tensor) -> tuple:
        return (tuple(index.tolist()), tuple(classes.tolist()), tuple(X.shape),
                float(X.double().sum()), float(X.flatten(1)[:, ::97].double().sum()))

    def get(self, key: tuple) -> Tensor | None:
        return self.store.get(key)

    def put(self, key: tuple, value: Tensor) -> None:
        if len(self.store) >= self.max_items:
            self.store.pop(next(iter(self.store)))
        self.store[key] = value.detach().clone()
