"""Listen to Interpret by design (L2I_BD): Parekh et al., TASLP 2024, sec. III-C, Table III,
Table VIII (rows 'L2I_BD w/ Θ_ATT', 'L2I_BD-NoPred', 'L2I-PostHoc').

The predictor is g(x) = Θ(Ψ(f_I(x))): the classifier f (Kumar et al.'s CNN, built here and
NOT pre-trained) and the L2I interpreter (Ψ, Θ_ATT, fixed NMF dictionary W, reused from
``methods/l2i.py``) are trained jointly with (paper III-C)

    L = L_f + γ L_FID + α L_NMF + β ||H||_1,

where L_f is the classification loss on f's own output (cross-entropy for multi-class; for
multi-label a binary cross-entropy averaged over the annotated labels only, ``batch.mask``),
L_FID is eq. (1)/(2) with f's output as (soft) target and L_NMF is eq. (3). All losses reach
f's layers: the hidden maps f_I(x) through Ψ, and f's output through L_f and (as the paper's
notation L_FID(x, V_Ψ, V_Θ, V_f) says) through L_FID's target — ``fid_target_grad=False``
detaches that target instead. Predictions are g's softmax / sigmoid; explanations are L2I's
(relevance from Θ's pooled activations and weights, NMF soft-mask components, Algorithm 1).

Variants:
- ``L2IByDesignNoPred`` ('l2i-bd-nopred'): the classification loss is applied to g(x) instead
  of f(x); everything else (γ L_FID, α L_NMF, β L1) is unchanged, so f's output layer is
  trained only through L_FID.
- ``L2IPosthocPredictor`` ('l2i-posthoc'): the post-hoc interpreter of ``methods/l2i.py``
  (trained on the engine's frozen, pre-trained f exactly as ``l2i``) evaluated as a
  predictor: predict = Θ's output. It stays ``posthoc`` (it needs f), so the scorer computes
  its faithfulness (FF) against f, not against Θ; its classification row is Θ vs the labels.

Deviations / choices (the by-design variant has no public code): Adam lr 2e-4 (IV-B5), the
constant loss weights of Table III (no fidelity warm-up), model selection on g's validation
score (accuracy, or macro AUPRC for multi-label), the same Ψ / Θ_ATT as the post-hoc method.
The width of f (``width``, ``head_mid``, ``f_dropout``) follows classifier.DEFAULTS (1.0 =
the paper's network); f's multi-label loss has no per-class positive weights.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio_xai_bench.api import Batch, TaskData
from audio_xai_bench.classifier import DEFAULTS as CLF_DEFAULTS
from audio_xai_bench.classifier import build_classifier, probabilities
from audio_xai_bench.methods.l2i import (L2I, Interpreter, fidelity_loss, hidden_shapes,
                                         nmf_loss, psi_width)
from audio_xai_bench.metrics import fidelity as fid
from audio_xai_bench.train import BatchLoader, fit


def label_loss(logits: Tensor, batch: Batch, kind: str) -> Tensor:
    """Classification loss against the labels: cross-entropy (multi-class) or binary
    cross-entropy averaged over the annotated labels only (multi-label, ``batch.mask``)."""
    if kind == "multiclass":
        return F.cross_entropy(logits, batch.target.argmax(1))
    m = batch.mask.to(logits.dtype)
    per = F.binary_cross_entropy_with_logits(logits, batch.target.to(logits.dtype),
                                             reduction="none")
    return (per * m).sum() / m.sum().clamp_min(1.0)


@torch.inference_mode()
def label_score(probs: Tensor, target: Tensor, mask: Tensor, kind: str) -> float:
    """Validation score of a predictor: top-1 accuracy or macro AUPRC (higher is better)."""
    probs, target, mask = probs.float().cpu(), target.cpu(), mask.cpu()
    if kind == "multiclass":
        return float((probs.argmax(1) == target.argmax(1)).float().mean())
    ap = fid.average_precision_macro_micro(target.numpy() > 0.5, probs.numpy(), mask.numpy())
    return float(ap["macro"])


class _Joint(nn.Module):
    """f and the interpreter as one module (one optimiser, one state dict for fit)."""

    def __init__(self, f: nn.Module, net: nn.Module) -> None:
        super().__init__()
        self.f, self.net = f, net


class JointTraining:
    """Mixin of the by-design methods that train their own Kumar network f jointly with an
    interpreter ``self.net`` (L2I_BD, FLINT-BD): building f, the one training loop with
    model selection on the validation labels, ``predict`` and persistence. The class using it
    provides ``loss_fn(batch, epoch)`` and ``_logits(batch)``."""

    config: dict[str, Any]
    kind: str

    def _build_f(self, num_classes: int) -> nn.Module:
        cfg = self.config
        torch.manual_seed(self.seed)  # type: ignore[attr-defined]
        return build_classifier(num_classes, {"width": cfg["width"], "head_mid": cfg["head_mid"],
                                              "dropout": cfg["f_dropout"]})

    def _fit_joint(self, data: TaskData, desc: str) -> None:
        cfg = self.config
        self.model = _Joint(self.f, self.net).to(self.device)  # type: ignore[attr-defined]
        loader = BatchLoader(data.train, data.frontend, int(cfg["batch_size"]), shuffle=True,
                             seed=self.seed, device=self.device)  # type: ignore[attr-defined]
        valid = BatchLoader(data.valid, data.frontend, 64, device=self.device)  # type: ignore[attr-defined]
        self.history = fit(self.model, self.model.parameters(), self.loss_fn, loader,  # type: ignore[attr-defined]
                           epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                           validate=lambda: self._valid_score(valid), select=cfg["select"],
                           desc=desc)
        self.model.eval()

    @torch.inference_mode()
    def _valid_score(self, loader: BatchLoader) -> float:
        probs, target, mask = [], [], []
        for batch in loader:
            probs.append(self.predict(batch))
            target.append(batch.target)
            mask.append(batch.mask)
        return label_score(torch.cat(probs), torch.cat(target), torch.cat(mask), self.kind)

    @torch.inference_mode()
    def predict(self, batch: Batch) -> Tensor:
        """The by-design prediction g(x) as probabilities (softmax / sigmoid)."""
        return probabilities(self._logits(batch), self.kind)  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        return {"f": self.f.state_dict(), "net": self.net.state_dict()}  # type: ignore[attr-defined]

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.f.load_state_dict(state["f"])  # type: ignore[attr-defined]
        self.net.load_state_dict(state["net"])  # type: ignore[attr-defined]


class L2IByDesign(JointTraining, L2I):
    """L2I_BD w/ Θ_ATT (paper Table VIII): predict = g(x) = Θ(Ψ(f_I(x)))."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"predict", "explain"})
    posthoc: ClassVar[bool] = False
    needs_dictionary: ClassVar[bool] = True
    theta: ClassVar[str] = "att"
    classification_on: ClassVar[str] = "f"  # where the label loss is applied: 'f' or 'g'
    defaults: ClassVar[dict[str, Any]] = {
        # paper Table III (ESC-50 row) and IV-B5; tasks override per dataset ('l2i-bd')
        "K": 100, "gamma": 1.0, "alpha": 3.0, "beta": 0.2, "epochs": 51, "lr": 2e-4,
        "batch_size": 32, "hidden_layers": ("B4", "B5", "B6"),
        "fid_target_grad": True,     # paper: L_FID depends on V_f through f(x); False detaches
        "attention": "auto", "relevance_norm": "paper", "dropout": 0.0, "psi_width": 1.0,
        "psi_plan": "reference",
        # f, trained jointly (classifier.DEFAULTS; 1.0 = Kumar et al.)
        "width": float(CLF_DEFAULTS["width"]), "head_mid": int(CLF_DEFAULTS["head_mid"]),
        "f_dropout": float(CLF_DEFAULTS["dropout"]),
        "nmf_mu": 0.8, "nmf_iter": 100, "select": "valid",
    }
    small_profile: ClassVar[dict[str, Any]] = {"K": 16, "epochs": 3, "psi_width": 0.125,
                                               "width": 0.125, "nmf_iter": 30, "lr": 2e-3,
                                               "batch_size": 16}

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        cfg, task = self.config, data.task
        if data.dictionary is None:
            raise ValueError("L2I by-design needs the task's dictionary")
        self.kind = task.kind
        self.layers = tuple(cfg["hidden_layers"])
        W = data.dictionary.to(self.device)
        att = cfg["attention"]
        per_class = (task.kind == "multilabel") if att == "auto" else att == "per_class"
        self.per_class = per_class
        self.f = self._build_f(task.num_classes).to(self.device)
        shapes = hidden_shapes(self.f, data.frontend.logmel(data.train.wave[:1].to(self.device)),
                               self.layers)
        self.net = Interpreter(shapes, W, task.num_classes, self.theta, per_class,
                               psi_width(cfg["psi_width"], shapes), float(cfg["dropout"]),
                               cfg["psi_plan"])
        self._fit_joint(data, f"{self.registry_name or 'l2i-bd'} f + interpreter")

    def loss_fn(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        """L = L_cls + γ L_FID + α L_NMF + β ||H||_1 (paper III-C); L_cls on f or on g."""
        cfg = self.config
        f_logits, hidden = self.f.forward_hidden(batch.logmel)
        H, logits = self.net({n: hidden[n] for n in self.layers}, batch.X.shape[-1])
        target = f_logits if cfg["fid_target_grad"] else f_logits.detach()
        l_fid = fidelity_loss(logits, target, self.kind)
        l_nmf = nmf_loss(batch.X, self.net.W, H)
        l_sp = H.abs().mean()
        if self.classification_on == "f":
            l_cls = label_loss(f_logits, batch, self.kind)
        else:
            l_cls = label_loss(logits, batch, self.kind)
        loss = (l_cls + float(cfg["gamma"]) * l_fid + float(cfg["alpha"]) * l_nmf
                + float(cfg["beta"]) * l_sp)
        return {"loss": loss, f"cls_{self.classification_on}": l_cls, "fid": l_fid,
                "nmf": l_nmf, "l1": l_sp}


class L2IByDesignNoPred(L2IByDesign):
    """L2I_BD-NoPred (paper V-D): the label loss is applied to g(x), not to f(x)."""

    classification_on: ClassVar[str] = "g"
    task_defaults_key: ClassVar[str] = "l2i-bd"


class L2IPosthocPredictor(L2I):
    """L2I-PostHoc (paper Table VIII): the post-hoc L2I interpreter (trained on the frozen,
    pre-trained f exactly as ``l2i``) used as a predictor, predict = Θ's output.

    It is ``posthoc`` (it needs f), so the scorer's faithfulness is measured on f."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"predict", "explain"})
    task_defaults_key: ClassVar[str] = "l2i"

    def predict(self, batch: Batch) -> Tensor:
        return self.surrogate_predict(batch)
