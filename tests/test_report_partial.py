"""The report of a partial run (a CV fold missing, a job failed), of an empty run directory, and of a
run directory that does not exist, through the command line as a user runs it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from report_fixtures import CNN_FOLD_FG, REPORT_SECTIONS, ReportHTML, expected_auc, fabricate_run

pytestmark = pytest.mark.timeout(180)


def _aggregate(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "jobs", "aggregate", *args], capture_output=True, text=True,
                          env=env, timeout=150)


def test_partial_run_is_reported_and_exits_zero_with_a_warning(tmp_path):
    fr = fabricate_run(tmp_path / "run", drop_folds=(3,), failed=("augment-flips",))
    r = _aggregate("--run-dir", str(fr.run_dir))
    assert r.returncode == 0, r.stderr
    assert "microcal-hpc aggregate: warning: partial run" in r.stderr
    html = Path(r.stdout.strip().splitlines()[-1])
    assert html == fr.run_dir / "report" / "report.html"
    doc = ReportHTML(html.read_text())
    assert doc.errors == [] and doc.sections == REPORT_SECTIONS
    # the visible box names the missing fold and the failed job with its error and log
    assert "Partial run: missing or failed jobs" in doc.h3
    assert "missing: cnn/fold-3 (expected by the config, no output)" in doc.text
    assert "failed job: cnn/augment-flips (state FAILED: RuntimeError: fabricated failure; log" in doc.text
    assert "incomplete: cnn/augment-flips: no metrics.json" in doc.text
    assert "not finished: aggregate" not in doc.text  # the report job's own RUNNING record is no problem
    metrics = json.loads((html.parent / "metrics.json").read_text())
    assert metrics["complete"] is False
    assert metrics["status"]["missing"] == ["cnn/fold-3"]
    assert metrics["status"]["failed_jobs"] == ["augment-flips"]
    assert metrics["cnn_folds"] == {"expected": 5, "present": [0, 1, 2, 4]}
    # the CV row rests on the 4 folds there are, and says so
    rows = {r["model"]: r for r in metrics["tables"]["cnn_study"]["rows"]}
    assert "CNN + augmentation (flips)" not in rows
    cv = rows["CNN cross-validation"]
    assert "4 of 5 folds" in cv["evaluated_on"] and cv["auc"]["n"] == 4
    folds = fr.expected["cnn/folds"]
    aucs = [expected_auc(folds[k]["n0"], folds[k]["n1"], *CNN_FOLD_FG[k]) for k in (0, 1, 2, 4)]
    assert cv["auc"]["mean"] == pytest.approx(np.mean(aucs), abs=1e-12)
    assert cv["auc"]["std"] == pytest.approx(np.std(aucs, ddof=1), abs=1e-12)
    assert "validation folds, 4 of 5 folds (mean ± std)" in doc.text
    cmp_folds = [r["fold"] for r in metrics["tables"]["comparison_folds"]["rows"]]
    assert cmp_folds == [0, 1, 2, 4, "mean ± std"]
    assert "partial run" in (html.parent / "aggregate.log").read_text()
    # the failed job's row is marked in the job table
    jobs = {j["name"]: j for j in metrics["tables"]["jobs"]["rows"]}
    assert jobs["augment-flips"]["failed"] is True and jobs["official"]["failed"] is False


def test_empty_run_directory_gives_a_report_listing_everything_missing(tmp_path):
    run = tmp_path / "empty"
    run.mkdir()
    r = _aggregate("--run-dir", str(run), "--set", "campaign.cv_folds=3", "--set", "campaign.augment_presets=[]")
    assert r.returncode == 0, r.stderr
    assert "partial run" in r.stderr
    doc = ReportHTML((run / "report" / "report.html").read_text())
    assert doc.errors == [] and doc.sections == REPORT_SECTIONS
    for name in ("cnn/official", "cnn/fold-0", "cnn/fold-2", "baseline/greylevel-rf"):
        assert f"missing: {name}" in doc.text
    assert "Packed data not found" in doc.text
    assert doc.images == []  # nothing to draw, and no broken image links
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert metrics["cnn_folds"] == {"expected": 3, "present": []}


def test_missing_run_directory_is_a_one_line_error(tmp_path):
    r = _aggregate("--run-dir", str(tmp_path / "nope"))
    assert r.returncode == 2
    assert r.stderr.strip() == f"microcal-hpc aggregate: error: {tmp_path / 'nope'}: run directory not found"
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("state, failed, unfinished", [
    ("SUBMITTING", False, True), ("REQUEUE_HOLD", False, True), ("RUNNING", False, True),
    ("COMPLETED", False, False), ("FAILED", True, False), ("SKIPPED", True, False)])
def test_every_launcher_state_that_is_still_going_counts_as_unfinished_not_failed(tmp_path, state, failed,
                                                                                   unfinished):
    from microcal_hpc.report.collect import JobRecord

    rec = JobRecord(key="cnn-fold-0", name="cnn/fold-0", stage="cnn", state=state, job_id="1", elapsed_s=None,
                    node="", log="", error="", path=tmp_path / "cnn-fold-0.json", raw={})
    assert (rec.failed, rec.unfinished) == (failed, unfinished)
