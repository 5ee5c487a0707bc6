"""SLIME: LIME over time / frequency / time-frequency segments of the spectrogram.

Mishra, Sturm & Dixon, "Local interpretable model-agnostic explanations for music content
analysis", ISMIR 2017, and Mishra, Benetos, Sturm & Dixon, "Reliable local explanations for
machine listening", IJCNN 2020 (time, frequency and time-frequency segmentations). The
baseline settings of Parekh et al. (TASLP 2024, appendix; ``reference/l2i_protocol_facts.md``
§10): 20 segments ("20 chunks of 500 ms" of a 10 s clip), 1000 neighbours, ≤ 5 chunks.

Algorithm (per explained (clip, class) pair): the input X (log1p |STFT|) is cut into K segments
of the shared region grid (``methods/_regions.py``): ``slime-time`` = ``n_time`` contiguous
time segments, ``slime-freq`` = ``n_freq`` contiguous bands (uniform on the mel scale, STFT bins
assigned to the mel band with the largest filter weight), ``slime`` = the ``n_freq x n_time``
grid. N binary on/off vectors z ∈ {0,1}^K are drawn uniformly (first one all on, as
``lime_image``), a segment that is off is set to zero magnitude (``hide_color = 0``), and f's
probability of the class is computed on each perturbed input; then LIME's local model is
fitted: weights π(z) = sqrt(exp(-d²/w²)) of the cosine distance d between z and the all-on
vector (``lime.lime_image.LimeImageExplainer`` defaults: cosine distance, kernel width
w = 0.25), and ridge regression with intercept and α = 1 (``lime.lime_base.LimeBase``'s default
``Ridge(alpha=1)``) on all K segments. Relevance = the segment coefficients / max |coef|.

Implementation (exact, no resynthesis): a segment that is off has zero magnitude, so the masked
magnitude is ``|S| * gate`` and, by linearity of the mel projection, its mel spectrum is the sum
of the kept segments' mel contributions: ``mel(z)[t, m] = sum_b z[b, s(t)] * P_b[t, m]`` with
``P_b = mel_filters @ (|S| on the bins of band b)`` computed once per clip (n_freq x T x M
numbers). The classifier's dB conversion and top_db clip (nonlinear) are then applied to each
perturbed mel spectrum exactly as the front-end does (``Frontend.logmel_from_magnitude``:
10 log10(max(mel, 1e-10)), clipped at the perturbed input's own maximum - top_db), so the
perturbed log-mel equals ``logmel_of_masked`` up to float summation order (tested). f's outputs
on the N perturbed inputs are computed in inference mode, ``chunk`` inputs per forward pass
(32 by default: on CPU a (chunk, C, T, M) activation that fits in cache beats a larger batch),
with an inference copy of f (``fastforward.inference_copy``, shared with the scorer:
BatchNorm folded into the preceding convolution, 2 x 2 max-pools as strided maxima,
channels-last memory layout), which computes
the same function up to float rounding; on CPU ``workers`` chunks run at once, each on one
intra-op thread (``parallel.map_chunks``), so the numbers do not depend on ``workers``. The perturbations of one clip are shared by all classes explained for it, and the
weighted ridge is solved in closed form (weighted centring, then (ZᵀWZ + αI) β = ZᵀWy), batched
over pairs. Deviations: f's log-mel is recomputed from the masked magnitude (no resynthesis to
a waveform, which the scorer does only for FF); "≤ 5 chunks" (the number of segments LIME
reports) is not used, since the scorer selects segments by relevance threshold; the paper's
1000 neighbours are the default, so a task may lower ``n_samples`` for speed (synth default:
see the task's method defaults).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from audio_xai_bench.api import (Batch, Explainer, SegmentExplanation, TaskData,
                                 normalise_relevance)
from audio_xai_bench.fastforward import inference_copy
from audio_xai_bench.parallel import default_workers, map_chunks

from ._regions import RegionGrid, RegionMethod, RelevanceMemo, magnitude_forward, reads_logmel


# ------------------------------------------------------------------------------------------
# LIME pieces (module level so that tests compare them with the lime package)
# ------------------------------------------------------------------------------------------
def sample_masks(index: Tensor, K: int, n_samples: int, seed: int) -> Tensor:
    """(U, N, K) float binary on/off vectors, one independent seeded draw per clip (keyed by
    its row in the split, so a clip gets the same neighbours in any batch); row 0 all on."""
    out = torch.empty(len(index), n_samples, K)
    for u, i in enumerate(index.tolist()):  # one generator call per clip (not a hot path)
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(i))
        out[u] = torch.randint(0, 2, (n_samples, K), generator=g).float()
    out[:, 0] = 1.0
    return out


def cosine_distance_to_ones(Z: Tensor) -> Tensor:
    """(..., N, K) -> (..., N): cosine distance of each z to the all-on vector (scikit-learn's
    ``pairwise_distances(metric='cosine')``; an all-off z is at distance 1)."""
    K = Z.shape[-1]
    on = Z.sum(-1)
    cos = on / (on.clamp_min(1e-12).sqrt() * math.sqrt(K))
    return (1.0 - cos).clamp_min(0.0)


def lime_kernel(d: Tensor, width: float) -> Tensor:
    """LIME's exponential kernel sqrt(exp(-d² / w²))."""
    return torch.sqrt(torch.exp(-(d ** 2) / width ** 2))


def weighted_ridge(Z: Tensor, y: Tensor, w: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Batched weighted ridge with an unpenalised intercept, as scikit-learn's
    ``Ridge(alpha, fit_intercept=True).fit(Z, y, sample_weight=w)``.

    Z (P, N, K), y (P, N), w (P, N) -> coefficients (P, K), intercepts (P,). float64."""
    Z, y, w = Z.double(), y.double(), w.double()
    sw = w.sum(-1, keepdim=True).clamp_min(1e-300)
    zbar = (w.unsqueeze(-1) * Z).sum(1) / sw
    ybar = (w * y).sum(-1, keepdim=True) / sw
    Zc, yc = Z - zbar.unsqueeze(1), y - ybar
    A = torch.einsum("pnk,pn,pnl->pkl", Zc, w, Zc)
    A = A + alpha * torch.eye(Z.shape[-1], dtype=A.dtype, device=A.device)
    b = torch.einsum("pnk,pn->pk", Zc, w * yc)
    coef = torch.linalg.solve(A, b.unsqueeze(-1)).squeeze(-1)
    intercept = ybar.squeeze(-1) - (zbar * coef).sum(-1)
    return coef, intercept


# ------------------------------------------------------------------------------------------
# fast, exact perturbation of the classifier input
# ------------------------------------------------------------------------------------------
def segment_mel_contributions(frontend, X: Tensor, grid: RegionGrid) -> Tensor:
    """(U, F, T) log1p magnitudes -> (U, n_freq, T, M): the mel spectrum of each clip's
    magnitude restricted to the STFT bins of band b (``P_b``); summing the kept bands' P_b per
    time segment gives the mel spectrum of any on/off perturbation (linearity of the mel
    projection)."""
    mel = frontend.mel.to(device=X.device, dtype=X.dtype)               # (M, F)
    onehot = nn.functional.one_hot(grid.band_of_bin.to(X.device), grid.n_freq).to(X.dtype)
    per_band = mel.unsqueeze(-1) * onehot.unsqueeze(0)                  # (M, F, n_freq)
    return torch.einsum("mfb,uft->ubtm", per_band, torch.expm1(X))


def segment_lengths(grid: RegionGrid) -> list[int]:
    """Frames per time segment (contiguous, in order); host integers, computed once per grid."""
    return torch.bincount(grid.seg_of_frame.cpu(), minlength=grid.n_time).tolist()


def perturbed_logmel(frontend, P: Tensor, z: Tensor, grid: RegionGrid,
                     lengths: list[int] | None = None) -> Tensor:
    """f's input (c, 1, T, M) for the on/off vectors z (c, K) of ONE clip whose band
    contributions are P (n_freq, T, M): the mel spectrum sum_b z[b, s(t)] P_b (one
    (c, n_freq) x (n_freq, T_s * M) product per time segment s), then the front-end's dB and
    top_db clip (``Frontend.logmel_from_magnitude``), per perturbed input."""
    nf, T, M = P.shape
    zs = z.to(P.dtype).view(z.shape[0], grid.n_freq, grid.n_time)
    parts, t0 = [], 0
    for s, n in enumerate(segment_lengths(grid) if lengths is None else lengths):  # time segments are contiguous and in order
        parts.append((zs[:, :, s] @ P[:, t0:t0 + n].reshape(nf, n * M)).view(-1, n, M))
        t0 += n
    db = torch.cat(parts, dim=1).clamp_min_(1e-10).log10_().mul_(10.0)  # in place: one buffer
    top = db.amax(dim=(1, 2), keepdim=True)
    return db.clamp_min_(top - frontend.config.top_db).unsqueeze(1)


class SLIME(RegionMethod, Explainer):
    """SLIME with the time-frequency segmentation (Mishra et al. 2020)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"explain"})
    posthoc: ClassVar[bool] = True
    needs_dictionary: ClassVar[bool] = False
    needs_training: ClassVar[bool] = False  # queries f only
    listenable: ClassVar[bool] = True  # segments are masks of the input: listenable
    defaults: ClassVar[dict[str, Any]] = {
        "n_freq": 4, "n_time": 5,   # 20 segments, as the paper's 20 chunks
        "n_samples": 1000,          # paper appendix: 1000 neighbours
        "kernel_width": 0.25,       # lime_image default (cosine distance)
        "ridge_alpha": 1.0,         # LimeBase default Ridge(alpha=1)
        "chunk": 32,                # perturbed inputs per forward pass of f (benchmark)
        "workers": 0,               # concurrent chunks on CPU; 0 = torch's thread count
        "output": "prob",           # LIME regresses f's probabilities ('prob') or 'logit'
        "relevance_norm": "paper",
    }
    small_profile: ClassVar[dict[str, Any]] = {"n_samples": 48, "chunk": 96}
    speed_settings: ClassVar[frozenset[str]] = frozenset({"workers"})

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        if classifier is None:
            raise ValueError("SLIME is post-hoc: it needs the classifier f")
        self.f, self.kind = classifier.eval(), data.task.kind
        self.f_fast = inference_copy(self.f)  # the same function, for the N forward passes
        self.frontend = data.frontend
        self.memo = RelevanceMemo()


    # -- internals -------------------------------------------------------------------------

    def perturbed_outputs(self, X: Tensor, Z: Tensor, grid: RegionGrid,
                          phase: Tensor | None = None, length: int | None = None) -> Tensor:
        """f's outputs on every perturbation: X (U, F, T), Z (U, N, K) -> (U, N, C). For a
        classifier that does not read the task's log-mel, each perturbed X is re-synthesised
        with the clip's ``phase`` into f's own input (``perturbed_outputs_generic``)."""
        from audio_xai_bench.classifier import probabilities

        if not reads_logmel(self.f):
            return self.perturbed_outputs_generic(X, Z, grid, phase, length)
        U, N, K = Z.shape
        P = segment_mel_contributions(self.frontend, X, grid)  # (U, n_freq, T, M), once per clip
        Z = Z.to(X.device)
        chunk = max(1, int(self.config["chunk"]))
        f = getattr(self, "f_fast", self.f)
        logit = self.config.get("output", "logit") == "logit"
        lengths = segment_lengths(grid)  # once: no host sync inside the loops

        def one(job: tuple[int, int]) -> Tensor:  # chunks never straddle two clips
            u, i = job
            x = perturbed_logmel(self.frontend, P[u], Z[u, i:i + chunk], grid, lengths)
            out = f(x.contiguous(memory_format=torch.channels_last))
            return (out if logit else probabilities(out, self.kind)).float()

        jobs = [(u, i) for u in range(U) for i in range(0, N, chunk)]
        workers = int(self.config.get("workers", 0)) or default_workers(X.device)
        if f is self.f:  # the user's own module (not copyable): one thread, as given
            workers = 1
        return torch.cat(map_chunks(one, jobs, workers)).view(U, N, -1)

    def perturbed_outputs_generic(self, X: Tensor, Z: Tensor, grid: RegionGrid,
                                  phase: Tensor | None, length: int | None) -> Tensor:
        """The same perturbations for any classifier: X gated region by region (bins of an
        off region at zero magnitude), f's input re-synthesised (``magnitude_forward``)."""
        if phase is None or length is None:
            raise ValueError("SLIME on a classifier that reads waveforms needs the clips' phase")
        U, N, K = Z.shape
        Z = Z.to(X.device)
        chunk = max(1, int(self.config["chunk"]))
        outs = []
        for u in range(U):
            fwd = magnitude_forward(self, phase[u:u + 1], length)
            for i in range(0, N, chunk):
                z = Z[u, i:i + chunk].to(X.dtype)
                outs.append(fwd(X[u:u + 1] * grid.expand_stft(z)).float())
        return torch.cat(outs).view(U, N, -1)

    def lime_data(self, batch: Batch, classes: Tensor) -> dict[str, Tensor]:
        """Everything LIME's regression sees, per explained pair: Z (P, N, K), labels
        (P, N) (f's output for the pair's class), distances (P, N), and the grid."""
        grid = self.grid(batch.X.shape[-1])
        uniq, inverse = torch.unique(batch.index.cpu(), return_inverse=True)
        first = torch.zeros(len(uniq), dtype=torch.long)
        first.scatter_(0, inverse, torch.arange(len(inverse)))  # a row of each clip
        Z = sample_masks(uniq, grid.K, int(self.config["n_samples"]), self.seed)
        sel = first.to(batch.X.device)
        out = self.perturbed_outputs(batch.X[sel], Z, grid, batch.phase[sel],
                                     batch.wave.shape[-1])  # (U, N, C)
        inv = inverse.to(out.device)
        labels = out[inv, :, classes.to(out.device)]  # (P, N)
        Zp = Z.to(out.device)[inv]
        return {"Z": Zp, "labels": labels, "distances": cosine_distance_to_ones(Zp),
                "outputs": out, "inverse": inv, "grid": grid}

    # -- capability --------------------------------------------------------------------------
    @torch.inference_mode()
    def explain(self, batch: Batch, classes: Tensor) -> SegmentExplanation:
        grid = self.grid(batch.X.shape[-1])
        key = self.memo.key(batch.index, classes, batch.X)
        r = self.memo.get(key)
        if r is None:
            d = self.lime_data(batch, classes)
            w = lime_kernel(d["distances"], float(self.config["kernel_width"]))
            coef, _ = weighted_ridge(d["Z"], d["labels"], w, float(self.config["ridge_alpha"]))
            r = normalise_relevance(coef.float(), self.config["relevance_norm"])
            self.memo.put(key, r)
        return SegmentExplanation(batch.X, grid.segments(len(batch)).to(batch.X.device),
                                  r.to(batch.X.device))


class SLIMETime(SLIME):
    """SLIME with temporal segments only (Mishra et al. 2017; paper: 20 chunks)."""

    defaults: ClassVar[dict[str, Any]] = {**SLIME.defaults, "n_freq": 1, "n_time": 20}


class SLIMEFreq(SLIME):
    """SLIME with spectral segments only (Mishra et al. 2017): 20 mel-uniform bands."""

    defaults: ClassVar[dict[str, Any]] = {**SLIME.defaults, "n_freq": 20, "n_time": 1}
