"""APNet, audio prototype network (by design): Zinemanas, Rocamora, Miron, Font & Serra,
"An interpretable deep learning model for automatic sound classification", Electronics 10(7),
850, 2021 (official code: github.com/pzinemanas/APNet, ``apnet/model.py``, ``layers.py``,
``losses.py``). Used by Parekh et al., TASLP 2024, as the by-design baseline of Table VIII.

Architecture (as in the paper and its code):

* input: the log-mel (B, T, M), min-max scaled to [-1, 1] with the training split's extremes
  (the code's ``normalizer: minmax``); T and M are padded at the end to multiples of 4;
* encoder: three 5x5 convolutions of ``n_filters`` channels with LeakyReLU (slope 0.3, Keras'
  default), a 2x2 max-pool after the first two; each pool also yields the binary "unpooling"
  mask ``y >= upsample(pool(y))`` the decoder uses (SegNet-style);
* decoder: transposed 5x5 convolution, nearest 2x upsampling times the mask, LeakyReLU (twice),
  a last transposed convolution to one channel and ``tanh``;
* prototype layer: P prototypes of the latent's shape (T', M', C); the **frequency-dependent
  distance** ``d_j[f] = sum_{t,c} (Z[t,f,c] - P_j[t,f,c])^2`` is turned into a similarity per
  latent frequency band, ``exp(-d_j[f])``, and the bands are combined with learned per-prototype
  frequency weights ``s_j = sum_f H[j,f] exp(-d_j[f])`` (the code's ``WeightedSum`` layer; its
  ``UnitNorm(axis=0)`` constraint — unit norm over the prototypes for each band — is applied
  as a reparametrisation ``H = H_raw / ||H_raw||_axis0`` because the suite's one training loop
  has no post-step constraint hook);
* a bias-free linear layer similarity -> classes, initialised as the code's
  ``init_last_layer`` (+1/ppc for the class's own block of prototypes, -1/ppc elsewhere, plus
  U(-0.05, 0.05) noise); softmax (multiclass) or sigmoid (multilabel).

Losses (code ``loss_weights=[10, 5, 5]``): 10 x cross-entropy + 5 x MSE reconstruction of the
scaled input + 5 x prototype loss, where the prototype loss on the per-band distances averaged
over bands, D (B, P), is ``mean_j min_b D[b, j] + mean_b min_j D[b, j]`` (each prototype close to
some encoded input; each input close to some prototype; R1/R2 of Li et al. 2018).

Number of prototypes: Parekh et al. (IV-C) use as many prototypes as L2I has components, so
``n_prototypes`` defaults (``None``) to ``task.method_defaults['l2i']['K']`` when the task sets
it, else 100 (paper Table II's ESC-50 K).

Capabilities, honestly: APNet explains by **prototypes** (decoded, listenable mel-spectrograms
of training-like sounds), not by a decomposition of the input into non-negative parts, so it
declares only ``predict`` (scored for classification, Table VIII) and has no faithfulness row;
``listenable = False`` because the engine has no input components to play. Its prototypes are
made audible with :meth:`APNet.prototype_audio`: each prototype is decoded with the unpooling
masks of the training clip most similar to it (as the authors' ``Prototypes`` class does), the
decoded scaled log-mel is mapped back to dB and to the suite's mel magnitude (the front-end's
log-mel is ``power_to_db(mel @ |S|)``), the STFT magnitude is approximated by the pseudo-inverse
of the mel matrix clipped at 0 (the authors use NNLS), and the phase by Griffin-Lim with
``torch.stft``/``torch.istft``. These waveforms are approximations: the mel projection loses
the fine frequency structure and Griffin-Lim's phase is not the original one.

Deviations: the training loop is the suite's (Adam, best validation epoch instead of the code's
early stopping with patience 100); the defaults are shortened so that ``--profile default`` on
synth runs in a couple of minutes on two CPU cores: 16 filters instead of 32, Adam lr 3e-3
instead of 1e-3, 15 epochs of batch 32 instead of 200 epochs of batch 256 (the code's
settings: ``--set n_filters=32 --set lr=0.001 --set epochs=200 --set batch_size=256``);
the code's optional prototype/channel refinement steps are not run.
"""
from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio_xai_bench.api import Batch, Explainer, TaskData
from audio_xai_bench.train import BatchLoader, fit

LEAKY = 0.3  # Keras LeakyReLU default slope used by the APNet code


def prototype_distances(z: Tensor, prototypes: Tensor) -> Tensor:
    """Frequency-dependent squared distances ``d[b, j, f] = sum_{t,c} (z[b,c,t,f] -
    p[j,c,t,f])^2``. ``z`` (B, C, T', M'), ``prototypes`` (P, C, T', M') -> (B, P, M')."""
    zz = (z * z).sum(dim=(1, 2))                              # (B, M')
    pp = (prototypes * prototypes).sum(dim=(1, 2))            # (P, M')
    zp = torch.einsum("bctf,pctf->bpf", z, prototypes)        # (B, P, M')
    return (zz[:, None, :] - 2.0 * zp + pp[None, :, :]).clamp_min(0.0)


def weighted_similarity(distances: Tensor, weights: Tensor) -> Tensor:
    """APNet's similarity ``s[b, j] = sum_f weights[j, f] * exp(-d[b, j, f])``:
    ``distances`` (B, P, M') and ``weights`` (P, M') -> (B, P)."""
    return (torch.exp(-distances) * weights[None]).sum(-1)


def prototype_loss(distances: Tensor) -> Tensor:
    """APNet code ``losses.prototype_loss``: D = distances averaged over bands (B, P);
    ``mean_j min_b D + mean_b min_j D``."""
    D = distances.mean(-1)
    return D.min(dim=0).values.mean() + D.min(dim=1).values.mean()


def _unpool_mask(y: Tensor) -> tuple[Tensor, Tensor]:
    pooled = F.max_pool2d(y, 2)
    up = F.interpolate(pooled, scale_factor=2, mode="nearest")
    return pooled, (y >= up).to(y.dtype)


class APNetModel(nn.Module):
    """Autoencoder + prototype layer + weighted sum + linear classifier."""

    def __init__(self, n_classes: int, n_prototypes: int, latent_tf: tuple[int, int],
                 n_filters: int = 32, kernel: int = 5) -> None:
        super().__init__()
        p = kernel // 2
        c = n_filters
        self.conv1, self.conv2, self.conv3 = (nn.Conv2d(1, c, kernel, padding=p),
                                              nn.Conv2d(c, c, kernel, padding=p),
                                              nn.Conv2d(c, c, kernel, padding=p))
        self.deconv1, self.deconv2 = (nn.ConvTranspose2d(c, c, kernel, padding=p),
                                      nn.ConvTranspose2d(c, c, kernel, padding=p))
        self.deconv3 = nn.ConvTranspose2d(c, 1, kernel, padding=p)
        Tl, Ml = latent_tf
        # Keras 'uniform' initialiser: U(-0.05, 0.05)
        self.prototypes = nn.Parameter(torch.empty(n_prototypes, c, Tl, Ml).uniform_(-0.05, 0.05))
        self.freq_weights_raw = nn.Parameter(torch.full((n_prototypes, Ml), 1.0 / Ml))
        self.logits = nn.Linear(n_prototypes, n_classes, bias=False)
        self.n_classes, self.n_prototypes = n_classes, n_prototypes

    def init_last_layer(self, generator: torch.Generator) -> None:
        """The code's ``init_last_layer``: +1/ppc on the class's prototypes, -1/ppc elsewhere."""
        P, C = self.n_prototypes, self.n_classes
        ppc = max(1, P // C)
        W = torch.full((P, C), -1.0 / ppc)
        for j in range(C):
            W[j * ppc:(j + 1) * ppc, j] = 1.0 / ppc
        W += 0.1 * (torch.rand(P, C, generator=generator) - 0.5)
        with torch.no_grad():
            self.logits.weight.copy_(W.T)

    @property
    def freq_weights(self) -> Tensor:
        """H (P, M') with unit norm over the prototypes for each band (Keras UnitNorm(axis=0))."""
        w = self.freq_weights_raw
        return w / w.norm(dim=0, keepdim=True).clamp_min(1e-7)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (B, 1, T, M) scaled log-mel -> latent (B, C, T/4, M/4) and the two unpool masks."""
        y = F.leaky_relu(self.conv1(x), LEAKY)
        y, mask1 = _unpool_mask(y)
        y = F.leaky_relu(self.conv2(y), LEAKY)
        y, mask2 = _unpool_mask(y)
        return F.leaky_relu(self.conv3(y), LEAKY), mask1, mask2

    def decode(self, z: Tensor, mask1: Tensor, mask2: Tensor) -> Tensor:
        y = F.interpolate(self.deconv1(z), scale_factor=2, mode="nearest") * mask2
        y = F.leaky_relu(y, LEAKY)
        y = F.interpolate(self.deconv2(y), scale_factor=2, mode="nearest") * mask1
        y = F.leaky_relu(y, LEAKY)
        return torch.tanh(self.deconv3(y))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> logits (B, C), reconstruction (B, 1, T, M), distances (B, P, M'), latent."""
        z, m1, m2 = self.encode(x)
        rec = self.decode(z, m1, m2)
        d = prototype_distances(z, self.prototypes)
        s = weighted_similarity(d, self.freq_weights)
        return self.logits(s), rec, d, z


class APNet(Explainer):
    """APNet (Zinemanas et al. 2021): prototype network by design; predict only."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"predict"})
    posthoc: ClassVar[bool] = False
    needs_dictionary: ClassVar[bool] = False
    listenable: ClassVar[bool] = False  # no input components; prototypes via prototype_audio
    defaults: ClassVar[dict[str, Any]] = {
        # None: K of L2I on the task (Parekh et al. IV-C), else 100
        "n_prototypes": None,
        # APNet code (experiments/*/APNet/config.json, model.py defaults)
        "n_filters": 16, "kernel": 5, "lr": 3e-3,  # code: 32 filters, lr 1e-3 (see docstring)
        "w_class": 10.0, "w_rec": 5.0, "w_proto": 5.0,  # loss_weights [10, 5, 5]
        "init_last_layer": True,
        # shortened schedule (code: 200 epochs, batch 256, early stopping 100)
        "epochs": 15, "batch_size": 32,
        "select": "valid",
    }
    small_profile: ClassVar[dict[str, Any]] = {"n_prototypes": 16, "n_filters": 8, "epochs": 3}

    # -- helpers ------------------------------------------------------------------------------
    def _scale(self, logmel: Tensor) -> Tensor:
        """(B, 1, T, M) dB log-mel -> [-1, 1] scaled, padded to multiples of 4."""
        x = 2.0 * (logmel - self.lo) / max(self.hi - self.lo, 1e-6) - 1.0
        x = x.clamp(-1.0, 1.0)
        T, M = x.shape[-2:]
        pt, pm = (-T) % 4, (-M) % 4
        if pt or pm:
            x = F.pad(x, (0, pm, 0, pt), value=-1.0)
        return x

    def _probs(self, logits: Tensor) -> Tensor:
        return torch.softmax(logits, -1) if self.kind == "multiclass" else torch.sigmoid(logits)

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        cfg, task = self.config, data.task
        self.kind = task.kind
        P = cfg["n_prototypes"]
        if P is None:
            P = int(task.method_defaults.get("l2i", {}).get("K", 100))
        P = int(P)
        self.n_prototypes = P
        train = BatchLoader(data.train, data.frontend, int(cfg["batch_size"]), shuffle=True,
                            seed=self.seed, device=self.device)
        valid = BatchLoader(data.valid, data.frontend, 64, device=self.device)
        # min-max scaler over the training split (the code's 'minmax' normaliser)
        lo, hi = float("inf"), -float("inf")
        with torch.no_grad():
            for b in BatchLoader(data.train, data.frontend, 64, device=self.device):
                lo, hi = min(lo, float(b.logmel.min())), max(hi, float(b.logmel.max()))
        self.lo, self.hi = lo, hi
        cfgf = data.frontend.config
        self.n_frames, self.n_mels = cfgf.n_frames, cfgf.n_mels
        latent = ((self.n_frames + 3) // 4, (self.n_mels + 3) // 4)
        torch.manual_seed(self.seed)
        self.net = APNetModel(task.num_classes, P, latent, int(cfg["n_filters"]),
                              int(cfg["kernel"])).to(self.device)
        if cfg["init_last_layer"]:
            self.net.init_last_layer(torch.Generator().manual_seed(self.seed))
            self.net.to(self.device)
        wc, wr, wp = float(cfg["w_class"]), float(cfg["w_rec"]), float(cfg["w_proto"])

        def loss_fn(batch: Batch, epoch: int) -> dict[str, Tensor]:
            x = self._scale(batch.logmel)
            logits, rec, d, _ = self.net(x)
            l_cls = self.classification_loss(logits, batch.target, batch.mask)
            l_rec = F.mse_loss(rec, x)
            l_pro = prototype_loss(d)
            return {"loss": wc * l_cls + wr * l_rec + wp * l_pro, "cls": l_cls, "rec": l_rec,
                    "proto": l_pro}

        self.history = fit(self.net, self.net.parameters(), loss_fn, train,
                           epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                           validate=lambda: self._valid_score(valid), select=cfg["select"],
                           desc=f"{self.registry_name or 'apnet'}")
        self._store_prototype_masks(data)

    def classification_loss(self, logits: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        if self.kind == "multiclass":
            return F.cross_entropy(logits, target.argmax(1))
        m = mask.float()
        per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (per * m).sum() / m.sum().clamp_min(1.0)

    @torch.inference_mode()
    def _valid_score(self, loader: BatchLoader) -> float:
        probs, targets, masks = [], [], []
        for b in loader:
            probs.append(self.predict(b).cpu())
            targets.append(b.target.cpu())
            masks.append(b.mask.cpu())
        p, t, m = torch.cat(probs), torch.cat(targets), torch.cat(masks)
        if self.kind == "multiclass":
            return float((p.argmax(1) == t.argmax(1)).float().mean())
        from audio_xai_bench.metrics import fidelity as fid
        return float(fid.average_precision_macro_micro(t.numpy() > 0.5, p.numpy(),
                                                       m.numpy())["macro"])

    @torch.inference_mode()
    def _store_prototype_masks(self, data: TaskData) -> None:
        """Unpooling masks of the training clip most similar to each prototype (as the
        authors' ``Prototypes`` class), kept for :meth:`prototype_audio`."""
        best = torch.full((self.n_prototypes,), -float("inf"), device=self.device)
        m1s: Tensor | None = None
        m2s: Tensor | None = None
        for b in BatchLoader(data.train, data.frontend, 64, device=self.device):
            z, m1, m2 = self.net.encode(self._scale(b.logmel))
            s = weighted_similarity(prototype_distances(z, self.net.prototypes),
                                    self.net.freq_weights)  # (B, P)
            val, arg = s.max(0)
            if m1s is None:
                m1s = m1[arg].bool()
                m2s = m2[arg].bool()
            upd = val > best
            m1s[upd], m2s[upd] = m1[arg][upd].bool(), m2[arg][upd].bool()
            best = torch.where(upd, val, best)
        self.proto_masks = (m1s, m2s)

    # -- capabilities -------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, batch: Batch) -> Tensor:
        logits, _, _, _ = self.net(self._scale(batch.logmel))
        return self._probs(logits)

    @torch.inference_mode()
    def prototype_classes(self) -> Tensor:
        """Class each prototype votes for (argmax of its row of the linear layer), (P,)."""
        return self.net.logits.weight.argmax(0)

    @torch.inference_mode()
    def prototype_logmel(self) -> Tensor:
        """Decoded prototypes as dB log-mel (P, T, M), cropped to the clip's frames."""
        m1, m2 = self.proto_masks
        x = self.net.decode(self.net.prototypes, m1.float(), m2.float())[:, 0]
        x = x[:, :self.n_frames, :self.n_mels]
        return (x + 1.0) / 2.0 * (self.hi - self.lo) + self.lo

    @torch.inference_mode()
    def prototype_audio(self, frontend, n_iter: int = 32) -> list[np.ndarray]:
        """Listenable prototypes: decoded log-mel -> mel magnitude -> STFT magnitude by the
        mel matrix's pseudo-inverse (clipped at 0) -> Griffin-Lim (``n_iter`` iterations,
        torch.stft / torch.istft, phase initialised to zero: deterministic). Approximate (see
        the module docstring). Returns one float32 waveform per prototype."""
        db = self.prototype_logmel().to(frontend.device)          # (P, T, M)
        mel_mag = torch.pow(10.0, db / 10.0)                      # mel @ |S| (suite's log-mel)
        pinv = torch.linalg.pinv(frontend.mel)                    # (F, M)
        mag = torch.einsum("fm,ptm->pft", pinv, mel_mag).clamp_min(0.0)
        c = frontend.config
        n = (mag.shape[-1] - 1) * c.hop_length
        stft = lambda w: torch.stft(w, c.n_fft, c.hop_length, c.n_fft, frontend.window,  # noqa
                                    center=True, return_complex=True)
        istft = lambda S: torch.istft(S, c.n_fft, c.hop_length, c.n_fft, frontend.window,  # noqa
                                      center=True, length=n)
        S = mag.to(torch.complex64)
        for _ in range(n_iter):
            est = stft(istft(S))
            S = mag * est / est.abs().clamp_min(1e-8)
        wave = istft(S)
        return [w.float().cpu().numpy() for w in wave]

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "lo": self.lo, "hi": self.hi}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["net"])
        self.lo, self.hi = float(state["lo"]), float(state["hi"])
