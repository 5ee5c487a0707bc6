"""Settings are validated before any work: every setting type, enums, ranges, usage errors."""
from __future__ import annotations

import os
import stat

import pytest

from audio_xai_bench import settings
from audio_xai_bench.registry import METHODS, TASKS
from audio_xai_bench.runner import resolve_classifier_config, resolve_eval_config


def _l2i(over):
    return METHODS.get("l2i").resolve_config(TASKS.get("synth")(), "default", over)


@pytest.mark.parametrize("over, needle", [
    ({"attention": "nonsense"}, "auto|per_class|shared"),      # enum
    ({"fid_schedule": "cod"}, "code|constant"),
    ({"relevance_norm": "xyz"}, "paper|code"),
    ({"hidden_layers": "B9"}, "B1|B2"),                         # tuple items
    ({"hidden_layers": ","}, "must not be empty"),
    ({"K": "abc"}, "'K'"),                                      # int that does not parse
    ({"K": "0"}, ">= 1"),                                       # int range
    ({"lr": "-1e-3"}, "> 0"),                                   # float range
    ({"alpha": "nan"}, "not finite"),
    ({"dropout": "1.0"}, "< 1"),
    ({"select": "best"}, "valid|last"),
    ({"nope": "1"}, "valid keys"),                              # unknown key
])
def test_method_settings_refused_with_key_and_allowed_values(over, needle):
    with pytest.raises(settings.SettingsError) as info:
        _l2i(over)
    msg = str(info.value)
    assert needle in msg
    key = next(iter(over))
    assert repr(key) in msg or key in msg


def test_method_settings_parse_to_declared_types():
    cfg = _l2i({"K": "12", "alpha": "2.5", "hidden_layers": "B5,B6", "attention": "shared"})
    assert cfg["K"] == 12 and isinstance(cfg["K"], int) and cfg["alpha"] == 2.5
    assert cfg["hidden_layers"] == ("B5", "B6") and cfg["attention"] == "shared"
    ig = METHODS.get("integrated-gradients").resolve_config(None, "default", {"method": "riemann_left"})
    assert ig["method"] == "riemann_left"
    with pytest.raises(settings.SettingsError, match="gausslegendre"):
        METHODS.get("integrated-gradients").resolve_config(None, "default", {"method": "simpson"})


def test_classifier_and_eval_settings_checked():
    task = TASKS.get("synth")()
    with pytest.raises(settings.SettingsError, match=">= [01]"):
        resolve_classifier_config(task, "default", {"epochs": "-1"})
    assert resolve_classifier_config(task, "default", {"epochs": "0"})["epochs"] == 0
    with pytest.raises(settings.SettingsError, match="> 0"):
        resolve_classifier_config(task, "default", {"width": "0"})
    assert resolve_classifier_config(task, "default", {"pos_weight": "1,2.5"})["pos_weight"] == (1.0, 2.5)
    with pytest.raises(settings.SettingsError, match="per_sample"):
        resolve_eval_config({"baseline_count": "lots"}, 0)
    assert resolve_eval_config({"baseline_count": "7"}, 0).baseline_count == "7"
    assert resolve_eval_config({"threshold": "0.3,0.4"}, 0).threshold == (0.3, 0.4)
    assert resolve_eval_config({"threshold": "per_class"}, 0).threshold == "per_class"
    with pytest.raises(settings.SettingsError, match="< 1"):
        resolve_eval_config({"threshold": "1.5"}, 0)
    with pytest.raises(settings.SettingsError, match="bool|boolean|true"):
        settings.resolve("x", {"flag": True}, {"flag": "maybe"})


def test_every_registered_setting_is_declared_and_defaults_are_valid():
    """Every string setting of every method has declared choices, and every method's
    resolved defaults pass their own rules on every task and profile that needs no data."""
    for name in METHODS.names():
        cls = METHODS.get(name)
        assert not settings.undeclared_strings(cls.defaults, cls.setting_rules), name
        for task_name in ("synth", "synth-multilabel", "esc50", "sonyc-ust", "openmic"):
            for profile in ("default", "small"):
                cls.resolve_config(TASKS.get(task_name)(profile=profile), profile, {})


def test_task_options_checked():
    with pytest.raises(settings.SettingsError, match="valid keys"):
        TASKS.get("sonyc-ust")(nope=1)
    with pytest.raises(settings.SettingsError, match=">= [01]"):
        TASKS.get("esc50")(max_clips=0)
    t = TASKS.get("openmic")(dict_clips_per_class="20")
    assert t.options == {"dict_clips_per_class": 20}


def test_cli_refuses_before_any_work(tmp_path, capsys):
    from audio_xai_bench.cli import EXIT_USAGE, main

    out = tmp_path / "runs"
    for argv in (["--set", "attention=nonsense"], ["--set", "classifier.epochs=-1"],
                 ["--seeds=-1"], ["--seeds", "a,b"], ["--fold", "7"], ["--set", "K"],
                 ["--task-option", "nope=1"], ["--set", "eval.baseline_count=lots"]):
        rc = main(["run", "--method", "l2i", "--task", "synth", "--profile", "small",
                   "--out", str(out), *argv])
        assert rc == EXIT_USAGE, argv
        assert "error:" in capsys.readouterr().err
    assert not out.exists()  # nothing trained, nothing cached, nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_refused_before_training(tmp_path):
    from audio_xai_bench.cli import main

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(stat.S_IRUSR | stat.S_IXUSR)
    assert main(["run", "--method", "random", "--profile", "small", "--out", str(ro / "x")]) == 2


def test_unwritable_out_check(tmp_path, monkeypatch):
    from pathlib import Path

    from audio_xai_bench import runner

    monkeypatch.setattr(os, "access", lambda p, mode: False)
    with pytest.raises(PermissionError, match="cannot write"):
        runner.check_writable(Path(tmp_path) / "a" / "b")


def test_seeds_deduplicated():
    from audio_xai_bench.runner import check_seeds

    assert check_seeds([0, 0, 2, 1, 2]) == [0, 2, 1]
    with pytest.raises(settings.SettingsError):
        check_seeds([1, -1])


def test_list_method_prints_the_declared_settings(capsys):
    from audio_xai_bench.cli import main

    assert main(["list", "--method", "l2i", "--task", "synth"]) == 0
    text = capsys.readouterr().out
    assert "attention" in text and "auto|per_class|shared" in text
    assert "classifier f" in text and "scorer" in text


def test_results_follow_the_umask(tmp_path):
    import pandas as pd

    from audio_xai_bench.results import write_cell

    old = os.umask(0o022)
    try:
        cell = tmp_path / "cell"
        write_cell(cell, config={}, metrics={"a": 1.0}, per_sample=pd.DataFrame({"x": [1]}),
                   pairs=pd.DataFrame(), history=None, listen=[], sample_rate=16000, done={})
    finally:
        os.umask(old)
    assert stat.S_IMODE(cell.stat().st_mode) == 0o755
    assert stat.S_IMODE((cell / "metrics.json").stat().st_mode) == 0o644


def test_progress_bars_only_on_a_terminal(monkeypatch):
    from audio_xai_bench import progress

    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: False, raising=False)
    assert progress.bar(range(3)).disable
    monkeypatch.setattr(progress.sys.stderr, "isatty", lambda: True, raising=False)
    monkeypatch.setattr(progress, "QUIET", True)
    assert progress.bar(range(3)).disable


def test_log_file_gets_the_summary(tmp_path):
    from audio_xai_bench.cli import main

    log = tmp_path / "log.txt"
    assert main(["--quiet", "--log-file", str(log), "list"]) == 0
    assert "methods:" in log.read_text()
