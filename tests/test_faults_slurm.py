"""A signal to one task of the MPI wavelet-features job under srun (the real single-node SLURM cluster of
tests/slurm_cluster, ``srun --mpi=pmix --kill-on-bad-exit=1`` as the campaign and slurm/*.sbatch run it)
ends every task: the signalled rank says so in one line and removes nothing it does not own, srun ends
the step, and rank 0 (stopped by srun) removes its temporary output."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from test_faults_mpi import (STOP_SECONDS, TESTS, gone, mpi_env, signal_and_wait, stop, temporaries,
                             wait_until_working)
from test_slurm_cluster import slurm_cluster  # noqa: F401  (the module's cluster fixture)

pytestmark = [pytest.mark.slurm, pytest.mark.mpi, pytest.mark.slow]


def task_processes(marker: str) -> dict[int, int]:
    """{SLURM_PROCID: pid} of the processes whose command line contains ``marker``."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if marker.encode() not in (proc / "cmdline").read_bytes():
                continue
            env = dict(e.split(b"=", 1) for e in (proc / "environ").read_bytes().split(b"\0") if b"=" in e)
        except OSError:
            continue
        if b"SLURM_PROCID" in env:
            found[int(env[b"SLURM_PROCID"])] = int(proc.name)
    return found


@pytest.mark.timeout(300)
def test_sigterm_to_one_srun_task_ends_the_step(slurm_cluster, packed_synthetic, tmp_path):  # noqa: F811
    ready, out = tmp_path / "ready", tmp_path / "out" / "features.h5"
    cmd = ["srun", "-n", "2", "--mpi=pmix", "--kill-on-bad-exit=1", sys.executable, str(TESTS / "slow_ranks.py"),
           str(ready), "--", "wavelet-features", "--data", str(packed_synthetic), "--out", str(out), "--chunk-size", "2"]
    proc = subprocess.Popen(cmd, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_until_working(ready, proc)
        tasks = task_processes(str(ready))
        assert sorted(tasks) == [0, 1] and len(temporaries(out.parent)) == 1
        seconds, err = signal_and_wait(proc, tasks[1], signal.SIGTERM)
    finally:
        stop(proc)
    assert seconds < STOP_SECONDS and gone(tasks.values(), STOP_SECONDS - seconds), f"{seconds:.0f} s\n{err}"
    assert proc.returncode == 143, err
    ours = [line for line in err.splitlines() if line.startswith("microcal-hpc")]
    assert ours == [f"microcal-hpc: error: rank 1 of 2 stopped by SIGTERM; every rank stops, {out} not written"], err
    assert "task 1: Exited with exit code 143" in err and "Traceback" not in err
    assert not out.exists() and temporaries(out.parent) == []
