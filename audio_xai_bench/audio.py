"""Audio I/O and the front-end: STFT -> log1p magnitude + phase, log-mel, and the inverse.

All transforms are torch, batched over clips and run on any device. Settings follow the
authors' code where the paper is silent (``reference/l2i_protocol_facts.md`` section 1):
periodic Hann window, ``center=True`` with reflect padding, X = ln(1 + |STFT|), the classifier's
log-mel = power_to_db(mel_filters @ |STFT|) with librosa's Slaney mel filters, ref 1.0,
amin 1e-10 and top_db 80 relative to each clip's maximum.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from .api import FrontendConfig


class AudioError(ValueError):
    """A file that cannot be used; the message names the file."""


def load_audio(path: str | os.PathLike, sample_rate: int, *, expected_rate: int | None = None
               ) -> tuple[np.ndarray, dict]:
    """Read a file as mono float32 at ``sample_rate``.

    Multi-channel audio is down-mixed by averaging channels; a different rate is resampled
    with soxr (high quality). Returns the waveform and a record of what was done to it.
    Raises ``AudioError`` naming the file when it is missing, unreadable, empty or not finite.
    """
    import soundfile as sf

    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(f"audio file not found: {path}")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError / RuntimeError subclasses
        raise AudioError(f"cannot decode audio file {path}: {exc}") from exc
    info = {"channels": int(data.shape[1]), "file_rate": int(sr)}
    if data.shape[0] == 0:
        raise AudioError(f"audio file {path} is empty (0 samples)")
    declared = wav_declared_frames(path)
    if declared is not None and data.shape[0] < declared:
        raise AudioError(f"audio file {path} is truncated: its header declares {declared} "
                         f"frames, the file holds {data.shape[0]}")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file {path} contains NaN or infinite samples")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    if sr != sample_rate:
        import soxr

        wave = soxr.resample(wave, sr, sample_rate, quality="HQ").astype(np.float32)
        info["resampled_from"] = int(sr)
    return np.ascontiguousarray(wave, dtype=np.float32), info


def wav_declared_frames(path: str) -> int | None:
    """Frames a RIFF/WAVE header declares (data chunk size / block align), or None for other
    formats or an unreadable header. libsndfile silently shortens a truncated WAV to the bytes
    present, so this is how a cut-off download is told from a short recording."""
    import struct

    try:
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
                return None
            block_align = None
            while True:
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if cid == b"fmt ":
                    fmt = fh.read(size + (size & 1))
                    block_align = struct.unpack("<H", fmt[12:14])[0]
                elif cid == b"data":
                    if not block_align or size == 0xFFFFFFFF:  # streamed WAV: size unknown
                        return None
                    return size // block_align
                else:
                    fh.seek(size + (size & 1), 1)
    except (OSError, struct.error):
        return None


#: a decoded clip shorter than this share of the task's clip length is a bad file (it follows
#: ``--on-bad-file``); a shorter-than-clip file above it is zero-padded and counted
MIN_CLIP_FRACTION = 0.5


def fix_length(wave: np.ndarray, n: int) -> np.ndarray:
    """Zero-pad at the end or crop the end to exactly ``n`` samples (the suite's documented
    clip policy: the clip starts at the file's start; L2I's code pads SONYC the same way)."""
    if wave.shape[-1] >= n:
        return wave[..., :n]
    pad = [(0, 0)] * (wave.ndim - 1) + [(0, n - wave.shape[-1])]
    return np.pad(wave, pad)


def check_waveform(wave: np.ndarray, name: str) -> None:
    """Reject empty or non-finite waveforms with a message naming the clip."""
    if wave.size == 0:
        raise AudioError(f"clip {name} is empty")
    if not np.isfinite(wave).all():
        raise AudioError(f"clip {name} contains NaN or infinite samples")


@lru_cache(maxsize=16)
def _mel_matrix(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels).astype(np.float32)


class Frontend:
    """The task's time-frequency front-end on one device."""

    def __init__(self, config: FrontendConfig, device: torch.device | str = "cpu") -> None:
        self.config = config
        self.device = torch.device(device)
        self.window = torch.hann_window(config.n_fft, periodic=True, device=self.device)
        self.mel = torch.from_numpy(_mel_matrix(config.sample_rate, config.n_fft,
                                                config.n_mels)).to(self.device)

    def to(self, device: torch.device | str) -> "Frontend":
        return Frontend(self.config, device)

    def stft(self, wave: Tensor) -> Tensor:
        """(B, N) -> complex (B, F, T)."""
        c = self.config
        return torch.stft(wave.to(self.device), c.n_fft, hop_length=c.hop_length,
                          win_length=c.n_fft, window=self.window, center=True,
                          pad_mode="reflect", return_complex=True)

    def logmel_from_magnitude(self, mag: Tensor) -> Tensor:
        """|STFT| (B, F, T) -> classifier input (B, 1, T, M): power_to_db(mel @ |S|)."""
        mel = torch.einsum("mf,bft->btm", self.mel, mag)
        db = 10.0 * torch.log10(mel.clamp_min(1e-10))
        top = db.amax(dim=(1, 2), keepdim=True)
        db = torch.maximum(db, top - self.config.top_db)
        return db.unsqueeze(1)

    def analyze(self, wave: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B, N) -> X = log1p|STFT| (B, F, T), unit phase (complex), log-mel (B, 1, T, M)."""
        S = torch.view_as_real(self.stft(wave))  # real arithmetic: faster than complex ops on CPU
        mag = torch.linalg.vector_norm(S, dim=-1)
        phase = torch.view_as_complex(S / (mag + 1e-9).unsqueeze(-1))  # P = S / (1e-9 + |S|)
        return torch.log1p(mag), phase, self.logmel_from_magnitude(mag)

    def logmel(self, wave: Tensor) -> Tensor:
        return self.logmel_from_magnitude(self.stft(wave).abs())

    def invert(self, X: Tensor, phase: Tensor, length: int | None = None) -> Tensor:
        """INV(X, P): expm1 of the log1p magnitude times the phase, inverse STFT -> (B, N)."""
        c = self.config
        S = torch.expm1(X.clamp_min(0.0)).to(phase.dtype) * phase
        return torch.istft(S, c.n_fft, hop_length=c.hop_length, win_length=c.n_fft,
                           window=self.window, center=True, length=length)

    def reanalyze_logmel(self, X: Tensor, phase: Tensor, length: int) -> Tensor:
        """f's input for a modified spectrogram: resynthesise, then re-analyse (authors' FF)."""
        return self.logmel(self.invert(X, phase, length))
