"""Command line: ``audio-xai-bench run | list | prepare | leaderboard | compare``."""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Sequence

METRIC_DOCS: dict[str, str] = {
    "classifier/accuracy_top1|top5": "f against the labels (multiclass)",
    "classifier/macro_auprc|micro_auprc|weighted_f1": "f against the labels (multilabel; masked labels excluded)",
    "fidelity/top1|top5": "surrogate's top-k contains f's class (paper IV-C)",
    "fidelity/macro_auprc|micro_auprc": "surrogate vs f's thresholded outputs, sklearn average precision",
    "fidelity/macro_auprc_11pt|micro_auprc_11pt": "same, the authors' 11-threshold trapezoid",
    "fidelity/max_f1|weighted_f1": "multilabel F1 fidelity (max over thresholds; OpenMIC weighted F1)",
    "classification/*": "by-design model against the labels (same names as classifier/*)",
    "official/<name>": "the task's official metric for the model that predicts",
    "faithfulness/ff_median@tau": "median of FF_x = f(x)_c - f(x_2)_c (eq. 7)",
    "faithfulness/random_ff_median@tau": "same with |L| random components removed from outside L",
    "faithfulness/wilcoxon_p@tau": "one-sided Wilcoxon signed-rank p, FF > random baseline",
    "faithfulness/n_selected_mean@tau": "mean |L| = #components with relevance > tau",
    "classwise/ff_median@0.1/<class>": "class-wise FF medians (paper Figs. 2-3)",
    "groundtruth/si_sdri_median@tau": "SI-SDR(x_int, source) - SI-SDR(x, source), dB (synth)",
    "groundtruth/energy_precision_mean@tau": "share of x_int's energy inside the oracle class mask",
    "groundtruth/energy_precision_input_mean": "the same share for the input itself",
}


def _parse_sets(items: Sequence[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit(f"error: --set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def _parse_seeds(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"error: --seeds expects integers like 0,1,2, got {text!r}") from None


def cmd_run(args: argparse.Namespace) -> int:
    from .runner import RunSpec, run, summarize

    seeds = _parse_seeds(args.seeds) if args.seeds else [args.seed]
    spec = RunSpec(method=args.method, task=args.task, data_root=args.data_root, fold=args.fold,
                   seeds=seeds, device=args.device, out=args.out, cache_dir=args.cache_dir,
                   profile=args.profile, overrides=_parse_sets(args.set), force=args.force,
                   on_bad_file=args.on_bad_file, classifier_weights=args.classifier_weights)
    records = run(spec)
    table = summarize(records)
    import pandas as pd

    with pd.option_context("display.max_rows", 200, "display.width", 120):
        print(f"\n{args.method} on {args.task}: {len(records)} cell(s)")
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from .registry import METHODS, TASKS

    print("methods:")
    for name in METHODS.names():
        try:
            obj = METHODS.get(name)
            doc = (obj.__doc__ or "").strip().splitlines()[0]
            caps = ",".join(sorted(getattr(obj, "capabilities", ())))
            print(f"  {name:18s} [{caps}] {doc}")
        except Exception as exc:  # a broken plugin must not hide the others
            print(f"  {name:18s} (cannot load: {exc})")
    print("tasks:")
    for name in TASKS.names():
        try:
            obj = TASKS.get(name)
            doc = (obj.__doc__ or "").strip().splitlines()[0]
            print(f"  {name:18s} [{obj.kind}] {doc}")
        except Exception as exc:
            print(f"  {name:18s} (cannot load: {exc})")
    print("metrics:")
    for name, doc in METRIC_DOCS.items():
        print(f"  {name:46s} {doc}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from .prepare import prepare
    from .registry import TASKS

    task = TASKS.get(args.task)(data_root=args.data_root, profile=args.profile)
    summary: dict[str, Any] = prepare(task, on_bad_file=args.on_bad_file,
                                      cache_dir=args.cache_dir)
    import json

    print(json.dumps(summary, indent=2, default=str))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="audio-xai-bench",
                                description="Evaluate interpretability methods of audio "
                                            "classifiers (Parekh et al., TASLP 2024 protocol).")
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
    r.add_argument("--classifier-weights", default=None,
                   help="checkpoint of the Kumar network to fine-tune instead of training f from scratch")
    r.set_defaults(func=cmd_run)

    ls = sub.add_parser("list", help="list methods, tasks and metrics")
    ls.set_defaults(func=cmd_list)

    pr = sub.add_parser("prepare", help="check a dataset's layout and build its cache")
    pr.add_argument("--task", required=True)
    pr.add_argument("--data-root", required=True)
    pr.add_argument("--cache-dir", default=None)
    pr.add_argument("--profile", default="default", choices=["default", "small"])
    pr.add_argument("--on-bad-file", default="fail", choices=["fail", "skip"])
    pr.set_defaults(func=cmd_prepare)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: finished cells are kept; rerun the same command to resume",
              file=sys.stderr)
        return 130
    except (KeyError, ValueError, TypeError, FileNotFoundError) as exc:
        if os.environ.get("AXB_DEBUG"):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
