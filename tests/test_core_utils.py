"""Atomic outputs, the shared splitter and the shared metrics."""
import errno
import signal

import numpy as np
import pytest
from sklearn.metrics import f1_score, precision_score, recall_score, roc_auc_score

from microcal_hpc.atomic import SignalReceived, atomic_path, signal_number, write_failure, write_json
from microcal_hpc.errors import InputError, OutputError
from microcal_hpc.dataset import Split
from microcal_hpc.metrics import binary_metrics, bootstrap_auc_ci, paired_bootstrap_auc, summarize
from microcal_hpc.splits import cv_folds, split_groups


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]
    write_json(target, {"a": np.float32(1.5), "b": np.arange(2)})
    assert target.read_text().replace(" ", "").replace("\n", "") == '{"a":1.5,"b":[0,1]}'


def test_a_failed_write_is_one_output_error_naming_the_output_whatever_library_reports_it(tmp_path):
    target = tmp_path / "out.npz"
    with pytest.raises(OutputError) as caught:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            try:
                raise OSError(errno.ENOSPC, "No space left on device", str(tmp))
            except OSError:
                raise ValueError("seek of closed file")  # zipfile, while handling the real failure
    assert str(caught.value) == f"{target}: cannot write (No space left on device)"
    assert caught.value.exit_code == 1 and list(tmp_path.iterdir()) == []
    # TensorFlow's own error type, the reason only in its message
    tf_like = RuntimeError(f"{tmp_path}/x/part-0.tempstate; No space left on device [Op:SaveV2]")
    assert write_failure(tf_like) == "No space left on device"
    # not write failures: an input's problem, an OSError about another file, a signal
    assert write_failure(InputError("in.h5: damaged (Input/output error)")) is None
    assert write_failure(OSError(errno.EACCES, "Permission denied", "/data/in.pgm"), tmp_path / "out") is None
    assert write_failure(SignalReceived(signal.SIGTERM)) is None


def test_signal_number_sees_a_signal_behind_the_error_it_caused():
    try:
        try:
            raise SignalReceived(signal.SIGTERM)
        except SignalReceived:
            raise AssertionError("Concurrent access?")  # TensorFlow's bookkeeping, broken by the interruption
    except AssertionError as e:
        assert signal_number(e) == signal.SIGTERM
    assert signal_number(KeyboardInterrupt()) == signal.SIGINT and signal_number(ValueError()) is None


def _split(groups, labels, pixel_hash=None):
    n = len(labels)
    return Split("train", np.zeros((0, 2, 2), np.uint8), np.asarray(labels), np.asarray([f"id{i}" for i in range(n)]),
                 np.asarray(groups),
                 np.asarray([g[:4] for g in groups]), np.asarray(pixel_hash or [f"h{i}" for i in range(n)]))


def test_pixel_duplicates_are_merged_into_one_group():
    s = _split(["0001a", "0001a", "0002b", "0003c"], [0, 0, 1, 1], ["x", "y", "z", "x"])
    g = split_groups(s, "group")
    assert g[0] == g[1] == g[3] and g[2] != g[0]  # 0003c shares pixels with 0001a
    assert len(set(split_groups(s, "none"))) == 3  # even without grouping, duplicates stay together


def test_folds_keep_groups_together_and_cover_everything():
    groups = np.repeat(np.arange(60), 4)
    labels = (groups % 2 == 0).astype(int)
    folds = cv_folds(labels, groups, 5, seed=1)
    seen = np.concatenate([va for _, va in folds])
    assert sorted(seen.tolist()) == list(range(len(labels)))
    for tr, va in folds:
        assert not set(groups[tr]) & set(groups[va])
        assert abs(labels[va].mean() - labels.mean()) < 0.05
    assert [va.tolist() for _, va in cv_folds(labels, groups, 5, seed=1)] == [va.tolist() for _, va in folds]
    other = cv_folds(labels, groups, 5, seed=2)
    assert [va.tolist() for _, va in other] != [va.tolist() for _, va in folds]  # the seed matters


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    s = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    m = binary_metrics(y, s)
    pred = (s >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["auc"] != pytest.approx(roc_auc_score(y, pred))  # from scores, not hard labels
    assert m["sensitivity"] == pytest.approx(recall_score(y, pred))
    assert m["specificity"] == pytest.approx(recall_score(1 - y, 1 - pred))
    assert m["precision"] == pytest.approx(precision_score(y, pred))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    assert tn + fp + fn + tp == 200 and tp == int(((pred == 1) & (y == 1)).sum())


def test_bootstrap_ci_and_paired_test():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 100)
    good = y + rng.normal(0, 0.5, 200)
    bad = y + rng.normal(0, 2.0, 200)
    groups = np.repeat(np.arange(50), 4)
    lo, hi = bootstrap_auc_ci(y, good, groups, n_boot=300, seed=0)
    assert lo < roc_auc_score(y, good) < hi and hi - lo < 0.2
    r = paired_bootstrap_auc(y, good, bad, groups, n_boot=300, seed=0)
    assert r["diff"] > 0 and r["ci_low"] > 0 and r["p_value"] < 0.05
    same = paired_bootstrap_auc(y, good, good + 1e-9 * rng.random(200), groups, n_boot=200, seed=0)
    assert same["p_value"] > 0.5


def test_summarize_mean_and_std():
    s = summarize([{"auc": 0.9}, {"auc": 0.8}, {"auc": float("nan")}])
    assert s["auc"]["n"] == 2 and s["auc"]["mean"] == pytest.approx(0.85)
    assert s["auc"]["std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
