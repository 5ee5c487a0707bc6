"""Data flow of ``audio-xai-bench run`` (DESIGN.md): task -> features -> classifier f ->
method fit -> batched evaluation -> run directory, one cell per (fold, seed).

The classifier f and the task's NMF dictionary are cached per (task, fold, seed, settings)
under the cache folder and shared by every post-hoc method, so all of them interpret the same
network. Nothing in this module names a method or a dataset: behaviour follows the
explainer's declared capabilities and the task's declarations.
"""
from __future__ import annotations

import copy
import hashlib
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from . import classifier as clf
from . import settings
from .api import Batch, Explainer, Task, TaskData
from .audio import Frontend
from .data import LoadReport, empty_split, materialize
from .evaluate import EvalConfig, Scorer
from .locks import artefact_lock, clean_stale, report_unreadable
from .model import ClassifierError, ExplainedModel, output_columns
from .registry import METHODS, TASKS
from .results import cell_dir, config_hash, is_done, read_cell, versions, write_cell
from .train import BatchLoader, atomic_save, fit, load_checkpoint


@dataclass
class RunSpec:
    method: str
    task: str = "synth"
    data_root: str | None = None
    fold: str = "all"
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"
    out: str = "runs"
    cache_dir: str | None = None
    profile: str = "default"
    overrides: dict[str, str] = field(default_factory=dict)
    force: bool = False
    on_bad_file: str = "fail"
    classifier_weights: str | None = None
    task_options: dict[str, Any] = field(default_factory=dict)
    sanity: str | None = None  # 'all' or comma-separated stages: run the sanity checks
    # the model explained: 'kumar' (trained by the engine), a registered classifier, a
    # 'package.module:Object', or a path to a Kumar checkpoint (.pt) used as it is
    classifier: str = "kumar"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA device is available")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"--device must be auto, cpu or cuda, not {name!r}")
    return torch.device(name)


def split_overrides(overrides: dict[str, str]) -> tuple[dict, dict, dict]:
    """``--set`` keys: ``classifier.x`` -> f's settings, ``eval.x`` -> scorer, else method."""
    method, classifier, evaluation = {}, {}, {}
    for k, v in overrides.items():
        if k.startswith("classifier."):
            classifier[k.split(".", 1)[1]] = v
        elif k.startswith("eval."):
            evaluation[k.split(".", 1)[1]] = v
        else:
            method[k] = v
    return method, classifier, evaluation


def resolve_classifier_config(task: Task, profile: str, overrides: dict) -> dict[str, Any]:
    cfg = dict(clf.DEFAULTS)
    cfg.update(task.classifier_defaults)
    if profile == "small":
        cfg.update({"epochs": 3, "width": 0.0625, "head_mid": 32})
        cfg.update(getattr(task, "classifier_small", {}))
    return settings.resolve("the classifier f (classifier.*)", cfg, overrides)


def resolve_eval_config(overrides: dict, seed: int) -> EvalConfig:
    base = EvalConfig(seed=seed)
    for k, v in settings.resolve("the scorer (eval.*)", base.as_dict(), overrides).items():
        setattr(base, k, v)
    return base


def _ids_digest(data: TaskData) -> str:
    h = hashlib.sha256()
    for split in (data.train, data.valid, data.test):
        h.update("\n".join(split.ids).encode())
    return h.hexdigest()[:10]


# --------------------------------------------------------------------------------------------
# classifier f
# --------------------------------------------------------------------------------------------
def _classifier_loss(model: torch.nn.Module, kind: str, pos_weight: Tensor | None):
    def loss_fn(batch: Batch, epoch: int) -> dict[str, Tensor]:
        logits = model(batch.logmel)
        if kind == "multiclass":
            loss = F.cross_entropy(logits, batch.target.argmax(1))
        else:  # masked BCE: unannotated labels (OpenMIC) count in no loss
            m = batch.mask.float()
            per = F.binary_cross_entropy_with_logits(logits, batch.target, reduction="none",
                                                     pos_weight=pos_weight)
            loss = (per * m).sum() / m.sum().clamp_min(1.0)
        return {"loss": loss}
    return loss_fn


@torch.inference_mode()
def _validation_score(model: torch.nn.Module, loader: BatchLoader, kind: str) -> float:
    from .metrics import fidelity as fid

    probs, targets, masks = [], [], []
    for batch in loader:
        probs.append(clf.probabilities(model(batch.logmel), kind).float().cpu())
        targets.append(batch.target.cpu())
        masks.append(batch.mask.cpu())
    p, t, m = torch.cat(probs), torch.cat(targets), torch.cat(masks)
    if kind == "multiclass":
        return float((p.argmax(1) == t.argmax(1)).float().mean())
    return float(fid.average_precision_macro_micro(t.numpy() > 0.5, p.numpy(), m.numpy())["macro"])


# leftovers of atomic_save (".<name>.<random>.tmp"), also those of f's resume checkpoint
_STALE_TEMPS = (".{stem}*.tmp",)


def _load_cached(path: Path, required: tuple[str, ...], map_location="cpu", log=print):
    """A cached artefact's state, or None when it is absent; an unreadable or incomplete file
    is reported by name and removed so that the caller rebuilds it."""
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path, map_location=map_location)
        missing = [k for k in required if not isinstance(state, dict) or k not in state]
        if missing:
            raise KeyError(f"missing {missing}")
        return state
    except Exception as exc:  # truncated, empty, not a state dict, refused pickle, ...
        report_unreadable(path, exc, log)
        path.unlink(missing_ok=True)
        return None


def get_classifier(data: TaskData, cfg: dict[str, Any], cache: Path, seed: int,
                   weights: str | None = None, log=print) -> tuple[torch.nn.Module, dict]:
    """Train f for (task, fold, seed) once and cache it; later calls load the checkpoint.

    Built under a file lock (``locks.artefact_lock``): a second process asking for the same f
    waits, then loads the finished checkpoint instead of training it again."""
    task = data.task
    key = config_hash({"task": task.describe(), "cfg": cfg, "ids": _ids_digest(data),
                       "weights": weights, "seed": seed})
    path = cache / "classifiers" / task.name / f"{data.fold}-{seed}-{key}.pt"
    torch.manual_seed(seed)
    model = clf.build_classifier(task.num_classes, cfg).to(data.device)
    info: dict[str, Any] = {"checkpoint": str(path), "config": cfg}
    state = _load_cached(path, ("model",), data.device, log)
    if state is None:
        with artefact_lock(path, log):
            state = _load_cached(path, ("model",), data.device, log)
            if state is None:
                clean_stale(path, _STALE_TEMPS)
                return _train_classifier(data, cfg, path, seed, model, info, weights, log)
    model.load_state_dict(state["model"])
    info.update(cached=True, history=state.get("history", []))
    return model.eval(), info


def _train_classifier(data: TaskData, cfg: dict[str, Any], path: Path, seed: int,
                      model: torch.nn.Module, info: dict[str, Any], weights: str | None,
                      log) -> tuple[torch.nn.Module, dict]:
    task = data.task
    params = list(model.parameters())
    if weights:
        state = load_checkpoint(weights, map_location=data.device)
        state = state.get("model", state)
        own = model.state_dict()
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ValueError(f"--classifier-weights {weights}: no parameter matches the network")
        model.load_state_dict(usable, strict=False)
        info["loaded_weights"] = {"path": weights, "n_tensors": len(usable)}
        if task.finetune == "head":  # paper: ESC-50 fine-tunes the head only
            params = model.head_parameters()
        info["finetune"] = task.finetune
    pw = cfg.get("pos_weight")
    pos_weight = torch.tensor(pw, dtype=torch.float32, device=data.device) if pw else None
    loader = BatchLoader(data.train, data.frontend, int(cfg["batch_size"]), shuffle=True,
                         seed=seed, device=data.device)
    valid = BatchLoader(data.valid, data.frontend, 64, device=data.device)
    log(f"training classifier f for {task.name} fold {data.fold} seed {seed} "
        f"({cfg['epochs']} epochs, width {cfg['width']})")
    history = fit(model, params, _classifier_loss(model, task.kind, pos_weight), loader,
                  epochs=int(cfg["epochs"]), lr=float(cfg["lr"]),
                  validate=lambda: _validation_score(model, valid, task.kind),
                  select=cfg["select"], checkpoint=path.with_suffix(".resume.pt"),
                  desc="classifier f")
    atomic_save({"model": model.state_dict(), "history": history}, path)
    info.update(cached=False, history=history)
    return model.eval(), info


def get_dictionary(data: TaskData, k: int, seed: int, cache: Path, method_cfg: dict,
                   log=print) -> tuple[Tensor, dict]:
    """The task's NMF dictionary (paper IV-B3) for this fold, cached."""
    task = data.task
    mu, n_iter = float(method_cfg.get("nmf_mu", 0.8)), int(method_cfg.get("nmf_iter", 100))
    from . import nmf

    key = config_hash({"task": task.describe(), "k": k, "mu": mu, "iter": n_iter,
                       "ids": _ids_digest(data), "seed": seed, "solver": nmf.DEFAULT_SOLVER,
                       "splits": list(getattr(task, "dictionary_splits", ("train",)))})
    path = cache / "dictionaries" / task.name / f"{data.fold}-{seed}-K{k}-{key}.pt"
    state = _load_cached(path, ("W", "info"), log=log)
    if state is None:
        with artefact_lock(path, log):  # one process learns it, the others wait and load it
            state = _load_cached(path, ("W", "info"), log=log)
            if state is None:
                clean_stale(path, _STALE_TEMPS)
                return _learn_dictionary(data, k, seed, mu, n_iter, path, log)
    return state["W"].to(data.device), {**state["info"], "cached": True}


def _learn_dictionary(data: TaskData, k: int, seed: int, mu: float, n_iter: int, path: Path,
                      log) -> tuple[Tensor, dict]:
    task = data.task
    from . import nmf

    log(f"learning the NMF dictionary (K={k}) for {task.name} fold {data.fold}")
    # the task says which splits its recipe reads (ESC-50: train + valid, the paper's 1600 clips)
    splits = [getattr(data, s) for s in getattr(task, "dictionary_splits", ("train",))]
    X = []
    with torch.inference_mode():
        for split in splits:
            for batch in BatchLoader(split, data.frontend, 64, device=data.device):
                X.append(batch.X)
    train_X = torch.cat(X)
    del X
    target = torch.cat([s.target for s in splits]).to(data.device)
    W, info = task.dictionary_recipe(train_X, target, k, seed=seed, mu=mu, n_iter=n_iter)
    info = {**info, "K": int(W.shape[1]), "mu": mu, "n_iter": n_iter, "solver": nmf.DEFAULT_SOLVER}
    atomic_save({"W": W.cpu(), "info": info}, path)
    return W.to(data.device), info


# --------------------------------------------------------------------------------------------
# the model explained (``--classifier``)
# --------------------------------------------------------------------------------------------
DEFAULT_CLASSIFIER = "kumar"


def _is_checkpoint(name: str) -> bool:
    return name.endswith((".pt", ".pth")) or Path(name).is_file()


def classifier_object(name: str):
    """The registered / imported classifier object for ``--classifier NAME`` (a class, an
    ``nn.Module`` instance or a factory); ``None`` for the default and for checkpoints."""
    from .registry import CLASSIFIERS

    if name == DEFAULT_CLASSIFIER or _is_checkpoint(name):
        return None
    try:
        return CLASSIFIERS.get(name)
    except KeyError as exc:
        raise settings.SettingsError(str(exc).strip("'\"")) from None


def classifier_capabilities(name: str) -> frozenset[str]:
    """What the classifier declares (``api.Classifier.capabilities``), without building it."""
    obj = classifier_object(name)
    if obj is None:
        return frozenset({"white-box"})
    return frozenset(getattr(obj, "capabilities", frozenset({"white-box"})))


def methods_for(caps: frozenset[str]) -> list[str]:
    """Registered post-hoc methods whose ``classifier_needs`` the capabilities ``caps``
    satisfy: the ones that explain such a classifier. By-design methods are not listed: they
    explain their own predictor and never read the classifier."""
    out = []
    for name in METHODS.names():
        try:
            cls = METHODS.get(name)
            needs = frozenset(getattr(cls, "classifier_needs", frozenset()))
        except Exception:  # a broken plugin must not hide the others
            continue
        if getattr(cls, "posthoc", True) and "explain" in getattr(cls, "capabilities", ()) \
                and needs <= caps:
            out.append(name)
    return out


def check_classifier(method_cls, method: str, classifier: str) -> None:
    """A post-hoc method that needs a white-box f (gradients, hidden maps) refuses a black-box
    classifier before any work, naming the methods that can run with it."""
    if not method_cls.posthoc:
        return
    needs = frozenset(getattr(method_cls, "classifier_needs", frozenset()))
    caps = classifier_capabilities(classifier)
    if not needs <= caps:
        raise settings.SettingsError(
            f"method {method!r} needs a {', '.join(sorted(needs - caps))} classifier, but "
            f"{classifier!r} is {', '.join(sorted(caps))}; post-hoc methods that explain it: "
            f"{', '.join(methods_for(caps))}")


def _adapt_to_classifier(method_cls, classifier: str, overrides: dict[str, Any]):
    """A non-default classifier may declare the names of its hidden maps
    (``hidden_layer_names``: the allowed values of ``hidden_layers``) and defaults for the
    methods that explain it (``explainer_defaults``, e.g. YAMNet: which three maps Ψ reads
    and ``psi_plan='resample'``). They apply below the user's ``--set`` and only to the keys
    the method has; the method class is then a subclass with the extended rule."""
    obj = classifier_object(classifier or DEFAULT_CLASSIFIER)
    if obj is None:
        return method_cls, overrides
    defaults = dict(getattr(method_cls, "defaults", {}))
    names = getattr(obj, "hidden_layer_names", None)
    extra = {k: v for k, v in dict(getattr(obj, "explainer_defaults", {}) or {}).items()
             if k in defaults and k not in overrides}
    if not names and not extra:
        return method_cls, overrides
    rules = dict(getattr(method_cls, "setting_rules", {}))
    if names and "hidden_layers" in defaults:
        rules["hidden_layers"] = settings.Rule(choices=tuple(names), nonempty=True,
                                               doc="hidden maps of the classifier read by the "
                                                   "interpreter")
        own = defaults["hidden_layers"]
        own = (own,) if isinstance(own, str) else tuple(own)
        if "hidden_layers" not in overrides and "hidden_layers" not in extra \
                and not set(own) <= set(names):
            # the method's default names are the Kumar CNN's: read as many of the classifier's
            # deepest declared maps instead (the paper's Ψ reads f's last blocks)
            extra["hidden_layers"] = tuple(names)[-len(own):]
    adapted = type(method_cls.__name__, (method_cls,),
                   {"setting_rules": rules, "__doc__": method_cls.__doc__,
                    "__module__": method_cls.__module__,
                    "registry_name": getattr(method_cls, "registry_name", "")})
    return adapted, {**extra, **overrides}


def _build_classifier_object(obj, cache: Path, device: torch.device) -> torch.nn.Module:
    """An ``nn.Module`` from a registered / imported classifier object."""
    if isinstance(obj, torch.nn.Module):
        return obj
    build = getattr(obj, "build", None)
    if isinstance(obj, type) and callable(build):
        net = build(cache_dir=str(cache), device=device)
    elif callable(obj):
        net = obj()
    else:
        raise ClassifierError(f"{obj!r} is neither an nn.Module, a class nor a factory")
    if not isinstance(net, torch.nn.Module):
        raise ClassifierError(f"{obj!r} did not give an nn.Module (got {type(net).__name__})")
    return net


def _kumar_from_checkpoint(path: str, num_classes: int, device: torch.device):
    """A frozen Kumar CNN from a state dict file (raw or under ``"model"``), its width and head
    read from the tensors' shapes."""
    state = load_checkpoint(path, map_location=device)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or "blocks.0.0.weight" not in state or "fc.weight" not in state:
        raise ClassifierError(f"--classifier {path}: not a state dict of the Kumar network "
                              "(expected keys blocks.0.0.weight ... fc.weight)")
    width = float(state["blocks.0.0.weight"].shape[0]) / 16.0
    n_out = int(state["fc.weight"].shape[0])
    if n_out != num_classes:
        raise ClassifierError(f"--classifier {path}: the checkpoint has {n_out} outputs but the "
                              f"task has {num_classes} classes")
    mid = int(state["head.0.weight"].shape[0])
    head_mid = int(round(mid / min(1.0, width * 2)))
    net = clf.build_classifier(num_classes, {"width": width, "head_mid": head_mid, "dropout": 0.0})
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ClassifierError(f"--classifier {path}: does not fit the Kumar network: {exc}") from None
    net.trainable = False  # used as it is, never trained by the engine
    return net.to(device)


def get_model(spec: RunSpec, data: TaskData, cfg: dict[str, Any], cache: Path, seed: int,
              log=print) -> tuple[ExplainedModel, dict]:
    """The model explained in this cell, wrapped for the engine (``model.ExplainedModel``):
    the engine-trained Kumar CNN (cached, as before), a Kumar checkpoint used as it is, or a
    registered / imported classifier (pretrained, used as it is; the task's ``label_map``
    maps its outputs)."""
    name = spec.classifier or DEFAULT_CLASSIFIER
    task = data.task
    if name == DEFAULT_CLASSIFIER and len(data.train) == 0:
        raise ClassifierError(f"task {task.name!r} fold {data.fold} has no training clips, so "
                              "the Kumar CNN cannot be trained on it: explain a pretrained model "
                              "(--classifier yamnet, package.module:Object or a checkpoint .pt)")
    if name == DEFAULT_CLASSIFIER:
        net, info = get_classifier(data, cfg, cache, seed, spec.classifier_weights, log)
    else:
        if _is_checkpoint(name):
            net = _kumar_from_checkpoint(name, task.num_classes, data.device)
            info = {"checkpoint": name, "config": {}, "cached": True, "history": []}
        else:
            net = _build_classifier_object(classifier_object(name), cache, data.device)
            info = {"checkpoint": None, "config": {}, "cached": True, "history": []}
        net = net.to(data.device).eval()
        for p in net.parameters():
            p.requires_grad_(False)
    model = ExplainedModel(net, data.frontend, task)
    probe_wave = next((s.wave[:1] for s in (data.test, data.train, data.valid) if len(s)), None)
    if name != DEFAULT_CLASSIFIER and probe_wave is not None:
        with torch.inference_mode():
            n_out = int(net(model.input_from_wave(probe_wave.to(data.device))).shape[-1])
        model = ExplainedModel(net, data.frontend, task, output_columns(net, task, n_out))
    info["identity"] = {"classifier": name, **model.identity(), "input": model.input_kind,
                        "kind": model.kind, "capabilities": sorted(model.capabilities),
                        "label_map": getattr(task, "label_map", None)}
    return model.eval(), info


# --------------------------------------------------------------------------------------------
# cells
# --------------------------------------------------------------------------------------------
def tasks_with_sources() -> list[str]:
    """Registered tasks that keep their true sources (``Task.has_sources``)."""
    out = []
    for name in TASKS.names():
        try:
            if getattr(TASKS.get(name), "has_sources", False):
                out.append(name)
        except Exception:  # a broken plugin must not hide the others
            continue
    return out


def check_sources(method_cls, task_cls, method: str, task: str) -> None:
    """A method that reads the true sources (``needs_sources``) refuses, before any work, a
    task that does not keep them, naming the tasks that do."""
    if getattr(method_cls, "needs_sources", False) and not getattr(task_cls, "has_sources", False):
        raise ValueError(f"method {method!r} needs the true sources of the events, which task "
                         f"{task!r} does not have; tasks with true sources: "
                         f"{', '.join(tasks_with_sources())}")


def _resolved(spec: RunSpec, seed: int):
    """(method class, task, method / classifier / scorer settings) of one seed of ``spec``."""
    method_cls = METHODS.get(spec.method)
    if not (isinstance(method_cls, type) and issubclass(method_cls, Explainer)):
        raise TypeError(f"method {spec.method!r} is not an audio_xai_bench.api.Explainer subclass")
    task_cls = TASKS.get(spec.task)
    check_sources(method_cls, task_cls, spec.method, spec.task)
    check_classifier(method_cls, spec.method, spec.classifier or DEFAULT_CLASSIFIER)
    m_over, c_over, e_over = split_overrides(spec.overrides)
    task: Task = task_cls(data_root=spec.data_root, profile=spec.profile,
                          seed=task_cls.data_seed_for(seed, spec.task_options),
                          **spec.task_options)
    method_cls, m_over = _adapt_to_classifier(method_cls, spec.classifier, m_over)
    method_cfg = method_cls.resolve_config(task, spec.profile, m_over)
    clf_cfg = resolve_classifier_config(task, spec.profile, c_over)
    eval_cfg = resolve_eval_config(e_over, seed)
    if spec.fold != "all" and spec.fold not in task.fold_names():
        raise settings.SettingsError(f"--fold {spec.fold!r} is not a fold of {task.name}; "
                                     f"valid: all, {', '.join(task.fold_names())}")
    return method_cls, task, method_cfg, clf_cfg, eval_cfg


def _cache_root(spec: RunSpec) -> Path:
    return Path(spec.cache_dir) if spec.cache_dir else Path(spec.out) / ".cache"


def run(spec: RunSpec, log=print) -> list[dict[str, Any]]:
    """Run every (fold, seed) cell of ``spec``; returns the cells' records."""
    device = resolve_device(spec.device)
    cache = _cache_root(spec)
    # everything is resolved and checked before any work (f, dictionary, fit) starts
    resolved = [(seed, *_resolved(spec, seed)) for seed in check_seeds(spec.seeds)]
    check_writable(Path(spec.out), cache)
    records = []
    for seed, method_cls, task, method_cfg, clf_cfg, eval_cfg in resolved:
        fold_arg = None if spec.fold == "all" else spec.fold
        for fold in task.folds(fold_arg):
            records.append(_run_cell(spec, task, fold, seed, method_cls, method_cfg, clf_cfg,
                                     eval_cfg, device, cache, log))
    return records


def check_seeds(seeds: list[int]) -> list[int]:
    """Seeds as given, de-duplicated in order; negative seeds are refused."""
    bad = [s for s in seeds if int(s) < 0]
    if bad:
        raise settings.SettingsError(f"seeds must be integers >= 0, got {bad}")
    return list(dict.fromkeys(int(s) for s in seeds))


def check_writable(*folders: Path, min_free_mb: float = 200.0) -> None:
    """Fail before training when a results or cache folder cannot be written (or its disk has
    less than ``min_free_mb`` free), naming the folder."""
    import os
    import shutil

    for folder in folders:
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not os.access(probe, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write to {folder} ({probe} is not writable); "
                                  f"choose another --out / --cache-dir")
        free = shutil.disk_usage(probe).free / 2**20
        if free < min_free_mb:
            raise OSError(f"only {free:.0f} MB free under {probe}: a run needs at least "
                          f"{min_free_mb:.0f} MB for its caches and results")


def plan(spec: RunSpec) -> list[tuple[str, int, Path]]:
    """(fold, seed, cell folder) of every cell of ``spec``, without loading any data: checks
    every name and setting (what ``sweep`` does before submitting anything)."""
    out = []
    for seed in check_seeds(spec.seeds):
        method_cls, task, method_cfg, clf_cfg, eval_cfg = _resolved(spec, seed)
        names = task.fold_names()
        for fold in (names if spec.fold == "all" else [spec.fold]):
            _, _, path = _cell_identity(spec, task, fold, seed, method_cls, method_cfg,
                                        clf_cfg, eval_cfg)
            out.append((fold, seed, path))
    return out


def dependency_key(spec: RunSpec, seed: int) -> tuple:
    """What the shared artefacts of a cell depend on: cells with equal keys share f, the
    dictionary and the waveform cache, so a sweep's dependency stage builds them once."""
    method_cls, task, method_cfg, clf_cfg, _ = _resolved(spec, seed)
    dictionary = None
    if method_cls.needs_dictionary:
        dictionary = (int(method_cfg["K"]), method_cfg.get("nmf_mu"), method_cfg.get("nmf_iter"))
    return (task.name, spec.fold, seed, spec.profile, spec.data_root,
            config_hash({"clf": clf_cfg, "opts": spec.task_options,
                         "weights": spec.classifier_weights,
                         **({"classifier": spec.classifier}
                            if (spec.classifier or DEFAULT_CLASSIFIER) != DEFAULT_CLASSIFIER
                            else {})}), dictionary)


def prepare_shared(spec: RunSpec, log=print) -> list[dict[str, Any]]:
    """Build (or find cached) the shared artefacts of ``spec``'s cells: waveform caches, the
    classifier f and, when the method needs one, the NMF dictionary. Each is built under its
    file lock, so concurrent calls build every artefact once."""
    device = resolve_device(spec.device)
    cache = _cache_root(spec)
    built = []
    for seed in spec.seeds:
        method_cls, task, method_cfg, clf_cfg, _ = _resolved(spec, seed)
        for fold in task.folds(None if spec.fold == "all" else spec.fold):
            data, _report = _load_data(spec, task, fold, seed, device, cache)
            _, f_info = get_model(spec, data, clf_cfg, cache, seed, log)
            item = {"task": task.name, "fold": fold.name, "seed": seed,
                    "classifier": f_info["checkpoint"], "classifier_cached": f_info["cached"]}
            if method_cls.needs_dictionary:
                _, d_info = get_dictionary(data, int(method_cfg["K"]), seed, cache, method_cfg, log)
                item["dictionary_cached"] = bool(d_info.get("cached"))
            built.append(item)
    return built


def _cell_identity(spec: RunSpec, task: Task, fold_name: str, seed: int, method_cls,
                   method_cfg: dict, clf_cfg: dict, eval_cfg: EvalConfig):
    name = getattr(method_cls, "registry_name", "") or spec.method
    speed = getattr(method_cls, "speed_settings", frozenset())
    resolved = {"method": name,
                "method_config": {k: v for k, v in method_cfg.items() if k not in speed},
                "task": task.describe(),
                "fold": fold_name, "seed": seed, "classifier_config": clf_cfg,
                "eval_config": eval_cfg.identity(), "profile": spec.profile,
                "classifier_weights": spec.classifier_weights, "data_root": spec.data_root,
                "task_options": spec.task_options}
    if spec.sanity:  # only then, so that the hash of every other cell stays as it was
        resolved["sanity"] = spec.sanity
    if (spec.classifier or DEFAULT_CLASSIFIER) != DEFAULT_CLASSIFIER:  # likewise
        resolved["classifier_spec"] = _classifier_key(spec.classifier)
    chash = config_hash(resolved)
    return resolved, chash, cell_dir(spec.out, task.name, name, fold_name, seed, chash)


def _queries_only(name: str) -> bool:
    try:
        return not getattr(METHODS.get(name), "needs_training", True)
    except Exception:  # a broken plugin must not hide the others
        return False


def _classifier_key(name: str) -> dict[str, Any]:
    """What identifies a non-default classifier in the cell's hash: its name, and for a
    checkpoint file the digest of its bytes."""
    if _is_checkpoint(name):
        h = hashlib.sha256(Path(name).read_bytes()).hexdigest()[:12] if Path(name).is_file() \
            else "missing"
        return {"checkpoint": str(name), "sha256": h}
    return {"name": name}


def _load_data(spec: RunSpec, task: Task, fold, seed: int, device: torch.device,
               cache: Path) -> tuple[TaskData, LoadReport]:
    fe_cfg = task.frontend
    report = LoadReport()
    kw = {"on_bad_file": spec.on_bad_file, "report": report, "cache_dir": cache,
          "namespace": task.name}

    def load(examples, desc):
        return materialize(examples, fe_cfg, desc=desc, **kw) if examples else \
            empty_split(task.num_classes, fe_cfg)

    data = TaskData(task=task, fold=fold.name,
                    train=load(fold.train, "train"), valid=load(fold.valid, "valid"),
                    test=load(fold.test, "test"),
                    frontend=Frontend(fe_cfg, device), seed=seed, device=device,
                    cache_dir=str(cache))
    return data, report


def _check_training_split(spec: RunSpec, task: Task, fold: str, method_cls, n_train: int) -> None:
    if getattr(method_cls, "needs_training", True) and n_train == 0:
        raise ValueError(f"method {spec.method!r} learns from the training split, which is empty "
                         f"on task {task.name!r} fold {fold}; methods that only query f: "
                         f"{', '.join(n for n in METHODS.names() if _queries_only(n))}")


def _run_cell(spec: RunSpec, task: Task, fold, seed: int, method_cls, method_cfg: dict,
              clf_cfg: dict, eval_cfg: EvalConfig, device: torch.device, cache: Path,
              log) -> dict[str, Any]:
    resolved, chash, path = _cell_identity(spec, task, fold.name, seed, method_cls,
                                           method_cfg, clf_cfg, eval_cfg)
    if is_done(path) and not spec.force:
        log(f"[skip] {path} is done (use --force to redo it)")
        return read_cell(path)
    t0 = time.time()
    fe_cfg = task.frontend
    _check_training_split(spec, task, fold.name, method_cls, len(fold.train))  # before loading
    data, report = _load_data(spec, task, fold, seed, device, cache)
    f, f_info = get_model(spec, data, clf_cfg, cache, seed, log)
    dict_info = None
    if method_cls.needs_dictionary:
        data.dictionary, dict_info = get_dictionary(data, int(method_cfg["K"]), seed, cache,
                                                    method_cfg, log)
    _check_training_split(spec, task, fold.name, method_cls, len(data.train))  # after skips
    torch.manual_seed(seed)
    explainer: Explainer = method_cls(method_cfg, seed=seed, device=device)
    t_fit = time.time()
    explainer.fit(data, f if method_cls.posthoc else None)
    fit_s = time.time() - t_fit
    t_eval = time.time()
    result = Scorer(explainer, f, data, eval_cfg).run()
    eval_s = time.time() - t_eval
    t_san = time.time()
    if spec.sanity:
        result.metrics.update(_sanity(spec.sanity, data, f, explainer, method_cls, method_cfg,
                                      clf_cfg, eval_cfg, cache, seed, result.pairs, log))
    sanity_s = time.time() - t_san if spec.sanity else None
    metrics = {k: float(v) for k, v in result.metrics.items()}
    config = {**resolved, "config_hash": chash, "versions": versions(), "device": str(device),
              "dictionary": dict_info, "load_report": report.as_dict(),
              "classifier": {k: v for k, v in f_info.items() if k not in ("history", "identity")},
              "classifier_identity": f_info.get("identity"),
              "capabilities": sorted(method_cls.capabilities)}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    done = {"wall_s": time.time() - t0, "fit_s": fit_s, "eval_s": eval_s, "sanity_s": sanity_s,
            "peak_rss_mb": peak, "device": str(device),
            "peak_cuda_mb": (torch.cuda.max_memory_allocated() / 2**20
                             if device.type == "cuda" else None),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S")}
    history = pd.DataFrame(explainer.history) if explainer.history else None
    write_cell(path, config=config, metrics=metrics, per_sample=result.per_sample,
               pairs=result.pairs, history=history, listen=result.listen,
               sample_rate=fe_cfg.sample_rate, done=done, relevance=result.relevance,
               tables={"classifier_history.csv": pd.DataFrame(f_info.get("history") or [])})
    log(f"[done] {path} in {done['wall_s']:.1f} s")
    return read_cell(path)


def _sanity(stages: str, data: TaskData, f: torch.nn.Module, explainer: Explainer, method_cls,
            method_cfg: dict, clf_cfg: dict, eval_cfg: EvalConfig, cache: Path, seed: int,
            pairs: pd.DataFrame, log) -> dict[str, float]:
    """Adebayo et al. (2018) sanity checks (``metrics/sanity.py``): the method refitted
    against f with its layers re-initialised from the top (by-design methods: its own model's
    parameters re-initialised, no refit), and against an f trained on permuted labels (cached
    like f); Spearman of the relevance maps of the same pairs. Adds ``sanity_*`` columns to
    ``pairs``."""
    from dataclasses import replace

    from .metrics import sanity as san

    if "explain" not in method_cls.capabilities:
        log("[sanity] the method explains nothing: no sanity check")
        return {}

    def refit(model: torch.nn.Module | None, d: TaskData) -> Explainer:
        torch.manual_seed(seed)
        ex = method_cls(method_cfg, seed=seed, device=data.device)
        ex.fit(d, model if method_cls.posthoc else None)
        return ex

    g = torch.Generator().manual_seed(seed + 4242)
    perm = torch.randperm(len(data.train), generator=g)
    train = replace(data.train, target=data.train.target[perm], mask=data.train.mask[perm])
    permuted = replace(data, train=train)
    only = None if stages == "all" else [s for s in stages.split(",") if s]
    fitted: dict[str, Explainer] = {}
    if method_cls.posthoc:
        for name, model in san.cascade(f, seed, only):
            log(f"[sanity] refitting against f randomised down to {name}")
            fitted[f"param_rand_spearman@{name}"] = refit(model, data)
        if getattr(f, "trainable", True):
            # f on permuted labels: a distinct cache key; the last epoch (valid labels are real)
            f_perm, _ = get_classifier(permuted, {**clf_cfg, "select": "last",
                                                  "labels": "permuted"}, cache, seed, log=log)
            fitted["label_rand_spearman"] = refit(
                ExplainedModel(f_perm, data.frontend, data.task), permuted)
        else:
            log("[sanity] the classifier is pretrained (not trained by the engine): no label "
                "randomisation")
    else:
        own = copy.deepcopy(explainer)
        if san.explainer_modules(own):
            san.randomise_(san.explainer_modules(own), seed + 1000)
            fitted["param_rand_spearman@all"] = own
        else:
            log("[sanity] the by-design method holds no nn.Module: no parameter randomisation")
        log("[sanity] refitting the by-design model on permuted labels")
        fitted["label_rand_spearman"] = refit(None, permuted)
    cols: dict[str, list[Tensor]] = {k: [] for k in fitted}
    scorer = Scorer(explainer, f, data, eval_cfg)
    with torch.inference_mode():
        for sub, classes in scorer.pair_batches():
            ref = san.relevance_map(explainer.explain(sub, classes))
            for key, ex in fitted.items():
                rnd = san.relevance_map(ex.explain(sub, classes))
                cols[key].append(san.map_similarity(ref, rnd).cpu())
    values = {k: torch.cat(v).numpy() if v else np.zeros(0) for k, v in cols.items()}
    for key, v in values.items():
        if len(v) == len(pairs):
            pairs[f"sanity_{key}"] = v
    return san.summarize(values)


def summarize(records: list[dict[str, Any]]) -> pd.DataFrame:
    """mean ± std (and n) of each metric over cells."""
    rows = pd.DataFrame([r["metrics"] for r in records])
    keep = [c for c in rows.columns if not c.startswith("classwise/")]
    agg = rows[keep].agg(["mean", "std", "count"]).T
    agg.columns = ["mean", "std", "n"]
    return agg.fillna({"std": 0.0})
