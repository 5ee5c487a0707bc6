"""The classifier interface as the engine uses it (issue 13): the default Kumar path is
unchanged, label maps pool outputs as documented, incompatible pairs are refused up front."""
from __future__ import annotations

import math
import types

import pytest
import torch
from torch import nn

from audio_xai_bench import runner
from audio_xai_bench.api import Classifier
from audio_xai_bench.audio import Frontend
from audio_xai_bench.classifier import build_classifier, probabilities
from audio_xai_bench.model import ClassifierError, ExplainedModel, output_columns
from audio_xai_bench.registry import METHODS, TASKS
from audio_xai_bench.settings import SettingsError


def _task(kind="multiclass", classes=("a", "b"), label_map=None):
    return types.SimpleNamespace(name="t", kind=kind, classes=list(classes),
                                 num_classes=len(classes), label_map=label_map)


def test_default_kumar_path_is_bit_identical():
    torch.manual_seed(0)
    net = build_classifier(8, {"width": 0.25, "head_mid": 32, "dropout": 0.2}).eval()
    task = TASKS.get("synth")(profile="small")
    m = ExplainedModel(net, Frontend(task.frontend), task).eval()
    x = torch.randn(3, 1, 94, 128)
    with torch.inference_mode():
        assert torch.equal(m(x), net(x))
        assert torch.equal(m.probs(x), probabilities(net(x), "multiclass"))
    assert m.blocks is net.blocks  # attributes reach the wrapped network


def test_default_classifier_leaves_the_cell_hash_unchanged(tmp_path):
    base = runner.RunSpec(method="l2i", task="synth", profile="small", out=str(tmp_path))
    named = runner.RunSpec(method="l2i", task="synth", profile="small", out=str(tmp_path),
                           classifier="kumar")
    assert runner.plan(base) == runner.plan(named)


class _Net(Classifier):
    class_names = ["Speech", "Dog", "Bark", "Music"]
    kind = "multilabel"

    def forward(self, x):
        return x


def test_label_map_columns_and_pooling_known_answers():
    net = _Net()
    task = _task("multilabel", ("speech", "dog"), {"speech": ["Speech"], "dog": ["dog", "Bark"]})
    cols = output_columns(net, task, 4)
    assert cols == [[0], [1, 2]]
    logits = torch.tensor([[0.5, -1.0, 2.0, 3.0]])
    m = ExplainedModel(net, None, task, cols)
    assert torch.allclose(m(logits), torch.tensor([[0.5, 2.0]]))  # max of the group
    net.kind = "multiclass"
    m = ExplainedModel(net, None, _task("multiclass", ("speech", "dog")), cols)
    want = math.log(math.exp(-1.0) + math.exp(2.0))
    assert torch.allclose(m(logits), torch.tensor([[0.5, want]]))  # log-sum-exp of the group


def test_label_map_unknown_name_and_width_mismatch_are_refused():
    task = _task("multilabel", ("speech",), {"speech": ["Speach"]})
    with pytest.raises(ClassifierError, match="close: Speech"):
        output_columns(_Net(), task, 4)
    plain = nn.Linear(2, 5)
    with pytest.raises(ClassifierError, match="5 outputs .* 2 classes"):
        output_columns(plain, _task(), 5)


class BlackBox(Classifier):
    """A black-box test classifier (no gradients)."""

    capabilities = frozenset({"black-box"})
    input = "waveform"
    sample_rate = 16000

    def forward(self, x):
        return torch.zeros(x.shape[0], 8)


def test_gradient_method_on_black_box_classifier_is_refused():
    with pytest.raises(SettingsError, match="needs a white-box classifier.*occlusion"):
        runner.check_classifier(METHODS.get("saliency"), "saliency",
                                "tests.test_classifier_integration:BlackBox")
    runner.check_classifier(METHODS.get("occlusion"), "occlusion",
                            "tests.test_classifier_integration:BlackBox")


def test_checkpoint_that_is_not_a_kumar_state_dict_is_refused(tmp_path):
    bad = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(ClassifierError, match="not a state dict of the Kumar network"):
        runner._kumar_from_checkpoint(str(bad), 8, torch.device("cpu"))
    net = build_classifier(4, {"width": 0.25, "head_mid": 32, "dropout": 0.2})
    wrong = tmp_path / "wrong.pt"
    torch.save(net.state_dict(), wrong)
    with pytest.raises(ClassifierError, match="4 outputs but the task has 8"):
        runner._kumar_from_checkpoint(str(wrong), 8, torch.device("cpu"))
    ok = runner._kumar_from_checkpoint(str(wrong), 4, torch.device("cpu"))
    assert not ok.trainable
    for k, v in net.state_dict().items():
        assert torch.equal(ok.state_dict()[k], v)
