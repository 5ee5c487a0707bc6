"""Shared fixtures. ``slurm_cluster``: a private one-node Slurm (tests/slurm_cluster.py),
started once per test session when its binaries exist (``.ci/run`` installs them), skipped
cleanly otherwise, and shut down at the end."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(scope="session")
def slurm_cluster():
    import slurm_cluster as sc

    missing = sc.missing_binaries()
    if missing:
        pytest.skip(f"Slurm not installed (missing {', '.join(missing)}; "
                    "apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        pytest.skip("a private slurmd needs root")
    pytest.importorskip("submitit")
    cluster = sc.start_cluster()
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
        cluster.stop()
