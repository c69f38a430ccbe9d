"""The state of every job of a run directory: its records, corrected by SLURM (sacct, else squeue),
checked against its outputs and the campaign's settings.

A record tells what the launcher and the job itself wrote; SLURM knows what happened to a job the
job could not report (cancelled, timed out, out of memory, killed on a failed dependency). The
effective state is the job's own COMPLETED when it wrote one, else SLURM's view, else the record's;
then the outputs decide: a job said COMPLETED whose outputs are not all there is INCOMPLETE, a job whose
outputs were computed with other settings than the campaign's is STALE (:mod:`microcal_hpc.launcher.stale`),
and a planned job without a record is COMPLETED when its outputs are there (jobs run by hand), else
NOT_SUBMITTED. A SLURM job whose record says pending or running but that SLURM no longer knows is
COMPLETED when its outputs are there (a cluster without accounting forgets finished jobs, and the plain
sbatch scripts write no end state). :func:`exit_code` is 0 only when every job is COMPLETED or still
pending/running.
"""
from __future__ import annotations

import datetime as _dt
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from microcal_hpc.launcher import records, stale
from microcal_hpc.launcher.locks import pid_alive
from microcal_hpc.launcher.plan import STAGES


@dataclass
class JobStatus:
    """One row of the status table."""

    key: str
    stage: str
    name: str
    state: str
    job_id: Optional[str]
    elapsed_s: Optional[float]
    log: Optional[str]
    executor: Optional[str]
    error: Optional[str] = None
    source: str = "record"  # record | sacct | squeue | outputs | plan
    stale: list[str] = field(default_factory=list)  # settings that differ: "train.epochs 25 -> 50"

    @property
    def elapsed(self) -> str:
        if self.elapsed_s is None:
            return "-"
        s = int(round(self.elapsed_s))
        return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def normalize_state(state: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``; ``RUNNING+`` -> ``RUNNING``."""
    state = (state or "").strip().split(" ")[0].rstrip("+").upper()
    return state or "UNKNOWN"


def _parse_elapsed(value: str) -> Optional[float]:
    """SLURM ``[D-]HH:MM:SS`` or ``MM:SS.mmm`` -> seconds."""
    if not value or value in ("INVALID", "Unknown"):
        return None
    try:
        days = 0
        if "-" in value:
            d, value = value.split("-", 1)
            days = int(d)
        parts = [float(p) for p in value.split(":")]
        while len(parts) < 3:
            parts.insert(0, 0.0)
        h, m, s = parts
        return days * 86400 + h * 3600 + m * 60 + s
    except ValueError:
        return None


def _expand_ids(job_id: str) -> list[str]:
    """sacct/squeue ids -> submitit-style ids: ``12_[0-2%2]`` -> ``12_0 12_1 12_2``."""
    from submitit.slurm.slurm import read_job_id

    out = []
    try:
        parts = read_job_id(job_id)
    except (ValueError, TypeError):
        return [job_id]
    for p in parts:
        if len(p) >= 3:
            out.extend(f"{p[0]}_{i}" for i in range(int(p[1]), int(p[2]) + 1))
        else:
            out.append("_".join(p[:2]))
    return out


def _parse_table(text: str) -> list[dict[str, str]]:
    """Rows of ``--parsable2`` output; repeated header lines (one per query) are skipped."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.strip():
            continue
        cells = line.split("|")
        if cells[0] == "JobID":
            header = cells
            continue
        if header:
            rows.append(dict(zip(header, cells)))
    return rows


def sacct_states(job_ids: Iterable[str]) -> Optional[dict[str, dict[str, Any]]]:
    """{job id: {"state", "elapsed_s"}} from sacct, or None when sacct is unavailable or fails."""
    bases = sorted({str(j).split("_")[0] for j in job_ids if j})
    if not bases:
        return {}
    cmd = ["sacct", "-X", "--parsable2", "-o", "JobID,State,Elapsed"]
    for b in bases:
        cmd += ["-j", b]
    try:
        out = subprocess.check_output(cmd, stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    text = out.decode() if isinstance(out, bytes) else str(out)
    states: dict[str, dict[str, Any]] = {}
    for row in _parse_table(text):
        jid = row.get("JobID", "")
        if not jid or "." in jid:
            continue
        info = {"state": normalize_state(row.get("State", "")), "elapsed_s": _parse_elapsed(row.get("Elapsed", ""))}
        for one in _expand_ids(jid):
            states[one] = info
    return states


def squeue_states(job_ids: Iterable[str]) -> Optional[dict[str, dict[str, Any]]]:
    """{job id: {"state"}} of queued/running jobs from squeue (fallback without accounting)."""
    bases = sorted({str(j).split("_")[0] for j in job_ids if j})
    if not bases:
        return {}
    cmd = ["squeue", "-h", "-r", "-o", "%i|%T", "-j", ",".join(bases)]
    try:
        out = subprocess.check_output(cmd, stderr=subprocess.DEVNULL, timeout=60)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    text = out.decode() if isinstance(out, bytes) else str(out)
    states = {}
    for line in text.splitlines():
        if "|" in line:
            jid, state = line.split("|", 1)
            for one in _expand_ids(jid.strip()):
                states[one] = {"state": normalize_state(state), "elapsed_s": None}
    return states


def _record_elapsed(rec: dict[str, Any]) -> Optional[float]:
    if rec.get("elapsed_s") is not None and rec.get("state") in records.TERMINAL:
        return float(rec["elapsed_s"])
    start = records.parse_time(rec.get("started"))
    if not start:
        return None
    end = records.parse_time(rec.get("ended")) or _dt.datetime.now().astimezone()
    return max(0.0, (end - start).total_seconds())


def effective_state(rec: dict[str, Any], live: Optional[dict[str, Any]]) -> tuple[str, str]:
    """(state, source) of one record given SLURM's view of its job id (None: not known to SLURM)."""
    state = rec.get("state") or "UNKNOWN"
    if state == "COMPLETED":
        return state, "record"
    if live:
        lstate = live["state"]
        if lstate == "COMPLETED" and state == "FAILED":  # the job wrote FAILED: trust it
            return state, "record"
        return lstate, live.get("source", "sacct")
    return state, "record"


def collect(run_dir: str | os.PathLike, use_slurm: Optional[bool] = None,
            plan: Optional[Iterable[Any]] = None) -> list[JobStatus]:
    """Status rows of every job of ``run_dir`` (records + SLURM), in campaign order.

    ``use_slurm``: query sacct/squeue for slurm records (default: when any record is a slurm job).
    ``plan``: the campaign's job specs in order (their outputs and settings are checked; those without a
    record are listed as COMPLETED when their outputs are there, else as NOT_SUBMITTED).
    """
    specs = list(plan or [])
    order = [s.key for s in specs]
    recs = records.read_records(run_dir)
    slurm_ids = [r.get("job_id") for r in recs.values() if r.get("executor") == "slurm" and r.get("job_id")]
    if use_slurm is None:
        use_slurm = bool(slurm_ids)
    live: dict[str, dict[str, Any]] = {}
    if use_slurm and slurm_ids:
        sacct = sacct_states(slurm_ids)
        if sacct is not None:
            live = {k: dict(v, source="sacct") for k, v in sacct.items()}
        # jobs sacct does not know yet (just submitted) or without accounting: ask squeue
        missing = [j for j in slurm_ids if j not in live]
        if missing:
            sq = squeue_states(missing) or {}
            live.update({k: dict(v, source="squeue") for k, v in sq.items()})
    rows = []
    for key, rec in recs.items():
        state, source = effective_state(rec, live.get(str(rec.get("job_id"))) if rec.get("executor") == "slurm" else None)
        elapsed = _record_elapsed(rec)
        if source == "sacct" and live[str(rec["job_id"])].get("elapsed_s") is not None:
            elapsed = live[str(rec["job_id"])]["elapsed_s"]
        if rec.get("executor") in ("local", "debug") and state in records.ACTIVE:
            # nothing runs any more when neither the job's process nor the launcher is alive
            same_host = rec.get("launcher_host") in (None, os.uname().nodename)
            if same_host and not pid_alive(rec.get("pid")) and not pid_alive(rec.get("launcher_pid")):
                state = "INTERRUPTED"
        log = rec.get("log_err") or rec.get("job_log")
        rows.append(JobStatus(key=key, stage=rec.get("stage", "?"), name=rec.get("name", key), state=state,
                              job_id=rec.get("job_id"), elapsed_s=elapsed, log=log, executor=rec.get("executor"),
                              error=rec.get("error"), source=source))
    known = {r.key for r in rows}
    for spec in specs:
        if spec.key not in known:
            rows.append(JobStatus(key=spec.key, stage=spec.stage, name=spec.name, state="NOT_SUBMITTED", job_id=None,
                                  elapsed_s=None, log=spec.job_log, executor=None, source="plan"))
    _check_outputs(rows, recs, specs)
    rank = {k: i for i, k in enumerate(order)}

    def sort_key(r: JobStatus):
        stage = STAGES.index(r.stage) if r.stage in STAGES else len(STAGES)
        return (rank.get(r.key, len(rank)), stage, r.name)

    return sorted(rows, key=sort_key)


def _missing(outputs: Iterable[str]) -> list[str]:
    return [p for p in outputs if not Path(p).exists()]


def _check_outputs(rows: list[JobStatus], recs: dict[str, dict[str, Any]], specs: list[Any]) -> None:
    """Let the outputs and settings correct the states of ``rows`` (in place): see the module docstring."""
    by_key = {s.key: s for s in specs}
    stale_reasons = stale.stale_jobs(specs)
    for row in rows:
        spec = by_key.get(row.key)
        outputs = spec.outputs if spec else recs.get(row.key, {}).get("outputs") or []
        missing = _missing(outputs)
        # not submitted, or a SLURM job SLURM no longer knows (no accounting): its outputs decide
        unknown = row.state == "NOT_SUBMITTED" or (row.state in records.ACTIVE and row.executor == "slurm"
                                                   and row.source == "record")
        if unknown and outputs and not missing:
            row.state, row.source = "COMPLETED", "outputs"
        if row.state == "COMPLETED" and missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            row.state, row.error = "INCOMPLETE", f"outputs missing: {missing[0]}{more}"
        if row.state == "COMPLETED" and row.key in stale_reasons:
            row.state, row.stale = "STALE", stale_reasons[row.key]
            row.error = "computed with other settings: " + "; ".join(row.stale)


def exit_code(rows: Iterable[JobStatus]) -> int:
    """0 when every job is COMPLETED (with the campaign's settings) or still pending/running; else 1
    (failed, cancelled, timed out, interrupted, incomplete, stale or not submitted)."""
    return 0 if all(r.state == "COMPLETED" or r.state in records.ACTIVE for r in rows) else 1


def format_table(rows: list[JobStatus], run_dir: str | os.PathLike | None = None) -> str:
    """A fixed-width table and a one-line summary."""
    header = ("STAGE", "NAME", "STATE", "JOB ID", "ELAPSED", "LOG")
    base = Path(run_dir).resolve() if run_dir else None

    def short(p: Optional[str]) -> str:
        if not p:
            return "-"
        if base:
            try:
                return str(Path(p).resolve().relative_to(base))
            except ValueError:
                pass
        return p

    table = [header] + [(r.stage, r.name, r.state, str(r.job_id or "-"), r.elapsed, short(r.log)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths)) + "  " + row[-1] for row in table]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = f"{len(rows)} jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda x: -x[1]))
    failed = [r for r in rows if r.error and r.state not in ("COMPLETED",)]
    for r in failed:
        lines.append(f"  {r.stage}/{r.name}: {r.error}")
    return "\n".join(lines + [summary])


def campaign_plan(run_dir: str | os.PathLike, config: Optional[str] = None, overrides: Iterable[str] = ()):
    """The plan of the campaign in ``run_dir``: from its config.yaml (the settings of its last submission)
    or from ``config``, with ``section.key=value`` overrides; None when there is no config to read."""
    from microcal_hpc.config import load_config
    from microcal_hpc.launcher.plan import build_plan

    path = Path(config) if config else Path(run_dir) / "config.yaml"
    if not config and not path.is_file():
        return None
    return build_plan(load_config(path, list(overrides)), run_dir)


def reconcile(run_dir: str | os.PathLike, skip: Iterable[str] = ()) -> dict[str, str]:
    """Write SLURM's final state into records the job could not update itself (cancelled, timed out,
    killed on a failed dependency ...), so that the report reads true states; return {key: new state}."""
    changed = {}
    skip = set(skip)
    for row in collect(run_dir):
        if row.key in skip or row.source not in ("sacct", "squeue") or row.state not in records.TERMINAL:
            continue
        rec = records.read_record(run_dir, row.key)
        if rec.get("state") != row.state:
            fields = {"state": row.state, "state_source": row.source}
            if not rec.get("ended"):
                fields["ended"] = records.now()
            if row.elapsed_s is not None:
                fields["elapsed_s"] = row.elapsed_s
            records.update_record(run_dir, row.key, **fields)
            changed[row.key] = row.state
    return changed
