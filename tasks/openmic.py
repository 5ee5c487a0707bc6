"""OpenMIC-2018 (Humphrey et al. 2018; Zenodo record 1432913, github.com/cosmir/openmic-2018).
Layout::

    <data_root>/
      openmic-2018.npz              Y_true (N, 20) float, Y_mask (N, 20) bool, sample_key (N,)
                                    (X, the VGGish features, is never read)
      class-map.json                {"accordion": 0, ..., "voice": 19}
      partitions/split01_train.csv  one sample key per line, no header
      partitions/split01_test.csv   (the repository README's partitions/train01.txt and
                                    test01.txt are accepted too)
      audio/<key[:3]>/<key>.ogg     10 s, 44.1 kHz (stereo clips are down-mixed)

The Zenodo archive openmic-2018-v1.0.0.tgz unpacks to ``openmic-2018/``; a data root that
holds that folder (and no ``openmic-2018.npz`` of its own) is read from
``<data_root>/openmic-2018``.

``sample_key`` may be an object array, which numpy pickles: the official
scripts/helper_numpy.py builds it with ``np.unique`` of a pandas column (third-party code loads
the file with ``allow_pickle=True``). It is read without ``allow_pickle=True``, by an
unpickler that admits only numpy's array reconstruction (so a crafted file cannot run code);
a unicode ``sample_key`` is read as it is.

Multilabel, 20 instrument classes in class-map index order. target = (Y_true >= 0.5) where the
label is annotated (Y_mask), and 0 where it is not (unannotated entries hold Y_true = 0.5 by
construction); mask = Y_mask, so losses and metrics count annotated entries only (official
baseline notebook). Code that ignores the mask (e.g. the dictionary recipe's "positive clips")
therefore never takes an unannotated label for a positive.

One fold, ``"0"``: test = split01 test keys; valid = a seeded random ~1/8 (``valid_fraction``)
of the split01 train keys; train = the remaining train keys. The official partition is
artist-stratified; the validation hold-out is not (the artist is not in the npz).

``official_metric = "weighted_f1"``: per class, sklearn's support-weighted F1 over {negative,
positive} on the annotated test clips, averaged over the 20 classes (paper V-A; the threshold
0.5 on the prediction is an assumption, reference/dataset_facts.md section 2b).

Dictionary recipe (paper IV-B3): for each class, ``dict_atoms_per_class`` (15) atoms from up to
``dict_clips_per_class`` (500) random positive (annotated, Y_true >= 0.5) training clips,
stacked class by class (20 x 15 = 300). When the method asks for ``k`` components and
``dict_atoms_per_class`` is not set: k // 20 per class, the remainder to the first classes,
at least one each. A class with no positive training clip learns its atoms on all training
clips (recorded in the info).
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from typing import Any, ClassVar

import numpy as np

from audio_xai_bench.api import Example, Fold, FrontendConfig, Task
from audio_xai_bench.settings import Rule

from . import _layout as L

LAYOUT = """  <data_root>/
    openmic-2018.npz               (arrays Y_true, Y_mask, sample_key)
    class-map.json                 (instrument name -> column index)
    partitions/split01_train.csv   (one sample key per line; or partitions/train01.txt)
    partitions/split01_test.csv    (or partitions/test01.txt)
    audio/<key[:3]>/<key>.ogg
  (or <data_root>/openmic-2018/ holding them, as openmic-2018-v1.0.0.tgz unpacks)"""

ARCHIVE_FOLDER = "openmic-2018"  # the top folder of the Zenodo archive
NPZ = "openmic-2018.npz"

TRAIN_FILES = ("partitions/split01_train.csv", "partitions/train01.txt")
TEST_FILES = ("partitions/split01_test.csv", "partitions/test01.txt")

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    # Table II; one attention per class for multilabel, as the paper describes.
    "l2i": {"K": 300, "alpha": 5.0, "beta": 0.2, "epochs": 21, "attention": "per_class"},
    "l2i-max": {"K": 300, "alpha": 5.0, "beta": 0.2, "epochs": 21},
    # Table III
    "l2i-bd": {"K": 300, "gamma": 1.0, "alpha": 3.0, "beta": 0.2, "epochs": 21},
}


# the globals a pickled object ndarray names (numpy 1.x and 2.x module paths; protocol 2
# writes bytes as _codecs.encode(str, 'latin1')); nothing else is ever imported
_ARRAY_PICKLE_GLOBALS = {(m, n) for m in ("numpy.core.multiarray", "numpy._core.multiarray")
                         for n in ("_reconstruct", "scalar")} | {
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ARRAY_PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_object_array(npz_path: str, name: str) -> np.ndarray:
    """Member ``name`` of an npz that holds an object array, unpickled with only numpy's array
    reconstruction allowed (``np.load`` needs ``allow_pickle=True``, which runs any code)."""
    with zipfile.ZipFile(npz_path) as zf, zf.open(f"{name}.npy") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"{name}.npy has unsupported .npy format version {version}")
        if dtype != np.dtype(object):
            raise ValueError(f"{name}.npy holds dtype {dtype}, not an object array")
        arr = _ArrayUnpickler(fh, encoding="ASCII").load()  # np.load's own defaults
    if not isinstance(arr, np.ndarray) or arr.shape != tuple(shape):
        raise ValueError(f"{name}.npy does not hold an array of shape {tuple(shape)}")
    return arr


def audio_path(root: str, key: str) -> str:
    return os.path.join(root, "audio", key[:3], f"{key}.ogg")


class OpenMICTask(Task):
    """``openmic``: 20 instruments, partially annotated weak labels."""

    name: ClassVar[str] = "openmic"
    option_defaults: ClassVar[dict[str, Any] | None] = {
        "max_clips": None, "valid_fraction": 0.125,
        "dict_atoms_per_class": None, "dict_clips_per_class": 500, "dict_mu": 0.8,
        "dict_n_iter": 100,
    }
    option_rules: ClassVar[dict[str, Any]] = {"max_clips": Rule(ge=1),
                                             "valid_fraction": Rule(gt=0, lt=1), "dict_atoms_per_class": Rule(ge=1),
                                             "dict_clips_per_class": Rule(ge=1)}
    kind: ClassVar[str] = "multilabel"  # type: ignore[assignment]
    official_metric: ClassVar[str] = "weighted_f1"
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = METHOD_DEFAULTS

    def __init__(self, data_root: str | None = None, profile: str = "default", seed: int = 0,
                 **options: Any) -> None:
        super().__init__(data_root, profile, seed, **options)
        self.frontend = FrontendConfig(44100, 1024, 512, 128, clip_seconds=10.0)
        self.valid_fraction = float(options.get("valid_fraction", 0.125))
        self._data = None

    def _root(self) -> str:
        return L.archive_root(self.name, self.data_root, LAYOUT, NPZ, ARCHIVE_FOLDER)

    def _read_keys(self, path: str) -> list[str]:
        with open(path) as fh:
            keys = [line.strip().split(",")[0] for line in fh if line.strip()]
        return keys

    def load(self) -> dict[str, Any]:
        """Labels, masks, keys and the split01 partition, checked against one another."""
        if self._data is not None:
            return self._data
        root = self._root()
        npz_path = L.require_file(self.name, root, NPZ, LAYOUT)
        cmap_path = L.require_file(self.name, root, "class-map.json", LAYOUT)
        train_path = L.require_file(self.name, root, TRAIN_FILES, LAYOUT)
        test_path = L.require_file(self.name, root, TEST_FILES, LAYOUT)
        try:
            with np.load(npz_path, allow_pickle=False) as z:
                missing = [k for k in ("Y_true", "Y_mask", "sample_key") if k not in z.files]
                if missing:
                    raise L.DatasetLayoutError(
                        f"task {self.name!r}: {npz_path} lacks array(s) {missing} (has "
                        f"{z.files}). {L.GETTING_DATA}")
                Y_true = np.asarray(z["Y_true"], np.float64)  # >= 0.5 on the stored values
                Y_mask = np.asarray(z["Y_mask"]).astype(bool)
                try:
                    raw_keys = z["sample_key"]
                except ValueError as exc:  # object array: numpy wants allow_pickle=True
                    try:
                        raw_keys = read_object_array(npz_path, "sample_key")
                    except Exception as exc2:
                        raise L.DatasetLayoutError(
                            f"task {self.name!r}: cannot read sample_key of {npz_path}: "
                            f"{exc}; as an object array: {exc2}") from exc2
                keys = [str(k) for k in raw_keys]
        except L.DatasetLayoutError:
            raise
        except Exception as exc:
            raise L.DatasetLayoutError(f"task {self.name!r}: cannot read {npz_path}: {exc}") from exc
        try:
            with open(cmap_path) as fh:
                cmap = json.load(fh)
            order = sorted(cmap, key=lambda c: int(cmap[c]))
        except Exception as exc:
            raise L.DatasetLayoutError(f"task {self.name!r}: cannot read {cmap_path}: {exc}") from exc
        if [int(cmap[c]) for c in order] != list(range(len(order))):
            raise L.DatasetLayoutError(f"task {self.name!r}: the indices of {cmap_path} must be "
                                       f"0..{len(order) - 1}, got {sorted(cmap.values())}")
        if Y_true.ndim != 2 or Y_true.shape != Y_mask.shape or Y_true.shape[0] != len(keys):
            raise L.DatasetLayoutError(
                f"task {self.name!r}: {npz_path} arrays disagree: Y_true {Y_true.shape}, "
                f"Y_mask {Y_mask.shape}, sample_key ({len(keys)},)")
        if Y_true.shape[1] != len(order):
            raise L.DatasetLayoutError(
                f"task {self.name!r}: {cmap_path} names {len(order)} classes but Y_true in "
                f"{npz_path} has {Y_true.shape[1]} columns")
        row = {k: i for i, k in enumerate(keys)}
        split = {}
        for name, path in (("train", train_path), ("test", test_path)):
            ks = self._read_keys(path)
            unknown = [k for k in ks if k not in row]
            if unknown:
                raise L.DatasetLayoutError(
                    f"task {self.name!r}: {len(unknown)} key(s) of {path} are not in sample_key "
                    f"of {npz_path}, e.g. {unknown[:3]}")
            split[name] = np.asarray([row[k] for k in ks], np.int64)
        both = set(split["train"].tolist()) & set(split["test"].tolist())
        if both:
            raise L.DatasetLayoutError(f"task {self.name!r}: {len(both)} key(s) are in both "
                                       f"{train_path} and {test_path}, e.g. {keys[min(both)]}")
        self._classes = [str(c) for c in order]
        self._data = {"Y_true": Y_true, "Y_mask": Y_mask, "keys": keys, "split": split,
                      "root": root}
        return self._data

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        self.load()
        return self._classes

    def targets(self) -> tuple[np.ndarray, np.ndarray]:
        """(target, mask) for every row of the npz: (Y_true >= 0.5) & Y_mask, and Y_mask."""
        d = self.load()
        mask = d["Y_mask"]
        return ((d["Y_true"] >= 0.5) & mask).astype(np.float32), mask

    def validate_layout(self) -> list[str]:
        try:
            d = self.load()
        except L.DatasetLayoutError as exc:
            return [str(exc)]
        used = np.concatenate([d["split"]["train"], d["split"]["test"]])
        paths = [audio_path(d["root"], d["keys"][i]) for i in used]
        missing = L.missing_files(paths)
        return [L.summarize_missing(self.name, missing, len(paths))] if missing else []

    def _examples(self, rows: np.ndarray) -> list[Example]:
        d = self.load()
        target, mask = self.targets()
        return [Example(id=d["keys"][i], target=target[i], mask=mask[i].copy(),
                        path=audio_path(d["root"], d["keys"][i])) for i in rows]

    def folds(self, fold: str | None = None) -> list[Fold]:
        if fold not in (None, "0", "all"):
            raise KeyError(f"task {self.name} has one fold, '0' (got {fold!r})")
        d = self.load()
        rng = L.rng_for(self.seed, 0)
        train = d["split"]["train"]
        hold = L.random_holdout(len(train), self.valid_fraction, rng)
        rows = {"train": train[~hold], "valid": train[hold], "test": d["split"]["test"]}
        rows = {s: L.cap_indices(r, L.profile_cap(self.profile, self.options, s), rng)
                for s, r in rows.items()}
        return [Fold("0", self._examples(rows["train"]), self._examples(rows["valid"]),
                     self._examples(rows["test"]))]

    def dictionary_recipe(self, train_X, train_target, k, seed=0, mu=0.8, n_iter=100):
        import torch

        o = self.options
        C = self.num_classes
        if o.get("dict_atoms_per_class") is not None:
            per_class = [int(o["dict_atoms_per_class"])] * C
        elif k:
            per_class = L.split_atoms(int(k), C)
        else:
            per_class = [15] * C
        clips = int(o.get("dict_clips_per_class", 500))
        nmf_kwargs = {"mu": float(o.get("dict_mu", mu)), "n_iter": int(o.get("dict_n_iter", n_iter))}
        tgt = np.asarray(train_target.cpu().numpy() if hasattr(train_target, "cpu")
                         else train_target) > 0.5
        positives = [np.flatnonzero(tgt[:, c]) for c in range(C)]
        blocks, records = L.block_dictionary(train_X, positives, per_class, seed,
                                             max_clips=clips, names=list(self.classes),
                                             nmf_kwargs=nmf_kwargs)
        W = torch.cat(blocks, dim=1)
        return W, {"recipe": "OpenMIC-2018 (paper IV-B3): per class, atoms from random "
                             "positive training clips, stacked",
                   "atoms_per_class": per_class, "clips_per_class": clips,
                   "nmf": nmf_kwargs, "blocks": records,
                   "K_total": int(W.shape[1]), "requested_k": None if k is None else int(k)}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"valid_fraction": self.valid_fraction, "partition": "split01",
                  "target_rule": "(Y_true >= 0.5) & Y_mask; mask = Y_mask"})
        return d
