"""ESC-50 and ESC-10 (Piczak 2015; github.com/karolpiczak/ESC-50), official layout::

    <data_root>/
      meta/esc50.csv     header: filename,fold,target,category,esc10,src_file,take
      audio/*.wav        2000 clips, 5 s, 44.1 kHz mono, named {fold}-{src_file}-{take}-{target}.wav

The GitHub archive unpacks to ``ESC-50-master/``; a data root that holds that folder (and no
``meta/esc50.csv`` of its own) is read from ``<data_root>/ESC-50-master``.

Multiclass, five pre-arranged folds (all fragments of one source recording share a fold).
Fold ``k`` (``"1"`` .. ``"5"``): test = the clips of official fold k; valid = a seeded, class-
stratified ~1/8 of the clips of the other four folds (seed = the task seed, salted with k),
**grouped by ``src_file``**: all fragments of one source recording go to the same side, so no
recording is in both train and validation (fragments of one recording are near-duplicates, and
splitting them would make model selection optimistic); train = the rest. The authors' code has no validation split (it keeps the epoch with the best
test score); the suite never selects on the test fold (DESIGN "Protocol decisions").

Classes are ordered by ``target`` (class index i = the i-th smallest target, which is the target
itself for the full data set); ``category`` gives the names. ``esc10`` keeps the rows whose
``esc10`` column is True and re-indexes their targets to 0..9 in the same order.

Dictionary recipe (paper IV-B3: "concatenating the log-magnitude spectrograms corresponding to
each sample in the training data of the cross-validation fold (1600 samples for each fold)"):
one sparse NMF on the frames of **all non-test clips of the fold, the validation part included**
(the paper has no validation split, so its 1600 training clips are our train + valid; the
dictionary is unsupervised and never sees the test fold), with **no frame cap** by default:
1600 clips x 431 frames = 689,600 frames of 513 bins, 1.41 GB in float32; the NMF then holds
V plus three K x N matrices (H, W^T V and one work matrix, 0.28 GB each at K = 100), about
2.3 GB, and the runner's (B, F, T) copy of the clips another 1.4 GB. Option
``dict_max_frames=N`` caps the frames (a seeded random subset, recorded in config.json) where
memory is short.

Options: ``valid_fraction`` (default 0.125), ``max_clips`` (cap per split; the ``small``
profile caps train/valid/test at 200/50/100 clips, drawn at random with the task seed),
``dict_max_frames`` (default none = all frames, the paper's recipe).
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
    audio/<filename> (one .wav per row: 5 s, 44.1 kHz, mono)
  (or <data_root>/ESC-50-master/ holding them, as the GitHub archive unpacks)"""

ARCHIVE_FOLDER = "ESC-50-master"  # the top folder of the GitHub archive
META = os.path.join("meta", "esc50.csv")
COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
FOLDS = ("1", "2", "3", "4", "5")

# Paper Tables II (post-hoc) and III (by-design), ESC-50 rows.
_POSTHOC = {"K": 100, "alpha": 10.0, "beta": 0.8, "epochs": 35}
METHOD_DEFAULTS: dict[str, dict[str, Any]] = {
    "l2i": {**_POSTHOC, "dropout": 0.4},      # Θ_ATT dropout of the authors' ESC-50 code
    "l2i-max": {**_POSTHOC, "dropout": 0.3},  # Θ_MAX dropout of the authors' ESC-50 code
    "l2i-bd": {"K": 100, "gamma": 1.0, "alpha": 3.0, "beta": 0.2, "epochs": 51},
}


def grouped_stratified_holdout(labels: np.ndarray, groups: np.ndarray, fraction: float,
                               rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a held-out subset of at most round(n * fraction) rows, stratified by
    ``labels`` and made of whole ``groups`` (ESC-50's ``src_file``: a group is never split).

    A group belongs to the class of most of its rows. Each class's groups are shuffled; the last
    one always stays in train (a class never gives all its clips). Then, repeatedly, the class
    furthest below its share (n_c * fraction - rows taken; ties at random) gives its next group
    that still fits in the total; this stops when no group fits. If nothing fits at all, the
    smallest eligible group is held out (a non-empty validation set when one is possible).
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    out = np.zeros(len(labels), bool)
    if len(labels) < 2 or fraction <= 0:
        return out
    total = max(1, int(round(len(labels) * fraction)))
    uniq, inv = np.unique(groups, return_inverse=True)
    size = np.bincount(inv, minlength=len(uniq))
    glabel = np.array([np.bincount(labels[inv == g]).argmax() for g in range(len(uniq))])
    queue = {}
    for c in np.unique(glabel):
        gs = rng.permutation(np.flatnonzero(glabel == c))
        queue[c] = list(gs[:-1])  # the last group stays in train
    share = {c: (labels == c).sum() * fraction for c in queue}
    taken_c = {c: 0 for c in queue}
    taken, n = [], 0
    while True:
        order = sorted(queue, key=lambda c: (-(share[c] - taken_c[c]), rng.random()))
        pick = None
        for c in order:
            fit = [g for g in queue[c] if n + size[g] <= total]
            if fit:
                pick = (c, fit[0])
                break
        if pick is None:
            break
        c, g = pick
        queue[c].remove(g)
        taken.append(g)
        taken_c[c] += int(size[g])
        n += int(size[g])
    if not taken:
        eligible = [g for gs in queue.values() for g in gs]
        if eligible:
            taken = [min(eligible, key=lambda g: size[g])]
    out[np.isin(inv, taken)] = True
    return out


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
        "max_clips": None, "valid_fraction": 0.125, "dict_max_frames": None,
    }
    option_rules: ClassVar[dict[str, Any]] = {"max_clips": Rule(ge=1),
                                             "valid_fraction": Rule(gt=0, lt=1),
                                             "dict_max_frames": Rule(ge=1)}
    kind: ClassVar[str] = "multiclass"  # type: ignore[assignment]
    official_metric: ClassVar[str] = "accuracy_top1"
    method_defaults: ClassVar[dict[str, dict[str, Any]]] = METHOD_DEFAULTS
    esc10_only: ClassVar[bool] = False

    def __init__(self, data_root: str | None = None, profile: str = "default", seed: int = 0,
                 **options: Any) -> None:
        super().__init__(data_root, profile, seed, **options)
        self.frontend = FrontendConfig(44100, 1024, 512, 128, clip_seconds=5.0)
        self.valid_fraction = float(options.get("valid_fraction", 0.125))
        cap = options.get("dict_max_frames")
        self.dict_max_frames = None if cap in (None, "", "none", "None") else int(cap)
        if self.dict_max_frames is not None and self.dict_max_frames < 1:
            raise ValueError(f"task option dict_max_frames must be a positive integer or none, "
                             f"got {cap!r}")
        self._meta = None

    # metadata ----------------------------------------------------------------------------
    def _root(self) -> str:
        return L.archive_root(self.name, self.data_root, LAYOUT, META, ARCHIVE_FOLDER)

    def metadata(self):
        """The rows of ``meta/esc50.csv`` this task uses, with a ``label`` (class index)."""
        if self._meta is not None:
            return self._meta
        root = self._root()
        path = L.require_file(self.name, root, META, LAYOUT)
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
        hold = grouped_stratified_holdout(df["label"].to_numpy()[rest],
                                          df["src_file"].astype(str).to_numpy()[rest],
                                          self.valid_fraction, rng)
        valid_idx, train_idx = rest[hold], rest[~hold]
        caps = {s: L.profile_cap(self.profile, self.options, s) for s in ("train", "valid", "test")}
        train_idx = L.cap_indices(train_idx, caps["train"], rng)
        valid_idx = L.cap_indices(valid_idx, caps["valid"], rng)
        test_idx = L.cap_indices(test_idx, caps["test"], rng)
        return Fold(name, self._examples(df.iloc[train_idx]), self._examples(df.iloc[valid_idx]),
                    self._examples(df.iloc[test_idx]))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"valid_fraction": self.valid_fraction, "dict_max_frames": self.dict_max_frames,
                  "split_rule": "test = official fold k; valid = seeded class-stratified "
                                "fraction of the other folds grouped by src_file; train = the rest"})
        return d

    # dictionary ---------------------------------------------------------------------------
    #: the runner learns the dictionary on these splits (paper IV-B3: all 1600 training clips)
    dictionary_splits: ClassVar[tuple[str, ...]] = ("train", "valid")

    def dictionary_recipe(self, train_X, train_target, k: int, seed: int = 0, mu: float = 0.8,
                          n_iter: int = 100):
        """Paper IV-B3, ESC-50: one sparse NMF on the frames of all clips given (the runner
        passes train + valid, see ``dictionary_splits``), capped at ``dict_max_frames`` only
        when that option is set."""
        from audio_xai_bench import nmf

        frames = train_X.permute(1, 0, 2).reshape(train_X.shape[1], -1)
        cap = self.dict_max_frames if self.dict_max_frames is not None else frames.shape[1]
        frames, info = nmf.subsample_frames(frames, max_frames=cap, seed=seed)
        W, _ = nmf.sparse_nmf(frames, k, mu=mu, n_iter=n_iter, seed=seed)
        return W, {"recipe": "all training clips", "clips": int(train_X.shape[0]),
                   "max_frames": self.dict_max_frames, **info}


class ESC10Task(ESC50Task):
    """``esc10``: the ESC-10 subset (rows with esc10 == True), 10 classes re-indexed 0..9."""

    name: ClassVar[str] = "esc10"
    esc10_only: ClassVar[bool] = True
