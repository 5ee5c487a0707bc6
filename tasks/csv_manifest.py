"""Your own data set, listed in a CSV manifest (task ``csv``)::

    --data-root my_data/manifest.csv        (the manifest itself)
    --data-root my_data                     (a folder holding manifest.csv; or manifest=NAME)

    path,label,fold                         header required; other columns are ignored
    audio/dog_01.wav,dog,1                  path: relative to the manifest's folder
    /data/rain/r7.flac,rain,2               (absolute paths allowed)
    audio/mix_03.wav,dog;rain,1             label: one class, or several joined by ';'

This is the user's data: there is no paper, so there are no paper defaults (no per-method
settings, the classifier's own defaults, ``accuracy_top1`` as the official metric of a
multiclass manifest and ``macro_auprc`` of a multi-label one). Everything about the data comes
from the manifest and the options below, and ``describe()`` records the manifest's path, the
sha256 of its bytes and every option, so cached classifiers and dictionaries change with it.

Audio: any format ``audio.load_audio`` reads; the engine down-mixes, resamples to
``sample_rate`` and pads / crops to ``clip_seconds`` (the task's ``FrontendConfig``), caches the
waveforms and applies the bad-file policy (``--on-bad-file``), as for every task.

Options (``--task-option KEY=VALUE``, declared and checked):

- ``manifest`` (``manifest.csv``): the file name when ``--data-root`` is a folder.
- ``kind``: ``auto`` (multi-label if any label holds ';', else multiclass) | ``multiclass`` |
  ``multilabel``.
- ``classes``: comma-separated class order (default: the sorted unique labels); a label not in
  an explicit list is an error.
- ``sample_rate`` 16000, ``clip_seconds`` 5.0, ``n_fft`` 1024, ``hop_length`` 512,
  ``n_mels`` 128: the front-end.
- ``split``: ``manifest`` (the ``fold`` column when there is one, else a seeded split) |
  ``seeded`` (a seeded split even with a fold column).
- ``valid_fraction`` (0.125), ``test_fraction`` (0.2, seeded split only).
- ``all_test`` (false): every row is test, train and valid are empty (to evaluate a pretrained
  classifier without training); the NMF dictionary of the methods that need one is then
  learnt on the test clips (the only ones there are): ``dictionary_splits = ("test",)``.
- ``label_map``: each task class -> output name(s) of a pretrained classifier, inline
  ``speech=Speech|Conversation;tone=Sine wave`` or a CSV with columns
  ``label,classifier_label`` (one row per pair); parsed into ``self.label_map``
  (``dict[str, list[str]]``, ``None`` when not given); every class must be mapped.
- ``missing``: ``fail`` (default: listed audio files that do not exist stop the task, all of
  them named, before any audio is read) | ``skip`` (leave those rows out, counted in ``info``).
- ``max_clips``: cap per split (the ``small`` profile caps train/valid/test at 200/50/100,
  drawn at random with the task seed).

Splits (seed = the task seed; ``Task.data_seed_for`` keeps it 0, so the splits are fixed):

- with a ``fold`` column: fold names are its distinct values sorted as strings; fold k: test =
  the rows of fold k, valid = a seeded ``valid_fraction`` of the other rows (class-stratified
  for multiclass, random for multi-label), train = the rest. A class absent from a fold's train
  split is allowed (it is a fact of the data, not an error).
- without one (or ``split=seeded``): one fold ``"0"``: test = a seeded ``test_fraction`` of the
  rows, valid = ``valid_fraction`` of the remaining rows (stratified for multiclass; a class
  with a single row stays in train), train = the rest.
- ``all_test=true``: one fold ``"0"``, every row in test.

Example ids are the paths relative to the manifest's folder (posix separators), unique.

Checks, each a ``ManifestError`` (a ``DatasetLayoutError``) naming the manifest and the rows
(as line numbers of the file) before any audio is read: no manifest, no header / missing
columns, no rows, empty paths, empty labels, labels outside ``classes``, several labels in a
multiclass manifest, the same file listed twice, empty or unusable fold values, absent audio
files, an empty test split, an incomplete or unreadable ``label_map``.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import zlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from audio_xai_bench.api import Example, Fold, FrontendConfig, Task
from audio_xai_bench.settings import Rule

from . import _layout as L

MANIFEST = "manifest.csv"
REQUIRED = ("path", "label")
EXAMPLE = """    path,label,fold
    audio/dog_01.wav,dog,1
    audio/rain_02.wav,rain,2
    audio/mix_03.wav,dog;rain,1"""
LAYOUT = f"""  --data-root = the manifest CSV, or a folder holding {MANIFEST} (or manifest=NAME);
  header path,label[,fold] (other columns ignored); path relative to the manifest's folder
  (absolute allowed); label = one class, or several joined by ';' (multi-label). E.g.:
{EXAMPLE}"""
DOCS = "see docs/datasets.md, section 'Your own data'"
FOLD_NAME = re.compile(r"[A-Za-z0-9._-]+")


class ManifestError(L.DatasetLayoutError):
    """The manifest (or its label map) cannot be used; the message names the file and rows."""


class _AnyText(tuple):
    """``Rule.choices`` that admit any string: ``settings.Rule`` refuses strings outside
    declared choices, and a path or a class list cannot be enumerated."""

    def __contains__(self, item: object) -> bool:
        return isinstance(item, str)


TEXT = _AnyText(("<text>",))


class _ByInstance:
    """A class attribute read from the manifest on an instance (``kind`` depends on the data),
    and a fixed value on the class itself (``list`` prints the class's)."""

    def __init__(self, on_class: str, method: str) -> None:
        self.on_class, self.method = on_class, method

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            return self.on_class
        return getattr(obj, self.method)()


@dataclass
class _Row:
    line: int  # line number in the manifest file (header = line 1)
    raw_path: str
    abs_path: str
    id: str
    labels: list[str]
    fold: str | None


def _lines(rows: list[_Row] | list[int], limit: int = 10) -> str:
    nums = [r.line if isinstance(r, _Row) else int(r) for r in rows]
    shown = ", ".join(str(n) for n in nums[:limit])
    return shown + (f" (and {len(nums) - limit} more)" if len(nums) > limit else "")


def _text(v: Any) -> str:
    return "" if v is None else str(v).strip()


class CsvTask(Task):
    """``csv``: your own clips and labels from a CSV manifest (multiclass or multi-label)."""

    name: ClassVar[str] = "csv"
    kind = _ByInstance("auto", "_kind")  # type: ignore[assignment]
    official_metric = _ByInstance("accuracy_top1", "_official_metric")  # type: ignore[assignment]
    option_defaults: ClassVar[dict[str, Any] | None] = {
        "manifest": MANIFEST, "kind": "auto", "classes": "", "label_map": "",
        "sample_rate": 16000, "clip_seconds": 5.0, "n_fft": 1024, "hop_length": 512,
        "n_mels": 128, "split": "manifest", "valid_fraction": 0.125, "test_fraction": 0.2,
        "all_test": False, "missing": "fail", "max_clips": None,
    }
    option_rules: ClassVar[dict[str, Any]] = {
        "manifest": Rule(choices=TEXT, doc="manifest file name when --data-root is a folder"),
        "kind": Rule(choices=("auto", "multiclass", "multilabel"),
                     doc="auto: multi-label if any label holds ';'"),
        "classes": Rule(choices=TEXT, doc="comma-separated class order (default: sorted)"),
        "label_map": Rule(choices=TEXT, doc="class=Name|Name;... or a CSV label,classifier_label"),
        "sample_rate": Rule(ge=1), "clip_seconds": Rule(gt=0), "n_fft": Rule(ge=2),
        "hop_length": Rule(ge=1), "n_mels": Rule(ge=1),
        "split": Rule(choices=("manifest", "seeded"),
                      doc="the fold column (when present) or a seeded split"),
        "valid_fraction": Rule(gt=0, lt=1), "test_fraction": Rule(gt=0, lt=1),
        "missing": Rule(choices=("fail", "skip"), doc="listed audio files that do not exist"),
        "max_clips": Rule(ge=1),
    }

    def __init__(self, data_root: str | None = None, profile: str = "default", seed: int = 0,
                 **options: Any) -> None:
        super().__init__(data_root, profile, seed, **options)
        opt = {**self.option_defaults, **self.options}  # type: ignore[dict-item]
        self.resolved_options = opt  # every option, defaults included (recorded by describe())
        self.kind_option: str = opt["kind"]
        self.split_mode: str = opt["split"]
        self.all_test = bool(opt["all_test"])
        self.missing_policy: str = opt["missing"]
        self.valid_fraction = float(opt["valid_fraction"])
        self.test_fraction = float(opt["test_fraction"])
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError(f"task {self.name!r}: valid_fraction + test_fraction must be < 1 "
                             f"(got {self.valid_fraction} + {self.test_fraction})")
        for key in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            if float(opt[key]) != int(opt[key]):
                raise ValueError(f"task {self.name!r}: option {key} must be an integer, "
                                 f"got {opt[key]!r}")
        self.frontend = FrontendConfig(int(opt["sample_rate"]), int(opt["n_fft"]),
                                       int(opt["hop_length"]), int(opt["n_mels"]),
                                       clip_seconds=float(opt["clip_seconds"]))
        if self.frontend.clip_samples < self.frontend.n_fft:
            raise ValueError(f"task {self.name!r}: clip_seconds={opt['clip_seconds']} gives "
                             f"{self.frontend.clip_samples} samples, fewer than n_fft="
                             f"{self.frontend.n_fft}")
        self.class_option = self._parse_classes(opt["classes"])
        self.label_map_option = opt["label_map"]
        if self.label_map_option in ("", None):
            self.label_map_option = None
        # the NMF dictionary's clips: train only, or the test clips when there are no others
        self.dictionary_splits = ("test",) if self.all_test else ("train",)
        self._loaded: dict[str, Any] | None = None
        self._table: list[_Row] | None = None
        self.info: dict[str, Any] = {}

    # options -------------------------------------------------------------------------------
    def _parse_classes(self, value: Any) -> list[str] | None:
        if value is None or value == "" or value == ():
            return None
        items = list(value) if isinstance(value, (list, tuple)) else str(value).split(",")
        names = [_text(c) for c in items]
        if any(not c for c in names):
            raise ValueError(f"task {self.name!r}: option classes={value!r} has an empty class "
                             "name (expected e.g. classes=dog,rain,speech)")
        dup = sorted({c for c in names if names.count(c) > 1})
        if dup:
            raise ValueError(f"task {self.name!r}: option classes={value!r} repeats {dup}")
        return names

    # manifest ------------------------------------------------------------------------------
    def manifest_path(self) -> str:
        """The manifest file: ``--data-root`` itself, or ``<data-root>/<manifest>``."""
        root = self.data_root
        if root is None or str(root) == "":
            raise ManifestError(f"task {self.name!r} needs --data-root: a CSV manifest of your "
                                f"clips, or the folder holding it:\n{LAYOUT}\n{DOCS}")
        root = os.fspath(root)
        if os.path.isfile(root):
            return os.path.abspath(root)
        if not os.path.isdir(root):
            raise ManifestError(f"task {self.name!r}: data root {root} does not exist; expected "
                                "a CSV manifest or a folder holding "
                                f"{self.resolved_options['manifest']}:\n{LAYOUT}\n{DOCS}")
        path = os.path.join(root, _text(self.resolved_options["manifest"]) or MANIFEST)
        if not os.path.isfile(path):
            raise ManifestError(
                f"task {self.name!r}: manifest {path} is missing (--data-root {root} is a "
                f"folder; pass the CSV itself, or --task-option manifest=NAME). A manifest has "
                f"the columns path,label[,fold] (header required), e.g.:\n{EXAMPLE}\n{DOCS}")
        return os.path.abspath(path)

    def _read(self) -> dict[str, Any]:
        """Parse and check the manifest (no audio file is opened). Cached."""
        if self._loaded is not None:
            return self._loaded
        path = self.manifest_path()
        with open(path, "rb") as fh:
            raw = fh.read()
        sha = hashlib.sha256(raw).hexdigest()
        where = f"task {self.name!r}: manifest {path}"
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ManifestError(f"{where} is not UTF-8 text: {exc}") from exc
        try:
            records = [(n, rec) for n, rec in self._records(text) if any(c.strip() for c in rec)]
        except csv.Error as exc:
            raise ManifestError(f"{where} cannot be parsed as CSV: {exc}") from exc
        if not records:
            raise ManifestError(f"{where} is empty; expected a header line path,label[,fold] "
                                f"and one row per clip, e.g.:\n{EXAMPLE}\n{DOCS}")
        header_line, header = records[0]
        cols = [c.strip().lower() for c in header]
        lacking = [c for c in REQUIRED if c not in cols]
        if lacking:
            raise ManifestError(
                f"{where} lacks column(s) {lacking} (its header, line {header_line}, is "
                f"{','.join(header)!r}). The first line must name the columns path,label[,fold]"
                f" (comma-separated; other columns are ignored), e.g.:\n{EXAMPLE}\n{DOCS}")
        body = records[1:]
        if not body:
            raise ManifestError(f"{where} has a header but no rows (one row per clip, e.g.:\n"
                                f"{EXAMPLE})")
        i_path, i_label = cols.index("path"), cols.index("label")
        i_fold = cols.index("fold") if "fold" in cols else None

        def cell(rec: list[str], i: int | None) -> str:
            return rec[i].strip() if i is not None and i < len(rec) else ""

        folder = os.path.dirname(path)
        rows, no_path, no_label, several = [], [], [], []
        for line, rec in body:
            p, lab = cell(rec, i_path), cell(rec, i_label)
            if not p:
                no_path.append(line)
                continue
            parts = [s.strip() for s in lab.split(";")]
            if not lab or any(not s for s in parts):
                no_label.append((line, p, lab))
            if ";" in lab:
                several.append((line, p, lab))
            labels = list(dict.fromkeys(s for s in parts if s))
            abs_path = os.path.normpath(os.path.join(folder, p))
            rid = os.path.relpath(abs_path, folder).replace(os.sep, "/")
            rows.append(_Row(line, p, abs_path, rid, labels, cell(rec, i_fold)
                             if i_fold is not None else None))
        if no_path:
            raise ManifestError(f"{where}: empty path at line(s) {_lines(no_path)}")
        if no_label:
            shown = "; ".join(f"line {n} ({p!r}: {lab!r})" for n, p, lab in no_label[:10])
            more = f"; and {len(no_label) - 10} more" if len(no_label) > 10 else ""
            raise ManifestError(f"{where}: empty label at {shown}{more}. Every row needs a class "
                                "name (several joined by ';', none of them empty)")
        kind = self.kind_option
        if kind == "multiclass" and several:
            shown = "; ".join(f"line {n} ({p!r}: {lab!r})" for n, p, lab in several[:10])
            more = f"; and {len(several) - 10} more" if len(several) > 10 else ""
            raise ManifestError(f"{where} is multiclass (kind=multiclass) but {shown}{more} "
                                "hold several labels joined by ';'; use kind=multilabel (or "
                                "kind=auto)")
        if kind == "auto":
            kind = "multilabel" if several else "multiclass"
        # duplicates: the same file, however it is spelt
        seen: dict[str, list[_Row]] = {}
        for r in rows:
            seen.setdefault(os.path.normcase(r.abs_path), []).append(r)
        dups = [rs for rs in seen.values() if len(rs) > 1]
        if dups:
            shown = "; ".join(f"{rs[0].id!r} (lines {_lines(rs)})" for rs in dups[:10])
            more = f"; and {len(dups) - 10} more" if len(dups) > 10 else ""
            raise ManifestError(f"{where} lists the same audio file more than once: "
                                f"{shown}{more}")
        # classes
        found = sorted({c for r in rows for c in r.labels})
        if self.class_option is not None:
            classes = list(self.class_option)
            unknown = [c for c in found if c not in classes]
            if unknown:
                bad = [r for r in rows if any(c not in classes for c in r.labels)]
                raise ManifestError(
                    f"{where}: label(s) {unknown} are not in classes="
                    f"{','.join(classes)} (line(s) {_lines(bad)}); add them to classes or fix "
                    "the rows")
        else:
            classes = found
        # folds
        fold_col = i_fold is not None
        if fold_col:
            empty = [r for r in rows if not r.fold]
            if empty:
                raise ManifestError(f"{where} has a 'fold' column but line(s) {_lines(empty)} "
                                    "leave it empty; give every row a fold (or drop the column "
                                    "for a seeded split)")
            bad = [r for r in rows if not FOLD_NAME.fullmatch(r.fold) or r.fold == "all"]
            if bad:
                raise ManifestError(
                    f"{where}: fold value(s) {sorted({r.fold for r in bad})} at line(s) "
                    f"{_lines(bad)} are not usable fold names (letters, digits, '.', '_', '-'; "
                    "not 'all')")
        elif self.split_mode == "manifest" and "split" in self.options:
            raise ManifestError(f"{where} has no 'fold' column (columns: {', '.join(cols)}), "
                                "so split=manifest has no folds to use; add the column or use "
                                "split=seeded")
        use_folds = fold_col and self.split_mode == "manifest" and not self.all_test
        fold_names = sorted({str(r.fold) for r in rows}) if use_folds else ["0"]
        label_map = self._parse_label_map(classes, path)
        self._loaded = {"path": path, "sha256": sha, "rows": rows, "kind": kind,
                        "classes": classes, "fold_column": fold_col, "use_folds": use_folds,
                        "fold_names": fold_names, "label_map": label_map}
        self.info.update({"manifest": path, "manifest_sha256": sha, "rows": len(rows),
                          "kind": kind, "classes": len(classes), "fold_column": fold_col,
                          "split": ("all_test" if self.all_test else
                                    "manifest folds" if use_folds else "seeded")})
        return self._loaded

    @staticmethod
    def _records(text: str):
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 1
        for rec in reader:
            yield start, rec
            start = reader.line_num + 1

    def rows(self) -> list[_Row]:
        """The manifest's rows whose audio files exist (``missing=skip``) or all of them,
        after every check (absent files raise under ``missing=fail``)."""
        if self._table is not None:
            return self._table
        meta = self._read()
        rows = meta["rows"]
        missing = [r for r in rows if not os.path.isfile(r.abs_path)]
        if missing and self.missing_policy == "fail":
            raise ManifestError(
                L.summarize_missing(self.name, [r.abs_path for r in missing], len(rows))
                + f"\n(listed in {meta['path']}, at line(s) {_lines(missing)}; relative paths "
                f"are read from the manifest's folder {os.path.dirname(meta['path'])}). Fix the "
                "manifest, or pass --task-option missing=skip to leave these rows out.")
        if missing:
            rows = [r for r in rows if os.path.isfile(r.abs_path)]
            self.info["missing_skipped"] = [r.abs_path for r in missing]
            if not rows:
                raise ManifestError(f"task {self.name!r}: none of the {len(missing)} audio files "
                                    f"listed in {meta['path']} exists")
        self._table = rows
        return rows

    def _kind(self) -> str:
        return self._read()["kind"]

    def _official_metric(self) -> str:
        return "accuracy_top1" if self._kind() == "multiclass" else "macro_auprc"

    @property
    def classes(self) -> list[str]:  # type: ignore[override]
        return self._read()["classes"]

    @property
    def label_map(self) -> dict[str, list[str]] | None:
        """Task class -> output names of a pretrained classifier, or None (no map given)."""
        if self.label_map_option is None:
            return None
        return self._read()["label_map"]

    def fold_names(self) -> list[str]:
        return list(self._read()["fold_names"])

    # label map -----------------------------------------------------------------------------
    def _parse_label_map(self, classes: list[str], manifest: str) -> dict[str, list[str]] | None:
        spec = self.label_map_option
        if spec is None:
            return None
        pairs: list[tuple[str, str]] = []
        source = "label_map"
        if isinstance(spec, dict):
            for k, v in spec.items():
                for name in ([v] if isinstance(v, str) else list(v)):
                    pairs.append((_text(k), _text(name)))
        elif "=" in str(spec) and self._label_map_file(str(spec), manifest, strict=False) is None:
            for entry in str(spec).split(";"):
                if not entry.strip():
                    continue
                cls, eq, names = entry.partition("=")
                if not eq or not cls.strip() or not [n for n in names.split("|") if n.strip()]:
                    raise ValueError(f"task {self.name!r}: label_map entry {entry.strip()!r} is "
                                     "not CLASS=NAME[|NAME...]; expected e.g. "
                                     "label_map=speech=Speech|Conversation;tone=Sine wave")
                pairs += [(cls.strip(), n.strip()) for n in names.split("|") if n.strip()]
        else:
            path = self._label_map_file(str(spec), manifest)
            assert path is not None
            source = f"label_map {path}"
            pairs = self._read_label_map_csv(path)
        out: dict[str, list[str]] = {}
        for cls, name in pairs:
            out.setdefault(cls, [])
            if name not in out[cls]:
                out[cls].append(name)
        strangers = [c for c in out if c not in classes]
        if strangers:
            raise ManifestError(f"task {self.name!r}: {source} maps {strangers}, which are not "
                                f"classes of {manifest} (classes: {', '.join(classes)})")
        unmapped = [c for c in classes if c not in out]
        if unmapped:
            raise ManifestError(f"task {self.name!r}: {source} does not map class(es) "
                                f"{unmapped}; every class of {manifest} needs at least one "
                                "classifier output name")
        return {c: out[c] for c in classes}

    def _label_map_file(self, spec: str, manifest: str, strict: bool = True) -> str | None:
        for cand in (spec, os.path.join(os.path.dirname(manifest), spec)):
            if os.path.isfile(cand):
                return os.path.abspath(cand)
        if not strict:
            return None
        raise ManifestError(f"task {self.name!r}: label_map {spec!r} is neither an inline map "
                            "(speech=Speech|Conversation;tone=Sine wave) nor an existing CSV "
                            f"file (looked in the working folder and in "
                            f"{os.path.dirname(manifest)})")

    def _read_label_map_csv(self, path: str) -> list[tuple[str, str]]:
        with open(path, "rb") as fh:
            raw = fh.read()
        self.info["label_map_sha256"] = hashlib.sha256(raw).hexdigest()
        try:
            recs = [(n, r) for n, r in self._records(raw.decode("utf-8-sig"))
                    if any(c.strip() for c in r)]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ManifestError(f"task {self.name!r}: label_map {path} cannot be read: {exc}") \
                from exc
        if not recs:
            raise ManifestError(f"task {self.name!r}: label_map {path} is empty; expected a "
                                "header label,classifier_label and one row per pair")
        cols = [c.strip().lower() for c in recs[0][1]]
        lacking = [c for c in ("label", "classifier_label") if c not in cols]
        if lacking:
            raise ManifestError(f"task {self.name!r}: label_map {path} lacks column(s) {lacking}"
                                f" (header {','.join(recs[0][1])!r}); expected label,"
                                "classifier_label, one row per pair")
        i, j = cols.index("label"), cols.index("classifier_label")
        pairs, bad = [], []
        for n, r in recs[1:]:
            a = r[i].strip() if i < len(r) else ""
            b = r[j].strip() if j < len(r) else ""
            if not a or not b:
                bad.append(n)
            pairs.append((a, b))
        if bad:
            raise ManifestError(f"task {self.name!r}: label_map {path} has an empty label or "
                                f"classifier_label at line(s) {_lines(bad)}")
        return pairs

    # checks for `prepare` ------------------------------------------------------------------
    def validate_layout(self) -> list[str]:
        """Problems with the manifest and the files it lists (empty when all is in place)."""
        try:
            self.rows()
        except (L.DatasetLayoutError, ValueError) as exc:
            return [str(exc)]
        return []

    # folds ---------------------------------------------------------------------------------
    def _targets(self, rows: list[_Row]) -> np.ndarray:
        index = {c: i for i, c in enumerate(self.classes)}
        t = np.zeros((len(rows), len(index)), np.float32)
        for n, r in enumerate(rows):
            t[n, [index[c] for c in r.labels]] = 1.0
        return t

    def _examples(self, rows: list[_Row], idx: np.ndarray) -> list[Example]:
        t = self._targets([rows[i] for i in idx])
        return [Example(id=rows[i].id, target=t[n], path=rows[i].abs_path)
                for n, i in enumerate(idx)]

    def _holdout(self, idx: np.ndarray, fraction: float, rows: list[_Row],
                 rng: np.random.Generator) -> np.ndarray:
        """Mask over ``idx``: class-stratified (multiclass) or random (multi-label)."""
        if self._kind() == "multiclass":
            index = {c: i for i, c in enumerate(self.classes)}
            labels = np.array([index[rows[i].labels[0]] for i in idx], dtype=np.int64)
            return L.stratified_holdout(labels, fraction, rng)
        return L.random_holdout(len(idx), fraction, rng)

    def folds(self, fold: str | None = None) -> list[Fold]:
        names = self.fold_names()
        wanted = names if fold in (None, "all") else [str(fold)]
        for n in wanted:
            if n not in names:
                raise KeyError(f"task {self.name} has folds {', '.join(names)} (got {fold!r})")
        return [self._fold(n) for n in wanted]

    def _fold(self, name: str) -> Fold:
        meta, rows = self._read(), self.rows()
        n = len(rows)
        everything = np.arange(n)
        rng = L.rng_for(self.seed, zlib.crc32(name.encode()))
        if self.all_test:
            test_idx = everything
            train_idx = valid_idx = np.zeros(0, np.int64)
        else:
            if meta["use_folds"]:
                in_fold = np.array([r.fold == name for r in rows])
                test_idx, rest = everything[in_fold], everything[~in_fold]
            else:
                hold = self._holdout(everything, self.test_fraction, rows, rng)
                test_idx, rest = everything[hold], everything[~hold]
            if len(test_idx) == 0:
                raise ManifestError(
                    f"task {self.name!r}: manifest {meta['path']}: the test split of fold "
                    f"{name!r} is empty ({n} usable row(s); a seeded split needs at least 2, "
                    f"test_fraction={self.test_fraction}); add rows or give a 'fold' column")
            hold = self._holdout(rest, self.valid_fraction, rows, rng)
            valid_idx, train_idx = rest[hold], rest[~hold]
        caps = {s: L.profile_cap(self.profile, self.options, s) for s in ("train", "valid", "test")}
        train_idx = L.cap_indices(train_idx, caps["train"], rng)
        valid_idx = L.cap_indices(valid_idx, caps["valid"], rng)
        test_idx = L.cap_indices(test_idx, caps["test"], rng)
        return Fold(name, self._examples(rows, train_idx), self._examples(rows, valid_idx),
                    self._examples(rows, test_idx))

    def describe(self) -> dict[str, Any]:
        meta = self._read()
        rows = self.rows()
        d = super().describe()
        skipped = sorted(self.info.get("missing_skipped", []))
        how = "class-stratified" if meta["kind"] == "multiclass" else "random"
        if self.all_test:
            rule = "all rows in test"
        elif meta["use_folds"]:
            rule = (f"test = the rows of fold k; valid = seeded {how} valid_fraction of the "
                    "other rows; train = the rest")
        else:
            rule = (f"seeded {how} test_fraction of the rows, then valid_fraction of the rest; "
                    "train = the rest")
        d.update({
            "manifest": meta["path"], "manifest_sha256": meta["sha256"], "rows": len(rows),
            "options": {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in sorted(self.resolved_options.items())},
            "label_map": meta["label_map"],
            "label_map_sha256": self.info.get("label_map_sha256"),
            "missing_skipped": len(skipped),
            "missing_skipped_sha256": hashlib.sha256("\n".join(skipped).encode()).hexdigest()
            if skipped else None,
            "split_rule": rule,
            "seed": self.seed, "dictionary_splits": list(self.dictionary_splits),
        })
        return d
