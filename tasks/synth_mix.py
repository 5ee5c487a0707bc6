"""``synth-mix``: the synthetic task with distractors (a target among other sounds).

Each clip holds one **target** event of the labelled class (the 8 ``synth`` classes, made by
``synth``'s generators) plus 1 or 2 **distractor** events drawn from a separate pool of four
sound types that are never labels (so f learns to ignore them), each at a random onset
(overlapping the target or not), over ``synth``'s pink-ish background noise.

Levels (all RMS over the event's own duration):

- each distractor sits at a target-to-distractor ratio (TDR) drawn uniformly in
  ``tdr_db`` = [-6, +6] dB, so about half of the distractors are as loud as the target or
  louder (TDR <= 0 dB) and a clip with two distractors usually has a louder one;
- the background noise is at an SNR uniform in ``snr_db`` against the target event.

Every source is kept: ``sources`` = [target, distractor 1, (distractor 2)] and
``source_classes`` = [label, -2, (-2)] (-2 marks a distractor, -1 the loader's padding).
Multiclass label = the target's class. Deterministic from the data seed (option ``data_seed``,
as ``synth``); the ``small`` profile has ``synth``'s small sizes.
"""
from __future__ import annotations

from typing import Any, Callable, ClassVar

import numpy as np

from audio_xai_bench.api import Example
from audio_xai_bench.tasks.synth import (SynthTask, _bandpass_noise, background_noise,
                                         make_event, place_event)

DISTRACTOR_CLASS = -2  # source_classes value of a distractor event


def _steady_tone(t, rng):
    return np.sin(2 * np.pi * rng.uniform(2000, 3000) * t)


def _wideband_noise(t, rng):
    return _bandpass_noise(len(t), 100, 7500, rng)


def _warble(t, rng):
    fc, dev, rate = rng.uniform(700, 1000), rng.uniform(40, 100), rng.uniform(3, 6)
    return np.sin(2 * np.pi * fc * t + dev / rate * np.sin(2 * np.pi * rate * t))


def _bell(t, rng):
    f0 = rng.uniform(400, 700)
    decay = np.exp(-t * rng.uniform(2, 5))
    return decay * sum(a * np.sin(2 * np.pi * f0 * r * t)
                       for r, a in ((1.0, 1.0), (2.76, 0.6), (5.40, 0.4)))


#: Distractor pool: sound types that are never labels.
DISTRACTORS: list[str] = ["steady-tone", "wideband-noise", "warble", "bell"]
DISTRACTOR_GENERATORS: list[Callable[[np.ndarray, np.random.Generator], np.ndarray]] = [
    _steady_tone, _wideband_noise, _warble, _bell]


def _rms(x: np.ndarray) -> float:
    active = x != 0
    return float(np.sqrt(np.mean(x[active] ** 2))) if active.any() else 0.0


def make_mix_clip(label: int, n_clip: int, rng: np.random.Generator,
                  snr_db: tuple[float, float], tdr_db: tuple[float, float],
                  n_distractors: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(mixture, sources (E, N), distractor types) of one clip: the target event of class
    ``label``, ``n`` distractors (n uniform in ``n_distractors``) at TDRs uniform in
    ``tdr_db``, background noise at an SNR uniform in ``snr_db`` against the target."""
    target = make_event(label, n_clip, rng)
    t_rms = _rms(target)
    n = int(rng.integers(n_distractors[0], n_distractors[1] + 1))
    kinds = rng.choice(len(DISTRACTORS), size=n, replace=False).tolist()
    dis = []
    for k in kinds:
        d = place_event(DISTRACTOR_GENERATORS[k], n_clip, rng, seconds=(0.4, 1.2))
        tdr = rng.uniform(*tdr_db)
        dis.append(d / max(_rms(d), 1e-12) * t_rms / 10 ** (tdr / 20))
    sources = np.stack([target, *dis])
    noise = background_noise(n_clip, rng)
    snr = rng.uniform(*snr_db)
    noise = noise / np.sqrt(np.mean(noise ** 2)) * t_rms / 10 ** (snr / 20)
    mix = sources.sum(0) + noise
    scale = 0.9 / (np.abs(mix).max() + 1e-9)
    return (mix * scale).astype(np.float32), (sources * scale).astype(np.float32), kinds


class SynthMixTask(SynthTask):
    """``synth-mix``: one target event among 1-2 louder-or-quieter distractors (multiclass)."""

    name: ClassVar[str] = "synth-mix"
    max_events: ClassVar[int] = 3
    PROFILES: ClassVar[dict[str, dict[str, Any]]] = {
        "default": {"train": 40, "valid": 8, "test": 20, "snr_db": (6.0, 18.0),
                    "tdr_db": (-6.0, 6.0), "n_distractors": (1, 2)},
        "small": {"train": 8, "valid": 2, "test": 4, "snr_db": (6.0, 18.0),
                  "tdr_db": (-6.0, 6.0), "n_distractors": (1, 2)},
    }

    def describe(self) -> dict[str, Any]:
        p = self.PROFILES[self.profile]
        return {**super().describe(), "distractors": list(DISTRACTORS),
                "tdr_db": list(p["tdr_db"]), "snr_db": list(p["snr_db"])}

    def _split(self, split: str, split_id: int) -> list[Example]:
        p = self.PROFILES[self.profile]
        n = p[split] * len(self.classes)
        out = []
        for i in range(n):
            # salted differently from ``synth`` so that the two tasks' targets differ
            rng = np.random.default_rng([self.seed, split_id, i, 0x6D6978])
            label = i % len(self.classes)
            mix, src, kinds = make_mix_clip(label, self.frontend.clip_samples, rng,
                                            p["snr_db"], p["tdr_db"], p["n_distractors"])
            target = np.zeros(len(self.classes), np.float32)
            target[label] = 1.0
            classes = np.asarray([label] + [DISTRACTOR_CLASS] * len(kinds), np.int64)
            out.append(Example(id=f"{split}-{i:04d}", target=target, audio=mix, sources=src,
                               source_classes=classes))
        return out
