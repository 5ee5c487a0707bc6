"""The model f as the engine and the explainers see it: a classifier (``api.Classifier`` or any
``nn.Module``), the task's front-end, and the map from its outputs to the task's classes.

Every explainer and the scorer reach f through ``ExplainedModel``, so FF, deletion curves and
fidelity mean the same for every model: the classifier's input is computed from the task's
signals by its own path (``inputs(batch)``, ``input_from_wave``, ``input_from_magnitude``):

- ``input = "logmel"`` (the Kumar CNN): the task front-end's log-mel; a modified magnitude
  goes straight through the mel projection (``Frontend.logmel_from_magnitude``), as before;
- ``input = "waveform"``: the clip resampled to the classifier's rate on the device
  (``resample.resample``); a modified magnitude is first re-synthesised with the clip's phase
  (``Frontend.invert``), i.e. x₂ = INV(X₂, P) of the paper's FF.

``forward(x)`` / ``forward_hidden(x)`` take that input and return logits over the **task's**
classes: output columns mapped to a task class (``Task.label_map``) are pooled, by max for
a multilabel (sigmoid) classifier (max of logits = max of probabilities) and by log-sum-exp
for a multiclass (softmax) one (the probability of a group is the sum of its members').
Attributes the wrapper does not define are read from the wrapped network (``f.blocks``,
``f.randomisation_stages()``), so explainers written for the Kumar CNN keep working.
"""
from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import Tensor, nn

from .api import Batch, Task
from .classifier import probabilities


class ClassifierError(ValueError):
    """A classifier that cannot be used with this task or method (clear message)."""


def declared(net: nn.Module, name: str, default: Any) -> Any:
    """A classifier's declaration (``api.Classifier`` attribute), with a default for plain
    ``nn.Module`` classifiers (the Kumar-style log-mel, white-box, the task's classes)."""
    return getattr(net, name, default)


class ExplainedModel(nn.Module):
    """f = classifier + front-end + output map; see the module docstring."""

    def __init__(self, net: nn.Module, frontend, task: Task,
                 columns: list[list[int]] | None = None) -> None:
        super().__init__()
        self.net = net
        self.frontend = frontend
        self.input_kind = str(declared(net, "input", "logmel"))
        if self.input_kind not in ("logmel", "waveform"):
            raise ClassifierError(f"classifier input must be 'logmel' or 'waveform', not "
                                  f"{self.input_kind!r}")
        self.sample_rate = declared(net, "sample_rate", None)
        if self.input_kind == "waveform" and not self.sample_rate:
            raise ClassifierError("a classifier whose input is 'waveform' must declare its "
                                  "sample_rate")
        trainable = bool(declared(net, "trainable", False))
        # the engine-trained classifier follows the task's kind; a pretrained one its own
        self.kind = task.kind if trainable else str(declared(net, "kind", task.kind))
        self.capabilities = frozenset(declared(net, "capabilities", frozenset({"white-box"})))
        self.white_box = "white-box" in self.capabilities
        self.columns = columns
        if columns is not None:
            width = max(len(c) for c in columns)
            idx = torch.full((len(columns), width), -1, dtype=torch.long)
            for i, c in enumerate(columns):
                idx[i, :len(c)] = torch.as_tensor(c)
            self.register_buffer("_map_index", idx, persistent=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            net = super().__getattr__("net")
            return getattr(net, name)

    # -- the classifier's own input ---------------------------------------------------------
    def input_from_wave(self, wave: Tensor) -> Tensor:
        """(B, N) waveforms at the task's rate -> the classifier's input."""
        if self.input_kind == "logmel":
            return self.frontend.logmel(wave)
        from .resample import resample

        return resample(wave.to(self.frontend.device), self.frontend.config.sample_rate,
                        int(self.sample_rate))

    def inputs(self, batch: Batch) -> Tensor:
        """The classifier's input for a batch (the log-mel the loader computed, or the
        resampled waveform)."""
        if self.input_kind == "logmel":
            return batch.logmel
        return self.input_from_wave(batch.wave)

    def input_from_magnitude(self, mag: Tensor, phase: Tensor, length: int) -> Tensor:
        """The classifier's input for a modified |STFT| ``mag`` (B, F, T) of clips whose phase
        is ``phase`` and whose length is ``length`` samples."""
        if self.input_kind == "logmel":
            return self.frontend.logmel_from_magnitude(mag)
        X = torch.log1p(mag.clamp_min(0.0))
        return self.input_from_wave(self.frontend.invert(X, phase, length))

    # -- outputs over the task's classes -------------------------------------------------------
    def _map(self, logits: Tensor) -> Tensor:
        if self.columns is None:
            return logits
        idx = self._map_index.to(logits.device)
        picked = logits[:, idx.clamp_min(0)]  # (B, C, width)
        neg = torch.finfo(picked.dtype).min
        picked = torch.where(idx.unsqueeze(0) >= 0, picked, torch.full_like(picked, neg))
        if self.kind == "multilabel":
            return picked.amax(-1)
        return torch.logsumexp(picked, -1)

    def forward(self, x: Tensor) -> Tensor:
        return self._map(self.net(x))

    def forward_hidden(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if not self.white_box or not hasattr(self.net, "forward_hidden"):
            raise ClassifierError(f"classifier {type(self.net).__name__} is black-box: it "
                                  "exposes no hidden maps")
        logits, hidden = self.net.forward_hidden(x)
        return self._map(logits), hidden

    def probs(self, x: Tensor) -> Tensor:
        """Probabilities over the task's classes (softmax or sigmoid per ``kind``)."""
        return probabilities(self(x), self.kind)

    def identity(self) -> dict[str, Any]:
        own = getattr(self.net, "identity", None)
        if callable(own):
            return dict(own())
        return {"name": type(self.net).__qualname__}


def output_columns(net: nn.Module, task: Task, n_outputs: int) -> list[list[int]] | None:
    """Which output columns of ``net`` make each task class (None = the outputs are the task's
    classes in order). Uses ``task.label_map`` (task class -> classifier output names) when the
    task has one; else the classifier's ``class_names`` when they name the task's classes;
    else the output width must equal the number of classes. Raises ``ClassifierError``."""
    names = declared(net, "class_names", None)
    label_map = getattr(task, "label_map", None)
    who = declared(net, "registry_name", "") or type(net).__name__
    if label_map:
        if names is None:
            raise ClassifierError(f"task {task.name!r} gives a label_map but classifier {who!r} "
                                  "declares no class_names to map")
        if len(names) != n_outputs:  # a map by name onto the wrong columns would be silent
            raise ClassifierError(f"classifier {who!r} declares {len(names)} class_names but "
                                  f"has {n_outputs} outputs: the label_map cannot be applied")
        lookup = {n.lower(): i for i, n in enumerate(names)}
        cols = []
        for cls in task.classes:
            targets = label_map.get(cls)
            if not targets:
                raise ClassifierError(f"label_map does not map task class {cls!r}")
            idx = []
            for t in targets:
                if t.lower() not in lookup:
                    close = difflib.get_close_matches(t, names, n=3)
                    hint = f"; close: {', '.join(close)}" if close else ""
                    raise ClassifierError(f"label_map: {t!r} (for {cls!r}) is not an output of "
                                          f"classifier {who!r}{hint}")
                idx.append(lookup[t.lower()])
            cols.append(idx)
        return cols
    if names is not None and len(names) == n_outputs:
        lookup = {n.lower(): i for i, n in enumerate(names)}
        if all(c.lower() in lookup for c in task.classes):
            cols = [[lookup[c.lower()]] for c in task.classes]
            identity = [c[0] for c in cols] == list(range(n_outputs))
            return None if identity else cols
    if n_outputs != task.num_classes:
        raise ClassifierError(
            f"classifier {who!r} has {n_outputs} outputs but task {task.name!r} has "
            f"{task.num_classes} classes ({', '.join(task.classes[:8])}"
            f"{', ...' if task.num_classes > 8 else ''}) and no map between them: give the task "
            "a label map (e.g. --task-option label_map='speech=Speech;dog=Dog' on the csv task)")
    return None


def classifier_input(f: nn.Module, batch: Batch) -> Tensor:
    """f's input for ``batch``: ``f.inputs(batch)`` for an ``ExplainedModel``, the log-mel for
    a bare log-mel network (tests, user code that passes the Kumar CNN directly)."""
    own = getattr(f, "inputs", None)
    return own(batch) if callable(own) else batch.logmel


def input_from_magnitude(f: nn.Module, frontend, mag: Tensor, phase: Tensor,
                         length: int) -> Tensor:
    """f's input for a modified |STFT| (see ``ExplainedModel.input_from_magnitude``)."""
    own = getattr(f, "input_from_magnitude", None)
    if callable(own):
        return own(mag, phase, length)
    return frontend.logmel_from_magnitude(mag)


def input_kind(f: nn.Module) -> str:
    """'logmel' or 'waveform': what f reads."""
    return str(getattr(f, "input_kind", getattr(f, "input", "logmel")))
