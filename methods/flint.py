"""FLINT: Parekh, Mozharovskyi and d'Alché-Buc, "A framework to learn with interpretation",
NeurIPS 2021 — post-hoc (``flint``, Table IV of Parekh et al. TASLP 2024) and by-design
(``flint-bd``, Table VIII) baselines.

An interpreter g = h ∘ Φ reads hidden layers of the classifier f: the attribute functions
Φ(x) ∈ R+^J (J = K of L2I, layers B4+B5+B6 as L2I, TASLP appendix) feed a linear head h
(dropout 0.01 + affine layer, as the official code). Losses (FLINT sec. 3, official code
``jayneelparekh/FLINT``):

- output fidelity L_of = −softmax(f(x))ᵀ log softmax(h(Φ(x))) with f's output detached
  (official ``loss_cce(expl, output.detach())``); multi-label: BCE with f's sigmoids as soft
  targets (the same form as L2I's eq. (2); FLINT itself is multi-class only);
- input fidelity L_if = ||d(Φ(x)) − x̃||² with a decoder d and x̃ the classifier input (the dB
  log-mel, standardised by one mean / std taken on training clips so the weight does not
  depend on the dB scale);
- conciseness + diversity L_cd = mean_x H(softmax(Φ(x))) − H(softmax(mean_x Φ(x))) over the
  mini-batch (official code: the softmax normalises Φ) and the sparsity η ||Φ(x)||_1 (mean).

Total: post-hoc  γ L_of + α L_if + δ L_cd + η L1 over (Φ, h, d) with f frozen;
by-design L_pred(f) + the same, trained jointly with a fresh Kumar CNN f (L_pred:
cross-entropy, or masked BCE for multi-label). Weights: J = K, α = L2I's α and the same
epochs as L2I on each task (TASLP appendix: "FLINT's γ = our α"); γ = 1; δ = 0.2, η = 0.1 as
the official code's MNIST setting (the audio values are not published).

Deviations / approximations: the official warm-up (loss terms switched on after 1-4 epochs)
and learning-rate drop are not used (constant weights, Adam at L2I's learning rate); Φ is
per-layer 3×3 conv + ReLU, the maps max-pooled to the deepest layer's grid, concatenated,
3×3 conv + ReLU, 1×1 conv to J maps, ReLU and a global max pool (``attr_pool='max'``); the
official head of ``attr_RN18_multi`` (3×3 adaptive average pool, affine layer, ReLU) is
``attr_pool='avg3_fc'``. The decoder is an affine layer to a (T/8, M/8) grid and three
(×2 nearest upsampling, 3×3 conv) stages cropped to (T, M) — the official image decoders
follow the same pattern. FLINT's attributes are not audio: ``listenable = False`` and no
``explain`` capability; ``flint-bd``'s ``predict`` is the interpreter g = h(Φ(x)) (the
model of Table VIII), not f.
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio_xai_bench.api import Batch, Explainer, TaskData
from audio_xai_bench.settings import Rule, resolve
from audio_xai_bench.classifier import DEFAULTS as CLF_DEFAULTS
from audio_xai_bench.classifier import probabilities
from audio_xai_bench.methods._fcache import FrozenOutputs
from audio_xai_bench.methods.l2i import fidelity_loss, probe_input
from audio_xai_bench.model import classifier_input
from audio_xai_bench.methods.l2i_bd import JointTraining, label_loss
from audio_xai_bench.train import BatchLoader, fit


# --------------------------------------------------------------------------------------------
# networks
# --------------------------------------------------------------------------------------------
class AttributeNet(nn.Module):
    """Φ: hidden maps {name: (B, C, T', M')} -> attribute activations (B, J) >= 0."""

    def __init__(self, in_channels: dict[str, int], J: int, mid: int = 64,
                 pool: str = "max") -> None:
        super().__init__()
        if pool not in ("max", "avg3_fc"):
            raise ValueError(f"attr_pool must be 'max' or 'avg3_fc', not {pool!r}")
        self.names, self.pool = list(in_channels), pool
        self.inputs = nn.ModuleDict({n: nn.Sequential(nn.Conv2d(c, mid, 3, padding=1),
                                                      nn.ReLU(inplace=True))
                                     for n, c in in_channels.items()})
        self.merge = nn.Sequential(nn.Conv2d(mid * len(self.names), mid, 3, padding=1),
                                   nn.ReLU(inplace=True))
        if pool == "max":
            self.out: nn.Module = nn.Conv2d(mid, J, 1)
        else:
            self.out = nn.Linear(mid * 9, J)

    def forward(self, hidden: dict[str, Tensor]) -> Tensor:
        grid = hidden[self.names[-1]].shape[2:]
        maps = [F.adaptive_max_pool2d(self.inputs[n](hidden[n]), grid) for n in self.names]
        x = self.merge(torch.cat(maps, 1))
        if self.pool == "max":
            return torch.relu(self.out(x)).amax(dim=(2, 3))
        return torch.relu(self.out(F.adaptive_avg_pool2d(x, 3).flatten(1)))


class Decoder(nn.Module):
    """d: attributes (B, J) -> standardised log-mel (B, 1, T, M)."""

    def __init__(self, J: int, T: int, M: int, channels: int = 16) -> None:
        super().__init__()
        self.T, self.M, self.c = T, M, channels
        self.t0, self.m0 = math.ceil(T / 8), math.ceil(M / 8)
        self.fc = nn.Linear(J, channels * self.t0 * self.m0)
        self.ups = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.Conv2d(channels, channels, 3, padding=1),
                                  nn.Conv2d(channels, 1, 3, padding=1)])

    def forward(self, phi: Tensor) -> Tensor:
        x = self.fc(phi).view(-1, self.c, self.t0, self.m0)
        for i, conv in enumerate(self.ups):
            x = conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
            if i < len(self.ups) - 1:
                x = torch.relu(x)
        return x[:, :, :self.T, :self.M]


class FLINTNet(nn.Module):
    """The interpreter: Φ, the linear head h and the decoder d."""

    def __init__(self, in_channels: dict[str, int], J: int, C: int, T: int, M: int,
                 mid: int, dec_channels: int, pool: str) -> None:
        super().__init__()
        self.phi = AttributeNet(in_channels, J, mid, pool)
        self.head = nn.Sequential(nn.Dropout(0.01), nn.Linear(J, C))
        self.decoder = Decoder(J, T, M, dec_channels)
        self.register_buffer("x_mean", torch.zeros(()))
        self.register_buffer("x_std", torch.ones(()))


def concise_diverse_loss(phi: Tensor) -> tuple[Tensor, Tensor]:
    """(conciseness, diversity) of attribute activations (B, J), both to be minimised:
    conciseness = mean_x H(softmax(Φ(x))), diversity = −H(softmax(mean_x Φ(x)))."""
    def entropy(v: Tensor) -> Tensor:
        return -(torch.softmax(v, -1) * torch.log_softmax(v, -1)).sum(-1)
    return entropy(phi).mean(), -entropy(phi.mean(0))


# --------------------------------------------------------------------------------------------
# methods
# --------------------------------------------------------------------------------------------
class FLINT(Explainer):
    """FLINT post-hoc (TASLP Table IV row 'FLINT'): a global surrogate h(Φ(f_I(x)))."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"surrogate"})
    classifier_needs: ClassVar[frozenset[str]] = frozenset({"white-box"})  # hidden maps
    posthoc: ClassVar[bool] = True
    listenable: ClassVar[bool] = False  # attributes are not audio
    needs_dictionary: ClassVar[bool] = False
    task_defaults_key: ClassVar[str] = "l2i"  # J = K, α and epochs follow L2I per task
    defaults: ClassVar[dict[str, Any]] = {
        # J = K and α (input fidelity) = L2I's Table II values, same epochs (TASLP appendix)
        "K": 100, "alpha": 10.0, "gamma": 1.0, "delta": 0.2, "eta": 0.1, "epochs": 35,
        "lr": 2e-4, "batch_size": 32, "hidden_layers": ("B4", "B5", "B6"),
        "attr_mid": 64, "attr_pool": "max", "dec_channels": 16, "select": "valid",
        "f_cache_bytes": 1e9,  # f's outputs kept in memory up to this size (else memory-mapped)
    }
    setting_rules: ClassVar[dict[str, Any]] = {
        "f_cache_bytes": Rule(ge=0, doc="f's outputs kept in memory up to this, else mmap")}
    small_profile: ClassVar[dict[str, Any]] = {"K": 16, "epochs": 4, "attr_mid": 16,
                                               "dec_channels": 8, "lr": 2e-3}

    @classmethod
    def resolve_config(cls, task, profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
        """As Explainer's, but only the keys FLINT knows are taken from the shared L2I
        per-task dictionaries (e.g. L2I's 'beta' or 'attention' are dropped)."""
        cfg = super().resolve_config(task, profile, {})
        cfg = {k: v for k, v in cfg.items() if k in cls.defaults}
        return resolve(f"method {cls.registry_name or cls.__name__}", cfg, overrides,
                       cls.setting_rules)

    # -- building --------------------------------------------------------------------------
    def _build(self, data: TaskData, chans: dict[str, int]) -> None:
        cfg = self.config
        with torch.no_grad():
            x = data.frontend.logmel(data.train.wave[:64].to(self.device))
        T, M = x.shape[2], x.shape[3]
        torch.manual_seed(self.seed)
        self.net = FLINTNet(chans, int(cfg["K"]), data.task.num_classes, T, M,
                            int(cfg["attr_mid"]), int(cfg["dec_channels"]),
                            cfg["attr_pool"]).to(self.device)
        self.net.x_mean.fill_(float(x.mean()))
        self.net.x_std.fill_(float(x.std().clamp_min(1e-3)))

    def interpreter_losses(self, batch: Batch, f_logits: Tensor,
                           hidden: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """γ L_of + α L_if + δ L_cd + η L1 and the individual terms."""
        cfg = self.config
        phi = self.net.phi({n: hidden[n] for n in self.layers})
        logits = self.net.head(phi)
        l_of = fidelity_loss(logits, f_logits.detach(), self.kind)
        x = (batch.logmel - self.net.x_mean) / self.net.x_std
        l_if = F.mse_loss(self.net.decoder(phi), x)
        l_conc, l_div = concise_diverse_loss(phi)
        l_l1 = phi.abs().mean()
        total = (float(cfg["gamma"]) * l_of + float(cfg["alpha"]) * l_if
                 + float(cfg["delta"]) * (l_conc + l_div) + float(cfg["eta"]) * l_l1)
        return total, {"of": l_of, "if": l_if, "conc": l_conc, "div": l_div, "l1": l_l1}

    # -- training --------------------------------------------------------------------------
    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        cfg = self.config
        if classifier is None:
            raise ValueError("FLINT post-hoc needs the classifier f")
        self.f, self.kind = classifier.eval(), data.task.kind
        for p in self.f.parameters():
            p.requires_grad_(False)
        self.layers = tuple(cfg["hidden_layers"])
        with torch.inference_mode():
            _, hid = self.f.forward_hidden(probe_input(self.f, data, self.device))
        self._build(data, {n: hid[n].shape[1] for n in self.layers})

        # f is frozen and the features deterministic: its outputs are computed once
        cached = {name: FrozenOutputs(self.f, BatchLoader(split, data.frontend, 64,
                                                          device=self.device),
                                      self.layers, float(cfg["f_cache_bytes"]), data.cache_dir)
                  for name, split in (("train", data.train), ("valid", data.valid))}

        def loss_fn(batch: Batch, epoch: int) -> dict[str, Tensor]:
            f_logits, hidden = cached["train"](batch.index)
            total, logs = self.interpreter_losses(batch, f_logits, hidden)
            return {"loss": total, **logs}

        loader = BatchLoader(data.train, data.frontend, int(cfg["batch_size"]), shuffle=True,
                             seed=self.seed, device=self.device)
        valid = BatchLoader(data.valid, data.frontend, 64, device=self.device)
        try:
            self.history = fit(self.net, self.net.parameters(), loss_fn, loader,
                               epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                               validate=lambda: self._valid_score(valid, cached["valid"]),
                               select=cfg["select"],
                               desc=f"{self.registry_name or 'flint'} interpreter")
        finally:
            for c in cached.values():
                c.close()

    @torch.inference_mode()
    def _valid_score(self, loader: BatchLoader, cached: FrozenOutputs) -> float:
        """Top-1 agreement with f (multi-class) or −L_of (multi-label)."""
        score, n = 0.0, 0
        for batch in loader:
            f_logits, hidden = cached(batch.index)
            logits = self.net.head(self.net.phi({k: hidden[k] for k in self.layers}))
            if self.kind == "multiclass":
                score += float((logits.argmax(-1) == f_logits.argmax(-1)).sum())
            else:
                score -= float(fidelity_loss(logits, f_logits, self.kind)) * len(batch)
            n += len(batch)
        return score / max(n, 1)

    # -- outputs ---------------------------------------------------------------------------
    def attributes(self, batch: Batch) -> Tensor:
        """Φ(x): (B, J) non-negative attribute activations."""
        _, hidden = self.f.forward_hidden(classifier_input(self.f, batch))
        return self.net.phi({n: hidden[n] for n in self.layers})

    def _logits(self, batch: Batch) -> Tensor:
        return self.net.head(self.attributes(batch))

    @torch.inference_mode()
    def surrogate_predict(self, batch: Batch) -> Tensor:
        return probabilities(self._logits(batch), self.kind)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])


class FLINTByDesign(JointTraining, FLINT):
    """FLINT by design (TASLP Table VIII row 'FLINT'): f and the interpreter trained jointly
    with L_pred(f) + γ L_of + α L_if + δ L_cd + η L1; predict = the interpreter g = h(Φ(x))."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"predict"})
    posthoc: ClassVar[bool] = False
    task_defaults_key: ClassVar[str] = "l2i-bd"  # J = K, α and epochs as L2I_BD (Table III)
    defaults: ClassVar[dict[str, Any]] = {
        **FLINT.defaults, "alpha": 3.0, "epochs": 51,
        "width": float(CLF_DEFAULTS["width"]), "head_mid": int(CLF_DEFAULTS["head_mid"]),
        "f_dropout": float(CLF_DEFAULTS["dropout"]),
    }
    small_profile: ClassVar[dict[str, Any]] = {**FLINT.small_profile, "epochs": 3,
                                               "width": 0.125, "batch_size": 16}

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        self.kind = data.task.kind
        self.layers = tuple(self.config["hidden_layers"])
        self.f = self._build_f(data.task.num_classes).to(self.device)
        self._build(data, {n: self.f.channels[n] for n in self.layers})
        self._fit_joint(data, f"{self.registry_name or 'flint-bd'} f + interpreter")

    def loss_fn(self, batch: Batch, epoch: int) -> dict[str, Tensor]:
        f_logits, hidden = self.f.forward_hidden(batch.logmel)
        l_pred = label_loss(f_logits, batch, self.kind)
        total, logs = self.interpreter_losses(batch, f_logits, hidden)
        return {"loss": l_pred + total, "pred": l_pred, **logs}
