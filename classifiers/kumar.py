"""``kumar``: the paper's classifier f (Kumar et al., ICASSP 2018, as edited by L2I), trained by
the engine on the task and cached (``runner.get_classifier``). The network itself lives in
``audio_xai_bench/classifier.py``; this entry only registers it as a classifier.

Input: the task front-end's log-mel (B, 1, T, M); kind: the task's; white-box (hidden maps
B1..B6 for L2I's Ψ, FLINT and Grad-CAM); ``trainable``: settings ``classifier.*``."""
from __future__ import annotations

from audio_xai_bench.classifier import KumarCNN


class Kumar(KumarCNN):
    """The Kumar CNN as a registered classifier (the default of ``run --classifier``)."""
