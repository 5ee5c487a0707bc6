"""TinyWaveNet: a complete, minimal example of a user's classifier for audio-xai-bench.

It is a deliberately small PyTorch CNN that reads **16 kHz mono waveforms**: it computes its
own log-mel (``torch.stft`` and a mel matrix from ``librosa.filters.mel``), runs three conv
blocks and a linear layer, and returns one logit per class. Its weights are random unless you
load your own (``build`` below), so what the suite measures on it is the explainers'
behaviour on an arbitrary network, not a trained model's: a real model would be trained
before it is explained.

What the suite reads (``audio_xai_bench.api.Classifier``, see ``docs/add_classifier.md``):

``input = "waveform"``, ``sample_rate = 16000``
    ``forward`` takes (B, N) float32 waveforms at 16 kHz. The engine resamples the task's
    clips (whatever their rate) to 16 kHz, and re-synthesises every modified spectrogram x₂
    (faithfulness, deletion curves) as a waveform before it calls the model.
``kind = "multiclass"``
    its logits become probabilities by a softmax (``"multilabel"``: independent sigmoids).
``class_names = None``
    its outputs are the task's classes, in order (the output width must then equal the task's
    number of classes). Name your outputs (a list of strings) when they are not the task's,
    and map them with the task's ``label_map`` (``--task-option label_map=...`` on ``csv``).
``capabilities = {"white-box"}``
    a torch module with gradients and ``forward_hidden``: every method runs on it (Saliency,
    IG and Grad-CAM differentiate it; L2I's Ψ and FLINT read its hidden maps).
``trainable = False``
    a pretrained model: the engine uses it as it is and never trains it.
``hidden_layer_names``, ``explainer_defaults``
    the names ``forward_hidden`` returns (the allowed values of the methods' ``hidden_layers``
    setting) and the defaults the methods that explain this model start from: L2I reads the
    three maps with the resampling plan of Ψ (``psi_plan="resample"``), which fits any map
    sizes (the reference plan assumes the Kumar CNN's 2x pools).
``gradcam_layer``
    the map Grad-CAM weighs (default: the last one ``forward_hidden`` returns).

Shapes: B = rows, N = samples, T = STFT frames (hop 10 ms), M = 32 mel bands.
"""
from __future__ import annotations

import os
from typing import Any, ClassVar

import librosa
import numpy as np
import torch
from torch import Tensor, nn

from audio_xai_bench.api import Classifier

SAMPLE_RATE = 16000
N_FFT = 512  # 32 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 32
LOG_FLOOR = 1e-6
CHANNELS = (8, 16, 32)
WEIGHTS_ENV = "TINY_WAVE_WEIGHTS"


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))


class TinyWaveNet(Classifier):
    """A three-block CNN on 16 kHz waveforms (an example classifier plugin)."""

    input: ClassVar[str] = "waveform"
    sample_rate: int | None = SAMPLE_RATE
    kind: str = "multiclass"
    class_names: list[str] | None = None
    capabilities: ClassVar[frozenset[str]] = frozenset({"white-box"})
    trainable: ClassVar[bool] = False
    hidden_layer_names: ClassVar[tuple[str, ...]] = ("c1", "c2", "c3")
    explainer_defaults: ClassVar[dict[str, Any]] = {"hidden_layers": ("c1", "c2", "c3"),
                                                    "psi_plan": "resample"}
    gradcam_layer: ClassVar[str] = "c3"

    def __init__(self, num_classes: int = 8, seed: int = 0) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        # front-end constants: buffers (they follow .to(device)), not in the state dict
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=50.0,
                                  fmax=SAMPLE_RATE / 2)  # (M, N_FFT // 2 + 1)
        self.register_buffer("mel_matrix", torch.from_numpy(np.ascontiguousarray(mel.T)).float(),
                             persistent=False)  # (F, M)
        # the same weights for the same seed, without touching the caller's random state
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            cin, blocks = 1, []
            for c in CHANNELS:
                blocks.append(_block(cin, c))
                cin = c
            self.blocks = nn.ModuleList(blocks)
            self.fc = nn.Linear(cin, self.num_classes)

    @classmethod
    def build(cls, cache_dir: str | None = None, device: torch.device | str = "cpu"
              ) -> "TinyWaveNet":
        """What the suite calls to get the model (``--classifier tiny-wave`` or
        ``--classifier my_classifier.model:TinyWaveNet``). This is where you load your own
        weights: here, when the environment variable ``TINY_WAVE_WEIGHTS`` names a file saved
        with ``torch.save(model.state_dict(), path)``, it is read with ``weights_only=True``
        (tensors only, no pickled code). ``cache_dir`` is the run's cache folder (for a model
        that converts or downloads something once); ``device`` is the run's device."""
        path = os.environ.get(WEIGHTS_ENV)
        if not path:
            return cls().to(device).eval()
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and isinstance(state.get("model"), dict):
            state = state["model"]
        if not isinstance(state, dict) or "fc.weight" not in state:
            raise ValueError(f"{WEIGHTS_ENV}={path}: not a state dict of TinyWaveNet "
                             "(expected keys blocks.0.0.weight ... fc.weight)")
        model = cls(num_classes=int(state["fc.weight"].shape[0]))
        model.load_state_dict(state)
        return model.to(device).eval()

    # -- its own front-end ----------------------------------------------------------------
    def logmel(self, wave: Tensor) -> Tensor:
        """(B, N) 16 kHz -> (B, 1, T, M) natural-log mel power, T = 1 + N // 160."""
        if wave.dim() != 2:
            raise ValueError(f"TinyWaveNet takes (B, N) waveforms, got {tuple(wave.shape)}")
        if wave.shape[1] <= N_FFT // 2:  # reflect padding needs more samples than half a frame
            wave = nn.functional.pad(wave, (0, N_FFT // 2 + 1 - wave.shape[1]))
        spec = torch.stft(wave, n_fft=N_FFT, hop_length=HOP_LENGTH,
                          window=self.window.to(wave.dtype), center=True,
                          return_complex=True).abs().pow(2)  # (B, F, T)
        mel = spec.transpose(1, 2) @ self.mel_matrix.to(spec.dtype)  # (B, T, M)
        return torch.log(mel + LOG_FLOOR).unsqueeze(1)

    # -- the network ----------------------------------------------------------------------
    def forward_hidden(self, wave: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits (B, C) and the three blocks' outputs {'c1': (B, 8, T/2, 16),
        'c2': (B, 16, T/4, 8), 'c3': (B, 32, T/8, 4)} (time = dim 2, frequency = dim 3)."""
        x = self.logmel(wave)
        hidden: dict[str, Tensor] = {}
        for name, block in zip(self.hidden_layer_names, self.blocks):
            x = block(x)
            hidden[name] = x
        return self.fc(x.mean(dim=(2, 3))), hidden

    def forward(self, wave: Tensor) -> Tensor:
        return self.forward_hidden(wave)[0]

    def randomisation_stages(self) -> list[tuple[str, list[nn.Module]]]:
        """Layers top-down for the cascading randomisation sanity check (``run --sanity``)."""
        return [("fc", [self.fc]),
                *((name, [block]) for name, block in
                  reversed(list(zip(self.hidden_layer_names, self.blocks))))]
