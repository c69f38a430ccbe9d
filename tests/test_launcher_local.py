"""The local executor on the real data: a tiny campaign with one job made to fail, then resumed.

1. `microcal-hpc submit --executor local` with MICROCAL_FAIL_JOBS=cnn-fold-1 (the launcher's fault
   injection hook): the campaign runs to its end, exits non-zero, prints the failing job's log path,
   and keeps every other job's results (and the report, which runs after everything).
2. The same command again without the fault: only the failed job and the report run; exit 0; the last
   line is the path of report.html.
3. `--executor debug` after removing the report: only the report runs, in-process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

TINY = ["train.epochs=1", "train.folds=2", "campaign.cv_folds=2", "campaign.augment_presets=[flips]",
        "classify.classifiers=[lr,nb]", "classify.folds=2", "report.bootstrap=200", "campaign.max_parallel=2",
        "campaign.poll_seconds=0.5"]


def tiny_args(root: Path, run: Path, executor: str, extra=()) -> list[str]:
    args = ["submit", "--executor", executor, "--run-dir", str(run), "--set", f"data.root={root}"]
    for s in [*TINY, *extra]:
        args += ["--set", s]
    return args


def job_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env.pop("MICROCAL_FAIL_JOBS", None)
    env.update(extra)
    return env


def microcal(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def explain(run: Path, proc: subprocess.CompletedProcess | None = None) -> str:
    """Everything useful when a campaign test fails: output, status table, the tails of failed jobs' logs."""
    parts = []
    if proc is not None:
        parts += [f"exit code {proc.returncode}", "--- stdout", proc.stdout[-6000:], "--- stderr", proc.stderr[-4000:]]
    status = microcal(["status", "--run-dir", str(run)], job_env(), 60)
    parts += ["--- status", status.stdout, status.stderr]
    for rec_file in sorted((run / "jobs").glob("*.json")):
        rec = json.loads(rec_file.read_text())
        if rec.get("state") != "COMPLETED":
            for key in ("log_err", "log_out", "job_log"):
                p = rec.get(key)
                if p and Path(p).is_file():
                    parts += [f"--- {rec_file.stem}: {p}", Path(p).read_text(errors="replace")[-3000:]]
    return "\n".join(parts)


def records(run: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((run / "jobs").glob("*.json"))}


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.mpi
@pytest.mark.timeout(600)
def test_local_campaign_failure_then_resume(real_root, tmp_path):
    run = tmp_path / "run"
    t0 = time.time()
    proc = microcal(tiny_args(real_root, run, "local"), job_env(MICROCAL_FAIL_JOBS="cnn-fold-1"), 540)
    first_s = time.time() - t0
    why = explain(run, proc) if proc.returncode != 1 else ""
    assert proc.returncode == 1, why
    recs = records(run)
    failed = recs["cnn-fold-1"]
    assert failed["state"] == "FAILED" and "InjectedFault" in failed["error"], explain(run, proc)
    # the failing job's log path is printed, and it holds the traceback
    assert "FAILED: cnn/fold-1" in proc.stdout and f"log: {failed['log_err']}" in proc.stdout, proc.stdout
    assert "InjectedFault" in Path(failed["log_err"]).read_text()
    # every other job ran to completion and kept its results, the report included
    others = {k: r["state"] for k, r in recs.items() if k != "cnn-fold-1"}
    assert set(others.values()) == {"COMPLETED"}, explain(run, proc)
    assert len(recs) == 9
    for name in ("official", "fold-0", "augment-flips"):
        assert (run / "cnn" / name / "metrics.json").is_file()
    assert not (run / "cnn" / "fold-1" / "metrics.json").exists()
    for fs in ("coeffs", "stats"):
        for clf in ("lr", "nb"):
            assert (run / "wavelet" / fs / clf / "metrics.json").is_file()
    assert all((run / "baseline" / name / "metrics.json").is_file() for name in ("brightness-rf", "greylevel-rf"))
    assert (run / "report" / "report.html").is_file()
    assert recs["wavelet-features"]["ranks"] == 2  # launched under mpiexec -n 2 by the local executor
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["ended"] and manifest["config"]["campaign"]["cv_folds"] == 2
    assert "[9/9]" in proc.stdout  # progress: jobs done / total

    # resume: only the failed job and the report run again
    t1 = time.time()
    proc2 = microcal(tiny_args(real_root, run, "local"), job_env(), 300)
    second_s = time.time() - t1
    assert proc2.returncode == 0, explain(run, proc2)
    assert "8 complete, 0 still running, 2 to run" in proc2.stdout, proc2.stdout  # the old report counts
    recs2 = records(run)
    rerun = {k for k in recs2 if recs2[k]["job_id"] != recs[k]["job_id"]}
    assert rerun == {"cnn-fold-1", "aggregate"}
    assert all(r["state"] == "COMPLETED" for r in recs2.values())
    assert recs2["cnn-fold-1"]["history"][-1]["state"] == "FAILED"
    assert (run / "cnn" / "fold-1" / "metrics.json").is_file()
    assert proc2.stdout.strip().splitlines()[-1] == str(run / "report" / "report.html")

    # debug executor: in-process, only what is missing (the report)
    (run / "report" / "report.html").unlink()
    proc3 = microcal(tiny_args(real_root, run, "debug"), job_env(), 300)
    assert proc3.returncode == 0, explain(run, proc3)
    assert "8 complete, 0 still running, 1 to run" in proc3.stdout
    assert records(run)["aggregate"]["executor"] == "debug" and (run / "report" / "report.html").is_file()
    print(f"\nlocal executor: tiny campaign {first_s:.1f} s (one job failing), resume {second_s:.1f} s")
