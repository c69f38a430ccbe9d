"""2-D discrete wavelet features of image patches: pure functions (the transformer is in ``estimator``).

Coefficient indexing (the one thing to get right)
-------------------------------------------------
``pywt.wavedec2(x, wavelet, level=n)`` returns ``[cA_n, (cH_n, cV_n, cD_n), (cH_n-1, ...), ..., (cH_1, cV_1, cD_1)]``:
index 0 is the approximation at the coarsest level ``n``; index ``i`` (1..n) holds the horizontal,
vertical and diagonal details of level ``n - i + 1``. Level 1 is the finest (half resolution).
So detail level ``j`` is ``coeffs[n - j + 1]`` (:func:`detail_index`), and for ``n = 4`` the
"detail levels 2-4" of the reference study are ``coeffs[1:4]`` (levels 4, 3, 2, in that order).

:func:`coeff_features` concatenates, per image, the kept levels from the coarsest to the finest and
within a level H, V, D, each sub-band flattened in C order. db5, level 4 on 60x60 patches:
level 4: 3 x 12x12, level 3: 3 x 15x15, level 2: 3 x 21x21 -> 3 x (144 + 225 + 441) = 2,430 values.

:func:`stats_features` describes every sub-band (the approximation and all 3 x n detail sub-bands,
kept levels or not) by 5 numbers: energy (mean of squares), mean absolute value, standard deviation,
skewness and excess kurtosis (population moments; 0 for a constant sub-band).
Order: cA_n, then level n..1, each H, V, D; per sub-band the 5 statistics. db5 level 4: 13 x 5 = 65.

Level beyond the boundary-free maximum
--------------------------------------
PyWavelets calls a level "too high" when the signal is shorter than the filter at that level
(``pywt.dwtn_max_level``: 2 for db5 on 60x60) and warns on every call (once per process with the default
warning filter). The transform is still well defined; level 4 is the reference setting. Here the level is
used as asked, the per-call warning is suppressed, and :func:`resolve_level` logs ONE line per process and
setting saying what is computed. A level at which the coefficient arrays no longer shrink
(:func:`hard_max_level`; 6 for db5 on 60x60 in symmetric mode) adds nothing and is rejected.
``level=None`` means the boundary-free maximum.

Engines
-------
``matrix`` (default; :mod:`microcal_hpc.wavelet.matrix_dwt`): each level as two dense matrix products over
tiles of 32 images, the matrices read off PyWavelets; 1e-15 relative to PyWavelets in float64 (1e-13 in
``smooth`` mode) and about twice as fast (``bench/bench_wavelet.py``). ``pywt``: ``pywt.wavedec2`` over
the whole batch, the reference. With either engine an image's features do not depend on how images are grouped into batches
or MPI ranks (bit for bit; tests check both).
"""
from __future__ import annotations

import difflib
import logging
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from microcal_hpc.errors import ConfigError

log = logging.getLogger("microcal.wavelet")

SUBBANDS = ("H", "V", "D")  # order of the detail tuples in PyWavelets' output
STAT_NAMES = ("energy", "mean_abs", "std", "skewness", "kurtosis")
FEATURE_SETS = ("coeffs", "stats")
DTYPES = ("float64", "float32")
ENGINES = ("matrix", "pywt")
_TOO_HIGH = r"Level value of \d+ is too high"


class WaveletSettingsError(ConfigError, ValueError):
    """Invalid wavelet settings (name, level, mode, kept levels): a one-line message.

    A ConfigError for the command line (one line, exit 2) and a ValueError for scikit-learn code.
    """


# ------------------------------------------------------------------------------------------------
# Validation


def check_wavelet(name: str) -> "pywt.Wavelet":  # noqa: F821
    """The discrete PyWavelets wavelet called ``name``; WaveletSettingsError if there is none."""
    import pywt

    known = pywt.wavelist(kind="discrete")
    if not isinstance(name, str) or name not in known:
        close = difflib.get_close_matches(str(name), known, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (see pywt.wavelist(kind='discrete'))"
        raise WaveletSettingsError(f"wavelet {name!r} is not a discrete wavelet known to PyWavelets{hint}")
    return pywt.Wavelet(name)


def check_mode(mode: str) -> str:
    """``mode`` if it is a PyWavelets signal extension mode; WaveletSettingsError otherwise."""
    import pywt

    if mode not in pywt.Modes.modes:
        raise WaveletSettingsError(f"wavelet mode {mode!r} is not a PyWavelets extension mode; "
                                   f"known: {', '.join(pywt.Modes.modes)}")
    return mode


def hard_max_level(image_shape: Sequence[int], wavelet: str, mode: str = "symmetric") -> int:
    """The deepest level at which every axis of the approximation still gets shorter (at least 1)."""
    import pywt

    w = check_wavelet(wavelet)
    deepest = []
    for n in image_shape:
        level, length = 0, int(n)
        while True:
            nxt = pywt.dwt_coeff_len(length, w.dec_len, mode)
            if nxt >= length or nxt < 1:
                break
            level, length = level + 1, nxt
        deepest.append(level)
    return max(1, min(deepest))


@dataclass(frozen=True)
class LevelInfo:
    """What a decomposition computes for one image shape and wavelet."""

    requested: int | None  # as given (None: boundary-free maximum)
    effective: int  # the level computed
    boundary_free_max: int  # pywt.dwtn_max_level: deepest level without boundary effects
    hard_max: int  # deepest level that still shrinks the image

    @property
    def boundary_levels(self) -> list[int]:
        """Levels whose coefficients all feel the signal extension at the borders."""
        return list(range(self.boundary_free_max + 1, self.effective + 1))


_logged_settings: set[tuple] = set()


def resolve_level(image_shape: Sequence[int], wavelet: str, level: int | None, mode: str = "symmetric",
                  logger: logging.Logger | None = None) -> LevelInfo:
    """Validate ``level`` for images of ``image_shape`` and log, once per process and setting, what is used."""
    import pywt

    w = check_wavelet(wavelet)
    check_mode(mode)
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 2 or min(shape) < 1:
        raise WaveletSettingsError(f"image shape {shape} is not a 2-D (H, W) shape")
    free = int(pywt.dwtn_max_level(shape, w))
    hard = hard_max_level(shape, wavelet, mode)
    if level is None:
        effective = max(1, free)
    else:
        if isinstance(level, bool) or not isinstance(level, (int, np.integer)):
            raise WaveletSettingsError(f"wavelet level must be an integer or None, got {level!r}")
        if level < 1:
            raise WaveletSettingsError(f"wavelet level must be >= 1, got {level}")
        if level > hard:
            raise WaveletSettingsError(
                f"wavelet level {level} is too high for {shape[0]}x{shape[1]} images with {wavelet} "
                f"(mode {mode}): beyond level {hard} the coefficients no longer shrink "
                f"(boundary-free maximum: {free})")
        effective = int(level)
    info = LevelInfo(requested=None if level is None else int(level), effective=effective,
                     boundary_free_max=free, hard_max=hard)
    key = (shape, wavelet, mode, info.requested)
    if key not in _logged_settings:
        _logged_settings.add(key)
        if info.boundary_levels:
            bl = info.boundary_levels
            span = f"{bl[0]}" if len(bl) == 1 else f"{bl[0]}-{bl[-1]}"
            msg = (f"wavelet {wavelet}, level {effective} on {shape[0]}x{shape[1]} images (mode {mode}): "
                   f"computed as asked; PyWavelets' boundary-free maximum is {free}, so level(s) {span} "
                   f"are dominated by the border extension (its per-call 'too high' warning is silenced)")
        else:
            how = "the boundary-free maximum" if level is None else "within the boundary-free maximum"
            msg = (f"wavelet {wavelet}, level {effective} on {shape[0]}x{shape[1]} images (mode {mode}): "
                   f"{how} ({free})")
        (logger or log).info(msg)
    return info


def check_keep_levels(keep_levels: Iterable[int] | None, level: int) -> tuple[int, ...]:
    """The kept detail levels, coarsest first; None means all levels 1..level."""
    if keep_levels is None:
        return tuple(range(level, 0, -1))
    try:
        levels = [int(v) for v in keep_levels]
    except (TypeError, ValueError):
        raise WaveletSettingsError(f"keep_levels must be a list of integers, got {keep_levels!r}") from None
    if not levels:
        raise WaveletSettingsError("keep_levels must not be empty")
    bad = [v for v in levels if not 1 <= v <= level]
    if bad:
        raise WaveletSettingsError(f"keep_levels {bad} outside 1..{level} (the decomposition level)")
    if len(set(levels)) != len(levels):
        raise WaveletSettingsError(f"keep_levels {levels} lists a level twice")
    return tuple(sorted(levels, reverse=True))


def check_features(features: str) -> tuple[str, ...]:
    """The feature sets named by ``features`` (coeffs | stats | both)."""
    if features == "both":
        return FEATURE_SETS
    if features not in FEATURE_SETS:
        raise WaveletSettingsError(f"features must be coeffs, stats or both; got {features!r}")
    return (features,)


# ------------------------------------------------------------------------------------------------
# Pure functions


def detail_index(level: int, j: int) -> int:
    """Index in ``wavedec2``'s output of detail level ``j`` (1 = finest) of a ``level``-level decomposition."""
    if not 1 <= j <= level:
        raise ValueError(f"detail level {j} outside 1..{level}")
    return level - j + 1


def check_engine(engine: str) -> str:
    """``engine`` if it is one of :data:`ENGINES`; WaveletSettingsError otherwise."""
    if engine not in ENGINES:
        raise WaveletSettingsError(f"wavelet engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    return engine


def wavedec2_batch(images: np.ndarray, wavelet: str, level: int, mode: str = "symmetric",
                   dtype: str = "float64", engine: str = "matrix", out: list | None = None,
                   first_slot: int = 0) -> list:
    """``pywt.wavedec2`` over the last two axes of ``images`` (N, H, W), as ``dtype`` arrays.

    ``engine``: ``matrix`` (matrix products, computed in float64) or ``pywt`` (PyWavelets, computed in
    ``dtype``). ``out``: an earlier result for as many images of the same size, reused by the matrix
    engine to save allocations; ``first_slot``: see ``matrix_dwt.wavedec2_matrix``. Validate settings with :func:`resolve_level` first; PyWavelets' "level
    too high" warning is silenced here (resolve_level reports the setting once).
    """
    import pywt

    x = np.asarray(images)
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {x.shape}")
    if check_engine(engine) == "matrix":
        from microcal_hpc.wavelet.matrix_dwt import wavedec2_matrix

        return wavedec2_matrix(x, wavelet, level, mode, dtype, out=out, first_slot=first_slot)
    x = x.astype(dtype, copy=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_TOO_HIGH, category=UserWarning)
        return pywt.wavedec2(x, wavelet, mode=mode, level=level, axes=(-2, -1))


def coeff_feature_length(coeffs: list, keep_levels: Sequence[int]) -> int:
    """Number of values :func:`coeff_features` returns per image."""
    n = len(coeffs) - 1
    return sum(int(np.prod(coeffs[detail_index(n, j)][0].shape[-2:])) * 3 for j in keep_levels)


def coeff_features(coeffs: list, keep_levels: Sequence[int] = (4, 3, 2), out: np.ndarray | None = None) -> np.ndarray:
    """(N, F) detail coefficients of the kept levels, coarsest level first, H/V/D each flattened.

    ``coeffs`` is a batched ``wavedec2`` result; ``keep_levels`` are detail levels (1 = finest), taken
    in the given order (use :func:`check_keep_levels` for the canonical coarsest-first order).
    """
    n_levels = len(coeffs) - 1
    parts = []
    for j in keep_levels:
        for band in coeffs[detail_index(n_levels, j)]:
            parts.append(band.reshape(band.shape[0], -1))
    return np.concatenate(parts, axis=1, out=out)


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product of each row of ``a`` with the same row of ``b``: one BLAS ``dot`` per row."""
    return np.matmul(a[:, None, :], b[:, :, None])[:, 0, 0]


def _moments(x: np.ndarray) -> np.ndarray:
    """(N, 5) energy, mean |x|, std, skewness, excess kurtosis of each row of ``x`` (N, M).

    Two-pass central moments (no cancellation for bands with a large mean, such as the approximation);
    the third and fourth are row dot products; energy is the variance plus the squared mean.
    """
    m = x.shape[1]
    mean = x.sum(axis=1) / m
    d = x - mean[:, None]
    d2 = d * d
    m2 = d2.sum(axis=1) / m
    m3 = _row_dot(d2, d) / m
    m4 = _row_dot(d2, d2) / m
    energy = m2 + mean * mean
    mean_abs = np.abs(x, out=d).sum(axis=1) / m
    std = np.sqrt(m2)
    # constant rows (std below ~64 ulp of the values, or all zero): skewness and kurtosis are defined as 0
    flat = m2 <= energy * (64 * np.finfo(x.dtype).eps) ** 2
    safe = np.where(flat, 1.0, m2)
    skew = np.where(flat, 0.0, m3 / safe ** 1.5)
    kurt = np.where(flat, 0.0, m4 / (safe * safe) - 3.0)
    return np.stack([energy, mean_abs, std, skew, kurt], axis=1).astype(x.dtype, copy=False)


def subband_names(level: int) -> list[str]:
    """Names of the sub-bands in :func:`stats_features` order: A<n>, then H<n>, V<n>, D<n>, ..., D1."""
    return [f"A{level}"] + [f"{b}{j}" for j in range(level, 0, -1) for b in SUBBANDS]


def stats_feature_names(level: int) -> list[str]:
    """``<subband>_<stat>`` names of the :func:`stats_features` columns."""
    return [f"{sb}_{st}" for sb in subband_names(level) for st in STAT_NAMES]


_MOMENT_BLOCK = 65536  # values per block of rows in _row_moments: the temporaries stay in a 1 MB L2 cache


def _row_moments(x: np.ndarray) -> np.ndarray:
    """:func:`_moments` of ``x`` (N, M) in blocks of rows (2x faster for large N; every row's result is the same)."""
    rows = max(8, _MOMENT_BLOCK // max(1, x.shape[1]))
    if x.shape[0] <= rows:
        return _moments(x)
    return np.concatenate([_moments(x[a:a + rows]) for a in range(0, x.shape[0], rows)])


def stats_features(coeffs: list) -> np.ndarray:
    """(N, 5 x (3 n + 1)) statistics of every sub-band (see the module docstring for order and meaning)."""
    bands = [coeffs[0]] + [b for details in coeffs[1:] for b in details]
    n = bands[0].shape[0]
    return np.concatenate([_row_moments(np.ascontiguousarray(b).reshape(n, -1)) for b in bands], axis=1)


def coeff_feature_names(level: int, keep_levels: Sequence[int], shapes: dict[int, tuple[int, int]]) -> list[str]:
    """``<subband><level>_<row>_<col>`` names of the :func:`coeff_features` columns (``shapes``: level -> (h, w))."""
    names = []
    for j in keep_levels:
        h, w = shapes[j]
        names += [f"{b}{j}_{r}_{c}" for b in SUBBANDS for r in range(h) for c in range(w)]
    return names


def extract_features(images: np.ndarray, wavelet: str = "db5", level: int = 4,
                     keep_levels: Sequence[int] = (4, 3, 2), mode: str = "symmetric",
                     feature_sets: Sequence[str] = ("coeffs",), dtype: str = "float64",
                     engine: str = "matrix") -> dict[str, np.ndarray]:
    """Decompose ``images`` (N, H, W) once and return ``{feature_set: (N, F)}`` for the asked sets."""
    coeffs = wavedec2_batch(images, wavelet, level, mode, dtype, engine)
    out = {}
    if "coeffs" in feature_sets:
        out["coeffs"] = coeff_features(coeffs, keep_levels)
    if "stats" in feature_sets:
        out["stats"] = stats_features(coeffs)
    return out
