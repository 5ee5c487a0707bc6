"""ESC-50: the validation hold-out is grouped by src_file (issue 9 item 8) and the dictionary
recipe reads all non-test clips without a frame cap by default (item 12)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import torch

from audio_xai_bench.tasks.esc50 import ESC50Task, grouped_stratified_holdout

from fixtures_real import make_esc50


@pytest.fixture(scope="module")
def esc_root(tmp_path_factory):
    """The generated ESC-50 fixture, with the takes A and B of a (fold, class) made fragments of
    one recording (one src_file), as in the real data set."""
    root = make_esc50(str(tmp_path_factory.mktemp("esc") / "ESC-50-master"), seconds=0.2)
    path = os.path.join(root, "meta", "esc50.csv")
    meta = pd.read_csv(path)
    meta["src_file"] = meta["fold"] * 1000 + meta["target"]
    meta.to_csv(path, index=False)
    return root


def _src_of(root: str) -> dict[str, int]:
    meta = pd.read_csv(os.path.join(root, "meta", "esc50.csv"))
    return {f[:-4]: s for f, s in zip(meta["filename"], meta["src_file"])}


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_recording_in_train_and_valid(esc_root, seed):
    src = _src_of(esc_root)
    assert len(set(src.values())) < len(src)  # recordings with two takes: the test can fail
    for f in ESC50Task(esc_root, seed=seed).folds("all"):
        tr = {src[e.id] for e in f.train}
        va = {src[e.id] for e in f.valid}
        assert va and not (tr & va)
        n = len(f.train) + len(f.valid)
        assert 1 <= len(f.valid) <= round(n / 8)


def test_grouped_holdout_keeps_groups_whole_and_stratifies():
    rng = np.random.default_rng(0)
    # 10 classes x 16 recordings, 1..5 fragments each (ESC-50-like)
    labels, groups = [], []
    for c in range(10):
        for r in range(16):
            k = int(rng.integers(1, 6))
            labels += [c] * k
            groups += [f"{c}-{r}"] * k
    labels, groups = np.array(labels), np.array(groups)
    hold = grouped_stratified_holdout(labels, groups, 0.125, np.random.default_rng(1))
    for g in np.unique(groups):
        assert len(set(hold[groups == g])) == 1  # a recording is never split
    assert round(0.125 * len(labels)) - 5 <= hold.sum() <= round(0.125 * len(labels))
    for c in range(10):
        n_c = (labels == c).sum()
        got = hold[labels == c].sum()
        assert got < n_c  # a class never gives all its clips
        assert abs(got - 0.125 * n_c) <= 5  # stratified: within one recording of its share
    again = grouped_stratified_holdout(labels, groups, 0.125, np.random.default_rng(1))
    assert np.array_equal(hold, again)


def test_dictionary_recipe_all_frames_by_default_and_cap_option(esc_root):
    assert ESC50Task.dictionary_splits == ("train", "valid")  # paper IV-B3: all 1600 clips
    X = torch.rand(6, 513, 8)
    t = torch.zeros(6, 5)
    W, info = ESC50Task(esc_root).dictionary_recipe(X, t, 4, seed=0, n_iter=2)
    assert W.shape == (513, 4)
    assert info["frames_used"] == info["frames_total"] == 48 and info["max_frames"] is None
    W, info = ESC50Task(esc_root, dict_max_frames=20).dictionary_recipe(X, t, 4, seed=0, n_iter=2)
    assert info["frames_used"] == 20 and info["frames_total"] == 48
    with pytest.raises(ValueError, match="dict_max_frames"):
        ESC50Task(esc_root, dict_max_frames=0)
