"""Benchmark: our batched SLIME vs the ``lime`` package's path at equal sample counts.

Not in the default run (pytest addopts ignore tests/benchmarks). Run:

    python -m pytest tests/benchmarks/test_bench_slime.py -s -p no:cacheprovider

Setting: the synth front-end (16 kHz, 1024-pt FFT, hop 512, 64 mel bands, 3 s clips), f = the
Kumar CNN at width 0.25 (the synth classifier's size, random weights: speed does not depend
on them), CLIPS clips, K = 20 time-frequency segments (SLIME's default 4 x 5 grid), N
perturbation samples per clip, explaining one class per clip.

- lime: ``lime.lime_image.LimeImageExplainer(kernel_width=0.25, feature_selection='none')``
  ``.explain_instance`` on X (log1p |STFT|) with our segments as ``segmentation_fn`` and
  ``hide_color=0``: it draws the binary samples, builds every perturbed spectrogram one at a
  time in numpy, calls ``classifier_fn`` (log-mel + f) on batches of ``batch_size`` (lime's
  default 10, and also N = one call per clip), then fits ``LimeBase`` (cosine distances, kernel,
  scikit-learn Ridge), one clip at a time.
- ours: ``SLIME.explain`` on the clips as one batch (perturbations built on the fly from the
  segment map, ``chunk`` = 256 perturbed inputs per forward pass, closed-form batched ridge).

Timings are the min over ROUNDS; the printed ratios are lime time / our time.
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from _timing import best_of

from audio_xai_bench.api import Batch, FrontendConfig
from audio_xai_bench.audio import Frontend
from audio_xai_bench.classifier import KumarCNN, probabilities
from audio_xai_bench.methods.slime import SLIME

CLIPS, N, ROUNDS = 4, 200, 2
THREADS = int(os.environ.get("SLIME_BENCH_THREADS", "0"))


class _Task:
    kind = "multiclass"
    num_classes = 8


class _Data:
    def __init__(self, fe):
        self.task, self.frontend = _Task(), fe


@pytest.fixture(scope="module")
def setup():
    if THREADS > 0:
        torch.set_num_threads(THREADS)
    cfg = FrontendConfig(sample_rate=16000, n_fft=1024, hop_length=512, n_mels=64,
                         clip_seconds=3.0)
    fe = Frontend(cfg)
    torch.manual_seed(0)
    f = KumarCNN(8, width=0.25, head_mid=256).eval()
    wave = torch.randn(CLIPS, cfg.clip_samples, generator=torch.Generator().manual_seed(0)) * 0.1
    X, phase, logmel = fe.analyze(wave)
    batch = Batch(wave, X, phase, logmel, torch.zeros(CLIPS, 8),
                  torch.ones(CLIPS, 8, dtype=torch.bool), torch.arange(CLIPS))
    with torch.inference_mode():
        classes = f(logmel).argmax(1)
    ex = SLIME({**SLIME.defaults, "n_samples": N, "chunk": 256}, seed=0)
    ex.fit(_Data(fe), f)
    return fe, f, batch, classes, ex


def _lime_path(fe, f, batch, classes, ex, batch_size):
    from lime.lime_image import LimeImageExplainer

    seg = ex.grid(batch.X.shape[-1]).segments(1)[0].numpy()

    def classifier_fn(imgs: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(imgs[..., 0])).float()
        with torch.inference_mode():
            return probabilities(f(fe.logmel_from_magnitude(torch.expm1(x))), "multiclass").numpy()

    out = []
    for i in range(CLIPS):
        lime_ex = LimeImageExplainer(kernel_width=0.25, feature_selection="none", random_state=i,
                                     verbose=False)
        e = lime_ex.explain_instance(batch.X[i].numpy(), classifier_fn, labels=(int(classes[i]),),
                                     top_labels=None, hide_color=0, num_features=seg.max() + 1,
                                     num_samples=N, batch_size=batch_size,
                                     segmentation_fn=lambda img: seg, random_seed=i)
        out.append(e.local_exp[int(classes[i])])
    return out


def _ours(ex, batch, classes):
    ex.memo.store.clear()  # time the computation, not the memo
    with torch.inference_mode():
        return ex.explain(batch, classes)



def test_bench_slime_vs_lime(benchmark, setup):
    fe, f, batch, classes, ex = setup
    _ours(ex, batch, classes)  # warm-up
    t_lime10 = best_of(lambda: _lime_path(fe, f, batch, classes, ex, 10), ROUNDS)
    t_lime_n = best_of(lambda: _lime_path(fe, f, batch, classes, ex, N), ROUNDS)
    benchmark.pedantic(lambda: _ours(ex, batch, classes), rounds=ROUNDS, iterations=1)
    t_ours = benchmark.stats.stats.min
    print(f"\nSLIME benchmark: {CLIPS} clips x {N} samples, K = 20, torch threads "
          f"{torch.get_num_threads()}")
    print(f"  lime path (classifier_fn batch 10): {t_lime10:8.2f} s  "
          f"({t_lime10 / (CLIPS * N) * 1e3:.2f} ms/sample)")
    print(f"  lime path (classifier_fn batch {N}): {t_lime_n:8.2f} s  "
          f"({t_lime_n / (CLIPS * N) * 1e3:.2f} ms/sample)")
    print(f"  ours (batched, chunk 256):          {t_ours:8.2f} s  "
          f"({t_ours / (CLIPS * N) * 1e3:.2f} ms/sample)")
    print(f"  speed-up vs lime batch 10: {t_lime10 / t_ours:.2f}x, "
          f"vs lime batch {N}: {t_lime_n / t_ours:.2f}x")
    assert t_ours > 0
