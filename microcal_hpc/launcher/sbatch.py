"""Plain sbatch scripts of a campaign, generated from its plan (no submitit needed on the cluster side).

``microcal-hpc submit --write-sbatch`` writes one script per submission unit (a job or a job array) to
``RUN/sbatch/NN-<unit>.sbatch`` and prints one line per unit,
``UNIT<TAB>DEPENDENCY<TAB>UNITS<TAB>SCRIPT<TAB>KEYS`` (``UNITS``: the comma-separated units it waits for,
``-`` for none; ``KEYS``: its jobs, an array's in task order); ``slurm/submit_all.sh`` submits them in that
order with ``--dependency=DEPENDENCY:<their job ids> --kill-on-invalid-dep=yes`` and records each job id
(``submit --record-sbatch``), so that ``status`` follows the jobs in SLURM from submission on. Each script
is usable on its own with ``sbatch`` and holds:

- the ``#SBATCH`` lines submitit writes for the same unit (:func:`executors.slurm_parameters`: job name,
  partition, account, qos, time, nodes, tasks, cpus, memory, GPUs, array, requeue, extra options), so
  both paths ask SLURM for the same resources; without submitit's USR2 signal (nothing here would catch
  it) and with logs in ``RUN/logs/<job name>-<job id>.out|.err``;
- ``campaign.setup`` (run first, like submitit's setup lines);
- the job's ``microcal-hpc`` command (``spec.command``; an array picks its task's command), started by
  ``srun`` (with ``--mpi=campaign.srun_mpi`` for multi-task jobs) inside ``campaign.container``.
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Optional

from microcal_hpc.config import Config
from microcal_hpc.launcher import executors
from microcal_hpc.launcher.plan import JobSpec, Plan, unit_name

# submitit lines the plain scripts do not take: its pre-timeout signal (caught by submitit's handler
# only), its log paths and wckey; the scripts write their own log lines
_NOT_PLAIN = ("--signal", "--output", "--error", "--open-mode", "--wckey")


def resource_lines(cfg: Config, unit: list[JobSpec], dependency: Optional[str] = None) -> list[str]:
    """The ``#SBATCH`` lines of one unit, as submitit renders them (minus :data:`_NOT_PLAIN`)."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = executors.slurm_parameters(cfg, unit, dependency)
    params.pop("setup", None)
    if len(unit) > 1:
        params["map_count"] = len(unit)
    text = _make_sbatch_string(command="", folder=executors.log_folder(unit[0].run_dir), **params)
    return [line for line in text.splitlines()
            if line.startswith("#SBATCH") and line.split("=")[0].split()[-1] not in _NOT_PLAIN]


def job_launch(cfg: Config, spec: JobSpec) -> list[str]:
    """What starts a job's command inside the allocation: srun (MPI plugin for several tasks) and the container."""
    srun = ["srun", "--unbuffered"]
    if spec.tasks > 1 and cfg.campaign.srun_mpi:
        srun += [f"--mpi={cfg.campaign.srun_mpi}", "--kill-on-bad-exit=1"]
    return srun + shlex.split(cfg.campaign.container)


def render_job_script(cfg: Config, unit: list[JobSpec], dependency: Optional[str] = None) -> str:
    """The plain sbatch script of one unit (``dependency``: shown by the dry run; submit_all.sh adds its own)."""
    run = Path(unit[0].run_dir)
    pattern = "%x-%A_%a" if len(unit) > 1 else "%x-%j"
    lines = ["#!/bin/bash",
             f"# {unit_name(unit)}: {', '.join(s.label for s in unit)} of the campaign {run}",
             "# written by `microcal-hpc submit --write-sbatch` from the plan (slurm/submit_all.sh submits it)",
             *resource_lines(cfg, unit, dependency),
             f"#SBATCH --output={run / 'logs' / pattern}.out",
             f"#SBATCH --error={run / 'logs' / pattern}.err",
             "#SBATCH --open-mode=append"]
    if cfg.campaign.setup:
        lines += ["", "# setup (campaign.setup)", *cfg.campaign.setup]
    lines += ["", "set -euo pipefail"]
    if len(unit) > 1:
        lines.append('case "${SLURM_ARRAY_TASK_ID:?submit this script as an array: sbatch --array=...}" in')
        for i, spec in enumerate(unit):
            lines.append(f"  {i}) job={spec.label}; cmd=({shlex.join(spec.command)}) ;;")
        lines += ['  *) echo "no job for array index $SLURM_ARRAY_TASK_ID" >&2; exit 2 ;;', "esac"]
    else:
        lines.append(f"job={unit[0].label}; cmd=({shlex.join(unit[0].command)})")
    lines += ['echo "[$(date +%T)] job ${SLURM_JOB_ID:-?} (restart ${SLURM_RESTART_COUNT:-0}): $job: ${cmd[*]}"',
              f'exec {shlex.join(job_launch(cfg, unit[0]))} "${{cmd[@]}}"', ""]
    return "\n".join(lines)


def unit_dependencies(unit: list[JobSpec], todo: list[list[JobSpec]]) -> list[str]:
    """The units (among ``todo``) that ``unit`` waits for; complete jobs are not waited for."""
    where = {s.key: unit_name(u) for u in todo for s in u}
    own = {s.key for s in unit}
    return list(dict.fromkeys(where[k] for s in unit for k in s.depends_on if k in where and k not in own))


def write_scripts(cfg: Config, plan: Plan, todo: list[JobSpec]) -> list[tuple[str, str, list[str], Path, list[str]]]:
    """Write ``RUN/sbatch/NN-<unit>.sbatch`` for the units of ``todo`` (earlier scripts are removed);
    return ``(unit, dependency type, units it waits for, script, its job keys)`` in submission order (an
    array's keys in task order)."""
    from microcal_hpc.atomic import write_text

    folder = Path(plan.run_dir) / "sbatch"
    folder.mkdir(parents=True, exist_ok=True)
    (Path(plan.run_dir) / "logs").mkdir(parents=True, exist_ok=True)  # sbatch does not create log folders
    for old in folder.glob("*.sbatch"):
        old.unlink()
    units = plan.groups(todo)
    out = []
    for i, unit in enumerate(units, 1):
        path = folder / f"{i:02d}-{unit_name(unit)}.sbatch"
        write_text(path, render_job_script(cfg, unit))
        os.chmod(path, 0o755)
        out.append((unit_name(unit), unit[0].dependency, unit_dependencies(unit, units), path, [s.key for s in unit]))
    return out
