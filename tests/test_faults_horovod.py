"""A signal to, or a failure in, one rank of a Horovod training job ends every rank: real `horovodrun --gloo`
and `mpirun` with 2 ranks, real signals, on the small synthetic data set.

The ranks run through tests/slow_ranks.py, which holds every rank one second at the end of each epoch (so
that a signal lands mid-run, after the first checkpoint) or makes one rank raise after its first step;
the training itself is unchanged. Checked: every rank and the launcher end within 30 s, the exit is
non-zero, one line says which rank and why, the checkpoint of the last complete epoch is intact, and
running the same command again resumes from it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import wait_while_running
from test_faults_mpi import STOP_SECONDS, children, gone, signal_and_wait, stop

pytestmark = [pytest.mark.horovod, pytest.mark.slow]

TESTS = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent  # the venv's horovodrun and microcal-hpc
EPOCHS = 12


def hvd_env(**extra: str) -> dict:
    repo = str(TESTS.parent)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0",
               PYTHONPATH=f"{repo}{os.pathsep}{TESTS}", PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               SLOW_SECONDS="1")
    env.update(extra)
    return env


def launcher(kind: str) -> list[str]:
    if kind == "gloo":
        return [str(BIN / "horovodrun"), "-np", "2", "--gloo"]
    return [shutil.which("mpirun") or shutil.which("mpiexec"), "-np", "2"]


def train_args(data: Path, run_dir: Path) -> list[str]:
    return ["train", "--data", str(data), "--run-dir", str(run_dir), "--name", "official", "--epochs", str(EPOCHS)]


def slow_train(kind: str, data: Path, tmp_path: Path, **env: str) -> subprocess.Popen:
    cmd = launcher(kind) + [sys.executable, str(TESTS / "slow_ranks.py"), str(tmp_path / "ready"), "--",
                            *train_args(data, tmp_path / "run")]
    return subprocess.Popen(cmd, env=hvd_env(**env), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def rank_processes(root: int) -> dict[int, int]:
    """{rank: pid} of the Python processes of the ranks below a launcher (HOROVOD_RANK or OMPI_COMM_WORLD_RANK)."""
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        for child in children(pid):
            todo.append(child)
            try:
                env = dict(e.split(b"=", 1) for e in Path(f"/proc/{child}/environ").read_bytes().split(b"\0") if b"=" in e)
                exe = Path(f"/proc/{child}/comm").read_text().strip()
            except OSError:
                continue
            rank = env.get(b"HOROVOD_RANK") or env.get(b"OMPI_COMM_WORLD_RANK")
            if rank is not None and exe.startswith("python"):
                found[int(rank)] = child
    return found


def checkpointed_epoch(job: Path) -> int:
    state = job / "checkpoints" / "state.json"
    return json.loads(state.read_text())["epoch"] if state.is_file() else 0


def run_until_checkpoint(proc: subprocess.Popen, job: Path, timeout: float = 300) -> None:
    wait_while_running(proc, lambda: checkpointed_epoch(job) >= 1, timeout, 0.1, "no checkpoint was written",
                       lambda p: p.communicate()[1][-3000:])


def assert_checkpoint_intact(job: Path) -> int:
    state = json.loads((job / "checkpoints" / "state.json").read_text())
    assert 1 <= state["epoch"] < EPOCHS and len(state["history"]["loss"]) == state["epoch"]
    with np.load(job / "checkpoints" / state["checkpoint"]) as saved:  # a complete archive
        assert len(saved.files) > 0
    return state["epoch"]


def signal_one_rank(mode: str, rank: int, signum: int, packed: Path, tmp_path: Path, job: Path) -> str:
    """Train under ``mode``'s launcher, send ``signum`` to ``rank`` after the first checkpoint; assert that
    every rank and the launcher stop within STOP_SECONDS with a non-zero exit; return the launcher's stderr."""
    proc = slow_train(mode, packed, tmp_path)
    try:
        run_until_checkpoint(proc, job)
        ranks = rank_processes(proc.pid)
        assert sorted(ranks) == [0, 1]
        seconds, err = signal_and_wait(proc, ranks[rank], signum)
    finally:
        stop(proc)
    assert seconds < STOP_SECONDS and gone(ranks.values(), STOP_SECONDS - seconds), f"{seconds:.0f} s\n{err[-3000:]}"
    assert proc.returncode != 0
    return err


@pytest.mark.timeout(600)
def test_sigterm_to_one_rank_under_horovodrun_stops_both_and_the_job_resumes(packed_synthetic, tmp_path):
    job = tmp_path / "run" / "official"
    err = signal_one_rank("gloo", 1, signal.SIGTERM, packed_synthetic, tmp_path, job)
    ours = [line for line in err.splitlines() if "microcal-hpc: error:" in line]
    assert len(ours) == 1 and ours[0].endswith("microcal-hpc: error: rank 1 of 2 stopped by SIGTERM; stopping every "
                                               "rank"), err[-3000:]
    assert "rank 1 of 2 stopped by SIGTERM" in (job / "logs" / "rank-1.log").read_text()
    epoch = assert_checkpoint_intact(job)
    assert not (job / "metrics.json").exists()

    # the same command again (without the slow wrapper) resumes after the checkpointed epoch and finishes
    again = subprocess.run(launcher("gloo") + [str(BIN / "microcal-hpc"), *train_args(packed_synthetic, tmp_path / "run")],
                           env=hvd_env(), capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming after epoch {epoch}" in (job / "train.log").read_text()
    assert len(json.loads((job / "history.json").read_text())["loss"]) == EPOCHS
    assert (job / "metrics.json").is_file()


@pytest.mark.timeout(600)
def test_sigkill_of_rank_0_under_mpirun_stops_both_and_keeps_the_checkpoint(packed_synthetic, tmp_path):
    job = tmp_path / "run" / "official"
    err = signal_one_rank("mpi", 0, signal.SIGKILL, packed_synthetic, tmp_path, job)
    assert re.search(r"process rank 0 .* exited on signal 9", err), err[-3000:]  # mpirun names it
    assert [line for line in err.splitlines() if "microcal-hpc: error:" in line] == []  # rank 1 ends quietly
    assert_checkpoint_intact(job)


@pytest.mark.timeout(600)
def test_a_failing_rank_ends_the_job_with_one_line_and_its_traceback_in_its_log(packed_synthetic, tmp_path):
    job = tmp_path / "run" / "official"
    proc = slow_train("mpi", packed_synthetic, tmp_path, FAIL_RANK="1")
    try:
        _, err = proc.communicate(timeout=400)  # a hang ends in TimeoutExpired
    finally:
        stop(proc)
    ended = time.time()
    assert proc.returncode != 0
    log = job / "logs" / "rank-1.log"
    ours = [line for line in err.splitlines() if "microcal-hpc: error:" in line]
    assert len(ours) == 1 and ours[0].endswith(
        "microcal-hpc: error: rank 1 of 2 failed: RuntimeError: failure injected by tests/slow_ranks.py on rank 1 "
        f"after step 0 (traceback in {log})"), err[-3000:]
    text = log.read_text()
    failed = re.search(r"^(\S+ \S+) ERROR .*rank 1 of 2 failed; aborting all ranks", text, re.M)
    assert failed and "Traceback" in text and "RuntimeError: failure injected" in text, text[-2000:]
    after = ended - time.mktime(time.strptime(failed.group(1), "%Y-%m-%d %H:%M:%S"))
    assert after < STOP_SECONDS, f"the launcher ended {after:.0f} s after rank 1 failed"
    assert "Traceback" not in err
    assert not (job / "metrics.json").exists()
