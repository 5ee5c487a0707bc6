"""SONYC-UST v2.3 (DCASE 2020 task 5; Zenodo record 3966543), coarse 8-label task. Layout::

    <data_root>/
      annotations.csv            one row per (recording, annotator)
      dcase-ust-taxonomy.yaml    optional; checked against the 8 coarse classes when present
      audio/<audio_filename>     10 s wav (the rate is read from each file; resampled to 44.1 kHz)

v2.3 ships the audio as ``audio-0.tar.gz`` ... ``audio-18.tar.gz``: unpack them all into
``audio/``, or each into its own ``audio-<n>/`` folder (with or without an inner ``audio/``
folder). Each listed ``audio_filename`` is looked up in ``audio/`` first, else in any
``audio-*/`` folder, else in any ``audio-*/audio/`` folder, from one listing of each folder.
A file found in none keeps the path ``audio/<audio_filename>`` (reported as absent, naming
the folders searched).

Columns are addressed **by name**, as the official baselines do: ``split``, ``audio_filename``,
``annotator_id`` and the coarse ``<n>_<name>_presence`` columns in the official class order
(engine, machinery-impact, non-machinery-impact, powered-saw, alert-signal, music, human-voice,
dog).

Labels (official DCASE 2020 baseline, ``classify.get_file_targets`` / ``get_subset_split``):

- ``train`` recordings: only volunteer rows (``annotator_id > 0``); a class is positive when the
  sum of its presence values over those rows is > 0, i.e. at least one volunteer marked it
  ("minority vote"). A train recording without any volunteer row is dropped (counted).
- ``validate`` / ``test`` recordings: the verified ``annotator_id == 0`` row alone (positive
  when its value is > 0); recordings without such a row are dropped from these splits (counted
  in ``self.info``), as the baseline keeps only files whose minimum annotator_id is <= 0.

One fold, ``"0"``: train = split ``train``, valid = ``validate``, test = ``test``.
The paper drops 'non-machinery-impact' from class-wise fidelity and faithfulness
(``classwise_exclude``): the scorer leaves it out of multilabel fidelity (all
``fidelity/*``) and of the class-wise FF; f's and a predictor's label metrics keep all 8
classes, as the DCASE evaluation does. Option ``exclude_nmi=False`` keeps it everywhere.

``official_metric = "macro_auprc"`` (DCASE 2020 ranked on coarse macro-AUPRC) with
``official_source = "macro_auprc_dcase"``: ``official/macro_auprc`` is the DCASE 2020
evaluation code's trapezoid AUPRC (``fidelity.auprc_dcase``), not scikit-learn's average
precision, which stays under ``classification/macro_auprc`` beside it.

Dictionary recipe (paper IV-B3): ``dict_noise_atoms`` (10) atoms learnt on up to
``dict_noise_clips`` (1000; "NS1000" in the authors' shipped dictionary's file name, an
unverified hint) training clips with no positive label; then, for each class of
``dict_classes`` (all 8 by default), ``dict_atoms_per_class`` (10) atoms learnt from up to
``dict_clips_per_class`` (700) random positive training clips with W_noise held fixed.
The paper writes "All 10 x 8 = 80 components are stacked" and sets K = 80 (Table II); 8 class
blocks plus the noise block would be 90 (reference/l2i_protocol_facts.md section 6). Default:
the literal reading, W = [class 1 .. class 8] = 80 columns and the noise block only explains
the background while the class atoms are fitted (``dict_include_noise=False``).
``dict_include_noise=True`` stacks [noise, class 1..C] (90 columns); ``dict_classes`` without
non-machinery-impact plus the noise block gives the other 80-column reading (10 + 7 x 10).
When the method asks for ``k`` components and ``dict_atoms_per_class`` is not set, the atoms
are split over the stacked blocks: k // n_blocks each, the remainder to the first blocks, at
least one (so k = 80 gives 10 per class, exactly the paper's setting); the noise block then
has as many atoms as a class block unless ``dict_noise_atoms`` is set.
"""
from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from audio_xai_bench.api import Example, Fold, FrontendConfig, Task
from audio_xai_bench.settings import Rule

from . import _layout as L

CLASSES = ["engine", "machinery-impact", "non-machinery-impact", "powered-saw", "alert-signal",
           "music", "human-voice", "dog"]
COARSE_COLUMNS = [f"{i + 1}_{c}_presence" for i, c in enumerate(CLASSES)]
META_COLUMNS = ("split", "audio_filename", "annotator_id")
SPLITS = {"train": "train", "valid": "validate", "test": "test"}

LAYOUT = """  <data_root>/
    annotations.csv          (columns split, sensor_id, audio_filename, annotator_id, ...,
                              29 fine <c>-<f>_<name>_presence, 29 <c>-<f>_<name>_proximity,
                              8 coarse <c>_<name>_presence)
    dcase-ust-taxonomy.yaml  (optional)
    audio/<audio_filename>   (10 s .wav, all in one folder; or each audio-<n>.tar.gz
                              unpacked into its own audio-<n>/ or audio-<n>/audio/ folder)"""

METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    # Table II; one attention shared by the classes, as in the authors' SONYC code.
    "l2i": {"K": 80, "alpha": 10.0, "beta": 0.8, "epochs": 21, "attention": "shared"},
    "l2i-max": {"K": 80, "alpha": 10.0, "beta": 0.8, "epochs": 21},
    # Table III
    "l2i-bd": {"K": 80, "gamma": 1.0, "alpha": 4.0, "beta": 0.2, "epochs": 21},
}


def aggregate_labels(df, split: str) -> tuple[list[str], np.ndarray, dict[str, int]]:
    """(recordings, targets (N, 8) float32, counts) of one split of the annotations table,
    with the official DCASE 2020 rule (see the module docstring). Recordings are sorted."""
    rows = df[df["split"] == split]
    ann = rows["annotator_id"].astype(int)
    values = rows[COARSE_COLUMNS].astype(int)
    counts = {"recordings": int(rows["audio_filename"].nunique())}
    if split == "train":
        sel = rows[ann > 0]
        summed = values[ann > 0].groupby(sel["audio_filename"]).sum()
        target = (summed.to_numpy() > 0).astype(np.float32)
    else:
        sel = rows[ann == 0]
        # one verified row per recording in the official data; several are OR-ed
        agg = (values[ann == 0] > 0).groupby(sel["audio_filename"]).any()
        summed = agg
        target = agg.to_numpy().astype(np.float32)
    files = [str(f) for f in summed.index]
    counts["kept"] = len(files)
    counts["dropped_no_" + ("volunteer" if split == "train" else "verified") + "_row"] = (
        counts["recordings"] - len(files))
    return files, target.reshape(len(files), len(CLASSES)), counts


class SonycUSTTask(Task):
    """``sonyc-ust``: 8 coarse urban-sound tags, multilabel, one fold."""

    metric_variants: ClassVar[tuple[str, ...]] = ("auprc_dcase",)  # official DCASE 2020 AUPRC

    name: ClassVar[str] = "sonyc-ust"
    option_defaults: ClassVar[dict[str, Any] | None] = {
        "max_clips": None, "valid_fraction": 0.125,
        "exclude_nmi": True, "dict_classes": tuple(CLASSES), "dict_include_noise": False,
        "dict_atoms_per_class": None, "dict_noise_atoms": None, "dict_clips_per_class": 700,
        "dict_noise_clips": 1000, "dict_mu": 0.8, "dict_n_iter": 100,
    }
    option_rules: ClassVar[dict[str, Any]] = {"max_clips": Rule(ge=1),
                                             "valid_fraction": Rule(gt=0, lt=1), "dict_classes": Rule(choices=tuple(CLASSES)),
                                             "dict_atoms_per_class": Rule(ge=1),
                                             "dict_clips_per_class": Rule(ge=1)}
    kind: ClassVar[str] = "multilabel"  # type: ignore[assignment]
    official_metric: ClassVar[str] = "macro_auprc"
    official_source: ClassVar[str | None] = "macro_auprc_dcase"
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = METHOD_DEFAULTS
    classwise_exclude: ClassVar[tuple[str, ...]] = ("non-machinery-impact",)

    def __init__(self, data_root: str | None = None, profile: str = "default", seed: int = 0,
                 **options: Any) -> None:
        super().__init__(data_root, profile, seed, **options)
        self.classes = list(CLASSES)
        self.frontend = FrontendConfig(44100, 1024, 512, 128, clip_seconds=10.0)
        if not options.get("exclude_nmi", True):
            self.classwise_exclude = ()  # type: ignore[misc]
        self.info: dict[str, Any] = {}
        self._table = None

    def _root(self) -> str:
        return L.require_root(self.name, self.data_root, LAYOUT)

    def annotations(self):
        if self._table is not None:
            return self._table
        root = self._root()
        path = L.require_file(self.name, root, "annotations.csv", LAYOUT)
        df = L.read_csv(self.name, path, (*META_COLUMNS, *COARSE_COLUMNS),
                        dtype={"audio_filename": str, "split": str})
        for col in ("annotator_id", *COARSE_COLUMNS):
            num = df[col].astype(str).str.fullmatch(r"-?\d+(\.0+)?")
            if not num.all():
                raise L.DatasetLayoutError(
                    f"task {self.name!r}: column {col!r} of {path} must hold integers; row "
                    f"{int(np.flatnonzero(~num)[0]) + 2} holds {df[col][~num].iloc[0]!r}")
            df[col] = df[col].astype(float).astype(int)
        unknown = sorted(set(df["split"]) - set(SPLITS.values()))
        if unknown:
            raise L.DatasetLayoutError(f"task {self.name!r}: column 'split' of {path} holds "
                                       f"{unknown}; expected train / validate / test")
        self._check_taxonomy(root)
        self._table = df
        return df

    def _check_taxonomy(self, root: str) -> None:
        path = os.path.join(root, "dcase-ust-taxonomy.yaml")
        if not os.path.isfile(path):
            return
        import yaml

        try:
            with open(path) as fh:
                tax = yaml.safe_load(fh)
            coarse = tax["coarse"]
            names = [str(coarse[k]) for k in sorted(coarse, key=lambda k: int(k))]
        except Exception as exc:
            raise L.DatasetLayoutError(f"task {self.name!r}: cannot read the coarse classes "
                                       f"of {path}: {exc!r}") from exc
        if names != CLASSES:
            raise L.DatasetLayoutError(f"task {self.name!r}: {path} lists coarse classes "
                                       f"{names}; expected {CLASSES}")

    def audio_index(self) -> tuple[dict[str, str], list[str]]:
        """({file name: path} of the audio present, the folders searched), the first folder
        holding a name winning: audio/, then audio-*/, then audio-*/audio/ (shards in
        numeric order). One directory listing per folder (``folds`` and ``validate_layout``
        each make one index)."""
        root = self._root()
        with os.scandir(root) as it:
            shards = [e.name for e in it if e.name.startswith("audio-") and e.is_dir()]
        shards.sort(key=lambda n: (not n[6:].isdigit(), int(n[6:]) if n[6:].isdigit() else 0, n))
        folders = [os.path.join(root, d) for d in
                   ["audio", *shards, *(os.path.join(s, "audio") for s in shards)]]
        index: dict[str, str] = {}
        for folder in folders:
            try:
                with os.scandir(folder) as it:
                    for e in it:
                        if e.name not in index and e.is_file():
                            index[e.name] = os.path.join(folder, e.name)
            except (FileNotFoundError, NotADirectoryError):
                continue
        return index, folders

    @staticmethod
    def _audio_path(index: dict[str, str], folders: list[str], name: str) -> str:
        """Where ``name`` (an ``audio_filename``) is; ``audio/<name>`` (the first folder
        searched) when it is nowhere."""
        return index.get(name) or os.path.join(folders[0], name)

    def validate_layout(self) -> list[str]:
        try:
            df = self.annotations()
        except L.DatasetLayoutError as exc:
            return [str(exc)]
        files = sorted(set(df["audio_filename"]))
        index, folders = self.audio_index()
        missing = [self._audio_path(index, folders, f) for f in files if f not in index]
        problems = []
        if missing:
            root = self._root()
            searched = ", ".join(os.path.relpath(d, root) + os.sep for d in folders)
            problems.append(L.summarize_missing(self.name, missing, len(files))
                            + f"\n(searched, in order, under {root}: {searched})")
        for split in SPLITS.values():
            if not (df["split"] == split).any():
                problems.append(f"task {self.name!r}: annotations.csv has no {split!r} row")
        return problems

    def _examples(self, split_key: str, rng: np.random.Generator, index: dict[str, str],
                  folders: list[str]) -> list[Example]:
        df = self.annotations()
        files, target, counts = aggregate_labels(df, SPLITS[split_key])
        self.info[SPLITS[split_key]] = counts
        idx = L.cap_indices(np.arange(len(files)),
                            L.profile_cap(self.profile, self.options, split_key), rng)
        return [Example(id=os.path.splitext(files[i])[0], target=target[i],
                        path=self._audio_path(index, folders, files[i])) for i in idx]

    def folds(self, fold: str | None = None) -> list[Fold]:
        if fold not in (None, "0", "all"):
            raise KeyError(f"task {self.name} has one fold, '0' (got {fold!r})")
        self.annotations()  # a layout error in the metadata comes before the audio scan
        audio = self.audio_index()
        rng = L.rng_for(self.seed, 0)
        return [Fold("0", *(self._examples(k, rng, *audio) for k in ("train", "valid", "test")))]

    # dictionary (paper IV-B3) -----------------------------------------------------------------
    def dictionary_recipe(self, train_X, train_target, k, seed=0, mu=0.8, n_iter=100):
        import torch

        o = self.options
        classes = list(o.get("dict_classes") or CLASSES)
        if isinstance(classes, str):
            classes = [c for c in classes.split(",") if c]
        unknown = [c for c in classes if c not in CLASSES]
        if unknown:
            raise KeyError(f"dict_classes {unknown} are not SONYC-UST classes: {CLASSES}")
        include_noise = bool(o.get("dict_include_noise", False))
        n_blocks = len(classes) + int(include_noise)
        if o.get("dict_atoms_per_class") is not None:
            per_class = [int(o["dict_atoms_per_class"])] * len(classes)
            noise_atoms = int(o.get("dict_noise_atoms", per_class[0]))
        elif k:
            split = L.split_atoms(int(k), n_blocks)
            per_class = split[1:] if include_noise else split
            noise_atoms = int(o.get("dict_noise_atoms", split[0] if include_noise else min(split)))
        else:
            per_class, noise_atoms = [10] * len(classes), int(o.get("dict_noise_atoms", 10))
        nmf_kwargs = {"mu": float(o.get("dict_mu", mu)), "n_iter": int(o.get("dict_n_iter", n_iter))}
        clips_per_class = int(o.get("dict_clips_per_class", 700))
        noise_clips = int(o.get("dict_noise_clips", 1000))

        tgt = np.asarray(train_target.cpu().numpy() if hasattr(train_target, "cpu")
                         else train_target) > 0.5
        noise_rows = np.flatnonzero(~tgt.any(axis=1))
        info: dict[str, Any] = {
            "recipe": "SONYC-UST (paper IV-B3): noise atoms on clips without a positive label, "
                      "then per-class atoms from random positive clips with W_noise fixed",
            "include_noise": include_noise, "classes": classes, "atoms_per_class": per_class,
            "noise_atoms": noise_atoms, "clips_per_class": clips_per_class,
            "noise_clips_max": noise_clips, "nmf": nmf_kwargs}
        noise_blocks, noise_rec = L.block_dictionary(
            train_X, [noise_rows], [noise_atoms], seed, max_clips=noise_clips, names=["noise"],
            nmf_kwargs=nmf_kwargs)
        W_noise = noise_blocks[0]
        positives = [np.flatnonzero(tgt[:, CLASSES.index(c)]) for c in classes]
        blocks, records = L.block_dictionary(
            train_X, positives, per_class, seed + 1000, max_clips=clips_per_class,
            names=classes, W_fixed=W_noise, nmf_kwargs=nmf_kwargs)
        W = torch.cat(([W_noise] if include_noise else []) + blocks, dim=1)
        info["blocks"] = noise_rec + records
        info["K_total"] = int(W.shape[1])
        info["requested_k"] = None if k is None else int(k)
        return W, info

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"label_rule": "DCASE 2020 baseline: train = any volunteer (annotator_id > 0);"
                                " validate/test = annotator_id == 0 row",
                  "classwise_exclude": list(self.classwise_exclude), "counts": self.info})
        return d
