"""A signal to one rank of the MPI wavelet-features job ends every rank: real `mpiexec -n 2`, real signals.

The ranks run through tests/slow_ranks.py, which holds each rank in its loop over pieces (it sleeps before
reading each one) so that the signal lands while both ranks are working; the job itself is unchanged.
Checked for SIGTERM, SIGINT and SIGKILL, to rank 0 (which holds the temporary output) and rank 1, through
the command line and through the launcher's mpiexec wrapper (the local executor's path): every rank and
mpiexec end within 30 s, the exit is non-zero, the signalled rank says so in one line (SIGKILL: mpiexec
does), and no temporary output is left, or, when rank 0 itself was killed, the next run removes it.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cli_helpers import cli_env, poll, wait_while_running
from microcal_hpc.config import Config
from microcal_hpc.launcher import records
from microcal_hpc.launcher.plan import JobSpec
# at collection, before any test imports TensorFlow: submitit's import reconfigures logging, which closes
# absl's handler, whose stream would then be pytest's captured stderr
from microcal_hpc.launcher.worker import run_spec

pytestmark = [pytest.mark.mpi, pytest.mark.slow]

TESTS = Path(__file__).resolve().parent
STOP_SECONDS = 30  # every rank and mpiexec must be gone this long after the signal


def mpi_env(**extra: str) -> dict:
    env = cli_env()
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               PYTHONPATH=f"{env['PYTHONPATH']}{os.pathsep}{TESTS}", **extra)
    return env


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (of all its threads)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def rank_processes(launcher_pid: int) -> dict[int, int]:
    """{rank: pid} of the MPI ranks below a launcher process (found by their OMPI_COMM_WORLD_RANK)."""
    found, todo = {}, [launcher_pid]
    while todo:
        pid = todo.pop()
        for child in children(pid):
            try:
                env = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            rank = [e.split(b"=", 1)[1] for e in env if e.startswith(b"OMPI_COMM_WORLD_RANK=")]
            if rank:
                found[int(rank[0])] = child
            else:
                todo.append(child)
    return found


def wait_until_working(ready: Path, proc: subprocess.Popen | None = None, timeout: float = 180) -> None:
    wait_while_running(proc, lambda: (ready / "rank-0").exists() and (ready / "rank-1").exists(), timeout, 0.05,
                       "the ranks never started working",
                       lambda p: p.stderr.read() if p.stderr else "the job ended early")


def temporaries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def gone(pids, within: float = 0.0) -> bool:
    """True once none of ``pids`` is alive, waiting up to ``within`` seconds (a rank its launcher has just
    told to stop may still be on its way out when the launcher has ended)."""
    from microcal_hpc.atomic import process_alive

    return poll(lambda: not any(process_alive(p) for p in pids), within, 0.1)


def signal_and_wait(proc: subprocess.Popen, pid: int, signum: int) -> tuple[float, str]:
    """Send ``signum`` to ``pid`` (one rank of ``proc``), wait for ``proc`` to end: (seconds it took, its stderr)."""
    t0 = time.monotonic()
    os.kill(pid, signum)
    _, err = proc.communicate(timeout=STOP_SECONDS + 30)
    return time.monotonic() - t0, err


def stop(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s whole session if it is still running (a test that failed before it ended)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("rank, signum", [(1, signal.SIGTERM), (0, signal.SIGINT), (0, signal.SIGKILL)],
                         ids=["rank1-SIGTERM", "rank0-SIGINT", "rank0-SIGKILL"])
def test_a_signal_to_one_rank_ends_every_rank(packed_synthetic, tmp_path, rank, signum):
    out = tmp_path / "out" / "features.h5"
    cmd = [shutil.which("mpiexec"), "-n", "2", sys.executable, str(TESTS / "slow_ranks.py"), str(tmp_path / "ready"),
           "--", "wavelet-features", "--data", str(packed_synthetic), "--out", str(out), "--chunk-size", "2"]
    proc = subprocess.Popen(cmd, env=mpi_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_until_working(tmp_path / "ready", proc)
        ranks = rank_processes(proc.pid)
        assert sorted(ranks) == [0, 1]
        assert len(temporaries(out.parent)) == 1  # rank 0 has created the output under a temporary name
        seconds, err = signal_and_wait(proc, ranks[rank], signum)
    finally:
        stop(proc)
    assert seconds < STOP_SECONDS and gone(ranks.values(), STOP_SECONDS - seconds), \
        f"ended {seconds:.0f} s after the signal\n{err}"
    assert proc.returncode == 128 + signum, err
    name = signal.Signals(signum).name
    ours = [line for line in err.splitlines() if line.startswith("microcal-hpc")]
    if signum == signal.SIGKILL:  # no last word from a killed process: mpiexec names it
        assert ours == [] and f"process rank {rank} " in err and "signal 9" in err, err
    else:
        assert ours == [f"microcal-hpc: error: rank {rank} of 2 stopped by {name}; every rank stops, {out} not "
                        f"written"], err
    assert "Traceback" not in err and not out.exists()
    if signum == signal.SIGKILL and rank == 0:  # nobody could remove it: the next run does
        [stale] = temporaries(out.parent)
        rerun = subprocess.run([sys.executable, "-m", "jobs", "wavelet-features", "--data", str(packed_synthetic),
                                "--out", str(out)], env=mpi_env(), capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert f"removed {out.parent / stale}: a temporary output left by process {ranks[0]}, which is gone" \
            in rerun.stderr
        assert out.is_file()
    assert temporaries(out.parent) == []


@pytest.mark.timeout(300)
def test_the_launcher_reports_a_rank_stopped_by_a_signal(packed_synthetic, tmp_path, monkeypatch, capfd):
    """The local executor's path: run_spec re-launches the job under mpiexec (worker._run_under_mpiexec)."""
    for key, value in mpi_env(SLOW_READY_DIR=str(tmp_path / "ready")).items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "run" / "wavelet" / "features.h5"
    cfg = Config()
    cfg.wavelet.chunk_size = 2
    spec = JobSpec(key="wavelet-features", stage="wavelet", name="features", kind="wavelet-features",
                   job_type="wavelet_features",
                   function="slow_ranks:features_job", config=cfg, args=(str(packed_synthetic), str(out)),
                   outputs=(str(out),), tasks=2, run_dir=str(tmp_path / "run"))
    failure: list[BaseException] = []

    def launch():
        try:
            run_spec(spec)
        except BaseException as e:  # noqa: BLE001 - the test inspects it
            failure.append(e)

    launcher = threading.Thread(target=launch)
    launcher.start()
    try:
        wait_until_working(tmp_path / "ready")
        [mpiexec] = [p for p in children(os.getpid()) if Path(f"/proc/{p}/comm").read_text().strip() in
                     ("mpiexec", "mpirun", "orterun")]
        ranks = rank_processes(mpiexec)
        t0 = time.monotonic()
        os.kill(ranks[1], signal.SIGTERM)
        launcher.join(STOP_SECONDS + 30)
        seconds = time.monotonic() - t0
    finally:
        if launcher.is_alive():
            for p in children(os.getpid()):
                os.kill(p, signal.SIGKILL)
            launcher.join()
    assert seconds < STOP_SECONDS and gone(ranks.values(), STOP_SECONDS - seconds)
    message = "wavelet-features: mpiexec -n 2 exited with code 143 (a rank was stopped by SIGTERM; that rank's " \
              "line is in this job's stderr log)"
    assert [str(e) for e in failure] == [message]
    record = records.read_record(tmp_path / "run", "wavelet-features")
    assert record["state"] == "FAILED" and record["error"] == f"RuntimeError: {message}"
    err = capfd.readouterr().err
    assert f"microcal-hpc: error: rank 1 of 2 stopped by SIGTERM; every rank stops, {out} not written" in err
    assert "Traceback" not in err
    assert not out.exists() and temporaries(out.parent) == []


@pytest.mark.timeout(300)
def test_a_damaged_image_in_one_ranks_slice_is_named(packed_synthetic, tmp_path):
    """Pixel verification in the piece reader (on by default for a small file): rank 1 reads the Test images."""
    import h5py

    bad = tmp_path / "damaged.h5"
    shutil.copy(packed_synthetic, bad)  # without its checksum file: the pixel hashes must catch it
    with h5py.File(bad, "r") as f:
        offset = f["test/images"].id.get_chunk_info(0).byte_offset + 5 * 60 * 60 + 100
        image_id = f["test/ids"].asstr()[5]
    with open(bad, "r+b") as fh:
        fh.seek(offset)
        fh.write(b"\xff" * 16)
    out = tmp_path / "features.h5"
    proc = subprocess.run([shutil.which("mpiexec"), "-n", "2", sys.executable, "-m", "jobs", "wavelet-features",
                           "--data", str(bad), "--out", str(out)], env=mpi_env(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert lines == [f"microcal-hpc wavelet-features: error: {bad}: damaged packed data file: image 5 of test "
                     f"({image_id}) does not match its recorded pixel hash; run `microcal-hpc pack` again "
                     f"(on rank 1 of 2)"], proc.stderr
    assert not out.exists() and temporaries(tmp_path) == []
