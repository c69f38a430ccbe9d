"""Submit a campaign: plan it, find what is already done or still running, run or submit the rest.

Running ``submit`` again on the same run directory submits only the jobs whose outputs are missing
and that are not pending/running on the cluster; the report job runs again whenever anything else does.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Optional, TextIO

from microcal_hpc.config import Config
from microcal_hpc.errors import ConfigError
from microcal_hpc.launcher import executors, local, locks, records, status
from microcal_hpc.launcher.plan import JobSpec, Plan, build_plan, packed_path, resolve_paths, selection


def _resources_text(cfg: Config, spec: JobSpec) -> str:
    r = cfg.resources(spec.job_type)
    parts = [f"{r.nodes}x{r.tasks_per_node} task", f"{r.cpus_per_task} cpu", executors.mem_string(r.mem_gb),
             f"{r.time_min} min"]
    if r.gpus_per_node:
        parts.append(f"gpu:{r.gpus_per_node}")
    if r.partition:
        parts.append(f"partition={r.partition}")
    return ", ".join(parts)


def format_plan(cfg: Config, plan: Plan, todo: list[JobSpec], complete: set[str], active: dict[str, str]) -> str:
    """The plan as a table: job, type, dependencies, resources, what will happen to it."""
    rows = [("JOB", "TYPE", "ARRAY", "AFTER", "RESOURCES", "ACTION")]
    todo_keys = {s.key for s in todo}
    for s in plan:
        action = ("submit" if s.key in todo_keys else "running: " + active[s.key] if s.key in active
                  else "complete" if s.key in complete else "-")
        after = f"{s.dependency}:{','.join(s.depends_on)}" if s.depends_on else "-"
        if s.key == "aggregate":
            after = f"{s.dependency}:all"
        rows.append((f"{s.stage}/{s.name}", s.job_type, s.array or "-", after, _resources_text(cfg, s), action))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


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


def submit_campaign(cfg: Config, executor: Optional[str] = None, run_dir: Optional[str] = None,
                    dry_run: bool = False, out: Optional[TextIO] = None) -> int:
    """Plan and run/submit a campaign; return the exit code (local/debug: 1 when a job failed).

    A run directory has one launcher: except for a dry run, this holds ``RUN/launcher.lock`` until it
    returns, and refuses (:class:`~microcal_hpc.launcher.locks.Busy`, naming the holder's host and pid)
    when a live launcher holds it."""
    executor = executor or cfg.campaign.executor
    if executor not in ("slurm", "local", "debug"):
        raise ConfigError(f"executor must be slurm, local or debug; got {executor!r}")
    cfg, run, plan = _prepare(cfg, run_dir, executor)
    if not dry_run and "pack" in plan.keys() and not Path(cfg.data.root).is_dir():
        # fail before anything is submitted, not in the first job
        raise ConfigError(f"{cfg.data.root}: image folder not found (data.root; the tree ROOT/{{Train,Test}}/{{0,1}})")
    if dry_run:
        return _submit_planned(cfg, run, plan, executor, dry_run, out or sys.stdout)
    with locks.hold_run_dir(run):
        return _submit_planned(cfg, run, plan, executor, dry_run, out or sys.stdout)


def _submit_planned(cfg: Config, run: str, plan: Plan, executor: str, dry_run: bool, out: TextIO) -> int:
    """The rest of :func:`submit_campaign`: what is complete or still running, then print, submit or run."""

    def say(msg: str = "") -> None:
        print(msg, file=out, flush=True)

    complete = {s.key for s in plan if s.is_complete()}
    active = _active_jobs(run) if Path(run, "jobs").is_dir() else {}
    if active and executor != "slurm":
        raise ConfigError(f"{run}: jobs {sorted(active)} are still pending/running on SLURM; "
                          "wait for them or scancel them before running this campaign locally")
    todo = selection(plan, complete, set(active))
    stale_report = None
    if "aggregate" in active and any(s.key != "aggregate" for s in todo):
        # the queued report would not wait for the jobs submitted now: replace it
        stale_report = active.pop("aggregate")
        todo.append(plan.get("aggregate"))

    say(f"campaign {run}: {len(plan)} jobs, {len(complete)} complete, {len(active)} still running, "
        f"{len(todo)} to {'submit' if executor == 'slurm' else 'run'} (executor: {executor})")
    if dry_run:
        say(format_plan(cfg, plan, todo, complete, active))
        if executor == "slurm":
            ids = _placeholder_ids(todo, active)
            for unit in plan.groups(todo):
                dep = executors.dependency_string(unit, ids)
                label = unit[0].array if len(unit) > 1 else unit[0].key
                say(f"\n# ---- sbatch for {label}" + (f" (array of {len(unit)})" if len(unit) > 1 else ""))
                say(executors.render_sbatch(cfg, unit, run, dep))
        elif executor == "local":
            say(f"\nlocal executor: {local.concurrency_text(cfg)}, in this order")
        say("\ndry run: nothing submitted")
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

    records.write_manifest(run, cfg, executor, [s.key for s in todo])
    if stale_report:
        try:
            subprocess.check_call(["scancel", stale_report])
            say(f"cancelled the queued report job {stale_report}: a new one waits for the jobs submitted now")
        except (OSError, subprocess.CalledProcessError) as e:
            say(f"warning: could not cancel the queued report job {stale_report}: {e}")
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



def write_run_config(cfg: Config, run_dir: Optional[str] = None, out: Optional[TextIO] = None) -> int:
    """Write RUN/config.yaml (paths absolute) and RUN/manifest.json without running anything, and print
    the campaign as shell assignments (RUN_DIR, CONFIG, DATA, PACK, OFFICIAL, CV_FOLDS, AUGMENT_PRESETS,
    WAVELET, WAVELET_TASKS) for plain sbatch scripts (slurm/submit_all.sh)."""
    import shlex

    out = out or sys.stdout
    cfg, run, plan = _prepare(cfg, run_dir)
    records.write_manifest(run, cfg, "sbatch", [])
    feats = cfg.resources("wavelet_features")
    values = {
        "RUN_DIR": run,
        "CONFIG": str(Path(run) / "config.yaml"),
        "DATA": packed_path(cfg, run),
        "PACK": int("pack" in plan.keys()),
        "OFFICIAL": int(cfg.campaign.official),
        "CV_FOLDS": cfg.campaign.cv_folds,
        "AUGMENT_PRESETS": " ".join(cfg.campaign.augment_presets),
        "WAVELET": int(cfg.campaign.wavelet),
        "WAVELET_TASKS": feats.tasks_per_node * feats.nodes,
    }
    for k, v in values.items():
        print(f"{k}={shlex.quote(str(v))}", file=out)
    return 0

