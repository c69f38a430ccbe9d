"""Wavelet transform functions and the WaveletFeatures transformer (pure, in-process, fast)."""
from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import pywt
from scipy import stats as sstats

from microcal_hpc.synthetic import synthetic_patch
from microcal_hpc.wavelet.estimator import WaveletFeatures
from microcal_hpc.wavelet.transform import (FEATURE_SETS, WaveletSettingsError, check_feature_sets,
                                            check_keep_levels, coeff_features, detail_index, extract_features,
                                            feature_set_columns, feature_set_values, resolve_level, wavedec2_batch)


def _images(n: int, seed: int = 0, balanced: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2 if balanced else rng.integers(0, 2, n)
    return np.stack([synthetic_patch(rng, int(y)) for y in labels]), labels


@pytest.mark.parametrize("engine", ["pywt", "matrix"])
def test_reference_setting_gives_2430_coefficients_equal_to_a_per_image_loop(engine):
    images, _ = _images(6)
    feats = extract_features(images, "db5", 4, check_keep_levels([2, 3, 4], 4), "symmetric", tuple(FEATURE_SETS),
                             engine=engine)
    assert feats["coeffs"].shape == (6, 2430)
    assert feats["stats"].shape == (6, 45)  # 9 detail sub-bands of levels 2-4, 5 statistics each
    assert feats["approx_stats"].shape == (6, 5) and feats["other_levels_stats"].shape == (6, 15)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(images)):
            c = pywt.wavedec2(images[i], "db5", mode="symmetric", level=4)
            # coeffs[1:4] = detail levels 4, 3, 2; each H, V, D flattened
            direct = np.concatenate([band.ravel() for lev in c[1:4] for band in lev])
            if engine == "pywt":  # the batched call is PyWavelets' own per-image result, bit for bit
                assert np.array_equal(feats["coeffs"][i], direct)
            else:  # matrix products: the same numbers up to rounding
                np.testing.assert_allclose(feats["coeffs"][i], direct, rtol=0, atol=1e-12 * np.abs(direct).max())


def test_detail_levels_index_pywavelets_output_from_the_coarsest():
    images, _ = _images(2)
    coeffs = wavedec2_batch(images, "db5", 4)
    assert [detail_index(4, j) for j in (4, 3, 2, 1)] == [1, 2, 3, 4]
    assert coeffs[detail_index(4, 1)][0].shape[-2:] == (34, 34)  # finest level: largest
    assert coeffs[detail_index(4, 4)][0].shape[-2:] == (12, 12)
    only_finest = coeff_features(coeffs, [1])
    assert only_finest.shape == (2, 3 * 34 * 34)
    assert np.array_equal(only_finest[:, :34 * 34], coeffs[4][0].reshape(2, -1))
    assert check_keep_levels([2, 4, 3], 4) == (4, 3, 2)  # canonical order: coarsest first
    assert check_keep_levels(None, 3) == (3, 2, 1)


@pytest.mark.parametrize("engine", ["pywt", "matrix"])
def test_features_do_not_depend_on_how_images_are_batched(engine):
    images, _ = _images(40, seed=3)
    whole = extract_features(images, feature_sets=tuple(FEATURE_SETS), engine=engine)
    # odd band sizes (15x15, 21x21) put the rows of a sub-band at every alignment: a BLAS dot per row
    # gave the same image other last bits in another batch
    for cuts in (((0, 1), (1, 5), (5, 40)), ((0, 7), (7, 8), (8, 29), (29, 40)), ((0, 3), (3, 40))):
        parts = [extract_features(images[a:b], feature_sets=tuple(FEATURE_SETS), engine=engine) for a, b in cuts]
        for key in FEATURE_SETS:
            assert np.array_equal(whole[key], np.concatenate([p[key] for p in parts])), (key, cuts)


def test_stats_match_scipy_moments_per_subband():
    images, _ = _images(3, seed=1)
    coeffs = wavedec2_batch(images, "db5", 4)
    keep = check_keep_levels([2, 3, 4], 4)
    for fs, band_name, band in (("stats", "D3", coeffs[detail_index(4, 3)][2]), ("approx_stats", "A4", coeffs[0]),
                                ("other_levels_stats", "H1", coeffs[detail_index(4, 1)][0])):
        feats, names = feature_set_values(fs, coeffs, keep), feature_set_columns(fs, coeffs, keep)
        assert len(names) == feats.shape[1]
        for i in range(3):
            x = band[i].ravel()
            row = dict(zip(names, feats[i]))
            np.testing.assert_allclose(row[f"{band_name}_energy"], np.mean(x ** 2), rtol=1e-12)
            np.testing.assert_allclose(row[f"{band_name}_mean_abs"], np.mean(np.abs(x)), rtol=1e-12)
            np.testing.assert_allclose(row[f"{band_name}_std"], np.std(x), rtol=1e-12)
            np.testing.assert_allclose(row[f"{band_name}_skewness"], sstats.skew(x), rtol=1e-9, atol=1e-12)
            np.testing.assert_allclose(row[f"{band_name}_kurtosis"], sstats.kurtosis(x), rtol=1e-9, atol=1e-12)
    constant = feature_set_values("stats", wavedec2_batch(np.full((1, 60, 60), 7, np.uint8), "db5", 4), keep)
    assert np.isfinite(constant).all()


def test_each_feature_set_holds_only_its_named_subbands():
    """'stats' sees the kept detail levels only: changing the approximation or level 1 leaves it unchanged."""
    images, _ = _images(2, seed=4)
    coeffs = wavedec2_batch(images, "db5", 4)
    keep = check_keep_levels([2, 3, 4], 4)
    before = {fs: feature_set_values(fs, coeffs, keep) for fs in FEATURE_SETS}
    coeffs[0] = coeffs[0] * 3 + 50  # the approximation band (brightness)
    coeffs[detail_index(4, 1)] = tuple(b * 2 for b in coeffs[detail_index(4, 1)])  # level 1, not kept
    after = {fs: feature_set_values(fs, coeffs, keep) for fs in FEATURE_SETS}
    assert np.array_equal(before["coeffs"], after["coeffs"]) and np.array_equal(before["stats"], after["stats"])
    assert not np.array_equal(before["approx_stats"], after["approx_stats"])
    assert not np.array_equal(before["other_levels_stats"], after["other_levels_stats"])
    names = {fs: feature_set_columns(fs, coeffs, keep) for fs in FEATURE_SETS}
    assert {n.split("_")[0] for n in names["stats"]} == {f"{b}{j}" for b in "HVD" for j in (2, 3, 4)}
    assert {n.split("_")[0] for n in names["approx_stats"]} == {"A4"}
    assert {n.split("_")[0] for n in names["other_levels_stats"]} == {"H1", "V1", "D1"}
    assert names["coeffs"][:2] == ["H4_0_0", "H4_0_1"] and len(names["coeffs"]) == 2430


@pytest.mark.parametrize("names, match", [
    (["both"], "'both' is the old spelling: list the sets by name"),
    (["coeffs", "stat"], r"unknown feature set\(s\) stat \(did you mean stats\?\)"),
    ([], "no feature set named"),
    (["stats", "stats"], "name a set twice"),
])
def test_bad_feature_set_names_are_one_line_errors(names, match):
    with pytest.raises(WaveletSettingsError, match=match) as exc:
        check_feature_sets(names, 4, [2, 3, 4])
    assert "\n" not in str(exc.value)
    with pytest.raises(WaveletSettingsError, match="other_levels_stats is empty"):
        check_feature_sets(["other_levels_stats"], 4, [1, 2, 3, 4])


def test_level_too_high_logs_one_line_and_no_pywavelets_warning(caplog):
    images, _ = _images(2)
    with caplog.at_level(logging.INFO, logger="microcal.wavelet"), warnings.catch_warnings():
        warnings.simplefilter("error")  # any PyWavelets warning would fail the test
        info = resolve_level((60, 60), "db5", 4, "symmetric")
        for _ in range(3):
            WaveletFeatures(level=4).fit(images).transform(images)
    assert (info.effective, info.boundary_free_max, info.hard_max) == (4, 2, 6)
    lines = [r.getMessage() for r in caplog.records if "level 4" in r.getMessage()]
    assert len(lines) <= 1  # once per process and setting (an earlier test may have logged it already)
    assert resolve_level((60, 60), "db5", None).effective == 2  # None: the boundary-free maximum


@pytest.mark.parametrize("kwargs, match", [
    ({"wavelet": "db55"}, "not a discrete wavelet.*did you mean"),
    ({"wavelet": "morl"}, "not a discrete wavelet"),  # continuous wavelets cannot do a DWT
    ({"level": 0}, "must be >= 1"),
    ({"level": 7}, "too high for 60x60"),
    ({"mode": "mirror"}, "not a PyWavelets extension mode"),
    ({"keep_levels": (2, 5)}, r"keep_levels \[5\] outside 1..4"),
    ({"features": "all"}, "unknown feature set"),
    ({"features": "both"}, "old spelling"),
])
def test_bad_settings_raise_clear_errors(kwargs, match):
    images, _ = _images(2)
    with pytest.raises(WaveletSettingsError, match=match) as exc:
        WaveletFeatures(**kwargs).fit(images)
    assert isinstance(exc.value, ValueError)  # usable as a scikit-learn parameter error
    assert "\n" not in str(exc.value)


def test_transformer_in_a_pipeline_with_cross_validation():
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    images, labels = _images(60, seed=5, balanced=True)
    pipe = Pipeline([("wavelet", WaveletFeatures(features="stats")), ("scale", StandardScaler()), ("svm", SVC())])
    auc = cross_val_score(pipe, images, labels, cv=3, scoring="roc_auc")
    assert auc.mean() > 0.8  # synthetic clusters are bright spots: the detail energies find them
    flat = cross_val_score(clone(pipe).set_params(wavelet__image_shape=(60, 60)), images.reshape(60, -1), labels,
                           cv=3, scoring="roc_auc")
    assert np.allclose(auc, flat)  # (N, H*W) input with image_shape gives the same result
    fitted = WaveletFeatures(features=["coeffs", "stats"]).fit(images)
    out = fitted.transform(images[:4])
    assert out.shape == (4, 2430 + 45) == (4, fitted.n_features_out_)
    names = fitted.get_feature_names_out()
    assert len(names) == out.shape[1] and names[2430] == "H4_energy"
    with pytest.raises(ValueError, match="not square"):
        WaveletFeatures().fit(np.zeros((2, 3600 - 1)))
    with pytest.raises(ValueError, match="fitted on 60x60"):
        fitted.transform(np.zeros((2, 32, 32)))
