"""Task adapters, one dataset per file; registered by name in ``audio_xai_bench.registry``."""
