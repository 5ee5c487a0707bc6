"""Listen to Interpret (L2I), post-hoc: Parekh et al., TASLP 2024, sec. III-B, III-D, III-E.

An interpreter Ψ maps hidden maps of the frozen classifier f (blocks B4+B5+B6) to
non-negative time activations H ∈ R+^{K×T} of a fixed, pre-learned NMF dictionary W; Θ pools
H over time (gated attention, Θ_ATT, or max, Θ_MAX) and mimics f with a linear layer.
Losses eq. (1)-(4): fidelity to f, reconstruction ||X - W H||² and ℓ1 sparsity of H.

Where the paper is silent this follows the authors' code (``reference/l2i_protocol_facts.md``
§3-§7): Ψ's layer plan section by section (see ``Psi``: B5 -> 256 channels with average
pooling of frequency, B6 -> 128, B4 -> 128 with a (4,1)-strided conv, merged, upsampled in
time, frequency collapsed, resized to the T STFT frames, two Conv1d + ReLU); Θ_ATT is Ilse
gated attention with a ReLU gate, dropout on its two branches' input and a bias-free linear
layer; Θ_MAX drops out the pooled vector; the losses are means; the fidelity weight is 0.5
until epoch 20 and 1.0 after while the reconstruction and sparsity weights stay α/2 and β/2
(so the paper's α, β are the ratios of the first phase); the soft masks of Algorithm 1 are
applied in the log1p domain. Θ's dropout is 0 by default (the paper gives none); ESC-50's
task defaults set the code's 0.4 (Θ_ATT) and 0.3 (Θ_MAX); SONYC-UST (none in the code),
OpenMIC (no code) and synth keep 0.
Where they disagree the paper is the default and the code an option: relevance normalised by
max |v| (``relevance_norm='paper'``) or by the signed max (``'code'``); class-specific
attention for multi-label (``attention='per_class'``) or one shared attention (``'shared'``).

Named deviations (options; the defaults are the reference): ``psi_plan='resample'`` resamples
each branch bilinearly instead of the crops, pooling and strided conv; ``psi_width`` scales
Ψ's channels ('auto' = f's width, so the paper's Ψ for the paper's full-width f);
``early_stop=N`` ends training when neither validation fidelity nor the NMF loss improved in
N epochs (0 = the paper's fixed epochs). The epoch kept is the one with the best validation
fidelity (never the test split), ties broken by the lower validation loss. f's outputs on
the training and validation clips are computed once (``methods/_fcache.py``; f is frozen).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio_xai_bench.api import (Batch, Explainer, FactorExplanation, TaskData,
                                 normalise_relevance)
from audio_xai_bench.methods._fcache import FrozenOutputs
from audio_xai_bench.model import classifier_input
from audio_xai_bench.settings import Rule
from audio_xai_bench.train import BatchLoader, fit


PSI_PLANS = ("reference", "resample")


class Psi(nn.Module):
    """Ψ: hidden maps {name: (B, C, T', M')} -> H (B, K, T) >= 0 (paper III-D).

    ``plan='reference'`` is the authors' layer plan (``reference/l2i_protocol_facts.md`` §3),
    with the three maps in the order (shallow, mid, deep) = (B4, B5, B6) and T6 the deepest
    map's time length; "up×2" doubles time (bilinear, align_corners=True), frequency kept:

    1. B5: first 2·T6 frames -> up×2 -> 3×3 conv 256 + ReLU -> average pool of frequency
       pairs, 2:1 -> (256, 4·T6, M6);
    2. B6: up×2 -> 3×3 conv 128 + ReLU -> up×2 -> (128, 4·T6, M6);
    3. B4: first 4·T6 frames -> conv 128, kernel = stride = 4 along frequency + ReLU;
    4. concatenate [B5, B6, B4] -> up×2 -> 3×3 conv 256 + ReLU -> up×2 -> (256, 16·T6, M6);
    5. conv over all M6 bands + ReLU -> (256, 16·T6) -> linear resize to the T STFT frames;
    6. Conv1d 256->K k5 + ReLU -> Conv1d K->K k5 + ReLU.

    Channel counts are the reference's times ``width`` (1.0 = the paper's Ψ for the paper's
    full-width f). ESC-50 (M6 = 4 bands) gives the reference's shapes exactly; other front
    ends keep the plan with M6 = the deepest map's bands. Like the reference, the crops
    and the final stretch of 16·T6 frames to T assume T ≈ 32·T6 (ESC-50: 416 of 431 frames;
    synth, 94 frames: T6 = 2, 64 of 94). ``plan='resample'`` (a named deviation, for
    classifiers whose maps are not 2× pools of one another) replaces the crops, the pooling
    and the strided conv by bilinear resampling of each branch to the (4·T6', M6) grid,
    where T6' = ceil(T / 32) covers the whole clip.
    """

    def __init__(self, in_shapes: dict[str, tuple[int, int]], K: int, width: float = 1.0,
                 plan: str = "reference") -> None:
        super().__init__()
        if plan not in PSI_PLANS:
            raise ValueError(f"psi_plan must be one of {PSI_PLANS}, not {plan!r}")
        if len(in_shapes) != 3:
            raise ValueError("Ψ reads exactly three hidden maps (shallow, mid, deep; the "
                             f"paper's B4, B5, B6), got {list(in_shapes)}")
        c = lambda n: max(4, int(round(n * width)))  # noqa: E731
        (self.n4, (ch4, m4)), (self.n5, (ch5, m5)), (self.n6, (ch6, m6)) = in_shapes.items()
        self.plan, self.bands = plan, m6
        if plan == "reference" and not (m5 // 2 == m6 and m4 // 4 == m6):
            raise ValueError(
                f"Ψ reference plan: the maps' frequency bins {m4}, {m5}, {m6} are not 4:2:1 "
                "(Kumar CNN pools); use psi_plan='resample' for this classifier")
        c4, c5, c6 = c(128), c(256), c(128)
        self.b5 = nn.Sequential(nn.Conv2d(ch5, c5, 3, padding=1), nn.ReLU(inplace=True))
        self.b6 = nn.Sequential(nn.Conv2d(ch6, c6, 3, padding=1), nn.ReLU(inplace=True))
        if plan == "reference":
            self.b4 = nn.Sequential(nn.Conv2d(ch4, c4, (1, 4), stride=(1, 4)),
                                    nn.ReLU(inplace=True))
        else:
            self.b4 = nn.Sequential(nn.Conv2d(ch4, c4, 3, padding=1), nn.ReLU(inplace=True))
        self.merge = nn.Sequential(nn.Conv2d(c5 + c6 + c4, c(256), 3, padding=1),
                                   nn.ReLU(inplace=True))
        self.collapse = nn.Sequential(nn.Conv2d(c(256), c(256), (1, m6)), nn.ReLU(inplace=True))
        self.out = nn.Sequential(nn.Conv1d(c(256), K, 5, padding=2), nn.ReLU(inplace=True),
                                 nn.Conv1d(K, K, 5, padding=2), nn.ReLU())

    @staticmethod
    def _resize(x: Tensor, t: int, m: int | None = None) -> Tensor:
        return F.interpolate(x, size=(t, m or x.shape[3]), mode="bilinear", align_corners=True)

    def forward(self, hidden: dict[str, Tensor], T: int) -> Tensor:
        h4, h5, h6 = hidden[self.n4], hidden[self.n5], hidden[self.n6]
        if self.plan == "reference":
            t6 = h6.shape[2]
            x5 = self.b5(self._resize(h5[:, :, :2 * t6], 4 * t6))
            x5 = F.avg_pool2d(x5, (1, 2))[..., :self.bands]
            x6 = self._resize(self.b6(self._resize(h6, 2 * t6)), 4 * t6)
            x4 = self.b4(h4[:, :, :4 * t6])
        else:
            t6 = max(1, -(-T // 32))
            x5 = self._resize(self.b5(h5), 4 * t6, self.bands)
            x6 = self._resize(self.b6(h6), 4 * t6, self.bands)
            x4 = self._resize(self.b4(h4), 4 * t6, self.bands)
        x = self.merge(self._resize(torch.cat([x5, x6, x4], 1), 8 * t6))
        x = self.collapse(self._resize(x, 16 * t6)).squeeze(-1)  # (B, C, 16·T6)
        x = F.interpolate(x, size=T, mode="linear", align_corners=True)
        return self.out(x)


class ThetaAtt(nn.Module):
    """Θ_ATT: gated attention pooling over time (Ilse et al. 2018, ReLU gate as in the
    authors' code) then a bias-free linear layer. ``n_att`` = 1 (shared) or C (per class)."""

    def __init__(self, K: int, C: int, per_class: bool, hidden: int = 256,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.per_class = per_class
        self.V, self.U = nn.Linear(K, hidden), nn.Linear(K, hidden)
        self.score = nn.Linear(hidden, C if per_class else 1)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(K, C, bias=False)

    def pooled(self, H: Tensor) -> Tensor:
        """z (B, n_att, K): attention-pooled activations (dropout only on the attention input)."""
        Ht = H.transpose(1, 2)  # (B, T, K)
        s = self.score(torch.tanh(self.V(self.drop(Ht))) * torch.relu(self.U(self.drop(Ht))))
        a = torch.softmax(s, dim=1)  # (B, T, n_att), softmax over time
        return torch.einsum("btn,btk->bnk", a, Ht)

    def logits_from_pooled(self, z: Tensor) -> Tensor:
        if self.per_class:
            return (z * self.fc.weight.unsqueeze(0)).sum(-1)  # (B, C)
        return self.fc(z[:, 0])

    def forward(self, H: Tensor) -> Tensor:
        return self.logits_from_pooled(self.pooled(H))


class ThetaMax(nn.Module):
    """Θ_MAX: max pooling over time, dropout, bias-free linear layer (paper IV-C)."""

    per_class = False

    def __init__(self, K: int, C: int, dropout: float = 0.0, **_: Any) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(K, C, bias=False)

    def pooled(self, H: Tensor) -> Tensor:
        return H.amax(dim=2).unsqueeze(1)

    def logits_from_pooled(self, z: Tensor) -> Tensor:
        return self.fc(self.drop(z[:, 0]))

    def forward(self, H: Tensor) -> Tensor:
        return self.logits_from_pooled(self.pooled(H))


class Interpreter(nn.Module):
    """Ψ followed by Θ, with the fixed dictionary W as a buffer. ``in_shapes`` = {layer:
    (channels, frequency bins)} of the hidden maps Ψ reads (``hidden_shapes``)."""

    def __init__(self, in_shapes: dict[str, tuple[int, int]], W: Tensor, C: int, theta: str,
                 per_class: bool, width: float, dropout: float, plan: str = "reference") -> None:
        super().__init__()
        K = W.shape[1]
        self.psi = Psi(in_shapes, K, width, plan)
        if theta == "att":
            self.theta: nn.Module = ThetaAtt(K, C, per_class, dropout=dropout)
        else:
            self.theta = ThetaMax(K, C, dropout=dropout)
        self.register_buffer("W", W.clone())

    def forward(self, hidden: dict[str, Tensor], T: int) -> tuple[Tensor, Tensor]:
        H = self.psi(hidden, T)
        return H, self.theta(H)


def probe_input(f: nn.Module, data: TaskData, device: torch.device) -> Tensor:
    """f's input for one training clip (its log-mel, or its resampled waveform)."""
    wave = data.train.wave[:1].to(device)
    own = getattr(f, "input_from_wave", None)
    return own(wave) if callable(own) else data.frontend.logmel(wave)


def hidden_shapes(f: nn.Module, logmel: Tensor, layers: tuple[str, ...]
                  ) -> dict[str, tuple[int, int]]:
    """{layer: (channels, frequency bins)} of f's hidden maps on a probe input (f in eval)."""
    was_training = f.training
    f.eval()
    with torch.inference_mode():
        _, hid = f.forward_hidden(logmel)
    f.train(was_training)
    return {n: (int(hid[n].shape[1]), int(hid[n].shape[3])) for n in layers}


def psi_width(setting: Any, shapes: dict[str, tuple[int, int]]) -> float:
    """Ψ's channel multiplier: a number, or 'auto' (None) = the deepest map's channels over the
    reference's 512 (f's own width multiplier for the Kumar CNN), capped at 1.0 (the
    paper's Ψ for the paper's f)."""
    if setting is None or setting == "auto":
        return min(1.0, list(shapes.values())[-1][0] / 512)
    return float(setting)


def fidelity_loss(logits: Tensor, f_logits: Tensor, kind: str) -> Tensor:
    """L_FID, eq. (1) (multiclass: −Σ_c f(x)_c log Θ_c, mean over the batch) or eq. (2)
    (multilabel: binary cross-entropy with f's sigmoids as soft targets, mean over batch ×
    classes, as in the authors' code)."""
    if kind == "multiclass":
        t = torch.softmax(f_logits, -1)
        return -(t * torch.log_softmax(logits, -1)).sum(-1).mean()
    return F.binary_cross_entropy_with_logits(logits, torch.sigmoid(f_logits))


def nmf_loss(X: Tensor, W: Tensor, H: Tensor) -> Tensor:
    """L_NMF, eq. (3), as the mean squared error over B·F·T (authors' code)."""
    return F.mse_loss(torch.einsum("fk,bkt->bft", W, H), X)


def plateaued(history: list[dict[str, float]], patience: int) -> bool:
    """Early stop: neither the validation score nor the training NMF loss improved on its
    best value of the earlier epochs during the last ``patience`` epochs."""
    if len(history) <= patience:
        return False
    old, recent = history[:-patience], history[-patience:]
    score = max(r.get("valid_score", -float("inf")) for r in recent) > \
        max(r.get("valid_score", -float("inf")) for r in old)
    nmf = min(r["nmf"] for r in recent) < min(r["nmf"] for r in old)
    return not (score or nmf)


class L2I(Explainer):
    """L2I post-hoc with Θ_ATT (paper Table IV row 'L2I w/ Θ_ATT')."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"surrogate", "explain"})
    classifier_needs: ClassVar[frozenset[str]] = frozenset({"white-box"})  # hidden maps
    posthoc: ClassVar[bool] = True
    needs_dictionary: ClassVar[bool] = True
    theta: ClassVar[str] = "att"
    defaults: ClassVar[dict[str, Any]] = {
        # paper Table II (ESC-50 row) and IV-B5; tasks override per dataset
        "K": 100, "alpha": 10.0, "beta": 0.8, "epochs": 35, "lr": 2e-4, "batch_size": 32,
        "hidden_layers": ("B4", "B5", "B6"),
        "fid_schedule": "code",      # 'code': λ_fid 0.5 then 1.0 from fid_switch_epoch; 'constant'
        "fid_switch_epoch": 20,
        "attention": "auto",         # 'auto' = per_class for multilabel (paper), 'shared' (code)
        "relevance_norm": "paper",   # 'paper' max|v| or 'code' signed max
        "dropout": 0.0,              # Θ's dropout; ESC-50 sets the authors' 0.4 / 0.3
        "psi_width": None,           # Ψ channels × this; None / 'auto' follows f's width
        "psi_plan": "reference",     # 'reference' (authors' layer plan) or 'resample'
        "f_cache_bytes": 1e9,        # f's outputs on the training split kept in memory up to
                                     # this size, else in a memory-mapped file (cache dir)
        "early_stop": 0,             # patience in epochs (0 = off: the paper's fixed epochs)
        "nmf_mu": 0.8, "nmf_iter": 100,
        "select": "valid",
    }
    small_profile: ClassVar[dict[str, Any]] = {"K": 16, "epochs": 4, "psi_width": 0.125,
                                               "nmf_iter": 30, "lr": 2e-3}
    setting_rules: ClassVar[dict[str, Any]] = {
        "psi_width": Rule(gt=0, choices=("auto",),
                          doc="Ψ channel multiplier; auto (unset) = f's width, at most 1"),
        "psi_plan": Rule(choices=PSI_PLANS, doc="Ψ layer plan: the authors' or resampled"),
        "early_stop": Rule(ge=0, doc="patience in epochs; 0 = the paper's fixed epochs"),
        "f_cache_bytes": Rule(ge=0, doc="f's outputs kept in memory up to this, else mmap"),
    }

    def loss_weights(self, epoch: int) -> tuple[float, float, float]:
        """(λ_fid, λ_rec, λ_spa) at 0-based ``epoch``: the code's schedule (λ_fid 0.5 before
        epoch ``fid_switch_epoch`` counted from 1, 1.0 from it; λ_rec = α/2, λ_spa = β/2) or
        the paper's constant (1, α, β)."""
        cfg = self.config
        alpha, beta = float(cfg["alpha"]), float(cfg["beta"])
        if cfg["fid_schedule"] == "code":
            w_fid = 0.5 if epoch + 1 < int(cfg["fid_switch_epoch"]) else 1.0
            return w_fid, 0.5 * alpha, 0.5 * beta
        if cfg["fid_schedule"] != "constant":
            raise ValueError(f"fid_schedule must be 'code' or 'constant', not {cfg['fid_schedule']!r}")
        return 1.0, alpha, beta

    def losses(self, X: Tensor, f_logits: Tensor, hidden: dict[str, Tensor]
               ) -> tuple[Tensor, Tensor, Tensor]:
        """(L_FID, L_NMF, L1) of eq. (1)-(4) for one batch (means, as the authors' code)."""
        H, logits = self.net({n: hidden[n] for n in self.layers}, X.shape[-1])
        return fidelity_loss(logits, f_logits, self.kind), nmf_loss(X, self.net.W, H), \
            H.abs().mean()

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        cfg, task = self.config, data.task
        if classifier is None or data.dictionary is None:
            raise ValueError("L2I post-hoc needs the classifier f and the task's dictionary")
        self.f, self.kind = classifier.eval(), task.kind
        for p in self.f.parameters():
            p.requires_grad_(False)
        self.layers = tuple(cfg["hidden_layers"])
        W = data.dictionary.to(self.device)
        shapes = hidden_shapes(self.f, probe_input(self.f, data, self.device),
                               self.layers)
        att = cfg["attention"]
        per_class = (task.kind == "multilabel") if att == "auto" else att == "per_class"
        torch.manual_seed(self.seed)
        self.net = Interpreter(shapes, W, task.num_classes, self.theta, per_class,
                               psi_width(cfg["psi_width"], shapes), float(cfg["dropout"]),
                               cfg["psi_plan"]).to(self.device)
        self.per_class = per_class
        self.loss_weights(0)  # validates fid_schedule before any work

        loader = BatchLoader(data.train, data.frontend, int(cfg["batch_size"]), shuffle=True,
                             seed=self.seed, device=self.device)
        valid = BatchLoader(data.valid, data.frontend, 64, device=self.device)
        # f is frozen and the features are deterministic: its outputs are computed once
        budget = float(cfg["f_cache_bytes"])
        cached = {name: FrozenOutputs(self.f, BatchLoader(split, data.frontend, 64,
                                                          device=self.device),
                                      self.layers, budget, data.cache_dir)
                  for name, split in (("train", data.train), ("valid", data.valid))}

        def loss_fn(batch: Batch, epoch: int) -> dict[str, Tensor]:
            f_logits, hidden = cached["train"](batch.index)
            l_fid, l_nmf, l_sp = self.losses(batch.X, f_logits, hidden)
            w_fid, w_rec, w_spa = self.loss_weights(epoch)
            loss = w_fid * l_fid + w_rec * l_nmf + w_spa * l_sp
            return {"loss": loss, "fid": l_fid, "nmf": l_nmf, "l1": l_sp}

        patience = int(cfg["early_stop"])
        try:
            self.history = fit(self.net, self.net.parameters(), loss_fn, loader,
                               epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                               validate=lambda: self._validate(valid, cached["valid"]),
                               select=cfg["select"],
                               stop=(lambda h: plateaued(h, patience)) if patience > 0 else None,
                               desc=f"{self.registry_name or 'l2i'} interpreter")
        finally:
            for c in cached.values():
                c.close()

    # -- internals -------------------------------------------------------------------------
    def _hidden(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            return self.f.forward_hidden(classifier_input(self.f, batch))

    @torch.inference_mode()
    def _validate(self, loader: BatchLoader, cached: FrozenOutputs) -> tuple[float, float]:
        """(validation fidelity, validation loss): top-1 agreement (multiclass) or −L_FID
        (multilabel), and L_FID + α L_NMF + β L1 with the constant weights of eq. (4) (so
        losses of epochs before and after the λ_fid switch compare; it breaks ties)."""
        hits, loss, total = 0.0, 0.0, 0
        alpha, beta = float(self.config["alpha"]), float(self.config["beta"])
        for batch in loader:
            f_logits, hidden = cached(batch.index)
            H = self.net.psi({n: hidden[n] for n in self.layers}, batch.X.shape[-1])
            logits = self.net.theta(H)
            l_fid = fidelity_loss(logits, f_logits, self.kind)
            if self.kind == "multiclass":
                hits += float((logits.argmax(-1) == f_logits.argmax(-1)).sum())
            else:
                hits -= float(l_fid) * len(batch)
            loss += float(l_fid + alpha * nmf_loss(batch.X, self.net.W, H)
                          + beta * H.abs().mean()) * len(batch)
            total += len(batch)
        return hits / max(total, 1), loss / max(total, 1)

    def _activations(self, batch: Batch) -> Tensor:
        _, hidden = self._hidden(batch)
        return self.net.psi({n: hidden[n] for n in self.layers}, batch.X.shape[-1])

    def _logits(self, batch: Batch) -> Tensor:
        return self.net.theta(self._activations(batch))

    # -- capabilities ----------------------------------------------------------------------
    @torch.inference_mode()
    def surrogate_predict(self, batch: Batch) -> Tensor:
        logits = self._logits(batch)
        return torch.softmax(logits, -1) if self.kind == "multiclass" else torch.sigmoid(logits)

    @torch.inference_mode()
    def explain(self, batch: Batch, classes: Tensor) -> FactorExplanation:
        """Relevance r_{k,c,x} = z_k θ_{c,k} / max_l |z_l θ_{c,l}| (paper III-E) and the NMF
        soft-mask components of Algorithm 1."""
        H = self._activations(batch)
        z = self.net.theta.pooled(H)  # (B, n_att, K)
        rows = torch.arange(len(batch), device=H.device)
        zc = z[rows, classes] if z.shape[1] > 1 else z[:, 0]
        v = zc * self.net.theta.fc.weight[classes]
        r = normalise_relevance(v, self.config["relevance_norm"])
        return FactorExplanation(batch.X, self.net.W, H, r)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])


class L2IMax(L2I):
    """L2I post-hoc with Θ_MAX (paper Table IV row 'L2I w/ Θ_MAX')."""

    theta: ClassVar[str] = "max"
    task_defaults_key: ClassVar[str] = "l2i"
