"""Tiny data sets in the official layouts of ESC-50, SONYC-UST v2.3 and OpenMIC-2018.

The real data sets cannot be downloaded here; these generators write a few clips with exactly
the official file names, folders, metadata columns and formats, so that the adapters are
tested against the layout, and an end-to-end run (``run --task T --data-root DIR --profile
small``) has something learnable: each class is a distinct tone (or pair of tones) over a
little noise. Every generator is deterministic and returns the data root.
"""
from __future__ import annotations

import json
import os

import numpy as np
import soundfile as sf

ESC_CATEGORIES = ["dog", "rooster", "pig", "cow", "frog"]  # ESC-50 targets 0..4
ESC10_CATEGORIES = {"dog", "rooster"}

SONYC_FINE = {
    1: ("engine", ["small-sounding-engine", "medium-sounding-engine", "large-sounding-engine",
                   "X:engine-of-uncertain-size"]),
    2: ("machinery-impact", ["rock-drill", "jackhammer", "hoe-ram", "pile-driver",
                             "X:other-unknown-impact-machinery"]),
    3: ("non-machinery-impact", ["non-machinery-impact"]),
    4: ("powered-saw", ["chainsaw", "small-medium-rotating-saw", "large-rotating-saw",
                        "X:other-unknown-powered-saw"]),
    5: ("alert-signal", ["car-horn", "car-alarm", "siren", "reverse-beeper",
                         "X:other-unknown-alert-signal"]),
    6: ("music", ["stationary-music", "mobile-music", "ice-cream-truck",
                  "X:music-from-uncertain-source"]),
    7: ("human-voice", ["person-or-small-group-talking", "person-or-small-group-shouting",
                        "large-crowd", "amplified-speech", "X:other-unknown-human-voice"]),
    8: ("dog", ["dog-barking-whining"]),
}
SONYC_META = ["split", "sensor_id", "audio_filename", "annotator_id", "borough", "block",
              "latitude", "longitude", "year", "week", "day", "hour"]

OPENMIC_CLASSES = ["accordion", "banjo", "bass", "cello", "clarinet", "cymbals", "drums",
                   "flute", "guitar", "mallet_percussion", "mandolin", "organ", "piano",
                   "saxophone", "synthesizer", "trombone", "trumpet", "ukulele", "violin",
                   "voice"]


def _tone_clip(freqs: list[float], sr: int, seconds: float, rng: np.random.Generator,
               channels: int = 1) -> np.ndarray:
    n = int(round(sr * seconds))
    t = np.arange(n) / sr
    x = 0.02 * rng.standard_normal(n)
    for f in freqs:
        x += 0.25 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28))
    x = (x / (np.abs(x).max() + 1e-9) * 0.8).astype(np.float32)
    if channels > 1:
        x = np.stack([x * (1.0 - 0.2 * c) for c in range(channels)], axis=1)
    return x


# --------------------------------------------------------------------------------------------
def sonyc_fine_columns() -> tuple[list[str], list[str], list[str]]:
    """(fine presence, fine proximity, coarse presence) column names in the official order."""
    fine = []
    for c, (_, tags) in SONYC_FINE.items():
        for j, tag in enumerate(tags):
            if tag.startswith("X:"):
                fine.append(f"{c}-X_{tag[2:]}")
            else:
                fine.append(f"{c}-{j + 1}_{tag}")
    coarse = [f"{c}_{name}_presence" for c, (name, _) in SONYC_FINE.items()]
    return [f + "_presence" for f in fine], [f + "_proximity" for f in fine], coarse


def make_esc50(root: str, *, n_classes: int = 5, seconds: float = 5.0, seed: int = 0) -> str:
    """ESC-50 layout: meta/esc50.csv + audio/{fold}-{src}-{take}-{target}.wav; 1-2 clips per
    class and fold (38 clips for 5 classes), 44.1 kHz mono 16-bit."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "meta"), exist_ok=True)
    os.makedirs(os.path.join(root, "audio"), exist_ok=True)
    rows = []
    src = 100032
    for fold in range(1, 6):
        for target in range(n_classes):
            for take in "AB"[: 1 + (fold + target) % 2]:
                src += 7
                name = f"{fold}-{src}-{take}-{target}.wav"
                sf.write(os.path.join(root, "audio", name),
                         _tone_clip([300.0 * (target + 1)], 44100, seconds, rng), 44100,
                         subtype="PCM_16")
                cat = ESC_CATEGORIES[target] if target < len(ESC_CATEGORIES) else f"class{target}"
                rows.append({"filename": name, "fold": fold, "target": target, "category": cat,
                             "esc10": cat in ESC10_CATEGORIES, "src_file": src, "take": take})
    pd.DataFrame(rows).to_csv(os.path.join(root, "meta", "esc50.csv"), index=False)
    return root


def make_sonyc(root: str, *, seconds: float = 10.0, seed: int = 0,
               n_files: dict[str, int] | None = None, shards: int = 0,
               shard_inner: str = "") -> str:
    """SONYC-UST v2.3 layout: annotations.csv with every official column (12 metadata, 29 fine
    presence, 29 proximity, 8 coarse) and several annotator rows per recording, the taxonomy
    YAML, audio/<sensor>_<id>.wav (10 s; every third file at 48 kHz to exercise resampling).
    ``shards=n`` writes file k to audio-<k % n>/<shard_inner>/ instead, as when each of the
    v2.3 archives audio-0.tar.gz ... audio-18.tar.gz is unpacked into its own folder.

    train: 3 volunteers each (one marks every true class, the others a subset), a few with a
    SONYC-team row (-1 outside its group) and one verified row; validate: volunteers, plus a
    verified (annotator_id 0) row for all but the last file; test: team + verified rows."""
    import pandas as pd
    import yaml

    rng = np.random.default_rng(seed)
    n_files = n_files or {"train": 12, "validate": 6, "test": 6}
    fine_p, fine_x, coarse = sonyc_fine_columns()
    offsets = {c: sum(len(SONYC_FINE[d][1]) for d in range(1, c)) for c in SONYC_FINE}
    if not shards:
        os.makedirs(os.path.join(root, "audio"), exist_ok=True)
    rows = []
    k = 0
    for split, n in n_files.items():
        for i in range(n):
            # each file has 1-2 coarse classes; every class shows up in train
            labels = sorted({k % 8, (3 * k + 1) % 8} if k % 3 == 0 else {k % 8})
            sensor = 10 + (k % 4)
            fname = f"{sensor:02d}_{1000 + k:06d}.wav"
            sr = 48000 if k % 3 == 2 else 44100
            folder = (os.path.join(root, f"audio-{k % shards}", shard_inner) if shards
                      else os.path.join(root, "audio"))
            os.makedirs(folder, exist_ok=True)
            sf.write(os.path.join(folder, fname),
                     _tone_clip([200.0 * (c + 1) + 50 for c in labels], sr, seconds, rng), sr,
                     subtype="PCM_16")

            def row(ann, present: set[int], groups=None):
                r = {"split": split, "sensor_id": sensor, "audio_filename": fname,
                     "annotator_id": ann, "borough": 1, "block": 547, "latitude": 40.72,
                     "longitude": -73.99, "year": 2019, "week": 12, "day": k % 7,
                     "hour": 9 + k % 10}
                for c, (name, tags) in SONYC_FINE.items():
                    labelled = groups is None or c in groups
                    for j, _ in enumerate(tags):
                        idx = offsets[c] + j
                        on = int((c - 1) in present and j == 0)
                        r[fine_p[idx]] = on if labelled else -1
                        r[fine_x[idx]] = ("near" if on else "-1") if ann > 0 else "-1"
                    r[coarse[c - 1]] = int((c - 1) in present) if labelled else -1
                return r

            true = set(labels)
            if split in ("train", "validate"):
                rows.append(row(1000 + 3 * k, true))
                rows.append(row(1001 + 3 * k, set(labels[:1]) if len(labels) > 1 else set()))
                rows.append(row(1002 + 3 * k, set()))
            if split == "test" or k % 4 == 0:
                g = labels[0] + 1
                rows.append(row(-(1 + k % 2), true, groups={g}))
            if split == "test" or (split == "validate" and i < n - 1) or (split == "train"
                                                                         and i == 0):
                # the verified row; for the first train file it deliberately disagrees with
                # the volunteers (it must be ignored for train labels)
                rows.append(row(0, set() if split == "train" else true))
            k += 1
    cols = SONYC_META + fine_p + fine_x + coarse
    pd.DataFrame(rows, columns=cols).to_csv(os.path.join(root, "annotations.csv"), index=False)
    tax = {"coarse": {c: name for c, (name, _) in SONYC_FINE.items()},
           "fine": {c: {("X" if t.startswith("X:") else j + 1): t.removeprefix("X:")
                        for j, t in enumerate(tags)} for c, (_, tags) in SONYC_FINE.items()}}
    with open(os.path.join(root, "dcase-ust-taxonomy.yaml"), "w") as fh:
        yaml.safe_dump(tax, fh, sort_keys=False)
    return root


def make_openmic(root: str, *, n_train: int = 16, n_test: int = 6, seconds: float = 10.0,
                 seed: int = 0, partition_names: str = "csv",
                 key_dtype: str = "unicode") -> str:
    """OpenMIC-2018 layout: openmic-2018.npz (X, Y_true, Y_mask, sample_key), class-map.json,
    partitions/split01_{train,test}.csv (or train01.txt / test01.txt with
    ``partition_names='txt'``), audio/<key[:3]>/<key>.ogg (Ogg Vorbis 44.1 kHz; every other
    clip stereo). ``key_dtype='object'`` stores sample_key as an object array, as the official
    scripts/helper_numpy.py does (``np.unique`` of a pandas column), which numpy pickles.
    Each clip has 1-2 present instruments (Y_true 0.9, annotated), two annotated absent ones
    (Y_true 0.1) and the rest unannotated (Y_true 0.5, mask False); clip 0 has an annotated
    Y_true of exactly 0.5 (a positive under the >= 0.5 rule)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    C = len(OPENMIC_CLASSES)
    keys = sorted(f"{1000 + 37 * i:06d}_{(i % 5) * 3840}" for i in range(n))
    Y_true = np.full((n, C), 0.5, np.float32)
    Y_mask = np.zeros((n, C), bool)
    for i, key in enumerate(keys):
        present = sorted({(2 * i) % C, (2 * i + 7) % C} if i % 2 else {(2 * i) % C})
        absent = [(c + 3) % C for c in present if (c + 3) % C not in present][:2]
        Y_true[i, present], Y_mask[i, present] = 0.9, True
        Y_true[i, absent], Y_mask[i, absent] = 0.1, True
        folder = os.path.join(root, "audio", key[:3])
        os.makedirs(folder, exist_ok=True)
        sf.write(os.path.join(folder, f"{key}.ogg"),
                 _tone_clip([180.0 * (c + 1) for c in present], 44100, seconds, rng,
                            channels=2 if i % 2 else 1), 44100, format="OGG", subtype="VORBIS")
    spare = (2 * 0 + 5) % C
    Y_true[0, spare], Y_mask[0, spare] = 0.5, True
    X = rng.integers(0, 256, size=(n, 10, 128)).astype(np.uint8)
    np.savez(os.path.join(root, "openmic-2018.npz"), X=X, Y_true=Y_true, Y_mask=Y_mask,
             sample_key=np.asarray(keys, dtype=object if key_dtype == "object" else None))
    with open(os.path.join(root, "class-map.json"), "w") as fh:
        json.dump({c: i for i, c in enumerate(OPENMIC_CLASSES)}, fh)
    os.makedirs(os.path.join(root, "partitions"), exist_ok=True)
    order = np.random.default_rng(seed + 1).permutation(n)
    train, test = sorted(keys[i] for i in order[:n_train]), sorted(keys[i] for i in order[n_train:])
    names = (("split01_train.csv", "split01_test.csv") if partition_names == "csv"
             else ("train01.txt", "test01.txt"))
    for name, ks in zip(names, (train, test)):
        with open(os.path.join(root, "partitions", name), "w") as fh:
            fh.write("\n".join(ks) + "\n")
    return root
