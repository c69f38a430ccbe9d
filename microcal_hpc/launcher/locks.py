"""Who owns a run directory and who runs a job: exclusive ``flock`` locks that name their holder.

- ``RUN/launcher.lock``: held by the ``submit`` process for as long as it plans, submits or runs the
  campaign (:func:`hold_run_dir`). A second ``submit`` on the same run directory refuses at once with
  one line naming the holder's host and pid (it does not wait: a campaign can run for hours).
- ``RUN/jobs/<key>.lock``: held by the process that runs one job, whichever executor started it
  (:func:`hold_job`, called by ``worker.run_spec``). A second process of the same job waits a bounded
  time for the first to end, then refuses: a job is never run twice at once.

The kernel releases a lock when its process ends, even by SIGKILL, so a lock is never stale. While
held, the file holds one JSON line: host, pid, start time and command line of the holder (emptied on
release). Across nodes the locks hold where the shared file system supports ``flock`` across clients
(NFSv4, Lustre mounted with ``flock``); where it refuses ``flock``, the JSON line alone decides: a
holder on this host whose pid is alive keeps the lock.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from microcal_hpc.atomic import process_alive
from microcal_hpc.errors import MicrocalError, OutputError, os_reason

RUN_DIR_LOCK = "launcher.lock"
_BUSY = (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK)


class Busy(MicrocalError):
    """Another live process holds the lock (another launcher, or another process of the same job)."""


def job_lock_path(run_dir: str | os.PathLike, key: str) -> Path:
    return Path(run_dir) / "jobs" / f"{key}.lock"


def pid_alive(pid: Any) -> bool:
    """True when process ``pid`` (a record's value: None or a string is no process) runs on this host
    (:func:`microcal_hpc.atomic.process_alive`)."""
    try:
        return process_alive(int(pid))
    except (TypeError, ValueError):
        return False


def _me() -> dict[str, Any]:
    from microcal_hpc.launcher.records import now

    return {"host": socket.gethostname(), "pid": os.getpid(), "since": now(), "command": " ".join(sys.argv)[:300]}


def read_holder(path: str | os.PathLike) -> dict[str, Any]:
    """The holder a lock file names ({} when it names none or cannot be read)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def describe(holder: dict[str, Any]) -> str:
    """``pid 123 on host node1, since 2024-05-01T10:00:00+02:00`` (what is known of it)."""
    if not holder.get("pid"):
        return "a process that has not written its name yet"
    text = f"pid {holder['pid']} on host {holder.get('host', '?')}"
    return text + (f", since {holder['since']}" if holder.get("since") else "")


class FileLock:
    """One exclusive lock on ``path`` (created with its folder); :meth:`acquire` never blocks."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: Optional[int] = None

    def acquire(self) -> bool:
        """Take the lock and write this process's name into it; False when a live process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in _BUSY or self._holder_alive():
                os.close(fd)
                return False
            # no flock on this file system: the holder's name decides (same host only)
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_me()) + "\n").encode(), 0)
        return True

    def _holder_alive(self) -> bool:
        holder = read_holder(self.path)
        return holder.get("host") == socket.gethostname() and pid_alive(holder.get("pid"))

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the last descriptor releases the flock
        self._fd = None

    def holder(self) -> dict[str, Any]:
        return read_holder(self.path)


def free(path: str | os.PathLike) -> bool:
    """True when no live process holds the lock at ``path`` (probes by taking and releasing it)."""
    lock = FileLock(path)
    if not lock.acquire():
        return False
    lock.release()
    return True


def wait_free(path: str | os.PathLike, timeout_s: float, stop: Callable[[], bool] = lambda: False,
              poll_s: float = 0.5) -> bool:
    """Wait until the lock at ``path`` is free (True), ``timeout_s`` passes or ``stop()`` says so (False)."""
    deadline = time.monotonic() + timeout_s
    while not free(path):
        if time.monotonic() >= deadline or stop():
            return False
        time.sleep(poll_s)
    return True


def _lock_error(path: Path, e: OSError) -> OutputError:
    """A lock file that cannot be created (read-only file system, a file where a folder should be): exit 1."""
    return OutputError(f"{path}: cannot lock: {os_reason(e)}")


@contextlib.contextmanager
def hold_run_dir(run_dir: str | os.PathLike) -> Iterator[FileLock]:
    """Own ``run_dir`` while the block runs; raise :class:`Busy` (one line) when a live launcher owns it."""
    lock = FileLock(Path(run_dir) / RUN_DIR_LOCK)
    try:
        taken = lock.acquire()
    except OSError as e:
        raise _lock_error(lock.path, e) from None
    if not taken:
        raise Busy(f"{run_dir}: another launcher is working on this run directory ({describe(lock.holder())}); "
                   "wait for it to end or stop it, then submit again")
    try:
        yield lock
    finally:
        lock.release()


@contextlib.contextmanager
def hold_job(run_dir: str | os.PathLike, key: str, wait_s: float) -> Iterator[FileLock]:
    """Hold the lock of job ``key`` while the block runs, waiting up to ``wait_s`` for an earlier process
    of the same job to end; raise :class:`Busy` when it is still alive then."""
    lock = FileLock(job_lock_path(run_dir, key))
    deadline = time.monotonic() + wait_s
    try:
        while not lock.acquire():
            if time.monotonic() >= deadline:
                raise Busy(f"{key}: another process of this job is still running ({describe(lock.holder())}); "
                           "not started twice")
            time.sleep(0.5)
    except OSError as e:
        raise _lock_error(lock.path, e) from None
    try:
        yield lock
    finally:
        lock.release()
