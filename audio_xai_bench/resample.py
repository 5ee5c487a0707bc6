"""Band-limited resampling of batched waveforms in torch, on the tensor's own device.

Polyphase windowed-sinc interpolation (the maths of ``torchaudio.functional.resample`` with
``sinc_interp_hann`` / ``sinc_interp_kaiser``, written here so the suite does not depend on
torchaudio): the ratio ``new_sr / orig_sr`` is reduced by its gcd to ``new / orig``; output
sample ``j`` of each block of ``new`` outputs is a dot product of the input with a sinc
low-pass (cut-off ``rolloff`` x the lower of the two Nyquist frequencies, ``width`` zero
crossings either side) evaluated at the fractional position ``j * orig / new``. All ``new``
phases form one conv1d kernel (new, 1, 2 * width + orig) applied with stride ``orig``.

Differentiable (one conv1d), batched, no host copies. Kernels are cached per
(orig, new, filter settings, device, dtype).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["resample", "sinc_kernel"]


@functools.lru_cache(maxsize=64)
def _kernel(orig: int, new: int, lowpass_filter_width: int, rolloff: float, window: str,
            beta: float, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, int]:
    base = min(orig, new) * rolloff  # cut-off, in cycles per ``orig``-block (gcd-reduced)
    width = math.ceil(lowpass_filter_width * orig / base)  # input taps either side
    # input tap positions relative to each output phase, in units of the input period
    idx = torch.arange(-width, width + orig, dtype=torch.float64, device=device) / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64, device=device)[:, None] / new + idx
    t = (t * base).clamp(-lowpass_filter_width, lowpass_filter_width)  # in zero crossings
    if window == "hann":
        win = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    elif window == "kaiser":
        b = torch.tensor(beta, dtype=torch.float64, device=device)
        win = torch.special.i0(b * torch.sqrt(1 - (t / lowpass_filter_width) ** 2)) \
            / torch.special.i0(b)
    else:
        raise ValueError(f"window must be 'hann' or 'kaiser', not {window!r}")
    t = t * math.pi
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / torch.where(t == 0, 1.0, t))
    k = sinc * win * (base / orig)
    return k.to(dtype)[:, None, :].contiguous(), width


def sinc_kernel(orig_sr: int, new_sr: int, lowpass_filter_width: int = 6,
                rolloff: float = 0.99, window: str = "hann", beta: float = 14.769656459379492,
                device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> tuple[Tensor, int, int, int]:
    """The polyphase kernel (new, 1, 2 * width + orig), ``width``, and the gcd-reduced
    ``orig``, ``new``."""
    g = math.gcd(int(orig_sr), int(new_sr))
    orig, new = int(orig_sr) // g, int(new_sr) // g
    k, width = _kernel(orig, new, int(lowpass_filter_width), float(rolloff), window,
                       float(beta), torch.device(device), dtype)
    return k, width, orig, new


def resample(wave: Tensor, orig_sr: int, new_sr: int, *, lowpass_filter_width: int = 6,
             rolloff: float = 0.99, window: str = "hann",
             beta: float = 14.769656459379492) -> Tensor:
    """Resample ``wave`` (..., N) from ``orig_sr`` to ``new_sr`` Hz; returns (..., M) with
    M = ceil(N * new_sr / orig_sr), same device and dtype (float). Equal rates: ``wave``.

    Defaults are torchaudio's (Hann window, 6 zero crossings, cut-off 0.99 of the lower
    Nyquist); ``window="kaiser"`` with ``beta`` gives its Kaiser variant. The signal is taken
    as zero outside [0, N), so the first/last ``lowpass_filter_width`` periods of the lower
    rate are edge-affected.
    """
    if orig_sr <= 0 or new_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {orig_sr} -> {new_sr}")
    if int(orig_sr) == int(new_sr):
        return wave
    if not torch.is_floating_point(wave):
        raise TypeError(f"resample needs a float tensor, got {wave.dtype}")
    kernel, width, orig, new = sinc_kernel(orig_sr, new_sr, lowpass_filter_width, rolloff,
                                           window, beta, wave.device, wave.dtype)
    shape = wave.shape
    n = shape[-1]
    x = wave.reshape(-1, 1, n)
    x = F.pad(x, (width, width + orig))
    y = F.conv1d(x, kernel, stride=orig)  # (R, new, n_blocks)
    y = y.transpose(1, 2).reshape(x.shape[0], -1)
    m = -(-n * new // orig)  # ceil(n * new / orig), exact in integers
    return y[:, :m].reshape(*shape[:-1], m)
