"""The one scorer: every method is evaluated by the same code path on the test split.

From the declared capabilities it computes fidelity of a surrogate to f (paper IV-C),
classification of a by-design model against the labels, and, for methods that decompose the
input, faithfulness FF_x = f(x)_c − f(x₂)_c with x₂ = INV(X − Σ_{k∈L} X_k, P_x) (eq. 7)
at every τ, the random baseline that removes as many components from outside L as L holds on
average (paper IV-C; per-sample matching and the authors' draw-from-all are options), the
Wilcoxon test of FF against that baseline, class-wise FF medians, and on tasks with true
sources the ground-truth overlap of the interpretation x_int = INV(Σ_{k∈L} X_k, P_x).
f(x) is taken on the original clip's log-mel and f(x₂) on the re-synthesised and re-analysed
waveform, as in the authors' code. For a by-design method (``posthoc = False`` with the
``predict`` capability) the model explained is its own predictor g, so the pairs and FF use
g's probabilities; f's rows (``classifier/*``) are then the BASE-f reference of Table VIII.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from .progress import bar as progress_bar

from .api import Batch, Explainer, TaskData
from .classifier import probabilities
from .metrics import curves as cvm
from .metrics import faithfulness as ffm
from .metrics import removal as rmv
from .metrics.base import PairContext, PairFamily
from .metrics import fidelity as fid
from .metrics import groundtruth as gt
from .metrics import lmac as lmm
from .fastforward import foldable, inference_copy
from .model import classifier_input
from .train import BatchLoader

TAUS: tuple[float, ...] = (0.9, 0.7, 0.5, 0.3, 0.1)
BUDGETS = cvm.BUDGETS


@dataclass
class EvalConfig:
    taus: tuple[float, ...] = TAUS
    # multilabel binarisation of f's (or a by-design model's) outputs: fidelity "ground truth",
    # FF pairs, F1 predictions. A float (one threshold for every class), 'per_class' (F1-optimal
    # per class fitted on the TRAINING split, ``fid.fit_class_thresholds``) or one per class
    threshold: float | str | tuple[float, ...] = 0.5
    baseline_count: str = "mean"    # 'mean' (paper), 'per_sample', or an integer (code)
    baseline_pool: str = "outside"  # 'outside' L (paper) or 'all' components (code)
    listen: int = 4                 # test pairs written as WAV interpretations
    listen_tau: float = 0.1
    batch_size: int = 16
    # explanations kept for the random-baseline pass, spilled to a temporary folder on disk
    # (never held in memory for the whole split); beyond this many bytes they are recomputed
    keep_bytes: float = 1.5e9
    # memory bounds: at most ``pair_batch`` (clip, class) pairs are explained and scored
    # together (default: ``batch_size``; the random draws of the baselines follow these groups,
    # so a set value is part of the cell's identity), and at most ``forward_batch`` modified
    # inputs go through the explained model in one forward pass (changes nothing but float
    # reduction order)
    pair_batch: int | None = None
    forward_batch: int = 32
    seed: int = 0
    removal: str = "subtract"       # operator of FF and its baselines: 'subtract' (paper) | 'fill'
    curve_removal: str = "fill"     # operator of deletion / insertion curves (metrics/removal.py)
    fill_quantile: float = 0.1      # background level of 'fill': this quantile over frames per bin
    budgets: tuple[float, ...] = BUDGETS  # log1p-mass shares of the curves
    curve_draws: int = 2            # random orders per pair (curves' baseline); 0 = none
    baseline_unmatched: str = "nan"  # count baseline short of components: 'nan' | 'cap' (old)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def identity(self) -> dict[str, Any]:
        """The settings that define a cell's results (its hash): ``forward_batch`` never
        (it only bounds memory), ``pair_batch`` where it is set (cells hashed before it
        existed keep their hash; on a multiclass task the default groups are the batches
        they were)."""
        out = {k: v for k, v in self.__dict__.items() if k != "forward_batch"}
        if out["pair_batch"] is None:
            del out["pair_batch"]
        return out


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_sample: pd.DataFrame
    pairs: pd.DataFrame
    listen: list[dict[str, Any]] = field(default_factory=list)
    relevance: np.ndarray | None = None  # (n_pairs, K), rows aligned with ``pairs``


def _label_metrics(prefix: str, probs: np.ndarray, target: np.ndarray, mask: np.ndarray,
                   kind: str, threshold: float | np.ndarray, variants: tuple[str, ...] = ()
                   ) -> dict[str, float]:
    """Classification metrics of probabilities against labels (task's official ones). A task
    whose official evaluation computes AUPRC its own way declares it in ``metric_variants``
    (``"auprc_dcase"``: the DCASE 2020 task 5 evaluation code) and gets it under its own name.
    ``threshold`` (scalar or one per class) binarises the predictions of the F1."""
    out: dict[str, float] = {}
    if kind == "multiclass":
        truth = torch.from_numpy(target.argmax(1))
        p = torch.from_numpy(probs)
        out[f"{prefix}/accuracy_top1"] = fid.topk_accuracy(p, truth, 1)
        out[f"{prefix}/accuracy_top5"] = fid.topk_accuracy(p, truth, min(5, probs.shape[1]))
        return out
    y = target > 0.5
    ap = fid.average_precision_macro_micro(y, probs, mask)
    out[f"{prefix}/macro_auprc"], out[f"{prefix}/micro_auprc"] = ap["macro"], ap["micro"]
    out[f"{prefix}/weighted_f1"] = fid.weighted_f1_openmic(y, probs >= threshold, mask)["mean"]
    if "auprc_dcase" in variants:
        dc = fid.auprc_dcase(y, probs)
        out[f"{prefix}/macro_auprc_dcase"], out[f"{prefix}/micro_auprc_dcase"] = dc["macro"], dc["micro"]
        out[f"{prefix}/micro_f1_dcase"] = dc["micro_f1"]
    return out


def official_metrics(task, metrics: dict[str, float]) -> dict[str, float]:
    """``official/<task.official_metric>`` for the model that predicts the labels.

    Only a method's own predictor (``classification/*``: by-design models, and post-hoc
    interpreters used as predictors) gets an ``official/`` value; f's score stays under
    ``classifier/`` alone, so post-hoc rows never show f's number as if it were theirs and
    f's official value appears once per cell, at the classifier level. A task whose official
    evaluation computes a variant declares it in ``official_source`` (SONYC-UST:
    ``macro_auprc_dcase``, the DCASE 2020 evaluation code's AUPRC)."""
    source = getattr(task, "official_source", None) or task.official_metric
    key = f"classification/{source}"
    return {f"official/{task.official_metric}": metrics[key]} if key in metrics else {}


class Scorer:
    """Evaluates one fitted explainer against one classifier on one split."""

    def __init__(self, explainer: Explainer, classifier: torch.nn.Module, data: TaskData,
                 config: EvalConfig | None = None, families: list[PairFamily] | None = None
                 ) -> None:
        self.ex, self.f, self.data = explainer, classifier.eval(), data
        self._f_fast: torch.nn.Module | None = None
        self._group_batch: list[int] = []  # the loader batch of every pass-1 group, in order
        self.cfg = config or EvalConfig()
        self.kind = data.task.kind
        self.loader = BatchLoader(data.test, data.frontend, self.cfg.batch_size,
                                  device=data.device, with_phase=True,
                                  with_sources=bool(getattr(explainer, "needs_sources", False)))
        self.caps = set(explainer.capabilities)
        self._thr: dict[str, np.ndarray] | None = None
        cfg = self.cfg
        for op in (cfg.removal, cfg.curve_removal):
            if op not in rmv.REMOVALS:
                raise ValueError(f"eval removal operator must be one of {rmv.REMOVALS}, not {op!r}")
        if cfg.baseline_unmatched not in ("nan", "cap"):
            raise ValueError("eval.baseline_unmatched must be 'nan' or 'cap', "
                             f"not {cfg.baseline_unmatched!r}")
        # metric families run on every batch of explained pairs (metrics/base.PairFamily);
        # further families (e.g. L-MAC) are appended here or passed as ``families``
        self.families: list[PairFamily] = [
            ffm.FaithfulnessFamily(tuple(cfg.taus), cfg.removal, cfg.fill_quantile),
            cvm.CurvesFamily(tuple(cfg.budgets), int(cfg.curve_draws), cfg.curve_removal,
                             cfg.fill_quantile),
        ] + list(families or ())

    # -- helpers --------------------------------------------------------------------------
    @property
    def explains_own_model(self) -> bool:
        return not self.ex.posthoc and "predict" in self.caps

    @property
    def f_fast(self) -> torch.nn.Module:
        """The inference copy of f (``fastforward.inference_copy``: BN folded, strided pools,
        channels-last; the same function up to float rounding), made once, on first use. Every
        forward pass of the scorer, f(x) and f(x₂) alike, goes through it, so FF's difference
        compares one function with itself; a network with nothing to fold (``foldable``) or
        that cannot be copied is used as it is."""
        if self._f_fast is None:
            self._f_fast = inference_copy(self.f) if foldable(self.f) else self.f
        return self._f_fast

    def _f_probs(self, x: Tensor) -> Tensor:
        """f's probabilities on its own input ``x`` (``ExplainedModel.probs``; a bare log-mel
        network gets the task's softmax / sigmoid)."""
        f = self.f_fast
        own = getattr(f, "probs", None)
        return own(x) if callable(own) else probabilities(f(x), self.kind)

    def _f_probs_batch(self, batch: Batch) -> Tensor:
        return self._f_probs(classifier_input(self.f, batch))

    def _f_input_of_wave(self, wave: Tensor) -> Tensor:
        own = getattr(self.f, "input_from_wave", None)
        return own(wave) if callable(own) else self.data.frontend.logmel(wave)

    def _model_probs(self, batch: Batch) -> Tensor:
        """Probabilities of the model being explained: f, or g for by-design methods."""
        if self.explains_own_model:
            return self.ex.predict(batch).float()
        return self._f_probs_batch(batch)

    def _pairs(self, f_prob: Tensor) -> tuple[Tensor, Tensor]:
        """(row, class) pairs explained: argmax for multiclass, every class above its
        threshold for multilabel (authors' SONYC code)."""
        if self.kind == "multiclass":
            return torch.arange(f_prob.shape[0], device=f_prob.device), f_prob.argmax(1)
        key = "g" if self.explains_own_model else "f"
        thr = torch.as_tensor(self.thresholds()[key], dtype=f_prob.dtype, device=f_prob.device)
        rows, classes = torch.nonzero(f_prob > thr, as_tuple=True)
        return rows, classes

    # -- multilabel decision thresholds -----------------------------------------------------
    def thresholds(self) -> dict[str, np.ndarray]:
        """``eval.threshold`` resolved to one threshold per class (C,), once: ``"f"`` binarises
        f's outputs (fidelity ground truth, post-hoc FF pairs, f's F1), ``"g"`` those of the
        method's own predictor (by-design FF pairs, ``classification/*`` F1; equal to f's
        unless ``per_class``). ``per_class``: F1-optimal thresholds of each model fitted on the
        **training** split against its labels (``fid.fit_class_thresholds``, the authors'
        ``compute_multilabel_threshold``); the test split is never used to choose them."""
        if self._thr is not None:
            return self._thr
        task, t = self.data.task, self.cfg.threshold
        C = task.num_classes
        if isinstance(t, str) and t == "per_class":
            thr = self._fit_thresholds_on_train()
        elif isinstance(t, (tuple, list)):
            if len(t) != C:
                raise ValueError(f"eval.threshold lists {len(t)} values but task {task.name!r} "
                                 f"has {C} classes ({', '.join(task.classes)})")
            vec = np.asarray(t, dtype=np.float64)
            thr = {"f": vec, "g": vec}
        elif isinstance(t, (int, float)) and not isinstance(t, bool):
            vec = np.full(C, float(t))
            thr = {"f": vec, "g": vec}
        else:
            raise ValueError(f"eval.threshold must be a float, 'per_class' or one float per "
                             f"class, not {t!r}")
        self._thr = thr
        return thr

    @torch.inference_mode()
    def _fit_thresholds_on_train(self) -> dict[str, np.ndarray]:
        """F1-optimal per-class thresholds of f (and of g when the method predicts) on the
        outputs for the training split (one pass over it, features per batch)."""
        split = self.data.train
        loader = BatchLoader(split, self.data.frontend, self.cfg.batch_size,
                             device=self.data.device, cache_bytes=0)
        fp, gp = [], []
        for batch in loader:
            fp.append(self._f_probs_batch(batch).float().cpu())
            if "predict" in self.caps:
                gp.append(self.ex.predict(batch).float().cpu())
        y, mask = split.target.numpy() > 0.5, split.mask.numpy()
        f_thr = fid.fit_class_thresholds(y, torch.cat(fp).numpy(), mask)
        g_thr = fid.fit_class_thresholds(y, torch.cat(gp).numpy(), mask) if gp else f_thr
        return {"f": f_thr, "g": g_thr}

    @staticmethod
    def _subset(batch: Batch, rows: Tensor) -> Batch:
        src = None if batch.sources is None else batch.sources[rows]
        src_cls = None if batch.source_classes is None else batch.source_classes[rows]
        return Batch(*(getattr(batch, n)[rows] for n in
                       ("wave", "X", "phase", "logmel", "target", "mask", "index")),
                     sources=src, source_classes=src_cls)

    def _probs_of(self, sub: Batch, X2: Tensor, rows: Tensor) -> Tensor:
        """The explained model's (m, C) probabilities on x₂ = INV(X2, P) re-analysed, for m
        modified spectrograms X2 of rows ``rows`` of ``sub``: batched forward passes of at most
        ``eval.forward_batch`` inputs (resynthesis, re-analysis and f's activations of one
        chunk at a time, so memory does not grow with the number of pairs)."""
        step = max(1, int(self.cfg.forward_batch))
        rows = rows.to(sub.X.device)  # once, not per chunk (a no-op on the device)
        if len(X2) <= step:
            return self._probs_chunk(sub, X2, rows)
        return torch.cat([self._probs_chunk(sub, X2[i:i + step], rows[i:i + step])
                          for i in range(0, len(X2), step)])

    def _probs_chunk(self, sub: Batch, X2: Tensor, rows: Tensor) -> Tensor:
        fe = self.data.frontend
        wave = fe.invert(X2, sub.phase[rows], sub.wave.shape[-1])
        if not self.explains_own_model:  # f needs only the log-mel (~20 % of a pass saved)
            return self._f_probs(self._f_input_of_wave(wave))
        X, phase, logmel = fe.analyze(wave)
        return self._model_probs(Batch(wave, X, phase, logmel, sub.target[rows], sub.mask[rows],
                                       sub.index[rows]))

    def _removed_prob(self, sub: Batch, removed: Tensor, classes: Tensor) -> Tensor:
        """f's class probability after removing ``removed`` with the FF operator."""
        X2 = rmv.remove(sub.X, removed, self.cfg.removal, self.cfg.fill_quantile)
        p = self._probs_of(sub, X2, torch.arange(len(classes), device=sub.X.device))
        return p[torch.arange(len(classes), device=p.device), classes]

    @property
    def _count_in_pass1(self) -> bool:
        """A count that needs no whole-set mean is drawn in the first pass (nothing is kept)."""
        return self.cfg.baseline_count not in ("mean", "class_mean")

    # -- main -----------------------------------------------------------------------------
    @torch.inference_mode()
    def run(self) -> EvalResult:
        cfg = self.cfg
        explain = "explain" in self.caps
        f_all, s_all, g_all = [], [], []
        st = _PassState(listen_left=cfg.listen,
                        gen=torch.Generator().manual_seed(cfg.seed + 104729))  # pass-1 draws
        with _Spill(cfg.keep_bytes, self.data.cache_dir, self.data.frontend) as kept:
            self._group_batch = []
            for b, batch in enumerate(progress_bar(self.loader, desc="evaluating",
                                                   leave=False)):
                f_prob = self._f_probs_batch(batch)
                f_all.append(f_prob.cpu())
                if "surrogate" in self.caps:
                    s_all.append(self.ex.surrogate_predict(batch).float().cpu())
                if "predict" in self.caps:
                    g_all.append(self.ex.predict(batch).float().cpu())
                if not explain:
                    continue
                m_prob = g_all[-1].to(f_prob.device) if self.explains_own_model else f_prob
                rows, classes = self._pairs(m_prob)
                for r, c in self._chunks(rows, classes):
                    self._group_batch.append(b)
                    self._score_pairs(batch, r, c, m_prob, st, kept)
            f_probs = torch.cat(f_all).numpy()
            pairs = pd.DataFrame(st.pair_rows)
            if explain and len(pairs) and not self._count_in_pass1:
                self._random_baseline(pairs, torch.cat(st.sel_all, 1), kept)
        if st.n_degenerate:
            warnings.warn(f"{type(self.ex).__name__}: {st.n_degenerate} of {len(pairs)} explained "
                          "pairs have relevances that are NaN or all equal; their deletion / "
                          "insertion curves (and FF where NaN) are NaN and leave every median "
                          "and test (faithfulness/n_degenerate)", RuntimeWarning, stacklevel=2)
        metrics = self._metrics(f_probs, s_all, g_all, pairs)
        if explain and len(pairs):
            metrics["faithfulness/n_degenerate"] = float(st.n_degenerate)
            for fam in self.families:
                metrics.update(fam.summarise(pairs))
        per_sample = self._per_sample(f_probs, s_all, g_all)
        relevance = torch.cat(st.rel_all).numpy() if st.rel_all else None
        return EvalResult(metrics, per_sample, pairs, st.listen, relevance)

    def _chunks(self, rows: Tensor, classes: Tensor):
        """The batch's explained pairs in groups of at most ``eval.pair_batch`` (default
        ``eval.batch_size``): multilabel clips bring several pairs each, up to C per clip; the
        pairs of one clip share its STFT and f(x), computed once per batch."""
        step = max(1, int(self.cfg.pair_batch or self.cfg.batch_size))
        for i in range(0, len(rows), step):
            yield rows[i:i + step], classes[i:i + step]

    def _score_pairs(self, batch: Batch, rows: Tensor, classes: Tensor, m_prob: Tensor,
                     st: "_PassState", kept: "_Spill") -> None:
        """Pass 1 on one group of pairs: explain, every metric family, FF's selections, the
        ground truth, L-MAC, the listening examples; the explanation goes to ``kept`` when
        the count baseline needs the whole set's mean |L| (second pass)."""
        cfg, taus, split = self.cfg, self.cfg.taus, self.data.test
        has_sources = split.sources is not None
        sub = self._subset(batch, rows)
        e = self.ex.explain(sub, classes)
        p0 = m_prob[rows, classes]
        st.rel_all.append(e.relevance.float().cpu())
        ctx = PairContext(sub, e, classes, m_prob[rows],
                          lambda X2, r, sub=sub: self._probs_of(sub, X2, r), st.gen,
                          cvm.degenerate_rows(e.relevance))
        st.n_degenerate += int(ctx.degenerate.sum())
        cols: dict[str, Tensor] = {}
        for fam in self.families:
            cols.update(fam.pair_columns(ctx))
        sels = []
        for tau in taus:
            sel = ffm.select_relevant(e.relevance, tau)
            sels.append(sel.cpu())
            listen_here = tau == cfg.listen_tau and st.listen_left > 0
            if has_sources or listen_here:
                keep = e.mixture(sel)
            if has_sources:
                cols.update(self._groundtruth(sub, rows, classes, keep, tau, batch))
            if listen_here:
                got = self._listen(sub, e, keep, classes, st.listen_left)
                st.listen.extend(got)
                st.listen_left -= len(got)
        cols.update(self._lmac(sub, e, classes, m_prob[rows]))
        st.sel_all.append(torch.stack(sels, 0))  # (n_tau, n, K)
        if self._count_in_pass1:
            cols.update(self._count_baseline(sub, e, classes, p0, torch.stack(sels, 0), st.gen))
        else:
            kept.append((sub, e, classes, p0))
        ids = [split.ids[int(i)] for i in sub.index.cpu()]
        cl = classes.cpu().tolist()
        p0_host = p0.float().cpu().tolist()
        base = {k: v.float().cpu().numpy() for k, v in cols.items()}
        for j in range(len(ids)):
            row = {"id": ids[j], "class": self.data.task.classes[cl[j]], "class_index": cl[j],
                   "f_prob": p0_host[j]}
            row.update({k: float(v[j]) for k, v in base.items()})
            st.pair_rows.append(row)

    def _groundtruth(self, sub: Batch, rows: Tensor, classes: Tensor, keep: Tensor,
                     tau: float, batch: Batch) -> dict[str, Tensor]:
        """Overlap of x_int with the true source of the explained class (synthetic tasks)."""
        split = self.data.test
        idx = sub.index.cpu()
        src = split.sources[idx].to(keep.device)  # (n, E, N)
        sc = split.source_classes[idx].to(keep.device)
        match = (sc == classes.unsqueeze(1)).unsqueeze(-1)
        source = (src * match).sum(1)
        # distractors of the explained class: every other real event (synth-mix's distractor
        # pool, or in synth-multilabel the other classes' events); -1 is padding
        other = ((sc != classes.unsqueeze(1)) & (sc != -1)).unsqueeze(-1)
        has_dis = other.squeeze(-1).any(1)
        distractor = (src * other).sum(1)
        fe = self.data.frontend
        x_int = fe.invert(keep, sub.phase, sub.wave.shape[-1])
        # nothing selected (no interpretation to score), or the explained class has no event
        # in the clip (f or a multilabel threshold picked an absent class: no ground truth)
        empty = (keep.flatten(1).amax(1) <= 0) | ~match.squeeze(-1).any(1)
        nan = torch.full_like(empty, float("nan"), dtype=keep.dtype)
        sdri = gt.si_sdr_improvement(x_int, sub.wave, source)
        out = {f"si_sdri@{tau}": torch.where(empty, nan, sdri)}
        src_mag = fe.stft(source).abs()
        mix_mag = torch.expm1(sub.X)
        oracle = gt.oracle_mask(src_mag, mix_mag)
        prec = gt.mask_energy_precision(torch.expm1(keep), oracle)
        out[f"energy_precision@{tau}"] = torch.where(empty, nan, prec)
        # the same share in the log1p domain, where Algorithm 1's soft masks are additive
        # (sum_k X_k = X): does the mask X_int / X put its weight on the source's bins?
        m = oracle.to(keep.dtype)
        mass = (keep * m).sum((1, 2)) / keep.sum((1, 2)).clamp_min(1e-12)
        out[f"mask_precision@{tau}"] = torch.where(empty, nan, mass)
        # CLEVR-XAI rank accuracy (the same in log1p and linear energy: rank-based) and
        # Bolaños et al.'s time localisation, on the same map Σ_{k∈L} X_k
        out[f"rank_accuracy@{tau}"] = torch.where(empty, nan, gt.relevance_rank_accuracy(keep, oracle))
        active = gt.active_frames(src_mag)
        out[f"time_auc@{tau}"] = torch.where(empty, nan, gt.roc_auc(keep.sum(1), active))
        if bool(has_dis.any()):
            dis_mask = gt.oracle_mask(fe.stft(distractor).abs(), mix_mag)
            bad = empty | ~has_dis
            out[f"distractor_share@{tau}"] = torch.where(
                bad, nan, gt.relevance_mass_accuracy(keep, dis_mask))
            out[f"distractor_energy_share@{tau}"] = torch.where(
                bad, nan, gt.relevance_mass_accuracy(torch.expm1(keep).double() ** 2, dis_mask))
            if tau == self.cfg.taus[0]:
                out["distractor_share_input"] = torch.where(
                    has_dis, gt.relevance_mass_accuracy(sub.X, dis_mask), nan)
        if tau == self.cfg.taus[0]:
            absent = ~match.squeeze(-1).any(1)
            out["energy_precision_input"] = torch.where(
                absent, nan, gt.mask_energy_precision(mix_mag, oracle).to(nan.dtype))
            out["mask_precision_input"] = torch.where(
                absent, nan, (sub.X * m).sum((1, 2)) / sub.X.sum((1, 2)).clamp_min(1e-12))
        return out

    def _lmac(self, sub: Batch, e, classes: Tensor, p: Tensor) -> dict[str, Tensor]:
        """L-MAC metrics per pair (``metrics/lmac.py``): the masked-in input at the listening
        threshold (Σ_{k∈L} X_k) and that of the soft mask, in one batched forward pass."""
        kept = e.mixture(ffm.select_relevant(e.relevance, self.cfg.listen_tau))
        soft_mask, soft_kept = lmm.soft_mask_of(e)
        n = len(classes)
        rows = torch.arange(n, device=sub.X.device).repeat(2)
        o = self._probs_of(sub, torch.cat([kept, soft_kept]), rows)
        thr: float | Tensor = 0.5  # multilabel: the per-class thresholds that chose the pairs
        if self.kind != "multiclass":
            thr = torch.as_tensor(self.thresholds()["g" if self.explains_own_model else "f"],
                                  dtype=p.dtype, device=p.device)
        out = lmm.pair_values(p, o[:n], classes, lmm.mask_of(kept, sub.X), self.kind, thr)
        out.update(lmm.pair_values(p, o[n:], classes, soft_mask, self.kind, thr,
                                   suffix="_soft"))
        return out

    def _listen(self, sub: Batch, e, keep: Tensor, classes: Tensor, n: int) -> list[dict]:
        """WAVs of the first ``n`` rows: input, interpretation x_int (``keep`` = Σ_{k∈L} X_k)
        and the three most relevant components x_k (Algorithm 1)."""
        fe, N = self.data.frontend, sub.wave.shape[-1]
        n = min(n, len(sub))
        x_int = fe.invert(keep[:n], sub.phase[:n], N)
        order = torch.argsort(e.relevance, dim=1, descending=True)
        comps = []
        for rank in range(min(3, e.relevance.shape[1])):
            one = torch.zeros_like(e.relevance, dtype=torch.bool)
            one.scatter_(1, order[:, rank:rank + 1], True)
            comps.append(fe.invert(e.mixture(one)[:n], sub.phase[:n], N).cpu().numpy())
        out = []
        for j in range(n):
            item = {"id": self.data.test.ids[int(sub.index[j])],
                    "class": self.data.task.classes[int(classes[j])],
                    "input": sub.wave[j].cpu().numpy(),
                    "interpretation": x_int[j].cpu().numpy()}
            for rank, wave in enumerate(comps):
                item[f"component{int(order[j, rank])}"] = wave[j]
            out.append(item)
        return out

    def _groups(self, batches: set[int] | None = None):
        """(batch, rows, classes, model probabilities) of every pass-1 group of pairs, in the
        order of ``pairs``; with ``batches``, only the groups of those loader batches (the
        others are not loaded)."""
        if batches is None:
            loaded = iter(self.loader)
        else:
            loaded = (self.loader.batch(idx) for b, idx in
                      enumerate(self.loader.batch_indices()) if b in batches)
        for batch in loaded:
            m_prob = self._model_probs(batch)
            rows, classes = self._pairs(m_prob)
            for r, c in self._chunks(rows, classes):
                yield batch, r, c, m_prob

    def pair_batches(self):
        """(sub-batch, classes) of every explained pair, in the groups of pass 1 (used by the
        sanity checks to re-explain the same pairs)."""
        for batch, r, c, _ in self._groups():
            yield self._subset(batch, r), c

    def _recomputed(self, need: set[int]):
        """For every pass-1 group in order: the item (sub, explanation, classes, p0) again,
        recomputed, where its index is in ``need`` (explain is deterministic, so it gives the
        same components), else None (not explained again). Only the loader batches that hold
        a group in ``need`` are loaded and passed through the model again (pass 1 recorded
        each group's batch), not the whole split."""
        load = {self._group_batch[i] for i in need}
        again = self._groups(load)
        for i, b in enumerate(self._group_batch):
            if b not in load:
                yield None
                continue
            batch, r, c, m_prob = next(again)  # the same groups as pass 1, in order
            if i in need:
                sub = self._subset(batch, r)
                yield sub, self.ex.explain(sub, c), c, m_prob[r, c]
            else:
                yield None

    def _count_baseline(self, sub: Batch, e, classes: Tensor, p0: Tensor, sels: Tensor,
                        g: torch.Generator, counts: list[Tensor] | None = None
                        ) -> dict[str, Tensor]:
        """The paper's count-matched random baseline for one batch: ``counts`` components drawn
        from outside L (or from all, ``eval.baseline_pool=all``). A pair whose pool holds fewer
        than the count is NaN (``eval.baseline_unmatched=nan``, default) or removes what there
        is (``cap``, the suite's earlier behaviour)."""
        cfg = self.cfg
        if counts is None:
            counts = [ffm.baseline_counts(sels[i], cfg.baseline_count) for i in range(len(sels))]
        dev = e.relevance.device
        mass = e.component_mass()
        total = sub.X.flatten(1).sum(1).clamp_min(1e-12)
        nan = torch.tensor(float("nan"), device=dev)
        cols: dict[str, Tensor] = {}
        for i, tau in enumerate(cfg.taus):
            sel, cnt = sels[i].to(dev), counts[i].to(dev)
            if cfg.baseline_pool == "outside":
                rnd = ffm.random_outside(sel, cnt, g)
            else:
                rnd = ffm.random_any(len(sel), sel.shape[1], cnt, g).to(dev)
            ok = ffm.count_matchable(sel, cnt, cfg.baseline_pool)
            ff = ffm.ff_values(p0, self._removed_prob(sub, e.mixture(rnd), classes))
            if cfg.baseline_unmatched == "nan":
                ff = torch.where(ok, ff, nan)
            cols[f"random_ff@{tau}"] = ff
            # components actually removed (all there are in the pool where it is short)
            cols[f"random_n@{tau}"] = rnd.sum(1).float()
            cols[f"random_share@{tau}"] = (mass * rnd.to(mass.dtype)).sum(1) / total
        return cols

    def _random_baseline(self, pairs: pd.DataFrame, sels: Tensor, kept: "_Spill") -> None:
        """Second pass (count modes that need the whole set's mean |L|): remove as many random
        components as L holds on average, from outside L."""
        cfg, taus = self.cfg, self.cfg.taus
        counts = [ffm.baseline_counts(sels[i], cfg.baseline_count,
                                      torch.tensor(pairs["class_index"].to_numpy()))
                  for i in range(len(taus))]
        g = torch.Generator().manual_seed(cfg.seed + 7919)
        out: dict[str, list[Tensor]] = {}
        offset = 0
        items = kept.items(self._recomputed)
        for sub, e, classes, p0 in progress_bar(items, total=len(kept), desc="random baseline",
                                                leave=False):
            n = len(classes)
            cols = self._count_baseline(sub, e, classes, p0, sels[:, offset:offset + n], g,
                                        [c[offset:offset + n] for c in counts])
            for k, v in cols.items():
                out.setdefault(k, []).append(v.float().cpu())
            offset += n
        for k, v in out.items():
            pairs[k] = torch.cat(v).numpy()

    def _metrics(self, f_probs: np.ndarray, s_all, g_all, pairs: pd.DataFrame
                 ) -> dict[str, float]:
        cfg, task = self.cfg, self.data.task
        split = self.data.test
        target, mask = split.target.numpy(), split.mask.numpy()
        m: dict[str, float] = {"n_test": float(len(split))}
        multilabel = self.kind != "multiclass"
        thr = self.thresholds() if multilabel else {"f": 0.5, "g": 0.5}
        exclude = [task.classes.index(c) for c in task.classwise_exclude if c in task.classes]
        m.update(_label_metrics("classifier", f_probs, target, mask, self.kind, thr["f"],
                                 task.metric_variants))
        if s_all:
            s = torch.cat(s_all).numpy()
            if not multilabel:
                ref = torch.from_numpy(f_probs.argmax(1))
                m["fidelity/top1"] = fid.topk_accuracy(torch.from_numpy(s), ref, 1)
                m["fidelity/top5"] = fid.topk_accuracy(torch.from_numpy(s), ref,
                                                       min(5, s.shape[1]))
            else:
                # the task's excluded classes (SONYC: non-machinery-impact, as the paper) are
                # left out of multilabel fidelity; the thresholds are f's, one per class
                keep = np.setdiff1d(np.arange(task.num_classes), exclude)
                y = (f_probs > thr["f"])[:, keep]
                sk = s[:, keep]
                ap = fid.average_precision_macro_micro(y, sk, None)
                m["fidelity/macro_auprc"], m["fidelity/micro_auprc"] = ap["macro"], ap["micro"]
                p11 = fid.auprc_11pt(y, sk)
                m["fidelity/macro_auprc_11pt"] = p11["macro"]
                m["fidelity/micro_auprc_11pt"] = p11["micro"]
                m["fidelity/max_f1"] = p11["max_f1"]
                m["fidelity/weighted_f1"] = fid.weighted_f1_openmic(
                    y, sk >= thr["f"][keep], None)["mean"]
        if g_all:
            g = torch.cat(g_all).numpy()
            m.update(_label_metrics("classification", g, target, mask, self.kind,
                                     thr["g"], task.metric_variants))
        m.update(official_metrics(task, m))
        if multilabel:  # the decision thresholds used (per class), for the record
            for c, name in enumerate(task.classes):
                m[f"threshold/f/{name}"] = float(thr["f"][c])
                if g_all:
                    m[f"threshold/g/{name}"] = float(thr["g"][c])
        if len(pairs):
            m["faithfulness/n_pairs"] = float(len(pairs))
            m.update(lmm.summarize(pairs))
            for tau in cfg.taus:  # FF summaries: the families' ``summarise`` (run)
                ff = pairs[f"ff@{tau}"].to_numpy()
                rnd = pairs[f"random_ff@{tau}"].to_numpy()
                cw = ffm.classwise_median(ff, pairs["class_index"].to_numpy(), task.num_classes,
                                          exclude=exclude)
                cwr = ffm.classwise_median(rnd, pairs["class_index"].to_numpy(),
                                           task.num_classes, exclude=exclude)
                if tau == cfg.taus[-1]:
                    for c, name in enumerate(task.classes):
                        if not np.isnan(cw[c]):
                            m[f"classwise/ff_median@{tau}/{name}"] = float(cw[c])
                            m[f"classwise/random_ff_median@{tau}/{name}"] = float(cwr[c])
                if f"si_sdri@{tau}" in pairs:
                    m[f"groundtruth/si_sdri_median@{tau}"] = float(pairs[f"si_sdri@{tau}"].median())
                    m[f"groundtruth/energy_precision_mean@{tau}"] = float(
                        pairs[f"energy_precision@{tau}"].mean())
                    m[f"groundtruth/mask_precision_mean@{tau}"] = float(
                        pairs[f"mask_precision@{tau}"].mean())
                    for col in ("rank_accuracy", "time_auc", "distractor_share",
                                "distractor_energy_share"):
                        if f"{col}@{tau}" in pairs and pairs[f"{col}@{tau}"].notna().any():
                            m[f"groundtruth/{col}_mean@{tau}"] = float(
                                pairs[f"{col}@{tau}"].mean())
            if "energy_precision_input" in pairs:
                m["groundtruth/energy_precision_input_mean"] = float(
                    pairs["energy_precision_input"].mean())
                m["groundtruth/mask_precision_input_mean"] = float(
                    pairs["mask_precision_input"].mean())
            if "distractor_share_input" in pairs and pairs["distractor_share_input"].notna().any():
                m["groundtruth/distractor_share_input_mean"] = float(
                    pairs["distractor_share_input"].mean())
        return m

    def _per_sample(self, f_probs: np.ndarray, s_all, g_all) -> pd.DataFrame:
        split, task = self.data.test, self.data.task
        target = split.target.numpy()
        df = pd.DataFrame({"id": split.ids})
        names = np.asarray(task.classes)
        if self.kind == "multiclass":
            df["label"] = names[target.argmax(1)]
            df["f_pred"] = names[f_probs.argmax(1)]
            df["f_correct"] = (f_probs.argmax(1) == target.argmax(1)).astype(int)
            ref = torch.from_numpy(f_probs.argmax(1))
            if s_all:
                s = torch.cat(s_all)
                df["surrogate_pred"] = names[s.argmax(1).numpy()]
                df["fid_top1"] = fid.topk_hits(s, ref, 1).numpy().astype(int)
                df["fid_top5"] = fid.topk_hits(s, ref, min(5, s.shape[1])).numpy().astype(int)
            if g_all:
                g = torch.cat(g_all).numpy()
                df["pred"] = names[g.argmax(1)]
                df["correct"] = (g.argmax(1) == target.argmax(1)).astype(int)
        else:
            df["labels"] = [";".join(names[t > 0.5]) for t in target]
            f_thr = self.thresholds()["f"]
            df["f_pred"] = [";".join(names[p > f_thr]) for p in f_probs]
            mask = split.mask.numpy()
            for c, n in enumerate(names):
                df[f"f_prob/{n}"] = f_probs[:, c]
                df[f"label/{n}"] = (target[:, c] > 0.5).astype(int)
                df[f"mask/{n}"] = mask[:, c].astype(int)  # 0 = label not annotated (OpenMIC)
            if s_all:
                s = torch.cat(s_all).numpy()
                for c, n in enumerate(names):
                    df[f"surrogate_prob/{n}"] = s[:, c]
            if g_all:
                g = torch.cat(g_all).numpy()
                for c, n in enumerate(names):
                    df[f"prob/{n}"] = g[:, c]
        return df


@dataclass
class _PassState:
    """What pass 1 accumulates over the split: one small row per pair, no explanation."""
    listen_left: int
    gen: torch.Generator
    pair_rows: list[dict[str, Any]] = field(default_factory=list)
    rel_all: list[Tensor] = field(default_factory=list)
    sel_all: list[Tensor] = field(default_factory=list)
    listen: list[dict[str, Any]] = field(default_factory=list)
    n_degenerate: int = 0


class _Spill:
    """The pass-1 explanations the second pass needs, written one group at a time to a
    temporary folder (under the run's cache folder) and read back one at a time, so the
    scorer's memory is bounded by a group of pairs, not by the split. Once ``budget`` bytes
    are on disk the remaining groups are not stored: ``items`` recomputes them (and the
    stored ones are read back). The folder is removed on exit, also after an error."""

    def __init__(self, budget: float, base: str | None, frontend) -> None:
        self.budget, self.base, self.frontend = float(budget), base, frontend
        self.dir: str | None = None
        self.paths: list[str | None] = []
        self.used = 0.0

    def __enter__(self) -> "_Spill":
        return self

    def __exit__(self, *exc) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __len__(self) -> int:
        return len(self.paths)

    def append(self, item: tuple) -> None:
        sub, e, classes, p0 = item
        # the phase and the log-mel are recomputed from the waveform when read back (cheap,
        # deterministic): half of what a group would take on disk
        size = 4.0 * (sub.wave.numel() + 2 * sub.X.numel())
        if self.used + size > self.budget:
            self.paths.append(None)
            return
        if self.dir is None:
            base = self.base if self.base and os.path.isdir(self.base) else None
            self.dir = tempfile.mkdtemp(prefix=".scorer-spill-", dir=base)
        path = os.path.join(self.dir, f"{len(self.paths):06d}.pt")
        # fresh empty tensors: a [:0] view would still save its whole storage
        light = replace(sub, phase=sub.phase.new_empty(0), logmel=sub.logmel.new_empty(0))
        try:
            torch.save((light, e, classes, p0), path)
        except (OSError, RuntimeError) as exc:  # disk full: recompute instead, say so once
            if os.path.exists(path):
                os.remove(path)
            warnings.warn(f"could not spill explanations to {self.dir} ({exc}); the random "
                          "baseline recomputes them", RuntimeWarning, stacklevel=2)
            self.budget = self.used
            self.paths.append(None)
            return
        self.used += size
        self.paths.append(path)

    def items(self, recompute):
        """The stored groups in order; those not stored come from ``recompute(need)``, an
        iterator over every group that explains again only the indices in ``need``."""
        need = {i for i, p in enumerate(self.paths) if p is None}
        if not need:
            for path in self.paths:
                yield self._load(path)
            return
        for path, item in zip(self.paths, recompute(need)):
            yield item if path is None else self._load(path)

    def _load(self, path: str) -> tuple:
        sub, e, classes, p0 = torch.load(path, weights_only=False)
        _, phase, logmel = self.frontend.analyze(sub.wave)
        return replace(sub, phase=phase, logmel=logmel), e, classes, p0
