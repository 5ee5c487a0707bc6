"""Bring your own explainer: the example plugin in examples/my_explainer runs through the CLI by
import path, and once installed it is discovered through its entry point."""
from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audio_xai_bench import cli
from audio_xai_bench.registry import Registry

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_explainer"


@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield
    for name in [m for m in sys.modules if m == "my_explainer" or m.startswith("my_explainer.")]:
        del sys.modules[name]


def test_example_runs_by_import_path(tmp_path, example_on_path):
    rc = cli.main(["run", "--method", "my_explainer.explainer:EnergyExplainer", "--task", "synth",
                   "--profile", "small", "--out", str(tmp_path / "runs"),
                   "--set", "classifier.epochs=1", "--set", "n_segments=4"])
    assert rc == 0
    files = list((tmp_path / "runs" / "synth").glob("*/*/metrics.json"))
    assert len(files) == 1
    metrics = json.loads(files[0].read_text())
    for tau in (0.9, 0.5, 0.1):
        assert f"faithfulness/ff_median@{tau}" in metrics
        assert f"faithfulness/random_ff_median@{tau}" in metrics
    assert metrics["faithfulness/n_pairs"] > 0
    config = json.loads((files[0].parent / "config.json").read_text())
    assert config["method_config"] == {"n_segments": 4}


def test_installed_example_is_found_by_entry_point(tmp_path, monkeypatch):
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                "__pycache__"))
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--no-build-isolation", "--quiet", "--target", str(target), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"pip could not install the example: {proc.stderr[-800:]}"
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    try:
        methods = Registry("method", "audio_xai_bench.methods")
        assert "energy-explainer" in methods.names()
        cls = methods.get("energy-explainer")
        assert cls.__name__ == "EnergyExplainer" and cls.registry_name == "energy-explainer"
        assert cls.capabilities == frozenset({"explain"})
    finally:
        for name in [m for m in sys.modules
                     if m == "my_explainer" or m.startswith("my_explainer.")]:
            del sys.modules[name]
