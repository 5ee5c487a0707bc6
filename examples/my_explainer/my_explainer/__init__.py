"""Example explainer plugin for audio-xai-bench (see docs/add_explainer.md)."""
from .explainer import EnergyExplainer

__all__ = ["EnergyExplainer"]
