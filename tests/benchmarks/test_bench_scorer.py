"""Scorer at scale (issue "Performance", item 4): evaluation time and peak memory of one run on
an OpenMIC-2018-layout fixture of 20 and of 200 test clips (10 s, 44.1 kHz, 20 classes).

Not in the default run (pytest addopts ignore tests/benchmarks). Run:

    python -m pytest tests/benchmarks/test_bench_scorer.py -s -p no:cacheprovider

Fixture: ``tests/fixtures_real.make_openmic`` writes one data root with ``N_TRAIN`` training
and 200 test clips; the 20-clip root is the same files (symbolic links) with the test
partition cut to its first 20 keys, so both runs train the same f on the same clips and differ
only in the test split. Each size is evaluated by

    audio-xai-bench run --method random --task openmic --profile small --data-root ROOT
        --threads 1 --task-option max_clips=200

in a **fresh subprocess** (``ru_maxrss`` of that process is the run's own peak), and its
``done.json`` gives ``eval_s`` (the Scorer alone) and ``peak_rss_mb`` (the whole run: data,
f's training, the dictionary and the evaluation). ``--profile small`` caps the test split at
100 clips; ``max_clips=200`` lifts that cap (it caps every split at 200, which leaves the
training split of ``N_TRAIN`` clips untouched), so the 200-clip run really evaluates 200
clips. Figures are printed and recorded in ``benchmark.extra_info``; only the sizes evaluated
are asserted, not the timings.

Goals of the issue: time linear in the number of (clip, class) pairs (<= 10.5x for 10x the
clips) and peak memory bounded by the batch, not by the split (within +20 %).

Scorer settings. The fixture's f is trained on 24 clips of synthetic audio and puts 10 of the
20 classes above 0.5 on every clip, so the default scorer explains 10 pairs per clip, each
needing about 57 resynthesised 10 s inputs through f (5 τ x 4 for FF and its baselines,
5 budgets x 2 curves x 3 orders, 2 for L-MAC, 5 for the count baseline): about 4 s per pair
on one shared core, 2,000 pairs for the 200-clip size. To keep the benchmark within minutes it
uses by default a reduced scorer (``REDUCED``: one τ, two budgets, no random orders, and
per-class thresholds that keep 2 of f's 10 classes, i.e. 2 pairs per clip). Every pass of the
scorer still runs, with fewer inputs per pair; ``SCORER_BENCH_FULL=1`` uses the defaults.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/, for fixtures_real

N_TRAIN = int(os.environ.get("SCORER_BENCH_TRAIN", "24"))
SIZES = (20, 200)
THREADS = os.environ.get("SCORER_BENCH_THREADS", "1")
# per-class thresholds: the first four classes at 0.5 (f predicts two of them on every clip),
# the others out of reach (see above); the pairs per clip are printed
REDUCED = ("--set", "eval.taus=0.5", "--set", "eval.budgets=0.1,0.3", "--set",
           "eval.curve_draws=0", "--set", "eval.threshold=" + ",".join(["0.5"] * 4 + ["0.999"] * 16))
SETTINGS = () if os.environ.get("SCORER_BENCH_FULL") else REDUCED


def make_openmic_roots(base: str | os.PathLike, sizes=SIZES, n_train: int = N_TRAIN,
                       seconds: float = 10.0) -> dict[int, str]:
    """OpenMIC-layout data roots with ``n`` test clips for each ``n`` of ``sizes``, sharing
    one set of files (the largest size is written, the others link to it)."""
    from fixtures_real import make_openmic

    base = Path(base)
    big = max(sizes)
    full = base / f"openmic-{big}"
    if not (full / "partitions" / "split01_test.csv").exists():
        make_openmic(str(full), n_train=n_train, n_test=big, seconds=seconds)
    test_keys = (full / "partitions" / "split01_test.csv").read_text().split()
    roots = {big: str(full)}
    for n in sizes:
        if n == big:
            continue
        root = base / f"openmic-{n}"
        (root / "partitions").mkdir(parents=True, exist_ok=True)
        for name in ("openmic-2018.npz", "class-map.json", "audio"):
            if not (root / name).exists():
                os.symlink(full / name, root / name)
        (root / "partitions" / "split01_train.csv").write_text(
            (full / "partitions" / "split01_train.csv").read_text())
        (root / "partitions" / "split01_test.csv").write_text("\n".join(test_keys[:n]) + "\n")
        roots[n] = str(root)
    return roots


def run_once(root: str, out: str, threads: str = THREADS, extra: tuple[str, ...] = SETTINGS
             ) -> dict:
    """One ``audio-xai-bench run`` in a fresh interpreter; returns its done.json and
    metrics.json values of interest."""
    cmd = [sys.executable, "-m", "audio_xai_bench.cli", "run", "--method", "random",
           "--task", "openmic", "--profile", "small", "--data-root", root,
           "--threads", str(threads), "--task-option", "max_clips=200", "--out", out, *extra]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    done = sorted(Path(out).rglob("done.json"))
    assert len(done) == 1, done
    d = json.loads(done[0].read_text())
    m = json.loads((done[0].parent / "metrics.json").read_text())
    return {"eval_s": d["eval_s"], "peak_rss_mb": d["peak_rss_mb"], "wall_s": d["wall_s"],
            "n_test": m["n_test"], "n_pairs": m.get("faithfulness/n_pairs", 0.0),
            "cell": str(done[0].parent)}


def test_bench_scorer_scale(benchmark, tmp_path_factory):
    pytest.importorskip("soundfile")
    base = tmp_path_factory.mktemp("scorer-bench")
    roots = make_openmic_roots(base / "data")
    res = {}
    for n in SIZES:
        res[n] = run_once(roots[n], str(base / f"runs-{n}"))
        assert res[n]["n_test"] == n  # the 200-clip run evaluates all 200 (max_clips)
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    a, b = res[SIZES[0]], res[SIZES[1]]
    print(f"\nscorer settings: {' '.join(SETTINGS) or 'defaults'}")
    ratios = {"clips": b["n_test"] / a["n_test"], "pairs": b["n_pairs"] / max(a["n_pairs"], 1),
              "eval_s": b["eval_s"] / a["eval_s"],
              "peak_rss": b["peak_rss_mb"] / a["peak_rss_mb"]}
    for n in SIZES:
        r = res[n]
        print(f"\n{n:4d} test clips, {int(r['n_pairs']):5d} pairs: eval {r['eval_s']:7.1f} s "
              f"({r['eval_s'] / max(r['n_pairs'], 1) * 1e3:6.1f} ms/pair), peak RSS "
              f"{r['peak_rss_mb']:7.0f} MB (run wall {r['wall_s']:.0f} s)")
    print(f"ratios {SIZES[1]}/{SIZES[0]}: clips {ratios['clips']:.1f}x, pairs "
          f"{ratios['pairs']:.2f}x, eval time {ratios['eval_s']:.2f}x, peak RSS "
          f"{ratios['peak_rss']:.2f}x")
    benchmark.extra_info.update({f"{k}_{n}": v for n in SIZES for k, v in res[n].items()
                                 if k != "cell"})
    benchmark.extra_info.update({f"ratio_{k}": v for k, v in ratios.items()})


if __name__ == "__main__":  # python tests/benchmarks/test_bench_scorer.py BASE [SIZE ...]
    base = Path(sys.argv[1])
    sizes = tuple(int(s) for s in sys.argv[2:]) or SIZES
    roots = make_openmic_roots(base / "data", sizes=tuple(sorted(set(sizes) | {max(SIZES)})))
    for n in sizes:
        out = base / f"runs-{n}-{os.getpid()}"
        print(n, json.dumps(run_once(roots[n], str(out))), flush=True)
