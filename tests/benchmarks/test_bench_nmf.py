"""Benchmark: our sparse_nmf (mu = 0) vs scikit-learn's NMF(solver="mu") on the same data.

Not in the default run (pytest addopts ignore tests/benchmarks). Run:

    python -m pytest tests/benchmarks/test_bench_nmf.py -s -p no:cacheprovider

Timings are min and median over 3 rounds; ratios use the min (least disturbed by other load on
the machine). Reports, on one random non-negative float32 matrix (513 x 20000, K = 100, 50 iterations):
time per run of each, the ratio, both objectives 0.5 ||V - W H||_F^2 (computed the same way, by
``audio_xai_bench.nmf.objective``), and the time our accelerated MU (inner > 1) needs to reach
scikit-learn's 50-iteration objective (DESIGN.md, "Performance notes": report time to reach the
reference's objective, not only time per iteration).
"""
from __future__ import annotations

import os
import statistics
import time
import warnings

import numpy as np
import pytest
import torch

from audio_xai_bench.nmf import objective, sparse_nmf

F, N, K, ITERS = 513, 20_000, 100, 50
# NMF_BENCH_THREADS=n limits torch and scikit-learn's BLAS to n threads (0 = leave the defaults);
# with other load on a small machine, 1 thread each gives far steadier figures.
THREADS = int(os.environ.get("NMF_BENCH_THREADS", "0"))
SK_ROUNDS = 3
ROUNDS = 3


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


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.random((F, N), dtype=np.float32)
    return X, torch.from_numpy(X)


def _sklearn_fit(X):
    from sklearn.decomposition import NMF

    model = NMF(n_components=K, solver="mu", beta_loss="frobenius", init="random", max_iter=ITERS,
                tol=0, alpha_W=0, alpha_H=0, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # ConvergenceWarning: max_iter reached (wanted)
        W = model.fit_transform(X)
    return W, model.components_, model


@pytest.fixture(scope="module")
def sk_ref(data):
    """scikit-learn's time (min and median of SK_ROUNDS runs) and final objective: the reference."""
    X, V = data
    times = []
    for _ in range(SK_ROUNDS):
        t0 = time.perf_counter()
        W, H, model = _sklearn_fit(X)
        times.append(time.perf_counter() - t0)
    obj = objective(V, torch.from_numpy(W), torch.from_numpy(H), 0.0)
    return {"time_s": min(times), "time_median_s": statistics.median(times), "objective": obj,
            "objective_from_reconstruction_err": 0.5 * float(model.reconstruction_err_) ** 2}


def _report(benchmark, title, info):
    benchmark.extra_info.update(info)
    print(f"\n[{title}]")
    for key, val in info.items():
        print(f"  {key:>36}: {val:.6g}" if isinstance(val, float) else f"  {key:>36}: {val}")


def test_bench_sklearn_mu(benchmark, data, sk_ref):
    X, V = data
    W, H, _ = benchmark.pedantic(_sklearn_fit, args=(X,), rounds=ROUNDS, iterations=1)
    obj = objective(V, torch.from_numpy(W), torch.from_numpy(H), 0.0)
    _report(benchmark, "sklearn NMF(solver='mu'), 50 iterations", {
        "shape": f"{F}x{N} float32, K={K}, {ITERS} iterations, torch threads={torch.get_num_threads()}, "
                 f"NMF_BENCH_THREADS={THREADS}",
        "time_per_run_s (min)": benchmark.stats.stats.min,
        "time_per_run_s (median)": benchmark.stats.stats.median,
        "time_per_iteration_ms (min)": 1e3 * benchmark.stats.stats.min / ITERS,
        "objective 0.5||V-WH||^2": obj,
        "objective from reconstruction_err_": sk_ref["objective_from_reconstruction_err"],
    })


def test_bench_ours_mu_same_iterations(benchmark, data, sk_ref):
    _, V = data
    W, H = benchmark.pedantic(lambda: sparse_nmf(V, K, mu=0.0, n_iter=ITERS, seed=0, inner=1),
                              rounds=ROUNDS, iterations=1)
    obj = objective(V, W, H, 0.0)
    t = benchmark.stats.stats.min
    _report(benchmark, "ours sparse_nmf(mu=0, inner=1), 50 iterations", {
        "time_per_run_s (min)": t,
        "time_per_run_s (median)": benchmark.stats.stats.median,
        "time_per_iteration_ms (min)": 1e3 * t / ITERS,
        "sklearn_time_per_run_s (min)": sk_ref["time_s"],
        "speed ratio sklearn_time / our_time": sk_ref["time_s"] / t,
        "objective 0.5||V-WH||^2": obj,
        "sklearn objective": sk_ref["objective"],
        "objective ratio ours / sklearn": obj / sk_ref["objective"],
    })


@pytest.mark.parametrize("inner", [2, 3, 5])
def test_bench_ours_time_to_sklearn_objective(benchmark, data, sk_ref, inner):
    """Iterations our accelerated MU needs to reach sklearn's 50-iteration objective, and the
    time of a run with exactly that many iterations (deterministic seed: the same trajectory)."""
    _, V = data
    target = sk_ref["objective"]
    hist: list[float] = []
    sparse_nmf(V, K, mu=0.0, n_iter=ITERS, seed=0, inner=inner, history=hist)
    reached = [i for i, h in enumerate(hist) if h <= target]
    if not reached:
        pytest.skip(f"inner={inner} did not reach sklearn's objective in {ITERS} iterations")
    n_iter = reached[0] + 1
    W, H = benchmark.pedantic(lambda: sparse_nmf(V, K, mu=0.0, n_iter=n_iter, seed=0, inner=inner),
                              rounds=ROUNDS, iterations=1)
    obj = objective(V, W, H, 0.0)
    t = benchmark.stats.stats.min
    _report(benchmark, f"ours sparse_nmf(mu=0, inner={inner}) to sklearn's 50-iteration objective", {
        "iterations_to_reach": n_iter,
        "time_to_reach_s (min)": t,
        "time_to_reach_s (median)": benchmark.stats.stats.median,
        "sklearn_time_50_iterations_s (min)": sk_ref["time_s"],
        "speedup at equal objective (sklearn / ours)": sk_ref["time_s"] / t,
        "objective reached": obj,
        "sklearn objective": sk_ref["objective"],
        "objective after 50 iterations (ours)": hist[ITERS - 1],
    })
    assert obj <= target * (1 + 1e-6)
