"""Listen to Interpret (L2I), post-hoc: Parekh et al., TASLP 2024, sec. III-B, III-D, III-E.

An interpreter Ψ maps hidden maps of the frozen classifier f (blocks B4+B5+B6) to
non-negative time activations H ∈ R+^{K×T} of a fixed, pre-learned NMF dictionary W; Θ pools
H over time (gated attention, Θ_ATT, or max, Θ_MAX) and mimics f with a linear layer.
Losses eq. (1)-(4): fidelity to f, reconstruction ||X - W H||² and ℓ1 sparsity of H.

Where the paper is silent this follows the authors' code (``reference/l2i_protocol_facts.md``
§3-§7): Ψ's layer plan (each hidden map brought to one (time, 4-band) grid, merged, upsampled
in time, frequency collapsed, resized to the T STFT frames, two Conv1d + ReLU); Θ_ATT is Ilse
gated attention with a ReLU gate and a bias-free linear layer; the losses are means; the
fidelity weight is 0.5 until epoch 20 and 1.0 after while the reconstruction and sparsity
weights stay α/2 and β/2 (so the paper's α, β are the ratios of the first phase); the soft
masks of Algorithm 1 are applied in the log1p domain.
Where they disagree the paper is the default and the code an option: relevance normalised by
max |v| (``relevance_norm='paper'``) or by the signed max (``'code'``); class-specific
attention for multi-label (``attention='per_class'``) or one shared attention (``'shared'``).
Our Ψ adapts its resampling to any clip length instead of the code's fixed crops, and the
epoch kept is the one with the best fidelity on the validation split (never the test split).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio_xai_bench.api import (Batch, Explainer, FactorExplanation, TaskData,
                                 normalise_relevance)
from audio_xai_bench.train import BatchLoader, fit


class Psi(nn.Module):
    """Ψ: hidden maps {name: (B, C, T', M')} -> H (B, K, T) >= 0 (paper III-D)."""

    def __init__(self, in_channels: dict[str, int], K: int, width: float = 1.0,
                 bands: int = 4) -> None:
        super().__init__()
        c = lambda n: max(4, int(round(n * width)))  # noqa: E731
        self.names = list(in_channels)
        self.bands = bands
        self.inputs = nn.ModuleDict({
            n: nn.Sequential(nn.Conv2d(ch, c(256 if i == 0 else 128), 3, padding=1),
                             nn.ReLU(inplace=True))
            for i, (n, ch) in enumerate(in_channels.items())})
        merged = sum(c(256 if i == 0 else 128) for i in range(len(self.names)))
        self.merge = nn.Sequential(nn.Conv2d(merged, c(256), 3, padding=1), nn.ReLU(inplace=True))
        self.collapse = nn.Sequential(nn.Conv2d(c(256), c(256), (1, bands)), nn.ReLU(inplace=True))
        self.out = nn.Sequential(nn.Conv1d(c(256), K, 5, padding=2), nn.ReLU(inplace=True),
                                 nn.Conv1d(K, K, 5, padding=2), nn.ReLU())

    def forward(self, hidden: dict[str, Tensor], T: int) -> Tensor:
        # the grid: the time resolution of the deepest map x4, `bands` frequency bands
        deepest = hidden[self.names[-1]]
        grid = (max(4, deepest.shape[2] * 4), self.bands)
        maps = []
        for n in self.names:
            h = self.inputs[n](hidden[n])
            maps.append(F.interpolate(h, size=grid, mode="bilinear", align_corners=True))
        x = self.merge(F.interpolate(torch.cat(maps, 1), size=(grid[0] * 2, self.bands),
                                     mode="bilinear", align_corners=True))
        x = F.interpolate(x, size=(grid[0] * 4, self.bands), mode="bilinear", align_corners=True)
        x = self.collapse(x).squeeze(-1)  # (B, C, 16 T6)
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
    """Ψ followed by Θ, with the fixed dictionary W as a buffer."""

    def __init__(self, in_channels: dict[str, int], W: Tensor, C: int, theta: str,
                 per_class: bool, width: float, dropout: float) -> None:
        super().__init__()
        K = W.shape[1]
        self.psi = Psi(in_channels, K, width)
        if theta == "att":
            self.theta: nn.Module = ThetaAtt(K, C, per_class, dropout=dropout)
        else:
            self.theta = ThetaMax(K, C, dropout=dropout)
        self.register_buffer("W", W.clone())

    def forward(self, hidden: dict[str, Tensor], T: int) -> tuple[Tensor, Tensor]:
        H = self.psi(hidden, T)
        return H, self.theta(H)


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


class L2I(Explainer):
    """L2I post-hoc with Θ_ATT (paper Table IV row 'L2I w/ Θ_ATT')."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"surrogate", "explain"})
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
        "dropout": 0.0, "psi_width": 1.0,
        "nmf_mu": 0.8, "nmf_iter": 100,
        "select": "valid",
    }
    small_profile: ClassVar[dict[str, Any]] = {"K": 16, "epochs": 4, "psi_width": 0.125,
                                               "nmf_iter": 30, "lr": 2e-3}

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        cfg, task = self.config, data.task
        if classifier is None or data.dictionary is None:
            raise ValueError("L2I post-hoc needs the classifier f and the task's dictionary")
        self.f, self.kind = classifier.eval(), task.kind
        for p in self.f.parameters():
            p.requires_grad_(False)
        self.layers = tuple(cfg["hidden_layers"])
        W = data.dictionary.to(self.device)
        with torch.inference_mode():
            _, hid = self.f.forward_hidden(data.frontend.logmel(data.train.wave[:1].to(self.device)))
        chans = {n: hid[n].shape[1] for n in self.layers}
        att = cfg["attention"]
        per_class = (task.kind == "multilabel") if att == "auto" else att == "per_class"
        torch.manual_seed(self.seed)
        self.net = Interpreter(chans, W, task.num_classes, self.theta, per_class,
                               float(cfg["psi_width"]), float(cfg["dropout"])).to(self.device)
        self.per_class = per_class
        alpha, beta = float(cfg["alpha"]), float(cfg["beta"])
        coded = cfg["fid_schedule"] == "code"

        def loss_fn(batch: Batch, epoch: int) -> dict[str, Tensor]:
            f_logits, hidden = self._hidden(batch)
            H, logits = self.net({n: hidden[n] for n in self.layers}, batch.X.shape[-1])
            l_fid = fidelity_loss(logits, f_logits, self.kind)
            l_nmf = nmf_loss(batch.X, self.net.W, H)
            l_sp = H.abs().mean()
            if coded:
                w_fid = 0.5 if epoch + 1 < int(cfg["fid_switch_epoch"]) else 1.0
                loss = w_fid * l_fid + 0.5 * alpha * l_nmf + 0.5 * beta * l_sp
            else:
                loss = l_fid + alpha * l_nmf + beta * l_sp
            return {"loss": loss, "fid": l_fid, "nmf": l_nmf, "l1": l_sp}

        loader = BatchLoader(data.train, data.frontend, int(cfg["batch_size"]), shuffle=True,
                             seed=self.seed, device=self.device)
        valid = BatchLoader(data.valid, data.frontend, 64, device=self.device)
        self.history = fit(self.net, self.net.parameters(), loss_fn, loader,
                           epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                           validate=lambda: self._agreement(valid), select=cfg["select"],
                           desc=f"{self.registry_name or 'l2i'} interpreter")

    # -- internals -------------------------------------------------------------------------
    def _hidden(self, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.no_grad():
            return self.f.forward_hidden(batch.logmel)

    @torch.inference_mode()
    def _agreement(self, loader: BatchLoader) -> float:
        """Validation fidelity: top-1 agreement (multiclass) or −L_FID (multilabel)."""
        hits, total = 0.0, 0
        for batch in loader:
            f_logits, _ = self._hidden(batch)
            logits = self._logits(batch)
            if self.kind == "multiclass":
                hits += float((logits.argmax(-1) == f_logits.argmax(-1)).sum())
            else:
                hits -= float(fidelity_loss(logits, f_logits, self.kind)) * len(batch)
            total += len(batch)
        return hits / max(total, 1)

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
