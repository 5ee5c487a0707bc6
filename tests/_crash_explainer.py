"""An explainer whose fit always fails: a crashing cell for the sweep tests."""
from audio_xai_bench.methods.random_baseline import RandomExplainer


class CrashingExplainer(RandomExplainer):
    """Raises in fit (tests only)."""

    def fit(self, data, f=None):
        raise RuntimeError("deliberate crash in fit")
