"""Command line: ``audio-xai-bench run | list | prepare | leaderboard | compare | report | meta``."""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import Any, Sequence

from .settings import SettingsError

#: exit codes: 0 done; 1 nothing found to work on; 2 refused input (a bad option, setting,
#: dataset layout or file: the message names it; nothing was written); 130 interrupted
EXIT_USAGE = 2

METRIC_DOCS: dict[str, str] = {
    "classifier/accuracy_top1|top5": "f against the labels (multiclass)",
    "classifier/macro_auprc|micro_auprc|weighted_f1": "f against the labels (multilabel; masked labels excluded)",
    "fidelity/top1|top5": "surrogate's top-k contains f's class (paper IV-C)",
    "fidelity/macro_auprc|micro_auprc": "surrogate vs f's thresholded outputs, sklearn average precision",
    "fidelity/macro_auprc_11pt|micro_auprc_11pt": "same, the authors' 11-threshold trapezoid",
    "fidelity/max_f1|weighted_f1": "multilabel F1 fidelity (max over thresholds; OpenMIC weighted F1)",
    "classification/*": "by-design model against the labels (same names as classifier/*)",
    "official/<name>": "the task's official metric for the method's own predictor only "
                       "(by-design; SONYC-UST: the DCASE 2020 macro-AUPRC); f's is classifier/*",
    "threshold/f|g/<class>": "multilabel decision threshold used per class for f / the "
                             "method's predictor (eval.threshold: float, per_class, list)",
    "faithfulness/ff_median@tau": "median of FF_x = f(x)_c - f(x_2)_c (eq. 7)",
    "faithfulness/random_ff_median@tau": "same with |L| random components removed from outside L",
    "faithfulness/wilcoxon_p@tau": "one-sided Wilcoxon signed-rank p, FF > random baseline",
    "faithfulness/n_selected_mean@tau": "mean |L| = #components with relevance > tau",
    "faithfulness/random_n_unmatched@tau": "pairs whose pool outside L is short of the count (NaN, not tested)",
    "faithfulness/random_mass_ff_median@tau": "FF of random components from outside L up to L's log1p mass",
    "faithfulness/random_mass_wilcoxon_p@tau": "one-sided Wilcoxon p, FF > mass-matched random FF",
    "faithfulness/random_mass_n_unmatched@tau": "pairs whose outside-L mass is below L's (NaN, not tested)",
    "faithfulness/energy_ff_median@tau": "FF of the |L| largest-mass components, class-blind (energy baseline)",
    "faithfulness/energy_mass_ff_median@tau": "FF of the largest components up to L's mass (energy baseline)",
    "faithfulness/mass_share_median@tau": "share of the input's log1p mass removed by L (also random_, random_mass_, energy_)",
    "faithfulness/deletion@b": "median f(x_2)_c with share b of the log1p mass removed, most relevant first (fill)",
    "faithfulness/insertion@b": "median f(x_2)_c keeping only share b of the mass, most relevant first (fill)",
    "faithfulness/deletion_auc|insertion_auc": "mean per-pair area under the curve over b (lower / higher = better)",
    "faithfulness/<curve>_randorder[@b]": "same with the method's units in random order (per-pair baseline)",
    "faithfulness/deletion_wilcoxon_p|insertion_wilcoxon_p": "one-sided Wilcoxon p, method order beats random order",
    "faithfulness/curve_n_pairs": "pairs with a complete curve",
    "faithfulness/n_degenerate": "pairs whose relevances are NaN or all equal (NaN curves)",
    "classwise/ff_median@0.1/<class>": "class-wise FF medians (paper Figs. 2-3)",
    "lmac/ai|ad|ag": "L-MAC recipe: % pairs whose p_c rises on the masked-in input (AI, up); mean relative drop (AD, down) / gain (AG, up) of p_c, % (tau = eval.listen_tau)",
    "lmac/fid_in": "L-MAC input fidelity: % pairs whose masked-in input keeps f's decision (up)",
    "lmac/sps|comp": "Quantus Sparseness (Gini, up) / Complexity (entropy, down) of the mask X_in / X",
    "lmac/<name>_soft": "the same with the soft mask sum_k max(r_k,0) X_k / X",
    "sanity/param_rand_spearman@<layer>": "run --sanity: median Spearman of relevance maps, trained f vs f re-initialised down to <layer> (down)",
    "sanity/label_rand_spearman": "run --sanity: the same vs f trained on permuted labels (down)",
    "sanity/pass": "run --sanity: 1 if the judged medians are all < 0.5 (explanations depend on f)",
    "groundtruth/si_sdri_median@tau": "SI-SDR(x_int, source) - SI-SDR(x, source), dB (synth)",
    "groundtruth/energy_precision_mean@tau": "share of x_int's energy inside the oracle class mask",
    "groundtruth/energy_precision_input_mean": "the same share for the input itself",
    "groundtruth/mask_precision_mean@tau": "share of x_int's log1p magnitude inside the oracle mask",
    "groundtruth/mask_precision_input_mean": "the same share for the input itself",
    "groundtruth/rank_accuracy_mean@tau": "CLEVR-XAI relevance rank accuracy: share of the top-|M| bins of the map inside the target mask",
    "groundtruth/time_auc_mean@tau": "ROC-AUC of per-frame relevance vs the target's active frames (Bolanos et al. 2025)",
    "groundtruth/distractor_share_mean@tau": "share of the map's log1p mass on the distractors' mask (synth-mix, synth-multilabel; lower is better)",
    "groundtruth/distractor_energy_share_mean@tau": "the same in linear energy",
    "groundtruth/distractor_share_input_mean": "the same share for the input itself",
}


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SettingsError(f"--set / --task-option expect key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _parse_task_options(items: Sequence[str]) -> dict[str, Any]:
    """``--task-option`` values typed: true/false, none, integers, floats, else strings."""
    out: dict[str, Any] = {}
    for k, v in _parse_sets(items).items():
        low = v.lower()
        if low in ("true", "false"):
            out[k] = low == "true"
        elif low in ("none", "null"):
            out[k] = None
        else:
            for cast in (int, float, str):
                try:
                    out[k] = cast(v)
                    break
                except ValueError:
                    continue
    return out


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SettingsError(f"--seeds expects integers like 0,1,2, got {text!r}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import RunSpec, run, summarize

    import torch

    from .sweep import default_threads

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be a positive integer, got {args.threads}")
    torch.set_num_threads(args.threads or default_threads())

    seeds = _parse_seeds(args.seeds) if args.seeds else [args.seed]
    spec = RunSpec(method=args.method, task=args.task, data_root=args.data_root, fold=args.fold,
                   seeds=seeds, device=args.device, out=args.out, cache_dir=args.cache_dir,
                   profile=args.profile, overrides=_parse_sets(args.set), force=args.force,
                   on_bad_file=args.on_bad_file, classifier_weights=args.classifier_weights,
                   task_options=_parse_task_options(args.task_option), sanity=args.sanity,
                   classifier=args.classifier)
    if args.classifier != "kumar" and args.classifier_weights:
        raise SettingsError("--classifier-weights fine-tunes the Kumar network: it cannot be "
                            f"combined with --classifier {args.classifier}")
    records = run(spec)
    table = summarize(records)
    from .leaderboard import write_aggregate

    for path in write_aggregate(records):
        print(f"aggregate over {len(records)} cell(s): {path}")
    import pandas as pd

    from .leaderboard import MAIN_METRICS

    main_rows = [m for m in MAIN_METRICS if m in table.index]
    short = table.loc[main_rows] if main_rows else table
    with pd.option_context("display.max_rows", 200, "display.width", 120):
        print(f"\n{args.method} on {args.task}: {len(records)} cell(s), mean ± std over cells")
        print(short.to_string(float_format=lambda v: f"{v:.4f}"))
    if records:
        print(f"every metric ({len(table)}): metrics.json in each cell, e.g. "
              f"{os.path.join(str(records[0]['path']), 'metrics.json')}")
    return 0


def _check_writable(out: str) -> None:
    """Refuse early (nothing run or submitted) when ``out`` cannot take results."""
    import tempfile

    try:
        os.makedirs(out, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".axb-write-test-"):
            pass
    except OSError as exc:
        raise RuntimeError(f"output folder {out} is not writable: {exc.strerror} "
                           "(nothing was run)") from None
    free = shutil.disk_usage(out).free
    if free < 50 * 2**20:
        raise RuntimeError(f"output folder {out} has only {free / 2**20:.0f} MiB free "
                           "(nothing was run)")


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import sweep as sw

    if args.status:
        return sw.status(args.out)
    grid: dict[str, Any] = sw.read_grid(args.grid) if args.grid else {}
    methods = args.methods or grid.get("methods")
    tasks = args.tasks or grid.get("tasks") or "synth"
    if not methods:
        raise ValueError("sweep needs --methods a,b|all or a --grid file with methods")
    folds = args.folds or grid.get("folds", "all")
    seeds = _parse_seeds(args.seeds) if args.seeds else grid.get("seeds", [0])
    common = sw.Common(out=args.out, profile=args.profile, device=args.device,
                       data_root=args.data_root, cache_dir=args.cache_dir,
                       on_bad_file=args.on_bad_file, force=args.force,
                       task_options=_parse_task_options(args.task_option))
    cells = sw.expand(methods, tasks, folds, seeds, variants=grid.get("variants"),
                      sets=_parse_sets(args.set), common=common)
    if args.dry_run:
        n_done = 0
        for c in cells:
            done = sw.is_cell_done(c)
            n_done += done
            print(f"{'done' if done else 'todo':4s} {c.label}  {c.path}")
        print(f"{len(cells)} cell(s): {n_done} done, {len(cells) - n_done} to run")
        return 0
    _check_writable(args.out)
    if args.executor == "slurm":
        extra = _parse_sets(args.slurm)
        opts = sw.SlurmOptions(partition=args.partition, gpus_per_task=args.gpus_per_task,
                               cpus_per_task=args.cpus_per_task, time_min=args.time,
                               mem=args.mem, array_parallelism=args.array_parallelism,
                               extra=extra)
        outcomes = sw.run_slurm(cells, common, opts, wait_jobs=not args.no_wait)
    else:
        sw.record_local(cells, args.out)
        try:
            outcomes = sw.run_local(cells, common, jobs=args.jobs)
        except KeyboardInterrupt:
            print("interrupted: finished cells are kept; rerun the same command to resume",
                  file=sys.stderr)
            return 130
    failed = [o for o in outcomes if not o.ok]
    n_done = sum(sw.is_cell_done(c) for c in cells)
    print(f"sweep: {n_done}/{len(cells)} cell(s) done, {len(failed)} failed")
    for o in failed:
        print(f"  FAILED {o.cell.label}: {o.error}\n         log: {o.log}")
    if args.publish:
        sw.publish_cells(cells, args.out, args.root)
    return 1 if failed else 0


def _first_line(obj: Any) -> str:
    lines = (obj.__doc__ or "").strip().splitlines()
    return lines[0] if lines else ""


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import METHODS, TASKS

    if args.method:
        return _list_settings(args.method, args.task)
    print("methods:")
    for name in METHODS.names():
        try:
            obj = METHODS.get(name)
            caps = ",".join(sorted(getattr(obj, "capabilities", ())))
            if getattr(obj, "needs_sources", False):
                caps += ";needs_sources"
            print(f"  {name:20s} [{caps}] {_first_line(obj)}")
        except Exception as exc:  # a broken plugin must not hide the others
            print(f"  {name:20s} (cannot load: {exc})")
    print("tasks:")
    for name in TASKS.names():
        try:
            obj = TASKS.get(name)
            src = ";sources" if getattr(obj, "has_sources", False) else ""
            print(f"  {name:20s} [{obj.kind}{src}] {_first_line(obj)}")
        except Exception as exc:
            print(f"  {name:20s} (cannot load: {exc})")
    from .registry import CLASSIFIERS

    print("classifiers:")
    for name in CLASSIFIERS.names():
        try:
            obj = CLASSIFIERS.get(name)
            caps = ",".join(sorted(getattr(obj, "capabilities", ())))
            how = "trained on the task" if getattr(obj, "trainable", False) else "pretrained"
            print(f"  {name:20s} [{getattr(obj, 'input', 'logmel')};{caps};{how}] "
                  f"{_first_line(obj)}")
        except Exception as exc:  # an optional dependency missing must not hide the others
            print(f"  {name:20s} (cannot load: {exc})")
    print("metrics:")
    for name, doc in METRIC_DOCS.items():
        print(f"  {name:46s} {doc}")
    return 0


def _list_settings(method: str, task_name: str | None) -> int:
    """The settings table of one method (and of f and the scorer), from the declarations."""
    from . import settings
    from .evaluate import EvalConfig
    from .registry import METHODS, TASKS
    from .runner import resolve_classifier_config

    cls = METHODS.get(method)
    task = TASKS.get(task_name)() if task_name else None
    sections = [(f"method {method}" + (f" on {task_name}" if task else " (defaults)"),
                 cls.resolve_config(task, "default", {}), cls.setting_rules, "--set KEY=VALUE")]
    if task is not None:
        sections.append(("classifier f", resolve_classifier_config(task, "default", {}), {},
                         "--set classifier.KEY=VALUE"))
    sections.append(("scorer", EvalConfig().as_dict(), {}, "--set eval.KEY=VALUE"))
    for title, cfg, rules, how in sections:
        print(f"{title} ({how}):")
        for key, typ, default, allowed in settings.table(cfg, rules):
            print(f"  {key:22s} {typ:6s} {default:26s} {allowed}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare
    from .registry import TASKS

    task = TASKS.get(args.task)(data_root=args.data_root, profile=args.profile,
                                **_parse_task_options(args.task_option))
    cache = args.cache_dir or os.path.join(args.out, ".cache")  # where `run --out` looks
    summary: dict[str, Any] = prepare(task, on_bad_file=args.on_bad_file, cache_dir=cache)
    import json

    print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    import pandas as pd

    from .leaderboard import collect, format_summary, paper_tables, publish, summary

    long_df = collect(args.out, args.task)
    if not len(long_df):
        print(f"no finished cell under {args.out}" + (f" for task {args.task}" if args.task else ""),
              file=sys.stderr)
        return 1
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
    if metrics:
        known = set(long_df["metric"].unique())
        unknown = [m for m in metrics if m not in known]
        if unknown:
            raise SettingsError(f"unknown metric(s) {unknown} for --metrics; the finished cells "
                                f"report: {', '.join(sorted(known))}")
    for task in sorted(long_df["task"].unique()):
        part = long_df[long_df["task"] == task]
        table = format_summary(summary(part), metrics)
        with pd.option_context("display.max_rows", 500, "display.max_columns", 50,
                               "display.width", 250, "display.max_colwidth", 40):
            print(f"\n{task}: {part['run_id'].nunique()} cell(s), mean ± std over cells (#rank)")
            print(table.drop(columns=["task"]).to_string(index=False))
            if args.paper_tables:
                for title, t in paper_tables(summary(part)).items():
                    print(f"\n{task} — {title}")
                    print(t.to_string(index=False))
        if args.publish:
            path, spath = publish(part, task, args.root, on_mismatch=args.on_mismatch)
            print(f"published {path} and {spath}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import pandas as pd

    from .compare import compare

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    table = compare(args.out, args.task, methods, args.metric, alpha=args.alpha,
                    n_boot=args.n_boot)
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50,
                           "display.width", 250):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.csv:
        target = args.csv
    else:
        tag = (args.metric or "main").replace("/", "_").replace(",", "+")
        target = os.path.join(args.out, args.task, f"compare_{tag}.csv")
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    table.to_csv(target, index=False)
    print(f"written {target}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import report_cell, report_cells

    if args.run:
        pages = [report_cell(args.run, tau=args.tau)]
    elif args.task:
        pages = report_cells(args.out, args.task, args.method, tau=args.tau)
    else:
        raise ValueError("report needs --run DIR or --task T [--method M]")
    if not pages:
        print("no finished cell found", file=sys.stderr)
        return 1
    for page in pages:
        print(f"written {page}")
    return 0


def cmd_meta(args: argparse.Namespace) -> int:
    """Run the reference explainers through the normal runner and meta-evaluate every metric."""
    from pathlib import Path

    from .metrics import meta
    from .registry import METHODS, TASKS
    from .runner import RunSpec, check_sources, run

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    seeds = _parse_seeds(args.seeds)
    methods = list(meta.REFERENCE_METHODS)
    task_cls = TASKS.get(args.task)
    for m in methods:  # refuse a task without sources before any work
        check_sources(METHODS.get(m), task_cls, m, args.task)
    opts = _parse_task_options(args.task_option)
    for seed in seeds:  # seed-major: an interrupted meta leaves complete seeds behind
        for m in methods:
            run(RunSpec(method=m, task=args.task, seeds=[seed], device=args.device,
                        out=args.out, profile=args.profile, task_options=opts,
                        force=args.force, overrides=_parse_sets(args.set)))
    metrics, pairs = meta.load_cells(args.out, args.task, methods, seeds)
    table = meta.meta_table(metrics, pairs, alpha=args.alpha, methods=methods)
    path = Path(args.csv) if args.csv else Path(args.out) / args.task / "meta.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    print(meta.format_table(table, methods))
    n_valid = int((table["valid"].astype(str) == "True").sum())
    n_checked = int(table["valid"].astype(str).isin(["True", "False"]).sum())
    print(f"\n{n_valid} of {n_checked} metrics order the reference explainers as expected "
          f"(alpha={args.alpha}, Holm); table: {path}")
    if args.publish:
        from .leaderboard import publish_meta

        for p in publish_meta(table, args.task, args.root):
            print(f"published {p}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audio-xai-bench",
                                description="Evaluate interpretability methods of audio "
                                            "classifiers (Parekh et al., TASLP 2024 protocol).")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (they are shown only on a terminal anyway)")
    p.add_argument("--log-file", default=None,
                   help="also append the messages and the summary to this file")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="fit and evaluate one method on one task")
    r.add_argument("--method", required=True, help="registered name or package.module:Class")
    r.add_argument("--task", default="synth", help="registered task name (default: synth)")
    r.add_argument("--data-root", default=None, help="dataset folder in its official layout")
    r.add_argument("--fold", default="all", help="fold name, or 'all' (default)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda")
    r.add_argument("--out", default="runs", help="results root (default: runs)")
    r.add_argument("--cache-dir", default=None, help="classifier/dictionary cache (default OUT/.cache)")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a method setting; classifier.KEY and eval.KEY reach f and the scorer")
    r.add_argument("--profile", default="default", choices=["default", "small"])
    r.add_argument("--force", action="store_true", help="redo cells that are already done")
    r.add_argument("--on-bad-file", default="fail", choices=["fail", "skip"])
    r.add_argument("--classifier", default="kumar", metavar="NAME|module:Object|PATH.pt",
                   help="the model explained: kumar (default: the paper's CNN, trained on the "
                        "task), a registered classifier (yamnet, yamnet-onnx; see list), "
                        "package.module:Object, or a Kumar state-dict file used as it is")
    r.add_argument("--classifier-weights", default=None,
                   help="checkpoint of the Kumar network to fine-tune instead of training f from scratch")
    r.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch (default: SLURM_CPUS_PER_TASK, else "
                        "OMP_NUM_THREADS, else the usable cores; use 1 when several runs share "
                        "a small machine: oversubscribed threads slow torch down a lot)")
    r.add_argument("--sanity", nargs="?", const="all", default=None, metavar="STAGES",
                   help="also run the Adebayo et al. sanity checks (refits the method per "
                        "randomised layer; STAGES e.g. head,B6,B1, default all)")
    r.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE",
                   help="task setting, e.g. exclude_nmi=false (SONYC) or max_clips=500")
    r.set_defaults(func=cmd_run)

    sw = sub.add_parser("sweep", help="run methods × tasks × folds × seeds as independent cells "
                                      "(local process pool or Slurm)")
    sw.add_argument("--methods", default=None, help="comma-separated methods, or 'all'")
    sw.add_argument("--tasks", default=None, help="comma-separated tasks (default: synth)")
    sw.add_argument("--folds", default=None, help="comma-separated folds, or 'all' (default)")
    sw.add_argument("--seeds", default=None, help="comma-separated seeds (default: 0)")
    sw.add_argument("--grid", default=None, help="TOML grid file (methods, tasks, folds, seeds, "
                                                 "[variants] of --set per method)")
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="setting applied to every cell (as in run)")
    sw.add_argument("--executor", default="local", choices=["local", "slurm"])
    sw.add_argument("--jobs", type=int, default=None,
                    help="local workers (default: one per core; torch threads = cores // jobs)")
    sw.add_argument("--dry-run", action="store_true", help="print the cells and which are done")
    sw.add_argument("--status", action="store_true", help="state of the last sweep under --out")
    sw.add_argument("--publish", action="store_true",
                    help="merge finished cells into ROOT/<task>.csv at the end")
    sw.add_argument("--root", default="leaderboard", help="leaderboard folder for --publish")
    sw.add_argument("--out", default="runs")
    sw.add_argument("--cache-dir", default=None)
    sw.add_argument("--data-root", default=None)
    sw.add_argument("--device", default="auto")
    sw.add_argument("--profile", default="default", choices=["default", "small"])
    sw.add_argument("--force", action="store_true", help="redo cells that are already done")
    sw.add_argument("--on-bad-file", default="fail", choices=["fail", "skip"])
    sw.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE")
    sl = sw.add_argument_group("Slurm (--executor slurm; pip install -e '.[slurm]')")
    sl.add_argument("--partition", default=None)
    sl.add_argument("--gpus-per-task", type=int, default=None)
    sl.add_argument("--cpus-per-task", type=int, default=1)
    sl.add_argument("--time", type=int, default=60, help="minutes per cell job (default 60)")
    sl.add_argument("--mem", default=None, help="e.g. 16G")
    sl.add_argument("--array-parallelism", type=int, default=256)
    sl.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                    help="extra sbatch option, e.g. --slurm qos=normal --slurm account=lab")
    sl.add_argument("--no-wait", action="store_true",
                    help="submit and return; follow with sweep --status")
    sw.set_defaults(func=cmd_sweep)
    mt = sub.add_parser("meta", help="meta-evaluate every metric on the reference explainers "
                                     "(oracle, energy, random, anti-oracle)")
    mt.add_argument("--task", default="synth-mix", help="a task with true sources (default: synth-mix)")
    mt.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    mt.add_argument("--profile", default="default", choices=["default", "small"])
    mt.add_argument("--device", default="auto", help="auto | cpu | cuda")
    mt.add_argument("--out", default="runs", help="results root (default: runs)")
    mt.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    mt.add_argument("--alpha", type=float, default=0.01, help="significance after Holm (0.01)")
    mt.add_argument("--csv", default=None, help="table path (default OUT/TASK/meta.csv)")
    mt.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="as for run (eval.KEY reaches the scorer)")
    mt.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE")
    mt.add_argument("--force", action="store_true", help="redo cells that are already done")
    mt.add_argument("--publish", action="store_true",
                    help="write ROOT/TASK_meta.csv and the :valid columns of ROOT/TASK_summary.csv")
    mt.add_argument("--root", default="leaderboard", help="published leaderboard folder")
    mt.set_defaults(func=cmd_meta)

    ls = sub.add_parser("list", help="list methods, tasks and metrics, or one method's settings")
    ls.add_argument("--method", default=None,
                    help="print this method's settings: type, default, allowed values")
    ls.add_argument("--task", default=None, help="with --method: the defaults on this task")
    ls.set_defaults(func=cmd_list)

    pr = sub.add_parser("prepare", help="check a dataset's layout and build its cache")
    pr.add_argument("--task", required=True)
    pr.add_argument("--data-root", required=True)
    pr.add_argument("--out", default="runs",
                    help="results root of the runs that will use the cache (default: runs)")
    pr.add_argument("--cache-dir", default=None,
                    help="default: OUT/.cache, where `run --out OUT` looks")
    pr.add_argument("--task-option", action="append", default=[], metavar="KEY=VALUE")
    pr.add_argument("--profile", default="default", choices=["default", "small"])
    pr.add_argument("--on-bad-file", default="fail", choices=["fail", "skip"])
    pr.set_defaults(func=cmd_prepare)

    lb = sub.add_parser("leaderboard", help="summarise finished runs (mean ± std, ranks) and "
                                            "optionally publish the long-format CSVs")
    lb.add_argument("--task", default=None, help="one task (default: every task under --out)")
    lb.add_argument("--out", default="runs", help="results root (default: runs)")
    lb.add_argument("--metrics", default=None,
                    help="comma-separated metrics to print (default: the main ones present)")
    lb.add_argument("--publish", action="store_true",
                    help="merge the rows into ROOT/<task>.csv and rewrite ROOT/<task>_summary.csv")
    lb.add_argument("--root", default="leaderboard", help="leaderboard folder (default: leaderboard)")
    lb.add_argument("--on-mismatch", default="refuse", choices=["refuse", "mark", "replace"],
                    help="--publish when a method's rows would come from different code (suite "
                         "version / git commit / metric definitions): refuse (default), mark "
                         "them mixed, or replace the method's older rows")
    lb.add_argument("--paper-tables", action="store_true",
                    help="also print the tables in the shape of the paper's Tables IV, V and VIII")
    lb.set_defaults(func=cmd_leaderboard)

    cp = sub.add_parser("compare", help="pairwise significance tests between methods")
    cp.add_argument("--task", required=True)
    cp.add_argument("--methods", required=True, help="comma-separated methods, e.g. l2i,random")
    cp.add_argument("--metric", default=None,
                    help="metric name(s), comma-separated (default: the task's main ones)")
    cp.add_argument("--out", default="runs", help="results root (default: runs)")
    cp.add_argument("--csv", default=None,
                    help="output CSV (default: OUT/<task>/compare_<metric>.csv)")
    cp.add_argument("--alpha", type=float, default=0.05, help="level after Holm (default 0.05)")
    cp.add_argument("--n-boot", type=int, default=1000, help="bootstrap replicates (multilabel)")
    cp.set_defaults(func=cmd_compare)

    rp = sub.add_parser("report", help="plots and an HTML page for run cells")
    rp.add_argument("--run", default=None, help="one cell folder")
    rp.add_argument("--task", default=None, help="all cells of a task (with --out)")
    rp.add_argument("--method", default=None, help="only this method's cells")
    rp.add_argument("--out", default="runs", help="results root (default: runs)")
    rp.add_argument("--tau", type=float, default=0.1, help="τ of the class-wise plot")
    rp.set_defaults(func=cmd_report)
    return p


class _Tee:
    """stdout copy into ``--log-file`` (summary lines and messages, never progress bars)."""

    def __init__(self, stream, path: str) -> None:
        self.stream, self.file = stream, open(path, "a", encoding="utf-8")

    def write(self, text: str) -> int:
        self.file.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.file.flush()
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    from . import progress

    args = build_parser().parse_args(argv)
    progress.QUIET = bool(args.quiet)
    tee = None
    if args.log_file:
        tee = _Tee(sys.stdout, args.log_file)
        sys.stdout = tee
    try:
        return _dispatch(args)
    finally:
        if tee is not None:
            sys.stdout = tee.stream
            tee.file.close()


def _dispatch(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    except (KeyError, ValueError, TypeError, OSError, RuntimeError, ImportError) as exc:
        if os.environ.get("AXB_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
