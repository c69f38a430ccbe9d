"""The classifier job on the real data: outputs in the docs/outputs.md layout, score-based AUC, shared folds."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from microcal_hpc.config import Config
from microcal_hpc.dataset import load_split
from microcal_hpc.errors import ConfigError, InputError
from microcal_hpc.splits import train_validation_indices
from microcal_hpc.wavelet.classifiers import CLASSIFIERS, make_classifier, scores


@pytest.fixture(scope="module")
def real_features(packed_real, tmp_path_factory):
    from microcal_hpc.wavelet.features_job import features_job

    out = tmp_path_factory.mktemp("features") / "features.h5"
    features_job(Config(), str(packed_real), str(out))  # default: coeffs and stats
    return out


def _cfg(classifiers, feature_sets) -> Config:
    cfg = Config()
    cfg.classify.classifiers = classifiers
    cfg.classify.feature_sets = feature_sets
    cfg.report.bootstrap = 200  # fewer resamples: a fast test
    return cfg.validate()


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_classifiers_write_outputs_with_probability_based_auc(real_features, packed_real, tmp_path):
    from microcal_hpc.wavelet.classify import classify_job

    cfg = _cfg(["svm", "nb"], ["coeffs", "stats"])
    run = tmp_path / "wavelet"
    folders = classify_job(cfg, str(real_features), str(run))
    assert sorted(folders) == sorted(str(run / fs / m) for fs in ("coeffs", "stats") for m in ("svm", "nb"))

    train = load_split(packed_real, "train", images=False)
    cnn_val = {k: train_validation_indices(train, cfg.train.group_by, cfg.train.seed, k, cfg.train.folds)[1]
               for k in range(cfg.train.folds)}
    for folder in folders:
        files = {p.name for p in (run / folder).iterdir()}
        assert {"metrics.json", "predictions.npz", "config.yaml", "classify.log"} <= files
        m = json.loads((run / folder / "metrics.json").read_text())
        p = np.load(run / folder / "predictions.npz")
        assert (m["schema"], m["arm"], m["run"], m["folds"], m["group_by"]) == (1, "wavelet", "cv", 5, "case")
        assert m["feature_set"] in ("coeffs", "stats") and m["model"] in ("svm", "nb")
        assert m["n_features"] == {"coeffs": 2430, "stats": 45}[m["feature_set"]]
        assert m["wavelet"]["boundary_free_max_level"] == 2 and m["wavelet"]["effective_level"] == 4

        # Test AUC: from the stored scores, not from hard labels (those give a different, lower number)
        auc = roc_auc_score(p["test_labels"], p["test_prob"])
        assert m["test"]["auc"] == pytest.approx(auc, abs=1e-12)
        hard = roc_auc_score(p["test_labels"], (p["test_prob"] >= 0.5).astype(int))
        assert abs(auc - hard) > 1e-3
        lo, hi = m["test"]["auc_ci"]
        assert 0 <= lo < hi <= 1
        assert list(p["test_ids"]) == list(load_split(packed_real, "test", images=False).ids)

        # CV: out-of-fold scores of every Train image, folds = the CNN's folds (same splitter and seed)
        assert list(p["val_ids"]) == list(train.ids)
        assert len(m["cv"]["per_fold"]) == 5 and m["cv"]["summary"]["auc"]["n"] == 5
        for k in range(5):
            rows = np.flatnonzero(p["val_fold"] == k)
            assert np.array_equal(rows, cnn_val[k])
            fold_auc = roc_auc_score(p["val_labels"][rows], p["val_prob"][rows])
            assert m["cv"]["per_fold"][k]["auc"] == pytest.approx(fold_auc, abs=1e-12)
        assert m["cv"]["summary"]["auc"]["mean"] == pytest.approx(
            np.mean([f["auc"] for f in m["cv"]["per_fold"]]), abs=1e-12)
        assert m["cv"]["summary"]["auc"]["mean"] > 0.8  # both models find signal in both feature sets
        assert m["score"] == ("sigmoid(decision_function)" if m["model"] == "svm" else "predict_proba")

    # complete outputs are not recomputed
    metrics = run / "stats" / "svm" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    classify_job(cfg, str(real_features), str(run))
    assert metrics.stat().st_mtime_ns == before
    assert "already complete" in (run / "classify.log").read_text()


@pytest.mark.realdata
def test_bad_requests_fail_before_any_work(real_features, tmp_path):
    from microcal_hpc.wavelet.classify import classify_job

    with pytest.raises(ConfigError, match="unknown classifier.*xgb"):
        classify_job(_cfg(["rf", "xgb"], ["stats"]), str(real_features), str(tmp_path / "w"))
    with pytest.raises(InputError, match="features file not found"):
        classify_job(_cfg(["rf"], ["stats"]), str(tmp_path / "missing.h5"), str(tmp_path / "w"))
    assert not (tmp_path / "w" / "stats").exists()


def test_every_classifier_is_a_pipeline_that_scores_both_classes():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 6))
    y = (X[:, 0] + 0.3 * rng.normal(size=80) > 0).astype(int)
    for name in CLASSIFIERS:
        model = make_classifier(name, seed=0).fit(X[:60], y[:60])
        s = scores(model, X[60:])
        assert s.shape == (20,) and np.all((s >= 0) & (s <= 1)), name
        assert roc_auc_score(y[60:], s) > 0.7, name
        if name == "svm":  # sigmoid of the decision value: threshold 0.5 is SVC.predict's threshold 0
            assert np.array_equal((s >= 0.5).astype(int), model.predict(X[60:]))
