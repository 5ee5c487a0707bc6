"""Pretrained classifiers the suite can explain, one per file (``audio_xai_bench.classifiers``)."""
