"""Benchmark: one L2I interpreter training step, before / after the speed levers of issue 14.

Not in the default run (pytest addopts ignore tests/benchmarks). Run:

    python -m pytest tests/benchmarks/test_bench_l2i.py -s -p no:cacheprovider

Setting: the synth defaults (16 kHz, 1024-pt FFT, hop 512, 64 mel bands, 3 s clips = 94
frames; f = the Kumar CNN at width 0.25 as the synth classifier, random weights: speed does not
depend on them; K = 100; a batch of 32 clips). One step = f's outputs for the batch (a forward
pass of f, or a lookup in the cache of ``methods/_fcache.py``), Ψ + Θ forward, the losses of
eq. (1)-(4), backward, Adam step. Variants, all timed back to back in this process:

- ``legacy``: the Ψ of commit 08b5888 (before this change: every branch bilinearly resampled,
  B4 -> 256 channels, full width) with f recomputed each step — the code being replaced;
- ``full``: today's reference Ψ at width 1.0 (the paper's Ψ), f recomputed;
- ``full+cache``, ``auto``, ``auto+cache`` (today's default: Ψ width = f's 0.25, f cached),
  ``auto+cache+cl`` (the same with channels-last tensors).

Timings are the min over ROUNDS of STEPS steps; the printed ratios are legacy / variant.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from _timing import best_of
from torch import Tensor, nn

from audio_xai_bench.classifier import KumarCNN
from audio_xai_bench.methods.l2i import (Interpreter, ThetaAtt, fidelity_loss, hidden_shapes,
                                         nmf_loss, psi_width)

B, K, C, T, M, NFREQ = 32, 100, 8, 94, 64, 513
STEPS, ROUNDS = 3, 3
THREADS = int(os.environ.get("L2I_BENCH_THREADS", "0"))
LAYERS = ("B4", "B5", "B6")


class LegacyPsi(nn.Module):
    """The Ψ replaced by this change (commit 08b5888), kept here only to time it."""

    def __init__(self, in_channels: dict[str, int], K: int, bands: int = 4) -> None:
        super().__init__()
        self.names, self.bands = list(in_channels), bands
        self.inputs = nn.ModuleDict({
            n: nn.Sequential(nn.Conv2d(ch, 256 if i == 0 else 128, 3, padding=1), nn.ReLU())
            for i, (n, ch) in enumerate(in_channels.items())})
        self.merge = nn.Sequential(nn.Conv2d(512, 256, 3, padding=1), nn.ReLU())
        self.collapse = nn.Sequential(nn.Conv2d(256, 256, (1, bands)), nn.ReLU())
        self.out = nn.Sequential(nn.Conv1d(256, K, 5, padding=2), nn.ReLU(),
                                 nn.Conv1d(K, K, 5, padding=2), nn.ReLU())

    def forward(self, hidden: dict[str, Tensor], T: int) -> Tensor:
        grid = (max(4, hidden[self.names[-1]].shape[2] * 4), self.bands)
        maps = [F.interpolate(self.inputs[n](hidden[n]), size=grid, mode="bilinear",
                              align_corners=True) for n in self.names]
        x = self.merge(F.interpolate(torch.cat(maps, 1), size=(grid[0] * 2, self.bands),
                                     mode="bilinear", align_corners=True))
        x = F.interpolate(x, size=(grid[0] * 4, self.bands), mode="bilinear", align_corners=True)
        x = F.interpolate(self.collapse(x).squeeze(-1), size=T, mode="linear", align_corners=True)
        return self.out(x)


class LegacyNet(nn.Module):
    def __init__(self, chans: dict[str, int], W: Tensor) -> None:
        super().__init__()
        self.psi, self.theta = LegacyPsi(chans, W.shape[1]), ThetaAtt(W.shape[1], C, False)
        self.register_buffer("W", W)

    def forward(self, hidden, T):
        H = self.psi(hidden, T)
        return H, self.theta(H)


@pytest.fixture(scope="module")
def setup():
    if THREADS > 0:
        torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    f = KumarCNN(C, width=0.25).eval()
    for p in f.parameters():
        p.requires_grad_(False)
    logmel = torch.randn(B, 1, T, M)
    X = torch.rand(B, NFREQ, T)
    W = torch.rand(NFREQ, K)
    W = W / W.norm(dim=0)
    return f, logmel, X, W


def _stepper(net: nn.Module, f: nn.Module, logmel: Tensor, X: Tensor, cache: bool,
             channels_last: bool = False):
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=2e-4)
    with torch.no_grad():
        fl, hid = f.forward_hidden(logmel)
        stored = (fl.clone(), {n: hid[n].clone() for n in LAYERS})
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        stored = (stored[0], {n: v.contiguous(memory_format=torch.channels_last)
                              for n, v in stored[1].items()})

    def step() -> None:
        if cache:
            f_logits, hidden = stored
        else:
            with torch.no_grad():
                f_logits, hidden = f.forward_hidden(logmel)
        H, logits = net({n: hidden[n] for n in LAYERS}, T)
        loss = (0.5 * fidelity_loss(logits, f_logits, "multiclass")
                + 5.0 * nmf_loss(X, net.W, H) + 0.4 * H.abs().mean())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def run() -> None:
        for _ in range(STEPS):
            step()
    run()  # warm-up
    return run


def test_bench_l2i_training_step(setup):
    f, logmel, X, W = setup
    shapes = hidden_shapes(f, logmel[:1], LAYERS)
    torch.manual_seed(0)
    nets = {
        "legacy": (LegacyNet({n: c for n, (c, _) in shapes.items()}, W), False, False),
        "full": (Interpreter(shapes, W, C, "att", False, 1.0, 0.0), False, False),
        "full+cache": (Interpreter(shapes, W, C, "att", False, 1.0, 0.0), True, False),
        "auto": (Interpreter(shapes, W, C, "att", False, psi_width("auto", shapes), 0.0),
                 False, False),
        "auto+cache": (Interpreter(shapes, W, C, "att", False, psi_width("auto", shapes), 0.0),
                       True, False),
        "auto+cache+cl": (Interpreter(shapes, W, C, "att", False, psi_width("auto", shapes),
                                      0.0), True, True),
    }
    with torch.no_grad():
        t_f = best_of(lambda: f.forward_hidden(logmel), ROUNDS)
    times = {name: best_of(_stepper(net, f, logmel, X, cache, cl), ROUNDS) / STEPS
             for name, (net, cache, cl) in nets.items()}
    params = {name: sum(p.numel() for p in net.psi.parameters()) for name, (net, _, _) in
              nets.items()}
    print(f"\nL2I training step, batch {B}, synth shapes (T={T}, {M} mels, f width 0.25), "
          f"K={K}, threads={torch.get_num_threads()}; f forward alone {1e3 * t_f:.1f} ms")
    for name, t in times.items():
        print(f"  {name:14s} {1e3 * t:7.1f} ms/step  Ψ params {params[name]:>9,d}  "
              f"legacy/this = {times['legacy'] / t:5.2f}x")
    assert all(t > 0 for t in times.values())
