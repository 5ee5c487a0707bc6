"""Ground-truth metrics for tasks whose class sources are known (synthetic tasks only).

No anchor in the literature scores audio interpretations against true sources; these are the
suite's own, defined from standard source-separation measures:

- SI-SDR of the interpretation audio x_int against the clean class source (Le Roux, Wisdom,
  Erdogan, Hershey, "SDR - half-baked or well done?", ICASSP 2019, eq. for SI-SDR), and its
  improvement over the mixture (SI-SDRi);
- precision / recall of the interpretation's spectrogram energy against an oracle mask of the
  time-frequency bins where the class source dominates the mixture.

All functions are batched torch ops and work on any device.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["si_sdr", "si_sdr_improvement", "oracle_mask", "mask_energy_precision", "mask_energy_recall",
           "METRIC_INFO"]


def si_sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-8, zero_mean: bool = True) -> Tensor:
    """Scale-invariant SDR in dB (Le Roux et al. 2019):

        alpha = <s_hat, s> / ||s||^2,  e_target = alpha s,  e_res = s_hat - e_target,
        SI-SDR = 10 log10( ||e_target||^2 / ||e_res||^2 ).

    Both signals are first made zero-mean (``zero_mean=True``, as the paper assumes and as
    e.g. asteroid / torchmetrics' ``zero_mean=True`` do). ``eps`` is added to the numerator and
    denominator energies (and to ||s||^2) so that a perfect estimate gives a large finite value
    (~ 10 log10(||s||^2 / eps)) and silence does not give NaN. Invariant to rescaling the
    estimate. estimate, reference: (B, N) (any leading shape; the last axis is time) -> (B,).
    Lengths must match (trim / pad the re-synthesised audio before calling).
    """
    if estimate.shape != reference.shape:
        raise ValueError(f"estimate and reference must have the same shape; got "
                         f"{tuple(estimate.shape)} and {tuple(reference.shape)}")
    est = estimate.double()
    ref = reference.double()
    if zero_mean:
        est = est - est.mean(-1, keepdim=True)
        ref = ref - ref.mean(-1, keepdim=True)
    alpha = (est * ref).sum(-1, keepdim=True) / ((ref * ref).sum(-1, keepdim=True) + eps)
    target = alpha * ref
    res = est - target
    val = 10 * torch.log10(((target * target).sum(-1) + eps) / ((res * res).sum(-1) + eps))
    return val.to(estimate.dtype if estimate.is_floating_point() else torch.float32)


def si_sdr_improvement(x_int: Tensor, mixture: Tensor, source: Tensor, eps: float = 1e-8) -> Tensor:
    """SI-SDRi = SI-SDR(x_int, source) - SI-SDR(mixture, source), in dB (Le Roux et al. 2019;
    the usual improvement over the unprocessed input). Positive when the interpretation is
    closer to the class source than the input clip is. All (B, N) -> (B,)."""
    return si_sdr(x_int, source, eps) - si_sdr(mixture, source, eps)


def oracle_mask(source_mag: Tensor, mixture_mag: Tensor, ratio: float = 0.5, floor: float = 0.0) -> Tensor:
    """Bins where the class source dominates: ``|S_src| >= ratio * |S_mix|`` and
    ``|S_src| > floor`` (linear STFT magnitudes, same STFT as the explanation).

    With ratio = 0.5 a bin is kept when the source holds at least half of the mixture's
    magnitude there; if source and rest add in power (|S_mix|^2 ~ |S_src|^2 + |S_rest|^2) that
    is a local source-to-rest ratio >= 1/3, about -4.8 dB. A binary analogue of the ideal ratio
    mask; ``ratio=1`` would ask the source to carry the whole bin. The extra ``|S_src| > floor`` excludes bins where both are silent
    (0 >= 0). (B, F, T) -> (B, F, T) bool.
    """
    return (source_mag >= ratio * mixture_mag) & (source_mag > floor)


def _energy(mag: Tensor, power: float) -> Tensor:
    return mag.double().abs() ** power


def mask_energy_precision(component_mag: Tensor, oracle_mask: Tensor, power: float = 2.0) -> Tensor:
    """Fraction of the interpretation's energy that lies inside the oracle mask:

        sum_{f,t} M * |X_int|^p / sum_{f,t} |X_int|^p,   p = 2 (energy).

    ``component_mag`` is the interpretation's **linear** magnitude (expm1 of the summed log1p
    components, i.e. what INV re-synthesises). NaN where the interpretation is silent.
    (B, F, T), (B, F, T) bool -> (B,) float32.
    """
    e = _energy(component_mag, power)
    num = (e * oracle_mask.to(e.dtype)).flatten(1).sum(1)
    den = e.flatten(1).sum(1)
    out = torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(den, float("nan")))
    return out.float()


def mask_energy_recall(component_mag: Tensor, oracle_mask: Tensor, source_mag: Tensor, power: float = 2.0) -> Tensor:
    """Fraction of the oracle-masked source energy that the interpretation covers:

        sum_{M} min(|X_int|^p, |S_src|^p) / sum_{M} |S_src|^p,   p = 2.

    Per bin the interpretation is credited with at most the source's energy, so returning the
    whole mixture cannot exceed 1 and returning nothing gives 0. NaN where the mask holds no
    source energy. (B, F, T) x3 -> (B,) float32.
    """
    e_int = _energy(component_mag, power)
    e_src = _energy(source_mag, power)
    m = oracle_mask.to(e_src.dtype)
    num = (torch.minimum(e_int, e_src) * m).flatten(1).sum(1)
    den = (e_src * m).flatten(1).sum(1)
    out = torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(den, float("nan")))
    return out.float()


def _info() -> dict:
    from ..api import MetricInfo

    return {
        "si_sdr": MetricInfo("si_sdr", True, "Le Roux et al. 2019, SI-SDR of x_int vs the class source (dB)"),
        "si_sdri": MetricInfo("si_sdri", True, "Le Roux et al. 2019, SI-SDR(x_int) - SI-SDR(mixture) (dB)"),
        "mask_precision": MetricInfo("mask_precision", True, "suite: energy of x_int inside the oracle mask"),
        "mask_recall": MetricInfo("mask_recall", True, "suite: oracle-masked source energy covered by x_int"),
    }


METRIC_INFO = _info()
