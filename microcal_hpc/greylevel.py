"""Twelve global grey-level statistics of a patch: the features of the shortcut baseline.

They ignore where pixels are, so they cannot see the shape of a microcalcification cluster; a model
that does well on them exploits global brightness/contrast differences (acquisition, scanner, case
mix), which is why the report shows this baseline beside the CNN and the wavelet classifiers.

The 12 columns (:data:`GREYLEVEL_NAMES`), per image over its H x W pixels (8-bit values 0..255):
mean, std (population), min, max, the 5th/25th/50th/75th/95th percentiles (linear interpolation),
skewness and excess kurtosis (population moments; 0 for a constant patch), and the Shannon entropy
in bits of the 256-bin grey-level histogram.
"""
from __future__ import annotations

import numpy as np

GREYLEVEL_NAMES = ("mean", "std", "min", "max", "p5", "p25", "p50", "p75", "p95", "skewness", "kurtosis",
                   "entropy_bits")
PERCENTILES = (5, 25, 50, 75, 95)


def greylevel_features(images: np.ndarray) -> np.ndarray:
    """(N, 12) float64 statistics of ``images`` (N, H, W) (or (N, P) flat), in GREYLEVEL_NAMES order."""
    x = np.asarray(images)
    if x.ndim < 2:
        raise ValueError(f"expected images (N, H, W) or (N, P), got shape {x.shape}")
    flat = x.reshape(x.shape[0], -1).astype(np.float64)
    mean = flat.mean(axis=1)
    d = flat - mean[:, None]
    m2 = (d ** 2).mean(axis=1)
    std = np.sqrt(m2)
    flat_rows = m2 <= 0.0
    safe = np.where(flat_rows, 1.0, m2)
    skew = np.where(flat_rows, 0.0, (d ** 3).mean(axis=1) / safe ** 1.5)
    kurt = np.where(flat_rows, 0.0, (d ** 4).mean(axis=1) / safe ** 2 - 3.0)
    pct = np.percentile(flat, PERCENTILES, axis=1).T
    ints = np.clip(np.rint(flat), 0, 255).astype(np.int64)
    hist = np.zeros((x.shape[0], 256), dtype=np.int64)
    np.add.at(hist, (np.repeat(np.arange(x.shape[0]), ints.shape[1]), ints.ravel()), 1)
    p = hist / ints.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    return np.column_stack([mean, std, flat.min(axis=1), flat.max(axis=1), pct, skew, kurt, entropy])
