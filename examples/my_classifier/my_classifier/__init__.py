"""Example classifier plugin for audio-xai-bench (see docs/add_classifier.md)."""
from .model import TinyWaveNet

__all__ = ["TinyWaveNet"]
