"""2-D discrete wavelet features of image patches: pure functions (the transformer is in ``estimator``).

Coefficient indexing (the one thing to get right)
-------------------------------------------------
``pywt.wavedec2(x, wavelet, level=n)`` returns ``[cA_n, (cH_n, cV_n, cD_n), (cH_n-1, ...), ..., (cH_1, cV_1, cD_1)]``:
index 0 is the approximation at the coarsest level ``n``; index ``i`` (1..n) holds the horizontal,
vertical and diagonal details of level ``n - i + 1``. Level 1 is the finest (half resolution).
So detail level ``j`` is ``coeffs[n - j + 1]`` (:func:`detail_index`), and for ``n = 4`` the
"detail levels 2-4" of the reference study are ``coeffs[1:4]`` (levels 4, 3, 2, in that order).

Feature sets (:data:`FEATURE_SETS`, selected by name)
------------------------------------------------------
Each set draws on named sub-bands only, so a classifier's inputs say what they contain:

- ``coeffs``: the detail coefficients of the kept levels (``keep_levels``), the coarsest level first and
  within a level H, V, D, each sub-band flattened in C order. db5, level 4 on 60x60 patches, levels 2-4:
  3 x (144 + 225 + 441) = 2,430 values. Column ``H4_0_0`` = sub-band H of level 4, row 0, column 0.
- ``stats``: 5 statistics of each detail sub-band of the kept levels (same order): energy (mean of
  squares), mean absolute value, standard deviation, skewness and excess kurtosis (population moments;
  0 for a constant sub-band). Levels 2-4: 9 sub-bands x 5 = 45. Column ``H4_energy``.
- ``approx_stats``: the same 5 statistics of the approximation sub-band ``A<level>``: the patch's
  brightness and low-frequency content (its mean absolute value follows the mean grey level), not
  detail. Column ``A4_mean_abs``.
- ``other_levels_stats``: the same 5 statistics of the detail sub-bands of the levels NOT in
  ``keep_levels`` (levels 2-4 kept: level 1, the finest, 15 values).

The statistics of an image do not depend on the other images of its batch, bit for bit: row sums use
NumPy's pairwise summation and the higher moments ``np.einsum``, whose results depend on the row's
values only (a BLAS dot product's rounding depends on the memory alignment of the row, i.e. on its
place in the batch).

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
# The feature sets by name -> what they hold (module docstring). The one declaration that the config,
# the features job, the features file, the classifiers and the report read.
FEATURE_SETS = {
    "coeffs": "detail coefficients of the kept levels",
    "stats": "5 statistics of each detail sub-band of the kept levels",
    "approx_stats": "5 statistics of the approximation sub-band (brightness, low frequencies)",
    "other_levels_stats": "5 statistics of each detail sub-band of the levels outside keep_levels",
}
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


def check_feature_sets(names, level: int, keep_levels: Iterable[int] | None = None) -> tuple[str, ...]:
    """The feature sets named by ``names`` (a list of :data:`FEATURE_SETS` names, or one name).

    WaveletSettingsError for an unknown name, the old spelling ``both``, an empty list, a name given
    twice, or ``other_levels_stats`` when ``keep_levels`` keeps every level (the set would be empty).
    """
    if isinstance(names, str):
        names = [names]
    names = list(names)
    if "both" in names:
        raise WaveletSettingsError("feature set 'both' is the old spelling: list the sets by name, "
                                   f"e.g. [coeffs, stats] (known: {', '.join(FEATURE_SETS)})")
    unknown = [n for n in names if n not in FEATURE_SETS]
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), list(FEATURE_SETS), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise WaveletSettingsError(f"unknown feature set(s) {', '.join(map(str, unknown))}{hint}; "
                                   f"known: {', '.join(FEATURE_SETS)}")
    if not names:
        raise WaveletSettingsError(f"no feature set named; known: {', '.join(FEATURE_SETS)}")
    if len(set(names)) != len(names):
        raise WaveletSettingsError(f"feature sets {names} name a set twice")
    if "other_levels_stats" in names and set(check_keep_levels(keep_levels, level)) == set(range(1, level + 1)):
        raise WaveletSettingsError(f"feature set other_levels_stats is empty: keep_levels keeps every level 1..{level}")
    return tuple(names)


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


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dot product of each row of ``a`` with the same row of ``b``.

    ``np.einsum``, not BLAS: a BLAS dot's rounding depends on where the row sits in memory, so the
    same image would get other last bits in another batch (or on another MPI rank).
    """
    return np.einsum("ij,ij->i", a, b)


def _moments(x: np.ndarray) -> np.ndarray:
    """(N, 5) energy, mean |x|, std, skewness, excess kurtosis of each row of ``x`` (N, M).

    Two-pass central moments (no cancellation for bands with a large mean, such as the approximation);
    the third and fourth are row dot products; energy is the variance plus the squared mean. Every
    row's result depends on that row alone, bit for bit (see :func:`_row_dot`).
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


_MOMENT_BLOCK = 65536  # values per block of rows in _row_moments: the temporaries stay in a 1 MB L2 cache


def _row_moments(x: np.ndarray) -> np.ndarray:
    """:func:`_moments` of ``x`` (N, M) in blocks of rows (2x faster for large N; every row's result is the same)."""
    rows = max(8, _MOMENT_BLOCK // max(1, x.shape[1]))
    if x.shape[0] <= rows:
        return _moments(x)
    return np.concatenate([_moments(x[a:a + rows]) for a in range(0, x.shape[0], rows)])


def subbands(coeffs: list, feature_set: str, keep_levels: Sequence[int]) -> list[tuple[str, np.ndarray]]:
    """(name, batched array) of the sub-bands a feature set draws on, in its column order.

    Names: ``A<n>`` for the approximation, ``H<j>``, ``V<j>``, ``D<j>`` for the details of level ``j``.
    ``keep_levels`` in the order wanted (canonical: coarsest first, :func:`check_keep_levels`).
    """
    n = len(coeffs) - 1
    if feature_set == "approx_stats":
        return [(f"A{n}", coeffs[0])]
    if feature_set in ("coeffs", "stats"):
        levels = list(keep_levels)
    elif feature_set == "other_levels_stats":
        levels = [j for j in range(n, 0, -1) if j not in set(keep_levels)]
    else:
        raise WaveletSettingsError(f"unknown feature set {feature_set!r}; known: {', '.join(FEATURE_SETS)}")
    return [(f"{b}{j}", band) for j in levels for b, band in zip(SUBBANDS, coeffs[detail_index(n, j)])]


def coeff_features(coeffs: list, keep_levels: Sequence[int] = (4, 3, 2), out: np.ndarray | None = None) -> np.ndarray:
    """(N, F) detail coefficients of the kept levels, coarsest level first, H/V/D each flattened.

    ``coeffs`` is a batched ``wavedec2`` result; ``keep_levels`` are detail levels (1 = finest), taken
    in the given order (use :func:`check_keep_levels` for the canonical coarsest-first order).
    """
    parts = [band.reshape(band.shape[0], -1) for _, band in subbands(coeffs, "coeffs", keep_levels)]
    return np.concatenate(parts, axis=1, out=out)


def band_stats(bands: list[tuple[str, np.ndarray]]) -> np.ndarray:
    """(N, 5 x len(bands)) statistics (:data:`STAT_NAMES`) of each batched sub-band, side by side."""
    n = bands[0][1].shape[0]
    return np.concatenate([_row_moments(np.ascontiguousarray(b).reshape(n, -1)) for _, b in bands], axis=1)


def feature_set_values(feature_set: str, coeffs: list, keep_levels: Sequence[int],
                       out: np.ndarray | None = None) -> np.ndarray:
    """(N, F) values of one feature set (:data:`FEATURE_SETS`) of a batched ``wavedec2`` result."""
    if feature_set == "coeffs":
        return coeff_features(coeffs, keep_levels, out=out)
    values = band_stats(subbands(coeffs, feature_set, keep_levels))
    if out is not None:
        out[...] = values
        return out
    return values


def feature_set_columns(feature_set: str, coeffs: list, keep_levels: Sequence[int]) -> list[str]:
    """Column names of :func:`feature_set_values`: ``<subband>_<row>_<col>`` for coefficients,
    ``<subband>_<statistic>`` for statistics (e.g. ``H4_0_0``, ``D3_kurtosis``, ``A4_mean_abs``)."""
    bands = subbands(coeffs, feature_set, keep_levels)
    if feature_set == "coeffs":
        return [f"{name}_{r}_{c}" for name, band in bands for r in range(band.shape[-2]) for c in range(band.shape[-1])]
    return [f"{name}_{st}" for name, _ in bands for st in STAT_NAMES]


def extract_features(images: np.ndarray, wavelet: str = "db5", level: int = 4,
                     keep_levels: Sequence[int] = (4, 3, 2), mode: str = "symmetric",
                     feature_sets: Sequence[str] = ("coeffs",), dtype: str = "float64",
                     engine: str = "matrix") -> dict[str, np.ndarray]:
    """Decompose ``images`` (N, H, W) once and return ``{feature_set: (N, F)}`` for the asked sets."""
    coeffs = wavedec2_batch(images, wavelet, level, mode, dtype, engine)
    return {fs: feature_set_values(fs, coeffs, keep_levels) for fs in feature_sets}
