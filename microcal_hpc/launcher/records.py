"""What the launcher and the jobs write about a campaign: ``RUN/jobs/<key>.json`` and ``RUN/manifest.json``.

A job record is written by two parties: the launcher (at submission: job id, log paths, executor,
state PENDING) and the job itself (RUNNING when it starts, COMPLETED/FAILED when it ends, with the
host and ``CUDA_VISIBLE_DEVICES`` it ran with). Under SLURM a job may start before ``sbatch`` has
returned, so updates are merges under a file lock, and the launcher never moves a record of the same
job id backwards (PENDING after RUNNING). States use SLURM's names: PENDING, RUNNING, COMPLETED,
FAILED, CANCELLED, TIMEOUT, PREEMPTED, REQUEUED, OUT_OF_MEMORY, NODE_FAIL; plus SKIPPED (a job not
run because a dependency failed, local executor) and INTERRUPTED (the process was stopped by a signal).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import getpass
import json
import os
import platform
import socket
from pathlib import Path
from typing import Any, Iterator, Optional

from microcal_hpc.atomic import write_json
from microcal_hpc.provenance import git_info, library_versions

TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL",
            "DEADLINE", "SKIPPED", "INTERRUPTED", "PREEMPTED")
ACTIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "RESIZING", "SUSPENDED",
          "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "SUBMITTING")
_ORDER = {"SUBMITTING": 0, "PENDING": 1, "REQUEUED": 1, "RUNNING": 2}


def now() -> str:
    """Local time, ISO 8601 with offset, to the second."""
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def parse_time(value: Optional[str]) -> Optional[_dt.datetime]:
    if not value:
        return None
    try:
        return _dt.datetime.fromisoformat(value)
    except ValueError:
        return None


def jobs_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "jobs"


def record_path(run_dir: str | os.PathLike, key: str) -> Path:
    return jobs_dir(run_dir) / f"{key}.json"


@contextlib.contextmanager
def _locked(run_dir: str | os.PathLike) -> Iterator[None]:
    """An exclusive lock on RUN/jobs/.lock (no lock where the file system refuses flock)."""
    import fcntl

    d = jobs_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError:  # e.g. Lustre mounted without flock: merges are then best-effort
            pass
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fh, fcntl.LOCK_UN)


def read_record(run_dir: str | os.PathLike, key: str) -> dict[str, Any]:
    """The record of one job ({} when there is none or it is unreadable)."""
    p = record_path(run_dir, key)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def read_records(run_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Every record of a run directory, by key."""
    out = {}
    d = jobs_dir(run_dir)
    if d.is_dir():
        for p in sorted(d.glob("*.json")):
            rec = read_record(run_dir, p.stem)
            if rec:
                out[p.stem] = rec
    return out


def update_record(run_dir: str | os.PathLike, key: str, *, launcher: bool = False, **fields: Any) -> dict:
    """Merge ``fields`` into the record of ``key`` (atomically, under the lock); return the record.

    ``launcher=True``: an update from the submitting process, which must not move a state backwards
    for the same job id (the job may already have written RUNNING or COMPLETED).
    """
    with _locked(run_dir):
        rec = read_record(run_dir, key)
        same_job = rec.get("job_id") and rec.get("job_id") == fields.get("job_id", rec.get("job_id"))
        new_state = fields.get("state")
        if launcher and same_job and new_state in _ORDER:
            old = rec.get("state")
            if old in TERMINAL or _ORDER.get(old, -1) > _ORDER[new_state]:
                fields.pop("state")
        rec.update(fields)
        rec["key"] = key
        rec["updated"] = now()
        write_json(record_path(run_dir, key), rec)
        return rec


def new_submission(run_dir: str | os.PathLike, spec, executor: str) -> dict:
    """Reset the record of a job about to be (re)submitted; earlier attempts go to ``history``."""
    with _locked(run_dir):
        old = read_record(run_dir, spec.key)
        history = list(old.pop("history", []))
        if old.get("state"):
            history.append({k: old.get(k) for k in ("job_id", "state", "submitted", "started", "ended",
                                                    "log_err", "error") if old.get(k) is not None})
        rec = {
            "key": spec.key, "stage": spec.stage, "name": spec.name, "job_type": spec.job_type,
            "executor": executor, "state": "SUBMITTING", "job_id": None, "array": spec.array,
            "array_index": None, "tasks": spec.tasks, "submitted": now(), "started": None, "ended": None,
            "log": None, "log_out": None, "log_err": None, "job_log": spec.job_log, "outputs": list(spec.outputs),
            "depends_on": list(spec.depends_on), "dependency": spec.dependency, "history": history[-10:],
            "updated": now(),
        }
        write_json(record_path(run_dir, spec.key), rec)
        return rec


# ----------------------------------------------------------------------------------------------
# manifest


def write_manifest(run_dir: str | os.PathLike, cfg, executor: str, submitted: list[str]) -> dict:
    """Write RUN/config.yaml and RUN/manifest.json; later submissions append to ``submissions``."""
    from microcal_hpc import __version__
    from microcal_hpc.config import save_config

    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run / "config.yaml")
    path = run / "manifest.json"
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        old = {}
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = None
    manifest = {
        "schema": 1,
        "package": {"name": "microcal-hpc", "version": __version__},
        "python": platform.python_version(),
        "libraries": library_versions(),
        "git": git_info(),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "user": user,
        "run_dir": str(run.resolve()),
        "executor": executor,
        "started": old.get("started") or now(),
        "ended": None,
        "submissions": list(old.get("submissions", [])) + [{"time": now(), "executor": executor, "jobs": submitted}],
        "config": cfg.to_dict(),
    }
    write_json(path, manifest)
    return manifest


def mark_manifest_ended(run_dir: str | os.PathLike) -> None:
    """Set the manifest's end time (the aggregate job or the local executor at the end)."""
    path = Path(run_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    manifest["ended"] = now()
    write_json(path, manifest)
