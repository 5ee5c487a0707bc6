"""Feature extraction throughput: the batched torch front-end vs librosa clip by clip.

Both compute the same things on the same clips (paper IV-B2 settings: 44.1 kHz, 5 s clips,
1024-pt FFT, hop 512, 128 mel bands): X = log1p|STFT|, the phase, and the classifier's
log-mel (power_to_db of the Slaney mel filters applied to |STFT|, top_db 80). Run with
``python -m pytest tests/benchmarks/test_bench_frontend.py -s``; the ratio is printed.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch

from _timing import best_of

from audio_xai_bench.api import FrontendConfig
from audio_xai_bench.audio import Frontend

N_CLIPS = 64
CFG = FrontendConfig(sample_rate=44100, n_fft=1024, hop_length=512, n_mels=128, clip_seconds=5.0)


@pytest.fixture(scope="module")
def clips():
    rng = np.random.default_rng(0)
    return rng.standard_normal((N_CLIPS, CFG.clip_samples)).astype(np.float32) * 0.1


def _librosa_features(clips: np.ndarray):
    import librosa

    mel_fb = librosa.filters.mel(sr=CFG.sample_rate, n_fft=CFG.n_fft, n_mels=CFG.n_mels)
    out = []
    for x in clips:
        S = librosa.stft(x, n_fft=CFG.n_fft, hop_length=CFG.hop_length, pad_mode="reflect")
        mag = np.abs(S)
        logmel = librosa.power_to_db(mel_fb @ mag, top_db=80.0)
        out.append((np.log1p(mag), S / (mag + 1e-9), logmel))
    return out


def _torch_features(fe: Frontend, clips: torch.Tensor):
    with torch.inference_mode():
        return fe.analyze(clips)



def test_frontend_throughput_vs_librosa(benchmark, clips):
    fe = Frontend(CFG)
    x = torch.from_numpy(clips)
    X, _, logmel = _torch_features(fe, x)
    ref = _librosa_features(clips[:2])
    np.testing.assert_allclose(X[0].numpy(), ref[0][0], atol=1e-3)
    np.testing.assert_allclose(logmel[0, 0].numpy().T, ref[0][2], atol=1e-2)
    t_librosa = best_of(lambda: _librosa_features(clips))
    benchmark.pedantic(_torch_features, args=(fe, x), rounds=3, iterations=1)
    t_torch = benchmark.stats.stats.min
    ratio = t_librosa / t_torch
    benchmark.extra_info.update(clips=N_CLIPS, torch_clips_per_s=N_CLIPS / t_torch,
                                librosa_clips_per_s=N_CLIPS / t_librosa, speedup=ratio)
    print(f"\nfront-end on {N_CLIPS} clips of 5 s: torch batched {N_CLIPS / t_torch:.1f} clips/s, "
          f"librosa per clip {N_CLIPS / t_librosa:.1f} clips/s, ratio {ratio:.2f}x")
    assert ratio > 0  # a figure to report, not a pass/fail threshold
