"""A process that has already imported what local jobs use, and forks them: the local executor's fork server.

Importing TensorFlow takes 2-3 s, in every CNN job, and a job of one process cannot share it with the
next. A job kind declares the modules it imports (``JobKind.preload``); the local executor starts
:mod:`multiprocessing`'s fork server once, with those modules imported (:func:`start`: it returns at
once, the server imports them while the first jobs run), and forks each single-process job of such a
kind from it (:class:`ForkedProcess`): the job starts with TensorFlow imported but not yet initialised.
TensorFlow's runtime (thread pools, devices) starts at the job's first operation, after the job has
been pinned to its cores, so a forked job computes exactly what a fresh process computes.

The forked job's parent is the server, not the launcher. The server ends when the launcher does (it
watches a pipe that only the launcher keeps open: :func:`leave_server` closes a job's copy), and a
job gets SIGTERM when the server ends (``job_process``), so a job still dies with its launcher.
"""
from __future__ import annotations

import multiprocessing
import os
from multiprocessing import forkserver as _mp_forkserver
from typing import Any, Callable, Iterable, Optional

_CONTEXT = multiprocessing.get_context("forkserver")


def start(modules: Iterable[str]) -> None:
    """Start the fork server with ``modules`` imported, unless it runs already (then it keeps what it
    has imported; a job imports anything else itself). Returns at once."""
    modules = sorted(set(modules))
    if not modules:
        return
    _CONTEXT.set_forkserver_preload(modules)
    _mp_forkserver.ensure_running()


def leave_server() -> None:
    """In a forked job: close the job's copy of the pipe that keeps the server alive, so that the
    server ends with the launcher, not with the last of its jobs."""
    server = _mp_forkserver._forkserver
    fd = getattr(server, "_forkserver_alive_fd", None)
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None


class ForkedProcess:
    """A job forked from the server, running ``target(*args)``; the part of ``subprocess.Popen`` the
    local executor uses (``pid``, ``poll``, ``send_signal``) and a file descriptor that becomes readable
    when the job has ended (``sentinel``: the job is not the launcher's child, so no SIGCHLD comes)."""

    def __init__(self, target: Callable[..., Any], args: tuple, name: str) -> None:
        self._process = _CONTEXT.Process(target=target, args=args, name=name)
        self._process.start()
        self.pid: int = self._process.pid
        self.sentinel: Optional[int] = self._process.sentinel
        self.returncode: Optional[int] = None

    def poll(self) -> Optional[int]:
        """The exit code (negative: killed by that signal), or None while it runs."""
        if self.returncode is None:
            code = self._process.exitcode
            if code is not None:
                self.returncode = code
                self._process.close()
                self.sentinel = None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass
