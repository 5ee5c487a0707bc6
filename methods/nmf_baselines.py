"""NMF classification baselines of Parekh et al., TASLP 2024 (sec. IV-C, Table VIII), after
Bisot, Serizel, Essid & Richard, "Feature learning with matrix factorization applied to acoustic
scene classification", IEEE/ACM TASLP 25(6), 2017 (unsupervised NMF features and task-driven
dictionary learning, TDL, itself after Mairal, Bach & Ponce, "Task-driven dictionary learning",
IEEE TPAMI 34(4), 2012).

Both models are interpretable by design: a clip's representation V (R x T, non-negative) is
decomposed on a dictionary W (R x K, unit-norm non-negative columns) by sparse NMF projection,
``H = argmin_{H>=0} 0.5 ||V - W H||^2 + mu ||H||_1`` (``audio_xai_bench.nmf``), the feature is
the mean activation over time ``z = mean_t H`` (K,), and a linear model maps z to the classes
(multinomial logistic regression, or independent logistic outputs for multilabel tasks), trained
with the suite's one training loop ``train.fit`` on standardised features (the standardisation
is fixed after initialisation, so the model stays linear in z: the effective weight of
component k for class c is ``theta[c, k] / std_k``).

* ``nmf-unsup`` (:class:`UnsupervisedNMF`): W = sparse NMF on (a random subset of) the training
  frames (``nmf.sparse_nmf``), H = ``nmf.project`` per clip, then the linear model.
* ``tdl-nmf`` (:class:`TDLNMF`): initialised from the unsupervised W and classifier, then W and
  the classifier are updated jointly through the classification loss. **Approximation of
  Bisot et al. / Mairal et al.:** they differentiate the sparse code through its optimality
  conditions (elastic-net, active set, stochastic projected gradient); here H is obtained by a
  fixed number ``tdl_steps`` of multiplicative sparse-NMF projection updates from a
  deterministic positive initialisation, unrolled and differentiated by autograd (the same
  unrolled projection is used for prediction, so the trained model is exactly the one
  evaluated). After each Adam step W is projected back onto the feasible set (non-negative,
  unit-norm columns); as ``train.fit`` has no post-step hook, the projection is applied at the
  start of every loss evaluation (i.e. right after the previous step), before validation, and
  once after training — the same iterates as projecting after each step.

Representation (``representation``, paper IV-C tries both): ``'log1p'`` is the suite's
log-magnitude STFT X = ln(1 + |S|) (F bins); ``'sqrt_mel'`` is the square root of the power mel
spectrogram ``sqrt(mel @ |S|^2)`` with |S| = expm1(X) and the front-end's mel matrix (M bands).

Explanations (Algorithm 1 of Parekh et al.): components are the NMF soft masks of the input,
``X_k = X * (w_k h_k) / (W H + eps)`` (``api.FactorExplanation``), relevances
``v_k = z_k * theta[c, k] / std_k`` (the contribution of component k to class c's logit, the
constant term aside, as L2I's ``z_k theta_{c,k}``), normalised with ``api.normalise_relevance``.
For ``'sqrt_mel'`` the atoms live in mel space; they are mapped to STFT bins with the
row-normalised transposed mel matrix, ``W_F = A W`` with ``A[f, m] = mel[m, f] / sum_m'
mel[m', f]`` (each bin takes the atoms of the mel bands that cover it, weighted by the filters),
so the masks are ratios of mel-spread atoms: an approximation of the mel-space mask, exact in
the bins covered by a single band; bins that no mel filter covers get a zero mask and are never
removed.

Defaults: K = 128 (Bisot et al.'s reference size, paper IV-C "64 to 512, best reported");
``nmf_mu`` and the classifier schedule are ours (the paper does not give them).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio_xai_bench import nmf
from audio_xai_bench.api import (Batch, Explainer, FactorExplanation, TaskData,
                                 normalise_relevance)
from audio_xai_bench.train import BatchLoader, fit

REPRESENTATIONS = ("log1p", "sqrt_mel")


def representation(X: Tensor, mode: str, mel: Tensor) -> Tensor:
    """(B, F, T) log1p magnitude -> (B, R, T) non-negative representation."""
    if mode == "log1p":
        return X
    if mode == "sqrt_mel":
        S = torch.expm1(X.clamp_min(0.0))
        return torch.sqrt(torch.einsum("mf,bft->bmt", mel, S * S).clamp_min(0.0))
    raise ValueError(f"representation must be one of {REPRESENTATIONS}, not {mode!r}")


def mel_to_stft_atoms(W: Tensor, mel: Tensor) -> Tensor:
    """Mel-space atoms (M, K) -> STFT-bin atoms (F, K) via the row-normalised mel^T."""
    A = mel.T / mel.sum(0).clamp_min(1e-12)[:, None]  # (F, M), rows sum to 1 where covered
    return A @ W


def unrolled_projection(V: Tensor, W: Tensor, mu: float, steps: int, eps: float = 1e-10
                        ) -> Tensor:
    """Differentiable sparse NMF projection: ``steps`` multiplicative updates
    ``H <- H * (W^T V) / (W^T W H + mu + eps)`` from the constant initialisation scaled so that
    ``sum(W h_n) = sum(v_n)`` for each frame. V (B, R, T), W (R, K) -> H (B, K, T)."""
    B, R, T = V.shape
    K = W.shape[1]
    colsum = W.sum(0)                                           # (K,)
    scale = V.sum(1, keepdim=True) / colsum.sum().clamp_min(1e-12)  # (B, 1, T)
    H = scale.expand(B, K, T)
    WtV = torch.einsum("rk,brt->bkt", W, V)
    WtW = W.T @ W
    for _ in range(steps):
        H = H * WtV / (torch.einsum("kl,blt->bkt", WtW, H) + mu + eps)
    return H


class LinearHead(nn.Module):
    """Standardised linear model on the pooled activations z (B, K)."""

    def __init__(self, K: int, C: int) -> None:
        super().__init__()
        self.fc = nn.Linear(K, C)
        self.register_buffer("mean", torch.zeros(K))
        self.register_buffer("std", torch.ones(K))

    def forward(self, z: Tensor) -> Tensor:
        return self.fc((z - self.mean) / self.std)

    def effective_weight(self) -> Tensor:
        """(C, K) weight of z itself: theta / std."""
        return self.fc.weight / self.std[None]


class _NMFModel(nn.Module):
    def __init__(self, W: Tensor, C: int, trainable_W: bool) -> None:
        super().__init__()
        if trainable_W:
            self.W = nn.Parameter(W.clone())
        else:
            self.register_buffer("W", W.clone())
        self.head = LinearHead(W.shape[1], C)


class UnsupervisedNMF(Explainer):
    """Unsupervised NMF features (mean activations) + linear classifier (Bisot et al. 2017)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"predict", "explain"})
    posthoc: ClassVar[bool] = False
    needs_dictionary: ClassVar[bool] = False
    listenable: ClassVar[bool] = True
    defaults: ClassVar[dict[str, Any]] = {
        "representation": "log1p",  # 'log1p' | 'sqrt_mel' (paper IV-C)
        "n_components": 128,        # Bisot et al.'s K = 128; paper: 64..512
        "nmf_mu": 0.1, "nmf_iter": 100, "max_frames": 20000,
        "project_iter": 30,
        "epochs": 30, "lr": 1e-2, "batch_size": 64,
        "select": "valid",
        "relevance_norm": "paper",
    }
    small_profile: ClassVar[dict[str, Any]] = {"n_components": 16, "nmf_iter": 20,
                                               "project_iter": 20, "epochs": 20}
    trainable_W: ClassVar[bool] = False

    # -- representation and activations ---------------------------------------------------------
    def _V(self, X: Tensor) -> Tensor:
        return representation(X, self.config["representation"], self.mel)

    def _activations(self, V: Tensor) -> Tensor:
        """H (B, K, T) of the model (nmf.project for the unsupervised model)."""
        return nmf.project(V.contiguous(), self.model.W.detach(),
                           mu=float(self.config["nmf_mu"]),
                           n_iter=int(self.config["project_iter"]), seed=self.seed)

    def _train_V(self, data: TaskData) -> Tensor:
        out = []
        with torch.no_grad():
            for b in BatchLoader(data.train, data.frontend, 64, device=self.device):
                out.append(self._V(b.X))
        return torch.cat(out)

    def _pooled(self, loader: BatchLoader) -> Tensor:
        zs = []
        with torch.no_grad():
            for b in loader:
                zs.append(self._activations(self._V(b.X)).mean(-1))
        return torch.cat(zs)

    # -- training ---------------------------------------------------------------------------
    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        cfg, task = self.config, data.task
        if cfg["representation"] not in REPRESENTATIONS:
            raise ValueError(f"representation must be one of {REPRESENTATIONS}, "
                             f"not {cfg['representation']!r}")
        self.kind = task.kind
        self.mel = data.frontend.mel.to(self.device)
        V = self._train_V(data)                                     # (N, R, T)
        frames = V.permute(1, 0, 2).reshape(V.shape[1], -1)
        frames, self.frames_info = nmf.subsample_frames(frames, int(cfg["max_frames"]),
                                                        seed=self.seed)
        W, _ = nmf.sparse_nmf(frames, int(cfg["n_components"]), mu=float(cfg["nmf_mu"]),
                              n_iter=int(cfg["nmf_iter"]), seed=self.seed)
        torch.manual_seed(self.seed)
        self.model = _NMFModel(W.to(self.device), task.num_classes, self.trainable_W
                               ).to(self.device)
        self._fit_classifier(data)

    def _fit_classifier(self, data: TaskData) -> None:
        """Linear model on fixed, precomputed pooled activations."""
        cfg = self.config
        train = BatchLoader(data.train, data.frontend, int(cfg["batch_size"]), shuffle=True,
                            seed=self.seed, device=self.device)
        z_train = self._pooled(BatchLoader(data.train, data.frontend, 64, device=self.device))
        z_valid = self._pooled(BatchLoader(data.valid, data.frontend, 64, device=self.device))
        head = self.model.head
        head.mean.copy_(z_train.mean(0))
        head.std.copy_(z_train.std(0).clamp_min(1e-6))
        y_valid = data.valid.target.to(self.device)
        m_valid = data.valid.mask.to(self.device)

        def loss_fn(batch: Batch, epoch: int) -> dict[str, Tensor]:
            logits = head(z_train[batch.index])
            return {"loss": self._loss(logits, batch.target, batch.mask)}

        def validate() -> float:
            with torch.no_grad():
                return self._score(head(z_valid), y_valid, m_valid)

        self.history = fit(head, head.fc.parameters(), loss_fn, train, epochs=int(cfg["epochs"]),
                           lr=float(cfg["lr"]), validate=validate, select=cfg["select"],
                           desc=f"{self.registry_name or 'nmf'} classifier")

    def _loss(self, logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        if self.kind == "multiclass":
            return F.cross_entropy(logits, target.argmax(1))
        m = mask.float()
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (per * m).sum() / m.sum().clamp_min(1.0)

    def _score(self, logits: Tensor, target: Tensor, mask: Tensor) -> float:
        """Validation score: accuracy (multiclass) or minus the masked BCE (multilabel)."""
        if self.kind == "multiclass":
            return float((logits.argmax(1) == target.argmax(1)).float().mean())
        return -float(self._loss(logits, target, mask))

    # -- capabilities -----------------------------------------------------------------------
    def _probs(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits, -1) if self.kind == "multiclass" else torch.sigmoid(logits)

    @torch.inference_mode()
    def predict(self, batch: Batch) -> Tensor:
        H = self._activations(self._V(batch.X))
        return self._probs(self.model.head(H.mean(-1)))

    def _stft_atoms(self) -> Tensor:
        W = self.model.W.detach()
        if self.config["representation"] == "sqrt_mel":
            return mel_to_stft_atoms(W, self.mel)
        return W

    @torch.inference_mode()
    def explain(self, batch: Batch, classes: Tensor) -> FactorExplanation:
        H = self._activations(self._V(batch.X))            # (B, K, T)
        z = H.mean(-1)                                     # (B, K)
        v = z * self.model.head.effective_weight()[classes]
        r = normalise_relevance(v, self.config["relevance_norm"])
        return FactorExplanation(batch.X, self._stft_atoms(), H, r)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])


class TDLNMF(UnsupervisedNMF):
    """Task-driven NMF dictionary learning (Bisot et al. 2017, after Mairal et al. 2012;
    unrolled projection, see the module docstring)."""

    defaults: ClassVar[dict[str, Any]] = {
        **UnsupervisedNMF.defaults,
        "tdl_steps": 20,     # unrolled multiplicative projection updates (train and predict)
        "tdl_epochs": 10, "tdl_lr": 1e-3,
    }
    small_profile: ClassVar[dict[str, Any]] = {**UnsupervisedNMF.small_profile,
                                               "tdl_steps": 10, "tdl_epochs": 3}
    trainable_W: ClassVar[bool] = True

    def _project_W(self) -> None:
        """Back onto the feasible set: W >= 0 with unit-norm columns."""
        with torch.no_grad():
            W = self.model.W
            W.clamp_(min=0.0)
            W /= W.norm(dim=0, keepdim=True).clamp_min(1e-12)

    def _activations(self, V: Tensor) -> Tensor:
        return unrolled_projection(V, self.model.W, float(self.config["nmf_mu"]),
                                   int(self.config["tdl_steps"]))

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        # initialisation: the unsupervised W and a classifier trained on its (unrolled)
        # activations, i.e. the unsupervised model with TDL's projection
        super().fit(data, classifier)
        cfg = self.config
        self.init_history = self.history
        train = BatchLoader(data.train, data.frontend, int(cfg["batch_size"]), shuffle=True,
                            seed=self.seed + 1, device=self.device)
        valid = BatchLoader(data.valid, data.frontend, 64, device=self.device)

        def loss_fn(batch: Batch, epoch: int) -> dict[str, Tensor]:
            self._project_W()
            H = self._activations(self._V(batch.X))
            logits = self.model.head(H.mean(-1))
            return {"loss": self._loss(logits, batch.target, batch.mask)}

        def validate() -> float:
            self._project_W()
            with torch.no_grad():
                logits, ys, ms = [], [], []
                for b in valid:
                    logits.append(self.model.head(self._activations(self._V(b.X)).mean(-1)))
                    ys.append(b.target)
                    ms.append(b.mask)
                return self._score(torch.cat(logits), torch.cat(ys), torch.cat(ms))

        params = [self.model.W, *self.model.head.fc.parameters()]
        tdl_hist = fit(self.model, params, loss_fn, train, epochs=int(cfg["tdl_epochs"]),
                       lr=float(cfg["tdl_lr"]), validate=validate, select=cfg["select"],
                       desc=f"{self.registry_name or 'tdl-nmf'} joint")
        self._project_W()
        self.history = ([{**h, "stage": 0.0} for h in self.init_history]
                        + [{**h, "stage": 1.0} for h in tdl_hist])
