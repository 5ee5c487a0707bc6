"""File locks for shared artefacts (issue 12 item 3): two processes, one build."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_xai_bench.locks import artefact_lock, clean_stale, lock_path

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *args], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_build_once_the_second_waits_then_loads(tmp_path: Path):
    """The generic pattern of runner.get_classifier / get_dictionary: check, lock, re-check."""
    code = """
        import sys, time, os
        from pathlib import Path
        from audio_xai_bench.locks import artefact_lock
        art = Path(sys.argv[1]); log = Path(sys.argv[2])
        with artefact_lock(art, log=lambda m: print(m, flush=True)):
            if art.exists():
                print("loaded", art.read_text(), flush=True)
            else:
                with open(log, "a") as fh:
                    fh.write(f"build {os.getpid()}\\n")
                time.sleep(1.5)
                tmp = art.with_suffix(".tmp"); tmp.write_text(str(os.getpid())); os.replace(tmp, art)
                print("built", flush=True)
    """
    art, log = tmp_path / "f.pt", tmp_path / "builds.log"
    procs = [_spawn(code, str(art), str(log)) for _ in range(2)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert len(log.read_text().splitlines()) == 1  # built exactly once
    texts = [o[0] for o in outs]
    assert sum("built" in t for t in texts) == 1 and sum("loaded" in t for t in texts) == 1
    assert any("waiting for another process building" in t for t in texts)


def test_clean_stale_removes_only_this_artefacts_leftovers(tmp_path: Path):
    art = tmp_path / "0-0-abc.pt"
    mine = [tmp_path / ".0-0-abc.pt.x1.tmp", tmp_path / ".0-0-abc.resume.pt.y2.tmp"]
    other = tmp_path / ".1-0-abc.pt.z3.tmp"
    for f in mine + [other]:
        f.write_text("partial")
    with artefact_lock(art):
        removed = clean_stale(art, (".{stem}*.tmp",))
    assert sorted(removed) == sorted(map(str, mine))
    assert other.exists() and lock_path(art).exists()


def _wav_examples(root: Path, n: int = 6, sr: int = 8000):
    from audio_xai_bench.api import Example

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = root / f"clip{i}.wav"
        sf.write(p, rng.standard_normal(sr // 2).astype("float32") * 0.1, sr)
        out.append(Example(id=f"c{i}", target=np.eye(2, dtype="float32")[i % 2], path=str(p)))
    return out


def test_waveform_cache_two_processes_one_build(tmp_path: Path):
    _wav_examples(tmp_path)
    code = """
        import sys, json
        from pathlib import Path
        import numpy as np
        from audio_xai_bench.api import Example, FrontendConfig
        from audio_xai_bench.data import LoadReport, materialize
        import audio_xai_bench.data as d
        slow = d._iter_loaded
        def slowed(*a, **k):  # hold the lock long enough for the other process to meet it
            import time; time.sleep(1.0); yield from slow(*a, **k)
        d._iter_loaded = slowed
        root = Path(sys.argv[1])
        ex = [Example(id=f"c{i}", target=np.eye(2, dtype="float32")[i % 2],
                      path=str(root / f"clip{i}.wav")) for i in range(6)]
        rep = LoadReport()
        s = materialize(ex, FrontendConfig(sample_rate=8000, clip_seconds=0.5), report=rep,
                        cache_dir=str(root / "cache"), namespace="t")
        print(json.dumps({"cache": rep.cache, "sum": float(s.wave.double().sum())}))
    """
    procs = [_spawn(code, str(tmp_path)) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    res = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert sorted(r["cache"] for r in res) == ["built", "hit"]
    assert res[0]["sum"] == res[1]["sum"]
    entries = [p for p in (tmp_path / "cache").rglob("*") if p.is_dir() and ".tmp-" in p.name]
    assert not entries


def test_truncated_wave_cache_is_named_and_rebuilt(tmp_path: Path, capsys):
    from audio_xai_bench.api import FrontendConfig
    from audio_xai_bench.data import LoadReport, materialize

    ex = _wav_examples(tmp_path)
    fe = FrontendConfig(sample_rate=8000, clip_seconds=0.5)
    kw = {"cache_dir": str(tmp_path / "cache"), "namespace": "t"}
    first = materialize(ex, fe, report=LoadReport(), **kw).wave.clone()
    wave_file = next((tmp_path / "cache").rglob("wave.npy"))
    stale = wave_file.parent.parent / (wave_file.parent.name + ".tmp-dead")
    stale.mkdir()
    data = wave_file.read_bytes()
    wave_file.write_bytes(data[: len(data) // 3])  # truncated
    rep = LoadReport()
    again = materialize(ex, fe, report=rep, **kw)
    err = capsys.readouterr().err
    assert str(wave_file) in err and "rebuilding" in err
    assert rep.cache == "built" and torch.equal(again.wave, first)
    assert not stale.exists()  # the dead builder's temp folder was cleaned under the lock


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip"])
def test_unreadable_cached_checkpoint_is_named_and_removed(tmp_path: Path, content, capsys):
    from audio_xai_bench.runner import _load_cached

    path = tmp_path / "0-0-K8-abc.pt"
    path.write_bytes(content)
    assert _load_cached(path, ("W",), log=lambda m: print(m, file=sys.stderr)) is None
    err = capsys.readouterr().err
    assert str(path) in err and "rebuilding" in err and not path.exists()
    torch.save({"W": torch.ones(2)}, path)  # a good file loads
    assert torch.equal(_load_cached(path, ("W",))["W"], torch.ones(2))
    torch.save({"other": 1}, path)  # a readable file that is not this artefact is rebuilt
    assert _load_cached(path, ("W",), log=lambda m: None) is None and not path.exists()


class _NotAllowed:
    pass


def test_refused_pickle_in_cache_is_named_without_advice(tmp_path: Path, capsys):
    from audio_xai_bench.runner import _load_cached

    path = tmp_path / "0-0-abc.pt"
    torch.save({"model": _NotAllowed()}, path)  # a global weights_only refuses
    assert _load_cached(path, ("model",), log=lambda m: print(m, file=sys.stderr)) is None
    err = capsys.readouterr().err
    assert str(path) in err and "not a plain state dict" in err
    assert "weights_only=False" not in err and not path.exists()
