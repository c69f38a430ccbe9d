"""One local job as an operating-system process, started by the local executor.

The process runs ``python -m microcal_hpc.launcher.worker --job KEY`` (the spec arrives pickled on
its stdin, so nothing is left on disk), with stdout/stderr appended to ``RUN/logs/local/KEY.out|.err``.
It is started:

- pinned to the cores of its :class:`~microcal_hpc.launcher.cores.Allotment` (before Python starts,
  so every library sees them), with ``CUDA_VISIBLE_DEVICES`` set to its GPUs (empty: none);
- in a session and process group of its own, so that a Ctrl-C in the terminal reaches only the
  launcher, which then stops the jobs in order;
- with a parent-death signal (Linux ``PR_SET_PDEATHSIG``): when the launcher dies, even by SIGKILL,
  the job gets SIGTERM and stops (the worker passes the signal on to its process group).

:meth:`JobProcess.stop` sends SIGTERM to the job; :meth:`kill` sends SIGKILL to its whole process group.
Inside the job, :func:`run_job` turns SIGTERM/SIGINT into an orderly stop: the signal is passed on to
the job's process group (mpiexec ends its ranks), then the job unwinds (temporary outputs removed,
record INTERRUPTED) and exits with 128 + the signal and one line on stderr.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import IO, Any, Callable, Optional

from microcal_hpc.atomic import SignalReceived, signal_name
from microcal_hpc.errors import MicrocalError
from microcal_hpc.launcher import records
from microcal_hpc.launcher.cores import Allotment
from microcal_hpc.launcher.plan import JobSpec

PR_SET_PDEATHSIG = 1  # linux/prctl.h
GROUP_EXIT_WAIT_S = 10.0  # how long a stopped job waits for the rest of its process group (mpiexec ...) to end


def log_paths(run_dir: str | os.PathLike, key: str) -> tuple[Path, Path]:
    """(stdout, stderr) files of a local job: ``RUN/logs/local/<key>.out`` and ``.err`` (appended)."""
    folder = Path(run_dir) / "logs" / "local"
    return folder / f"{key}.out", folder / f"{key}.err"


def _prctl() -> Optional[Callable[..., int]]:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux: jobs then outlive a killed launcher
        return None


def _child_setup(cpus: tuple[int, ...], launcher_pid: int) -> Callable[[], None]:
    """What the forked child does before it executes Python: pin itself, arm the death signal."""
    prctl = _prctl()  # looked up here, in the launcher, not after the fork

    def setup() -> None:
        os.sched_setaffinity(0, cpus)
        if prctl is not None:
            prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != launcher_pid:  # the launcher died before the signal was armed
            os._exit(128 + signal.SIGTERM)

    return setup


def job_environment(allotment: Allotment) -> dict[str, str]:
    """The job's environment: the launcher's, with its GPUs and an MPI that keeps to its cores."""
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(allotment.gpus)
    # Open MPI binds ranks to cores of its own choosing, ignoring the affinity mask; unbound, the ranks
    # inherit the job's cores and the worker gives each rank its share of them (cores.rank_share)
    env["OMPI_MCA_hwloc_base_binding_policy"] = "none"
    return env


class JobProcess:
    """A running local job: its ``subprocess.Popen`` (pid = process group id) and its log files."""

    def __init__(self, spec: JobSpec, allotment: Allotment) -> None:
        self.spec = spec
        self.allotment = allotment
        self.out_path, self.err_path = log_paths(spec.run_dir, spec.key)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            err.write(f"==== {records.now()} {spec.key}: started by launcher pid {os.getpid()} on "
                      f"{allotment.describe()}\n".encode())
            err.flush()
            self.popen = subprocess.Popen(
                [sys.executable, "-u", "-m", "microcal_hpc.launcher.worker", "--job", spec.key],
                stdin=subprocess.PIPE, stdout=out, stderr=err, env=job_environment(allotment),
                start_new_session=True, preexec_fn=_child_setup(allotment.cpus, os.getpid()))
        self._send_spec(self.popen.stdin)

    def _send_spec(self, stdin: Optional[IO[bytes]]) -> None:
        assert stdin is not None
        try:
            stdin.write(pickle.dumps(self.spec))
            stdin.close()
        except BrokenPipeError:  # the child ended at once; its exit code and log say why
            pass

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> Optional[int]:
        """The exit code (negative: killed by that signal), or None while it runs; once it has ended,
        whatever it left in its process group is killed."""
        rc = self.popen.poll()
        if rc is not None:
            self._signal_group(signal.SIGKILL)
        return rc

    def stop(self) -> None:
        """Ask the job to stop (SIGTERM): it records INTERRUPTED, removes its temporary files and passes
        the signal on to its process group (mpiexec, worker pools)."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the job's whole process group."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# ----------------------------------------------------------------------------------------------
# inside the job process (python -m microcal_hpc.launcher.worker --job KEY)


class JobSignal(SignalReceived):
    """A local job was told to stop by a signal (its launcher stopped it, or died)."""

    def __str__(self) -> str:
        return f"stopped by {signal_name(self.signum)}"


def _group_members() -> list[int]:
    """Live processes of this process group other than this one (from /proc; [] where there is none)."""
    me, group, out = os.getpid(), os.getpgrp(), []
    for entry in os.scandir("/proc") if os.path.isdir("/proc") else []:
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == group and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT stop a local job in order: the signal is passed on to the job's process group
    (mpiexec ends its ranks, worker pools end), which gets ``GROUP_EXIT_WAIT_S`` to end, then
    :class:`JobSignal` unwinds the job (temporary outputs removed, record INTERRUPTED)."""

    def handler(signum: int, frame: Any) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)  # once is enough; the launcher escalates with SIGKILL
        try:
            os.killpg(os.getpgrp(), signum)
        except OSError:
            pass
        deadline = time.monotonic() + GROUP_EXIT_WAIT_S
        while _group_members() and time.monotonic() < deadline:
            time.sleep(0.1)
        raise JobSignal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, handler)


def run_job(key: str) -> int:
    """A whole job started by the local executor (spec pickled on stdin); return the exit code.

    Expected failures and stop signals end with one line on stderr (the job's log); anything else
    with its traceback."""
    _stop_on_signals()
    try:
        from microcal_hpc.launcher.worker import run_spec

        run_spec(pickle.loads(sys.stdin.buffer.read()))
    except JobSignal as e:
        print(f"[microcal-hpc] {key}: {e}", file=sys.stderr, flush=True)
        return 128 + e.signum
    except MicrocalError as e:
        print(f"[microcal-hpc] {key}: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except Exception:
        traceback.print_exc()
        return 1
    return 0
