"""The aggregate job: gather every output of a run directory into RUN/report/ (report.html, report.md,
metrics.json, figures/). Runs as the last job of a campaign and by hand on any run directory,
complete or partial: a partial run gives a report that lists what is missing and a warning (exit 0).

    microcal-hpc aggregate --run-dir runs/main [--config campaign.yaml] [--set report.bootstrap=500] [--force]

Without ``--config`` the run's own config.yaml is used. The report is rebuilt only when an input
changed since the last one (a fingerprint of names, sizes and times), unless ``--force``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from microcal_hpc.config import Config


def report_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "report"


def _report_metrics(out: Path) -> dict:
    """The report's metrics.json in ``out``, or {} when it is missing or unreadable."""
    try:
        return json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _up_to_date(out: Path, fingerprint: str) -> bool:
    return _report_metrics(out).get("inputs_fingerprint") == fingerprint and (out / "report.html").is_file() \
        and (out / "report.md").is_file()


def aggregate_job(cfg: Config, run_dir: str, force: bool = False) -> str:
    """Build RUN/report/{report.html, report.md, metrics.json, figures/}; return the path of report.html.

    Writes RUN/report/aggregate.log; logs a warning (and still succeeds) when the run is partial.
    report.html is removed before a rebuild and written last (the launcher's completeness marker); with
    metrics.json holding the current input fingerprint it marks an up-to-date report.
    """
    from microcal_hpc.atomic import write_json, write_text
    from microcal_hpc.errors import InputError
    from microcal_hpc.joblog import setup_job_logging
    from microcal_hpc.report.build import build_report
    from microcal_hpc.report.collect import input_fingerprint, packed_path
    from microcal_hpc.report.render import render_html, render_markdown

    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: run directory not found")
    out = report_dir(run)
    out.mkdir(parents=True, exist_ok=True)
    log = setup_job_logging(out / "aggregate.log", name="aggregate")
    html_path = out / "report.html"
    fingerprint = input_fingerprint(run, packed_path(cfg, run))
    if not force and _up_to_date(out, fingerprint):
        log.info("report of %s is up to date (inputs unchanged): %s", run, html_path)
        return str(html_path)
    t0 = time.perf_counter()
    log.info("aggregating %s", run)
    html_path.unlink(missing_ok=True)
    report, metrics, coll = build_report(cfg, run, out)
    metrics["inputs_fingerprint"] = fingerprint
    page = render_html(report, embed=True)
    write_text(out / "report.md", render_markdown(report))
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


def configure_parser(p: argparse.ArgumentParser) -> None:
    from microcal_hpc.cli import add_config_arguments

    p.add_argument("--run-dir", required=True, help="the run directory to report on (RUN/ of docs/outputs.md)")
    p.add_argument("--force", action="store_true", help="rebuild the report even if no input changed")
    add_config_arguments(p)


def run(args: argparse.Namespace) -> int:
    from microcal_hpc.cli import config_from_args
    from microcal_hpc.errors import InputError

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise InputError(f"{run_dir}: run directory not found")
    if not args.config and (run_dir / "config.yaml").is_file():
        args.config = str(run_dir / "config.yaml")
    cfg = config_from_args(args)
    path = aggregate_job(cfg, str(run_dir), force=args.force)
    meta = _report_metrics(report_dir(run_dir))
    if meta.get("complete") is False:
        st = meta.get("status", {})
        n = sum(len(st.get(k, [])) for k in ("missing", "incomplete", "failed_jobs", "unfinished_jobs"))
        print(f"microcal-hpc aggregate: warning: partial run: {n} job output(s) missing, incomplete, failed or "
              f"unfinished; the report lists them ({path})", file=sys.stderr)
    print(path)
    return 0
