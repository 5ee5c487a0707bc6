"""Sanity checks for saliency methods (Adebayo et al., "Sanity Checks for Saliency Maps",
NeurIPS 2018), the pure parts; ``runner._sanity`` orchestrates them (``run --sanity``).

(a) **Cascading model-parameter randomisation**: the layers of the explained model are
re-initialised from the top (classifier head first, then down to the first block), cumulatively;
at each stage the method is refitted against the randomised model and re-explains the same
(clip, class) pairs. (b) **Label randomisation**: the model is trained on permuted training
labels. In both, an explanation that stays the same although the model it explains was
destroyed does not explain the model: its Spearman rank correlation with the trained model's
explanation stays high.

Projection to one map per pair (``relevance_map``): R(f, t) = Σ_k r_k X_k(f, t) / X(f, t)
(0 where X = 0), the relevance density of each time-frequency bin — the region's relevance for
region methods, the share-weighted mean relevance of the components covering the bin for NMF
methods. The suite does **not** use Σ_k r_k X_k itself: that map carries the input's energy,
which does not change with the model, so two explanations with independent relevances would
still correlate (a test shows it). Spearman is computed on the flattened F x T maps with
average ranks for ties (``scipy.stats.spearmanr``); a randomised map that became constant
while the trained one was not scores 0 (``map_similarity``), two constant maps NaN.

Pass / fail (suite convention, Adebayo et al. set no number): a method **passes** when the
median Spearman over pairs is below ``PASS_THRESHOLD`` = 0.5 at the most randomised stage
computed and, when run, under label randomisation. Quantus' ``ModelParameterRandomisation``
reports the same similarity without a threshold.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from ..api import MetricInfo

__all__ = ["PASS_THRESHOLD", "relevance_map", "rank_rows", "spearman_rows", "map_similarity",
           "randomisation_stages", "randomise_", "cascade", "explainer_modules", "summarize",
           "METRIC_INFO"]

PASS_THRESHOLD = 0.5


def relevance_map(explanation: Any) -> Tensor:
    """(B, F*T) relevance density Σ_k r_k X_k / X of an ``Explanation`` (see module doc)."""
    kept = explanation.mixture(explanation.relevance.to(explanation.X.dtype))
    X = explanation.X
    pos = X > 0
    R = torch.where(pos, kept / torch.where(pos, X, torch.ones_like(X)), torch.zeros_like(X))
    return R.flatten(1)


def rank_rows(x: Tensor) -> Tensor:
    """Average ranks (1..n, ties share their mean rank: ``scipy.stats.rankdata``) of each row
    of a (B, n) tensor, float64, batched (one sort, one scatter)."""
    if x.dim() != 2:
        raise ValueError(f"rank_rows expects (B, n), got {tuple(x.shape)}")
    B, n = x.shape
    v, order = x.double().sort(dim=1)
    new = torch.ones_like(v, dtype=torch.bool)
    new[:, 1:] = v[:, 1:] != v[:, :-1]
    gid = new.long().cumsum(1) - 1 + torch.arange(B, device=x.device).view(-1, 1) * n
    pos = torch.arange(1, n + 1, device=x.device, dtype=torch.float64).expand(B, n)
    sums = torch.zeros(B * n, device=x.device, dtype=torch.float64)
    sums.scatter_add_(0, gid.flatten(), pos.flatten())
    cnt = torch.zeros_like(sums).scatter_add_(0, gid.flatten(), torch.ones_like(sums))
    avg = (sums / cnt.clamp_min(1))[gid]
    return torch.empty_like(avg).scatter_(1, order, avg)


def spearman_rows(a: Tensor, b: Tensor) -> Tensor:
    """Spearman rank correlation of each row pair of (B, n) tensors; NaN where a row is
    constant or holds a non-finite value (as ``scipy.stats.spearmanr``)."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"spearman_rows needs two (B, n) tensors of one shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    bad = ~(torch.isfinite(a).all(1) & torch.isfinite(b).all(1))
    ra, rb = rank_rows(a), rank_rows(b)
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    den = (ra.square().sum(1) * rb.square().sum(1)).sqrt()
    rho = (ra * rb).sum(1) / torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(bad | ~(den > 0), torch.full_like(rho, float("nan")), rho.clamp(-1, 1))


def map_similarity(reference: Tensor, randomised: Tensor) -> Tensor:
    """Spearman of each (trained, randomised) pair of relevance maps, with one departure from
    ``spearman_rows``: where the randomised map is constant (e.g. all zero because the
    randomised model's gradients vanish) and the trained one is not, the ordering the trained
    model gave is gone, so the value is 0 instead of NaN. Both constant: NaN."""
    rho = spearman_rows(reference, randomised)
    flat = randomised.amax(1) == randomised.amin(1)
    varied = reference.amax(1) > reference.amin(1)
    return torch.where(flat & varied & torch.isfinite(randomised).all(1),
                       torch.zeros_like(rho), rho)


def randomisation_stages(model: nn.Module) -> list[tuple[str, list[nn.Module]]]:
    """Layers of ``model`` top-down, as ``[(name, modules)]``. A model declares them with a
    ``randomisation_stages()`` method (``KumarCNN``: head, layer18, B6 .. B1); otherwise its
    direct children that hold parameters, last first (through wrappers of a single network)."""
    own = getattr(model, "randomisation_stages", None)
    if callable(own):
        return list(own())
    kids = [(n, [m]) for n, m in model.named_children() if any(True for _ in m.parameters())]
    if not kids:
        raise ValueError(f"{type(model).__name__} has no parameterised layer to randomise")
    # a wrapper around one network (``model.ExplainedModel`` around a user's classifier, an
    # ``nn.Sequential`` holding one backbone): its layers are the stages, not the wrapper's one
    # child, or the cascade would destroy the whole network in its first step
    while len(kids) == 1:
        inner = [(f"{kids[0][0]}.{n}", [m]) for n, m in kids[0][1][0].named_children()
                 if any(True for _ in m.parameters())]
        if not inner:
            break
        kids = inner
    return kids[::-1]


def randomise_(modules: Iterable[nn.Module], seed: int) -> None:
    """Re-initialise, in place, every sub-layer from ``seed``: convolutions and linear layers
    with He initialisation (``kaiming_normal_``, fan-in, ReLU gain; bias 0), every other layer
    with its own ``reset_parameters`` (BatchNorm: weight 1, bias 0, running statistics reset).
    He, not PyTorch's default ``kaiming_uniform_(a=√5)``: the default shrinks the variance about
    six-fold per ReLU layer, so a Kumar network randomised below B5 outputs a constant and every
    gradient map is empty for that reason alone (measured on synth); He keeps the signal's scale,
    as the initialisers Adebayo et al. re-draw from were meant to."""
    modules = list(modules)
    devs = sorted({p.device.index or 0 for m in modules for p in m.parameters()
                   if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devs):
        torch.manual_seed(seed)
        if devs:
            torch.cuda.manual_seed_all(seed)
        with torch.no_grad():
            for m in modules:
                for sub in m.modules():
                    if isinstance(sub, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                        nn.init.kaiming_normal_(sub.weight, nonlinearity="relu")
                        if sub.bias is not None:
                            nn.init.zeros_(sub.bias)
                    elif callable(getattr(sub, "reset_parameters", None)):
                        sub.reset_parameters()


def cascade(model: nn.Module, seed: int, only: Iterable[str] | None = None
            ) -> list[tuple[str, nn.Module]]:
    """Cascading randomisation: copies of ``model`` with its stages re-initialised
    cumulatively from the top; one copy per stage (or per stage named in ``only``, the
    randomisation still going through every layer above it). Unknown names raise."""
    base = copy.deepcopy(model).eval()
    stages = randomisation_stages(base)
    names = [n for n, _ in stages]
    want = set(names if only is None else only)
    unknown = sorted(want - set(names))
    if unknown:
        raise KeyError(f"unknown randomisation stage(s) {unknown}; valid: {', '.join(names)}")
    out = []
    for i, (name, mods) in enumerate(stages):
        randomise_(mods, seed + 1000 + i)
        if name in want:
            out.append((name, copy.deepcopy(base)))
    return out


def explainer_modules(explainer: Any) -> list[nn.Module]:
    """The ``nn.Module`` attributes of a fitted explainer: a by-design method's own model."""
    return [v for v in vars(explainer).values() if isinstance(v, nn.Module)]


def summarize(values: dict[str, np.ndarray], threshold: float = PASS_THRESHOLD
              ) -> dict[str, float]:
    """``sanity/<key>`` = median over pairs of the Spearman values (NaN pairs left out),
    ``sanity/pass`` (1 / 0; NaN when a median is NaN): the last parameter stage and the
    label test, when present, all below ``threshold``."""
    out: dict[str, float] = {}
    for key, v in values.items():
        v = np.asarray(v, dtype=float)
        out[f"sanity/{key}"] = float(np.nanmedian(v)) if np.isfinite(v).any() else float("nan")
    judged = [k for k in values if k.startswith("param_rand")][-1:]
    judged += [k for k in values if k.startswith("label_rand")]
    meds = [out[f"sanity/{k}"] for k in judged]
    if meds:
        out["sanity/pass"] = (float("nan") if any(np.isnan(meds))
                              else float(all(m < threshold for m in meds)))
    return out


METRIC_INFO: dict[str, MetricInfo] = {
    "param_rand_spearman": MetricInfo(
        "param_rand_spearman", False, "Adebayo et al. 2018 cascading randomisation",
        "median Spearman of relevance maps, trained vs randomised model (lower = depends on it)"),
    "label_rand_spearman": MetricInfo(
        "label_rand_spearman", False, "Adebayo et al. 2018 data randomisation",
        "median Spearman of relevance maps, model trained on true vs permuted labels"),
    "pass": MetricInfo("pass", True, "suite convention", f"all judged medians < {PASS_THRESHOLD}"),
}
