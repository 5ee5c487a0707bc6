"""The interface between the scorer and a per-pair metric family (DESIGN "Metrics").

For every batch of explained (clip, class) pairs the scorer builds one :class:`PairContext`
(the explanation, the explained model's outputs on the input, and a batched callable that
scores modified spectrograms) and hands it to each family; a family returns per-pair columns
(written to ``pairs.csv``) and, at the end, turns the whole ``pairs`` table into named values
for ``metrics.json``. Families never loop over pairs on the model and never see the scorer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import Tensor

__all__ = ["PairContext", "PairFamily"]


@dataclass
class PairContext:
    """One batch of n explained pairs, everything on the batch's device.

    - ``batch``: the pairs' rows as an ``api.Batch`` (wave, X, phase, logmel, ...);
    - ``explanation``: the method's ``Explanation`` for those rows (K units each);
    - ``classes`` (n,) long: the explained class of each pair;
    - ``probs0`` (n, C): the explained model's probabilities on the input x (f, or g for a
      by-design method); ``p0 = probs0[i, classes[i]]``;
    - ``model_probs(X2, rows) -> (m, C)``: the explained model's probabilities on
      INV(X2, P_rows) re-analysed (as FF does), for m modified spectrograms X2 (m, F, T) of rows
      ``rows`` (m,) of this batch: one batched forward pass per call;
    - ``class_probs(X2, rows) -> (m,)``: the same, taken at each row's explained class;
    - ``generator``: the scorer's seeded torch.Generator for random draws;
    - ``degenerate`` (n,) bool: rows whose relevances are NaN or all equal (no order).
    """

    batch: Any
    explanation: Any
    classes: Tensor
    probs0: Tensor
    model_probs: Callable[[Tensor, Tensor], Tensor]
    generator: torch.Generator
    degenerate: Tensor

    @property
    def p0(self) -> Tensor:
        return self.probs0[torch.arange(len(self.classes), device=self.probs0.device), self.classes]

    def class_probs(self, X2: Tensor, rows: Tensor) -> Tensor:
        p = self.model_probs(X2, rows)
        return p[torch.arange(len(rows), device=p.device), self.classes.to(p.device)[rows]]


class PairFamily(Protocol):
    """A metric family the scorer runs on every batch of pairs (curves, L-MAC, ...)."""

    name: str

    def pair_columns(self, ctx: PairContext) -> Mapping[str, Tensor]:
        """Per-pair values (n,) of this batch, keyed by column name in ``pairs.csv``."""
        ...

    def summarise(self, pairs: Mapping[str, Any]) -> dict[str, float]:
        """Named values (full metric names, e.g. ``faithfulness/deletion_auc``) from the whole
        ``pairs`` table (a DataFrame; columns as written by ``pair_columns``)."""
        ...
