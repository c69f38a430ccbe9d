"""A run directory has one launcher and a job runs in one process at a time: locks held by real processes.

Another process takes the lock and holds it until its stdin closes (or it is SIGKILLed); this process
tries to take it. The kernel releases a dead holder's lock, so SIGKILL never leaves a stale lock.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from cli_helpers import cli_env
from microcal_hpc.config import load_config
from microcal_hpc.launcher import locks, records, worker
from microcal_hpc.launcher.plan import build_plan

HOLDER = """
import sys
from microcal_hpc.launcher import locks
held = locks.hold_run_dir(sys.argv[2]) if sys.argv[1] == "run" else locks.hold_job(sys.argv[2], sys.argv[3], 0)
with held:
    print("held", flush=True)
    sys.stdin.read()
"""


def hold(kind: str, *args: str) -> subprocess.Popen:
    """Another process holding a lock ("run" RUN_DIR, or "job" RUN_DIR KEY) until its stdin closes."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, kind, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env=cli_env())
    assert proc.stdout.readline().strip() == "held"
    return proc


def release(proc: subprocess.Popen) -> None:
    proc.stdin.close()
    proc.wait(timeout=30)


def test_a_second_launcher_is_refused_naming_the_holder_until_it_dies(tmp_path):
    run = tmp_path / "run"
    holder = hold("run", str(run))
    try:
        with pytest.raises(locks.Busy) as refused:
            with locks.hold_run_dir(run):
                pass
        message = str(refused.value)
        assert f"pid {holder.pid} on host {socket.gethostname()}" in message and str(run) in message
        assert "\n" not in message
    finally:
        holder.kill()  # SIGKILL: the kernel releases its lock
        holder.wait(timeout=30)
    with locks.hold_run_dir(run):
        assert json.loads((run / locks.RUN_DIR_LOCK).read_text())["pid"] == os.getpid()
    assert (run / locks.RUN_DIR_LOCK).read_text() == ""  # emptied on release


def test_a_job_waits_for_an_earlier_process_of_itself_then_refuses(tmp_path):
    holder = hold("job", str(tmp_path), "cnn-official")
    try:
        t0 = time.monotonic()
        with pytest.raises(locks.Busy, match=f"cnn-official: another process of this job is still running "
                                             f"\\(pid {holder.pid} on host"):
            with locks.hold_job(tmp_path, "cnn-official", wait_s=1.0):
                pass
        assert time.monotonic() - t0 >= 1.0
        with locks.hold_job(tmp_path, "cnn-fold-0", wait_s=0):  # other jobs are not affected
            pass
    finally:
        release(holder)
    with locks.hold_job(tmp_path, "cnn-official", wait_s=0):
        pass


def test_a_job_starts_once_the_earlier_process_has_ended(tmp_path):
    holder = hold("job", str(tmp_path), "pack")
    threading.Timer(1.0, holder.kill).start()
    t0 = time.monotonic()
    with locks.hold_job(tmp_path, "pack", wait_s=30):
        waited = time.monotonic() - t0
    holder.wait(timeout=30)
    assert 0.5 <= waited < 30


def test_run_spec_never_starts_a_job_whose_earlier_process_is_alive(tmp_path, make_tree, monkeypatch):
    root = make_tree(counts={"Train": (4, 4), "Test": (2, 2)})
    cfg = load_config(overrides=[f"data.root={root}"])
    spec = build_plan(cfg, tmp_path / "run").get("pack")
    records.update_record(spec.run_dir, "pack", state="RUNNING", pid=12345, host="elsewhere")
    monkeypatch.setattr(worker, "JOB_LOCK_WAIT_S", 0.5)
    holder = hold("job", spec.run_dir, "pack")
    try:
        with pytest.raises(locks.Busy, match=f"pid {holder.pid}"):
            worker.run_spec(spec)
    finally:
        release(holder)
    assert not os.path.exists(spec.outputs[0])  # the job function never ran
    rec = records.read_record(spec.run_dir, "pack")
    assert (rec["state"], rec["pid"], rec["host"]) == ("RUNNING", 12345, "elsewhere")  # and the record is not touched
    worker.run_spec(spec)  # the holder is gone: it runs
    assert os.path.exists(spec.outputs[0]) and records.read_record(spec.run_dir, "pack")["state"] == "COMPLETED"


def test_without_flock_the_holders_name_decides(tmp_path, monkeypatch):
    """Where the file system refuses flock, a lock naming a live process on this host is held."""
    real_flock = locks.fcntl.flock

    def no_flock(fd, op):
        if op & locks.fcntl.LOCK_EX:
            raise OSError(errno.ENOLCK, "No locks available")
        return real_flock(fd, op)

    monkeypatch.setattr(locks.fcntl, "flock", no_flock)
    sleeper = subprocess.Popen(["sleep", "60"])
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"host": socket.gethostname(), "pid": sleeper.pid}))
    try:
        assert not locks.free(path)
    finally:
        sleeper.send_signal(signal.SIGKILL)
        sleeper.wait()
    assert locks.free(path)  # its holder is dead
