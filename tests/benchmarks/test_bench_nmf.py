"""Benchmark: time to a common objective, our sparse NMF (HALS and accelerated MU, mu = 0) vs
scikit-learn's ``NMF(solver="mu")`` and ``NMF(solver="cd")`` on a real-audio spectrogram.

Not in the default run (pytest addopts ignore tests/benchmarks). Run:

    pip install -e ".[test,bench]"
    NMF_BENCH_THREADS=1 python -m pytest tests/benchmarks/test_bench_nmf.py -s -p no:cacheprovider

Data (real recorded audio, nothing downloaded): every sound file shipped inside the wheel of
the PyPI package ``pyo`` (``pyo/examples/snds`` and ``pyo/lib/snds``: drum loop, flute, voice,
metal hits, a hall impulse response, ... 44.1 kHz, about 50 s counting each channel of the
stereo files as a signal). Each signal's ``log1p |STFT|`` (the representation the suite
factorises; 1024-pt periodic Hann, hop 48 so that 50 s give > 40,000 frames, center=True) is
computed, the frames are concatenated in file order and the first 40,000 kept: V is 513 x 40,000
float32. The small hop makes neighbouring frames overlap by 95 %: the matrix is real audio, but
more redundant along time than a hop-512 spectrogram of 464 s would be.

Problem: 0.5 ||V - W H||_F^2, K = 100, mu = 0 (scikit-learn has no unit-norm constraint on W,
which the L1 penalty needs, so the common problem is the unpenalised one; with mu = 0 unit-norm
columns are no restriction). Target objective = scikit-learn MU's after ITERS_MU iterations
(``init="random"``, ``tol=0``). For every solver: the iterations needed to reach the target are
found on one run that records its objective per iteration (scikit-learn CD: a hook around its
coordinate-descent update, whose own time is subtracted), then that many iterations are timed,
the solvers interleaved, ROUNDS times; each timed result is checked against the target with the
exact objective (``audio_xai_bench.nmf.objective``). Every solver starts from its own random
initialisation. Ratios: scikit-learn time / our time per round (range) and of the minima.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import time
import warnings

import numpy as np
import pytest
import torch

from audio_xai_bench.nmf import objective, sparse_nmf

F, N, K = 513, 40_000, 100
ITERS_MU = int(os.environ.get("NMF_BENCH_ITERS", "200"))
ROUNDS = int(os.environ.get("NMF_BENCH_ROUNDS", "1"))  # + the target run for sklearn MU
HOP = 48
# NMF_BENCH_THREADS=n limits torch and scikit-learn's BLAS to n threads (0 = leave the defaults);
# with other load on a small machine, 1 thread each gives far steadier figures.
THREADS = int(os.environ.get("NMF_BENCH_THREADS", "0"))
OURS = {"ours hals inner=2": dict(solver="hals", inner=2),
        "ours hals inner=1": dict(solver="hals", inner=1),
        "ours mu inner=3": dict(solver="mu", inner=3)}


@pytest.fixture(scope="module", autouse=True)
def _threads():
    if THREADS <= 0:
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    with threadpool_limits(limits=THREADS):
        yield
    torch.set_num_threads(before)


def real_audio_spectrogram() -> np.ndarray:
    """(513, 40000) float32 log1p |STFT| of the sound files shipped in the ``pyo`` wheel."""
    import soundfile as sf

    spec = importlib.util.find_spec("pyo")  # locates the package; pyo itself is not imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the real-audio NMF benchmark reads the sound files of the 'pyo' package: "
                    "pip install pyo (or .[bench])")
    root = list(spec.submodule_search_locations)[0]
    files = sorted(p for d in ("examples/snds", "lib/snds") for p in glob.glob(os.path.join(root, d, "*"))
                   if p.lower().endswith((".wav", ".aif", ".aiff")))
    window = torch.hann_window(1024, periodic=True)
    frames = []
    for path in files:
        audio, _ = sf.read(path, dtype="float32", always_2d=True)
        for ch in audio.T:  # each channel of a stereo file is one signal
            x = torch.from_numpy(np.ascontiguousarray(ch))
            S = torch.stft(x, 1024, hop_length=HOP, window=window, center=True,
                           pad_mode="reflect", return_complex=True)
            frames.append(torch.log1p(S.abs()))
    V = torch.cat(frames, dim=1)
    if V.shape[1] < N:
        pytest.skip(f"pyo's sound files give only {V.shape[1]} frames at hop {HOP} (< {N})")
    return np.ascontiguousarray(V[:, :N].numpy()), [os.path.basename(p) for p in files]


@pytest.fixture(scope="module")
def data():
    X, names = real_audio_spectrogram()
    assert X.shape == (F, N) and np.isfinite(X).all() and X.min() >= 0
    return X, torch.from_numpy(X), names


def _sk(X, solver, iters, hook=None):
    from sklearn.decomposition import NMF

    model = NMF(n_components=K, solver=solver, beta_loss="frobenius", init="random",
                max_iter=iters, tol=0, alpha_W=0, alpha_H=0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: max_iter reached (wanted)
        W = model.fit_transform(X)
    return torch.from_numpy(W), torch.from_numpy(model.components_)


def _cd_iterations_to(X, V, target, max_iter):
    """Iterations scikit-learn CD needs to reach ``target`` (hook around its CD update)."""
    import sklearn.decomposition._nmf as skn

    orig = skn._update_coordinate_descent
    state = {"calls": 0, "hook_s": 0.0, "reached": None}
    vv = float((V.double() ** 2).sum())

    def hooked(Xa, Wa, Hta, *a, **kw):
        out = orig(Xa, Wa, Hta, *a, **kw)
        state["calls"] += 1
        if state["calls"] % 2 == 0 and state["reached"] is None:  # after each H update
            t = time.perf_counter()
            W, H = torch.from_numpy(Hta), torch.from_numpy(Wa).T  # second call: (X^T, Ht, W)
            cross = float((W * (V @ H.T)).sum(dtype=torch.float64))
            quad = float(((W.T @ W) * (H @ H.T)).sum(dtype=torch.float64))
            if 0.5 * (vv - 2 * cross + quad) <= target:
                state["reached"] = state["calls"] // 2
            state["hook_s"] += time.perf_counter() - t
        return out

    skn._update_coordinate_descent = hooked
    try:
        _sk(X, "cd", max_iter)
    finally:
        skn._update_coordinate_descent = orig
    return state["reached"]


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def test_bench_time_to_common_objective(benchmark, data):
    X, V, names = data
    print(f"\nNMF benchmark: V = log1p|STFT| of {len(names)} sound files of the pyo wheel "
          f"({', '.join(names)}), hop {HOP}, {F} x {N} float32, K = {K}, mu = 0, "
          f"torch threads {torch.get_num_threads()}, NMF_BENCH_THREADS={THREADS}")
    # the target: scikit-learn MU after ITERS_MU iterations
    t_mu0, (W, H) = _timed(lambda: _sk(X, "mu", ITERS_MU))
    target = objective(V, W, H, 0.0)
    print(f"  target = sklearn MU objective after {ITERS_MU} iterations: {target:.6g} "
          f"({target / float((V.double() ** 2).sum()):.4%} of ||V||^2/1)")
    iters = {"sklearn mu": ITERS_MU}
    n_cd = _cd_iterations_to(X, V, target, 4 * ITERS_MU)
    if n_cd is None:
        pytest.fail(f"sklearn CD did not reach the target in {4 * ITERS_MU} iterations")
    iters["sklearn cd"] = n_cd
    for name, kw in OURS.items():
        n, reached = 16, []
        while not reached and n <= 2 * ITERS_MU:  # a seeded run of n iterations is the prefix
            hist: list[float] = []               # of a longer one: grow n until it reaches
            sparse_nmf(V, K, mu=0.0, n_iter=n, seed=0, history=hist, **kw)
            reached = [i for i, h in enumerate(hist) if h <= target]
            n *= 2
        if not reached:
            pytest.fail(f"{name} did not reach the target in {n // 2} iterations")
        iters[name] = reached[0] + 1
    runs = {"sklearn mu": lambda: _sk(X, "mu", ITERS_MU),
            "sklearn cd": lambda: _sk(X, "cd", iters["sklearn cd"])}
    for name, kw in OURS.items():
        runs[name] = (lambda kw=kw, n=iters[name]: sparse_nmf(V, K, mu=0.0, n_iter=n, seed=0, **kw))
    times: dict[str, list[float]] = {k: [] for k in runs}
    objs: dict[str, float] = {}
    for _ in range(ROUNDS):  # interleaved: every round times each solver under the same load
        for name, fn in runs.items():
            t, (W, H) = _timed(fn)
            times[name].append(t)
            objs[name] = objective(V, W, H, 0.0)
    times["sklearn mu"].append(t_mu0)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    tmin = {k: min(v) for k, v in times.items()}
    for name in runs:
        extra = "" if name.startswith("sklearn") else f", {OURS[name]}"
        print(f"  {name:<18} {iters[name]:4d} iterations  time min {tmin[name]:7.2f} s "
              f"(rounds {', '.join(f'{t:.2f}' for t in times[name])})  objective "
              f"{objs[name]:.6g} ({objs[name] / target - 1:+.2e} vs target){extra}")
        benchmark.extra_info[f"{name} time_s"] = tmin[name]
        benchmark.extra_info[f"{name} iterations"] = iters[name]
    for name in OURS:
        for ref in ("sklearn mu", "sklearn cd"):
            r = [a / b for a, b in zip(times[ref], times[name])]
            print(f"  speed-up {name} vs {ref}: {tmin[ref] / tmin[name]:.2f}x (min/min), "
                  f"rounds {min(r):.2f}-{max(r):.2f}x")
        assert objs[name] <= target * (1 + 1e-6), name
    best = min(OURS, key=lambda n: tmin[n])
    print(f"  fastest of ours: {best} (audio_xai_bench.nmf.DEFAULT_SOLVER should name its solver)")
