"""Attribution baselines (Captum) turned into region explanations of the input.

Saliency (Simonyan, Vedaldi & Zisserman, ICLR-W 2014), Integrated Gradients (Sundararajan,
Taly & Yan, ICML 2017), Grad-CAM (Selvaraju et al., ICCV 2017) and Occlusion (Zeiler & Fergus,
ECCV 2014), all as implemented by Captum (Kokhlikyan et al. 2020, ``captum.attr``), computed on
f's input (the log-mel, B x 1 x T x M) for the explained class's logit (``output='prob'``
attributes the probability instead).

So that the scorer's faithfulness protocol (removal of components from X) applies, the
attribution map is aggregated over the shared time-frequency region grid
(``methods/_regions.py``: ``n_freq`` mel-uniform bands x ``n_time`` time segments; an STFT bin
belongs to the band of the mel band whose filter is largest at that bin): each region of X is
one component and its relevance is the sum of the attributions in the region, divided by
max |.| over regions.

Per method: Saliency takes |∂y/∂x| (Captum's default ``abs=True``); Integrated Gradients
integrates from a baseline that is each clip's log-mel floor (its minimum, i.e. silence at
top_db below the peak) rather than 0 dB, ``n_steps`` steps, ``internal_batch_size`` inputs per
pass; Grad-CAM is ``LayerGradCam`` on block B6 (``model.blocks[5]``), ReLU-ed and upsampled
to the (zero-padded, see ``classifier._pad_min``) input size; Occlusion switches each grid
region of the log-mel to the clip's floor in turn: Captum's ``Occlusion`` is run on a (B,
n_freq, n_time) gate that scales the log-mel's distance to its floor region by region
(window 1 x 1, baseline 0), so its attributions are exactly f(x) − f(x without region k)
(an occlusion window on the log-mel itself would leave the last, shorter time segment
unoccluded when T is not a multiple of the window).
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from audio_xai_bench.api import (Batch, Explainer, SegmentExplanation, TaskData,
                                 normalise_relevance)

from ._regions import (RegionGrid, RegionMethod, RelevanceMemo, magnitude_forward, mask_logmel,
                       reads_logmel)


class RegionAttribution(RegionMethod, Explainer):
    """Base class: a Captum attribution on the log-mel summed over the region grid."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"explain"})
    posthoc: ClassVar[bool] = True
    needs_dictionary: ClassVar[bool] = False
    needs_training: ClassVar[bool] = False  # queries f only
    listenable: ClassVar[bool] = True  # regions are masks of the input
    defaults: ClassVar[dict[str, Any]] = {"n_freq": 4, "n_time": 10, "output": "logit",
                                          "relevance_norm": "paper"}
    small_profile: ClassVar[dict[str, Any]] = {}

    def fit(self, data: TaskData, classifier: nn.Module | None) -> None:
        if classifier is None:
            raise ValueError(f"{type(self).__name__} is post-hoc: it needs the classifier f")
        self.f, self.kind, self.frontend = classifier.eval(), data.task.kind, data.frontend
        for p in self.f.parameters():
            p.requires_grad_(False)
        self.memo = RelevanceMemo()



    def attribute(self, logmel: Tensor, classes: Tensor, grid: RegionGrid) -> Tensor:
        """(B, 1, T, M) attribution map on the log-mel (gradients enabled)."""
        raise NotImplementedError  # abstract

    def region_scores(self, logmel: Tensor, classes: Tensor, grid: RegionGrid) -> Tensor:
        """(B, K) raw (un-normalised) region scores."""
        return grid.region_sum(self.attribute(logmel, classes, grid))

    def stft_attribute(self, fwd, X: Tensor, classes: Tensor, grid: RegionGrid) -> Tensor:
        """(B, F, T) attribution on the log1p magnitude X, for a classifier that does not read
        the task's log-mel (``fwd`` re-synthesises f's input from X)."""
        raise NotImplementedError  # abstract

    def stft_region_scores(self, batch: Batch, classes: Tensor, grid: RegionGrid) -> Tensor:
        fwd = magnitude_forward(self, batch.phase, batch.wave.shape[-1])
        return grid.stft_region_sum(self.stft_attribute(fwd, batch.X.clone(), classes, grid))

    def raw_scores(self, batch: Batch, classes: Tensor) -> Tensor:
        """Region scores computed with autograd on, even under the scorer's inference_mode.
        On f's log-mel input (the Kumar CNN), or, for a classifier that reads waveforms, on
        the STFT magnitude X from which its input is re-synthesised."""
        grid = self.grid(batch.logmel.shape[2])
        with torch.inference_mode(False), torch.enable_grad():
            c = classes.clone()
            if not reads_logmel(self.f):
                b = Batch(*(getattr(batch, n).clone() for n in
                            ("wave", "X", "phase", "logmel", "target", "mask", "index")))
                return self.stft_region_scores(b, c, grid).detach()
            x = batch.logmel.clone()
            return self.region_scores(x, c, grid).detach()

    def explain(self, batch: Batch, classes: Tensor) -> SegmentExplanation:
        grid = self.grid(batch.X.shape[-1])
        key = self.memo.key(batch.index, classes, batch.X)
        r = self.memo.get(key)
        if r is None:
            r = normalise_relevance(self.raw_scores(batch, classes).float(),
                                    self.config["relevance_norm"])
            self.memo.put(key, r)
        return SegmentExplanation(batch.X, grid.segments(len(batch)).to(batch.X.device),
                                  r.to(batch.X.device))


class SaliencyRegions(RegionAttribution):
    """Captum ``Saliency`` (|gradient|) summed per region."""

    classifier_needs: ClassVar[frozenset[str]] = frozenset({"white-box"})

    def attribute(self, logmel: Tensor, classes: Tensor, grid: RegionGrid) -> Tensor:
        from captum.attr import Saliency

        return Saliency(self.model_outputs).attribute(logmel.requires_grad_(), target=classes,
                                                   abs=True)

    def stft_attribute(self, fwd, X: Tensor, classes: Tensor, grid: RegionGrid) -> Tensor:
        from captum.attr import Saliency

        return Saliency(fwd).attribute(X.requires_grad_(), target=classes, abs=True)


class IntegratedGradientsRegions(RegionAttribution):
    """Captum ``IntegratedGradients`` from the clip's log-mel floor, summed per region."""

    classifier_needs: ClassVar[frozenset[str]] = frozenset({"white-box"})

    defaults: ClassVar[dict[str, Any]] = {**RegionAttribution.defaults, "n_steps": 16,
                                          "internal_batch_size": 64, "method": "gausslegendre"}
    small_profile: ClassVar[dict[str, Any]] = {"n_steps": 4}

    def attribute(self, logmel: Tensor, classes: Tensor, grid: RegionGrid) -> Tensor:
        from captum.attr import IntegratedGradients

        base = logmel.detach().amin(dim=(1, 2, 3), keepdim=True).expand_as(logmel).contiguous()
        ig = IntegratedGradients(self.model_outputs)
        return ig.attribute(logmel.requires_grad_(), baselines=base, target=classes,
                            n_steps=int(self.config["n_steps"]),
                            method=str(self.config["method"]),
                            internal_batch_size=int(self.config["internal_batch_size"]))

    def stft_attribute(self, fwd, X: Tensor, classes: Tensor, grid: RegionGrid) -> Tensor:
        """From silence (X = 0) to X; whole steps per internal batch, so ``fwd`` sees
        step-major stacks of the B clips."""
        from captum.attr import IntegratedGradients

        B = X.shape[0]
        per = max(B, int(self.config["internal_batch_size"]) // B * B)
        return IntegratedGradients(fwd).attribute(
            X.requires_grad_(), baselines=torch.zeros_like(X), target=classes,
            n_steps=int(self.config["n_steps"]), method=str(self.config["method"]),
            internal_batch_size=per)


class GradCAMRegions(RegionAttribution):
    """Captum ``LayerGradCam`` on block B6, upsampled to the input and summed per region."""

    classifier_needs: ClassVar[frozenset[str]] = frozenset({"white-box"})

    defaults: ClassVar[dict[str, Any]] = {**RegionAttribution.defaults, "layer": 5}

    def attribute(self, logmel: Tensor, classes: Tensor, grid: RegionGrid) -> Tensor:
        from captum.attr import LayerAttribution, LayerGradCam

        layer = self.f.blocks[int(self.config["layer"])]
        cam = LayerGradCam(self.model_outputs, layer).attribute(
            logmel.requires_grad_(), target=classes, relu_attributions=True)
        # the classifier pads short inputs to >= 64 x 64 before its blocks: upsample to the
        # padded size, then crop to the input
        T, M = logmel.shape[2], logmel.shape[3]
        size = (max(64, T), max(64, M))
        up = LayerAttribution.interpolate(cam, size, interpolate_mode="bilinear")
        return up[:, :, :T, :M]

    def stft_region_scores(self, batch: Batch, classes: Tensor, grid: RegionGrid) -> Tensor:
        """Grad-CAM of a white-box classifier that reads waveforms: on its hidden map named by
        its ``gradcam_layer`` declaration (else its last map), ReLU(sum_c mean(∂y/∂A_c) A_c),
        resized bilinearly to the task's log-mel grid (T frames x M bands). **Approximate**:
        the classifier's time axis is assumed to span the clip uniformly and its frequency
        axis to be ordered low to high like the task's mel bands (true of YAMNet's)."""
        from audio_xai_bench.classifier import probabilities
        from audio_xai_bench.model import classifier_input

        x = classifier_input(self.f, batch).requires_grad_()
        logits, hidden = self.f.forward_hidden(x)
        name = getattr(self.f, "gradcam_layer", None) or list(hidden)[-1]
        A = hidden[name]
        out = logits if self.config.get("output", "logit") == "logit" \
            else probabilities(logits, self.kind)
        y = out[torch.arange(len(classes), device=out.device), classes.to(out.device)]
        (g,) = torch.autograd.grad(y.sum(), A)
        cam = torch.relu((g.mean(dim=(2, 3), keepdim=True) * A).sum(1, keepdim=True))
        up = nn.functional.interpolate(cam, size=(grid.T, grid.M), mode="bilinear",
                                       align_corners=False)
        return grid.region_sum(up)


class OcclusionRegions(RegionAttribution):
    """Captum ``Occlusion`` of each grid region (to the clip's log-mel floor)."""

    defaults: ClassVar[dict[str, Any]] = {**RegionAttribution.defaults,
                                          "perturbations_per_eval": 20}

    def region_scores(self, logmel: Tensor, classes: Tensor, grid: RegionGrid) -> Tensor:
        from captum.attr import Occlusion

        B = logmel.shape[0]

        def gated(gate: Tensor, x: Tensor) -> Tensor:
            g = grid.expand_logmel(gate.reshape(gate.shape[0], -1))
            reps = gate.shape[0] // x.shape[0]  # captum stacks perturbations along the batch
            return self.model_outputs(mask_logmel(x.repeat(reps, 1, 1, 1), g))

        gate = torch.ones(B, grid.n_freq, grid.n_time, device=logmel.device)
        with torch.no_grad():
            att = Occlusion(gated).attribute(
                gate, sliding_window_shapes=(1, 1), strides=(1, 1), baselines=0.0,
                target=classes, additional_forward_args=(logmel,),
                perturbations_per_eval=int(self.config["perturbations_per_eval"]))
        return att.reshape(B, -1)

    def stft_region_scores(self, batch: Batch, classes: Tensor, grid: RegionGrid) -> Tensor:
        """For a classifier that reads waveforms: each region of X switched off in turn
        (its bins set to zero magnitude), f's input re-synthesised; the same Captum run."""
        from captum.attr import Occlusion

        B = batch.X.shape[0]
        fwd = magnitude_forward(self, batch.phase, batch.wave.shape[-1])

        def gated(gate: Tensor, X: Tensor) -> Tensor:
            reps = gate.shape[0] // X.shape[0]
            return fwd(X.repeat(reps, 1, 1) * grid.expand_stft(gate.reshape(gate.shape[0], -1)))

        gate = torch.ones(B, grid.n_freq, grid.n_time, device=batch.X.device)
        with torch.no_grad():
            att = Occlusion(gated).attribute(
                gate, sliding_window_shapes=(1, 1), strides=(1, 1), baselines=0.0,
                target=classes, additional_forward_args=(batch.X,),
                perturbations_per_eval=int(self.config["perturbations_per_eval"]))
        return att.reshape(B, -1)

    def attribute(self, logmel: Tensor, classes: Tensor, grid: RegionGrid) -> Tensor:
        """The occlusion deltas spread over each region's log-mel cells."""
        return grid.expand_logmel(self.region_scores(logmel, classes, grid))
