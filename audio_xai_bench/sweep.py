"""``audio-xai-bench sweep``: methods × tasks × folds × seeds (× ``--set`` variants) as
independent cells, run by a local process pool or by Slurm through submitit.

One cell = one job = one ``runner.run`` of one (method, task, fold, seed, variant); cells are
idempotent and atomic (``done.json``, results.py), so a sweep is resumed by rerunning it.
Before the cells, a dependency stage builds each shared artefact (waveform cache, classifier
f, NMF dictionary) once per ``runner.dependency_key``; the artefacts are built under file locks
(locks.py), so even jobs that meet build each one once.

State of the last sweep under ``OUT/.sweep/``: ``logs/<cell>.log`` (local executor),
``slurm/`` (submitit's folder: scripts, logs, pickled results), ``last.json`` (the cells, their
folders, their Slurm job ids) read back by ``sweep --status``.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from .runner import RunSpec, dependency_key, plan, prepare_shared


@dataclass(frozen=True)
class Cell:
    """One (method, task, fold, seed, variant); ``sets`` are its ``--set`` overrides."""

    method: str
    task: str
    fold: str
    seed: int
    sets: tuple[tuple[str, str], ...] = ()
    path: str = ""  # the cell folder (config hash included)

    @property
    def label(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.sets)
        return f"{self.method}/{self.task}/fold {self.fold}/seed {self.seed}" + (
            f" [{extra}]" if extra else "")

    @property
    def slug(self) -> str:
        return Path(self.path).relative_to(Path(self.path).parents[2]).as_posix().replace("/", "_")


@dataclass
class Common:
    """Settings shared by every cell of a sweep (those of ``run``)."""

    out: str = "runs"
    profile: str = "default"
    device: str = "auto"
    data_root: str | None = None
    cache_dir: str | None = None
    threads: int = 1
    on_bad_file: str = "fail"
    task_options: dict[str, Any] = field(default_factory=dict)
    force: bool = False

    def spec(self, cell: Cell) -> RunSpec:
        return RunSpec(method=cell.method, task=cell.task, data_root=self.data_root,
                       fold=cell.fold, seeds=[cell.seed], device=self.device, out=self.out,
                       cache_dir=self.cache_dir, profile=self.profile, overrides=dict(cell.sets),
                       force=self.force, on_bad_file=self.on_bad_file,
                       task_options=dict(self.task_options))


# --------------------------------------------------------------------------------------------
# grid
# --------------------------------------------------------------------------------------------
def read_grid(path: str) -> dict[str, Any]:
    """A TOML grid file::

        methods = ["l2i", "random"]      # or "all"
        tasks = ["synth"]
        folds = "all"                    # or ["0"]
        seeds = [0, 1, 2]
        [variants]                       # optional: extra --set variants per method
        l2i = [{}, {attention = "separate"}]   # {} = the defaults
    """
    try:
        with open(path, "rb") as fh:
            grid = tomllib.load(fh)
    except OSError as exc:
        raise FileNotFoundError(f"grid file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"grid file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(grid) - {"methods", "tasks", "folds", "seeds", "variants"})
    if unknown:
        raise KeyError(f"grid file {path}: unknown key(s) {unknown}; valid: methods, tasks, "
                       "folds, seeds, variants")
    return grid


def _names(value: Any, what: str) -> list[str]:
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    raise ValueError(f"{what} must be a comma-separated string or a list, not {value!r}")


def expand(methods: Any, tasks: Any, folds: Any = "all", seeds: Any = (0,),
           variants: dict[str, list[dict[str, Any]]] | None = None,
           sets: dict[str, str] | None = None, common: Common | None = None) -> list[Cell]:
    """Every cell of the grid, each name and setting checked (nothing has run yet).

    ``sets`` apply to every cell; ``variants[method]`` lists extra ``--set`` dicts, one variant
    per entry. Raises naming every unknown method / task before anything is submitted."""
    from .registry import METHODS, TASKS

    common = common or Common()
    method_names = _names(methods, "methods")
    if method_names == ["all"]:
        method_names = METHODS.names()
    task_names = _names(tasks, "tasks")
    bad = [m for m in method_names if m not in METHODS and ":" not in m]
    bad_t = [t for t in task_names if t not in TASKS]
    if bad or bad_t:
        msg = []
        if bad:
            msg.append(f"unknown method(s) {bad}; valid: {', '.join(METHODS.names())}")
        if bad_t:
            msg.append(f"unknown task(s) {bad_t}; valid: {', '.join(TASKS.names())}")
        raise KeyError("; ".join(msg) + " (nothing was submitted)")
    seed_list = sorted({int(s) for s in (_names(seeds, "seeds") if isinstance(seeds, str)
                                         else seeds)})
    if any(s < 0 for s in seed_list) or not seed_list:
        raise ValueError(f"seeds must be non-negative integers, got {seeds!r}")
    fold_list = _names(folds, "folds") if folds not in (None, "all") else ["all"]
    variants = variants or {}
    stray = sorted(set(variants) - set(method_names))
    if stray:
        raise KeyError(f"variants given for method(s) {stray} that are not in the sweep")
    cells: list[Cell] = []
    for method, task in itertools.product(method_names, task_names):
        for variant in variants.get(method, [{}]):
            merged = {**(sets or {}), **{k: str(v) for k, v in variant.items()}}
            frozen = tuple(sorted(merged.items()))
            for fold in fold_list:
                spec = replace(common.spec(Cell(method, task, fold, 0, frozen)),
                               seeds=seed_list, fold=fold)
                try:
                    planned = plan(spec)
                except (KeyError, ValueError, TypeError) as exc:
                    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
                    raise type(exc)(f"{method} on {task}: {msg} (nothing was submitted)") from None
                cells += [Cell(method, task, f, s, frozen, str(p)) for f, s, p in planned]
    seen: dict[str, Cell] = {}
    for c in cells:  # the same cell asked twice (e.g. a variant equal to the defaults) runs once
        seen.setdefault(c.path, c)
    return list(seen.values())


def is_cell_done(cell: Cell) -> bool:
    return (Path(cell.path) / "done.json").is_file()


# --------------------------------------------------------------------------------------------
# jobs (what a worker / a Slurm task runs)
# --------------------------------------------------------------------------------------------
def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(max(1, n))
    with contextlib.suppress(RuntimeError):  # only settable before the first parallel op
        torch.set_num_interop_threads(1)


def run_cell_job(cell: Cell, common: Common, log_path: str | None = None) -> dict[str, Any]:
    """Run one cell (skipped when done); returns its metrics and wall time. Output goes to
    ``log_path`` when given (local executor), else to the job's stdout (Slurm)."""
    from .runner import run

    _set_threads(common.threads)
    t0 = time.time()
    with _redirect(log_path):
        print(f"cell {cell.label} -> {cell.path}", flush=True)
        rec = run(common.spec(cell), log=lambda m: print(m, flush=True))[0]
    return {"path": cell.path, "metrics": rec["metrics"], "wall_s": time.time() - t0}


def prepare_job(cell: Cell, common: Common, log_path: str | None = None) -> list[dict]:
    """Dependency stage: build the shared artefacts of ``cell`` (f, dictionary, caches)."""
    _set_threads(common.threads)
    with _redirect(log_path):
        return prepare_shared(common.spec(cell), log=lambda m: print(m, flush=True))


@contextlib.contextmanager
def _redirect(log_path: str | None):
    if log_path is None:
        yield
        return
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a", buffering=1) as fh, contextlib.redirect_stdout(fh), \
            contextlib.redirect_stderr(fh):
        yield


def dependency_cells(cells: list[Cell], common: Common) -> list[Cell]:
    """One representative cell per set of shared artefacts (``runner.dependency_key``)."""
    reps: dict[tuple, Cell] = {}
    for c in cells:
        reps.setdefault(dependency_key(common.spec(c), c.seed), c)
    return list(reps.values())


# --------------------------------------------------------------------------------------------
# local executor
# --------------------------------------------------------------------------------------------
def default_threads() -> int:
    """``run``'s torch threads when ``--threads`` is not given: ``SLURM_CPUS_PER_TASK`` inside
    a Slurm job, else ``OMP_NUM_THREADS`` when set, else the cores this process may use
    (``os.sched_getaffinity``, which honours taskset / cgroup cpusets)."""
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        with contextlib.suppress(KeyError, ValueError):
            n = int(os.environ[var])
            if n > 0:
                return n
    return max(1, len(os.sched_getaffinity(0)))


def thread_policy(jobs: int | None, n_cells: int, cores: int | None = None) -> tuple[int, int]:
    """(workers, torch threads per worker) with workers × threads ≤ cores: oversubscribed
    intra-op threads made forward passes ~100× slower on 2 cores (issue 15)."""
    cores = cores or len(os.sched_getaffinity(0))
    workers = max(1, min(jobs or cores, cores, max(n_cells, 1)))
    return workers, max(1, cores // workers)


@dataclass
class Outcome:
    cell: Cell
    ok: bool
    wall_s: float = 0.0
    log: str = ""
    error: str = ""
    metrics: dict[str, float] | None = None


def _timed(fn: Callable, cell: Cell, common: Common, log: str) -> tuple[bool, Any, float]:
    """Worker side: (ok, result or one-line error, wall seconds of the cell itself); the
    traceback goes to the cell's log."""
    t0 = time.time()
    try:
        return True, fn(cell, common, log), time.time() - t0
    except Exception as exc:
        with contextlib.suppress(OSError), open(log, "a") as fh:
            fh.write("".join(traceback.format_exception(exc)))
        return False, f"{type(exc).__name__}: {exc}", time.time() - t0


@contextlib.contextmanager
def _pool(workers: int):
    """One process pool per sweep (the dependency stage and the cells reuse its workers)."""
    import multiprocessing as mp

    if isinstance(workers, ProcessPoolExecutor):
        yield workers
        return
    ctx = mp.get_context("spawn")  # fresh interpreters: no forked torch thread pools
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield pool


def _local_stage(fn: Callable, cells: list[Cell], common: Common, workers, logs: Path,
                 label: str, on_done: Callable[[Outcome], None]) -> list[Outcome]:
    outcomes = []
    with _pool(workers) as pool:
        futs = {}
        for c in cells:
            log = str(logs / f"{label}-{c.slug}.log")
            futs[pool.submit(_timed, fn, c, common, log)] = (c, log)
        pending = set(futs)
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    c, log = futs[fut]
                    try:
                        ok, res, wall = fut.result()
                    except BaseException as exc:  # the worker process itself died
                        ok, res, wall = False, f"{type(exc).__name__}: {exc}", 0.0
                    if ok:
                        o = Outcome(c, True, wall, log,
                                    metrics=res.get("metrics") if isinstance(res, dict) else None)
                    else:  # a crashing cell does not stop the others
                        o = Outcome(c, False, wall, log, error=res)
                    outcomes.append(o)
                    on_done(o)
        except KeyboardInterrupt:
            for fut in pending:
                fut.cancel()
            # stop the running cells now: they are atomic (nothing half-written is ever read)
            # and a dead process's file locks are released by the kernel
            for proc in list(getattr(pool, "_processes", {}).values()):
                with contextlib.suppress(OSError):
                    proc.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return outcomes


def run_local(cells: list[Cell], common: Common, jobs: int | None = None,
              echo: Callable[[str], None] = print) -> list[Outcome]:
    """Dependency stage, then every cell not done, in one process pool."""
    todo = [c for c in cells if common.force or not is_cell_done(c)]
    workers, threads = thread_policy(jobs, len(todo))
    common = replace(common, threads=threads)
    logs = Path(common.out) / ".sweep" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    echo(f"{len(cells)} cell(s), {len(cells) - len(todo)} already done; {len(todo)} to run on "
         f"{workers} worker(s) × {threads} torch thread(s)")
    if not todo:
        return []
    with _pool(workers) as pool:
        return _run_local_stages(todo, common, pool, logs, echo)


def _run_local_stages(todo: list[Cell], common: Common, pool, logs: Path,
                      echo: Callable[[str], None]) -> list[Outcome]:
    from tqdm.auto import tqdm

    deps = dependency_cells(todo, common)
    dep_out = _local_stage(prepare_job, deps, replace(common, force=False), pool, logs,
                           "deps", lambda o: None)
    failed_deps = {dependency_key(common.spec(o.cell), o.cell.seed) for o in dep_out if not o.ok}
    for o in dep_out:
        if not o.ok:
            echo(f"[FAILED] shared artefacts of {o.cell.label}: {o.error} (log: {o.log})")
    bar = tqdm(total=len(todo), desc="sweep", unit="cell", disable=not sys.stderr.isatty())

    def on_done(o: Outcome) -> None:
        bar.update(1)
        line = (f"[done] {o.cell.label} in {o.wall_s:.1f} s" if o.ok else
                f"[FAILED] {o.cell.label} after {o.wall_s:.1f} s: {o.error} (log: {o.log})")
        bar.write(line) if not bar.disable else echo(line)

    runnable = [c for c in todo if dependency_key(common.spec(c), c.seed) not in failed_deps]
    skipped = [Outcome(c, False, 0.0, "", error="its shared artefacts failed to build")
               for c in todo if c not in runnable]
    try:
        out = _local_stage(run_cell_job, runnable, common, pool, logs, "cell", on_done)
    finally:
        bar.close()
    return out + skipped


# --------------------------------------------------------------------------------------------
# Slurm executor (submitit)
# --------------------------------------------------------------------------------------------
@dataclass
class SlurmOptions:
    partition: str | None = None
    gpus_per_task: int | None = None
    cpus_per_task: int = 1
    time_min: int = 60
    mem: str | None = None
    array_parallelism: int = 256
    extra: dict[str, str] = field(default_factory=dict)
    poll_s: float = 2.0


def check_slurm() -> None:
    """Raise a clear error when submitit or the Slurm controller is not reachable."""
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise RuntimeError("--executor slurm needs submitit: pip install -e '.[slurm]' "
                           "(nothing was submitted)") from None
    if shutil.which("sbatch") is None:
        raise RuntimeError("Slurm is not reachable: no sbatch on PATH (nothing was submitted)")
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    if not os.path.isfile(conf):  # scontrol would retry for a minute before failing
        raise RuntimeError(f"Slurm is not reachable: no configuration file {conf} "
                           "(set SLURM_CONF); nothing was submitted")
    try:
        res = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise RuntimeError("Slurm is not reachable (scontrol ping gave no answer in 30 s); "
                           "nothing was submitted") from None
    if res.returncode != 0 or "UP" not in res.stdout:
        why = (res.stdout + res.stderr).strip().splitlines()
        raise RuntimeError(f"Slurm is not reachable (scontrol ping: "
                           f"{why[-1] if why else res.returncode}); nothing was submitted")


class _SlurmJob:
    """A submitit callable that is requeued on preemption / timeout (submitit checkpointing):
    the cell is idempotent and f's training resumes from its checkpoint, so requeuing the same
    call is the checkpoint."""

    def __init__(self, fn: Callable) -> None:
        self.fn = fn

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _executor(folder: Path, opts: SlurmOptions, name: str, dependency: str | None = None):
    import submitit

    ex = submitit.SlurmExecutor(folder=str(folder / "%j"), max_num_timeout=3)
    params: dict[str, Any] = {"job_name": name, "time": int(opts.time_min),
                              "cpus_per_task": int(opts.cpus_per_task),
                              "array_parallelism": int(opts.array_parallelism),
                              "additional_parameters": dict(opts.extra)}
    if opts.partition:
        params["partition"] = opts.partition
    if opts.gpus_per_task:
        params["gpus_per_task"] = int(opts.gpus_per_task)
    if opts.mem:
        params["mem"] = opts.mem
    if dependency:
        params["dependency"] = dependency
    ex.update_parameters(**params)
    return ex


def _squeue_states(job_ids: list[str]) -> dict[str, str]:
    """Job id -> state for jobs Slurm still knows (pending / running / completing ...).
    Read from ``squeue``, which works without accounting storage (``sacct`` does not)."""
    if not job_ids:
        return {}
    res = subprocess.run(["squeue", "-h", "-r", "-o", "%i %T"], capture_output=True,
                         text=True, timeout=60)
    states = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return {j: states[j] for j in job_ids if j in states}


def _result(path: str) -> tuple[str, Any]:
    """('success', value) / ('error', traceback) from submitit's result pickle, or ('', None)
    while there is none."""
    import pickle

    p = Path(path)
    if not p.exists():
        return "", None
    try:
        with open(p, "rb") as fh:
            return pickle.load(fh)  # written by submitit for our own job, in our own folder
    except (EOFError, pickle.UnpicklingError):
        return "", None


def _cell_of(entry: dict) -> Cell:
    return Cell(entry["method"], entry["task"], entry["fold"], int(entry["seed"]),
                tuple(tuple(x) for x in entry["sets"]), entry["path"])


def run_slurm(cells: list[Cell], common: Common, opts: SlurmOptions, wait_jobs: bool = True,
              echo: Callable[[str], None] = print) -> list[Outcome]:
    """Submit the dependency stage and the cells as two job arrays (the cells' array starts
    ``afterany`` the first), then follow them until each finished or left the queue."""
    check_slurm()
    todo = [c for c in cells if common.force or not is_cell_done(c)]
    echo(f"{len(cells)} cell(s), {len(cells) - len(todo)} already done; submitting {len(todo)}")
    if not todo:
        return []
    common = replace(common, threads=int(opts.cpus_per_task))
    folder = Path(common.out).resolve() / ".sweep" / "slurm"
    folder.mkdir(parents=True, exist_ok=True)
    common = replace(common, out=str(Path(common.out).resolve()),
                     cache_dir=str(Path(common.cache_dir).resolve()) if common.cache_dir else None)
    deps = dependency_cells(todo, common)
    dep_ex = _executor(folder, opts, "axb-deps")
    dep_jobs = dep_ex.map_array(_SlurmJob(prepare_job), deps, [replace(common, force=False)] * len(deps))
    array_id = dep_jobs[0].job_id.split("_")[0]
    cell_ex = _executor(folder, opts, "axb-cell", dependency=f"afterany:{array_id}")
    jobs = cell_ex.map_array(_SlurmJob(run_cell_job), todo, [common] * len(todo))
    state = {"executor": "slurm", "folder": str(folder), "submitted": time.time(),
             "deps": [j.job_id for j in dep_jobs],
             "cells": [{**asdict(c), "job_id": j.job_id, "stdout": str(j.paths.stdout),
                        "stderr": str(j.paths.stderr), "result": str(j.paths.result_pickle)}
                       for c, j in zip(todo, jobs)]}
    _write_state(common.out, state)
    echo(f"submitted {len(dep_jobs)} dependency job(s) (array {array_id}) and {len(jobs)} "
         f"cell job(s) (array {jobs[0].job_id.split('_')[0]}); logs under {folder}")
    if not wait_jobs:
        return []
    return follow(state["cells"], opts.poll_s, echo)


def follow(entries: list[dict], poll_s: float = 2.0,
           echo: Callable[[str], None] = print) -> list[Outcome]:
    """Wait for the cell jobs recorded in ``entries`` (``last.json``'s cells); a job is over
    when its result pickle exists or it left the queue (cancelled, killed, node failure)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(entries), desc="sweep", unit="cell", disable=not sys.stderr.isatty())
    open_ = {e["job_id"]: e for e in entries}
    outcomes: list[Outcome] = []
    t0 = time.time()
    try:
        while open_:
            queued = _squeue_states(list(open_))
            for jid in list(open_):
                entry = open_[jid]
                cell = _cell_of(entry)
                kind, value = _result(entry["result"])
                if not kind and jid in queued:
                    continue
                if not kind:  # left the queue without a result: look once more, then give up
                    time.sleep(0.5)
                    kind, value = _result(entry["result"])
                log = entry["stderr"]
                if kind == "success":
                    o = Outcome(cell, True, float(value.get("wall_s", 0.0)), log,
                                metrics=value.get("metrics"))
                elif kind == "error":
                    last = str(value).strip().splitlines()
                    o = Outcome(cell, False, time.time() - t0, log, error=last[-1] if last else "error")
                else:
                    o = Outcome(cell, is_cell_done(cell), time.time() - t0, log,
                                error="" if is_cell_done(cell) else
                                "the job left the queue without a result (cancelled or killed)")
                del open_[jid]
                outcomes.append(o)
                bar.update(1)
                line = (f"[done] {cell.label} in {o.wall_s:.1f} s (job {jid})" if o.ok else
                        f"[FAILED] {cell.label} (job {jid}): {o.error} (log: {o.log})")
                bar.write(line) if not bar.disable else echo(line)
            if open_:
                time.sleep(poll_s)
    finally:
        bar.close()
    return outcomes


def status(out: str, echo: Callable[[str], None] = print) -> int:
    """``sweep --status``: each cell of the last sweep under ``out`` with its state."""
    path = Path(out) / ".sweep" / "last.json"
    if not path.is_file():
        echo(f"no sweep recorded under {out} ({path} is missing)")
        return 1
    state = json.loads(path.read_text())
    cells = state["cells"]
    queued: dict[str, str] = {}
    if state.get("executor") == "slurm" and shutil.which("squeue"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            queued = _squeue_states([c["job_id"] for c in cells])
    counts: dict[str, int] = {}
    for c in cells:
        done = (Path(c["path"]) / "done.json").is_file()
        st = "DONE" if done else queued.get(c.get("job_id", ""), "FAILED/GONE")
        counts[st] = counts.get(st, 0) + 1
        cell = _cell_of(c)
        extra = "" if done or st != "FAILED/GONE" else f" (log: {c.get('stderr') or c.get('log')})"
        echo(f"{st:12s} {cell.label}" + (f" job {c['job_id']}" if c.get("job_id") else "") + extra)
    echo("; ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


def _write_state(out: str, state: dict) -> None:
    d = Path(out) / ".sweep"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / ".last.json.tmp"
    tmp.write_text(json.dumps(state, indent=1, default=str))
    os.replace(tmp, d / "last.json")


def record_local(cells: list[Cell], out: str) -> None:
    logs = Path(out) / ".sweep" / "logs"
    _write_state(out, {"executor": "local", "submitted": time.time(),
                       "cells": [{**asdict(c), "log": str(logs / f"cell-{c.slug}.log")}
                                 for c in cells]})


def publish_cells(cells: list[Cell], out: str, root: str,
                  echo: Callable[[str], None] = print) -> list[str]:
    """Merge the sweep's finished cells into ``root/<task>.csv`` (leaderboard.publish)."""
    from .leaderboard import collect, publish

    written = []
    for task in sorted({c.task for c in cells}):
        part = collect(out, task)
        mine = {Path(c.path).name for c in cells if c.task == task and is_cell_done(c)}
        if len(part):
            part = part[part["run_id"].astype(str).isin(mine)]
        if not len(part):
            echo(f"nothing to publish for {task}")
            continue
        path, spath = publish(part, task, root)
        echo(f"published {path} and {spath}")
        written += [str(path), str(spath)]
    return written
