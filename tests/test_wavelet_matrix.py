"""The matrix engine of the 2-D DWT (microcal_hpc/wavelet/matrix_dwt.py) against PyWavelets itself."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import pywt

from microcal_hpc.wavelet.matrix_dwt import TILE, wavedec2_matrix
from microcal_hpc.wavelet.estimator import WaveletFeatures
from microcal_hpc.wavelet.transform import WaveletSettingsError, extract_features, wavedec2_batch


def _bands(coeffs: list) -> list[np.ndarray]:
    return [coeffs[0]] + [band for details in coeffs[1:] for band in details]


def _pywt(images: np.ndarray, wavelet: str, level: int, mode: str) -> list:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pywt.wavedec2(images.astype(np.float64), wavelet, mode=mode, level=level, axes=(-2, -1))


def _random_images(n: int, shape=(60, 60), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n,) + tuple(shape), dtype=np.uint8)


@pytest.mark.parametrize("mode", pywt.Modes.modes)
@pytest.mark.parametrize("wavelet,shape,level", [("db5", (60, 60), 4), ("bior3.5", (37, 52), 3), ("haar", (9, 16), 2)])
def test_matches_pywavelets_in_every_extension_mode(mode, wavelet, shape, level):
    images = _random_images(TILE + 5, shape)  # two tiles, the second one partial
    ref, got = _pywt(images, wavelet, level, mode), wavedec2_matrix(images, wavelet, level, mode)
    assert len(got) == len(ref) == level + 1
    for r, g in zip(_bands(ref), _bands(got)):
        assert g.shape == r.shape and g.dtype == np.float64
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-12 * np.abs(r).max())


def test_an_image_gets_the_same_bits_wherever_it_sits_in_a_batch():
    images = _random_images(3 * TILE + 7, seed=1)
    whole = _bands(wavedec2_matrix(images, "db5", 4))
    for start in (1, 5, TILE - 1, TILE + 3):  # every image moves to another place in its tile
        shifted = _bands(wavedec2_matrix(images[start:], "db5", 4))
        assert all(np.array_equal(w[start:], s) for w, s in zip(whole, shifted)), start
    for i in (0, 17, 2 * TILE + 6):  # alone in a zero-padded tile
        single = _bands(wavedec2_matrix(images[i:i + 1], "db5", 4))
        assert all(np.array_equal(w[i:i + 1], s) for w, s in zip(whole, single)), i


def test_first_slot_pins_each_image_to_the_tile_slot_of_its_index():
    from microcal_hpc.wavelet import matrix_dwt

    images = _random_images(3 * TILE, seed=6)
    whole = _bands(wavedec2_matrix(images, "db5", 4))
    for a, b in ((0, 7), (7, TILE + 3), (TILE + 3, 3 * TILE)):  # uneven batches, told their first index
        part = _bands(wavedec2_matrix(images[a:b], "db5", 4, first_slot=a))
        assert all(np.array_equal(w[a:b], p) for w, p in zip(whole, part)), (a, b)
    # the mechanism: 2 images from index TILE - 1 fill the last slot of one tile and the first of the next
    wavedec2_matrix(images[:2], "db5", 4, first_slot=TILE - 1)
    last_tile = matrix_dwt._plan((60, 60), "db5", 4, "symmetric").tile
    assert np.array_equal(last_tile[0], images[1].T) and not last_tile[1:].any()


def test_float32_output_is_the_float64_result_rounded():
    images = _random_images(40, seed=2)
    f64, f32 = wavedec2_matrix(images, "db5", 4), wavedec2_matrix(images, "db5", 4, dtype="float32")
    for a, b in zip(_bands(f64), _bands(f32)):
        assert b.dtype == np.float32 and np.array_equal(a.astype(np.float32), b)


def test_out_buffers_are_reused_only_when_they_fit():
    a, b = _random_images(50, seed=3), _random_images(50, seed=4)
    first = wavedec2_matrix(a, "db5", 4)
    kept = [x.copy() for x in _bands(first)]
    second = wavedec2_matrix(b, "db5", 4, out=first)
    assert all(x is y for x, y in zip(_bands(second), _bands(first)))  # same arrays, overwritten
    assert all(np.array_equal(x, y) for x, y in zip(_bands(second), _bands(wavedec2_matrix(b, "db5", 4))))
    assert not all(np.array_equal(x, y) for x, y in zip(_bands(second), kept))
    smaller = wavedec2_matrix(b[:10], "db5", 4, out=second)  # other size: fresh arrays, old ones untouched
    assert smaller[0].shape[0] == 10 and smaller[0] is not second[0]
    assert np.array_equal(second[0], wavedec2_matrix(b, "db5", 4)[0])


def test_engines_agree_through_the_feature_functions_and_the_transformer():
    images = _random_images(20, seed=5)
    m = extract_features(images, feature_sets=("coeffs", "stats"), engine="matrix")
    p = extract_features(images, feature_sets=("coeffs", "stats"), engine="pywt")
    for key in ("coeffs", "stats"):
        np.testing.assert_allclose(m[key], p[key], rtol=1e-9, atol=1e-9)
    every_set = ["coeffs", "stats", "approx_stats", "other_levels_stats"]
    tm = WaveletFeatures(features=every_set).fit(images).transform(images)
    tp = WaveletFeatures(features=every_set, engine="pywt").fit(images).transform(images)
    assert tm.shape == tp.shape == (20, 2430 + 45 + 5 + 15)
    np.testing.assert_allclose(tm, tp, rtol=1e-9, atol=1e-9)
    with pytest.raises(WaveletSettingsError, match="engine"):
        WaveletFeatures(engine="fft").fit(images)
    with pytest.raises(WaveletSettingsError, match="engine"):
        wavedec2_batch(images, "db5", 4, engine="fft")
