"""The ``csv`` task: the user's own clips from a CSV manifest (folds, seeded splits, multi-label,
class order, label maps, every validation error, ``all_test``) and an end-to-end run and
prepare on a tiny generated data set."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from audio_xai_bench.cli import main
from audio_xai_bench.registry import TASKS
from audio_xai_bench.settings import SettingsError
from audio_xai_bench.tasks._layout import DatasetLayoutError
from audio_xai_bench.tasks.csv_manifest import CsvTask, ManifestError

SR = 16000
FREQS = {"dog": 440.0, "rain": 1200.0, "tone": 2500.0}


def _wav(path: Path, freq: float | None, seed: int) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(SR) / SR
    x = 0.05 * rng.standard_normal(SR)
    if freq is not None:
        x += 0.5 * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6.28))
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (x / np.abs(x).max() * 0.8).astype(np.float32), SR)


def _manifest(root: Path, rows: list[tuple], header: str = "path,label,fold",
              name: str = "manifest.csv", write_audio: bool = True) -> Path:
    """Write the rows (path, label[, fold, ...]) and a 1 s WAV for each path."""
    root.mkdir(parents=True, exist_ok=True)
    lines = [header] + [",".join(str(c) for c in r) for r in rows]
    path = root / name
    path.write_text("\n".join(lines) + "\n")
    if write_audio:
        for i, r in enumerate(rows):
            p = Path(r[0]) if os.path.isabs(str(r[0])) else root / r[0]
            if not p.exists():
                first = str(r[1]).split(";")[0]
                _wav(p, FREQS.get(first), i)
    return path


def _mc_rows(per_class: int = 8, folds: int | None = 2) -> list[tuple]:
    rows = []
    for c in ("dog", "rain", "tone"):
        for i in range(per_class):
            row = (f"audio/{c}_{i:02d}.wav", c)
            rows.append(row + ((str(i % folds + 1),) if folds else ()))
    return rows


def _ids(split) -> list[str]:
    return [e.id for e in split]


def _label(task, e) -> str:
    return task.classes[int(np.argmax(e.target))]


# --------------------------------------------------------------------------------------------
# folds and splits
# --------------------------------------------------------------------------------------------
def test_registered_lazily_and_builds_without_data():
    cls = TASKS.get("csv")
    assert cls is CsvTask and cls.kind == "auto"
    task = cls()  # `list --method M --task csv` builds it without a data root
    assert task.frontend.sample_rate == 16000 and task.frontend.clip_seconds == 5.0
    assert task.label_map is None
    with pytest.raises(ManifestError, match="needs --data-root"):
        task.classes


def test_fold_column_gives_the_folds(tmp_path):
    m = _manifest(tmp_path, _mc_rows(8, folds=2))
    task = CsvTask(data_root=str(m))
    assert task.kind == "multiclass" and task.official_metric == "accuracy_top1"
    assert task.classes == ["dog", "rain", "tone"] and task.fold_names() == ["1", "2"]
    folds = task.folds()
    assert [f.name for f in folds] == ["1", "2"]
    every = {e.id for e in folds[0].train + folds[0].valid + folds[0].test}
    assert len(every) == 24
    for f in folds:
        tr, va, te = set(_ids(f.train)), set(_ids(f.valid)), set(_ids(f.test))
        assert not (tr & va or tr & te or va & te) and len(tr | va | te) == 24
        k = int(f.name)
        assert all(int(i.split("_")[1][:2]) % 2 + 1 == k for i in te)  # the rows of fold k
        assert len(te) == 12 and len(va) == 2  # 0.125 of 12 other rows, rounded
    ex = folds[0].test[0]
    assert ex.id == "audio/dog_00.wav" and os.path.isabs(ex.path) and ex.audio is None
    assert ex.target.dtype == np.float32 and ex.target.tolist() == [1.0, 0.0, 0.0]
    assert task.folds("2")[0].name == "2"
    with pytest.raises(KeyError, match="has folds 1, 2"):
        task.folds("3")


def test_fold_names_are_sorted_as_strings_and_a_folder_root_works(tmp_path):
    rows = [(f"a{i}.wav", "dog" if i % 2 else "rain", f) for i, f in
            enumerate(["10", "2", "b", "10", "2", "b"])]
    _manifest(tmp_path, rows)
    task = CsvTask(data_root=str(tmp_path))
    assert task.fold_names() == ["10", "2", "b"]
    other = _manifest(tmp_path / "x", rows[:2] + rows[3:5], name="list.csv")
    assert CsvTask(data_root=str(other.parent), manifest="list.csv").fold_names() == ["10", "2"]


def test_seeded_split_is_deterministic_stratified_and_complete(tmp_path):
    m = _manifest(tmp_path, _mc_rows(10, folds=None), header="path,label")
    task = CsvTask(data_root=str(m), seed=3)
    assert task.fold_names() == ["0"]
    (f,) = task.folds()
    tr, va, te = _ids(f.train), _ids(f.valid), _ids(f.test)
    assert len(te) == 6 and len(va) == 3 and len(tr) == 21  # 0.2 of 30; 0.125 of 24
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert len(set(tr + va + te)) == 30
    assert sorted(_label(task, e) for e in f.test) == ["dog"] * 2 + ["rain"] * 2 + ["tone"] * 2
    assert sorted(_label(task, e) for e in f.valid) == ["dog", "rain", "tone"]
    (again,) = CsvTask(data_root=str(m), seed=3).folds()
    assert _ids(again.test) == te and _ids(again.valid) == va
    (other,) = CsvTask(data_root=str(m), seed=4).folds()
    assert _ids(other.test) != te
    (wide,) = CsvTask(data_root=str(m), seed=3, test_fraction=0.5, valid_fraction=0.2).folds()
    assert len(wide.test) == 15 and len(wide.valid) == 3


def test_split_seeded_overrides_the_fold_column(tmp_path):
    m = _manifest(tmp_path, _mc_rows(10, folds=5))
    task = CsvTask(data_root=str(m), split="seeded")
    assert task.fold_names() == ["0"]
    (f,) = task.folds()
    assert len(f.test) == 6 and len(f.train) + len(f.valid) + len(f.test) == 30
    with pytest.raises(SettingsError, match="manifest|seeded"):
        CsvTask(data_root=str(m), split="random")
    m2 = _manifest(tmp_path / "nofold", _mc_rows(4, folds=None), header="path,label")
    with pytest.raises(ManifestError, match="no 'fold' column"):
        CsvTask(data_root=str(m2), split="manifest").fold_names()


def test_caps_per_split_with_max_clips_and_the_small_profile(tmp_path):
    m = _manifest(tmp_path, _mc_rows(10, folds=None), header="path,label")
    (f,) = CsvTask(data_root=str(m), max_clips=4).folds()
    assert (len(f.train), len(f.valid), len(f.test)) == (4, 3, 4)
    (s,) = CsvTask(data_root=str(m), profile="small").folds()  # below the caps: unchanged
    assert len(s.train) + len(s.valid) + len(s.test) == 30


def test_all_test_puts_every_row_in_test(tmp_path):
    m = _manifest(tmp_path, _mc_rows(3, folds=3))
    task = CsvTask(data_root=str(m), all_test=True)
    assert task.fold_names() == ["0"] and task.dictionary_splits == ("test",)
    (f,) = task.folds()
    assert f.train == [] and f.valid == [] and len(f.test) == 9
    assert task.validate_layout() == []
    d = task.describe()
    assert d["split_rule"] == "all rows in test" and d["options"]["all_test"] is True


# --------------------------------------------------------------------------------------------
# labels, classes, label maps
# --------------------------------------------------------------------------------------------
def test_multilabel_is_detected_and_targets_are_binary(tmp_path):
    rows = [("a.wav", "dog"), ("b.wav", "rain;dog"), ("c.wav", " tone ; rain "),
            ("d.wav", "dog;dog"), ("e.wav", "rain"), ("f.wav", "tone")]
    m = _manifest(tmp_path, rows, header="path,label")
    task = CsvTask(data_root=str(m))
    assert task.kind == "multilabel" and task.official_metric == "macro_auprc"
    assert task.classes == ["dog", "rain", "tone"]
    (f,) = CsvTask(data_root=str(m), all_test=True).folds()
    t = {e.id: e.target.tolist() for e in f.test}
    assert t["b.wav"] == [1, 1, 0] and t["c.wav"] == [0, 1, 1] and t["d.wav"] == [1, 0, 0]
    (g,) = task.folds()  # random hold-out for multi-label
    assert len(g.test) == 1 and len(g.valid) == 1 and len(g.train) == 4
    # a single-label manifest read as multi-label on request
    m2 = _manifest(tmp_path / "single", _mc_rows(2, folds=None), header="path,label")
    assert CsvTask(data_root=str(m2), kind="multilabel").kind == "multilabel"


def test_classes_option_sets_the_order(tmp_path):
    m = _manifest(tmp_path, _mc_rows(2, folds=None), header="path,label")
    task = CsvTask(data_root=str(m), classes="tone,dog,rain,extra", all_test=True)
    assert task.classes == ["tone", "dog", "rain", "extra"] and task.num_classes == 4
    (f,) = task.folds()
    dog = next(e for e in f.test if e.id.startswith("audio/dog"))
    assert dog.target.tolist() == [0, 1, 0, 0]
    with pytest.raises(ValueError, match="repeats"):
        CsvTask(data_root=str(m), classes="dog,dog")


def test_label_map_inline_and_csv(tmp_path):
    rows = [("a.wav", "speech"), ("b.wav", "tone"), ("c.wav", "speech"), ("d.wav", "tone")]
    m = _manifest(tmp_path, rows, header="path,label")
    task = CsvTask(data_root=str(m), label_map="speech=Speech|Conversation;tone=Sine wave")
    assert task.label_map == {"speech": ["Speech", "Conversation"], "tone": ["Sine wave"]}
    (tmp_path / "map.csv").write_text("label,classifier_label\nspeech,Speech\n"
                                      "tone,Sine wave\nspeech,Narration\n")
    for spec in (str(tmp_path / "map.csv"), "map.csv"):  # absolute, or beside the manifest
        t = CsvTask(data_root=str(m), label_map=spec)
        assert t.label_map == {"speech": ["Speech", "Narration"], "tone": ["Sine wave"]}
    assert CsvTask(data_root=str(m)).label_map is None
    assert "label_map_sha256" in CsvTask(data_root=str(m), label_map="map.csv").describe()


def test_label_map_errors(tmp_path):
    rows = [("a.wav", "speech"), ("b.wav", "tone"), ("c.wav", "dog")]
    m = _manifest(tmp_path, rows, header="path,label")
    with pytest.raises(ManifestError, match=r"does not map class\(es\) \['dog', 'tone'\]"):
        CsvTask(data_root=str(m), label_map="speech=Speech").label_map
    with pytest.raises(ManifestError, match=r"maps \['cat'\], which are not classes"):
        CsvTask(data_root=str(m), label_map="speech=S;tone=T;dog=D;cat=C").label_map
    with pytest.raises(ValueError, match="label_map entry 'tone' is not CLASS=NAME"):
        CsvTask(data_root=str(m), label_map="speech=S;tone").label_map
    with pytest.raises(ManifestError, match="neither an inline map"):
        CsvTask(data_root=str(m), label_map="nowhere.csv").label_map
    (tmp_path / "bad.csv").write_text("label,name\nspeech,S\n")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['classifier_label'\]"):
        CsvTask(data_root=str(m), label_map="bad.csv").folds()


# --------------------------------------------------------------------------------------------
# validation errors: each names the manifest and the rows, before any audio is read
# --------------------------------------------------------------------------------------------
def test_missing_manifest_says_the_columns_and_gives_an_example(tmp_path):
    with pytest.raises(ManifestError) as exc:
        CsvTask(data_root=str(tmp_path)).classes
    msg = str(exc.value)
    assert "manifest.csv is missing" in msg and "path,label[,fold]" in msg
    assert "audio/dog_01.wav,dog,1" in msg
    with pytest.raises(ManifestError, match="does not exist"):
        CsvTask(data_root=str(tmp_path / "nowhere.csv")).classes
    assert isinstance(exc.value, DatasetLayoutError)


def test_missing_columns_empty_manifest_and_no_rows(tmp_path):
    m = _manifest(tmp_path / "a", [("a.wav", "dog")], header="file,category")
    with pytest.raises(ManifestError, match=r"lacks column\(s\) \['path', 'label'\].*'file,"
                                            r"category'") as exc:
        CsvTask(data_root=str(m)).classes
    assert str(m) in str(exc.value) and "header" in str(exc.value)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ManifestError, match="empty.csv is empty; expected a header"):
        CsvTask(data_root=str(tmp_path / "empty.csv")).classes
    (tmp_path / "head.csv").write_text("path,label,fold\n\n")
    with pytest.raises(ManifestError, match="has a header but no rows"):
        CsvTask(data_root=str(tmp_path / "head.csv")).classes


def test_missing_audio_files_are_summarised_or_skipped(tmp_path):
    rows = _mc_rows(3, folds=None)
    m = _manifest(tmp_path, rows, header="path,label")
    os.remove(tmp_path / "audio" / "rain_01.wav")
    os.remove(tmp_path / "audio" / "tone_02.wav")
    task = CsvTask(data_root=str(m))
    assert task.classes == ["dog", "rain", "tone"]  # the manifest itself is fine
    with pytest.raises(ManifestError) as exc:
        task.folds()
    msg = str(exc.value)
    assert "2 of 9 listed audio files are absent" in msg and "rain_01.wav" in msg
    assert "tone_02.wav" in msg and "line(s) 6, 10" in msg and "missing=skip" in msg
    assert "2 of 9" in task.validate_layout()[0]
    skip = CsvTask(data_root=str(m), missing="skip", all_test=True)
    (f,) = skip.folds()
    assert len(f.test) == 7 and len(skip.info["missing_skipped"]) == 2
    assert skip.describe()["missing_skipped"] == 2


def test_duplicate_paths_are_listed(tmp_path):
    rows = [("a.wav", "dog"), ("b.wav", "rain"), ("./a.wav", "rain"), ("c.wav", "dog"),
            ("sub/../c.wav", "dog")]
    m = _manifest(tmp_path, rows, header="path,label")
    with pytest.raises(ManifestError, match=r"more than once: 'a.wav' \(lines 2, 4\); "
                                            r"'c.wav' \(lines 5, 6\)"):
        CsvTask(data_root=str(m)).classes


def test_empty_labels_and_empty_paths_name_the_rows(tmp_path):
    rows = [("a.wav", "dog"), ("b.wav", ""), ("c.wav", "dog;")]
    m = _manifest(tmp_path, rows, header="path,label")
    with pytest.raises(ManifestError, match=r"empty label at line 3 \('b.wav': ''\); line 4 "
                                            r"\('c.wav': 'dog;'\)"):
        CsvTask(data_root=str(m)).classes
    m2 = _manifest(tmp_path / "p", [("a.wav", "dog"), ("", "dog")], header="path,label",
                   write_audio=False)
    with pytest.raises(ManifestError, match=r"empty path at line\(s\) 3"):
        CsvTask(data_root=str(m2)).classes


def test_unknown_labels_with_explicit_classes(tmp_path):
    m = _manifest(tmp_path, _mc_rows(2, folds=None), header="path,label")
    with pytest.raises(ManifestError, match=r"label\(s\) \['tone'\] are not in classes=dog,rain "
                                            r"\(line\(s\) 6, 7\)"):
        CsvTask(data_root=str(m), classes="dog,rain").classes


def test_multiclass_rows_with_several_labels_are_refused(tmp_path):
    rows = [("a.wav", "dog"), ("b.wav", "dog;rain"), ("c.wav", "rain")]
    m = _manifest(tmp_path, rows, header="path,label")
    with pytest.raises(ManifestError, match=r"kind=multiclass\) but line 3 \('b.wav': "
                                            r"'dog;rain'\) hold several labels"):
        CsvTask(data_root=str(m), kind="multiclass").classes


def test_fold_values_and_empty_test_split(tmp_path):
    m = _manifest(tmp_path / "a", [("a.wav", "dog", "1"), ("b.wav", "dog", "")])
    with pytest.raises(ManifestError, match=r"'fold' column but line\(s\) 3 leave it empty"):
        CsvTask(data_root=str(m)).fold_names()
    m = _manifest(tmp_path / "b", [("a.wav", "dog", "1"), ("b.wav", "dog", "all")])
    with pytest.raises(ManifestError, match=r"fold value\(s\) \['all'\] at line\(s\) 3"):
        CsvTask(data_root=str(m)).fold_names()
    m = _manifest(tmp_path / "c", [("a.wav", "dog")], header="path,label")
    with pytest.raises(ManifestError, match="test split of fold '0' is empty"):
        CsvTask(data_root=str(m)).folds()
    # a class absent from a fold's train split is a fact of the data, not an error
    m = _manifest(tmp_path / "d", [("a.wav", "dog", "1"), ("b.wav", "rain", "2"),
                                   ("c.wav", "rain", "1")])
    folds = CsvTask(data_root=str(m)).folds()
    assert [len(f.test) for f in folds] == [2, 1]


def test_options_are_declared_and_checked(tmp_path):
    with pytest.raises(SettingsError, match="valid keys"):
        CsvTask(nope=1)
    with pytest.raises(SettingsError, match="auto|multiclass|multilabel"):
        CsvTask(kind="regression")
    with pytest.raises(SettingsError, match="valid_fraction"):
        CsvTask(valid_fraction=1.5)
    with pytest.raises(ValueError, match="valid_fraction \\+ test_fraction"):
        CsvTask(valid_fraction=0.5, test_fraction=0.5)
    # values as `--task-option` types them (free text: classes, label_map, manifest)
    from audio_xai_bench.cli import _parse_task_options

    rows = [("a.wav", "1"), ("b.wav", "3"), ("c.wav", "1"), ("d.wav", "3")]
    m = _manifest(tmp_path, rows, header="path,label")
    opts = _parse_task_options(["classes=3,1", "label_map=1=One;3=Three|Tres",
                                "all_test=true", "max_clips=none"])
    t = CsvTask(data_root=str(m), **opts)
    assert t.classes == ["3", "1"] and t.label_map == {"3": ["Three", "Tres"], "1": ["One"]}
    assert CsvTask(data_root=str(m), **_parse_task_options(["classes=3"])).class_option == ["3"]
    t = CsvTask(sample_rate=8000, clip_seconds=1.0, n_fft=512, hop_length=128, n_mels=40)
    assert (t.frontend.sample_rate, t.frontend.clip_samples, t.frontend.n_fft,
            t.frontend.hop_length, t.frontend.n_mels) == (8000, 8000, 512, 128, 40)


def test_describe_identifies_the_manifest_bytes(tmp_path):
    m = _manifest(tmp_path, _mc_rows(2, folds=None), header="path,label")
    d1 = CsvTask(data_root=str(m)).describe()
    assert d1["manifest"] == str(m) and len(d1["manifest_sha256"]) == 64
    assert d1["options"]["sample_rate"] == 16000 and d1["classes"] == ["dog", "rain", "tone"]
    m.write_text(m.read_text().replace("audio/tone_01.wav,tone", "audio/tone_01.wav,rain"))
    d2 = CsvTask(data_root=str(m)).describe()
    assert d2["manifest_sha256"] != d1["manifest_sha256"]
    assert CsvTask(data_root=str(m), seed=1).describe() != d2


# --------------------------------------------------------------------------------------------
# end to end
# --------------------------------------------------------------------------------------------
def test_run_and_prepare_end_to_end(tmp_path, capsys):
    m = _manifest(tmp_path / "data", _mc_rows(6, folds=None), header="path,label,speaker")
    out = tmp_path / "runs"
    opts = ["--task-option", "clip_seconds=1.0"]
    assert main(["prepare", "--task", "csv", "--data-root", str(m), "--out", str(out),
                 *opts]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["task"] == "csv" and summary["unique_clips"] == 18
    assert sum(summary["clips"]["0"].values()) == 18 and summary["clips"]["0"]["test"] == 4
    assert summary["problems"] == [] and summary["task_info"]["rows"] == 18
    assert main(["run", "--method", "random", "--task", "csv", "--data-root", str(m),
                 "--profile", "small", "--out", str(out), *opts,
                 "--set", "classifier.epochs=1"]) == 0
    (cell,) = sorted(p.parent for p in (out / "csv" / "random").glob("*/done.json"))
    metrics = json.loads((cell / "metrics.json").read_text())
    assert metrics["n_test"] == 4 and "classifier/accuracy_top1" in metrics
    config = json.loads((cell / "config.json").read_text())
    assert config["task"]["manifest_sha256"] == CsvTask(data_root=str(m)).describe()[
        "manifest_sha256"]
    # a bad manifest is a usage error (exit 2) naming the problem
    bad = _manifest(tmp_path / "bad", [("a.wav", "dog"), ("a.wav", "rain")], header="path,label")
    capsys.readouterr()
    assert main(["run", "--method", "random", "--task", "csv", "--data-root", str(bad),
                 "--profile", "small", "--out", str(out)]) == 2
    assert "more than once" in capsys.readouterr().err
