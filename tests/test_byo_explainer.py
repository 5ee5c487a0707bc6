"""Bring your own explainer: the example plugin in examples/my_explainer runs through the CLI by
import path, and once installed it is discovered through its entry point."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from audio_xai_bench import cli
from audio_xai_bench.registry import Registry
from plugin_helpers import forget_modules, install_example

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_explainer"


@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield
    forget_modules("my_explainer")


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
    install_example(EXAMPLE, tmp_path, monkeypatch)
    try:
        methods = Registry("method", "audio_xai_bench.methods")
        assert "energy-explainer" in methods.names()
        cls = methods.get("energy-explainer")
        assert cls.__name__ == "EnergyExplainer" and cls.registry_name == "energy-explainer"
        assert cls.capabilities == frozenset({"explain"})
    finally:
        forget_modules("my_explainer")
