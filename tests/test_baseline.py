"""The baselines: brightness (no extremes) and 12 grey-level statistics (with extremes), each a Random Forest
with the same folds as the CNN. On synthetic patches whose classes differ only in brightness, or only in
small bright specks, each baseline reaches the AUC its features allow and no more."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats as sstats
from sklearn.metrics import roc_auc_score

from microcal_hpc.config import Config
from microcal_hpc.dataset import load_split
from microcal_hpc.greylevel import BRIGHTNESS_NAMES, GREYLEVEL_NAMES, brightness_features, greylevel_features
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


def test_brightness_features_are_the_documented_six_and_ignore_specks():
    rng = np.random.default_rng(2)
    images = rng.integers(60, 200, (2, 60, 60), dtype=np.uint8)
    images[1] = images[0]
    images[1, 10:12, 10:12] = 255  # four saturated pixels: a calcification speck
    f = brightness_features(images)
    assert f.shape == (2, 6) and len(BRIGHTNESS_NAMES) == 6
    x = images[0].ravel().astype(float)
    row = dict(zip(BRIGHTNESS_NAMES, f[0]))
    lo, hi = np.percentile(x, 5), np.percentile(x, 75)
    central = x[(x >= lo) & (x <= hi)]
    expect = {"mean": x.mean(), "p5": lo, "p25": np.percentile(x, 25), "p50": np.median(x), "p75": hi,
              "central_std": central.std()}
    for k, v in expect.items():
        assert row[k] == pytest.approx(v, rel=1e-12), k
    speck = dict(zip(BRIGHTNESS_NAMES, f[1]))
    for k in BRIGHTNESS_NAMES:  # each moves by less than 1% (the max goes from 199 to 255)
        assert speck[k] == pytest.approx(row[k], rel=0.01), k
    assert dict(zip(GREYLEVEL_NAMES, greylevel_features(images[1:])[0]))["max"] == 255  # the other one sees it


def _patches(rng, n: int, brighter: float, specks: bool) -> np.ndarray:
    """Smooth textured patches; ``brighter`` adds to every pixel, ``specks`` adds 3 small saturated spots."""
    base = rng.normal(110, 12, (n, 1, 1)) + brighter
    img = base + rng.normal(0, 8, (n, 60, 60))
    if specks:
        for im in img:
            for _ in range(3):
                y, x = rng.integers(3, 57, 2)
                im[y:y + 2, x:x + 2] = 250
    return np.clip(img, 0, 255).astype(np.uint8)


def _tree_answer(tmp_path, brighter: float, specks: bool):
    """Write a packed file where label 1 differs from label 0 only as asked; run the baselines job."""
    from report_fixtures import write_packed

    from microcal_hpc.baseline import baseline_job

    rng = np.random.default_rng(5)
    splits = {}
    for split, n in (("train", 60), ("test", 40)):
        images = np.concatenate([_patches(rng, n, 0.0, False), _patches(rng, n, brighter, specks)])
        labels = np.repeat([0, 1], n)
        cases = [f"{(7 if split == 'train' else 500) + i // 3:04d}" for i in range(2 * n)]
        groups = [f"{c}{'sm'[lab]}1_0_0" for c, lab in zip(cases, labels)]
        ids = [f"{split.capitalize()}/{lab}/{g}.pgm_{i}.pgm" for i, (g, lab) in enumerate(zip(groups, labels))]
        splits[split] = {"images": images, "labels": labels, "ids": ids, "groups": groups, "cases": cases}
    packed = write_packed(tmp_path / "packed.h5", splits)
    cfg = load_cfg()
    baseline_job(cfg, str(packed), str(tmp_path / "baseline"))
    return {name: json.loads((tmp_path / "baseline" / name / "metrics.json").read_text())
            for name in ("brightness-rf", "greylevel-rf")}


def load_cfg() -> Config:
    from microcal_hpc.config import load_config

    return load_config(None, ["report.bootstrap=50", "classify.folds=3", "train.folds=3"])


@pytest.mark.timeout(180)
def test_brightness_baseline_sees_brightness_and_only_the_other_one_sees_specks(tmp_path):
    bright = _tree_answer(tmp_path / "bright", brighter=40.0, specks=False)  # 40 grey levels: ~3.3 std of the base
    for name in ("brightness-rf", "greylevel-rf"):
        assert bright[name]["test"]["auc"] > 0.97 and bright[name]["cv"]["summary"]["auc"]["mean"] > 0.95, name
    specks = _tree_answer(tmp_path / "specks", brighter=0.0, specks=True)
    assert specks["greylevel-rf"]["test"]["auc"] > 0.99  # max and p95 see the specks
    # brightness without the extremes cannot: chance, within what 40 + 40 Test images allow
    assert abs(specks["brightness-rf"]["test"]["auc"] - 0.5) < 0.15
    assert abs(specks["brightness-rf"]["cv"]["summary"]["auc"]["mean"] - 0.5) < 0.15
    m = specks["brightness-rf"]
    assert (m["arm"], m["model"], m["features"]) == ("baseline", "brightness-rf", list(BRIGHTNESS_NAMES))
    assert "no extremes" in m["description"]
    # one job log with every line once, one log per model folder with its own lines once
    job_log = (tmp_path / "specks" / "baseline" / "baseline.log").read_text().splitlines()
    model_log = (tmp_path / "specks" / "baseline" / "brightness-rf" / "baseline.log").read_text().splitlines()
    assert len(job_log) == len(set(job_log)) and len(model_log) == len(set(model_log)) and len(model_log) > 3
    assert not any("greylevel-rf" in line for line in model_log)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_baselines_write_outputs_on_the_cnn_folds(packed_real, tmp_path):
    from microcal_hpc.baseline import BASELINES, baseline_job

    cfg = Config()
    cfg.report.bootstrap = 200
    out = baseline_job(cfg, str(packed_real), str(tmp_path / "baseline"))
    assert out == [str(tmp_path / "baseline" / name) for name in BASELINES] and len(out) == 2
    train = load_split(packed_real, "train", images=False)
    cnn_folds = fold_of_each(train.labels, split_groups(train, cfg.train.group_by), cfg.train.folds, cfg.train.seed)
    auc = {}
    for name, n_features in (("brightness-rf", 6), ("greylevel-rf", 12)):
        files = {p.name for p in (tmp_path / "baseline" / name).iterdir()}
        assert {"metrics.json", "predictions.npz", "config.yaml", "baseline.log"} <= files
        m = json.loads((tmp_path / "baseline" / name / "metrics.json").read_text())
        p = np.load(tmp_path / "baseline" / name / "predictions.npz")
        assert (m["arm"], m["model"], m["run"], m["feature_set"], m["n_features"]) == ("baseline", name, "cv", None,
                                                                                      n_features)
        assert m["group_by"] == "case"
        assert np.array_equal(p["val_fold"], cnn_folds)
        assert m["test"]["auc"] == pytest.approx(roc_auc_score(p["test_labels"], p["test_prob"]), abs=1e-12)
        assert m["cv"]["summary"]["auc"]["n"] == 5
        auc[name] = m["test"]["auc"]
    # NOTES.md: mean grey level alone gives about 0.86 on Test, 12 statistics with the extremes about 0.93
    assert 0.75 < auc["brightness-rf"] < auc["greylevel-rf"]
