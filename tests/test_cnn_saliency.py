"""Grad-CAM saliency (saliency.npz) points where the signal is.

A synthetic set whose class is decided by one bright 5x5 spot placed at random (positives) on noise
(both classes): after a short training run, each positive Test patch's map must peak at its spot and
hold there well above its mean elsewhere (Grad-CAM maps keep a broad positive background; a trained
model gives about 2.2 times).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from microcal_hpc.config import load_config

from cli_helpers import write_pgm

tf = pytest.importorskip("tensorflow")


def _spot_tree(root: Path, seed: int = 0) -> dict[str, tuple[int, int]]:
    """Train 48/48, Test 10/10 noise patches; positives get a spot. Returns Test id -> spot centre (row, col)."""
    rng = np.random.default_rng(seed)
    spots = {}
    for split, n in (("Train", 48), ("Test", 10)):
        for label in (0, 1):
            for i in range(n):
                img = rng.normal(100, 12, (60, 60))
                rel = f"{split}/{label}/{1000 + 100 * label + i:04d}s1_{i}_0.pgm_1.pgm"
                if label:
                    y, x = (int(v) for v in rng.integers(6, 54, 2))
                    img[y - 2:y + 3, x - 2:x + 3] += 110
                    spots[rel] = (y, x)
                write_pgm(root / rel, np.clip(img, 0, 255).astype(np.uint8))
    return {k: v for k, v in spots.items() if k.startswith("Test/")}


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_grad_cam_maps_peak_on_the_bright_spot_that_decides_the_class(tmp_path):
    from data_prep.pack import pack_tree
    from microcal_hpc.cnn.train import train_cnn
    from microcal_hpc.config import DataConfig

    spots = _spot_tree(tmp_path / "tree")
    pack_tree(tmp_path / "tree", tmp_path / "spots.h5", DataConfig())
    cfg = load_config(None, ["train.epochs=8", "train.batch_size=16", "report.bootstrap=50"])
    job = Path(train_cnn(cfg, str(tmp_path / "spots.h5"), str(tmp_path / "run"), "official"))
    assert json.loads((job / "metrics.json").read_text())["test"]["auc"] > 0.9  # it learned the task
    with np.load(job / "saliency.npz") as z:
        ids, maps = z["test_ids"], z["maps"]
        assert str(z["method"]).startswith("Grad-CAM of the cluster logit on conv2d_2 (15x15)")
    assert maps.shape == (20, 60, 60) and (maps >= 0).all()
    for tid, (y, x) in spots.items():
        m = maps[list(ids).index(tid)]
        peak = np.unravel_index(np.argmax(m), m.shape)
        assert abs(peak[0] - y) <= 6 and abs(peak[1] - x) <= 6, f"{tid}: peak {peak}, spot {(y, x)}"
        near = np.zeros(m.shape, bool)
        near[max(0, y - 4):y + 5, max(0, x - 4):x + 5] = True
        assert m[near].mean() >= 1.5 * m[~near].mean(), tid
