"""Typed interfaces shared by the engine, the tasks and the methods.

Shapes use B = batch, C = classes, N = samples of a waveform, F = STFT bins, T = STFT frames,
M = mel bands, K = components of an explanation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch import Tensor

TaskKind = Literal["multiclass", "multilabel"]


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
@dataclass
class Example:
    """One clip: either ``audio`` (mono float32 at the task's rate) or a ``path`` to load."""

    id: str
    target: np.ndarray  # (C,) float32, one-hot (multiclass) or binary (multilabel)
    mask: np.ndarray | None = None  # (C,) bool, True where the label is annotated (OpenMIC)
    audio: np.ndarray | None = None
    path: str | None = None
    # ground truth of synthetic tasks: clean source of each event and its class
    sources: np.ndarray | None = None  # (E, N) float32
    source_classes: np.ndarray | None = None  # (E,) int64


@dataclass
class Fold:
    """One train / valid / test split of a task."""

    name: str
    train: list[Example]
    valid: list[Example]
    test: list[Example]


@dataclass(frozen=True)
class FrontendConfig:
    """Front-end settings (paper IV-B2: 44.1 kHz, 1024-pt FFT, hop 512, 128 mel bands)."""

    sample_rate: int = 44100
    n_fft: int = 1024
    hop_length: int = 512
    n_mels: int = 128
    clip_seconds: float = 5.0
    top_db: float = 80.0  # power_to_db clipping relative to each clip's max (authors' code)

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def n_freq(self) -> int:
        return self.n_fft // 2 + 1

    @property
    def n_frames(self) -> int:
        return 1 + self.clip_samples // self.hop_length


@dataclass
class SplitData:
    """A split held as batched tensors (on CPU); features are filled by the engine."""

    ids: list[str]
    wave: Tensor  # (B, N) float32
    target: Tensor  # (B, C) float32
    mask: Tensor  # (B, C) bool
    sources: Tensor | None = None  # (B, E, N) clean event sources (synthetic tasks)
    source_classes: Tensor | None = None  # (B, E) long, -1 = padding, -2 = distractor event

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class TaskData:
    """What a method's ``fit`` receives: the fold's splits and the task's declarations."""

    task: "Task"
    fold: str
    train: SplitData
    valid: SplitData
    test: SplitData
    frontend: "Any"  # audio.Frontend
    dictionary: Tensor | None = None  # (F, K) the task recipe's NMF dictionary, when asked for
    seed: int = 0
    device: torch.device = torch.device("cpu")
    cache_dir: str | None = None


@dataclass
class Batch:
    """A batch as methods see it. All tensors on the run's device."""

    wave: Tensor  # (B, N)
    X: Tensor  # (B, F, T) log1p |STFT|
    phase: Tensor  # (B, F, T) complex unit-modulus phase of the STFT
    logmel: Tensor  # (B, 1, T, M) classifier input (dB log-mel)
    target: Tensor  # (B, C)
    mask: Tensor  # (B, C) bool
    index: Tensor  # (B,) long, row in the split
    # true event sources, filled only for methods that declare ``needs_sources`` on tasks
    # that have them (``Task.has_sources``); same layout as ``SplitData``
    sources: Tensor | None = None  # (B, E, N)
    source_classes: Tensor | None = None  # (B, E) long, -1 = padding, -2 = distractor

    def __len__(self) -> int:
        return self.wave.shape[0]


class Task:
    """A dataset adapter. Subclasses set the class attributes and implement ``folds``."""

    name: ClassVar[str] = "task"
    kind: ClassVar[TaskKind] = "multiclass"
    classes: list[str]
    frontend: FrontendConfig
    official_metric: ClassVar[str] = "accuracy_top1"
    # the metric stem whose value is published as ``official/<official_metric>`` when the
    # task's official evaluation is a variant (SONYC-UST: "macro_auprc_dcase"); None = the same
    official_source: ClassVar[str | None] = None
    # per-task defaults that methods may read (e.g. paper Table II values), keyed by method
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = {}
    # layers of f fine-tuned from --classifier-weights: 'all' or 'head' (paper IV-B1: ESC-50
    # fine-tunes only the layers after the conv blocks, SONYC-UST and OpenMIC all layers)
    finetune: ClassVar[str] = "all"
    # settings of the classifier f trained by the engine (keys of classifier.DEFAULTS)
    classifier_defaults: ClassVar[dict[str, Any]] = {}
    # extra metric variants of the task's official evaluation (e.g. "auprc_dcase")
    metric_variants: ClassVar[tuple[str, ...]] = ()
    # classes excluded from class-wise results (e.g. SONYC 'non-machinery-impact')
    classwise_exclude: ClassVar[tuple[str, ...]] = ()
    # ``--task-option`` keys this task understands, with their defaults (type) and rules
    # (settings.Rule); ``None`` leaves options unchecked (plugins written before declarations)
    option_defaults: ClassVar[dict[str, Any] | None] = None
    option_rules: ClassVar[dict[str, Any]] = {}

    def __init__(self, data_root: str | None = None, profile: str = "default", seed: int = 0,
                 **options: Any) -> None:
        self.data_root = data_root
        self.profile = profile
        self.seed = seed
        if self.option_defaults is not None:
            from .settings import resolve

            checked = resolve(f"task {self.name} (--task-option)", self.option_defaults,
                              options, self.option_rules)
            options = {k: checked[k] for k in options}  # unset keys keep the task's own default
        self.options = options

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # the task keeps the clean source of every event (``Example.sources``): ground-truth
    # metrics and the reference explainers that need them (``needs_sources``) run on it
    has_sources: ClassVar[bool] = False

    @classmethod
    def data_seed_for(cls, run_seed: int, options: dict[str, Any]) -> int:
        """The ``seed`` a run with seed ``run_seed`` builds this task with. Default 0: the
        data and its splits are fixed and the run seed varies only the models. Generated tasks
        override it (option ``data_seed``)."""
        return 0

    def fold_names(self) -> list[str]:
        """Names of the folds; ``run --fold all`` runs each."""
        return ["0"]

    def folds(self, fold: str | None = None) -> list[Fold]:
        raise NotImplementedError  # abstract: every concrete task implements it

    def dictionary_recipe(self, train_X: Tensor, train_target: Tensor, k: int, seed: int = 0,
                          mu: float = 0.8, n_iter: int = 100) -> tuple[Tensor, dict[str, Any]]:
        """The NMF dictionary W (F, K) for this fold (paper IV-B3) and a record of how it was
        made (for config.json). ``train_X`` is the (B, F, T) log1p magnitude of the training
        clips; ``mu`` and ``n_iter`` are the sparse NMF's ℓ1 weight and iterations (eq. 6).
        Default (ESC-50 recipe): one sparse NMF on the frames of all training clips."""
        from . import nmf

        frames = train_X.permute(1, 0, 2).reshape(train_X.shape[1], -1)
        frames, info = nmf.subsample_frames(frames, seed=seed)
        W, _ = nmf.sparse_nmf(frames, k, mu=mu, n_iter=n_iter, seed=seed)
        return W, {"recipe": "all training clips", **info}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "classes": list(self.classes),
                "frontend": self.frontend.__dict__, "profile": self.profile}


# --------------------------------------------------------------------------------------------
# Explanations
# --------------------------------------------------------------------------------------------
class Explanation:
    """K non-negative components X_k of each row's log1p spectrogram X, with relevances r_k.

    Every component is a soft mask of the input: 0 <= X_k and sum_k X_k <= X (Algorithm 1).
    The engine only uses ``mixture(select)`` = sum over selected k of X_k, so the components
    never need to be stored densely.
    """

    X: Tensor  # (B, F, T)
    relevance: Tensor  # (B, K) in [-1, 1]: r_k = v_k / max_l |v_l| (paper III-E)

    @property
    def num_components(self) -> int:
        return self.relevance.shape[1]

    def mixture(self, select: Tensor) -> Tensor:
        """sum_{k: select[b, k]} X_k for each row b. ``select`` is (B, K) bool or float."""
        raise NotImplementedError  # abstract

    def component(self, k: int) -> Tensor:
        sel = torch.zeros_like(self.relevance)
        sel[:, k] = 1.0
        return self.mixture(sel)

    def component_mass(self) -> Tensor:
        """(B, K) log1p mass of each component, sum_{f,t} X_k (the unit of the budget-matched
        metrics). Generic fallback: one ``mixture`` call per component; the subclasses below
        compute it in one batched pass."""
        return torch.stack([self.component(k).flatten(1).sum(1)
                            for k in range(self.num_components)], dim=1)


class FactorExplanation(Explanation):
    """NMF-style components: X_k = X * (w_k h_k^T) / (W H + eps) (Algorithm 1, line 3).

    ``W`` is (F, K) shared or (B, F, K) per row; ``H`` is (B, K, T) non-negative.
    """

    def __init__(self, X: Tensor, W: Tensor, H: Tensor, relevance: Tensor, eps: float = 1e-6):
        self.X, self.W, self.H, self.relevance, self.eps = X, W, H, relevance, eps

    def _WH(self, H: Tensor) -> Tensor:
        if self.W.dim() == 2:
            return torch.einsum("fk,bkt->bft", self.W, H)
        return torch.bmm(self.W, H)

    def mixture(self, select: Tensor) -> Tensor:
        sel = select.to(self.H.dtype).unsqueeze(-1)
        return self.X * self._WH(self.H * sel) / (self._WH(self.H) + self.eps)

    def component_mass(self) -> Tensor:
        """sum_{f,t} X_ft w_fk h_kt / ((WH)_ft + eps), all k at once."""
        ratio = self.X / (self._WH(self.H) + self.eps)  # (B, F, T)
        if self.W.dim() == 2:
            a = torch.einsum("bft,fk->bkt", ratio, self.W)
        else:
            a = torch.einsum("bft,bfk->bkt", ratio, self.W)
        return (a * self.H).sum(-1)


class SegmentExplanation(Explanation):
    """Hard partition components: bin (f, t) belongs to segment ``segments[b, f, t]`` in
    [0, K) (or -1 for none); X_k = X * [segments == k]. Used by SLIME, VIBI and attribution
    regions."""

    def __init__(self, X: Tensor, segments: Tensor, relevance: Tensor):
        self.X, self.segments, self.relevance = X, segments.long(), relevance

    def mixture(self, select: Tensor) -> Tensor:
        sel = torch.cat([select.to(self.X.dtype),
                         torch.zeros_like(select[:, :1], dtype=self.X.dtype)], dim=1)
        seg = torch.where(self.segments < 0, sel.shape[1] - 1, self.segments)
        gate = torch.gather(sel, 1, seg.flatten(1)).view_as(self.X)
        return self.X * gate

    def component_mass(self) -> Tensor:
        """Sum of X over each segment's bins (bins of no segment are dropped)."""
        K = self.relevance.shape[1]
        seg = torch.where(self.segments < 0, K, self.segments).flatten(1)
        out = torch.zeros(self.X.shape[0], K + 1, dtype=self.X.dtype, device=self.X.device)
        return out.scatter_add_(1, seg, self.X.flatten(1))[:, :K]


def normalise_relevance(v: Tensor, mode: str = "paper") -> Tensor:
    """r = v / max_k |v_k| (paper III-E) or v / max_k v_k (authors' code, ``mode='code'``)."""
    if mode == "paper":
        denom = v.abs().amax(dim=-1, keepdim=True)
    elif mode == "code":
        denom = v.amax(dim=-1, keepdim=True)
    else:
        raise ValueError(f"relevance normalisation must be 'paper' or 'code', not {mode!r}")
    return v / denom.clamp_min(1e-12)


# --------------------------------------------------------------------------------------------
# Classifiers (the model f that post-hoc methods explain)
# --------------------------------------------------------------------------------------------
ClassifierInput = Literal["logmel", "waveform"]
CLASSIFIER_CAPABILITIES = ("white-box", "black-box")


class Classifier(torch.nn.Module):
    """A model the suite explains. Subclasses declare:

    - ``input``: ``"logmel"`` (``forward`` takes the task front-end's log-mel (B, 1, T, M),
      i.e. ``Batch.logmel``) or ``"waveform"`` (``forward`` takes (B, N) float32 mono at
      ``sample_rate``; the engine resamples the task's clips and every re-synthesised x₂).
    - ``kind``: how its logits become probabilities (``"multiclass"`` softmax,
      ``"multilabel"`` sigmoid).
    - ``class_names``: its output names (``None``: the task's classes, in order). When they
      differ from the task's classes, the task must map them (``Task.label_map``).
    - ``capabilities``: ``{"white-box"}``, a torch module with gradients whose
      ``forward_hidden(x) -> (logits, {name: (B, C, T', M')})`` exposes named hidden maps (time
      = dim 2) for L2I's Ψ, FLINT, Grad-CAM, Saliency, IG; or ``{"black-box"}``: only
      ``forward`` (no gradients, may run outside torch), for model-agnostic methods.
    - ``trainable``: ``True`` when the engine trains it on the task (the Kumar CNN);
      pretrained models are used as they are.

    ``forward(x) -> logits (B, n_outputs)`` on the classifier's own input.
    """

    registry_name: ClassVar[str] = ""
    input: ClassVar[str] = "logmel"
    sample_rate: int | None = None
    kind: str = "multiclass"
    class_names: list[str] | None = None
    capabilities: ClassVar[frozenset[str]] = frozenset({"white-box"})
    trainable: ClassVar[bool] = False

    def forward_hidden(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} is black-box: no hidden maps")

    def identity(self) -> dict[str, Any]:
        """Name and a digest of the weights, recorded in config.json and the variant."""
        import hashlib

        h = hashlib.sha256()
        for k, v in sorted(self.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return {"name": self.registry_name or type(self).__name__, "weights": h.hexdigest()[:12]}


# --------------------------------------------------------------------------------------------
# Explainers
# --------------------------------------------------------------------------------------------
CAPABILITIES = ("surrogate", "predict", "explain")


class Explainer:
    """Base class of every method. Declare what it can do in ``capabilities``:

    - ``"surrogate"``: ``surrogate_predict(batch) -> (B, C)`` probabilities of a global
      surrogate of the classifier f (softmax rows for multiclass, sigmoids for multilabel);
      scored for **fidelity** against f's outputs.
    - ``"predict"``: ``predict(batch) -> (B, C)`` probabilities of a by-design model; scored
      for **classification** against the labels.
    - ``"explain"``: ``explain(batch, classes) -> Explanation`` decomposes each row's input
      X (B, F, T) into K non-negative components with relevances in [-1, 1] for the class
      ``classes[b]``; scored for **faithfulness** and made **listenable**.

    ``posthoc = True`` methods receive the trained classifier f (frozen) in ``fit``; by-design
    ones receive ``None`` and train their own predictor. ``defaults`` holds the method's
    hyperparameters; ``task.method_defaults[name]`` overrides them per task, and the user's
    ``--set key=value`` overrides both. Methods must be deterministic given ``seed``.
    """

    capabilities: ClassVar[frozenset[str]] = frozenset()
    posthoc: ClassVar[bool] = True
    needs_dictionary: ClassVar[bool] = False  # ask the engine for the task's NMF dictionary
    # reads the true sources (``Batch.sources``): runs only on tasks with ``has_sources``
    needs_sources: ClassVar[bool] = False
    # what a post-hoc method needs of the classifier f it explains (``Classifier.capabilities``):
    # ``{"white-box"}`` for gradients or hidden maps; empty = any model, black-box too
    classifier_needs: ClassVar[frozenset[str]] = frozenset()
    # learns from the training split (an interpreter, a surrogate, a by-design model); False
    # for methods that only query f, which run on tasks without training clips (a pretrained
    # classifier evaluated on the user's clips: ``csv`` with ``all_test=true``)
    needs_training: ClassVar[bool] = True
    listenable: ClassVar[bool] = True  # its components make sense as audio
    defaults: ClassVar[dict[str, Any]] = {}
    small_profile: ClassVar[dict[str, Any]] = {}  # overrides for ``--profile small``
    # allowed values of settings beyond settings.COMMON_RULES (key -> settings.Rule)
    setting_rules: ClassVar[dict[str, Any]] = {}
    # settings that change how fast, never what is computed (tested bit for bit): left out
    # of the cell's hash, so changing them reuses the cell's results
    speed_settings: ClassVar[frozenset[str]] = frozenset()
    registry_name: ClassVar[str] = ""

    def __init__(self, config: dict[str, Any], seed: int = 0,
                 device: torch.device | str = "cpu") -> None:
        self.config = dict(config)
        self.seed = seed
        self.device = torch.device(device)
        self.history: list[dict[str, float]] = []  # training curves, if any

    # capability methods -----------------------------------------------------------------
    def fit(self, data: TaskData, classifier: torch.nn.Module | None) -> None:
        """Train the explainer. ``classifier`` is f (post-hoc) or None (by-design)."""

    def surrogate_predict(self, batch: Batch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} declares no 'surrogate'")

    def predict(self, batch: Batch) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} declares no 'predict'")

    def explain(self, batch: Batch, classes: Tensor) -> Explanation:
        raise NotImplementedError(f"{type(self).__name__} declares no 'explain'")

    # persistence --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    @classmethod
    def resolve_config(cls, task: Task | None, profile: str,
                       overrides: dict[str, Any]) -> dict[str, Any]:
        """defaults < task.method_defaults[name] < small profile < --set overrides.

        Every value is parsed and checked against its declared rule (``settings.py``:
        ``COMMON_RULES`` and the class's ``setting_rules``); unknown keys, unparsable or
        out-of-range values raise ``settings.SettingsError`` naming the key and the allowed
        values, before any work is done."""
        cfg = dict(cls.defaults)
        if task is not None:
            for key in (cls.registry_name, getattr(cls, "task_defaults_key", "")):
                if key and key in task.method_defaults:
                    cfg.update(task.method_defaults[key])
                    break
        if profile == "small":
            cfg.update(cls.small_profile)
        from .settings import resolve

        return resolve(f"method {cls.registry_name or cls.__name__}", cfg, overrides,
                       cls.setting_rules)


@dataclass
class MetricInfo:
    """Documentation of a metric name written to ``metrics.json``."""

    name: str
    higher_is_better: bool
    reference: str
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
