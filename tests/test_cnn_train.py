"""The CNN training job: outputs, folds, resume after a stop or a kill, determinism, completion."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from microcal_hpc.config import load_config
from microcal_hpc.errors import ConfigError

tf = pytest.importorskip("tensorflow")

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("config.yaml", "train.log", "history.json", "predictions.npz", "model.keras", "metrics.json")


def _cfg(*overrides):
    return load_config(None, ["report.bootstrap=200", *overrides])


def _train(cfg, data, run_dir, name):
    from microcal_hpc.cnn.train import train_cnn as train_job

    return Path(train_job(cfg, str(data), str(run_dir), name))


def _history(job):
    from microcal_hpc.cnn.train import TIME_KEYS

    h = json.loads((job / "history.json").read_text())
    return {k: v for k, v in h.items() if k not in TIME_KEYS}


# ------------------------------------------------------------------------------------------------
# folds (no training)


@pytest.mark.realdata
@pytest.mark.parametrize("group_by", ["group", "case"])
def test_five_folds_cover_train_once_keep_groups_apart_and_keep_class_ratios(packed_real, group_by):
    from microcal_hpc.dataset import load_split
    from microcal_hpc.splits import train_validation_indices

    tr = load_split(packed_real, "train")
    seen = np.zeros(len(tr), int)
    overall = tr.labels.mean()
    for k in range(5):
        t_idx, v_idx = train_validation_indices(tr, group_by, 0, k, 5, 0.2)
        assert len(np.intersect1d(t_idx, v_idx)) == 0 and len(t_idx) + len(v_idx) == len(tr)
        seen[v_idx] += 1
        keys = tr.groups if group_by == "group" else tr.cases
        assert not set(keys[t_idx]) & set(keys[v_idx]), f"fold {k}: a {group_by} on both sides"
        assert not set(tr.pixel_hash[t_idx]) & set(tr.pixel_hash[v_idx]), f"fold {k}: a duplicate on both sides"
        assert abs(tr.labels[v_idx].mean() - overall) <= 0.05, f"fold {k}: class ratio off by > 5 points"
    assert (seen == 1).all()  # every Train image is validation exactly once


# ------------------------------------------------------------------------------------------------
# a real run


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_epochs_on_real_data_write_every_output_with_matching_ids(packed_real, tmp_path):
    from microcal_hpc.dataset import load_split
    from microcal_hpc.splits import train_validation_indices

    t0 = time.perf_counter()
    job = _train(_cfg("train.epochs=2", "train.fold=1", "train.folds=5"), packed_real, tmp_path, "fold-1")
    wall = time.perf_counter() - t0
    for f in OUTPUTS:
        assert (job / f).is_file(), f
    tr, te = load_split(packed_real, "train"), load_split(packed_real, "test")
    _, v_idx = train_validation_indices(tr, "case", 0, 1, 5, 0.2)
    with np.load(job / "predictions.npz") as p:
        np.testing.assert_array_equal(p["test_ids"], te.ids)  # every official Test image, in file order
        np.testing.assert_array_equal(p["test_labels"], te.labels)
        np.testing.assert_array_equal(p["test_groups"], te.groups)
        np.testing.assert_array_equal(p["val_ids"], tr.ids[v_idx])  # exactly the fold's images
        np.testing.assert_array_equal(p["val_labels"], tr.labels[v_idx])
        assert (p["val_fold"] == 1).all()
        for k in ("test_prob", "val_prob"):
            assert np.isfinite(p[k]).all() and p[k].min() >= 0 and p[k].max() <= 1
        test_prob = p["test_prob"]
    m = json.loads((job / "metrics.json").read_text())
    assert (m["schema"], m["arm"], m["model"], m["run"], m["fold"], m["folds"]) == (1, "cnn", "cnn", "fold-1", 1, 5)
    assert m["augment"] == "none" and m["group_by"] == "case" and m["feature_set"] is None
    assert m["validation"]["n"] == len(v_idx) and m["test"]["n"] == len(te.ids)
    assert "loss" in m["validation"] and "loss" in m["test"]
    lo, hi = m["test"]["auc_ci"]
    assert 0 <= lo <= m["test"]["auc"] <= hi <= 1
    assert m["test"]["auc_ci_method"] == "group bootstrap, 200 resamples"
    from microcal_hpc.metrics import binary_metrics

    assert m["test"]["auc"] == pytest.approx(binary_metrics(te.labels, test_prob)["auc"])
    h = json.loads((job / "history.json").read_text())
    assert h["epoch"] == [1, 2] and len(h["val_auc"]) == 2 and all(s > 0 for s in h["epoch_seconds"])
    assert m["validation"]["loss"] == pytest.approx(h["val_loss"][-1], rel=1e-5)  # the final model's
    assert sum(h["epoch_seconds"]) <= m["elapsed_s"] <= wall
    assert load_config(job / "config.yaml").train.fold == 1
    log = (job / "train.log").read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log


# ------------------------------------------------------------------------------------------------
# resume, kill, determinism, completion (small synthetic set)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_stopped_job_resumes_at_epoch_two_and_keeps_its_optimizer_state(packed_synthetic, tmp_path):
    from microcal_hpc.cnn import checkpoint
    from microcal_hpc.cnn.pipeline import steps_per_epoch

    overrides = ["train.epochs=3", "train.augment=flips", "train.batch_size=16"]
    job = _train(_cfg(*overrides, "train.stop_after_epoch=1"), packed_synthetic, tmp_path, "official")
    assert not (job / "metrics.json").exists()
    state = checkpoint.load_state(job)
    assert state.epoch == 1 and state.history["epoch"] == [1]
    first_epoch = {k: v[0] for k, v in state.history.items()}

    t0 = time.perf_counter()
    job = _train(_cfg(*overrides), packed_synthetic, tmp_path, "official")
    second_wall = time.perf_counter() - t0
    log = (job / "train.log").read_text()
    assert "resuming after epoch 1" in log
    assert "epoch 1/3" in log.split("resuming after epoch 1")[0] and "epoch 1/3" not in log.split("resuming")[1]
    h = json.loads((job / "history.json").read_text())
    assert h["epoch"] == [1, 2, 3]
    assert {k: v[0] for k, v in h.items()} == first_epoch  # epoch 1 kept, not retrained
    elapsed = json.loads((job / "metrics.json").read_text())["elapsed_s"]
    assert state.elapsed_s + sum(h["epoch_seconds"][1:]) <= elapsed <= state.elapsed_s + second_wall  # both runs

    # the optimizer state went through the checkpoint: Adam's step counter counts all three epochs
    n_train = int(json.loads((job / "metrics.json").read_text())["n_train"])
    reader = tf.train.load_checkpoint(str(job / "checkpoints" / checkpoint.load_state(job).checkpoint / "ckpt"))
    iters = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/_iterations/")]
    assert iters == [3 * steps_per_epoch(n_train, 16)]

    # validation images are not augmented: the saved model reproduces the recorded validation scores
    from microcal_hpc.cnn.predict import load_trained_model, predict_probabilities
    from microcal_hpc.dataset import load_split

    tr = load_split(packed_synthetic, "train")
    with np.load(job / "predictions.npz") as p:
        row = {i: k for k, i in enumerate(tr.ids)}
        idx = np.array([row[i] for i in p["val_ids"]])
        np.testing.assert_allclose(predict_probabilities(load_trained_model(job), tr.images[idx]), p["val_prob"],
                                   atol=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_job_killed_after_its_first_checkpoint_resumes_from_it(packed_synthetic, tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "jobs", "train", "--data", str(packed_synthetic), "--run-dir",
           str(tmp_path), "--name", "killed", "--epochs", "4", "--set", "report.bootstrap=100",
           "--set", "train.batch_size=8"]
    state_file = tmp_path / "killed" / "checkpoints" / "state.json"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 150
        while not state_file.exists():
            assert proc.poll() is None, "the job ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 150 s"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)  # no chance to clean up
    finally:
        proc.wait(timeout=60)
    killed_at = json.loads(state_file.read_text())["epoch"]
    assert 1 <= killed_at < 4
    assert not (tmp_path / "killed" / "metrics.json").exists()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resuming after epoch {killed_at}" in done.stderr
    assert json.loads((tmp_path / "killed" / "history.json").read_text())["epoch"] == [1, 2, 3, 4]
    leftovers = [p.name for p in (tmp_path / "killed").rglob(".*") if p.name.endswith(".tmp")]
    assert leftovers == [] or all("epoch-" in n for n in leftovers)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_same_seed_twice_gives_identical_history(packed_synthetic, tmp_path):
    overrides = ["train.epochs=2", "train.lr_schedule=cosine", "train.augment=seed_study", "train.seed=3"]
    a = _train(_cfg(*overrides), packed_synthetic, tmp_path, "a")
    b = _train(_cfg(*overrides), packed_synthetic, tmp_path, "b")
    assert _history(a) == _history(b)  # exact equality of every loss and metric
    with np.load(a / "predictions.npz") as pa, np.load(b / "predictions.npz") as pb:
        np.testing.assert_array_equal(pa["test_prob"], pb["test_prob"])
    lr = _history(a)["lr"]
    assert lr[0] == pytest.approx(1e-3) and lr[1] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi / 2)))
    c = _train(_cfg(*overrides[:-1], "train.seed=4"), packed_synthetic, tmp_path, "c")
    assert _history(c)["loss"] != _history(a)["loss"]  # the seed matters


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_finished_job_is_not_retrained_and_refuses_other_settings(packed_synthetic, tmp_path):
    job = _train(_cfg("train.epochs=1"), packed_synthetic, tmp_path, "official")
    stamps = {f: (job / f).stat().st_mtime_ns for f in OUTPUTS if f != "train.log"}
    t0 = time.perf_counter()
    assert _train(_cfg("train.epochs=1"), packed_synthetic, tmp_path, "official") == job
    assert time.perf_counter() - t0 < 5
    assert {f: (job / f).stat().st_mtime_ns for f in stamps} == stamps
    assert (job / "train.log").read_text().strip().splitlines()[-1].endswith(
        "already complete (metrics.json exists); not retraining")
    with pytest.raises(ConfigError, match=r"train\.seed 0 -> 1"):
        _train(_cfg("train.epochs=1", "train.seed=1"), packed_synthetic, tmp_path, "official")


def test_unknown_augmentation_fails_before_anything_is_written(tmp_path):
    from jobs import cli

    rc = cli.main(["train", "--data", str(tmp_path / "none.h5"), "--run-dir", str(tmp_path), "--name", "x",
                   "--augment", "mixup"])
    assert rc == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_48x48_data_set_trains_through_the_job_and_predict_checks_the_size(make_tree, tmp_path, capsys):
    from data_prep.pack import pack_tree
    from jobs import cli
    from microcal_hpc.config import DataConfig

    root = make_tree(counts={"Train": (16, 16), "Test": (4, 4)}, shape=(48, 48))
    packed = tmp_path / "p48.h5"
    pack_tree(root, packed, DataConfig())
    job = _train(_cfg("train.epochs=1", "train.augment=flips"), packed, tmp_path / "run", "official")
    with np.load(job / "predictions.npz") as p:
        assert len(p["test_prob"]) == 8 and np.isfinite(p["test_prob"]).all()
    other = make_tree("t60", counts={"Test": (1, 0)})
    rc = cli.main(["predict", "--model", str(job), "--images", str(other), "--out", str(tmp_path / "o.csv")])
    assert rc == 2 and "the model expects 48x48" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_early_stopping_ends_training_and_keeps_the_best_weights(packed_synthetic, tmp_path):
    # a learning rate far too high: the validation loss stops improving at once
    cfg = _cfg("train.epochs=8", "train.early_stopping_patience=1", "train.learning_rate=0.5")
    job = _train(cfg, packed_synthetic, tmp_path, "es")
    m = json.loads((job / "metrics.json").read_text())
    h = json.loads((job / "history.json").read_text())
    assert m["stopped_early"] is True and len(h["epoch"]) < 8 and m["epochs_run"] == len(h["epoch"])
    best = int(np.argmin(h["val_loss"]))
    assert len(h["epoch"]) == best + 2  # patience 1: one epoch without improvement
    # the saved model is the best epoch's: its validation loss is the best one, not the last one
    assert m["validation"]["loss"] == pytest.approx(h["val_loss"][best], rel=1e-4)
