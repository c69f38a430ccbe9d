"""The report of a tiny real run: the real packed data, 1-epoch CNN jobs (official and 2 folds), one
fast wavelet classifier and the two grey-level baselines, produced by the real job functions. Every section
is present, every image resolves, the HTML parses, and the numbers match scikit-learn on the stored
predictions (and the jobs' own bootstrap CIs, computed with the same groups and seed)."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from report_fixtures import PNG_MAGIC, REPORT_SECTIONS, ReportHTML

pytestmark = [pytest.mark.realdata, pytest.mark.slow, pytest.mark.timeout(300)]

OVERRIDES = ["train.epochs=1", "train.batch_size=64", "train.folds=2", "campaign.cv_folds=2",
             "campaign.augment_presets=[]", "classify.folds=2", "classify.classifiers=[lr]",
             "classify.feature_sets=[stats]", "wavelet.features=[stats]", "report.bootstrap=200",
             "report.gallery_size=6"]


@pytest.fixture(scope="module")
def real_run(packed_real, tmp_path_factory):
    """RUN/ built by the real job functions, then aggregated."""
    from microcal_hpc.report.aggregate import aggregate_job
    from microcal_hpc.baseline import baseline_job
    from microcal_hpc.cnn.train import train_cnn as train_job
    from microcal_hpc.wavelet.classify import classify_job
    from microcal_hpc.wavelet.features_job import features_job
    from microcal_hpc.config import load_config, save_config

    run = tmp_path_factory.mktemp("real_report") / "run"
    cfg = load_config(None, OVERRIDES)
    (run / "data").mkdir(parents=True)
    shutil.copy(packed_real, run / "data" / "packed.h5")
    data = str(run / "data" / "packed.h5")
    save_config(cfg, run / "config.yaml")
    for name, fold in (("official", None), ("fold-0", 0), ("fold-1", 1)):
        c = copy.deepcopy(cfg)
        c.train.fold = fold
        train_job(c, data, str(run / "cnn"), name)
    features = features_job(cfg, data, str(run / "wavelet" / "features.h5"))
    classify_job(cfg, features, str(run / "wavelet"))
    baseline_job(cfg, data, str(run / "baseline"))
    html = Path(aggregate_job(cfg, str(run)))
    return run, cfg, html, json.loads((html.parent / "metrics.json").read_text())


def test_real_run_report_has_every_section_and_figure(real_run):
    run, cfg, html, metrics = real_run
    doc = ReportHTML(html.read_text())
    assert doc.errors == []
    assert doc.sections == REPORT_SECTIONS
    assert metrics["complete"] is True, metrics["status"]
    assert metrics["status"]["problems"] == []  # every output follows docs/outputs.md
    names = {Path(f["file"]).name for f in metrics["figures"]}
    assert names == {"data_partition.png", "patch_grid.png", "learning_curves.png", "confusion_matrices.png",
                     "roc_test.png", "roc_cv.png", "wavelet_bars.png", "gallery.png"}
    images = doc.decoded_images(html.parent)
    assert len(images) == len(names) and all(b.startswith(PNG_MAGIC) for b in images)
    assert all((html.parent / f["file"]).stat().st_size > 5000 for f in metrics["figures"])
    for key in ("cnn_study", "cnn_loss", "wavelet_stats", "comparison_folds", "comparison_paired", "shortcut",
                "within_source", "test_without_overlap", "reference_study", "settings", "partition", "integrity",
                "acquisition_codes", "folds", "provenance"):
        assert f"table-{key}" in doc.table_ids, key
    # the real data's counts and quirks (NOTES.md): 636 Train (330/306), 161 Test (84/77), 9 identical pairs across
    part = {r["split"]: r for r in metrics["tables"]["partition"]["rows"]}
    assert (part["Train"]["n0"], part["Train"]["n1"], part["Test"]["n0"], part["Test"]["n1"]) == (330, 306, 84, 77)
    assert len(metrics["data_integrity"]["cross_split_identical_pairs"]) == 9
    cv = next(r for r in metrics["tables"]["cnn_study"]["rows"] if r["model"] == "CNN cross-validation")
    assert "2 of 2 folds" in cv["evaluated_on"]
    assert all(r["same0"] == "yes" for r in metrics["tables"]["comparison_folds"]["rows"][:-1])
    assert "Brightness alone" in doc.text and "12 grey-level statistics with extremes" in doc.text
    # the real data's source confound (NOTES.md): every Test cluster patch is b or u, no normal patch is
    assert "the cluster patches have source letter(s) b, u" in doc.text
    assert "separates the Test classes perfectly" in doc.text
    ws = metrics["shortcut"]["within_source"]
    assert {"b", "u"} <= set(ws["excluded"]) and ws["letters"]  # letters with both classes in Train exist
    settings = {r["setting"]: r["value"] for r in metrics["tables"]["settings"]["rows"]}
    assert settings["CNN parameters"] == "568,449"  # read from model.keras
    assert settings["CNN architecture"].startswith("Conv 32 3×3 relu → MaxPool 2×2 → Conv 64")


def test_real_run_numbers_match_scikit_learn_and_the_jobs(real_run):
    from sklearn.metrics import accuracy_score, roc_auc_score

    run, cfg, html, metrics = real_run
    rows = {r["model"]: r for r in metrics["tables"]["cnn_study"]["rows"]}
    z = np.load(run / "cnn" / "official" / "predictions.npz")
    job = json.loads((run / "cnn" / "official" / "metrics.json").read_text())
    assert rows["CNN"]["auc"] == pytest.approx(roc_auc_score(z["test_labels"], z["test_prob"]), abs=1e-12)
    assert rows["CNN"]["accuracy"] == pytest.approx(accuracy_score(z["test_labels"], z["test_prob"] >= 0.5))
    assert rows["CNN"]["n"] == 161
    # same groups, resamples and seed as the training job: the same bootstrap CI
    assert rows["CNN"]["auc_ci"] == pytest.approx(job["test"]["auc_ci"], abs=1e-12)
    fold_aucs = []
    for k in (0, 1):
        zk = np.load(run / "cnn" / f"fold-{k}" / "predictions.npz")
        fold_aucs.append(roc_auc_score(zk["val_labels"], zk["val_prob"]))
    assert rows["CNN cross-validation"]["auc"]["mean"] == pytest.approx(np.mean(fold_aucs), abs=1e-12)
    assert rows["CNN cross-validation"]["auc"]["std"] == pytest.approx(np.std(fold_aucs, ddof=1), abs=1e-12)
    w = metrics["tables"]["wavelet_stats"]["rows"][0]
    zw = np.load(run / "wavelet" / "stats" / "lr" / "predictions.npz")
    assert w["test_auc"] == pytest.approx(roc_auc_score(zw["test_labels"], zw["test_prob"]), abs=1e-12)
    wjob = json.loads((run / "wavelet" / "stats" / "lr" / "metrics.json").read_text())
    assert w["cv_auc"]["mean"] == pytest.approx(wjob["cv"]["summary"]["auc"]["mean"], abs=1e-12)
    for name in ("brightness-rf", "greylevel-rf"):
        base = next(r for r in metrics["tables"]["shortcut"]["rows"] if r["key"] == f"baseline:{name}")
        zb = np.load(run / "baseline" / name / "predictions.npz")
        assert base["test_auc"] == pytest.approx(roc_auc_score(zb["test_labels"], zb["test_prob"]), abs=1e-12)
    (comp,) = metrics["comparisons"]  # no RF on coeffs in this run: only the best by CV AUC
    assert comp["wavelet"] == "stats/lr" and comp["role"] == "best wavelet model by CV AUC"
    p = comp["paired"]["test"]
    assert p["diff"] == pytest.approx(rows["CNN"]["auc"] - w["test_auc"], abs=1e-12)
    assert p["ci_low"] <= p["diff"] <= p["ci_high"]
    clean = next(r for r in metrics["tables"]["test_without_overlap"]["rows"] if r["key"] == "cnn/official")
    keep = ~np.isin(z["test_ids"], [i for i in z["test_ids"] if i in set(_overlapping(run))])
    assert clean["auc_clean"] == pytest.approx(roc_auc_score(z["test_labels"][keep], z["test_prob"][keep]), abs=1e-12)


def _overlapping(run) -> list[str]:
    """Test ids pixel-identical to a Train image or sharing a group or case with Train, from the packed file."""
    from microcal_hpc.dataset import load_split

    tr, te = (load_split(run / "data" / "packed.h5", s, images=False) for s in ("train", "test"))
    bad = np.isin(te.pixel_hash, tr.pixel_hash) | np.isin(te.groups, tr.groups) | np.isin(te.cases, tr.cases)
    return te.ids[bad].tolist()
