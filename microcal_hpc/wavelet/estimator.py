"""The wavelet features as a scikit-learn transformer: ``Pipeline([WaveletFeatures(), ..., estimator])``.

Its own module so that the MPI feature job, which needs only :mod:`microcal_hpc.wavelet.transform`,
does not import scikit-learn on every rank (half a second of start-up each).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from microcal_hpc.wavelet.transform import (DTYPES, WaveletSettingsError, check_engine, check_feature_sets,
                                            check_keep_levels, extract_features, feature_set_columns, resolve_level,
                                            wavedec2_batch)


class WaveletFeatures(TransformerMixin, BaseEstimator):
    """Raw images -> wavelet features, usable as the first step of a scikit-learn Pipeline.

    Parameters
    ----------
    wavelet : discrete PyWavelets wavelet name (default ``db5``).
    level : decomposition level (default 4); None: the boundary-free maximum for the image size.
    keep_levels : detail levels kept by the ``coeffs`` features (1 = finest; default (2, 3, 4)); None: all.
    mode : PyWavelets signal extension mode (default ``symmetric``).
    features : one feature set name or a list of them (``transform.FEATURE_SETS``: ``coeffs``,
        ``stats``, ``approx_stats``, ``other_levels_stats``), side by side in the given order.
    image_shape : (H, W) when X is given flat as (N, H*W); None for (N, H, W) input, or for flat
        input of square images.
    dtype : float64 (PyWavelets' default for 8-bit images) or float32 (half the memory).
    engine : ``matrix`` (matrix products, the default) or ``pywt`` (PyWavelets itself); see the module docstring.

    Fitted attributes: ``image_shape_``, ``level_info_`` (:class:`LevelInfo`), ``keep_levels_``
    (coarsest first), ``feature_sets_``, ``n_features_out_``.
    """

    def __init__(self, wavelet: str = "db5", level: int | None = 4, keep_levels: Sequence[int] | None = (2, 3, 4),
                 mode: str = "symmetric", features: str | Sequence[str] = "coeffs", image_shape: tuple[int, int] | None = None,
                 dtype: str = "float64", engine: str = "matrix"):
        self.wavelet = wavelet
        self.level = level
        self.keep_levels = keep_levels
        self.mode = mode
        self.features = features
        self.image_shape = image_shape
        self.dtype = dtype
        self.engine = engine

    def _images(self, X, shape: tuple[int, int] | None = None) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 3:
            if shape is not None and X.shape[1:] != tuple(shape):
                raise ValueError(f"images are {X.shape[1]}x{X.shape[2]}, fitted on {shape[0]}x{shape[1]}")
            return X
        if X.ndim != 2:
            raise ValueError(f"expected images (N, H, W) or flat images (N, H*W), got an array of shape {X.shape}")
        if shape is None:
            if self.image_shape is not None:
                shape = tuple(int(s) for s in self.image_shape)
            else:
                side = int(round(np.sqrt(X.shape[1])))
                if side * side != X.shape[1]:
                    raise ValueError(f"flat images of {X.shape[1]} pixels are not square: set image_shape=(H, W)")
                shape = (side, side)
        if shape[0] * shape[1] != X.shape[1]:
            raise ValueError(f"flat images of {X.shape[1]} pixels do not match image_shape {tuple(shape)}")
        return X.reshape(X.shape[0], shape[0], shape[1])

    def fit(self, X, y=None):
        """Validate the settings against the image size (no learning)."""
        if self.dtype not in DTYPES:
            raise WaveletSettingsError(f"dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        check_engine(self.engine)
        images = self._images(X)
        self.image_shape_ = tuple(int(s) for s in images.shape[1:])
        self.level_info_ = resolve_level(self.image_shape_, self.wavelet, self.level, self.mode)
        self.keep_levels_ = check_keep_levels(self.keep_levels, self.level_info_.effective)
        self.feature_sets_ = check_feature_sets(self.features, self.level_info_.effective, self.keep_levels_)
        self.n_features_in_ = int(np.prod(images.shape[1:]))
        probe = self._transform(np.zeros((1,) + self.image_shape_, dtype=np.uint8))
        self.n_features_out_ = int(probe.shape[1])
        return self

    def _transform(self, images: np.ndarray) -> np.ndarray:
        out = extract_features(images, self.wavelet, self.level_info_.effective, self.keep_levels_, self.mode,
                               self.feature_sets_, self.dtype, self.engine)
        if len(self.feature_sets_) == 1:
            return out[self.feature_sets_[0]]
        return np.concatenate([out[s] for s in self.feature_sets_], axis=1)

    def transform(self, X) -> np.ndarray:
        """(N, n_features_out_) features of the images X."""
        if not hasattr(self, "level_info_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("WaveletFeatures is not fitted yet; call fit first")
        return self._transform(self._images(X, self.image_shape_))

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """Column names: ``H4_0_0`` ... for coefficients, ``H4_energy`` ... for statistics."""
        probe = wavedec2_batch(np.zeros((1,) + self.image_shape_), self.wavelet, self.level_info_.effective, self.mode)
        names = [n for fs in self.feature_sets_ for n in feature_set_columns(fs, probe, self.keep_levels_)]
        return np.asarray(names, dtype=object)
