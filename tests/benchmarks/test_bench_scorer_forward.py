"""Benchmark: one forward chunk of the scorer on OpenMIC-shaped inputs, with the plain f vs
the inference copy the scorer now uses (``audio_xai_bench.fastforward.inference_copy``).

Not in the default run. Run:

    python -m pytest tests/benchmarks/test_bench_scorer_forward.py -s -p no:cacheprovider

Setting: the OpenMIC front-end (44.1 kHz, 1024-pt FFT, hop 512, 128 mel bands, 10 s clips),
f = the Kumar CNN at full width (the paper's network, as the default profile of the real
tasks trains it; random weights: speed does not depend on them), ``CHUNK`` modified
spectrograms per chunk (``eval.forward_batch``'s default is 32; 8 here to keep it short).
A chunk is what ``Scorer._probs_chunk`` does for every FF / baseline / curve input:
re-synthesis with the clip's phase (inverse STFT), the log-mel of the result, f's
probabilities. Timings are the min over interleaved rounds; the ratio is plain / copy.
"""
from __future__ import annotations

import os

import pytest
import torch
from _timing import best_of

from audio_xai_bench.api import FrontendConfig
from audio_xai_bench.audio import Frontend
from audio_xai_bench.classifier import KumarCNN, probabilities
from audio_xai_bench.fastforward import inference_copy

CHUNK, ROUNDS = 8, 3
THREADS = int(os.environ.get("SCORER_FWD_BENCH_THREADS", "1"))


def _chunk(fe, f, X2, phase, n):
    with torch.inference_mode():
        return probabilities(f(fe.logmel(fe.invert(X2, phase, n))), "multilabel")


@pytest.mark.parametrize("width", [1.0, 0.0625])
def test_bench_scorer_forward_chunk(benchmark, width):
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        _run(benchmark, width)
    finally:
        torch.set_num_threads(threads)  # the next benchmark in this process gets the default


def _run(benchmark, width):
    cfg = FrontendConfig(44100, 1024, 512, 128, clip_seconds=10.0)
    fe = Frontend(cfg)
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(CHUNK, cfg.clip_samples, generator=g) * 0.1
    X, phase, _ = fe.analyze(wave)
    X2 = X * (torch.rand(X.shape, generator=g) > 0.3)  # a removal: some bins at zero
    torch.manual_seed(0)
    f = KumarCNN(20, width=width).eval()
    fast = inference_copy(f)
    n = cfg.clip_samples
    ref, got = _chunk(fe, f, X2, phase, n), _chunk(fe, fast, X2, phase, n)
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    t = {"plain": [], "copy": [], "resynth": []}
    for _ in range(ROUNDS):
        t["plain"].append(best_of(lambda: _chunk(fe, f, X2, phase, n), 1))
        t["copy"].append(best_of(lambda: _chunk(fe, fast, X2, phase, n), 1))
        t["resynth"].append(best_of(lambda: fe.logmel(fe.invert(X2, phase, n)), 1))
    benchmark.pedantic(lambda: _chunk(fe, fast, X2, phase, n), rounds=1, iterations=1)
    m = {k: min(v) for k, v in t.items()}
    print(f"\nscorer forward chunk: {CHUNK} x 10 s OpenMIC inputs, Kumar CNN width {width}, "
          f"{torch.get_num_threads()} thread(s), min of {ROUNDS} interleaved rounds")
    f_alone = (m["plain"] - m["resynth"]) / max(m["copy"] - m["resynth"], 1e-9)
    print(f"  re-synthesis + log-mel alone {m['resynth']:.3f} s; chunk with plain f "
          f"{m['plain']:.3f} s; with the inference copy {m['copy']:.3f} s: "
          f"{m['plain'] / m['copy']:.2f}x (f alone {f_alone:.2f}x)")
    benchmark.extra_info.update({k: v for k, v in m.items()})
    assert m["copy"] > 0
