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
- ours: ``SLIME.explain`` on the clips as one batch with its defaults (perturbed log-mel from
  the per-band mel contributions, inference copy of f with BN folded and strided 2 x 2
  max-pools, ``chunk`` = 32 perturbed inputs per forward pass, ``workers`` = torch's thread
  count chunks at once, each on one intra-op thread, closed-form batched ridge); also with
  ``workers`` = 1 (one chunk after another on one thread: the same numbers bit for bit), to
  show what the concurrency adds.
- ours before issue 14: the previous path, kept here as the reference for the before/after
  ratio (perturbed magnitude -> ``logmel_of_masked``, the plain f, chunks of 256).

Timings are the min over ROUNDS of each, measured interleaved in one run (the machine is
shared); the printed ratios are lime time / our time, with their range over the rounds
(round i of lime against round i of ours).
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

CLIPS, N, ROUNDS = 4, 200, 5
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
    ex = SLIME({**SLIME.defaults, "n_samples": N}, seed=0)
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


def _ours(ex, batch, classes, workers=0):
    ex.memo.store.clear()  # time the computation, not the memo
    ex.config["workers"] = workers
    with torch.inference_mode():
        return ex.explain(batch, classes)


def _ours_before(ex, batch, classes):
    """The path before issue 14: masked magnitude -> log-mel per perturbation, plain f, 256."""
    from audio_xai_bench.methods._regions import logmel_of_masked
    from audio_xai_bench.methods.slime import lime_kernel, sample_masks, weighted_ridge

    with torch.inference_mode():
        grid = ex.grid(batch.X.shape[-1])
        Z = sample_masks(batch.index, grid.K, N, ex.seed)
        seg = grid.segments(1)[0]
        flat = Z.reshape(-1, grid.K)
        rows = torch.arange(CLIPS).repeat_interleave(N)
        outs = []
        for i in range(0, len(flat), 256):
            lm = logmel_of_masked(ex.frontend, batch.X[rows[i:i + 256]], flat[i:i + 256][:, seg])
            outs.append(ex.model_outputs(lm).float())
        out = torch.cat(outs).view(CLIPS, N, -1)
        y = out[torch.arange(CLIPS), :, classes]
        from audio_xai_bench.methods.slime import cosine_distance_to_ones
        w = lime_kernel(cosine_distance_to_ones(Z), 0.25)
        return weighted_ridge(Z, y, w, 1.0)[0]


def test_bench_slime_vs_lime(benchmark, setup):
    fe, f, batch, classes, ex = setup
    r_new = _ours(ex, batch, classes).relevance  # warm-up, and the same answer as before
    coef = _ours_before(ex, batch, classes)
    torch.testing.assert_close(r_new, coef.float() / coef.abs().amax(1, keepdim=True).float(),
                               atol=1e-3, rtol=0)
    torch.testing.assert_close(_ours(ex, batch, classes, 1).relevance, r_new, atol=0, rtol=0)
    times = {"lime10": [], "limeN": [], "before": [], "ours1": [], "ours": []}
    fns = {"lime10": lambda: _lime_path(fe, f, batch, classes, ex, 10),
           "limeN": lambda: _lime_path(fe, f, batch, classes, ex, N),
           "before": lambda: _ours_before(ex, batch, classes),
           "ours1": lambda: _ours(ex, batch, classes, 1),
           "ours": lambda: _ours(ex, batch, classes)}
    for _ in range(ROUNDS):  # interleaved: each round measures all four under the same load
        for k, fn in fns.items():
            times[k].append(best_of(fn, 1))
    benchmark.pedantic(lambda: _ours(ex, batch, classes), rounds=1, iterations=1)
    t = {k: min(v) for k, v in times.items()}
    print(f"\nSLIME benchmark: {CLIPS} clips x {N} samples, K = 20, torch threads "
          f"{torch.get_num_threads()}, {ROUNDS} interleaved rounds (min; ratio range over rounds)")
    for k, label in (("lime10", "lime path (classifier_fn batch 10)"),
                     ("limeN", f"lime path (classifier_fn batch {N})"),
                     ("before", "ours before (magnitude masks, chunk 256)"),
                     ("ours1", "ours, one chunk at a time (workers 1)"),
                     ("ours", "ours (mel contributions, f copy, chunk 32)")):
        print(f"  {label:<44} {t[k]:7.2f} s  ({t[k] / (CLIPS * N) * 1e3:.2f} ms/sample)")
    for k in ("lime10", "limeN", "before", "ours1"):
        r = [a / b for a, b in zip(times[k], times["ours"])]
        print(f"  speed-up vs {k:<7}: {t[k] / t['ours']:.2f}x (min/min), rounds {min(r):.2f}-{max(r):.2f}x")
    assert t["ours"] > 0
