"""``audio-xai-bench sweep``: grid validation, the local process pool (crash isolation,
resume), and a real Slurm cluster through submitit (cells equal the local executor's,
cancel-and-resume)."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from audio_xai_bench import sweep as sw
from audio_xai_bench.cli import main

SMALL = ["--profile", "small", "--device", "cpu"]


def test_grid_names_checked_before_anything(tmp_path: Path, capsys):
    rc = main(["sweep", "--methods", "random,nosuch", "--tasks", "synth,nowhere",
               "--out", str(tmp_path), *SMALL])
    err = capsys.readouterr().err
    assert rc == 2 and "nosuch" in err and "nowhere" in err and "nothing was submitted" in err
    assert not any(tmp_path.iterdir())  # nothing written
    rc = main(["sweep", "--methods", "random", "--set", "no_such_key=1", "--out", str(tmp_path),
               *SMALL])
    assert rc == 2 and "no_such_key" in capsys.readouterr().err


def test_expand_grid_file_variants_and_dry_run(tmp_path: Path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text('methods = ["random", "l2i"]\ntasks = ["synth"]\nseeds = [1, 0, 1]\n'
                    '[variants]\nrandom = [{}, {K = 8}]\n')
    common = sw.Common(out=str(tmp_path / "runs"), profile="small")
    g = sw.read_grid(str(grid))
    cells = sw.expand(g["methods"], g["tasks"], "all", g["seeds"], g["variants"], common=common)
    # random × 2 variants × 2 seeds (1 de-duplicated) + l2i × 2 seeds
    assert len(cells) == 6 and len({c.path for c in cells}) == 6
    assert {c.sets for c in cells if c.method == "random"} == {(), (("K", "8"),)}
    rc = main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "runs"), "--dry-run",
               *SMALL])
    out = capsys.readouterr().out
    assert rc == 0 and "6 cell(s): 0 done, 6 to run" in out
    grid.write_text('methods = ["random"]\nvariants = {l2i = [{}]}\n')
    with pytest.raises(KeyError, match="l2i"):
        sw.expand(["random"], ["synth"], variants=sw.read_grid(str(grid))["variants"])


@pytest.mark.parametrize("jobs,cells,cores", [(None, 6, 2), (4, 6, 2), (1, 6, 2), (None, 1, 8),
                                              (3, 10, 16)])
def test_thread_policy_never_oversubscribes(jobs, cells, cores):
    workers, threads = sw.thread_policy(jobs, cells, cores)
    assert 1 <= workers <= min(cores, cells) and workers * threads <= cores
    assert threads >= 1


def test_local_sweep_isolates_a_crash_and_resumes(tmp_path: Path, capsys):
    out = str(tmp_path / "runs")
    args = ["sweep", "--methods", "random,_crash_explainer:CrashingExplainer", "--seeds", "0",
            "--out", out, "--jobs", "2", *SMALL]
    rc = main(args)
    text = capsys.readouterr().out
    assert rc == 1  # one failed cell
    assert "1/2 cell(s) done, 1 failed" in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("log:"))  # summary
    log = Path(line.split("log:")[1].strip())
    assert log.is_file() and "deliberate crash in fit" in log.read_text()
    done = next(Path(out).glob("synth/random/*/done.json"))
    stamp = done.stat().st_mtime_ns
    rc = main(args)  # rerun: the finished cell is skipped, the crashing one retried
    text = capsys.readouterr().out
    assert rc == 1 and "1 already done; 1 to run" in text
    assert done.stat().st_mtime_ns == stamp
    assert main(["sweep", "--status", "--out", out]) == 0
    status = capsys.readouterr().out
    assert "DONE" in status and "FAILED/GONE" in status


def test_slurm_not_reachable_submits_nothing(tmp_path: Path, monkeypatch, capsys):
    pytest.importorskip("submitit")
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "no-such-slurm.conf"))
    rc = main(["sweep", "--methods", "random", "--executor", "slurm",
               "--out", str(tmp_path / "runs"), *SMALL])
    err = capsys.readouterr().err
    assert rc == 2 and ("not reachable" in err) and "nothing was submitted" in err
    assert not (tmp_path / "runs" / ".sweep" / "slurm").exists()


def _metrics(out: Path) -> dict[str, dict]:
    res = {}
    for m in out.glob("synth/*/*/metrics.json"):
        res[f"{m.parent.parent.name}/{m.parent.name}"] = json.loads(m.read_text())
    return res


@pytest.mark.slow
def test_real_slurm_sweep_equals_local_and_resumes_after_scancel(tmp_path: Path, slurm_cluster,
                                                                 capsys):
    """3 methods × 2 seeds on synth small through submitit on a private slurmctld/slurmd; one
    running cell job is scancel'ed midway, a rerun completes it without redoing the others, and
    every cell equals the local executor's."""
    methods = ["random", "saliency", "gradcam"]
    common = sw.Common(out=str(tmp_path / "slurm"), profile="small", device="cpu",
                       cache_dir=str(tmp_path / "cache"))
    cells = sw.expand(methods, ["synth"], "all", [0, 1], common=common)
    assert len(cells) == 6
    opts = sw.SlurmOptions(cpus_per_task=1, time_min=10, poll_s=0.5)
    t0 = time.time()
    sw.run_slurm(cells, common, opts, wait_jobs=False, echo=lambda m: None)
    state = json.loads((tmp_path / "slurm" / ".sweep" / "last.json").read_text())
    ids = [c["job_id"] for c in state["cells"]]
    victim = None
    while victim is None and time.time() - t0 < 300:  # the first cell job seen running
        running = [j for j, s in sw._squeue_states(ids).items() if s == "RUNNING"]
        victim = running[0] if running else None
        time.sleep(0.2)
    assert victim is not None, "no cell job started"
    subprocess.run(["scancel", victim], check=True, env=slurm_cluster.env)
    outcomes = sw.follow(state["cells"], 0.5, echo=lambda m: None)
    failed = [o for o in outcomes if not o.ok]
    assert [o.cell.path for o in failed] == [state["cells"][ids.index(victim)]["path"]]
    assert "cancelled" in failed[0].error
    stamps = {c.path: (Path(c.path) / "done.json").stat().st_mtime_ns
              for c in cells if sw.is_cell_done(c)}
    assert len(stamps) == 5
    again = sw.run_slurm(cells, common, opts, echo=lambda m: None)  # rerun: only the victim
    assert len(again) == 1 and again[0].ok and again[0].cell.path == failed[0].cell.path
    assert all(sw.is_cell_done(c) for c in cells)
    assert {p: (Path(p) / "done.json").stat().st_mtime_ns for p in stamps} == stamps
    slurm_s = time.time() - t0
    # the same cells through the local executor (same shared artefacts) give the same metrics
    local = sw.Common(out=str(tmp_path / "local"), profile="small", device="cpu",
                      cache_dir=str(tmp_path / "cache"))
    res = sw.run_local(sw.expand(methods, ["synth"], "all", [0, 1], common=local), local, 2,
                       echo=lambda m: None)
    assert len(res) == 6 and all(o.ok for o in res)
    a, b = _metrics(tmp_path / "slurm"), _metrics(tmp_path / "local")
    assert len(a) == 6 and a == b
    print(f"real Slurm part: {slurm_s:.1f} s (submit, cancel, follow, resubmit)")


def test_default_thread_policy_of_run(monkeypatch):
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert sw.default_threads() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert sw.default_threads() == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "5")
    assert sw.default_threads() == 5
