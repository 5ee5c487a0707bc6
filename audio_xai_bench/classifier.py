"""The classifier f interpreted by the paper: Kumar et al.'s VGG-style CNN (ICASSP 2018).

Layer shapes follow ``reference/l2i_protocol_facts.md`` section 2 (``weak_mxh64_1024`` as
edited by L2I): blocks B1..B5 of two 3x3 conv-BN-ReLU, B6 of one, each followed by a 2x2
max-pool; a 2x2 conv 512->1024 (layer18); the L2I head is a 1x1 conv -> ReLU -> global max
pool -> dropout -> linear. Hidden maps are each block's conv output *before* its pool.
``width`` multiplies every channel count so tests train in seconds (1.0 = the paper's net).

Any ``nn.Module`` can be interpreted instead if it implements ``forward_hidden(logmel) ->
(logits, {name: map})`` with maps shaped (B, C, T', M') (time = dim 2, frequency = dim 3).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .api import Classifier

DEFAULTS: dict[str, Any] = {
    "width": 1.0,        # channel multiplier (1.0 = Kumar et al.)
    "head_mid": 256,     # 1x1 conv width of the L2I head (FtEx: 256 ESC, 512 SONYC)
    "dropout": 0.2,
    "epochs": 30,
    "lr": 1e-3,
    "batch_size": 32,
    "pos_weight": None,  # BCE positive weights per class (multilabel), e.g. SONYC's code
    "select": "valid",   # model selection: 'valid' (best validation score) or 'last'
}


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class KumarCNN(Classifier):
    """f: log-mel (B, 1, T, M) -> logits (B, C); ``forward_hidden`` also returns B1..B6."""

    registry_name = "kumar"
    input = "logmel"
    trainable = True  # trained by the engine on the task (settings classifier.*)
    block_names = ("B1", "B2", "B3", "B4", "B5", "B6")

    def __init__(self, num_classes: int, width: float = 1.0, head_mid: int = 256,
                 dropout: float = 0.2) -> None:
        super().__init__()
        ch = [max(2, int(round(c * width))) for c in (16, 32, 64, 128, 256, 512, 1024)]
        self.channels = dict(zip(self.block_names, ch[:6]))
        blocks, cin = [], 1
        for i, c in enumerate(ch[:6]):
            layers = _conv_bn(cin, c) + ([] if i == 5 else _conv_bn(c, c))
            blocks.append(nn.Sequential(*layers))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        self.pool = nn.MaxPool2d(2)
        self.layer18 = nn.Sequential(nn.Conv2d(ch[5], ch[6], 2), nn.BatchNorm2d(ch[6]),
                                     nn.ReLU(inplace=True))
        mid = max(4, int(round(head_mid * min(1.0, width * 2))))
        self.head = nn.Sequential(nn.Conv2d(ch[6], mid, 1), nn.ReLU(inplace=True))
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(mid, num_classes)
        self.num_classes = num_classes

    @staticmethod
    def _pad_min(x: Tensor, minimum: int = 64) -> Tensor:
        """Pad time/frequency (with the input's floor) to at least 64 so six pools fit."""
        pt, pf = max(0, minimum - x.shape[2]), max(0, minimum - x.shape[3])
        if pt or pf:
            x = nn.functional.pad(x, (0, pf, 0, pt), value=float(x.detach().amin()))
        return x

    def forward_hidden(self, logmel: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        x = self._pad_min(logmel)
        hidden: dict[str, Tensor] = {}
        for name, block in zip(self.block_names, self.blocks):
            x = block(x)
            hidden[name] = x
            x = self.pool(x)
        if x.shape[2] < 2 or x.shape[3] < 2:  # short clips / few bands: let the 2x2 conv fit
            x = nn.functional.pad(x, (0, max(0, 2 - x.shape[3]), 0, max(0, 2 - x.shape[2])),
                                  mode="replicate")
        x = self.head(self.layer18(x))
        x = torch.amax(x, dim=(2, 3))
        return self.fc(self.drop(x)), hidden

    def forward(self, logmel: Tensor) -> Tensor:
        return self.forward_hidden(logmel)[0]

    def randomisation_stages(self) -> list[tuple[str, list[nn.Module]]]:
        """Layers top-down for the cascading randomisation sanity check (Adebayo et al. 2018):
        the head (1x1 conv + linear), layer18, then B6 .. B1."""
        blocks = list(zip(self.block_names, ([b] for b in self.blocks)))
        return [("head", [self.head, self.fc]), ("layer18", [self.layer18]), *blocks[::-1]]

    def head_parameters(self) -> list[nn.Parameter]:
        """The layers after the conv blocks (paper: fine-tune only these on ESC-50)."""
        return [*self.head.parameters(), *self.fc.parameters()]


def probabilities(logits: Tensor, kind: str) -> Tensor:
    """softmax for multiclass, sigmoid for multilabel (paper III-D)."""
    return torch.softmax(logits, -1) if kind == "multiclass" else torch.sigmoid(logits)


def build_classifier(num_classes: int, config: dict[str, Any]) -> KumarCNN:
    return KumarCNN(num_classes, width=float(config["width"]),
                    head_mid=int(config["head_mid"]), dropout=float(config["dropout"]))
