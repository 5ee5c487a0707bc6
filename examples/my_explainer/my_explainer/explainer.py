"""EnergyExplainer: a complete example of a user's explainer for audio-xai-bench.

It explains every prediction the same way: the clip is cut into ``n_segments`` equal time
segments (all frequencies), and each segment's relevance is its share of the clip's energy.
It knows nothing about the classifier, so it is a *baseline*: a method worth publishing should
beat it on faithfulness (``faithfulness/ff_median@tau`` against ``random_ff_median@tau``).

The contract of an explainer (``audio_xai_bench.api.Explainer``), capability by capability.
Shapes: B = rows of a batch, C = classes, F = STFT bins, T = STFT frames, M = mel bands,
N = samples, K = components of an explanation. Everything a method receives is a torch tensor
on the run's device.

``fit(data, classifier)``
    Called once per (fold, seed) cell before evaluation. ``data`` is an
    ``api.TaskData`` (``data.train / valid / test`` splits as ``SplitData``: ``wave`` (B, N),
    ``target`` (B, C), ``mask`` (B, C); ``data.frontend`` computes features; ``data.task``
    gives ``kind`` ('multiclass' | 'multilabel'), ``classes``, ``method_defaults``).
    ``classifier`` is the trained, frozen classifier f when the class sets ``posthoc = True``
    (call ``classifier(batch.logmel)`` for logits (B, C), or ``classifier.forward_hidden``
    for logits and hidden maps), and ``None`` for by-design methods (``posthoc = False``).
    Anything trained must use ``audio_xai_bench.train.fit`` and
    ``audio_xai_bench.train.BatchLoader`` (one loop for the whole suite), and be deterministic
    given ``self.seed`` (``torch.manual_seed(self.seed)`` before building networks).

Every capability below receives an ``api.Batch``: ``wave`` (B, N); ``X`` (B, F, T) the
log1p magnitude STFT ln(1 + |S|) >= 0; ``phase`` (B, F, T) complex unit-modulus; ``logmel``
(B, 1, T, M) f's input in dB; ``target`` (B, C); ``mask`` (B, C) bool; ``index`` (B,) rows in
the split. Run them under ``torch.inference_mode()``, batched (no per-row Python loops).

``"surrogate"`` -> ``surrogate_predict(batch) -> (B, C)``
    Probabilities of a global surrogate of f (softmax rows for multiclass, independent
    sigmoids in [0, 1] for multilabel). Scored for **fidelity** against f's outputs
    (``fidelity/top1`` ..., ``fidelity/macro_auprc`` ...).

``"predict"`` -> ``predict(batch) -> (B, C)``
    Probabilities of a by-design model (``posthoc = False``), same value ranges as above.
    Scored for **classification** against the labels (``classification/*``); when the method
    also explains, faithfulness is measured on this model's own probabilities.

``"explain"`` -> ``explain(batch, classes) -> api.Explanation``
    ``classes`` (B,) long: the class to explain for each row (f's or g's prediction; for
    multilabel tasks one row per class above the threshold). Return K **non-negative
    components of the input** X_k with sum_k X_k <= X (soft or hard masks of X), and
    relevances ``relevance`` (B, K) in [-1, 1], normalised with
    ``api.normalise_relevance`` (r_k = v_k / max_l |v_l|). Use
    ``api.FactorExplanation(X, W, H, r)`` for NMF-style soft masks or
    ``api.SegmentExplanation(X, segments, r)`` for a hard partition (``segments`` (B, F, T)
    long, values in [0, K) or -1 for "in no component"). Scored for **faithfulness**: the
    components with r_k > tau are removed, the audio re-synthesised with the input phase, and
    the drop of the explained class's probability FF = f(x)_c - f(x_2)_c compared with
    removing as many random components; the kept components are written as WAV files.

Class attributes: ``capabilities`` (a frozenset of the names above), ``posthoc``,
``listenable`` (False when the components are not meaningful audio), ``needs_dictionary``
(True to receive the task's NMF dictionary as ``data.dictionary`` (F, K), with K =
``config['K']``), ``defaults`` (hyperparameters, overridable per task through
``task.method_defaults[name]`` and by the user with ``--set key=value``; values are parsed to
the type of the default), ``small_profile`` (overrides for ``--profile small``, a few seconds).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from audio_xai_bench.api import (Batch, Explainer, SegmentExplanation, TaskData,
                                 normalise_relevance)


class EnergyExplainer(Explainer):
    """Time segments of the clip ranked by their energy (an example plugin)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"explain"})
    posthoc: ClassVar[bool] = True        # it explains the suite's classifier f
    needs_dictionary: ClassVar[bool] = False
    listenable: ClassVar[bool] = True     # time segments of the input are audio
    defaults: ClassVar[dict[str, Any]] = {"n_segments": 10}
    small_profile: ClassVar[dict[str, Any]] = {"n_segments": 6}

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        # Nothing to learn; a real method would train here with audio_xai_bench.train.fit.
        n = int(self.config["n_segments"])
        if n < 1:
            raise ValueError(f"n_segments must be >= 1, got {n}")
        self.n_segments = n

    @torch.inference_mode()
    def explain(self, batch: Batch, classes: Tensor) -> SegmentExplanation:
        X = batch.X                                            # (B, F, T), log1p magnitude
        B, Fb, T = X.shape
        K = min(self.n_segments, T)
        seg_of_frame = torch.div(torch.arange(T, device=X.device) * K, T,
                                 rounding_mode="floor")        # (T,) in [0, K)
        segments = seg_of_frame.expand(B, Fb, T)               # every bin of frame t -> segment
        power = torch.expm1(X).pow(2).sum(1)                   # (B, T) frame energy
        energy = torch.zeros(B, K, device=X.device, dtype=X.dtype)
        energy.index_add_(1, seg_of_frame, power)              # (B, K) segment energy
        relevance = normalise_relevance(energy)                # in [0, 1], max = 1
        return SegmentExplanation(X, segments, relevance)
