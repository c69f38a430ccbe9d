"""The classifier job on the real data: outputs in the docs/outputs.md layout, score-based AUC, shared folds."""
from __future__ import annotations

import json
import os

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


# ---- parallel fits: one pool for every fit of every model, the same results for any number of workers ----

def _synthetic_split(name, n, rng, n_features=8):
    from microcal_hpc.dataset import Split

    groups = np.array([f"{name}{i // 3:03d}" for i in range(n)])  # 3 images per group
    labels = np.array([int(g[-1]) % 2 for g in groups])
    X = rng.normal(size=(n, n_features)) + 0.8 * labels[:, None] * (np.arange(n_features) < 3)
    split = Split(name, np.zeros((0, 4, 4), np.uint8), labels, np.array([f"{name}/{i}" for i in range(n)]), groups,
                  np.array([g[:4] for g in groups]), np.array([f"{name}-h{i}" for i in range(n)]))
    return X, split


def _model_jobs(run, cfg):
    from functools import partial

    from microcal_hpc.wavelet.evaluate import ModelJob, shared_folds

    rng = np.random.default_rng(0)
    X_train, train = _synthetic_split("tr", 150, rng)
    X_test, test = _synthetic_split("te", 60, rng)
    folds = shared_folds(train, 5, "group", 0)
    return [ModelJob(job_dir=run / name, make_model=partial(make_classifier, name, 0), X_train=X_train,
                     meta_train=train, X_test=X_test, meta_test=test, arm="wavelet", model=name, feature_set="syn",
                     folds=folds, group_by="group", seed=0, log_name="classify.log", inputs={"synthetic": 1})
            for name in ("dt", "nb", "lr")]


@pytest.mark.timeout(120)
def test_fits_of_all_models_share_one_pool_and_do_not_depend_on_it(tmp_path):
    import re

    from microcal_hpc.joblog import setup_job_logging
    from microcal_hpc.wavelet.evaluate import run_model_jobs

    cfg = Config()
    cfg.report.bootstrap = 100
    outputs = {}
    for n_jobs in (1, 2):
        run = tmp_path / f"n{n_jobs}"
        setup_job_logging(run / "classify.log", console=False)
        assert run_model_jobs(_model_jobs(run, cfg), cfg, n_jobs) == [str(run / m) for m in ("dt", "nb", "lr")]
        outputs[n_jobs] = run
        log = (run / "classify.log").read_text()
        assert "3 model(s) to evaluate (syn/dt, syn/nb, syn/lr): 18 fits on %d worker process(es)" % n_jobs in log
        workers = set(re.findall(r"worker (\d+)\)?$", log, flags=re.M))
        assert len(workers) == n_jobs  # n_jobs=1: in this process; 2: two worker processes took fits
        assert (str(os.getpid()) in workers) == (n_jobs == 1)
    for m in ("dt", "nb", "lr"):
        a, b = (np.load(outputs[n] / m / "predictions.npz") for n in (1, 2))
        assert all(np.array_equal(a[k], b[k]) for k in a.files), m  # bit-identical scores
        ma, mb = (json.loads((outputs[n] / m / "metrics.json").read_text()) for n in (1, 2))
        assert ma["cv"] == mb["cv"] and ma["test"] == mb["test"]
        assert len(ma["fit_seconds"]) == len(ma["fit_cpu_seconds"]) == 6 and ma["fits_not_converged"] == 0
        lines = (outputs[2] / m / "classify.log").read_text().splitlines()
        assert len(lines) == len(set(lines)) == 1 + 6 + 1  # header, one line per fit, summary: each once
        assert ma["cv"]["summary"]["auc"]["mean"] > 0.7


def test_a_model_log_that_is_the_job_log_gets_each_line_once(tmp_path):
    """The baseline writes its model folder's log as the job log: no second handler on the same file."""
    from microcal_hpc.joblog import setup_job_logging
    from microcal_hpc.wavelet.evaluate import run_model_jobs

    cfg = Config()
    cfg.report.bootstrap = 50
    job = _model_jobs(tmp_path, cfg)[1]
    setup_job_logging(job.job_dir / job.log_name, console=False)
    run_model_jobs([job], cfg, n_jobs=1)
    lines = (job.job_dir / job.log_name).read_text().splitlines()
    assert len(lines) == len(set(lines)) and sum("nb: fold" in ln for ln in lines) == 5


def test_one_job_log_tells_the_runs_of_several_calls_apart(tmp_path):
    """A job that evaluates its models one call at a time (the baselines) logs no line twice."""
    from microcal_hpc.joblog import setup_job_logging
    from microcal_hpc.wavelet.evaluate import run_model_jobs

    cfg = Config()
    cfg.report.bootstrap = 50
    setup_job_logging(tmp_path / "job.log", console=False)
    for job in _model_jobs(tmp_path, cfg)[1:]:
        run_model_jobs([job], cfg, n_jobs=1)
    lines = [ln.split(" ", 2)[2] for ln in (tmp_path / "job.log").read_text().splitlines()]  # without the time
    assert len(lines) == len(set(lines)) > 2 * (1 + 6 + 1)


def test_n_jobs_zero_means_every_core_of_the_affinity_mask():
    import subprocess
    import sys

    from microcal_hpc.wavelet.evaluate import resolve_n_jobs

    assert resolve_n_jobs(3) == 3 and resolve_n_jobs(0) == len(os.sched_getaffinity(0))
    code = ("import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
            "from microcal_hpc.wavelet.evaluate import resolve_n_jobs; print(resolve_n_jobs(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
    with pytest.raises(ConfigError, match="classify.n_jobs must be >= 0"):
        Config(classify=type(Config().classify)(n_jobs=-1)).validate()


def test_a_fit_that_stops_at_its_iteration_limit_is_recorded_and_other_warnings_pass_on():
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    from microcal_hpc.wavelet.evaluate import fit_and_score

    class WarnsOnFit(LogisticRegression):
        def fit(self, X, y):
            warnings.warn("a warning of another kind", UserWarning)
            return super().fit(X, y)

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = (X[:, 0] > 0).astype(int)
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        stopped = fit_and_score(lambda: MLPClassifier(max_iter=2, random_state=0), X, None, y, X, None)
        again = fit_and_score(lambda: MLPClassifier(max_iter=2, random_state=0), X, None, y, X, None)
        other = fit_and_score(WarnsOnFit, X, None, y, X, None)
    assert (stopped["converged"], again["converged"], other["converged"]) == (False, False, True)  # every fit
    assert [str(w.message) for w in shown] == ["a warning of another kind"]  # no ConvergenceWarning printed
