"""Reference explainers: known-good, known-bad and class-blind rankings of the same units.

They share the ``random`` explainer's units (the NMF components X_k of the input on the task's
dictionary, Algorithm 1's soft masks) and differ only in the relevance they give each unit, so
that a metric comparing them compares rankings, not decompositions (``audio-xai-bench meta``,
Hedström et al., TMLR 2023, MetaQuantus's idea of testing metrics on explainers of known
quality; Arras et al. 2022, CLEVR-XAI, for ground truth with distractors):

- ``oracle``: r_k = s_k / max_l s_l, s_k = share of component k's log1p mass that belongs to
  the true source of the explained class, with the per-bin share q = min(|S_target| / |S_mix|,
  1) (linear STFT magnitudes): the best ranking a method can give with these units. Needs the
  true sources (``needs_sources``), so runs only on tasks that keep them.
- ``anti-oracle``: the same ranking reversed, r_k = 1 - r_k(oracle) (not renormalised, so
  that its selection at τ is the oracle's bottom set at 1 - τ).
- ``energy``: r_k = m_k / max_l m_l, m_k = log1p mass of component k (sum_{f,t} X_k): the
  class-blind "loudest part" explainer. Needs no sources.

Components with no mass get relevance 0 (never selected at τ >= 0). All relevances lie in
[0, 1] with max 1, as r = v / max|v| (paper III-E).
"""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor, nn

from audio_xai_bench import nmf
from audio_xai_bench.api import Batch, FactorExplanation, TaskData
from audio_xai_bench.methods.random_baseline import RandomExplainer


def component_mass(X: Tensor, W: Tensor, H: Tensor, weight: Tensor | None = None,
                   eps: float = 1e-6) -> Tensor:
    """sum_{f,t} weight * X_k for every component of ``FactorExplanation(X, W, H)``, without
    building the K components: X_k = X * w_k h_k / (W H + eps). (B, K)."""
    WH = torch.einsum("fk,bkt->bft", W, H) if W.dim() == 2 else torch.bmm(W, H)
    R = X / (WH + eps)
    if weight is not None:
        R = R * weight
    if W.dim() == 2:
        return torch.einsum("bft,fk,bkt->bk", R, W, H)
    return torch.einsum("bft,bfk,bkt->bk", R, W, H)


def target_share_map(batch: Batch, classes: Tensor, frontend) -> Tensor:
    """q = min(|S_target| / |S_mix|, 1) per STFT bin (B, F, T): the share of each bin that the
    true source(s) of the explained class hold. |S_mix| = expm1(X)."""
    if batch.sources is None or batch.source_classes is None:
        raise ValueError("this reference explainer needs the batch's true sources "
                         "(Batch.sources); the task does not provide them")
    match = (batch.source_classes == classes.unsqueeze(1)).to(batch.sources.dtype)
    target = (batch.sources * match.unsqueeze(-1)).sum(1)
    S_t = frontend.stft(target).abs()
    S_mix = torch.expm1(batch.X)
    return torch.where(S_mix > 0, (S_t / S_mix.clamp_min(1e-12)).clamp(max=1.0),
                       torch.zeros_like(S_mix))


def _normalise(score: Tensor, active: Tensor) -> Tensor:
    score = torch.where(active, score.clamp_min(0), torch.zeros_like(score))
    return score / score.amax(dim=1, keepdim=True).clamp_min(1e-12)


class _Reference(RandomExplainer):
    """The random explainer's units with a deterministic, defined ranking."""

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        super().fit(data, classifier)
        self.frontend = data.frontend

    def scores(self, batch: Batch, classes: Tensor, H: Tensor, mass: Tensor) -> Tensor:
        raise NotImplementedError  # abstract

    @torch.inference_mode()
    def explain(self, batch: Batch, classes: Tensor) -> FactorExplanation:
        H = nmf.project(batch.X, self.W, mu=float(self.config["nmf_mu"]),
                        n_iter=int(self.config["project_iter"]), seed=self.seed)
        mass = component_mass(batch.X, self.W, H)
        r = _normalise(self.scores(batch, classes, H, mass), mass > 0)
        return FactorExplanation(batch.X, self.W, H, r)


class OracleExplainer(_Reference):
    """``oracle``: components ranked by their share of the true target source."""

    needs_sources: ClassVar[bool] = True

    def scores(self, batch, classes, H, mass):
        q = target_share_map(batch, classes, self.frontend)
        return component_mass(batch.X, self.W, H, q) / mass.clamp_min(1e-12)


class AntiOracleExplainer(OracleExplainer):
    """``anti-oracle``: the oracle's ranking reversed (r = 1 - r_oracle).

    r_k = 1 - r_k(oracle) on the components with mass (0 elsewhere): at τ it selects the
    components whose oracle relevance is below 1 - τ, so at τ = 0.5 exactly the complement of
    the oracle's selection (up to ties)."""

    @torch.inference_mode()
    def explain(self, batch: Batch, classes: Tensor) -> FactorExplanation:
        e = super().explain(batch, classes)
        H = e.H
        active = component_mass(batch.X, self.W, H) > 0
        r = torch.where(active, 1.0 - e.relevance, torch.zeros_like(e.relevance))
        return FactorExplanation(batch.X, self.W, H, r)


class EnergyExplainer(_Reference):
    """``energy``: components ranked by their log1p mass (class-blind)."""

    def scores(self, batch, classes, H, mass):
        return mass
