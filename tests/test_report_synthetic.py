"""The report of a fabricated run directory whose predictions have analytically known metrics:
the tables must show exactly those numbers, and agree with scikit-learn on the stored predictions."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from report_fixtures import (BASELINE_TEST_FG, CNN_AUGMENT_FG, CNN_FOLD_FG, CNN_OFFICIAL_FG, FOLDS, PNG_MAGIC,
                             REPORT_SECTIONS, SALIENCY_SHARE, WAVELET_TEST_FG, ReportHTML, expected_auc,
                             expected_confusion, fabricate_run, train_letter)

pytestmark = pytest.mark.timeout(300)


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
    for name, fg in BASELINE_TEST_FG.items():
        base = _row(metrics, "shortcut", key=f"baseline:{name}")
        t = e[f"baseline/{name}"]["test"]
        assert base["test_auc"] == pytest.approx(expected_auc(t["n0"], t["n1"], *fg), abs=1e-12)
        assert base["folds"] == "5 of 5 folds"
    labels = {r["key"]: r["model"] for r in _rows(metrics, "shortcut")}
    assert labels["baseline:brightness-rf"] == "Brightness baseline (brightness-rf)"
    assert labels["baseline:greylevel-rf"] == "Grey-level statistics with extremes (greylevel-rf)"


def test_cnn_is_compared_with_the_reference_pipeline_and_the_best_by_cv_on_the_same_folds_and_images(built):
    from microcal_hpc.dataset import load_split
    from microcal_hpc.metrics import paired_bootstrap_auc
    from microcal_hpc.splits import split_groups

    fr, html, metrics = built
    e = fr.expected
    assert (metrics["reference_pipeline"], metrics["best_wavelet"]) == ("coeffs/rf", "stats/rf")
    comps = {c["wavelet"]: c for c in metrics["comparisons"]}
    assert set(comps) == {"coeffs/rf", "stats/rf"}
    assert comps["coeffs/rf"]["role"] == "reference pipeline" and comps["stats/rf"]["role"].startswith("best")
    rows = [r for r in _rows(metrics, "comparison_folds") if isinstance(r["fold"], int)]
    assert [r["fold"] for r in rows] == list(range(FOLDS))
    for r in rows:
        c = e["cnn/folds"][r["fold"]]
        assert r["cnn_auc"] == pytest.approx(expected_auc(c["n0"], c["n1"], c["f"], c["g"]), abs=1e-12)
        for i, key in enumerate(c["wavelet"] for c in metrics["comparisons"]):
            w = e[f"wavelet/{key}"]["folds"][r["fold"]]
            assert r[f"w{i}_auc"] == pytest.approx(expected_auc(w["n0"], w["n1"], w["f"], w["g"]), abs=1e-12)
            assert r[f"same{i}"] == "yes"
    # paired bootstraps resample the groups the jobs use (cases merged with pixel-identical images)
    packed = fr.run_dir / "data" / "packed.h5"
    test_groups = split_groups(load_split(packed, "test", images=False), "case")
    train = load_split(packed, "train", images=False)
    oof = np.empty(len(train))
    for k in range(FOLDS):  # the CNN fold models' validation predictions, as one out-of-fold vector
        z = np.load(fr.run_dir / "cnn" / f"fold-{k}" / "predictions.npz")
        pos = {i: j for j, i in enumerate(train.ids.tolist())}
        oof[[pos[i] for i in z["val_ids"].tolist()]] = z["val_prob"]
    for key, c in comps.items():
        direct = paired_bootstrap_auc(e["test_labels"], e["cnn/official"]["test_prob"], e[f"wavelet/{key}"]["test_prob"],
                                      groups=test_groups, n_boot=fr.cfg.report.bootstrap, seed=fr.cfg.report.seed)
        for k in ("diff", "ci_low", "ci_high", "p_value", "n_boot"):
            assert c["paired"]["test"][k] == pytest.approx(direct[k], abs=1e-12), (key, k)
        z = np.load(fr.run_dir / "wavelet" / key / "predictions.npz")
        assert list(z["val_ids"]) == list(train.ids)
        cv = paired_bootstrap_auc(train.labels, oof, z["val_prob"], groups=split_groups(train, "case"),
                                  n_boot=fr.cfg.report.bootstrap, seed=fr.cfg.report.seed)
        assert c["paired"]["cv"]["diff"] == pytest.approx(cv["diff"], abs=1e-12)
        assert c["paired"]["cv"]["ci_low"] == pytest.approx(cv["ci_low"], abs=1e-12)
    text = ReportHTML(html.read_text()).text
    assert "never by Test AUC" in text and "paired group bootstrap" in text.lower()


def test_the_ensemble_row_is_the_mean_of_the_fold_models_probabilities(built):
    from sklearn.metrics import accuracy_score, roc_auc_score

    fr, html, metrics = built
    e = fr.expected
    mean = np.mean([e["cnn/folds_test_prob"][k] for k in range(FOLDS)], axis=0)
    row = _row(metrics, "cnn_study", model=f"CNN ensemble (mean P of {FOLDS} fold models)")
    assert row["auc"] == pytest.approx(roc_auc_score(e["test_labels"], mean), abs=1e-12)
    assert row["accuracy"] == pytest.approx(accuracy_score(e["test_labels"], mean >= 0.5), abs=1e-12)
    assert row["evaluated_on"] == "official Test, mean P of the fold models" and row["auc_ci"] is not None
    csv_rows = _csv(html)
    ens = [r for r in csv_rows if r["model"] == "cnn/ensemble" and r["evaluation"] == "test" and r["metric"] == "auc"]
    assert len(ens) == 1 and float(ens[0]["value"]) == pytest.approx(row["auc"], abs=1e-12)


def _csv(html: Path) -> list[dict]:
    import csv

    with open(html.parent / "metrics.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


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
        assert len(z["val_labels"]) == 0 and loss[label]["val_loss"] is None  # trained on all of Train
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
    for key in ("cnn_study", "cnn_loss", "wavelet_coeffs", "wavelet_stats", "comparison_folds", "comparison_paired",
                "shortcut", "within_source", "test_without_overlap", "reference_study", "settings", "partition",
                "integrity", "folds", "jobs", "provenance"):
        assert f"table-{key}" in doc.table_ids
    assert "Complete run" in doc.text
    # the data section found the fixture's one cross-split duplicate and one shared group
    integ = metrics["data_integrity"]
    assert len(integ["cross_split_identical_pairs"]) == 1 and len(integ["shared_groups"]) == 1
    md = (html.parent / "report.md").read_text()
    for f in metrics["figures"]:
        assert f"]({f['file']})" in md
    assert md.count("\n### ") == len(metrics["tables"])
    # the text says the best classifier is in bold: so it is, in both renderings
    assert "is in bold" in doc.text
    best_md = [ln for ln in md.splitlines() if ln.startswith("| **")]
    assert len(best_md) == 1 and "Random forest" in best_md[0]
    assert html.read_text().count('<tr class="best">') == 1


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


def test_a_report_built_by_other_code_is_built_again(built, monkeypatch):
    """Unchanged inputs but another version of the package (its source digest): the report is not reused."""
    from microcal_hpc import provenance
    from microcal_hpc.report.aggregate import _up_to_date
    from microcal_hpc.report.collect import input_fingerprint

    fr, html, _ = built
    now = input_fingerprint(fr.run_dir)
    digest = provenance.source_digest()
    assert len(digest) == 16 and provenance.source_digest() == digest
    monkeypatch.setattr(provenance, "source_digest", lambda: "0" * 16)
    other = input_fingerprint(fr.run_dir)
    assert other != now and not _up_to_date(html.parent, other)


def test_fold_mismatch_between_arms_is_flagged(tmp_path):
    """If a CNN fold job validated on other images than the wavelet classifier's fold k, the table says so."""
    from microcal_hpc.report import tables as T
    from microcal_hpc.report.collect import collect_run

    fr = fabricate_run(tmp_path / "run", overrides=["report.bootstrap=20"])
    z = dict(np.load(fr.run_dir / "cnn" / "fold-1" / "predictions.npz"))
    z["val_ids"] = z["val_ids"].copy()
    z["val_ids"][0] = "Train/0/not-in-fold-1.pgm"
    np.savez(fr.run_dir / "cnn" / "fold-1" / "predictions.npz", **z)
    from microcal_hpc.report.comparison import compare_all, comparison_tables

    S = T.summarise_run(collect_run(fr.run_dir, fr.cfg), fr.cfg)
    folds = comparison_tables(S, compare_all(S, fr.cfg), fr.cfg)[0]
    rows = {r["fold"]: r for r in folds.rows}
    assert rows[1]["same0"] == "NO" and rows[0]["same0"] == "yes"
    assert rows["mean ± std"]["same0"].startswith("NOT all")


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


def test_within_source_table_keeps_letters_with_both_classes_and_matches_scikit_learn(built):
    from sklearn.metrics import roc_auc_score

    fr, html, metrics = built
    tr = fr.expected["splits"]["train"]
    letters = np.array([train_letter(lab, int(c)) for lab, c in zip(tr["labels"], tr["cases"])])
    rows = {r["subset"]: r for r in _rows(metrics, "within_source")}
    # "s" (normals only) and "m" (clusters only) have one class in Train: dropped; "n" has both
    assert [k for k in rows if k.startswith("source ")] == ["source n"]
    assert "“m”: 0 normal, " in metrics["tables"]["within_source"]["note"]
    n = letters == "n"
    assert (rows["source n"]["n0"], rows["source n"]["n1"]) == (int((tr["labels"][n] == 0).sum()),
                                                                int((tr["labels"][n] == 1).sum()))
    cols = {c["header"]: c["key"] for c in metrics["tables"]["within_source"]["columns"]}
    z = np.load(fr.run_dir / "baseline" / "brightness-rf" / "predictions.npz")
    bright = cols["Brightness baseline (brightness-rf)"]
    assert rows["source n"][bright] == pytest.approx(roc_auc_score(z["val_labels"][n], z["val_prob"][n]), abs=1e-12)
    # letters in one class anywhere in the data are left out of the pooled row: m, s (Train), t, u (Test)
    ws = metrics["shortcut"]["within_source"]
    assert ws["excluded"] == ["m", "s", "t", "u"] and ws["pooled_key"] == "sources except m/s/t/u"
    assert rows["sources except m/s/t/u"]["n0"] == rows["source n"]["n0"]
    text = ReportHTML(html.read_text()).text
    # the fixture's Test patch from a Train source image keeps that image's letter m
    assert "the cluster patches have source letter(s) m, u and the normal patches t" in text
    assert "separates the Test classes perfectly" in text


def test_saliency_share_on_the_brightest_pixels_is_measured_over_the_test_positives(built):
    fr, html, metrics = built
    s = metrics["saliency"]
    n1 = int(fr.expected["test_labels"].sum())
    assert s["positives"] == {"mean": pytest.approx(SALIENCY_SHARE[1]), "n": n1}
    assert s["negatives"]["mean"] == pytest.approx(SALIENCY_SHARE[0])
    assert "gallery.png" in {Path(f["file"]).name for f in metrics["figures"]}
    assert f"averaged over the {n1} Test positives: 100.0%" in ReportHTML(html.read_text()).text


def test_report_without_saliency_maps_says_so_and_still_draws_the_gallery(tmp_path):
    from microcal_hpc.report.aggregate import aggregate_job

    fr = fabricate_run(tmp_path / "run", overrides=["report.bootstrap=20"], saliency=False)
    html = Path(aggregate_job(fr.cfg, str(fr.run_dir)))
    doc = ReportHTML(html.read_text())
    assert "No saliency maps" in doc.h3 and "saliency.npz is missing" in doc.text
    metrics = json.loads((html.parent / "metrics.json").read_text())
    assert metrics["saliency"] is None and "gallery.png" in {Path(f["file"]).name for f in metrics["figures"]}


def test_test_auc_without_the_images_that_overlap_train(built):
    from sklearn.metrics import roc_auc_score

    fr, html, metrics = built
    te = fr.expected["splits"]["test"]
    # the fixture: Test/0 #0 pixel-identical to a Train patch, one Test/1 patch from a Train group (and case)
    keep = np.ones(len(te["labels"]), bool)
    keep[0] = False
    keep[int(np.flatnonzero(te["labels"] == 1)[1])] = False
    table = metrics["tables"]["test_without_overlap"]
    assert "2 of 24 dropped, 22 remain (11 normal, 11 cluster)" in table["basis"]
    row = next(r for r in table["rows"] if r["key"] == "cnn/official")
    prob = fr.expected["cnn/official"]["test_prob"]
    assert row["auc_clean"] == pytest.approx(roc_auc_score(te["labels"][keep], prob[keep]), abs=1e-12)
    assert row["n_clean"] == 22 and row["diff_auc"] == pytest.approx(row["auc_clean"] - row["auc_all"])
    assert {r["key"] for r in table["rows"]} >= {"cnn/ensemble", "wavelet/stats/svm", "baseline/greylevel-rf"}


def test_metrics_csv_is_one_tidy_table_with_every_number(built):
    import csv

    from microcal_hpc.report.export import CSV_COLUMNS

    fr, html, metrics = built
    text = (html.parent / "metrics.csv").read_text(encoding="utf-8")
    lines = text.splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS)
    rows = _csv(html)
    assert all(len(r) == len(CSV_COLUMNS) and None not in r for r in rows)  # no row longer or shorter than the header
    for r in rows:  # numbers parse as numbers, missing values are empty
        for c in ("value", "std", "ci_low", "ci_high", "n_images", "n_folds"):
            assert r[c] == "" or np.isfinite(float(r[c])), (r, c)
    key = {(r["model"], r["evaluation"], r["subset"], r["metric"]): r for r in rows}
    assert len(key) == len(rows)  # one row per model x evaluation x subset x metric
    study = _row(metrics, "cnn_study", model="CNN")
    off = key[("cnn/official", "test", "", "auc")]
    assert float(off["value"]) == pytest.approx(study["auc"], abs=1e-12)
    assert [float(off["ci_low"]), float(off["ci_high"])] == pytest.approx(study["auc_ci"], abs=1e-12)
    svm = _row(metrics, "wavelet_coeffs", key="coeffs/svm")
    cv = key[("wavelet/coeffs/svm", "cv_folds", "", "auc")]
    assert (float(cv["value"]), float(cv["std"]), int(cv["n_folds"])) == (
        pytest.approx(svm["cv_auc"]["mean"]), pytest.approx(svm["cv_auc"]["std"]), FOLDS)
    assert key[("cnn/folds", "cv_pooled", "source n", "auc")]["label"].startswith("CNN")
    pooled_key = metrics["shortcut"]["within_source"]["pooled_key"]
    pooled = key[("cnn/folds", "cv_pooled", pooled_key, "auc")]
    row = _row(metrics, "within_source", subset=pooled_key)
    assert int(pooled["n_images"]) == row["n0"] + row["n1"] and float(pooled["ci_low"]) <= float(pooled["value"])
    assert {r["evaluation"] for r in rows} == {"test", "test_without_overlap", "cv_folds", "cv_pooled"}


def test_metrics_csv_quotes_fields_that_hold_commas_or_quotes():
    import csv
    import io

    from microcal_hpc.report.export import CSV_COLUMNS, metrics_csv

    row = dict.fromkeys(CSV_COLUMNS, None)
    row.update(model="m", label='RF on "coeffs", 5 folds', subset="sources except b, u", metric="auc", value=0.5,
               n_images=12)
    text = metrics_csv([row])
    back = list(csv.DictReader(io.StringIO(text)))
    assert len(back) == 1 and back[0]["label"] == 'RF on "coeffs", 5 folds' and back[0]["subset"] == "sources except b, u"
    assert back[0]["value"] == "0.5" and back[0]["std"] == "" and back[0]["n_images"] == "12"
    assert text.count("\n") == 2 and "\r" not in text  # header + 1 line, Unix line ends


def test_reference_study_table_and_settings(built):
    from sklearn.metrics import roc_auc_score

    from microcal_hpc.report.reference import REFERENCE_FIGURES

    fr, html, metrics = built
    rows = {r["measure"]: r for r in metrics["tables"]["reference_study"]["rows"]}
    assert set(rows) == {f.measure for f in REFERENCE_FIGURES.values()}
    rf = rows[REFERENCE_FIGURES["rf_coeffs"].measure]
    z = np.load(fr.run_dir / "wavelet" / "coeffs" / "rf" / "predictions.npz")
    hard = [roc_auc_score(z["val_labels"][z["val_fold"] == k], z["val_prob"][z["val_fold"] == k] >= 0.5)
            for k in range(FOLDS)]
    assert f"from hard labels {np.mean(hard):.3f} ± {np.std(hard, ddof=1):.3f}" in rf["this_run"]
    assert rows[REFERENCE_FIGURES["cnn_test"].measure]["this_run"].startswith("AUC 0.625")
    assert "here: trained on 80 Train images" in rows[REFERENCE_FIGURES["cnn_test"].measure]["method"]
    assert "0.87" in rf["reference"] and "hard" in rf["method"]
    settings = {r["setting"]: r["value"] for r in metrics["tables"]["settings"]["rows"]}
    assert settings["Cross-validation"].startswith("5 folds, grouping 'case'")
    assert "Augmentation 'flips'" in settings and settings["Augmentation 'flips'"].endswith("(run here)")
