"""A real one-node Slurm cluster for the tests (Debian's slurm-wlm + munge), private to this
test session: its own temp folder, munge socket, slurm.conf and free TCP ports, so parallel
sessions on the same machine do not meet. Only the daemons started here are stopped.

Accounting storage is off (no slurmdbd: it needs a MySQL server), so ``sacct`` fails; the
sweep reads job states from ``squeue`` and submitit's result files instead.
"""
from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel")


def _find(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                       if os.path.exists(p)), None)


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if _find(b) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    env: dict[str, str]
    procs: list[subprocess.Popen]

    def stop(self) -> None:
        for p in reversed(self.procs):  # our own daemons, by pid
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        shutil.rmtree(self.root, ignore_errors=True)


def start_cluster(timeout_s: float = 60.0) -> SlurmCluster:
    """Start munged (as the munge user), slurmctld and slurmd in the foreground; returns once
    ``sinfo`` reports the node idle."""
    if os.geteuid() != 0:
        raise RuntimeError("starting slurmd needs root")
    munge_user = pwd.getpwnam("munge")
    root = Path(tempfile.mkdtemp(prefix="axb-slurm-"))
    os.chmod(root, 0o711)
    mdir = root / "munge"
    mdir.mkdir(mode=0o700)
    key = mdir / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chmod(key, 0o400)
    for p in (mdir, key):
        os.chown(p, munge_user.pw_uid, munge_user.pw_gid)
    sock = mdir / "munge.socket"
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    for d in ("state", "spool"):
        (root / d).mkdir()
    conf = root / "slurm.conf"
    conf.write_text("\n".join([
        f"ClusterName=axb{os.getpid()}",
        f"SlurmctldHost={host}",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", f"AuthInfo=socket={sock}",
        f"StateSaveLocation={root / 'state'}", f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}", f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'slurmctld.log'}", f"SlurmdLogFile={root / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill", "MpiDefault=none", "ReturnToService=2",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "SlurmctldTimeout=30", "SlurmdTimeout=30", "InactiveLimit=0", "KillWait=5",
        "MinJobAge=300",
        f"NodeName={host} CPUs={cpus} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
    ]) + "\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    log = open(root / "daemons.out", "ab")
    procs: list[subprocess.Popen] = []
    cluster = SlurmCluster(root, conf, env, procs)
    try:
        procs.append(subprocess.Popen(
            ["runuser", "-u", "munge", "--", _find("munged"), "--foreground", "--force",
             f"--socket={sock}", f"--key-file={key}", f"--pid-file={mdir / 'munged.pid'}",
             f"--log-file={mdir / 'munged.log'}", f"--seed-file={mdir / 'munged.seed'}"],
            stdout=log, stderr=log))
        _wait(lambda: sock.exists(), 15, "munged did not create its socket", root)
        procs.append(subprocess.Popen([_find("slurmctld"), "-D", "-c", "-f", str(conf)],
                                      env=env, stdout=log, stderr=log))
        _wait(lambda: _ok(["scontrol", "ping"], env, "UP"), timeout_s, "slurmctld is not up", root)
        procs.append(subprocess.Popen([_find("slurmd"), "-D", "-f", str(conf), "-N", host],
                                      env=env, stdout=log, stderr=log))
        _wait(lambda: _ok(["sinfo", "-h", "-o", "%t"], env, "idle"), timeout_s,
              "the node did not become idle", root)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def _ok(cmd: list[str], env: dict, needle: str) -> bool:
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    return res.returncode == 0 and needle in res.stdout


def _wait(pred, timeout_s: float, what: str, root: Path) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout_s:
        if pred():
            return
        time.sleep(0.3)
    logs = "".join((root / f).read_text(errors="replace")[-1500:]
                   for f in ("daemons.out", "slurmctld.log", "slurmd.log") if (root / f).exists())
    raise RuntimeError(f"{what} within {timeout_s:.0f} s; logs:\n{logs}")
