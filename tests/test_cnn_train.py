"""The CNN training job: the official protocol, fold jobs, outputs, settings checks, determinism."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from microcal_hpc.config import load_config
from microcal_hpc.errors import ConfigError

tf = pytest.importorskip("tensorflow")

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("config.yaml", "train.log", "history.json", "predictions.npz", "model.keras", "metrics.json")
TIMING = ("import", "data", "build", "epochs", "between_epochs", "evaluation", "metrics", "saving", "total",
          "overhead")


def _cfg(*overrides):
    return load_config(None, ["report.bootstrap=200", *overrides])


def _train(cfg, data, run_dir, name):
    from microcal_hpc.cnn.train import train_cnn as train_job

    return Path(train_job(cfg, str(data), str(run_dir), name))


def _history(job):
    from microcal_hpc.cnn.train import TIME_KEYS

    h = json.loads((job / "history.json").read_text())
    return {k: v for k, v in h.items() if k not in TIME_KEYS}


def _tensorboard_scalars(job) -> dict[str, list[tuple[int, float]]]:
    """(step, value) per tag of every event file under JOB/tensorboard/."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(job / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


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
        t_idx, v_idx = train_validation_indices(tr, group_by, 0, k, 5)
        assert len(np.intersect1d(t_idx, v_idx)) == 0 and len(t_idx) + len(v_idx) == len(tr)
        seen[v_idx] += 1
        keys = tr.groups if group_by == "group" else tr.cases
        assert not set(keys[t_idx]) & set(keys[v_idx]), f"fold {k}: a {group_by} on both sides"
        assert not set(tr.pixel_hash[t_idx]) & set(tr.pixel_hash[v_idx]), f"fold {k}: a duplicate on both sides"
        assert abs(tr.labels[v_idx].mean() - overall) <= 0.05, f"fold {k}: class ratio off by > 5 points"
    assert (seen == 1).all()  # every Train image is validation exactly once


# ------------------------------------------------------------------------------------------------
# real runs


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_the_official_job_trains_on_every_train_image_and_predicts_test_once(packed_real, tmp_path, monkeypatch):
    from microcal_hpc.cnn import pipeline
    from microcal_hpc.cnn import source as source_mod
    from microcal_hpc.dataset import load_split

    trained_on, sources = [], []
    original = pipeline.training_batches

    def recording(source, labels, **kw):  # what the training pipeline hands to fit, batch by batch
        sources.append(source)
        for key, positions, x, y in original(source, labels, **kw):
            trained_on.append((int(key[1]) >> 32, positions.tolist()))
            yield key, positions, x, y

    monkeypatch.setattr(pipeline, "training_batches", recording)
    reads: dict[int, int] = {}  # images read per source: one pass over Test reads each Test image once
    read = source_mod.InMemoryImages.read
    monkeypatch.setattr(source_mod.InMemoryImages, "read", lambda self, positions: (
        reads.__setitem__(len(self), reads.get(len(self), 0) + len(positions)), read(self, positions))[1])
    job = _train(_cfg("train.epochs=1"), packed_real, tmp_path, "official")
    tr, te = load_split(packed_real, "train"), load_split(packed_real, "test")
    # every Train image, each once, in epoch 1 (636 on the real data), and nothing held out
    assert len(sources) == 1 and sources[0].rows.tolist() == list(range(len(tr)))
    seen = [p for epoch, batch in trained_on for p in batch if epoch == 0]
    assert sorted(seen) == list(range(len(tr))) == list(range(636))
    assert reads == {len(tr): len(tr), len(te): len(te)}  # one epoch of Train, one pass over Test (at the end)
    m = json.loads((job / "metrics.json").read_text())
    assert m["n_train"] == len(tr) and m["validation"] is None and m["fold"] is None
    assert m["input"] == {"train": "memory", "test": "memory"}
    with np.load(job / "predictions.npz") as p:
        np.testing.assert_array_equal(p["test_ids"], te.ids)
        assert all(len(p[k]) == 0 for k in ("val_ids", "val_labels", "val_prob", "val_groups", "val_fold"))
    h = json.loads((job / "history.json").read_text())
    assert sorted(h) == ["accuracy", "epoch", "epoch_seconds", "images_per_second", "loss", "lr", "train_seconds"]
    with np.load(job / "saliency.npz") as z:
        np.testing.assert_array_equal(z["test_ids"], te.ids)
        assert z["maps"].shape == (len(te), 60, 60) and z["maps"].dtype == np.float32 and z["maps"].min() >= 0
        assert str(z["method"]) == m["saliency"] and "conv2d_2 (15x15)" in m["saliency"]
    # the probabilities of that pass are the saved model's
    from microcal_hpc.cnn.predict import load_trained_model, predict_probabilities

    with np.load(job / "predictions.npz") as p:
        np.testing.assert_allclose(predict_probabilities(load_trained_model(job), te.images), p["test_prob"],
                                   atol=1e-6)
    assert set(m["timing"]) == set(TIMING)
    assert m["timing"]["epochs"] == pytest.approx(sum(h["epoch_seconds"]), abs=1e-3)
    assert m["timing"]["total"] == pytest.approx(m["timing"]["epochs"] + m["timing"]["overhead"], abs=1e-2)
    assert m["devices"]["logical"] == ["/device:CPU:0"] and m["devices"]["cpu_cores"] >= 1
    log = (job / "train.log").read_text()
    assert "devices: /device:CPU:0; GPUs: none" in log and "time: total " in log
    assert "636 training, 0 validation, 161 official Test images" in log


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_epochs_of_a_fold_job_on_real_data_write_every_output_with_matching_ids(packed_real, tmp_path):
    from microcal_hpc.dataset import load_split
    from microcal_hpc.metrics import binary_metrics
    from microcal_hpc.splits import train_validation_indices

    t0 = time.perf_counter()
    job = _train(_cfg("train.epochs=2", "train.fold=1", "train.folds=5"), packed_real, tmp_path, "fold-1")
    wall = time.perf_counter() - t0
    for f in OUTPUTS:
        assert (job / f).is_file(), f
    assert not (job / "saliency.npz").exists()  # fold jobs: no saliency
    tr, te = load_split(packed_real, "train"), load_split(packed_real, "test")
    group_by = _cfg().train.group_by  # the default grouping
    t_idx, v_idx = train_validation_indices(tr, group_by, 0, 1, 5)
    with np.load(job / "predictions.npz") as p:
        np.testing.assert_array_equal(p["test_ids"], te.ids)  # every official Test image, in file order
        np.testing.assert_array_equal(p["test_labels"], te.labels)
        np.testing.assert_array_equal(p["test_groups"], te.groups)
        np.testing.assert_array_equal(p["val_ids"], tr.ids[v_idx])  # exactly the fold's images
        np.testing.assert_array_equal(p["val_labels"], tr.labels[v_idx])
        assert (p["val_fold"] == 1).all()
        for k in ("test_prob", "val_prob"):
            assert np.isfinite(p[k]).all() and p[k].min() >= 0 and p[k].max() <= 1
        test_prob, val_prob = p["test_prob"], p["val_prob"]
    m = json.loads((job / "metrics.json").read_text())
    assert (m["schema"], m["arm"], m["model"], m["run"], m["fold"], m["folds"]) == (1, "cnn", "cnn", "fold-1", 1, 5)
    assert m["augment"] == "none" and m["group_by"] == group_by and m["feature_set"] is None
    assert m["n_train"] == len(t_idx) and m["validation"]["n"] == len(v_idx) and m["test"]["n"] == len(te.ids)
    lo, hi = m["test"]["auc_ci"]
    assert 0 <= lo <= m["test"]["auc"] <= hi <= 1
    assert m["test"]["auc_ci_method"] == "group bootstrap, 200 resamples"
    assert m["test"]["auc"] == pytest.approx(binary_metrics(te.labels, test_prob)["auc"])
    h = json.loads((job / "history.json").read_text())
    assert h["epoch"] == [1, 2] and len(h["val_auc"]) == 2 and all(s > 0 for s in h["epoch_seconds"])
    # the final validation scores are the last epoch's validation pass: loss, accuracy and AUC agree
    assert m["validation"]["loss"] == h["val_loss"][-1] and m["validation"]["auc"] == h["val_auc"][-1]
    assert m["validation"]["accuracy"] == h["val_accuracy"][-1]
    assert m["validation"]["auc"] == pytest.approx(binary_metrics(tr.labels[v_idx], val_prob)["auc"])
    assert sum(h["epoch_seconds"]) <= m["elapsed_s"] <= wall
    assert load_config(job / "config.yaml").train.fold == 1
    log = (job / "train.log").read_text()
    assert "epoch 1/2" in log and "epoch 2/2" in log and "val_auc" in log
    # TensorBoard: one scalar per epoch for the training and validation values and the learning rate
    scalars = _tensorboard_scalars(job)
    assert sorted(scalars) == ["accuracy", "loss", "lr", "val_accuracy", "val_auc", "val_loss"]
    for tag, points in scalars.items():
        assert [s for s, _ in points] == [1, 2]
        assert [v for _, v in points] == pytest.approx(h[tag], rel=1e-6)


# ------------------------------------------------------------------------------------------------
# settings (small synthetic set)


def test_the_loss_is_keras_binary_cross_entropy_of_the_probabilities():
    from microcal_hpc.cnn.predict import binary_cross_entropy

    y = np.array([0, 1, 1, 0, 1], dtype=np.float32)
    p = np.array([0.1, 0.8, 1.0, 0.0, 0.45], dtype=np.float32)
    keras = float(tf.keras.losses.BinaryCrossentropy()(y[:, None], p[:, None]))
    assert binary_cross_entropy(y, p) == pytest.approx(keras, rel=1e-6)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_finished_job_is_not_retrained_and_refuses_other_settings_including_epochs(packed_synthetic, tmp_path,
                                                                                    capsys):
    from jobs import cli

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
    capsys.readouterr()
    rc = cli.main(["train", "--data", str(packed_synthetic), "--run-dir", str(tmp_path), "--name", "official",
                   "--epochs", "2", "--set", "report.bootstrap=200"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == [f"microcal-hpc train: error: {job}: finished with other settings "
                               "(train.epochs 1 -> 2); use another --name or remove the folder"]
    assert {f: (job / f).stat().st_mtime_ns for f in stamps} == stamps
    # settings that do not change the model may differ
    assert _train(_cfg("train.epochs=1", "train.steps_per_execution=4", "train.input=stream"), packed_synthetic,
                  tmp_path, "official") == job


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_an_unfinished_job_refuses_epochs_that_would_change_its_result(packed_synthetic, tmp_path):
    # an unfinished job: the outputs of a finished one removed, its checkpoint after epoch 2 kept
    cosine = _train(_cfg("train.epochs=2", "train.lr_schedule=cosine"), packed_synthetic, tmp_path, "cosine")
    (cosine / "metrics.json").unlink()
    with pytest.raises(ConfigError, match=r"was started with other settings \(train\.epochs 2 -> 3\)"):
        _train(_cfg("train.epochs=3", "train.lr_schedule=cosine"), packed_synthetic, tmp_path, "cosine")
    assert not (cosine / "metrics.json").exists()
    # the constant schedule does not depend on the epoch count: 2 epochs + 1 more = a 3-epoch run
    # (tests/test_cnn_resume.py checks that bit for bit after a kill); fewer than trained cannot be
    _train(_cfg("train.epochs=2"), packed_synthetic, tmp_path, "constant")
    (tmp_path / "constant" / "metrics.json").unlink()
    with pytest.raises(ConfigError, match=r"has already trained 2 epochs, more than train\.epochs=1"):
        _train(_cfg("train.epochs=1"), packed_synthetic, tmp_path, "constant")
    job = _train(_cfg("train.epochs=3"), packed_synthetic, tmp_path, "constant")
    assert "resuming after epoch 2" in (job / "train.log").read_text()
    assert json.loads((job / "history.json").read_text())["epoch"] == [1, 2, 3]


@pytest.mark.parametrize("setting", ["train.early_stopping_patience=2", "train.lr_schedule=plateau"])
def test_validation_based_settings_without_a_fold_are_refused_in_one_line(tmp_path, capsys, setting):
    from jobs import cli

    rc = cli.main(["train", "--data", str(tmp_path / "none.h5"), "--run-dir", str(tmp_path), "--name", "x",
                   "--set", setting])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "need a validation fold (train.fold)" in err[0]
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_streamed_job_trains_the_same_model_as_an_in_memory_one(make_tree, tmp_path):
    from data_prep.pack import pack_tree
    from microcal_hpc.config import DataConfig

    root = make_tree(counts={"Train": (24, 24), "Test": (6, 6)})
    packed = tmp_path / "chunks16.h5"
    pack_tree(root, packed, DataConfig(chunk_size=16))  # 3 chunks of Train; windows of 2 chunks below
    settings = ["train.epochs=2", "train.fold=1", "train.folds=3", "train.augment=flips", "train.batch_size=8",
                "train.shuffle_buffer=32"]
    jobs = {mode: _train(_cfg(*settings, f"train.input={mode}"), packed, tmp_path / mode, "job")
            for mode in ("memory", "stream")}
    metrics = {mode: json.loads((job / "metrics.json").read_text()) for mode, job in jobs.items()}
    assert metrics["stream"]["input"] == {"train": "stream", "test": "stream"}
    assert metrics["memory"]["input"] == {"train": "memory", "test": "memory"}
    for m in metrics.values():  # what may differ: the input mode and the times
        for key in ("input", "timing", "elapsed_s", "training_seconds"):
            del m[key]
    assert metrics["stream"] == metrics["memory"]
    assert _history(jobs["stream"]) == _history(jobs["memory"])
    with np.load(jobs["memory"] / "predictions.npz") as a, np.load(jobs["stream"] / "predictions.npz") as b:
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_same_seed_twice_gives_identical_history(packed_synthetic, tmp_path):
    overrides = ["train.epochs=2", "train.lr_schedule=cosine", "train.augment=reference", "train.seed=3"]
    a = _train(_cfg(*overrides), packed_synthetic, tmp_path, "a")
    b = _train(_cfg(*overrides), packed_synthetic, tmp_path, "b")
    assert _history(a) == _history(b)  # exact equality of every loss and metric
    with np.load(a / "predictions.npz") as pa, np.load(b / "predictions.npz") as pb:
        np.testing.assert_array_equal(pa["test_prob"], pb["test_prob"])
    lr = _history(a)["lr"]
    assert lr[0] == pytest.approx(1e-3) and lr[1] == pytest.approx(1e-3 * 0.5 * (1 + np.cos(np.pi / 2)))
    c = _train(_cfg(*overrides[:-1], "train.seed=4"), packed_synthetic, tmp_path, "c")
    assert _history(c)["loss"] != _history(a)["loss"]  # the seed matters


def test_unknown_augmentation_fails_before_anything_is_written(tmp_path):
    from jobs import cli

    rc = cli.main(["train", "--data", str(tmp_path / "none.h5"), "--run-dir", str(tmp_path), "--name", "x",
                   "--augment", "mixup"])
    assert rc == 2
    assert not (tmp_path / "x").exists()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_48x48_data_set_trains_through_the_job_and_predict_checks_the_size(make_tree, tmp_path, capsys,
                                                                            monkeypatch):
    from data_prep.pack import pack_tree
    from jobs import cli
    from microcal_hpc.cnn import callbacks
    from microcal_hpc.config import DataConfig

    root = make_tree(counts={"Train": (16, 16), "Test": (4, 4)}, shape=(48, 48))
    packed = tmp_path / "p48.h5"
    pack_tree(root, packed, DataConfig())
    monkeypatch.setattr(callbacks, "PROGRESS_SECONDS", 0.0)  # a progress line after every step
    job = _train(_cfg("train.epochs=1", "train.augment=flips", "train.batch_size=8", "train.steps_per_execution=1"),
                 packed, tmp_path / "run", "official")
    with np.load(job / "predictions.npz") as p:
        assert len(p["test_prob"]) == 8 and np.isfinite(p["test_prob"]).all()
    assert "epoch 1/1: 50% of its 4 steps" in (job / "train.log").read_text()
    with np.load(job / "saliency.npz") as z:
        assert z["maps"].shape == (8, 48, 48) and "conv2d_2 (12x12)" in str(z["method"])
    other = make_tree("t60", counts={"Test": (1, 0)})
    rc = cli.main(["predict", "--model", str(job), "--images", str(other), "--out", str(tmp_path / "o.csv")])
    assert rc == 2 and "the model expects 48x48" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_early_stopping_ends_training_and_keeps_the_best_weights(packed_synthetic, tmp_path):
    # a learning rate far too high: the validation loss stops improving at once
    cfg = _cfg("train.epochs=8", "train.early_stopping_patience=1", "train.learning_rate=0.5", "train.fold=0")
    job = _train(cfg, packed_synthetic, tmp_path, "es")
    m = json.loads((job / "metrics.json").read_text())
    h = json.loads((job / "history.json").read_text())
    assert m["stopped_early"] is True and len(h["epoch"]) < 8 and m["epochs_run"] == len(h["epoch"])
    best = int(np.argmin(h["val_loss"]))
    assert len(h["epoch"]) == best + 2  # patience 1: one epoch without improvement
    # the saved model is the best epoch's: its validation loss is the best one, not the last one
    assert m["validation"]["loss"] == pytest.approx(h["val_loss"][best], rel=1e-4)


def test_a_restarted_job_removes_only_the_temporaries_a_killed_run_left(tmp_path):
    from microcal_hpc.cnn.checkpoint import remove_stale_temporaries


    killed = subprocess.Popen(["true"])
    killed.wait()  # a process that is gone
    host = socket.gethostname().split(".")[0]
    job = tmp_path / "official"
    (job / "checkpoints").mkdir(parents=True)
    left = [job / f".predictions.npz.{host}~{killed.pid}~k2j3abcd.tmp",
            job / "checkpoints" / f".epoch-0003.npz.{host}~{killed.pid}~x1abcdef.tmp",
            job / "checkpoints" / f".state.json.{host}~{killed.pid}~a9abcdef.tmp"]
    for p in left:
        p.write_bytes(b"half")
    scratch = job / f".model.keras.{host}~{killed.pid}~q8abcdef.scratch.tmp"  # save_inference_model's folder
    scratch.mkdir()
    (scratch / "model.keras").write_bytes(b"half")
    kept = [job / "checkpoints" / "epoch-0002.npz", job / "checkpoints" / "state.json", job / "train.log",
            job / ".hidden-but-not-ours", job / f".metrics.json.{host}~{os.getpid()}~abcdefgh.tmp"]  # alive
    for p in kept:
        p.write_bytes(b"whole")
    assert len(remove_stale_temporaries(job)) == 4
    assert sorted(p for p in job.rglob("*") if p.is_file()) == sorted(kept)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_a_checkpoint_that_cannot_be_written_ends_the_job_with_one_line(packed_synthetic, tmp_path, monkeypatch,
                                                                        capsys):
    import errno

    from jobs import cli
    from microcal_hpc.cnn import checkpoint

    def full_disk(path, arrays):  # what the background writer meets on a full disk
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(checkpoint, "_write_npz", full_disk)
    rc = cli.main(["train", "--data", str(packed_synthetic), "--run-dir", str(tmp_path), "--name", "official",
                   "--epochs", "2", "--set", "report.bootstrap=50"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and "Traceback" not in "\n".join(err)
    assert err[-1] == (f"microcal-hpc train: error: {tmp_path / 'official' / 'checkpoints'}: cannot write a checkpoint "
                       "(No space left on device)")
    assert not (tmp_path / "official" / "metrics.json").exists()
