"""The shortcut baseline: 12 grey-level statistics + Random Forest, same folds as the CNN."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sstats
from sklearn.metrics import roc_auc_score

from microcal_hpc.config import Config
from microcal_hpc.dataset import load_split
from microcal_hpc.greylevel import GREYLEVEL_NAMES, greylevel_features
from microcal_hpc.splits import fold_of_each, split_groups


def test_greylevel_features_are_the_documented_twelve():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (3, 60, 60), dtype=np.uint8)
    images[2] = 9  # constant patch
    f = greylevel_features(images)
    assert f.shape == (3, 12) and len(GREYLEVEL_NAMES) == 12
    x = images[0].ravel().astype(float)
    row = dict(zip(GREYLEVEL_NAMES, f[0]))
    expect = {"mean": x.mean(), "std": x.std(), "min": x.min(), "max": x.max(), "p5": np.percentile(x, 5),
              "p25": np.percentile(x, 25), "p50": np.median(x), "p75": np.percentile(x, 75),
              "p95": np.percentile(x, 95), "skewness": sstats.skew(x), "kurtosis": sstats.kurtosis(x),
              "entropy_bits": sstats.entropy(np.bincount(images[0].ravel(), minlength=256), base=2)}
    for k, v in expect.items():
        assert row[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    const = dict(zip(GREYLEVEL_NAMES, f[2]))
    assert (const["std"], const["skewness"], const["kurtosis"], const["entropy_bits"]) == (0, 0, 0, 0)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_baseline_writes_outputs_on_the_cnn_folds(packed_real, tmp_path):
    from microcal_hpc.baseline import baseline_job

    cfg = Config()
    cfg.report.bootstrap = 200
    out = baseline_job(cfg, str(packed_real), str(tmp_path / "baseline"))
    assert out == str(tmp_path / "baseline" / "greylevel-rf")
    files = {p.name for p in (tmp_path / "baseline" / "greylevel-rf").iterdir()}
    assert {"metrics.json", "predictions.npz", "config.yaml", "baseline.log"} <= files
    m = json.loads((tmp_path / "baseline" / "greylevel-rf" / "metrics.json").read_text())
    p = np.load(tmp_path / "baseline" / "greylevel-rf" / "predictions.npz")
    assert (m["arm"], m["model"], m["run"], m["feature_set"], m["n_features"]) == ("baseline", "greylevel-rf", "cv",
                                                                                  None, 12)

    train = load_split(packed_real, "train", images=False)
    cnn_folds = fold_of_each(train.labels, split_groups(train, cfg.train.group_by), cfg.train.folds, cfg.train.seed)
    assert np.array_equal(p["val_fold"], cnn_folds)
    assert m["test"]["auc"] == pytest.approx(roc_auc_score(p["test_labels"], p["test_prob"]), abs=1e-12)
    assert m["cv"]["summary"]["auc"]["n"] == 5
    # the shortcut is strong on this copy of the data (NOTES: about 0.93 on Test)
    assert m["test"]["auc"] > 0.8 and m["cv"]["summary"]["auc"]["mean"] > 0.8
