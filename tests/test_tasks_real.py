"""The real dataset adapters (ESC-50/10, SONYC-UST, OpenMIC-2018), prepare, and the waveform
cache, on tiny fixtures generated in the official layouts (tests/fixtures_real.py)."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from audio_xai_bench import data as data_mod
from audio_xai_bench.api import FrontendConfig
from audio_xai_bench.audio import AudioError
from audio_xai_bench.data import LoadReport, materialize
from audio_xai_bench.prepare import PrepareError, prepare, validate_layout
from audio_xai_bench.registry import TASKS
from audio_xai_bench.tasks._layout import DatasetLayoutError
from audio_xai_bench.tasks.esc50 import ESC10Task, ESC50Task
from audio_xai_bench.tasks.openmic import OpenMICTask
from audio_xai_bench.tasks.sonyc_ust import CLASSES as SONYC_CLASSES
from audio_xai_bench.tasks.sonyc_ust import COARSE_COLUMNS, SonycUSTTask, aggregate_labels

from fixtures_real import make_esc50, make_openmic, make_sonyc, sonyc_fine_columns


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    base = tmp_path_factory.mktemp("real")
    return {"esc": make_esc50(str(base / "ESC-50-master")),
            "sonyc": make_sonyc(str(base / "sonyc-ust")),
            "om": make_openmic(str(base / "openmic-2018"))}


def _copy(src: str, tmp_path, name: str = "copy") -> str:
    dst = str(tmp_path / name)
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------------------------
# registry, declarations
# --------------------------------------------------------------------------------------------
def test_registry_and_declarations(roots):
    assert TASKS.get("esc50") is ESC50Task and TASKS.get("esc10") is ESC10Task
    assert TASKS.get("sonyc-ust") is SonycUSTTask and TASKS.get("openmic") is OpenMICTask
    esc = ESC50Task(roots["esc"])
    assert esc.frontend == FrontendConfig(44100, 1024, 512, 128, clip_seconds=5.0)
    assert esc.kind == "multiclass" and esc.fold_names() == ["1", "2", "3", "4", "5"]
    son, om = SonycUSTTask(roots["sonyc"]), OpenMICTask(roots["om"])
    assert son.frontend.clip_seconds == 10.0 and om.frontend.clip_seconds == 10.0
    assert son.frontend.sample_rate == om.frontend.sample_rate == 44100
    assert son.kind == om.kind == "multilabel"
    assert son.official_metric == "macro_auprc" and om.official_metric == "weighted_f1"
    # paper Tables II and III
    # ... and the Θ dropout of the authors' ESC-50 code (Θ_ATT 0.4, Θ_MAX 0.3)
    assert esc.method_defaults["l2i"] == {"K": 100, "alpha": 10.0, "beta": 0.8, "epochs": 35,
                                          "dropout": 0.4}
    assert esc.method_defaults["l2i-max"]["dropout"] == 0.3
    assert esc.method_defaults["l2i-bd"] == {"K": 100, "gamma": 1.0, "alpha": 3.0,
                                             "beta": 0.2, "epochs": 51}
    assert son.method_defaults["l2i"] == {"K": 80, "alpha": 10.0, "beta": 0.8, "epochs": 21,
                                          "attention": "shared"}
    assert son.method_defaults["l2i-bd"] == {"K": 80, "gamma": 1.0, "alpha": 4.0, "beta": 0.2,
                                             "epochs": 21}
    assert om.method_defaults["l2i"] == {"K": 300, "alpha": 5.0, "beta": 0.2, "epochs": 21,
                                         "attention": "per_class"}
    assert om.method_defaults["l2i-bd"] == {"K": 300, "gamma": 1.0, "alpha": 3.0, "beta": 0.2,
                                            "epochs": 21}
    for t in (esc, son, om):
        assert t.method_defaults["l2i-max"]["K"] == t.method_defaults["l2i"]["K"]
    assert son.classes == SONYC_CLASSES and len(om.classes) == 20
    assert om.classes[0] == "accordion" and om.classes[19] == "voice"


# --------------------------------------------------------------------------------------------
# ESC-50 folds
# --------------------------------------------------------------------------------------------
def test_esc50_fold_rules(roots):
    task = ESC50Task(roots["esc"], seed=3)
    meta = pd.read_csv(os.path.join(roots["esc"], "meta", "esc50.csv"))
    all_ids = {f[:-4] for f in meta["filename"]}
    assert task.classes == ["dog", "rooster", "pig", "cow", "frog"]
    folds = task.folds("all")
    assert [f.name for f in folds] == ["1", "2", "3", "4", "5"]
    for f in folds:
        tr, va, te = ({e.id for e in s} for s in (f.train, f.valid, f.test))
        assert not (tr & va) and not (tr & te) and not (va & te)
        assert tr | va | te == all_ids
        assert all(i.split("-")[0] == f.name for i in te)  # test = official fold k
        assert all(i.split("-")[0] != f.name for i in tr | va)
        assert len(va) == round((len(tr) + len(va)) / 8)
        # stratified: no class gives more than its share rounded up
        labels = [int(np.argmax(e.target)) for e in f.valid]
        assert max(np.bincount(labels)) <= 2
        # target vector = one-hot of the filename's target
        for e in f.train[:5]:
            assert int(np.argmax(e.target)) == int(e.id.split("-")[-1]) and e.target.sum() == 1
    again = ESC50Task(roots["esc"], seed=3).folds("2")[0]
    assert [e.id for e in again.valid] == [e.id for e in folds[1].valid]
    other = [ESC50Task(roots["esc"], seed=s).folds("2")[0] for s in range(4, 9)]
    assert any({e.id for e in o.valid} != {e.id for e in again.valid} for o in other)
    with pytest.raises(KeyError, match="1, 2, 3, 4, 5"):
        task.folds("6")


def test_esc10_subset(roots):
    task = ESC10Task(roots["esc"])
    assert task.classes == ["dog", "rooster"] and task.num_classes == 2
    f = task.folds("1")[0]
    for e in (*f.train, *f.valid, *f.test):
        assert e.target.shape == (2,)
        assert int(np.argmax(e.target)) == int(e.id.split("-")[-1])  # targets 0, 1 stay 0, 1


def test_esc10_reindexes_targets(tmp_path, roots):
    root = _copy(roots["esc"], tmp_path)
    path = os.path.join(root, "meta", "esc50.csv")
    df = pd.read_csv(path)
    df["esc10"] = df["target"].isin([2, 4])  # pig, frog -> 0, 1
    df.to_csv(path, index=False)
    task = ESC10Task(root)
    assert task.classes == ["pig", "frog"]
    f = task.folds("1")[0]
    assert {int(e.id.split("-")[-1]): int(np.argmax(e.target)) for e in f.test} == {2: 0, 4: 1}


def test_esc50_root_above_archive_folder(roots):
    """The GitHub archive unpacks to ESC-50-master/: a data root pointing at the folder that
    holds it reads the same clips, labels and folds."""
    inner = roots["esc"]
    assert os.path.basename(inner) == "ESC-50-master"
    parent = os.path.dirname(inner)
    assert not os.path.exists(os.path.join(parent, "meta"))
    for cls in (ESC50Task, ESC10Task):
        a, b = cls(inner, seed=2).folds("3")[0], cls(parent, seed=2).folds("3")[0]
        for sa, sb in ((a.train, b.train), (a.valid, b.valid), (a.test, b.test)):
            assert [(e.id, e.path) for e in sa] == [(e.id, e.path) for e in sb]
            assert all(np.array_equal(x.target, y.target) for x, y in zip(sa, sb))
        assert cls(parent).classes == cls(inner).classes
    assert validate_layout(ESC50Task(parent)) == []


# --------------------------------------------------------------------------------------------
# SONYC-UST labels
# --------------------------------------------------------------------------------------------
def _ann(rows):
    """Hand-made annotations table: (split, file, annotator, {class index: value})."""
    out = []
    for split, fname, ann, vals in rows:
        r = {"split": split, "audio_filename": fname, "annotator_id": ann}
        for i, c in enumerate(COARSE_COLUMNS):
            r[c] = vals.get(i, 0) if not isinstance(vals, int) else vals
        out.append(r)
    return pd.DataFrame(out)


def test_sonyc_aggregation_rules_hand_table():
    df = _ann([
        # train: minority vote of volunteers; the verified and team rows are ignored
        ("train", "a.wav", 11, {0: 1}), ("train", "a.wav", 12, {}), ("train", "a.wav", 13, {}),
        ("train", "a.wav", 0, {7: 1}), ("train", "a.wav", -5, -1),
        ("train", "b.wav", 14, {5: 1, 6: 1}), ("train", "b.wav", 15, {6: 1}),
        ("train", "c.wav", -3, {1: 1}),  # no volunteer row: dropped
        # validate: the annotator_id == 0 row alone
        ("validate", "d.wav", 21, {0: 1}), ("validate", "d.wav", 22, {0: 1}),
        ("validate", "d.wav", 0, {7: 1}),
        ("validate", "e.wav", 23, {2: 1}),  # no verified row: dropped
        ("test", "f.wav", -1, {3: 1}), ("test", "f.wav", 0, {3: 1, 4: 1}),
    ])
    files, target, counts = aggregate_labels(df, "train")
    assert files == ["a.wav", "b.wav"]
    np.testing.assert_array_equal(target[0], np.eye(8)[0])
    np.testing.assert_array_equal(target[1], np.eye(8)[5] + np.eye(8)[6])
    assert counts["dropped_no_volunteer_row"] == 1
    files, target, counts = aggregate_labels(df, "validate")
    assert files == ["d.wav"] and counts["dropped_no_verified_row"] == 1
    np.testing.assert_array_equal(target[0], np.eye(8)[7])
    files, target, _ = aggregate_labels(df, "test")
    np.testing.assert_array_equal(target[0], np.eye(8)[3] + np.eye(8)[4])


def test_sonyc_task_on_fixture(roots, tmp_path):
    task = SonycUSTTask(roots["sonyc"])
    f = task.folds("0")[0]
    assert (len(f.train), len(f.valid), len(f.test)) == (12, 5, 6)  # 1 validate file unverified
    assert task.info["validate"]["dropped_no_verified_row"] == 1
    first = f.train[0]
    assert first.id == "10_001000"
    # volunteers marked engine + machinery-impact; the verified row (all 0) is ignored in train
    np.testing.assert_array_equal(first.target, np.eye(8)[0] + np.eye(8)[1])
    assert task.classwise_exclude == ("non-machinery-impact",)
    assert SonycUSTTask(roots["sonyc"], exclude_nmi=False).classwise_exclude == ()
    assert validate_layout(task) == []
    # columns are addressed by name: a shuffled column order gives the same labels
    root = _copy(roots["sonyc"], tmp_path)
    df = pd.read_csv(os.path.join(root, "annotations.csv"))
    df = df[list(reversed(df.columns))]
    df.to_csv(os.path.join(root, "annotations.csv"), index=False)
    g = SonycUSTTask(root).folds("0")[0]
    for a, b in zip(f.train + f.valid + f.test, g.train + g.valid + g.test):
        assert a.id == b.id and np.array_equal(a.target, b.target)
    # the fixture carries every official column: 12 metadata + 29 + 29 + 8
    assert df.shape[1] == 12 + 29 + 29 + 8
    fine_p, fine_x, coarse = sonyc_fine_columns()
    assert len(fine_p) == 29 and coarse == COARSE_COLUMNS


def test_sonyc_taxonomy_checked(roots, tmp_path):
    root = _copy(roots["sonyc"], tmp_path)
    path = os.path.join(root, "dcase-ust-taxonomy.yaml")
    text = open(path).read().replace("8: dog", "8: cat")
    open(path, "w").write(text)
    with pytest.raises(DatasetLayoutError, match="dcase-ust-taxonomy.yaml"):
        SonycUSTTask(root).folds("0")
    os.remove(path)  # optional: absent is fine
    assert len(SonycUSTTask(root).folds("0")[0].train) == 12


@pytest.mark.parametrize("inner", ["", "audio"])
def test_sonyc_audio_in_shard_folders(roots, tmp_path, monkeypatch, inner):
    """v2.3 ships audio-0.tar.gz ... audio-18.tar.gz: each unpacked into its own audio-<n>/
    folder (with or without an inner audio/ folder) gives the same clips and labels, read
    from where they are, with one directory scan per folder (not a stat per clip)."""
    root = make_sonyc(str(tmp_path / "son"), seconds=5.0, shards=3, shard_inner=inner)
    open(os.path.join(root, "audio-0.tar.gz"), "wb").close()  # archives kept beside: ignored
    scans = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p=".": scans.append(os.fspath(p)) or real_scandir(p))
    stats = []
    real_isfile = os.path.isfile
    monkeypatch.setattr(os.path, "isfile", lambda p: stats.append(p) or real_isfile(p))
    task = SonycUSTTask(root)
    f = task.folds("0")[0]
    monkeypatch.undo()
    assert len(scans) == 1 + 1 + 3 + 3  # root, audio/, audio-*/, audio-*/audio/
    assert not [p for p in stats if p.endswith(".wav")]
    ref = SonycUSTTask(roots["sonyc"]).folds("0")[0]
    for a, b in zip(ref.train + ref.valid + ref.test, f.train + f.valid + f.test):
        assert a.id == b.id and np.array_equal(a.target, b.target)
        k = int(a.id.split("_")[1]) - 1000
        assert b.path == os.path.join(root, f"audio-{k % 3}", inner, a.id + ".wav")
    assert validate_layout(task) == []
    assert prepare(task, cache_dir=str(tmp_path / "cache"))["unique_clips"] == 23


def test_sonyc_audio_search_order_and_missing(tmp_path):
    """audio/<name> first, else audio-*/<name>, else audio-*/audio/<name>; a file found
    nowhere keeps the audio/<name> path and the error names the folders searched."""
    root = make_sonyc(str(tmp_path / "son"), seconds=5.0, shards=2, shard_inner="audio",
                      n_files={"train": 4, "validate": 2, "test": 2})
    # 10_001000 is in audio-0/audio/: copies in audio-1/ and audio/ win in that order
    src = os.path.join(root, "audio-0", "audio", "10_001000.wav")
    shutil.copy(src, os.path.join(root, "audio-1", "10_001000.wav"))
    assert SonycUSTTask(root).folds("0")[0].train[0].path == os.path.join(
        root, "audio-1", "10_001000.wav")
    os.makedirs(os.path.join(root, "audio"))
    shutil.copy(src, os.path.join(root, "audio", "10_001000.wav"))
    assert SonycUSTTask(root).folds("0")[0].train[0].path == os.path.join(
        root, "audio", "10_001000.wav")
    gone = os.path.join(root, "audio-1", "audio", "11_001001.wav")
    os.remove(gone)
    task = SonycUSTTask(root)
    victim = task.folds("0")[0].train[1]
    assert victim.path == os.path.join(root, "audio", "11_001001.wav")
    problems = validate_layout(task)
    assert len(problems) == 1 and "11_001001.wav" in problems[0]
    assert f"under {root}: " + ", ".join(d + os.sep for d in (
        "audio", "audio-0", "audio-1", os.path.join("audio-0", "audio"),
        os.path.join("audio-1", "audio"))) in problems[0]
    with pytest.raises(PrepareError, match="11_001001.wav") as err:
        prepare(task, cache_dir=str(tmp_path / "cache"))
    assert "searched, in order" in str(err.value)  # prepare shows where it looked
    summary = prepare(task, on_bad_file="skip", cache_dir=str(tmp_path / "cache"))
    assert summary["missing_files"] == [victim.path] and summary["unique_clips"] == 6


# --------------------------------------------------------------------------------------------
# OpenMIC
# --------------------------------------------------------------------------------------------
def test_openmic_mask_threshold_and_split(roots, tmp_path):
    task = OpenMICTask(roots["om"], seed=1)
    z = np.load(os.path.join(roots["om"], "openmic-2018.npz"))
    keys = [str(k) for k in z["sample_key"]]
    f = task.folds("0")[0]
    train_keys = open(os.path.join(roots["om"], "partitions", "split01_train.csv")).read().split()
    test_keys = open(os.path.join(roots["om"], "partitions", "split01_test.csv")).read().split()
    assert {e.id for e in f.test} == set(test_keys)
    tr, va = {e.id for e in f.train}, {e.id for e in f.valid}
    assert not tr & va and tr | va == set(train_keys) and len(va) == round(len(train_keys) / 8)
    for e in (*f.train, *f.valid, *f.test):
        i = keys.index(e.id)
        np.testing.assert_array_equal(e.mask, z["Y_mask"][i])
        np.testing.assert_array_equal(e.target, (z["Y_true"][i] >= 0.5) & z["Y_mask"][i])
        assert e.path.endswith(os.path.join("audio", e.id[:3], e.id + ".ogg"))
    # clip 0: an annotated 0.5 is a positive; unannotated entries (0.5) are target 0, mask False
    e0 = next(e for e in (*f.train, *f.valid, *f.test) if e.id == keys[0])
    assert e0.target[5] == 1 and e0.mask[5] and z["Y_true"][0, 5] == 0.5
    un = ~z["Y_mask"][0]
    assert (e0.target[un] == 0).all() and (z["Y_true"][0, un] == 0.5).all()
    # the README's partitions/train01.txt + test01.txt names are accepted
    root = make_openmic(str(tmp_path / "om-txt"), n_train=4, n_test=2, seconds=1.0,
                        partition_names="txt")
    g = OpenMICTask(root).folds("0")[0]
    assert len(g.train) + len(g.valid) == 4 and len(g.test) == 2


def test_openmic_root_above_archive_folder(roots, tmp_path):
    """openmic-2018-v1.0.0.tgz unpacks to openmic-2018/: a data root pointing at the folder
    that holds it reads the same clips, labels and split."""
    inner = roots["om"]
    assert os.path.basename(inner) == "openmic-2018"
    parent = os.path.dirname(inner)
    assert not os.path.exists(os.path.join(parent, "openmic-2018.npz"))
    a, b = OpenMICTask(inner, seed=3).folds("0")[0], OpenMICTask(parent, seed=3).folds("0")[0]
    for sa, sb in ((a.train, b.train), (a.valid, b.valid), (a.test, b.test)):
        assert [(e.id, e.path) for e in sa] == [(e.id, e.path) for e in sb]
        assert all(np.array_equal(x.target, y.target) and np.array_equal(x.mask, y.mask)
                   for x, y in zip(sa, sb))
    assert OpenMICTask(parent).classes == OpenMICTask(inner).classes
    assert validate_layout(OpenMICTask(parent)) == []
    with pytest.raises(DatasetLayoutError, match="openmic-2018/ holding them"):
        OpenMICTask(str(tmp_path)).folds("0")


def _replace_npz_member(path: str, name: str, payload: bytes) -> None:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members[name] = payload
    with zipfile.ZipFile(path, "w") as zf:
        for n, b in members.items():
            zf.writestr(n, b)


def _object_npy(arr: np.ndarray, pickled: bytes) -> bytes:
    """A version 1.0 .npy file of an object array with the given pickle stream."""
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, np.lib.format.header_data_from_array_1_0(arr))
    return buf.getvalue() + pickled


def test_openmic_object_sample_key(tmp_path, monkeypatch):
    """The official npz holds sample_key as an object array (scripts/helper_numpy.py takes
    np.unique of a pandas column; numpy pickles it): it is read without allow_pickle=True
    (only numpy's array reconstruction is unpickled), and X is never decoded."""
    import pickle

    root = make_openmic(str(tmp_path / "om"), n_train=4, n_test=2, seconds=1.0,
                        key_dtype="object")
    path = os.path.join(root, "openmic-2018.npz")
    keys = np.load(path, allow_pickle=True)["sample_key"]
    assert keys.dtype == object
    read = []
    orig = np.lib.npyio.NpzFile.__getitem__

    def spy(self, key):
        read.append(key)
        return orig(self, key)

    monkeypatch.setattr(np.lib.npyio.NpzFile, "__getitem__", spy)
    task = OpenMICTask(root)
    f = task.folds("0")[0]
    assert "X" not in read and "sample_key" in read
    assert task.load()["keys"] == [str(k) for k in keys]
    assert all(isinstance(k, str) for k in task.load()["keys"])
    assert {e.id for e in f.test} | {e.id for e in f.train + f.valid} == set(map(str, keys))
    assert all(os.path.isfile(e.path) for e in f.test)
    # as written by numpy 1.x (the 2018 file): protocol 2, numpy.core.multiarray._reconstruct
    legacy = pickle.dumps(keys, protocol=2).replace(b"numpy._core.multiarray",
                                                    b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in legacy
    _replace_npz_member(path, "sample_key.npy", _object_npy(keys, legacy))
    assert OpenMICTask(root).load()["keys"] == [str(k) for k in keys]
    # anything but an array of strings in that pickle is refused, never executed
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    _replace_npz_member(path, "sample_key.npy", _object_npy(keys, pickle.dumps(Evil())))
    with pytest.raises(DatasetLayoutError, match="sample_key"):
        OpenMICTask(root).folds("0")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------
# dictionary recipes (paper IV-B3), on small random spectrograms
# --------------------------------------------------------------------------------------------
def _fake_X(targets: np.ndarray, F: int = 513, T: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(len(targets), F, T, generator=g)


def _unit_norm(W):
    return torch.allclose(W.norm(dim=0), torch.ones(W.shape[1]), atol=1e-4) and (W >= 0).all()


@pytest.fixture
def one_thread():
    """Tiny NMF problems run far faster on one thread (no OpenMP hand-off per small GEMM)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_sonyc_dictionary_recipe(roots, one_thread):
    tgt = np.zeros((7, 8), np.float32)
    tgt[0, 0] = tgt[1, [0, 6]] = tgt[2, 1] = tgt[3, 7] = 1  # rows 4..6: no positive (noise)
    X, t = _fake_X(tgt), torch.from_numpy(tgt)
    task = SonycUSTTask(roots["sonyc"], dict_n_iter=2)
    W, info = task.dictionary_recipe(X, t, 80, seed=0)
    assert W.shape == (513, 80) and _unit_norm(W)
    assert info["atoms_per_class"] == [10] * 8 and info["include_noise"] is False
    blocks = {b["block"]: b for b in info["blocks"]}
    assert blocks["noise"]["positive_clips"] == 3 and blocks["engine"]["positive_clips"] == 2
    assert "fallback" in blocks["powered-saw"]  # no positive clip: all training clips
    W2, info2 = SonycUSTTask(roots["sonyc"], dict_n_iter=2, dict_include_noise=True
                             ).dictionary_recipe(X, t, 90, seed=0)
    assert W2.shape == (513, 90) and info2["noise_atoms"] == 10
    W3, info3 = SonycUSTTask(roots["sonyc"], dict_n_iter=2, dict_include_noise=True,
                             dict_atoms_per_class=2, dict_noise_atoms=3,
                             dict_classes=[c for c in SONYC_CLASSES
                                           if c != "non-machinery-impact"]
                             ).dictionary_recipe(X, t, 80, seed=0)
    assert W3.shape == (513, 3 + 7 * 2) and _unit_norm(W3)
    # k not divisible: the remainder goes to the first blocks, total = k
    W4, info4 = SonycUSTTask(roots["sonyc"], dict_n_iter=1).dictionary_recipe(X, t, 19, seed=0)
    assert W4.shape == (513, 19) and info4["atoms_per_class"] == [3, 3, 3, 2, 2, 2, 2, 2]


def test_openmic_and_esc_dictionary_recipe(roots, one_thread):
    tgt = np.zeros((6, 20), np.float32)
    tgt[np.arange(6), np.arange(6)] = 1
    X, t = _fake_X(tgt, T=8), torch.from_numpy(tgt)
    W, info = OpenMICTask(roots["om"], dict_n_iter=1).dictionary_recipe(X, t, 40, seed=0)
    assert W.shape == (513, 40) and _unit_norm(W) and info["atoms_per_class"] == [2] * 20
    assert sum("fallback" in b for b in info["blocks"]) == 14
    W, info = OpenMICTask(roots["om"], dict_n_iter=1).dictionary_recipe(X, t, 300, seed=0)
    assert W.shape == (513, 300) and info["atoms_per_class"] == [15] * 20
    W, info = ESC50Task(roots["esc"]).dictionary_recipe(X, t, 6, seed=0)
    assert W.shape == (513, 6) and _unit_norm(W) and info["recipe"] == "all training clips"


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ESC50Task, SonycUSTTask, OpenMICTask])
def test_missing_root(cls, tmp_path):
    for root in (None, str(tmp_path / "nowhere")):
        with pytest.raises(DatasetLayoutError) as err:
            cls(root).folds(cls(root).fold_names()[0])
        msg = str(err.value)
        assert "Getting the data" in msg and "<data_root>/" in msg
    with pytest.raises(PrepareError, match="Getting the data"):
        prepare(cls(str(tmp_path / "nowhere")), cache_dir=str(tmp_path / "c"))


def test_missing_metadata_files(tmp_path, roots):
    os.makedirs(tmp_path / "esc" / "audio")
    with pytest.raises(DatasetLayoutError, match=r"meta/esc50\.csv is missing"):
        ESC50Task(str(tmp_path / "esc")).folds("1")
    root = _copy(roots["sonyc"], tmp_path, "son")
    os.remove(os.path.join(root, "annotations.csv"))
    with pytest.raises(DatasetLayoutError, match=r"annotations\.csv is missing"):
        SonycUSTTask(root).folds("0")
    assert "annotations.csv" in validate_layout(SonycUSTTask(root))[0]
    root = _copy(roots["om"], tmp_path, "om")
    os.remove(os.path.join(root, "class-map.json"))
    with pytest.raises(DatasetLayoutError, match=r"class-map\.json is missing"):
        OpenMICTask(root).folds("0")
    root = _copy(roots["om"], tmp_path, "om2")
    os.remove(os.path.join(root, "partitions", "split01_test.csv"))
    with pytest.raises(DatasetLayoutError, match="split01_test.csv or .*test01.txt"):
        OpenMICTask(root).folds("0")


def test_missing_columns(tmp_path, roots):
    root = _copy(roots["esc"], tmp_path, "esc")
    path = os.path.join(root, "meta", "esc50.csv")
    pd.read_csv(path).drop(columns=["fold"]).to_csv(path, index=False)
    with pytest.raises(DatasetLayoutError, match=r"esc50\.csv lacks column\(s\) \['fold'\]"):
        ESC50Task(root).folds("1")
    root = _copy(roots["sonyc"], tmp_path, "son")
    path = os.path.join(root, "annotations.csv")
    pd.read_csv(path).drop(columns=["8_dog_presence"]).to_csv(path, index=False)
    with pytest.raises(DatasetLayoutError, match="8_dog_presence"):
        SonycUSTTask(root).folds("0")
    root = _copy(roots["om"], tmp_path, "om")
    path = os.path.join(root, "openmic-2018.npz")
    z = dict(np.load(path))
    del z["Y_mask"]
    np.savez(path, **z)
    with pytest.raises(DatasetLayoutError, match="Y_mask"):
        OpenMICTask(root).folds("0")


def test_listed_audio_absent(tmp_path, roots):
    root = _copy(roots["esc"], tmp_path, "esc")
    gone = os.path.join(root, "audio", "3-100158-A-1.wav")
    assert os.path.exists(gone)
    os.remove(gone)
    task = ESC50Task(root)
    problems = validate_layout(task)
    assert len(problems) == 1 and "3-100158-A-1.wav" in problems[0]
    with pytest.raises(PrepareError, match="3-100158-A-1.wav"):
        prepare(task, cache_dir=str(tmp_path / "cache"))
    fold = task.folds("3")[0]
    with pytest.raises(AudioError, match="3-100158-A-1.wav"):
        materialize(fold.test, task.frontend)
    summary = prepare(task, on_bad_file="skip", cache_dir=str(tmp_path / "cache"))
    assert summary["missing_files"] == [gone] and summary["n_skipped"] == 1
    assert summary["unique_clips"] == 37 and summary["clips"]["3"]["test"] == 7


def test_corrupt_and_truncated_audio(tmp_path, roots):
    root = _copy(roots["esc"], tmp_path, "esc")
    task = ESC50Task(root)
    test = task.folds("1")[0].test
    corrupt, truncated = test[0].path, test[1].path
    with open(corrupt, "wb") as fh:
        fh.write(b"this is not a wav file" * 10)
    with open(truncated, "r+b") as fh:
        fh.truncate(30)  # cut inside the header
    fe = task.frontend
    with pytest.raises(AudioError, match=os.path.basename(corrupt)):
        materialize(test, fe)
    report = LoadReport()
    split = materialize(test, fe, on_bad_file="skip", report=report)
    assert len(split) == len(test) - 2 and len(report.skipped) == 2
    assert {s["path"] for s in report.skipped} == {corrupt, truncated}
    # the same through the cache: built once with the bad files recorded, then reused
    cache = str(tmp_path / "cache")
    with pytest.raises(AudioError, match=os.path.basename(corrupt)):
        materialize(test, fe, cache_dir=cache)
    rep = LoadReport()
    split2 = materialize(test, fe, on_bad_file="skip", report=rep, cache_dir=cache)
    assert rep.cache == "hit" and len(rep.skipped) == 2
    assert torch.equal(split.wave, split2.wave)


def test_resample_and_downmix(roots):
    task = SonycUSTTask(roots["sonyc"])
    f = task.folds("0")[0]
    report = LoadReport()
    split = materialize(f.train, task.frontend, report=report)
    n48 = sum(int(e.id.split("_")[1]) % 3 == 2 for e in f.train)  # fixture: every 3rd at 48k
    assert n48 > 0 and report.resampled == n48 and report.downmixed == 0
    assert split.wave.shape == (12, 441000) and split.target.shape == (12, 8)
    om = OpenMICTask(roots["om"])
    test = om.folds("0")[0].test
    report = LoadReport()
    split = materialize(test, om.frontend, report=report, num_workers=3)
    assert report.downmixed == sum(int(np.load(os.path.join(roots["om"], "openmic-2018.npz"))
                                       ["sample_key"].tolist().index(e.id)) % 2 for e in test)
    assert report.downmixed > 0 and split.wave.shape == (6, 441000)
    assert split.mask.dtype == torch.bool and not split.mask.all()
    single = materialize(test, om.frontend, num_workers=1)
    assert torch.equal(single.wave, split.wave)  # parallel loading keeps the order


def test_openmic_key_without_audio(tmp_path, roots):
    root = _copy(roots["om"], tmp_path, "om")
    task = OpenMICTask(root)
    victim = task.folds("0")[0].test[2]
    os.remove(victim.path)
    assert victim.id in validate_layout(task)[0]
    with pytest.raises(AudioError, match=victim.id):
        materialize(task.folds("0")[0].test, task.frontend)
    report = LoadReport()
    split = materialize(task.folds("0")[0].test, task.frontend, on_bad_file="skip",
                        report=report)
    assert victim.id not in split.ids and len(report.skipped) == 1


# --------------------------------------------------------------------------------------------
# cache
# --------------------------------------------------------------------------------------------
def _entries(cache: str) -> list[str]:
    out = []
    for dirpath, dirnames, _ in os.walk(cache):
        out += [os.path.join(dirpath, d) for d in dirnames
                if os.path.isfile(os.path.join(dirpath, d, "meta.json")) or ".tmp-" in d]
    return out


def test_cache_reuse_and_invalidation(tmp_path, roots):
    root = _copy(roots["esc"], tmp_path, "esc")
    cache = str(tmp_path / "cache")
    task = ESC50Task(root)
    summary = prepare(task, cache_dir=cache)
    assert summary["cache"] == "built" and summary["unique_clips"] == 38
    assert summary["clips"]["1"] == {"train": 26, "valid": 4, "test": 8}
    assert sum(summary["label_counts"]["1"]["test"].values()) == 8
    assert prepare(task, cache_dir=cache)["cache"] == "hit"
    # each split of each fold is served from the task-wide entry (no duplicate storage)
    fold = task.folds("2")[0]
    rep = LoadReport()
    cached = materialize(fold.train, task.frontend, cache_dir=cache, namespace=task.name,
                         report=rep)
    assert rep.cache == "hit" and rep.cache_path == summary["cache_path"]
    assert torch.equal(cached.wave, materialize(fold.train, task.frontend).wave)
    assert len(_entries(cache)) == 1
    # an exact entry is memory-mapped, copy-on-write: writing never touches the file
    rep = LoadReport()
    whole = materialize(sorted((e for f in task.folds() for e in f.test), key=lambda e: e.path),
                        task.frontend, cache_dir=cache, namespace=task.name, report=rep)
    assert rep.cache == "hit"
    whole.wave[0, :10] = 123.0
    again = np.load(os.path.join(summary["cache_path"], "wave.npy"), mmap_mode="r")
    assert not (again[0, :10] == 123.0).any()
    # a changed file (mtime) invalidates: a new entry is built
    p = fold.train[0].path
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000_000))
    rep = LoadReport()
    materialize(fold.train, task.frontend, cache_dir=cache, namespace=task.name, report=rep)
    assert rep.cache == "built"
    # another front-end config (clip length) never shares entries
    fe2 = FrontendConfig(44100, 1024, 512, 128, clip_seconds=2.0)
    rep = LoadReport()
    short = materialize(fold.test, fe2, cache_dir=cache, namespace=task.name, report=rep)
    assert rep.cache == "built" and short.wave.shape[1] == 88200


def test_half_finished_prepare_is_not_reused(tmp_path, roots, monkeypatch):
    root = _copy(roots["esc"], tmp_path, "esc")
    cache = str(tmp_path / "cache")
    task = ESC50Task(root)
    real = data_mod._load_one
    calls = {"n": 0}

    def flaky(ex, fe):
        calls["n"] += 1
        if calls["n"] == 6:
            raise RuntimeError("simulated crash mid-write")
        return real(ex, fe)

    monkeypatch.setattr(data_mod, "_load_one", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        prepare(task, cache_dir=cache, num_workers=1)
    assert _entries(cache) == []  # the temporary folder was removed, nothing published
    monkeypatch.setattr(data_mod, "_load_one", real)
    # a run killed outright leaves a *.tmp-* folder: it is never read
    base = data_mod._namespace_dir(cache, task.name, task.frontend)
    fold = task.folds("1")[0]
    key = data_mod.list_key([data_mod.fingerprint(e.path) for e in fold.test])
    fake = os.path.join(base, key + ".tmp-killed")
    os.makedirs(fake)
    np.save(os.path.join(fake, "wave.npy"), np.zeros((len(fold.test), 10), np.float32))
    with open(os.path.join(fake, "meta.json"), "w") as fh:
        json.dump({"version": data_mod.CACHE_VERSION, "rows": {}, "bad": {}}, fh)
    rep = LoadReport()
    split = materialize(fold.test, task.frontend, cache_dir=cache, namespace=task.name,
                        report=rep)
    assert rep.cache == "built" and split.wave.shape == (8, 220500)
    assert float(split.wave.abs().max()) > 0.1
