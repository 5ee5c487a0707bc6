"""Random explainer: the paper's Random Baseline as an ordinary, registered method.

Components are the NMF decomposition of the input on the task's dictionary W (activations H
from ``nmf.project``, so the components are the same kind of soft masks as L2I's) and the
relevances are drawn uniformly at random, so that its faithfulness row is what a method that
knows nothing about f scores. (Each decomposing method's own random baseline — removing
|L| components from outside L — is reported beside its FF by the scorer.)
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from audio_xai_bench import nmf
from audio_xai_bench.api import Batch, Explainer, FactorExplanation, TaskData


class RandomExplainer(Explainer):
    """Random baseline (paper IV-C): NMF components of the input with random relevances."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"explain"})
    posthoc: ClassVar[bool] = True
    needs_dictionary: ClassVar[bool] = True
    needs_training: ClassVar[bool] = False  # queries f only
    defaults: ClassVar[dict[str, Any]] = {"K": 100, "nmf_mu": 0.8, "nmf_iter": 100,
                                          "project_iter": 50}
    small_profile: ClassVar[dict[str, Any]] = {"K": 16, "nmf_iter": 30, "project_iter": 20}
    task_defaults_key: ClassVar[str] = "l2i"  # same dictionary size as L2I on each task

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        if data.dictionary is None:
            raise ValueError("the random explainer needs the task's dictionary")
        self.W = data.dictionary.to(self.device)

    @torch.inference_mode()
    def explain(self, batch: Batch, classes: Tensor) -> FactorExplanation:
        H = nmf.project(batch.X, self.W, mu=float(self.config["nmf_mu"]),
                        n_iter=int(self.config["project_iter"]), seed=self.seed)
        # one generator per batch, keyed by the rows' indices: deterministic and order-free
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + int(batch.index[0]))
        r = torch.rand(len(batch), self.W.shape[1], generator=g).to(self.device)
        r = r / r.amax(dim=1, keepdim=True)
        return FactorExplanation(batch.X, self.W, H, r)
