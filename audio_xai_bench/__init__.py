"""audio-xai-bench: evaluation suite for interpretability methods of audio classifiers."""
__version__ = "0.1.0"
