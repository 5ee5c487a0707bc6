"""ESC-50 and ESC-10 (Piczak 2015; github.com/karolpiczak/ESC-50), official layout::

    <data_root>/
      meta/esc50.csv     header: filename,fold,target,category,esc10,src_file,take
      audio/*.wav        2000 clips, 5 s, 44.1 kHz mono, named {fold}-{src_file}-{take}-{target}.wav

Multiclass, five pre-arranged folds (all fragments of one source recording share a fold).
Fold ``k`` (``"1"`` .. ``"5"``): test = the clips of official fold k; valid = a seeded, class-
stratified ~1/8 of the clips of the other four folds (seed = the task seed, salted with k);
train = the rest. The authors' code has no validation split (it keeps the epoch with the best
test score); the suite never selects on the test fold (DESIGN "Protocol decisions").

Classes are ordered by ``target`` (class index i = the i-th smallest target, which is the target
itself for the full data set); ``category`` gives the names. ``esc10`` keeps the rows whose
``esc10`` column is True and re-indexes their targets to 0..9 in the same order.

Dictionary recipe (paper IV-B3): one sparse NMF on the log-magnitude frames of all training
clips of the fold (the ``Task`` default).

Options: ``valid_fraction`` (default 0.125), ``max_clips`` (cap per split; the ``small``
profile caps train/valid/test at 200/50/100 clips, drawn at random with the task seed).
"""
from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from audio_xai_bench.api import Example, Fold, FrontendConfig, Task
from audio_xai_bench.settings import Rule

from . import _layout as L

LAYOUT = """  <data_root>/
    meta/esc50.csv   (columns filename, fold, target, category, esc10, src_file, take)
    audio/<filename> (one .wav per row: 5 s, 44.1 kHz, mono)"""

COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
FOLDS = ("1", "2", "3", "4", "5")

# Paper Tables II (post-hoc) and III (by-design), ESC-50 rows.
_POSTHOC = {"K": 100, "alpha": 10.0, "beta": 0.8, "epochs": 35}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "l2i": {**_POSTHOC, "dropout": 0.4},      # Θ_ATT dropout of the authors' ESC-50 code
    "l2i-max": {**_POSTHOC, "dropout": 0.3},  # Θ_MAX dropout of the authors' ESC-50 code
    "l2i-bd": {"K": 100, "gamma": 1.0, "alpha": 3.0, "beta": 0.2, "epochs": 51},
}


def _as_bool(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no", ""):
        return False
    raise ValueError(f"not a boolean: {v!r}")


class ESC50Task(Task):
    """``esc50``: 50 classes, 5-fold cross-validation on the official folds."""

    finetune: ClassVar[str] = "head"  # paper IV-B1: only the layers after the conv blocks

    name: ClassVar[str] = "esc50"
    option_defaults: ClassVar[dict[str, Any] | None] = {
        "max_clips": None, "valid_fraction": 0.125,
    }
    option_rules: ClassVar[dict[str, Any]] = {"max_clips": Rule(ge=1),
                                             "valid_fraction": Rule(gt=0, lt=1)}
    kind: ClassVar[str] = "multiclass"  # type: ignore[assignment]
    official_metric: ClassVar[str] = "accuracy_top1"
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = METHOD_DEFAULTS
    esc10_only: ClassVar[bool] = False

    def __init__(self, data_root: str | None = None, profile: str = "default", seed: int = 0,
                 **options: Any) -> None:
        super().__init__(data_root, profile, seed, **options)
        self.frontend = FrontendConfig(44100, 1024, 512, 128, clip_seconds=5.0)
        self.valid_fraction = float(options.get("valid_fraction", 0.125))
        self._meta = None

    # metadata ----------------------------------------------------------------------------
    def _root(self) -> str:
        return L.require_root(self.name, self.data_root, LAYOUT)

    def metadata(self):
        """The rows of ``meta/esc50.csv`` this task uses, with a ``label`` (class index)."""
        if self._meta is not None:
            return self._meta
        root = self._root()
        path = L.require_file(self.name, root, os.path.join("meta", "esc50.csv"), LAYOUT)
        df = L.read_csv(self.name, path, COLUMNS, dtype={"filename": str, "category": str})
        for col in ("fold", "target"):
            bad = ~df[col].astype(str).str.fullmatch(r"\d+")
            if bad.any():
                raise L.DatasetLayoutError(
                    f"task {self.name!r}: column {col!r} of {path} must hold integers; "
                    f"row {int(np.flatnonzero(bad)[0]) + 2} holds {df[col][bad].iloc[0]!r}")
            df[col] = df[col].astype(int)
        try:
            df["esc10"] = df["esc10"].map(_as_bool)
        except ValueError as exc:
            raise L.DatasetLayoutError(
                f"task {self.name!r}: column 'esc10' of {path} must be True/False: {exc}") from exc
        bad_fold = ~df["fold"].isin([int(f) for f in FOLDS])
        if bad_fold.any():
            raise L.DatasetLayoutError(f"task {self.name!r}: column 'fold' of {path} holds "
                                       f"{sorted(set(df['fold'][bad_fold]))}; expected 1..5")
        cats = df.groupby("target")["category"].nunique()
        if (cats > 1).any():
            raise L.DatasetLayoutError(f"task {self.name!r}: column 'category' of {path} gives "
                                       f"several names to target(s) {list(cats[cats > 1].index)}")
        if df["filename"].duplicated().any():
            raise L.DatasetLayoutError(f"task {self.name!r}: column 'filename' of {path} repeats "
                                       f"{df['filename'][df['filename'].duplicated()].iloc[0]!r}")
        if self.esc10_only:
            df = df[df["esc10"]].reset_index(drop=True)
            if df.empty:
                raise L.DatasetLayoutError(f"task {self.name!r}: no row of {path} has esc10=True")
        targets = sorted(df["target"].unique())
        index = {t: i for i, t in enumerate(targets)}
        df["label"] = df["target"].map(index)
        self._classes = [str(df.loc[df["target"] == t, "category"].iloc[0]) for t in targets]
        df["path"] = [os.path.join(root, "audio", f) for f in df["filename"]]
        self._meta = df
        return df

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        self.metadata()
        return self._classes

    def fold_names(self) -> list[str]:
        return list(FOLDS)

    def validate_layout(self) -> list[str]:
        """Problems with the data on disk (empty when the layout is complete)."""
        try:
            df = self.metadata()
        except L.DatasetLayoutError as exc:
            return [str(exc)]
        problems = []
        missing = L.missing_files(df["path"])
        if missing:
            problems.append(L.summarize_missing(self.name, missing, len(df)))
        empty = [f for f in FOLDS if not (df["fold"] == int(f)).any()]
        if empty:
            problems.append(f"task {self.name!r}: no clip in official fold(s) {empty}")
        return problems

    # folds ---------------------------------------------------------------------------------
    def _examples(self, df) -> list[Example]:
        C = len(self._classes)
        out = []
        for row in df.itertuples(index=False):
            target = np.zeros(C, np.float32)
            target[int(row.label)] = 1.0
            out.append(Example(id=os.path.splitext(row.filename)[0], target=target,
                               path=row.path))
        return out

    def folds(self, fold: str | None = None) -> list[Fold]:
        names = list(FOLDS) if fold in (None, "all") else [str(fold)]
        for n in names:
            if n not in FOLDS:
                raise KeyError(f"task {self.name} has folds {', '.join(FOLDS)} (got {fold!r})")
        return [self._fold(n) for n in names]

    def _fold(self, name: str) -> Fold:
        df = self.metadata()
        k = int(name)
        test_idx = np.flatnonzero(df["fold"].to_numpy() == k)
        if len(test_idx) == 0:
            raise L.DatasetLayoutError(f"task {self.name!r}: official fold {k} has no clip in "
                                       "meta/esc50.csv")
        rest = np.flatnonzero(df["fold"].to_numpy() != k)
        rng = L.rng_for(self.seed, k)
        hold = L.stratified_holdout(df["label"].to_numpy()[rest], self.valid_fraction, rng)
        valid_idx, train_idx = rest[hold], rest[~hold]
        caps = {s: L.profile_cap(self.profile, self.options, s) for s in ("train", "valid", "test")}
        train_idx = L.cap_indices(train_idx, caps["train"], rng)
        valid_idx = L.cap_indices(valid_idx, caps["valid"], rng)
        test_idx = L.cap_indices(test_idx, caps["test"], rng)
        return Fold(name, self._examples(df.iloc[train_idx]), self._examples(df.iloc[valid_idx]),
                    self._examples(df.iloc[test_idx]))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"valid_fraction": self.valid_fraction,
                  "split_rule": "test = official fold k; valid = seeded class-stratified "
                                "fraction of the other folds; train = the rest"})
        return d


class ESC10Task(ESC50Task):
    """``esc10``: the ESC-10 subset (rows with esc10 == True), 10 classes re-indexed 0..9."""

    name: ClassVar[str] = "esc10"
    esc10_only: ClassVar[bool] = True
