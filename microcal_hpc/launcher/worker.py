"""Run one :class:`~microcal_hpc.launcher.plan.JobSpec` inside a job (submitit, mpiexec or in-process).

``run_spec(spec)`` imports the job function, calls ``function(config, *args)`` and keeps the job's
record up to date (RUNNING, then COMPLETED, FAILED or INTERRUPTED, with host, pid, times, the cores it
may run on and ``CUDA_VISIBLE_DEVICES``). Only rank 0 of a multi-task (MPI) job writes the record.

A job is never run twice at once: rank 0 holds the job's lock (``RUN/jobs/<key>.lock``,
:mod:`~microcal_hpc.launcher.locks`) while it runs, whichever executor started it, and a second process
of the same job waits up to ``JOB_LOCK_WAIT_S`` for the first to end, then fails without touching the
record.

A spec with several tasks started as ONE process (local executor) re-launches itself under
``mpiexec -n TASKS`` so that the wavelet features job is MPI-parallel locally as under ``srun``.

Command line (what the local executor and ``mpiexec`` start)::

    python -m microcal_hpc.launcher.worker --job KEY    a whole job; its spec pickled on stdin
    python -m microcal_hpc.launcher.worker SPEC.pkl     one MPI rank of a spec (under mpiexec)
"""
from __future__ import annotations

import importlib
import os
import pickle
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from microcal_hpc.atomic import SignalReceived
from microcal_hpc.errors import MicrocalError, Terminated
from microcal_hpc.launcher import locks, records
from microcal_hpc.launcher.plan import JobSpec

JOB_LOCK_WAIT_S = 60.0  # how long a job waits for an earlier process of itself to end


def _world() -> tuple[int, int]:
    """(rank, size) as set by the launcher of this process (srun, mpiexec), without importing MPI."""
    from microcal_hpc.distributed import launched_world_size, launcher_rank

    return launcher_rank(), launched_world_size()


def _job_ids() -> dict[str, Any]:
    """Job id and array index of the current SLURM job ({} elsewhere: the local executor records the pid)."""
    env = os.environ
    if env.get("SLURM_JOB_ID"):
        array_job, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
        job_id = f"{array_job}_{task}" if array_job and task else env["SLURM_JOB_ID"]
        return {"job_id": job_id, "array_index": int(task) if task else None,
                "slurm_restart_count": int(env.get("SLURM_RESTART_COUNT", "0") or 0)}
    return {}


def resolve_function(name: str):
    """``"module:function"`` -> the function."""
    module, _, attr = name.partition(":")
    return getattr(importlib.import_module(module), attr)


def _mpiexec_command(spec_file: Path, tasks: int) -> list[str]:
    mpiexec = shutil.which("mpiexec") or shutil.which("mpirun")
    if not mpiexec:
        raise RuntimeError("mpiexec not found on PATH: the wavelet features job needs MPI "
                           "(Debian: apt-get install openmpi-bin), or set "
                           "campaign.resources.wavelet_features.tasks_per_node=1")
    return [mpiexec, "-n", str(tasks), sys.executable, "-m", "microcal_hpc.launcher.worker", str(spec_file)]


MPIEXEC_GRACE_SECONDS = 20  # after SIGTERM, how long mpiexec may take to stop its ranks before SIGKILL


def _run_under_mpiexec(spec: JobSpec) -> Any:
    """Re-launch this spec as ``tasks`` MPI ranks and wait; raise if any rank failed.

    A rank stopped by a signal ends every rank and says so in one line on this job's stderr
    (microcal_hpc.distributed.Peers); mpiexec then exits with 128 + the signal's number. If this process
    is stopped itself (SIGTERM, Ctrl-C), mpiexec gets SIGTERM, which it forwards to the ranks (they
    remove their temporary output), and SIGKILL if it has not ended MPIEXEC_GRACE_SECONDS later.
    """
    folder = Path(spec.run_dir) / "logs" / "mpi"
    folder.mkdir(parents=True, exist_ok=True)
    spec_file = folder / f"{spec.key}.{os.getpid()}.pkl"
    spec_file.write_bytes(pickle.dumps(spec))
    env = dict(os.environ)
    env["MICROCAL_UNDER_MPIEXEC"] = "1"
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # Open MPI refuses root without these
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT", "1")
        env.setdefault("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
    env.setdefault("OMPI_MCA_rmaps_base_oversubscribe", "1")  # more ranks than cores
    cmd = _mpiexec_command(spec_file, spec.tasks)
    print(f"[microcal-hpc] {spec.key}: {' '.join(cmd)}", flush=True)
    try:
        proc = subprocess.Popen(cmd, env=env)
        try:
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=MPIEXEC_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
    finally:
        spec_file.unlink(missing_ok=True)
    if rc != 0:
        from microcal_hpc.atomic import signal_name

        if rc < 0:
            why = f" (mpiexec was killed by {signal_name(-rc)})"
        elif rc > 128:
            why = f" (a rank was stopped by {signal_name(rc - 128)}; that rank's line is in this job's stderr log)"
        else:
            why = ""
        raise RuntimeError(f"{spec.key}: mpiexec -n {spec.tasks} exited with code {rc}{why}")
    return [str(p) for p in spec.outputs]


class MissingOutputs(RuntimeError):
    """The job function returned, but the files that mark the job complete are not there."""


def _call(spec: JobSpec) -> Any:
    fn = resolve_function(spec.function)
    return fn(spec.config, *spec.args)


def _check_outputs(spec: JobSpec) -> None:
    missing = [p for p in spec.outputs if not Path(p).exists()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise MissingOutputs(f"{spec.key}: the job returned without writing {missing[0]}{more}")


def run_spec(spec: JobSpec) -> Any:
    """Run one job spec here and now, keeping its record up to date; return the job's result.

    Rank 0 holds the job's lock meanwhile (raising :class:`~microcal_hpc.launcher.locks.Busy` when an
    earlier process of the same job is still alive after ``JOB_LOCK_WAIT_S``) and writes the record:
    RUNNING, then COMPLETED, FAILED or INTERRUPTED (stopped by a signal, or the job raised Terminated).
    """
    if _world()[0] != 0:
        return _runner(spec)(spec)
    with locks.hold_job(spec.run_dir, spec.key, JOB_LOCK_WAIT_S):
        return _run_recorded(spec)


def _runner(spec: JobSpec):
    """``_run_under_mpiexec`` for a multi-task spec started as one process, else ``_call``."""
    if spec.tasks > 1 and _world()[1] == 1 and not os.environ.get("MICROCAL_UNDER_MPIEXEC"):
        return _run_under_mpiexec
    return _call


def _run_recorded(spec: JobSpec) -> Any:
    """run_spec's body on rank 0, under the job's lock: run the job, write its record."""
    runner = _runner(spec)
    t0 = time.time()
    records.update_record(spec.run_dir, spec.key, state="RUNNING", started=records.now(), ended=None,
                          host=socket.gethostname(), pid=os.getpid(),
                          ranks=spec.tasks if runner is _run_under_mpiexec else _world()[1],
                          cpus=sorted(os.sched_getaffinity(0)),
                          cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), error=None, **_job_ids())
    try:
        result = runner(spec)
        _check_outputs(spec)
    except Terminated as e:  # a job that caught SIGTERM and removed its temporary output
        _record_end(spec, t0, state="INTERRUPTED", error=_one_line(e))
        raise
    except Exception as e:  # the job failed: record why, let submitit/the caller see the exception
        _record_end(spec, t0, state="FAILED", error=_one_line(e))
        raise
    except BaseException as e:  # SystemExit (submitit requeue after a signal), a stop signal
        requeued = records.read_record(spec.run_dir, spec.key).get("state") == "REQUEUED"
        _record_end(spec, t0, **({} if requeued else {"state": "INTERRUPTED", "error": _stop_reason(e)}))
        raise
    _record_end(spec, t0, state="COMPLETED", result=_jsonable(result))
    if spec.key == "aggregate":
        records.mark_manifest_ended(spec.run_dir)
    return result


def _record_end(spec: JobSpec, t0: float, **fields: Any) -> None:
    records.update_record(spec.run_dir, spec.key, ended=records.now(), elapsed_s=round(time.time() - t0, 1), **fields)


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:500]


def _stop_reason(e: BaseException) -> str:
    """What stopped a job, for its record: ``stopped by SIGTERM``, ``stopped by SIGINT`` ..."""
    if isinstance(e, KeyboardInterrupt):
        return "stopped by SIGINT"
    if isinstance(e, SignalReceived):
        return str(e) or "stopped by SIGTERM"
    return type(e).__name__


def _jsonable(result: Any) -> Any:
    if isinstance(result, (str, int, float, bool)) or result is None:
        return result
    if isinstance(result, os.PathLike):
        return str(result)
    if isinstance(result, (list, tuple)):
        return [_jsonable(r) for r in result]
    return repr(result)[:500]


class CheckpointableJob(submitit.helpers.Checkpointable):
    """A resumable job (CNN training): on preemption or time-out submitit calls :meth:`checkpoint`,
    which resubmits this same object; the job resumes from its last saved epoch when re-run."""

    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec

    def __call__(self) -> Any:
        return run_spec(self.spec)

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        # train_job saves a checkpoint after every epoch and resumes from it: requeue = the same call
        records.update_record(self.spec.run_dir, self.spec.key, state="REQUEUED", requeued=records.now())
        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)

    def __repr__(self) -> str:
        return f"CheckpointableJob({self.spec.key})"


# ----------------------------------------------------------------------------------------------
# the command line: a local job, or one MPI rank


def _pin_rank() -> None:
    """Under the local executor's mpiexec: keep this rank to its share of the job's cores."""
    from microcal_hpc.launcher.cores import rank_share

    env = os.environ
    local_rank = env.get("OMPI_COMM_WORLD_LOCAL_RANK") or env.get("MPI_LOCALRANKID") or str(_world()[0])
    local_size = env.get("OMPI_COMM_WORLD_LOCAL_SIZE") or env.get("MPI_LOCALNRANKS") or str(_world()[1])
    share = rank_share(sorted(os.sched_getaffinity(0)), int(local_rank), int(local_size))
    if share:
        os.sched_setaffinity(0, share)


def main(argv: list[str] | None = None) -> int:
    """``--job KEY`` (spec on stdin): run a whole local job; ``SPEC.pkl``: run one MPI rank of a spec."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--job":
        from microcal_hpc.launcher.job_process import run_job

        return run_job(argv[1], sys.stdin.buffer.read())
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m microcal_hpc.launcher.worker (--job KEY < SPEC.pkl | SPEC.pkl)", file=sys.stderr)
        return 2
    _pin_rank()
    spec = pickle.loads(Path(argv[0]).read_bytes())
    try:
        _call(spec)
    except MicrocalError as e:
        print(f"[microcal-hpc] {spec.key}, rank {_world()[0]}: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
