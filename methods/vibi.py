"""VIBI: variational information bottleneck for interpretation (a post-hoc baseline).

Bang, Xie, Lee, Wu & Xing, "Explaining a black-box by using a deep variational information
bottleneck approach", AAAI 2021 (official code github.com/SeojinBang/VIBI: ``explainer.py``,
``solver.py``). Baseline settings of Parekh et al. (TASLP 2024, appendix;
``reference/l2i_protocol_facts.md`` §10): chunks of 32 mel bands x 43 frames of the ESC
log-mel (4 x 10 = 40 chunks), k from 5 to 20 selected chunks, 100 (ESC) / 30 (SONYC) epochs.

An explainer network scores the D = n_freq x n_time chunks of the input (log-softmax
p(z|x) over chunks). During training k chunks are drawn with the concrete relaxation of L2X
(k independent relaxed one-hot samples at temperature τ = 0.5, element-wise max over them);
an approximator sees the input with only those chunks kept and is trained to mimic f's
decision. Loss (``solver.py``): CE(approximator, f's argmax) / ln 2 + β k KL(u ‖ p(z|x)) with u
uniform over chunks, means over the batch. At test time the top-k chunks are kept (hard mask).

Chunks are the regions of the shared grid (``methods/_regions.py``), so the explanation is a
``SegmentExplanation`` of X with one component per chunk and relevance = p(z|x) / max p (the
k selected chunks get the highest relevances). The explainer is not class-conditioned (as
VIBI): it explains f's decision whatever class is asked for. ``surrogate_predict`` = the
approximator on the input masked with the top-k chunks.

Deviations: the networks are small CNNs on the log-mel sized for audio (the official code
has MNIST/IMDB nets); a chunk switched off is set to the clip's log-mel floor (top_db below
its peak: silence) rather than 0 dB; multilabel f is mimicked with binary cross-entropy on
f's sigmoids; Adam with the suite's default betas (the code uses β₁ = 0.5, an exponential lr
decay and a weight EMA); the epoch kept is chosen on the validation split's agreement.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio_xai_bench.api import (Batch, Explainer, SegmentExplanation, TaskData,
                                 normalise_relevance)
from audio_xai_bench.settings import Rule
from audio_xai_bench.train import BatchLoader, fit

from ._fcache import FrozenOutputs
from ._regions import RegionMethod, RegionGrid, mask_logmel


def relaxed_topk(logp: Tensor, k: int, tau: float, generator: torch.Generator | None = None
                 ) -> Tensor:
    """Concrete relaxation of a k-hot draw (L2X / VIBI): k independent Gumbel-softmax
    samples over the D chunks, element-wise max. (B, D) log-probabilities -> (B, D) in [0, 1]."""
    B, D = logp.shape
    u = torch.rand(B, k, D, generator=generator, device=logp.device, dtype=logp.dtype)
    g = -torch.log(-torch.log(u.clamp(1e-10, 1.0 - 1e-7)))
    y = torch.softmax((logp.unsqueeze(1) + g) / tau, dim=-1)
    return y.amax(dim=1)


def hard_topk(logp: Tensor, k: int) -> Tensor:
    """(B, D) -> (B, D) float 0/1 with exactly k ones per row (the k most probable chunks)."""
    idx = logp.topk(k, dim=-1).indices
    return torch.zeros_like(logp).scatter_(-1, idx, 1.0)


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class ChunkExplainer(nn.Module):
    """log-mel (B, 1, T, M) -> log p(z|x) (B, D) over the grid's chunks."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.BatchNorm2d(1), *_block(1, width), nn.MaxPool2d(2),
                                      *_block(width, 2 * width), nn.MaxPool2d(2),
                                      *_block(2 * width, 2 * width))
        self.score = nn.Conv1d(2 * width, 1, 1)

    def forward(self, logmel: Tensor, grid: RegionGrid) -> Tensor:
        h = self.features(logmel)
        h = F.interpolate(h, size=logmel.shape[-2:], mode="nearest")
        pooled = grid.region_mean(h)  # (B, C, D)
        return torch.log_softmax(self.score(pooled).squeeze(1), dim=-1)


class Approximator(nn.Module):
    """The surrogate: masked log-mel (B, 1, T, M) -> logits (B, C)."""

    def __init__(self, width: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.BatchNorm2d(1), *_block(1, width), nn.MaxPool2d(2),
                                      *_block(width, 2 * width), nn.MaxPool2d(2),
                                      *_block(2 * width, 4 * width), nn.MaxPool2d(2),
                                      *_block(4 * width, 4 * width))
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(4 * width, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop(self.features(x).amax(dim=(2, 3))))


class VIBINet(nn.Module):
    def __init__(self, width: int, n_classes: int, dropout: float) -> None:
        super().__init__()
        self.explainer = ChunkExplainer(width)
        self.approximator = Approximator(width, n_classes, dropout)


class VIBI(RegionMethod, Explainer):
    """VIBI post-hoc (paper Table IV row 'VIBI')."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"surrogate", "explain"})
    posthoc: ClassVar[bool] = True
    needs_dictionary: ClassVar[bool] = False
    listenable: ClassVar[bool] = True  # chunks are masks of the input
    defaults: ClassVar[dict[str, Any]] = {
        "n_freq": 4, "n_time": 10,   # paper appendix: 32 x 43 chunks of the ESC log-mel = 40
        "k": 10,                     # paper appendix: k in 5..20
        "beta": 1e-3,                # official README example (main.py --beta 1e-3)
        "tau": 0.5,                  # explainer.py: concrete temperature
        "epochs": 15,                # paper appendix: 100 (ESC) / 30 (SONYC); 15 for CPU time
        "lr": 1e-3, "batch_size": 32, "width": 8, "dropout": 0.2,
        "relevance_norm": "paper",
        "select": "valid",
        "f_cache_bytes": 1e9,  # f's logits kept in memory up to this size (else memory-mapped)
    }
    setting_rules: ClassVar[dict[str, Any]] = {
        "f_cache_bytes": Rule(ge=0, doc="f's logits kept in memory up to this, else mmap")}
    small_profile: ClassVar[dict[str, Any]] = {"epochs": 3, "width": 4}

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        if classifier is None:
            raise ValueError("VIBI is post-hoc: it needs the classifier f")
        cfg = self.config
        self.f, self.kind, self.frontend = classifier.eval(), data.task.kind, data.frontend
        self.k = int(cfg["k"])
        torch.manual_seed(self.seed)
        self.net = VIBINet(int(cfg["width"]), data.task.num_classes,
                           float(cfg["dropout"])).to(self.device)
        loader = BatchLoader(data.train, data.frontend, int(cfg["batch_size"]), shuffle=True,
                             seed=self.seed, device=self.device)
        valid = BatchLoader(data.valid, data.frontend, 64, device=self.device)
        # f's outputs on the training and validation clips, once (f is frozen)
        budget = float(cfg["f_cache_bytes"])
        f_train, f_valid = (FrozenOutputs(self.f, BatchLoader(split, data.frontend, 64,
                                                              device=self.device),
                                          (), budget, data.cache_dir)
                            for split in (data.train, data.valid))
        D = self.grid(data.frontend.config.n_frames).K
        if not 1 <= self.k <= D:
            raise ValueError(f"VIBI: k={self.k} must be in [1, {D}] (the number of chunks)")
        beta, tau = float(cfg["beta"]), float(cfg["tau"])
        log_u = -math.log(D)

        def loss_fn(batch: Batch, epoch: int) -> dict[str, Tensor]:
            grid = self.grid(batch.logmel.shape[2])
            f_logits = f_train(batch.index)[0]
            logp = self.net.explainer(batch.logmel, grid)
            z = relaxed_topk(logp, self.k, tau)
            logits = self.net.approximator(mask_logmel(batch.logmel, grid.expand_logmel(z)))
            if self.kind == "multiclass":
                l_cls = F.cross_entropy(logits, f_logits.argmax(-1)) / math.log(2)
            else:
                l_cls = F.binary_cross_entropy_with_logits(logits, torch.sigmoid(f_logits))
                l_cls = l_cls / math.log(2)
            # k * KL(u || p(z|x)), u uniform over the D chunks (solver.py's info_loss)
            l_info = self.k * (math.exp(log_u) * (log_u - logp)).sum(-1).mean()
            return {"loss": l_cls + beta * l_info, "class": l_cls, "info": l_info}

        try:
            self.history = fit(self.net, self.net.parameters(), loss_fn, loader,
                               epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                               validate=lambda: self._agreement(valid, f_valid),
                               select=cfg["select"], desc="vibi")
        finally:
            f_train.close()
            f_valid.close()


    # -- internals -------------------------------------------------------------------------
    def _logp(self, batch: Batch) -> Tensor:
        return self.net.explainer(batch.logmel, self.grid(batch.logmel.shape[2]))

    def test_mask(self, batch: Batch) -> Tensor:
        """(B, D) hard top-k chunk mask used at test time."""
        return hard_topk(self._logp(batch), self.k)

    def _surrogate_logits(self, batch: Batch) -> Tensor:
        grid = self.grid(batch.logmel.shape[2])
        gate = grid.expand_logmel(self.test_mask(batch))
        return self.net.approximator(mask_logmel(batch.logmel, gate))

    @torch.inference_mode()
    def _agreement(self, loader: BatchLoader, f_valid: FrozenOutputs) -> float:
        hits, total = 0.0, 0
        for batch in loader:
            f_logits = f_valid(batch.index)[0]
            logits = self._surrogate_logits(batch)
            if self.kind == "multiclass":
                hits += float((logits.argmax(-1) == f_logits.argmax(-1)).sum())
            else:
                hits -= float(F.binary_cross_entropy_with_logits(
                    logits, torch.sigmoid(f_logits))) * len(batch)
            total += len(batch)
        return hits / max(total, 1)

    # -- capabilities ----------------------------------------------------------------------
    @torch.inference_mode()
    def surrogate_predict(self, batch: Batch) -> Tensor:
        logits = self._surrogate_logits(batch)
        return torch.softmax(logits, -1) if self.kind == "multiclass" else torch.sigmoid(logits)

    @torch.inference_mode()
    def explain(self, batch: Batch, classes: Tensor) -> SegmentExplanation:
        grid = self.grid(batch.X.shape[-1])
        p = self._logp(batch).exp()
        r = normalise_relevance(p, self.config["relevance_norm"])
        return SegmentExplanation(batch.X, grid.segments(len(batch)).to(batch.X.device), r)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
