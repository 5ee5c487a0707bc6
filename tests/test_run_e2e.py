"""End to end through the CLI: files written, reruns skipped, bad input answered clearly,
an interrupted run leaves nothing half-written, and the real tasks run on official-layout
fixtures."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from audio_xai_bench.cli import main

sys.path.insert(0, str(Path(__file__).parent))
import fixtures_real  # noqa: E402

SMALL = ["--profile", "small", "--set", "classifier.epochs=2", "--set", "epochs=1"]


def _cells(out: Path, task: str, method: str) -> list[Path]:
    return sorted(p.parent for p in (out / task / method).glob("*/done.json"))


def test_run_writes_a_complete_cell_and_skips_it_on_rerun(tmp_path, capsys):
    out = tmp_path / "runs"
    assert main(["run", "--method", "l2i", "--task", "synth", "--out", str(out), *SMALL]) == 0
    (cell,) = _cells(out, "synth", "l2i")
    metrics = json.loads((cell / "metrics.json").read_text())
    for key in ("fidelity/top1", "faithfulness/ff_median@0.1", "faithfulness/random_ff_median@0.1",
                "faithfulness/wilcoxon_p@0.1", "classifier/accuracy_top1",
                "groundtruth/energy_precision_input_mean"):
        assert key in metrics, key
    config = json.loads((cell / "config.json").read_text())
    assert config["method_config"]["epochs"] == 1 and config["eval_config"]["baseline_count"] == "mean"
    assert len(pd.read_csv(cell / "per_sample.csv")) == metrics["n_test"]
    pairs = pd.read_csv(cell / "pairs.csv")
    assert {"ff@0.1", "random_ff@0.1", "n_selected@0.1"} <= set(pairs.columns)
    wavs = list((cell / "interpretations").glob("*_interpretation.wav"))
    assert wavs and list((cell / "interpretations").glob("*_input.wav"))
    stamp = (cell / "done.json").stat().st_mtime
    capsys.readouterr()
    assert main(["run", "--method", "l2i", "--task", "synth", "--out", str(out), *SMALL]) == 0
    assert "[skip]" in capsys.readouterr().out
    assert (cell / "done.json").stat().st_mtime == stamp
    assert main(["run", "--method", "l2i", "--task", "synth", "--out", str(out), *SMALL,
                 "--force"]) == 0
    assert (cell / "done.json").stat().st_mtime != stamp


def test_multilabel_synth_reports_auprc_fidelity(tmp_path):
    out = tmp_path / "runs"
    assert main(["run", "--method", "l2i", "--task", "synth-multilabel", "--out", str(out),
                 *SMALL]) == 0
    (cell,) = _cells(out, "synth-multilabel", "l2i")
    metrics = json.loads((cell / "metrics.json").read_text())
    assert "fidelity/macro_auprc" in metrics and "classifier/macro_auprc" in metrics


@pytest.mark.parametrize("args, needle", [
    (["--method", "nope"], "l2i"),
    (["--method", "l2i", "--task", "nope"], "synth"),
    (["--method", "l2i", "--set", "nokey=1"], "valid keys"),
    (["--method", "l2i", "--set", "classifier.nokey=1"], "valid"),
    (["--method", "l2i", "--set", "eval.nokey=1"], "valid"),
])
def test_bad_arguments_are_answered_with_the_valid_names(tmp_path, capsys, args, needle):
    assert main(["run", *args, "--out", str(tmp_path), "--profile", "small"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err


def test_interrupted_run_leaves_nothing_and_resumes(tmp_path, monkeypatch, capsys):
    from audio_xai_bench import evaluate

    out = tmp_path / "runs"
    original = evaluate.Scorer.run

    def boom(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluate.Scorer, "run", boom)
    assert main(["run", "--method", "l2i", "--task", "synth", "--out", str(out), *SMALL]) == 130
    assert _cells(out, "synth", "l2i") == []
    assert not [p for p in (out / "synth" / "l2i").glob("*") if not p.name.startswith(".")]
    monkeypatch.setattr(evaluate.Scorer, "run", original)
    assert main(["run", "--method", "l2i", "--task", "synth", "--out", str(out), *SMALL]) == 0
    assert len(_cells(out, "synth", "l2i")) == 1
    assert "cached" in json.loads((_cells(out, "synth", "l2i")[0] / "config.json").read_text())["classifier"]


def test_missing_data_root_says_what_layout_is_expected(tmp_path, capsys):
    assert main(["run", "--method", "l2i", "--task", "esc50", "--data-root",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "esc50.csv" in err and "Getting the data" in err


@pytest.mark.parametrize("task, maker, metric", [
    ("esc50", fixtures_real.make_esc50, "classifier/accuracy_top1"),
    ("sonyc-ust", fixtures_real.make_sonyc, "classifier/macro_auprc_dcase"),
    ("openmic", fixtures_real.make_openmic, "classifier/weighted_f1"),
])
def test_real_tasks_run_end_to_end_on_official_layout_fixtures(tmp_path, task, maker, metric):
    root = maker(str(tmp_path / "data"))
    out = tmp_path / "runs"
    args = ["run", "--method", "l2i", "--task", task, "--data-root", root, "--out", str(out),
            *SMALL, "--set", "eval.listen=1", "--set", "eval.threshold=0.3",
            "--set", "eval.taus=0.5,0.1",
            # the layouts are under test, not the curves (tests/test_metrics_curves.py): two
            # budgets and no random orders keep the multilabel cells' many pairs cheap
            "--set", "eval.budgets=0.1,0.3", "--set", "eval.curve_draws=0"]
    if task == "esc50":
        args += ["--fold", "2"]
    assert main(args) == 0
    (cell,) = _cells(out, task, "l2i")
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metric in metrics  # f's official metric, at the classifier level only
    assert not [k for k in metrics if k.startswith("official/")]  # post-hoc: f's, not its own
    assert any(k.startswith("fidelity/") for k in metrics)
    if task == "sonyc-ust":  # the DCASE evaluation's own AUPRC beside scikit-learn's
        assert "classifier/macro_auprc_dcase" in metrics
    assert metrics["faithfulness/n_pairs"] > 0 and "faithfulness/ff_median@0.1" in metrics


def test_prepare_command_checks_layout_and_summarises(tmp_path, capsys):
    root = fixtures_real.make_esc50(str(tmp_path / "data"))
    assert main(["prepare", "--task", "esc50", "--data-root", root, "--cache-dir",
                 str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "test" in out
    assert main(["prepare", "--task", "esc50", "--data-root", str(tmp_path / "none")]) == 2
    assert "Getting the data" in capsys.readouterr().err
    # without --cache-dir the cache goes where `run --out OUT` looks for it
    assert main(["prepare", "--task", "esc50", "--data-root", root, "--out",
                 str(tmp_path / "myruns")]) == 0
    assert any((tmp_path / "myruns" / ".cache").rglob("wave.npy"))


def test_task_options_are_typed_and_recorded(tmp_path):
    from audio_xai_bench.cli import _parse_task_options

    assert _parse_task_options(["exclude_nmi=false", "max_clips=5"]) == {"exclude_nmi": False,
                                                                          "max_clips": 5}
    root = fixtures_real.make_sonyc(str(tmp_path / "data"))
    out = tmp_path / "runs"
    assert main(["run", "--method", "random", "--task", "sonyc-ust", "--data-root", root,
                 "--out", str(out), *SMALL[:4], "--task-option", "exclude_nmi=false",
                 "--set", "eval.listen=0"]) == 0
    (cell,) = _cells(out, "sonyc-ust", "random")
    config = json.loads((cell / "config.json").read_text())
    assert config["task_options"] == {"exclude_nmi": False}
    assert config["task"]["classwise_exclude"] == []


def test_classifier_weights_are_loaded_and_fine_tuned_per_paper(tmp_path):
    import torch

    from audio_xai_bench.classifier import KumarCNN
    from audio_xai_bench.runner import resolve_classifier_config
    from audio_xai_bench.registry import TASKS

    root = fixtures_real.make_esc50(str(tmp_path / "data"))
    task = TASKS.get("esc50")(data_root=root, profile="small")
    cfg = resolve_classifier_config(task, "small", {})
    net = KumarCNN(task.num_classes, width=cfg["width"], head_mid=cfg["head_mid"])
    torch.save({"model": net.state_dict()}, tmp_path / "f.pt")
    out = tmp_path / "runs"
    assert main(["run", "--method", "random", "--task", "esc50", "--data-root", root,
                 "--fold", "1", "--out", str(out), *SMALL[:4], "--set", "eval.listen=0",
                 "--classifier-weights", str(tmp_path / "f.pt")]) == 0
    (cell,) = _cells(out, "esc50", "random")
    info = json.loads((cell / "config.json").read_text())["classifier"]
    assert info["finetune"] == "head" and info["loaded_weights"]["n_tensors"] > 10
    # the conv blocks were frozen: the cached f keeps the given block weights
    state = torch.load(info["checkpoint"], weights_only=True)["model"]
    assert torch.equal(state["blocks.0.0.weight"], net.state_dict()["blocks.0.0.weight"])
    assert not torch.equal(state["fc.weight"], net.state_dict()["fc.weight"])


def test_list_loads_every_registered_method_and_task(capsys):
    from audio_xai_bench.registry import METHODS, TASKS

    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "cannot load" not in out
    for name in METHODS.names() + TASKS.names():
        assert f"  {name} " in out
    assert "faithfulness/ff_median@tau" in out
