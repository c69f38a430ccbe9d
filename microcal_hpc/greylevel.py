"""Global grey-level statistics of a patch: the features of the two baselines (:mod:`microcal_hpc.baseline`).

Both ignore where pixels are, so neither can see the shape of a microcalcification cluster. They differ
in whether they can see the bright specks that *are* microcalcifications:

- :func:`brightness_features` (:data:`BRIGHTNESS_NAMES`): where the grey levels lie and how wide the
  bulk of them spreads, without the extremes: mean, the 5th/25th/50th/75th percentiles, and the
  standard deviation of the pixels between the 5th and 75th percentiles. A few bright specks (a few
  percent of the pixels) barely move any of them; acquisition differences (exposure, scanner,
  digitisation of the source) move all of them. A model that does well on these exploits brightness,
  not calcifications.
- :func:`greylevel_features` (:data:`GREYLEVEL_NAMES`): 12 statistics including the extremes: mean,
  std (population), min, max, the 5th/25th/50th/75th/95th percentiles (linear interpolation),
  skewness and excess kurtosis (population moments; 0 for a constant patch), and the Shannon entropy
  in bits of the 256-bin grey-level histogram. max, the 95th percentile, std, skewness and kurtosis
  respond to bright specks, i.e. to calcifications themselves.

Values are per image over its H x W pixels (8-bit values 0..255), as float64.
"""
from __future__ import annotations

import numpy as np

BRIGHTNESS_NAMES = ("mean", "p5", "p25", "p50", "p75", "central_std")
GREYLEVEL_NAMES = ("mean", "std", "min", "max", "p5", "p25", "p50", "p75", "p95", "skewness", "kurtosis",
                   "entropy_bits")
PERCENTILES = (5, 25, 50, 75, 95)


def _flat(images: np.ndarray) -> np.ndarray:
    x = np.asarray(images)
    if x.ndim < 2:
        raise ValueError(f"expected images (N, H, W) or (N, P), got shape {x.shape}")
    return x.reshape(x.shape[0], -1).astype(np.float64)


def brightness_features(images: np.ndarray) -> np.ndarray:
    """(N, 6) float64 location and central spread of ``images`` (N, H, W) (or (N, P) flat), in
    BRIGHTNESS_NAMES order; ``central_std``: population std of the pixels in [p5, p75]."""
    flat = _flat(images)
    pct = np.percentile(flat, (5, 25, 50, 75), axis=1).T
    central = (flat >= pct[:, [0]]) & (flat <= pct[:, [3]])  # never empty: p5 <= p75 and both are attained or between
    n = central.sum(axis=1)
    mean_c = np.where(central, flat, 0.0).sum(axis=1) / n
    var_c = np.where(central, (flat - mean_c[:, None]) ** 2, 0.0).sum(axis=1) / n
    return np.column_stack([flat.mean(axis=1), pct, np.sqrt(var_c)])


def greylevel_features(images: np.ndarray) -> np.ndarray:
    """(N, 12) float64 statistics of ``images`` (N, H, W) (or (N, P) flat), in GREYLEVEL_NAMES order."""
    flat = _flat(images)
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
    hist = np.zeros((flat.shape[0], 256), dtype=np.int64)
    np.add.at(hist, (np.repeat(np.arange(flat.shape[0]), ints.shape[1]), ints.ravel()), 1)
    p = hist / ints.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    return np.column_stack([mean, std, flat.min(axis=1), flat.max(axis=1), pct, skew, kurt, entropy])
