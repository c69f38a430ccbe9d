"""The aggregate job: gather every output of a run directory into RUN/report/ (report.html, report.md,
metrics.json, metrics.csv, figures/). Runs as the last job of a campaign and by hand on any run directory,
complete or partial: a partial run gives a report that lists what is missing and a warning (exit 0).

Command line: ``microcal-hpc aggregate``. The report is rebuilt only when an input
changed since the last one (a fingerprint of names, sizes and times), unless ``--force``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from microcal_hpc.config import Config


def report_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "report"


def report_metrics(out: Path) -> dict:
    """The report's metrics.json in ``out``, or {} when it is missing or unreadable."""
    try:
        return json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _up_to_date(out: Path, fingerprint: str) -> bool:
    return report_metrics(out).get("inputs_fingerprint") == fingerprint and all(
        (out / name).is_file() for name in ("report.html", "report.md", "metrics.csv"))


def _reconcile_with_slurm(run: Path, log) -> None:
    """The report reads the job records: first write SLURM's final states into those of SLURM jobs that
    could not write them (cancelled, timed out, killed on a failed dependency; the plain sbatch scripts
    write none). Nothing to do, and no SLURM command run, when the run has no SLURM job."""
    from microcal_hpc.launcher.status import reconcile

    try:
        changed = reconcile(run, skip=("aggregate",))
    except Exception as e:  # never let bookkeeping stop the report
        log.warning("could not reconcile job states with SLURM: %s", e)
        return
    for key, state in changed.items():
        log.info("%s: %s (from SLURM)", key, state)


def aggregate_job(cfg: Config, run_dir: str, force: bool = False) -> str:
    """Build RUN/report/{report.html, report.md, metrics.json, metrics.csv, figures/}; return the path of report.html.

    First writes SLURM's final states into the job records that lack them (:func:`_reconcile_with_slurm`).
    Writes RUN/report/aggregate.log; logs a warning (and still succeeds) when the run is partial.
    report.html is removed before a rebuild and written last (the launcher's completeness marker); with
    metrics.json holding the current input fingerprint it marks an up-to-date report.
    """
    from microcal_hpc.atomic import write_json, write_text
    from microcal_hpc.errors import InputError
    from microcal_hpc.joblog import setup_job_logging
    from microcal_hpc.launcher.plan import packed_path
    from microcal_hpc.report.build import build_report
    from microcal_hpc.report.collect import input_fingerprint
    from microcal_hpc.report.render import render_html, render_markdown

    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: run directory not found")
    out = report_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    log = setup_job_logging(out / "aggregate.log", name="aggregate")
    _reconcile_with_slurm(run, log)
    html_path = out / "report.html"
    fingerprint = input_fingerprint(run, Path(packed_path(cfg, run)))
    if not force and _up_to_date(out, fingerprint):
        log.info("report of %s is up to date (inputs unchanged): %s", run, html_path)
        return str(html_path)
    t0 = time.perf_counter()
    log.info("aggregating %s", run)
    html_path.unlink(missing_ok=True)
    report, metrics, coll, csv_text = build_report(cfg, run, out)
    metrics["inputs_fingerprint"] = fingerprint
    page = render_html(report, embed=True)
    write_text(out / "report.md", render_markdown(report))
    write_text(out / "metrics.csv", csv_text)
    metrics["elapsed_s"] = round(time.perf_counter() - t0, 2)
    write_json(out / "metrics.json", metrics)
    write_text(html_path, page)
    for p in coll.problems:
        log.warning("output does not follow docs/outputs.md: %s", p)
    if not coll.complete:
        lines = coll.status_lines()
        log.warning("partial run: %d item(s) missing, incomplete, failed or unfinished; the report lists them:\n  %s",
                    len(lines), "\n  ".join(lines))
    log.info("report written in %.1f s: %s (figures: %d)", time.perf_counter() - t0, html_path, len(report.figures()))
    return str(html_path)
