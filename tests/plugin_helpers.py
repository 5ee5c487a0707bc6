"""Helpers shared by the tests of the example plugins and of the scorer (imported from tests/,
which conftest.py puts on sys.path)."""
from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

from audio_xai_bench.api import TaskData
from audio_xai_bench.audio import Frontend
from audio_xai_bench.data import materialize
from audio_xai_bench.registry import TASKS


def forget_modules(package: str) -> None:
    """Drop ``package`` and its submodules from ``sys.modules`` (a test imported them)."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[name]


def install_example(example: Path, tmp_path: Path, monkeypatch) -> Path:
    """``pip install`` an example plugin (no deps, no index) into a folder put on sys.path,
    as a user's installed package; returns that folder."""
    src = tmp_path / "src"
    shutil.copytree(example, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                "__pycache__"))
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--no-build-isolation", "--quiet", "--target", str(target), str(src)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, f"pip could not install the example: {proc.stderr[-800:]}"
    monkeypatch.syspath_prepend(str(target))
    importlib.invalidate_caches()
    return target


def task_data(task_name: str, profile: str = "small", n_test: int | None = None) -> TaskData:
    """A registered task's first fold as ``TaskData`` (no cache, CPU), the test split cut to
    its first ``n_test`` clips."""
    task = TASKS.get(task_name)(profile=profile)
    fold = task.folds()[0]
    fe = task.frontend
    test = fold.test if n_test is None else fold.test[:n_test]
    return TaskData(task=task, fold="0", train=materialize(fold.train, fe),
                    valid=materialize(fold.valid, fe), test=materialize(test, fe),
                    frontend=Frontend(fe), seed=0)
