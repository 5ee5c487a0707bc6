"""Ground-truth metrics for tasks whose class sources are known (synthetic tasks only).

No anchor in the literature scores audio interpretations against true sources; these are the
suite's own, defined from standard source-separation measures:

- SI-SDR of the interpretation audio x_int against the clean class source (Le Roux, Wisdom,
  Erdogan, Hershey, "SDR - half-baked or well done?", ICASSP 2019, eq. for SI-SDR), and its
  improvement over the mixture (SI-SDRi);
- precision / recall of the interpretation's spectrogram energy against an oracle mask of the
  time-frequency bins where the class source dominates the mixture.

With distractors (``synth-mix``, and ``synth-multilabel`` where the other classes' events are
the distractors of each explained class), the ground-truth measures of Arras, Osman and Samek,
"CLEVR-XAI", Information Fusion 2022 (relevance mass accuracy, relevance rank accuracy), and the
time-localisation score of Bolaños et al., Interspeech 2025 (ROC-AUC of per-frame relevance
against the target's active frames), applied to the time-frequency map of an interpretation.

All functions are batched torch ops and work on any device.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["si_sdr", "si_sdr_improvement", "oracle_mask", "mask_energy_precision", "mask_energy_recall",
           "relevance_mass_accuracy", "relevance_rank_accuracy", "roc_auc", "active_frames",
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


def relevance_mass_accuracy(relevance: Tensor, mask: Tensor) -> Tensor:
    """Relevance mass accuracy (Arras et al. 2022, eq. 1): share of a non-negative relevance
    map's mass inside the ground-truth mask, sum(R * M) / sum(R). With the mask of the
    distractors it is the *distractor share*. NaN where the map is all zero.
    (B, ...) non-negative, (B, ...) bool -> (B,) float32."""
    R = relevance.double().flatten(1)
    m = mask.flatten(1).to(R.dtype)
    den = R.sum(1)
    out = torch.where(den > 0, (R * m).sum(1) / den.clamp_min(1e-300),
                      torch.full_like(den, float("nan")))
    return out.float()


def relevance_rank_accuracy(relevance: Tensor, mask: Tensor) -> Tensor:
    """Relevance rank accuracy (Arras et al. 2022, eq. 2): with K = |M|, the share of the K
    highest-relevance bins that lie inside the mask. Ties at the K-th value are resolved in
    expectation (every tied bin is equally likely to be among the top K), so the value does
    not depend on the order of bins: (#{R > v, M} + (K - #{R > v}) * #{R = v, M} / #{R = v}) / K,
    v = the K-th largest value. Invariant to any increasing map of R (log1p and linear energy
    give the same value). NaN where the mask is empty. (B, ...) x2 -> (B,) float32."""
    R = relevance.double().flatten(1)
    M = mask.flatten(1)
    K = M.sum(1)
    srt = torch.sort(R, dim=1, descending=True).values
    v = srt.gather(1, (K - 1).clamp_min(0).unsqueeze(1))  # (B, 1) K-th largest
    gt_ = R > v
    eq = R == v
    n_gt = gt_.sum(1).double()
    a = (gt_ & M).sum(1).double()
    b = (eq & M).sum(1).double()
    n_eq = eq.sum(1).double().clamp_min(1)
    val = (a + (K.double() - n_gt) * b / n_eq) / K.double().clamp_min(1)
    return torch.where(K > 0, val, torch.full_like(val, float("nan"))).float()


def roc_auc(scores: Tensor, labels: Tensor) -> Tensor:
    """ROC-AUC per row (Mann-Whitney form): P(score of a positive > score of a negative), ties
    counting 1/2, as ``sklearn.metrics.roc_auc_score``. NaN for a row without positives or
    without negatives. (B, T) float, (B, T) bool -> (B,) float32. O(T^2) memory per row,
    meant for per-frame scores (T ~ 100)."""
    s = scores.double()
    y = labels.bool()
    diff = s.unsqueeze(2) - s.unsqueeze(1)  # (B, T, T): s_i - s_j
    win = (diff > 0).double() + 0.5 * (diff == 0).double()
    pair = (y.unsqueeze(2) & ~y.unsqueeze(1)).double()  # i positive, j negative
    n_pos, n_neg = y.sum(1).double(), (~y).sum(1).double()
    num = (win * pair).sum((1, 2))
    ok = (n_pos > 0) & (n_neg > 0)
    val = num / (n_pos * n_neg).clamp_min(1)
    return torch.where(ok, val, torch.full_like(val, float("nan"))).float()


def active_frames(source_mag: Tensor, rel_db: float = -20.0) -> Tensor:
    """Frames where a source is active: its frame energy sum_f |S|^2 is within ``rel_db`` dB
    of its loudest frame (and non-zero). (B, F, T) linear magnitude -> (B, T) bool."""
    e = (source_mag.double() ** 2).sum(1)
    peak = e.amax(1, keepdim=True)
    return (e > 0) & (e >= peak * 10 ** (rel_db / 10))


def _info() -> dict:
    from ..api import MetricInfo

    return {
        "si_sdr": MetricInfo("si_sdr", True, "Le Roux et al. 2019, SI-SDR of x_int vs the class source (dB)"),
        "si_sdri": MetricInfo("si_sdri", True, "Le Roux et al. 2019, SI-SDR(x_int) - SI-SDR(mixture) (dB)"),
        "mask_precision": MetricInfo("mask_precision", True, "suite: energy of x_int inside the oracle mask"),
        "mask_recall": MetricInfo("mask_recall", True, "suite: oracle-masked source energy covered by x_int"),
        "rank_accuracy": MetricInfo("rank_accuracy", True, "Arras et al. 2022, relevance rank accuracy"),
        "distractor_share": MetricInfo("distractor_share", False,
                                       "Arras et al. 2022 mass accuracy on the distractors' mask"),
        "time_auc": MetricInfo("time_auc", True, "Bolanos et al. 2025, ROC-AUC of per-frame "
                               "relevance vs the target's active frames"),
    }


METRIC_INFO = _info()
