"""The command line's heap policy (audio_xai_bench/allocator.py)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from audio_xai_bench import allocator


def test_requested_pad_reads_the_environment():
    assert allocator.requested_pad({}) == allocator.DEFAULT_PAD == 16 << 20
    assert allocator.requested_pad({allocator.ENV: "1048576"}) == 1 << 20
    assert allocator.requested_pad({allocator.ENV: " 0 "}) is None  # off
    assert allocator.requested_pad({"MALLOC_TOP_PAD_": "0", allocator.ENV: "5"}) is None
    for bad in ("16MB", "-1", str(2**31)):
        with pytest.raises(ValueError, match=allocator.ENV):
            allocator.requested_pad({allocator.ENV: bad})


def test_keep_heap_pad_is_accepted_by_glibc_and_a_no_op_when_off():
    assert allocator.keep_heap_pad(None) is False and allocator.keep_heap_pad(0) is False
    on_glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert allocator.keep_heap_pad(1 << 20) is on_glibc


def test_cli_reports_a_bad_pad_and_stops():
    env = {"AXB_MALLOC_TOP_PAD": "lots", "PATH": ""}
    proc = subprocess.run([sys.executable, "-m", "audio_xai_bench.cli", "list"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    assert "AXB_MALLOC_TOP_PAD='lots'" in proc.stderr and "Traceback" not in proc.stderr
