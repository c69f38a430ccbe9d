"""The SLURM executor (submitit; returns after submitting). The executors that run here and wait,
``local`` and ``debug``, are in :mod:`microcal_hpc.launcher.local`.

SLURM: one ``sbatch`` per job, one job array per array group (CV folds, augmentation presets, seed repeats), with
each job's resources (``spec.resources``: ``campaign.resources`` of its type, ``campaign.job_resources``),
``campaign.setup`` and ``campaign.container``, and the plan's dependencies as SLURM dependencies
(``afterok``; ``afterany`` for the report; ``--kill-on-invalid-dep=yes`` so that jobs after a failed
one are cancelled instead of pending forever). Logs: ``RUN/logs/<job id>/``.
"""
from __future__ import annotations

import functools
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

from microcal_hpc.config import Config
from microcal_hpc.errors import MicrocalError
from microcal_hpc.launcher import records
from microcal_hpc.launcher.plan import JobSpec, Plan, unit_name

SIGNAL_DELAY_MAX_S = 120  # USR2 this long before the time limit: submitit checkpoints and requeues


def log_folder(run_dir: str | os.PathLike) -> Path:
    """submitit's folder: ``RUN/logs/%j`` (one sub-folder per job id; arrays: ``<id>_<index>``)."""
    return Path(run_dir) / "logs" / "%j"


def job_callable(spec: JobSpec) -> Callable[[], Any]:
    """What submitit pickles for one spec: a Checkpointable for resumable jobs, else a partial."""
    from microcal_hpc.launcher.worker import CheckpointableJob, run_spec

    if spec.checkpointable:
        return CheckpointableJob(spec)
    return functools.partial(run_spec, spec)


def signal_delay_s(time_min: int) -> int:
    """Seconds before the time limit at which SLURM sends USR2 (at most 2 min, at most 1/10 of the limit)."""
    return int(max(10, min(SIGNAL_DELAY_MAX_S, time_min * 60 // 10)))


def mem_string(mem_gb: float) -> str:
    """sbatch --mem value: 8 -> 8GB, 1.5 -> 1536MB."""
    return f"{int(mem_gb)}GB" if float(mem_gb) == int(mem_gb) else f"{int(round(mem_gb * 1024))}MB"


def slurm_parameters(cfg: Config, unit: list[JobSpec], dependency: Optional[str] = None) -> dict[str, Any]:
    """``SlurmExecutor.update_parameters`` keywords of one submission unit (a job or an array): the unit's
    resources (``spec.resources``: its job type's, or its own from ``campaign.job_resources``) and the
    campaign's job environment (``campaign.setup``)."""
    spec = unit[0]
    res = spec.resources
    params: dict[str, Any] = {
        "job_name": f"mc-{unit_name(unit)}",
        "time": int(res.time_min),
        "nodes": int(res.nodes),
        "ntasks_per_node": int(res.tasks_per_node),
        "cpus_per_task": int(res.cpus_per_task),
        "mem": mem_string(res.mem_gb),
        "signal_delay_s": signal_delay_s(res.time_min),
        "array_parallelism": int(res.array_parallelism),
        "stderr_to_stdout": False,
    }
    for key in ("partition", "account", "qos"):
        if getattr(res, key):
            params[key] = getattr(res, key)
    if res.gpus_per_node > 0:
        params["gres"] = f"gpu:{int(res.gpus_per_node)}"
    if res.tasks > 1 and cfg.campaign.srun_mpi:
        # MPI ranks (wavelet features) and Horovod ranks (train, one task per GPU) started by srun need
        # its PMI plugin; one failing rank ends the step instead of leaving the others waiting
        params["srun_args"] = [f"--mpi={cfg.campaign.srun_mpi}", "--kill-on-bad-exit=1"]
    if cfg.campaign.setup:
        params["setup"] = list(cfg.campaign.setup)
    extra: dict[str, Any] = {}
    if dependency:
        extra["dependency"] = dependency
        extra["kill-on-invalid-dep"] = "yes"
    if spec.checkpointable:
        extra["requeue"] = True
    extra.update(res.extra or {})
    if extra:
        params["additional_parameters"] = extra
    return params


def submitit_python(cfg: Config) -> Optional[str]:
    """The ``python`` of submitit's job command: the launcher's own interpreter, or, with
    ``campaign.container``, ``python3`` inside the container (``CONTAINER python3 -u -m submitit...``)."""
    if not cfg.campaign.container:
        return None
    return shlex.join([*shlex.split(cfg.campaign.container), "python3"])


def dependency_string(unit: list[JobSpec], job_ids: dict[str, str]) -> Optional[str]:
    """``afterok:12:13_0`` for the unit's dependencies that have a job id (completed ones have none)."""
    keys = [k for s in unit for k in s.depends_on if k not in {u.key for u in unit}]
    ids: list[str] = []
    for k in dict.fromkeys(keys):
        jid = job_ids.get(k)
        if jid:
            base = str(jid).split("_")[0]  # an array's base id waits for all of its tasks
            if base not in ids:
                ids.append(base)
    if not ids:
        return None
    return f"{unit[0].dependency}:{':'.join(ids)}"


class SubmissionError(MicrocalError):
    """sbatch is missing or refused a job (bad partition, account, resources ...)."""


class _Out:
    """Print helper: progress lines to stdout, flushed."""

    def __init__(self, stream: Optional[TextIO] = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, msg: str) -> None:
        print(msg, file=self.stream, flush=True)


# ----------------------------------------------------------------------------------------------
# SLURM


def submit_slurm(cfg: Config, plan: Plan, todo: list[JobSpec], active_ids: dict[str, str],
                 out: Optional[TextIO] = None) -> dict[str, str]:
    """Submit ``todo`` with submitit's SlurmExecutor, dependencies as SLURM dependencies; return job ids.

    ``active_ids``: job ids of jobs still pending/running from an earlier submission (dependencies
    on them are kept). Returns at once: nothing here waits for a job.
    """
    import shutil

    import submitit

    if not shutil.which("sbatch") or not shutil.which("srun"):
        raise SubmissionError("executor slurm: sbatch/srun not found on PATH (not on a SLURM login node?); "
                              "use --executor local to run here")
    say = _Out(out)
    job_ids: dict[str, str] = dict(active_ids)
    submitted: dict[str, str] = {}
    folder = log_folder(plan.run_dir)
    for unit in plan.groups(todo):
        dep = dependency_string(unit, job_ids)
        ex = submitit.SlurmExecutor(folder=folder, max_num_timeout=3, python=submitit_python(cfg))
        ex.update_parameters(**slurm_parameters(cfg, unit, dep))
        for spec in unit:
            records.new_submission(plan.run_dir, spec, "slurm")
        fns = [job_callable(s) for s in unit]
        try:
            jobs = ex.submit_array(fns) if len(unit) > 1 else [ex.submit(fns[0])]
        except Exception as e:
            reason = " ".join(str(e).split())[:400]
            for spec in unit:
                records.update_record(plan.run_dir, spec.key, state="FAILED", error=f"submission failed: {reason}")
            _cancel_submitted(plan.run_dir, submitted, f"{unit_name(unit)} could not be submitted")
            raise SubmissionError(f"sbatch refused {unit_name(unit)}: {reason} (the "
                                  f"{len(submitted)} job(s) submitted before it were cancelled)") from None
        submitted.update({s.key: j.job_id for s, j in zip(unit, jobs)})
        for i, (spec, job) in enumerate(zip(unit, jobs)):
            job_ids[spec.key] = job.job_id
            records.update_record(plan.run_dir, spec.key, launcher=True, job_id=job.job_id, state="PENDING",
                                  array_index=i if len(unit) > 1 else None, log=str(job.paths.stderr),
                                  log_out=str(job.paths.stdout), log_err=str(job.paths.stderr), dependency_ids=dep)
        ids = ", ".join(job.job_id for job in jobs)
        names = ", ".join(s.name for s in unit)
        say(f"submitted {unit[0].stage}: {names} -> {ids}" + (f" ({dep})" if dep else ""))
    _remove_template_folder(folder)
    return job_ids


def _remove_template_folder(folder: Path) -> None:
    """submitit writes a single job's pickle under the folder template itself (``logs/%j``) before it
    knows the id, then moves it to ``logs/<id>``: the literal ``%j`` folder is left empty; remove it."""
    try:
        folder.rmdir()
    except OSError:  # absent, or not empty
        pass


def scancel(job_ids: list[str]) -> Optional[str]:
    """``scancel`` the SLURM jobs ``job_ids``; None if that worked, else why not."""
    import subprocess

    try:
        subprocess.check_call(["scancel", *job_ids])
        return None
    except (OSError, subprocess.CalledProcessError) as e:
        return str(e)


def _cancel_submitted(run_dir: str, submitted: dict[str, str], why: str) -> None:
    """All or nothing: scancel the jobs of a campaign submission that could not be completed."""
    bases = sorted({jid.split("_")[0] for jid in submitted.values()})
    if bases:
        scancel(bases)
    for key in submitted:
        records.update_record(run_dir, key, state="CANCELLED", ended=records.now(), error=f"cancelled: {why}")
