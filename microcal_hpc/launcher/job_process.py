"""One local job as an operating-system process, started by the local executor.

The process runs ``python -m microcal_hpc.launcher.worker --job KEY`` (the spec arrives pickled on
its stdin, so nothing is left on disk), with stdout/stderr appended to ``RUN/logs/local/KEY.out|.err``.
A single-process job of a kind that declares modules to preload (``JobKind.preload``: TensorFlow for
the CNN jobs) is forked instead from the launcher's fork server, which has imported them already
(:mod:`~microcal_hpc.launcher.forkserver`; :func:`run_forked`), and is set up the same way. Either way it is:

- pinned to the cores of its :class:`~microcal_hpc.launcher.cores.Allotment` (before the job's code
  runs, so every library sees them), with ``CUDA_VISIBLE_DEVICES`` set to its GPUs (empty: none);
- in a session and process group of its own, so that a Ctrl-C in the terminal reaches only the
  launcher, which then stops the jobs in order;
- with a parent-death signal (Linux ``PR_SET_PDEATHSIG``): when the launcher dies, even by SIGKILL,
  the job gets SIGTERM and stops (the worker passes the signal on to its process group). A forked
  job's parent is the fork server, which ends with the launcher.

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

from microcal_hpc.atomic import SignalReceived, process_alive, signal_name
from microcal_hpc.errors import MicrocalError
from microcal_hpc.launcher import forkserver, records
from microcal_hpc.launcher.cores import Allotment
from microcal_hpc.launcher.jobkinds import KINDS
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


def _arm(cpus: tuple[int, ...], prctl: Optional[Callable[..., int]], parent_pid: int, launcher_pid: int) -> None:
    """Pin this new job process to its cores and arm the death signal (SIGTERM when ``parent_pid``,
    the launcher or the fork server, ends); end at once if the parent or the launcher is gone already."""
    os.sched_setaffinity(0, cpus)
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid or (launcher_pid != parent_pid and not process_alive(launcher_pid)):
        os._exit(128 + signal.SIGTERM)


def _child_setup(cpus: tuple[int, ...], launcher_pid: int) -> Callable[[], None]:
    """What the launcher's child does before it executes Python: :func:`_arm`."""
    prctl = _prctl()  # looked up here, in the launcher, not after the fork

    def setup() -> None:
        _arm(cpus, prctl, launcher_pid, launcher_pid)

    return setup


def job_environment(allotment: Allotment) -> dict[str, str]:
    """The job's environment: the launcher's, with its GPUs and an MPI that keeps to its cores."""
    env = dict(os.environ)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(allotment.gpus)
    # Open MPI binds ranks to cores of its own choosing, ignoring the affinity mask; unbound, the ranks
    # inherit the job's cores and the worker gives each rank its share of them (cores.rank_share)
    env["OMPI_MCA_hwloc_base_binding_policy"] = "none"
    return env


def preloaded_modules(spec: JobSpec) -> tuple[str, ...]:
    """The modules the fork server imports for ``spec`` (``JobKind.preload``, and the worker's); () when
    the job runs as a fresh process (a kind without them, or several tasks: mpiexec starts those)."""
    preload = KINDS[spec.kind].preload if spec.tasks == 1 else ()
    return preload + ("microcal_hpc.launcher.worker",) if preload else ()


class JobProcess:
    """A running local job: its process (``subprocess.Popen``, or a :class:`~microcal_hpc.launcher.
    forkserver.ForkedProcess`; pid = process group id) and its log files."""

    def __init__(self, spec: JobSpec, allotment: Allotment) -> None:
        self.spec = spec
        self.allotment = allotment
        self.out_path, self.err_path = log_paths(spec.run_dir, spec.key)
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        forked = bool(preloaded_modules(spec))
        with open(self.err_path, "ab") as err:
            err.write(f"==== {records.now()} {spec.key}: started by launcher pid {os.getpid()} on "
                      f"{allotment.describe()}{' (forked from its fork server)' if forked else ''}\n".encode())
        self.proc = self._fork() if forked else self._spawn()

    def _fork(self) -> forkserver.ForkedProcess:
        """The job forked from the fork server (:func:`run_forked` sets it up in the child)."""
        spec = self.spec
        return forkserver.ForkedProcess(
            run_forked, (spec.key, pickle.dumps(spec), self.allotment.cpus, job_environment(self.allotment),
                         os.getcwd(), str(self.out_path), str(self.err_path), os.getpid()), spec.key)

    def _spawn(self) -> subprocess.Popen:
        """The job as a fresh Python process (``python -m microcal_hpc.launcher.worker``), spec on stdin."""
        with open(self.out_path, "ab") as out, open(self.err_path, "ab") as err:
            proc = subprocess.Popen(
                [sys.executable, "-u", "-m", "microcal_hpc.launcher.worker", "--job", self.spec.key],
                stdin=subprocess.PIPE, stdout=out, stderr=err, env=job_environment(self.allotment),
                start_new_session=True, preexec_fn=_child_setup(self.allotment.cpus, os.getpid()))
        self._send_spec(proc.stdin)
        return proc

    @property
    def sentinel(self) -> Optional[int]:
        """A file descriptor readable once a forked job has ended (None: SIGCHLD tells the launcher)."""
        return getattr(self.proc, "sentinel", None)

    def _send_spec(self, stdin: Optional[IO[bytes]]) -> None:
        assert stdin is not None
        try:
            stdin.write(pickle.dumps(self.spec))
            stdin.close()
        except BrokenPipeError:  # the child ended at once; its exit code and log say why
            pass

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> Optional[int]:
        """The exit code (negative: killed by that signal), or None while it runs; once it has ended,
        whatever it left in its process group is killed."""
        rc = self.proc.poll()
        if rc is not None:
            self._signal_group(signal.SIGKILL)
        return rc

    def stop(self) -> None:
        """Ask the job to stop (SIGTERM): it records INTERRUPTED, removes its temporary files and passes
        the signal on to its process group (mpiexec, worker pools)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL to the job's whole process group."""
        self._signal_group(signal.SIGKILL)

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


# ----------------------------------------------------------------------------------------------
# inside the job process (python -m microcal_hpc.launcher.worker --job KEY, or forked: run_forked)


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


def run_job(key: str, spec_bytes: bytes) -> int:
    """A whole job started by the local executor (its spec pickled); return the exit code.

    Expected failures and stop signals end with one line on stderr (the job's log); anything else
    with its traceback."""
    _stop_on_signals()
    try:
        from microcal_hpc.launcher.worker import run_spec

        run_spec(pickle.loads(spec_bytes))
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


def _redirect_output(out_path: str, err_path: str) -> None:
    """stdout and stderr (the file descriptors, and Python's streams, unbuffered) to the job's logs."""
    for fd, path in ((1, out_path), (2, err_path)):
        log = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, fd)
        os.close(log)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)


def _size_thread_pools(cores: int) -> None:
    """BLAS and OpenMP libraries the fork server loaded sized their thread pools to the server's cores:
    give them the job's, as a fresh process pinned to its cores would (libraries loaded later look
    at the cores themselves; TensorFlow does when the job runs its first operation)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=cores)


def run_forked(key: str, spec_bytes: bytes, cpus: tuple[int, ...], env: dict[str, str], cwd: str, out_path: str,
               err_path: str, launcher_pid: int) -> None:
    """A whole job forked from the fork server: set up as the launcher sets up a fresh job process
    (session, cores, death signal, logs, environment, working folder), then :func:`run_job`."""
    server_pid = os.getppid()
    os.setsid()
    forkserver.leave_server()
    _arm(cpus, _prctl(), server_pid, launcher_pid)
    _size_thread_pools(len(cpus))
    _redirect_output(out_path, err_path)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    sys.exit(run_job(key, spec_bytes))
