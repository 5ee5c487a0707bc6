"""Deletion and insertion curves at matched log1p-mass budgets (issue 10 item 1).

MoRF / AOPC (Samek et al., IEEE TNNLS 2017) and deletion / insertion (Petsiuk et al., BMVC 2018),
adapted so that methods with 20 coarse regions and methods with 300 NMF atoms are measured on
the same axis: the budget is the **share b of the input's log1p mass** sum_{f,t} X removed
(deletion, most relevant units first) or kept (insertion, the rest replaced by the clip's
background, ``removal.keep_only``). The unit that crosses a budget enters with the partial
weight that makes the removed mass exactly b·sum X (``Explanation.mixture`` is linear in float
``select`` weights for both ``FactorExplanation`` and ``SegmentExplanation``), so a coarse
method is not favoured by overshooting the budget.

Per (clip, class) pair the curve is f's class probability at each budget on the re-synthesised
audio; its area is the trapezoid over the budgets divided by their span (a mean probability in
[0, 1]). The per-pair baseline is the curve of the **same units in random order** (several
seeded draws, probabilities averaged per pair and budget). Low deletion AUC and high insertion
AUC mean the method's order finds what f uses; the one-sided paired Wilcoxon test asks whether
the method's order beats the random order of its own units.

Everything here is pure: explanations and a batched model callable in, tensors / named values
out; the scorer only orchestrates (:class:`CurvesFamily`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from . import removal as rm
from .base import PairContext

__all__ = ["BUDGETS", "relevance_order", "random_order", "mass_matched_weights", "auc",
           "degenerate_rows", "curves", "summarise", "CurvesFamily", "METRIC_INFO"]

#: Shares of the input's log1p mass removed / kept.
BUDGETS: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.5)


def relevance_order(relevance: Tensor) -> Tensor:
    """(B, K) unit indices by decreasing relevance (stable: ties keep index order)."""
    return torch.argsort(relevance, dim=1, descending=True, stable=True)


def random_order(B: int, K: int, generator: torch.Generator, device: Any = None) -> Tensor:
    """(B, K) uniformly random permutations of the K units, drawn from ``generator``."""
    keys = torch.rand((B, K), generator=generator, device=generator.device, dtype=torch.float64)
    return keys.argsort(dim=1).to(device if device is not None else keys.device)


def mass_matched_weights(mass: Tensor, order: Tensor, target: Tensor,
                         allowed: Tensor | None = None, rtol: float = 1e-4
                         ) -> tuple[Tensor, Tensor]:
    """Float selection weights that take units in ``order`` until their mass reaches ``target``.

    Units are taken whole while the running mass stays below the target; the unit that crosses
    it gets the partial weight (target - mass before it) / its mass, so the selected mass
    sum_k w_k m_k equals the target exactly; the units after it get 0. Units outside
    ``allowed`` (B, K) bool get weight 0 and count for nothing. A row whose allowed mass is
    below the target (relative tolerance ``rtol``) cannot be matched: ``matched`` is False
    there (its weights then select all allowed units).

    mass (B, K) >= 0, order (B, K) a permutation per row, target (B,) -> (weights (B, K) float,
    matched (B,) bool).
    """
    m = mass.clamp_min(0.0)
    if allowed is not None:
        m = m * allowed.to(m.dtype)
    sm = m.gather(1, order)
    before = sm.cumsum(1) - sm
    need = target.to(m.dtype).unsqueeze(1) - before
    w = torch.where(sm > 0, (need / sm.clamp_min(torch.finfo(m.dtype).tiny)).clamp(0.0, 1.0),
                    torch.zeros_like(sm))
    weights = torch.zeros_like(m).scatter(1, order, w)
    matched = m.sum(1) >= target.to(m.dtype) * (1.0 - rtol)
    return weights, matched


def auc(budgets: Sequence[float], values: Tensor | np.ndarray) -> np.ndarray:
    """Trapezoid area of ``values`` (n_budgets, n) over ``budgets``, divided by the budgets' span
    (so it is a mean probability). NaN anywhere in a column gives NaN for that pair."""
    b = np.asarray(budgets, dtype=np.float64)
    v = values.detach().cpu().double().numpy() if isinstance(values, Tensor) else np.asarray(values, np.float64)
    if v.shape[0] != b.size or b.size < 2:
        raise ValueError(f"values must be (n_budgets={b.size} >= 2, n); got {v.shape}")
    area = ((v[1:] + v[:-1]) * np.diff(b)[:, None]).sum(0) / 2.0
    return area / (b[-1] - b[0])


def degenerate_rows(relevance: Tensor) -> Tensor:
    """(B,) bool: rows whose relevances are NaN somewhere or all equal, so no order exists."""
    r = relevance.float()
    bad = torch.isnan(r).any(1)
    rr = torch.nan_to_num(r)
    return bad | (rr.amax(1) == rr.amin(1))


ProbFn = Callable[[Tensor, Tensor], Tensor]


def curves(explanation: Any, probs: ProbFn, orders: Sequence[Tensor],
           budgets: Sequence[float] = BUDGETS, removal: str = "fill", quantile: float = 0.1
           ) -> dict[str, Tensor]:
    """Deletion and insertion probabilities of every pair at every budget, for each of
    ``orders`` (the method's order first, then random orders).

    ``probs(X2, rows)`` is the batched model callable: X2 (m, F, T) modified spectrograms of
    rows ``rows`` (m,) of the explanation's batch -> (m,) the explained class's probability on
    the re-synthesised audio. It is called **once per budget** with every order and both curves
    stacked (m = 2 · len(orders) · B rows).

    Returns ``deletion`` and ``insertion`` (len(orders), n_budgets, B) and ``matched``
    (n_budgets, B) bool (False where the units cover less mass than the budget: NaN there).
    """
    X = explanation.X
    B = X.shape[0]
    mass = explanation.component_mass()
    total = X.flatten(1).sum(1)
    bg = rm.background_level(X, quantile) if removal == "fill" else None
    rows = torch.arange(B, device=X.device)
    n_o = len(orders)
    dele = torch.empty(n_o, len(budgets), B, device=X.device)
    ins = torch.empty_like(dele)
    matched = torch.empty(len(budgets), B, dtype=torch.bool, device=X.device)
    for i, b in enumerate(budgets):
        X2s, ok = [], None
        for order in orders:
            w, ok = mass_matched_weights(mass, order.to(X.device), b * total)
            kept = explanation.mixture(w)
            X2s.append(rm.remove(X, kept, removal, quantile, bg))
            X2s.append(rm.keep_only(X, kept, removal, quantile, bg))
        p = probs(torch.cat(X2s), rows.repeat(2 * n_o)).float().view(n_o, 2, B)
        dele[:, i], ins[:, i] = p[:, 0], p[:, 1]
        matched[i] = ok  # total unit mass is the same for every order
    nan = torch.tensor(float("nan"), device=X.device)
    return {"deletion": torch.where(matched, dele, nan), "insertion": torch.where(matched, ins, nan),
            "matched": matched}


def _nanmedian(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.median(x[~np.isnan(x)])) if (~np.isnan(x)).any() else float("nan")


def _nanmean(x: np.ndarray) -> float:
    x = np.asarray(x, np.float64)
    return float(np.mean(x[~np.isnan(x)])) if (~np.isnan(x)).any() else float("nan")


def summarise(pairs: Mapping[str, Any], budgets: Sequence[float] = BUDGETS,
              prefix: str = "faithfulness/") -> dict[str, float]:
    """Named values from the per-pair columns written by :class:`CurvesFamily`:
    ``<curve>@b`` / ``<curve>_randorder@b`` medians over pairs, ``<curve>_auc`` /
    ``<curve>_auc_randorder`` means of per-pair AUCs, ``<curve>_wilcoxon_p`` the one-sided paired
    Wilcoxon p of method vs random order (deletion: method AUC < random; insertion: >), and the
    number of pairs with a complete curve. NaN pairs (degenerate relevances, budget not
    reachable) leave every summary and test."""
    from .faithfulness import wilcoxon_vs_baseline

    out: dict[str, float] = {}
    for kind in ("deletion", "insertion"):
        for b in budgets:
            out[f"{prefix}{kind}@{b}"] = _nanmedian(pairs[f"{kind}@{b}"])
            out[f"{prefix}{kind}_randorder@{b}"] = _nanmedian(pairs[f"{kind}_randorder@{b}"])
        a = np.asarray(pairs[f"{kind}_auc"], np.float64)
        r = np.asarray(pairs[f"{kind}_auc_randorder"], np.float64)
        out[f"{prefix}{kind}_auc"] = _nanmean(a)
        out[f"{prefix}{kind}_auc_randorder"] = _nanmean(r)
        # deletion: is the method's AUC below random order's? insertion: above?
        w = wilcoxon_vs_baseline(r, a) if kind == "deletion" else wilcoxon_vs_baseline(a, r)
        ok = ~(np.isnan(a) | np.isnan(r))
        out[f"{prefix}{kind}_wilcoxon_p"] = float(w["p"]) if ok.any() else float("nan")
    ok = ~np.isnan(np.asarray(pairs["deletion_auc"], np.float64))
    out[f"{prefix}curve_n_pairs"] = float(ok.sum())
    return out


@dataclass
class CurvesFamily:
    """Metric family (``metrics.base.PairFamily``): deletion / insertion curves of every pair.

    Per batch it costs ``len(budgets)`` forward passes of 2·(1 + draws)·n rows each."""

    budgets: tuple[float, ...] = BUDGETS
    draws: int = 2
    removal: str = "fill"
    quantile: float = 0.1
    name: str = "curves"

    def pair_columns(self, ctx: PairContext) -> dict[str, Tensor]:
        e = ctx.explanation
        B, K = e.relevance.shape
        orders = [relevance_order(e.relevance)]
        orders += [random_order(B, K, ctx.generator, e.X.device) for _ in range(self.draws)]
        c = curves(e, ctx.class_probs, orders, self.budgets, self.removal, self.quantile)
        bad = ctx.degenerate.to(e.X.device)
        nan = torch.tensor(float("nan"), device=e.X.device)
        cols: dict[str, Tensor] = {}
        for kind in ("deletion", "insertion"):
            own = torch.where(bad, nan, c[kind][0])           # (n_budgets, B)
            rnd = c[kind][1:].mean(0) if self.draws else torch.full_like(own, float("nan"))
            rnd = torch.where(bad, nan, rnd)
            for i, b in enumerate(self.budgets):
                cols[f"{kind}@{b}"] = own[i]
                cols[f"{kind}_randorder@{b}"] = rnd[i]
            cols[f"{kind}_auc"] = torch.from_numpy(auc(self.budgets, own)).float()
            cols[f"{kind}_auc_randorder"] = torch.from_numpy(auc(self.budgets, rnd)).float()
        return cols

    def summarise(self, pairs: Mapping[str, Any]) -> dict[str, float]:
        return summarise(pairs, self.budgets)


def _info() -> dict[str, Any]:
    from ..api import MetricInfo

    ref = ("deletion / insertion curves at log1p-mass budgets (Samek et al. 2017 MoRF; Petsiuk et "
           "al. 2018), audio_xai_bench.metrics.curves")
    wil = "one-sided paired Wilcoxon signed-rank (scipy.stats.wilcoxon), method vs random order"
    return {
        "deletion": MetricInfo("deletion", False, ref, "f's class probability with b of the mass removed, most relevant first"),
        "deletion_randorder": MetricInfo("deletion_randorder", False, ref, "same, units in random order (baseline)"),
        "deletion_auc": MetricInfo("deletion_auc", False, ref),
        "deletion_auc_randorder": MetricInfo("deletion_auc_randorder", False, ref),
        "deletion_wilcoxon_p": MetricInfo("deletion_wilcoxon_p", False, wil),
        "insertion": MetricInfo("insertion", True, ref, "f's class probability keeping only b of the mass, most relevant first"),
        "insertion_randorder": MetricInfo("insertion_randorder", True, ref),
        "insertion_auc": MetricInfo("insertion_auc", True, ref),
        "insertion_auc_randorder": MetricInfo("insertion_auc_randorder", True, ref),
        "insertion_wilcoxon_p": MetricInfo("insertion_wilcoxon_p", False, wil),
    }


METRIC_INFO = _info()
