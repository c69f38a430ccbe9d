"""The report of a fabricated run directory whose predictions have analytically known metrics:
the tables must show exactly those numbers, and agree with scikit-learn on the stored predictions."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from report_fixtures import (BASELINE_TEST_FG, CNN_AUGMENT_FG, CNN_FOLD_FG, CNN_OFFICIAL_FG, FOLDS, PNG_MAGIC,
                             REPORT_SECTIONS, WAVELET_TEST_FG, ReportHTML, expected_auc, expected_confusion,
                             fabricate_run)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A fabricated complete run and its report (built once for the module)."""
    from microcal_hpc.report.aggregate import aggregate_job

    fr = fabricate_run(tmp_path_factory.mktemp("synthetic_report") / "run")
    html = Path(aggregate_job(fr.cfg, str(fr.run_dir)))
    metrics = json.loads((html.parent / "metrics.json").read_text())
    return fr, html, metrics


def _rows(metrics, table):
    return metrics["tables"][table]["rows"]


def _row(metrics, table, **match):
    rows = [r for r in _rows(metrics, table) if all(r.get(k) == v for k, v in match.items())]
    assert len(rows) == 1, f"{table}: {len(rows)} rows match {match}"
    return rows[0]


def _analytic(n0, n1, f, g):
    """Every table metric of the fabricated scores, from (n0, n1, f, g) alone."""
    (tn, fp), (fn, tp) = expected_confusion(n0, n1, f, g)
    p1, r1 = tp / (tp + fp), tp / (tp + fn)
    p0, r0 = tn / (tn + fn), tn / (tn + fp)
    return {"auc": expected_auc(n0, n1, f, g), "accuracy": (tn + tp) / (n0 + n1), "sensitivity": r1,
            "specificity": r0, "precision": p1, "f1": 2 * p1 * r1 / (p1 + r1), "precision_0": p0, "recall_0": r0,
            "f1_0": 2 * p0 * r0 / (p0 + r0), "precision_1": p1, "recall_1": r1, "f1_1": 2 * p1 * r1 / (p1 + r1),
            "n": n0 + n1}


def test_cnn_table_shows_the_known_numbers(built):
    fr, html, metrics = built
    e = fr.expected
    for label, key, fg in (("CNN", "cnn/official", CNN_OFFICIAL_FG),
                           ("CNN + augmentation (flips)", "cnn/augment-flips", CNN_AUGMENT_FG)):
        t = e[key]["test"]
        want = _analytic(t["n0"], t["n1"], *fg)
        row = _row(metrics, "cnn_study", model=label)
        for k in ("precision_0", "recall_0", "f1_0", "precision_1", "recall_1", "f1_1", "accuracy", "auc", "n"):
            assert row[k] == pytest.approx(want[k], abs=1e-12), (label, k)
        lo, hi = row["auc_ci"]
        assert 0 <= lo <= want["auc"] <= hi <= 1
    assert expected_auc(12, 12, *CNN_OFFICIAL_FG) == pytest.approx(0.625)  # the fixture's official run
    # cross-validation: mean ± std (ddof=1) of the analytic per-fold values, "5 of 5 folds"
    per_fold = [_analytic(e["cnn/folds"][k]["n0"], e["cnn/folds"][k]["n1"], *CNN_FOLD_FG[k]) for k in range(FOLDS)]
    cv = _row(metrics, "cnn_study", model="CNN cross-validation")
    for k in ("auc", "accuracy", "f1_1", "recall_0"):
        vals = np.array([p[k] for p in per_fold])
        assert cv[k]["mean"] == pytest.approx(vals.mean(), abs=1e-12)
        assert cv[k]["std"] == pytest.approx(vals.std(ddof=1), abs=1e-12)
        assert cv[k]["n"] == FOLDS
    assert "5 of 5 folds" in cv["evaluated_on"]
    text = ReportHTML(html.read_text()).text
    auc = np.array([p["auc"] for p in per_fold])
    assert f"{auc.mean():.3f} ± {auc.std(ddof=1):.3f}" in text
    assert "0.625" in text


def test_wavelet_and_baseline_tables_show_the_known_numbers(built):
    fr, html, metrics = built
    e = fr.expected
    for key, fg in WAVELET_TEST_FG.items():
        fs, clf = key.split("/")
        row = _row(metrics, f"wavelet_{fs}", key=key)
        t = e[f"wavelet/{key}"]["test"]
        want = _analytic(t["n0"], t["n1"], *fg)
        for k in ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1"):
            assert row[f"test_{k}"] == pytest.approx(want[k], abs=1e-12), (key, k)
        folds = [_analytic(d["n0"], d["n1"], d["f"], d["g"]) for d in e[f"wavelet/{key}"]["folds"].values()]
        for k in ("auc", "sensitivity"):
            vals = np.array([p[k] for p in folds])
            assert row[f"cv_{k}"]["mean"] == pytest.approx(vals.mean(), abs=1e-12)
            assert row[f"cv_{k}"]["std"] == pytest.approx(vals.std(ddof=1), abs=1e-12)
        assert row["folds"] == "5 of 5 folds"
        # the SVM stores decision scores with threshold 0: its confusion matrix must use that threshold
        assert row["threshold"] == (0.0 if clf == "svm" else 0.5)
    cv_means = {r["key"]: r["cv_auc"]["mean"] for fs in ("coeffs", "stats") for r in _rows(metrics, f"wavelet_{fs}")}
    assert metrics["best_wavelet"] == max(cv_means, key=cv_means.get)
    base = _row(metrics, "shortcut", key="greylevel-rf")
    t = e["baseline/greylevel-rf"]["test"]
    assert base["test_auc"] == pytest.approx(expected_auc(t["n0"], t["n1"], *BASELINE_TEST_FG), abs=1e-12)
    assert base["folds"] == "5 of 5 folds"


def test_comparison_uses_the_same_folds_and_a_paired_bootstrap(built):
    from microcal_hpc.dataset import load_split
    from microcal_hpc.metrics import paired_bootstrap_auc
    from microcal_hpc.splits import split_groups

    fr, html, metrics = built
    e = fr.expected
    best = metrics["best_wavelet"]
    rows = [r for r in _rows(metrics, "comparison_folds") if isinstance(r["fold"], int)]
    assert [r["fold"] for r in rows] == list(range(FOLDS))
    for r in rows:
        c, w = e["cnn/folds"][r["fold"]], e[f"wavelet/{best}"]["folds"][r["fold"]]
        assert r["cnn_auc"] == pytest.approx(expected_auc(c["n0"], c["n1"], c["f"], c["g"]), abs=1e-12)
        assert r["wavelet_auc"] == pytest.approx(expected_auc(w["n0"], w["n1"], w["f"], w["g"]), abs=1e-12)
        assert r["same_images"] == "yes"
    p = metrics["paired_test"]
    y = e["test_labels"]
    # the bootstrap resamples the groups the jobs use: the grouping merged with pixel-identical images
    groups = split_groups(load_split(fr.run_dir / "data" / "packed.h5", "test", images=False), "group")
    direct = paired_bootstrap_auc(y, e["cnn/official"]["test_prob"], e[f"wavelet/{best}"]["test_prob"],
                                  groups=groups, n_boot=fr.cfg.report.bootstrap, seed=fr.cfg.report.seed)
    for k in ("diff", "ci_low", "ci_high", "p_value", "n_boot"):
        assert p[k] == pytest.approx(direct[k], abs=1e-12), k
    text = ReportHTML(html.read_text()).text
    assert "paired group bootstrap" in text and "never by Test AUC" in text


def test_report_metrics_match_scikit_learn_on_the_stored_predictions(built):
    """Every model's Test AUC/accuracy/loss in metrics.json equals scikit-learn on predictions.npz."""
    from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

    fr, html, metrics = built
    run = fr.run_dir
    study = {r["model"]: r for r in _rows(metrics, "cnn_study")}
    loss = {r["model"]: r for r in _rows(metrics, "cnn_loss")}
    for name, label in (("official", "CNN"), ("augment-flips", "CNN + augmentation (flips)")):
        z = np.load(run / "cnn" / name / "predictions.npz")
        assert study[label]["auc"] == pytest.approx(roc_auc_score(z["test_labels"], z["test_prob"]), abs=1e-12)
        assert study[label]["accuracy"] == pytest.approx(accuracy_score(z["test_labels"], z["test_prob"] >= 0.5))
        assert loss[label]["test_loss"] == pytest.approx(log_loss(z["test_labels"], z["test_prob"]), rel=1e-9)
        assert loss[label]["val_loss"] == pytest.approx(log_loss(z["val_labels"], z["val_prob"]), rel=1e-9)
    for fs in ("coeffs", "stats"):
        for row in _rows(metrics, f"wavelet_{fs}"):
            z = np.load(run / "wavelet" / row["key"] / "predictions.npz")
            assert row["test_auc"] == pytest.approx(roc_auc_score(z["test_labels"], z["test_prob"]), abs=1e-12)
            aucs = [roc_auc_score(z["val_labels"][z["val_fold"] == k], z["val_prob"][z["val_fold"] == k])
                    for k in range(FOLDS)]
            assert row["cv_auc"]["mean"] == pytest.approx(np.mean(aucs), abs=1e-12)
            thr = row["threshold"]
            assert row["test_accuracy"] == pytest.approx(accuracy_score(z["test_labels"], z["test_prob"] >= thr))


def test_html_is_self_contained_and_complete(built):
    fr, html, metrics = built
    doc = ReportHTML(html.read_text())
    assert doc.errors == []
    assert doc.sections == REPORT_SECTIONS
    assert len(doc.images) == len(metrics["figures"]) >= 8
    assert all(src.startswith("data:image/png;base64,") for src in doc.images)  # opens offline
    assert all(b.startswith(PNG_MAGIC) for b in doc.decoded_images(html.parent))
    for f in metrics["figures"]:
        assert (html.parent / f["file"]).read_bytes().startswith(PNG_MAGIC)
    for key in ("cnn_study", "cnn_loss", "wavelet_coeffs", "wavelet_stats", "comparison_folds", "comparison_test",
                "shortcut", "partition", "integrity", "folds", "jobs", "provenance"):
        assert f"table-{key}" in doc.table_ids
    assert "Complete run" in doc.text
    # the data section found the fixture's one cross-split duplicate and one shared group
    integ = metrics["data_integrity"]
    assert len(integ["cross_split_identical_pairs"]) == 1 and len(integ["shared_groups"]) == 1
    md = (html.parent / "report.md").read_text()
    for f in metrics["figures"]:
        assert f"]({f['file']})" in md
    assert md.count("\n### ") == len(metrics["tables"])


def test_second_run_reuses_an_up_to_date_report(built):
    from microcal_hpc.report.aggregate import _up_to_date, aggregate_job
    from microcal_hpc.report.collect import input_fingerprint

    fr, html, _ = built
    before = html.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert aggregate_job(fr.cfg, str(fr.run_dir)) == str(html)
    assert html.stat().st_mtime_ns == before and time.perf_counter() - t0 < 2.0
    assert "up to date" in (html.parent / "aggregate.log").read_text()
    m = fr.run_dir / "cnn" / "official" / "metrics.json"
    m.write_text(m.read_text())  # a rewritten input
    assert not _up_to_date(html.parent, input_fingerprint(fr.run_dir))


def test_fold_mismatch_between_arms_is_flagged(tmp_path):
    """If a CNN fold job validated on other images than the wavelet classifier's fold k, the table says so."""
    from microcal_hpc.report import tables as T
    from microcal_hpc.report.collect import collect_run

    fr = fabricate_run(tmp_path / "run", overrides=["report.bootstrap=20"])
    z = dict(np.load(fr.run_dir / "cnn" / "fold-1" / "predictions.npz"))
    z["val_ids"] = z["val_ids"].copy()
    z["val_ids"][0] = "Train/0/not-in-fold-1.pgm"
    np.savez(fr.run_dir / "cnn" / "fold-1" / "predictions.npz", **z)
    S = T.summarise_run(collect_run(fr.run_dir, fr.cfg), fr.cfg)
    rows = {r["fold"]: r for r in T.comparison(S, fr.cfg).folds.rows}
    assert rows[1]["same_images"] == "NO" and rows[0]["same_images"] == "yes"
    assert rows["mean ± std"]["same_images"] == "NOT all"


def test_fingerprint_follows_a_packed_file_outside_the_run_directory(tmp_path):
    from microcal_hpc.report.collect import input_fingerprint

    run, packed = tmp_path / "run", tmp_path / "elsewhere" / "packed.h5"
    run.mkdir()
    packed.parent.mkdir()
    packed.write_bytes(b"first")
    before = input_fingerprint(run, packed)
    packed.write_bytes(b"second, longer")  # data.packed rewritten: the report must be rebuilt
    assert input_fingerprint(run, packed) != before
    assert input_fingerprint(run) == input_fingerprint(run, tmp_path / "missing.h5")
