"""Submit a campaign: plan it, find what is already done, stale or still running, run or submit the rest.

Running ``submit`` again on the same run directory submits only the jobs whose outputs are missing or
stale and that are not pending/running on the cluster; the report job runs again whenever anything else
does. A stale job (outputs computed with other settings, :mod:`microcal_hpc.launcher.stale`) is run
again: its old outputs are first moved to ``RUN/superseded/<date-time>/``. ``--dry-run`` shows all of
this (and each job's ``microcal-hpc`` command) without changing anything; ``--write-sbatch`` writes the
plain sbatch scripts of the same submission for ``slurm/submit_all.sh`` instead of submitting.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, TextIO

from microcal_hpc.config import Config, ResourceConfig
from microcal_hpc.errors import ConfigError
from microcal_hpc.launcher import executors, local, locks, preflight, records, sbatch, stale, status
from microcal_hpc.launcher.plan import JobSpec, Plan, build_plan, resolve_paths, selection, unit_name


@dataclass
class Assessment:
    """What a submission finds in the run directory: jobs complete with the campaign's settings, stale
    jobs (with the differing settings), jobs still pending/running on SLURM, and what to run."""

    current: set[str] = field(default_factory=set)
    stale: dict[str, list[str]] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)
    todo: list[JobSpec] = field(default_factory=list)


def assess(plan: Plan, executor: str) -> Assessment:
    """Which jobs of ``plan`` are current, stale, active, and which to run (``selection``)."""
    run = plan.run_dir
    stale_reasons = stale.stale_jobs(plan)
    current = {s.key for s in plan if s.is_complete() and s.key not in stale_reasons}
    active = _active_jobs(run) if Path(run, "jobs").is_dir() else {}
    if active and executor != "slurm":
        raise ConfigError(f"{run}: jobs {sorted(active)} are still pending/running on SLURM; "
                          f"wait for them or scancel them before running this campaign with executor {executor}")
    return Assessment(current=current, stale=stale_reasons, active=active,
                      todo=selection(plan, current, set(active)))


def _action(spec: JobSpec, todo_keys: set[str], found: Assessment) -> str:
    if spec.key in found.active:
        return f"running: {found.active[spec.key]}"
    if spec.key in todo_keys:
        return "re-run" if spec.key in found.stale else "submit"
    return "complete" if spec.key in found.current else "-"


def _resources_text(r: ResourceConfig) -> str:
    parts = [f"{r.nodes}x{r.tasks_per_node} task", f"{r.cpus_per_task} cpu", executors.mem_string(r.mem_gb),
             f"{r.time_min} min"]
    if r.gpus_per_node:
        parts.append(f"gpu:{r.gpus_per_node}")
    if r.partition:
        parts.append(f"partition={r.partition}")
    return ", ".join(parts)


def format_plan(plan: Plan, found: Assessment) -> str:
    """The plan as a table (job, type, dependencies, resources, what will happen to it), the stale jobs'
    differing settings, and each job's ``microcal-hpc`` command."""
    rows = [("JOB", "TYPE", "ARRAY", "AFTER", "RESOURCES", "ACTION")]
    todo_keys = {s.key for s in found.todo}
    for s in plan:
        after = f"{s.dependency}:{','.join(s.depends_on)}" if s.depends_on else "-"
        if s.key == "aggregate":
            after = f"{s.dependency}:all"
        rows.append((s.label, s.job_type, s.array or "-", after, _resources_text(s.resources),
                     _action(s, todo_keys, found)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    for key, reasons in found.stale.items():
        lines.append(f"stale: {plan.get(key).label}: {'; '.join(reasons)}")
    lines += ["", "commands (each job by hand, with the run's config.yaml as written at submission):"]
    width = max(len(s.label) for s in plan)
    for s in plan:
        ranks = f"[{s.tasks} ranks: srun or mpiexec -n {s.tasks}] " if s.tasks > 1 else ""
        lines.append(f"  {s.label.ljust(width)}  {ranks}{s.command_line()}")
    return "\n".join(lines)


def plan_json(cfg: Config, plan: Plan, found: Assessment, executor: str) -> dict:
    """The plan as plain data (``submit --dry-run --json``)."""
    todo_keys = {s.key for s in found.todo}
    units = plan.groups(found.todo)
    ids = _placeholder_ids(found.todo, found.active)
    return {
        "run_dir": plan.run_dir,
        "executor": executor,
        "config": str(Path(plan.run_dir) / "config.yaml"),
        "counts": {"jobs": len(plan), "complete": len(found.current), "stale": len(found.stale),
                   "running": len(found.active), "to_submit": len(found.todo)},
        "setup": list(cfg.campaign.setup),
        "container": cfg.campaign.container,
        "warnings": cfg.campaign.warnings(),
        "jobs": [{"key": s.key, "job": s.label, "stage": s.stage, "name": s.name, "kind": s.kind,
                  "job_type": s.job_type, "array": s.array, "depends_on": list(s.depends_on),
                  "dependency": s.dependency, "action": _action(s, todo_keys, found),
                  "stale": found.stale.get(s.key, []), "job_id": found.active.get(s.key),
                  "resources": dataclasses.asdict(s.resources), "tasks": s.tasks, "command": list(s.command),
                  "overrides": list(s.overrides), "outputs": list(s.outputs)} for s in plan],
        "units": [{"name": unit_name(u), "jobs": [s.key for s in u],
                   "dependency": executors.dependency_string(u, ids),
                   "sbatch": sbatch.resource_lines(cfg, u)} for u in units],
    }


def _placeholder_ids(todo: list[JobSpec], active: dict[str, str]) -> dict[str, str]:
    ids = dict(active)
    for s in todo:
        ids[s.key] = f"<{s.array or s.key}>"
    return ids


def _active_jobs(run_dir: str) -> dict[str, str]:
    """{key: job id} of SLURM jobs of this run directory that are still pending or running."""
    rows = status.collect(run_dir)
    return {r.key: str(r.job_id) for r in rows
            if r.executor == "slurm" and r.job_id and r.state in records.ACTIVE}


def _prepare(cfg: Config, run_dir: Optional[str], executor: Optional[str] = None) -> tuple[Config, str, Plan]:
    """A copy of ``cfg`` with absolute paths, the run folder (and executor) set; the run folder; the plan."""
    cfg = resolve_paths(cfg)
    run = str(Path(run_dir or cfg.campaign.run_dir).expanduser().resolve())
    cfg.campaign.run_dir = run
    if executor:
        cfg.campaign.executor = executor
    return cfg, run, build_plan(cfg, run)


def _report_html(plan: Plan) -> Path:
    """The report the campaign's aggregate job writes (its completeness marker)."""
    return Path(plan.get("aggregate").outputs[0])


def _check_before_running(cfg: Config, plan: Plan, dry_run: bool) -> None:
    """Everything that can fail before a job runs: the image tree, folds against the data's groups."""
    if not dry_run and "pack" in plan.keys() and not Path(cfg.data.root).is_dir():
        raise ConfigError(f"{cfg.data.root}: image folder not found (data.root; the tree ROOT/{{Train,Test}}/{{0,1}})")
    preflight.check_data(plan)


def _supersede_stale(plan: Plan, found: Assessment, say) -> None:
    """Move the outputs of the stale jobs about to run again to RUN/superseded/<date-time>/."""
    todo = [s for s in found.todo if s.key in found.stale]
    if not todo:
        return
    folder, moved = stale.supersede(todo, plan.run_dir)
    for s in todo:
        say(f"stale: {s.label} ({'; '.join(found.stale[s.key])}): runs again")
    if moved:
        say(f"their previous outputs ({len(moved)} file(s)/folder(s)) are kept in {folder}")


def submit_campaign(cfg: Config, executor: Optional[str] = None, run_dir: Optional[str] = None,
                    dry_run: bool = False, out: Optional[TextIO] = None, as_json: bool = False) -> int:
    """Plan and run/submit a campaign; return the exit code (local/debug: 1 when a job failed).

    ``dry_run``: print the plan (``as_json``: as JSON) and change nothing.

    A run directory has one launcher: except for a dry run, this holds ``RUN/launcher.lock`` until it
    returns, and refuses (:class:`~microcal_hpc.launcher.locks.Busy`, naming the holder's host and pid)
    when a live launcher holds it."""
    executor = executor or cfg.campaign.executor
    if executor not in ("slurm", "local", "debug"):
        raise ConfigError(f"executor must be slurm, local or debug; got {executor!r}")
    cfg, run, plan = _prepare(cfg, run_dir, executor)
    _check_before_running(cfg, plan, dry_run)
    out = out or sys.stdout
    if dry_run:
        return _submit_planned(cfg, run, plan, executor, out, dry_run, as_json)
    with locks.hold_run_dir(run):
        return _submit_planned(cfg, run, plan, executor, out, dry_run, as_json)


def _submit_planned(cfg: Config, run: str, plan: Plan, executor: str, out: TextIO, dry_run: bool,
                    as_json: bool) -> int:
    """The rest of :func:`submit_campaign`: what is complete, stale or still running, then print, submit or run."""

    def say(msg: str = "") -> None:
        print(msg, file=out, flush=True)

    found = assess(plan, executor)
    todo, active = found.todo, found.active
    stale_report = None
    if "aggregate" in active and any(s.key != "aggregate" for s in todo):
        # the queued report would not wait for the jobs submitted now: replace it
        stale_report = active.pop("aggregate")
        todo.append(plan.get("aggregate"))

    if dry_run and as_json:
        say(json.dumps(plan_json(cfg, plan, found, executor), indent=2))
        return 0
    stale_count = f"{len(found.stale)} stale, " if found.stale else ""
    say(f"campaign {run}: {len(plan)} jobs, {len(found.current)} complete, {stale_count}{len(active)} still running, "
        f"{len(todo)} to {'submit' if executor == 'slurm' else 'run'} (executor: {executor})")
    for warning in cfg.campaign.warnings():
        say(f"warning: {warning}")
    if dry_run:
        _print_dry_run(cfg, run, plan, found, executor, say)
        return 0
    if not todo and active:
        say(f"nothing to submit: {len(active)} job(s) still pending or running; "
            f"follow them with: microcal-hpc status --run-dir {run}")
        return 0
    if not todo:
        say("nothing to do: every job is complete")
        report = _report_html(plan)
        if report.exists():
            say(str(report))
        return 0

    _supersede_stale(plan, found, say)
    records.write_manifest(run, plan.config, executor, [s.key for s in todo])
    if stale_report:
        failure = executors.scancel([stale_report])
        if failure:
            say(f"warning: could not cancel the queued report job {stale_report}: {failure}")
        else:
            say(f"cancelled the queued report job {stale_report}: a new one waits for the jobs submitted now")
    if executor == "slurm":
        executors.submit_slurm(cfg, plan, todo, active, out=out)
        say(f"{len(todo)} jobs submitted; follow them with: microcal-hpc status --run-dir {run}")
        say(f"the report will be {_report_html(plan)}")
        return 0

    if executor == "local":
        states = local.run_local(cfg, plan, todo, out=out)
    else:
        states = local.run_debug(cfg, plan, todo, out=out)
    records.mark_manifest_ended(run)
    return _summarize_local(run, plan, states, say)


def _print_dry_run(cfg: Config, run: str, plan: Plan, found: Assessment, executor: str, say) -> None:
    """What a submission would do: the plan and, for SLURM, each unit's sbatch script; submits nothing."""
    say(format_plan(plan, found))
    if executor == "slurm":
        ids = _placeholder_ids(found.todo, found.active)
        for unit in plan.groups(found.todo):
            label = unit_name(unit) + (f" (array of {len(unit)})" if len(unit) > 1 else "")
            say(f"\n# ---- sbatch for {label}: the resources submitit requests, the job's command "
                "(submitit runs it from a pickle; `submit --write-sbatch` writes this script)")
            say(sbatch.render_job_script(cfg, unit, executors.dependency_string(unit, ids)))
    elif executor == "local":
        say(f"\nlocal executor: {local.concurrency_text(cfg)}, in this order")
    if executor != "slurm" and (cfg.campaign.setup or cfg.campaign.container):
        say(f"\nnote: campaign.setup and campaign.container apply to SLURM jobs; the {executor} executor "
            "runs every job in this environment")
    if found.stale:
        say(f"\nstale jobs run again; their previous outputs would be moved to {Path(run) / stale.SUPERSEDED}/")
    say("\ndry run: nothing submitted")


def _summarize_local(run: str, plan: Plan, states: dict[str, str], say) -> int:
    failed = [k for k, s in states.items() if s != "COMPLETED"]
    recs = records.read_records(run)
    say(f"campaign finished: {len(states) - len(failed)} of {len(states)} jobs completed")
    for key in failed:
        rec = recs.get(key, {})
        log = rec.get("log_err") or rec.get("job_log") or "-"
        say(f"{states[key]}: {rec.get('stage', '?')}/{rec.get('name', key)}: {rec.get('error') or ''}")
        say(f"  log: {log}")
    report = _report_html(plan)
    if report.exists():
        say(str(report))
    else:
        say(f"no report: {report} was not written")
    return 1 if failed else 0



def write_sbatch(cfg: Config, run_dir: Optional[str] = None, out: Optional[TextIO] = None,
                 err: Optional[TextIO] = None) -> int:
    """``submit --write-sbatch``: the submission ``submit --executor slurm`` would make, as plain sbatch
    scripts (:mod:`microcal_hpc.launcher.sbatch`) for ``slurm/submit_all.sh``: stale outputs are moved
    aside, RUN/config.yaml and RUN/manifest.json written, ``RUN/sbatch/*.sbatch`` written for what is
    to run, and one line per script printed to ``out``: ``UNIT<TAB>DEPENDENCY<TAB>UNITS<TAB>SCRIPT<TAB>KEYS``
    (``UNITS``: the units it waits for, comma-separated, or ``-``; ``KEYS``: its jobs, comma-separated)."""
    out, err = out or sys.stdout, err or sys.stderr

    def say(msg: str) -> None:
        print(msg, file=err, flush=True)

    cfg, run, plan = _prepare(cfg, run_dir, "slurm")
    _check_before_running(cfg, plan, dry_run=False)
    found = assess(plan, "sbatch")
    for warning in cfg.campaign.warnings():
        say(f"warning: {warning}")
    if not found.todo:
        say(f"campaign {run}: nothing to do: every job is complete")
        return 0
    _supersede_stale(plan, found, say)
    records.write_manifest(run, plan.config, "sbatch", [s.key for s in found.todo])
    for name, dependency, units, script, keys in sbatch.write_scripts(cfg, plan, found.todo):
        print(f"{name}\t{dependency}\t{','.join(units) or '-'}\t{script}\t{','.join(keys)}", file=out)
    return 0


def record_sbatch(run_dir: str, job_id: str, keys: list[str]) -> int:
    """``submit --record-sbatch JOB_ID KEYS``: slurm/submit_all.sh submitted the plain script of the jobs
    ``keys`` (an array's in task order) as SLURM job ``job_id``. Their records become PENDING SLURM jobs,
    as the submitit path writes them, so that ``status`` asks SLURM about them and a second submission
    waits for them instead of running them twice."""
    run_dir = str(Path(run_dir).resolve())
    plan = status.campaign_plan(run_dir)
    if plan is None:
        raise ConfigError(f"{run_dir}: no config.yaml: not a run directory written by submit --write-sbatch")
    unknown = [k for k in keys if k not in plan.keys()]
    if not keys or unknown:
        raise ConfigError(f"{run_dir}: no job {', '.join(unknown) or '(none given)'} in the campaign of its "
                          f"config.yaml")
    array = len(keys) > 1
    for i, key in enumerate(keys):
        records.new_submission(run_dir, plan.get(key), "slurm")
        records.update_record(run_dir, key, launcher=True, job_id=f"{job_id}_{i}" if array else job_id,
                              state="PENDING", array_index=i if array else None)
    return 0
