"""The report's generated sentences claim no more than the numbers support: the CNN-versus-wavelet conclusion
from the CIs of the paired differences, the bright-pixel share of saliency maps, the source letters."""
from __future__ import annotations

import numpy as np
import pytest

from microcal_hpc.report.comparison import PairedComparison, conclusion, verdict
from microcal_hpc.report.saliency import bright_share
from microcal_hpc.report.sources import single_class_letters, source_letters


def _p(diff: float, lo: float, hi: float, p: float = 0.2) -> dict:
    return {"diff": diff, "ci_low": lo, "ci_high": hi, "p_value": p, "n": 161, "auc_a": 0.9, "auc_b": 0.9 - diff}


def _comps(ref: dict, best: dict) -> list[PairedComparison]:
    return [PairedComparison("reference pipeline", "coeffs/rf", "Random forest on 'coeffs'", paired=ref),
            PairedComparison("best wavelet model by CV AUC", "stats/svm", "SVM on 'stats'", paired=best)]


def test_verdict_follows_the_confidence_interval():
    assert verdict(_p(0.02, 0.001, 0.04)) == "higher"
    assert verdict(_p(-0.02, -0.04, -0.001)) == "lower"
    assert verdict(_p(0.02, -0.001, 0.04)) == "unclear"


def test_better_only_when_every_interval_lies_above_zero():
    text = conclusion(_comps({"test": _p(0.025, 0.006, 0.055, 0.001), "cv": _p(0.03, 0.01, 0.05)},
                             {"test": _p(0.02, 0.004, 0.04), "cv": _p(0.01, 0.001, 0.02)}))
    assert "Every 95% CI lies above 0" in text and "higher than Random forest on 'coeffs' and SVM on 'stats'" in text
    assert "+0.025 (95% CI +0.006 to +0.055, p = 0.001, n = 161)" in text
    assert "no difference" not in text


def test_no_difference_only_when_every_interval_includes_zero():
    text = conclusion(_comps({"test": _p(0.01, -0.01, 0.03), "cv": _p(0.0, -0.02, 0.02)},
                             {"test": _p(-0.01, -0.03, 0.01), "cv": _p(0.005, -0.01, 0.02)}))
    assert "Every 95% CI includes 0" in text and "not evidence that they are equally good" in text


def test_one_supporting_comparison_does_not_make_an_overall_no_difference():
    """The issue's case: CNN clearly better than the reference pipeline, not distinguishable from the best by CV."""
    text = conclusion(_comps({"test": _p(0.025, 0.006, 0.055, 0.001), "cv": _p(0.03, 0.01, 0.05)},
                             {"test": _p(0.005, -0.02, 0.03, 0.6), "cv": _p(0.01, -0.005, 0.03)}))
    assert "neither 'better' nor 'no difference' holds overall" in text
    assert ("against Random forest on 'coeffs', the CNN's AUC is higher on the official Test set and in "
            "cross-validation") in text
    assert "against SVM on 'stats', no difference is shown on the official Test set and in cross-validation" in text
    assert "Every 95% CI includes 0" not in text and "lies above 0" not in text


def test_a_wavelet_model_doing_better_is_said_so():
    text = conclusion(_comps({"test": _p(-0.05, -0.08, -0.02)}, {"test": _p(0.01, -0.01, 0.03)}))
    assert "the CNN's AUC is lower on the official Test set" in text
    assert "in cross-validation" not in text  # nothing is said about what was not measured


def test_without_any_paired_result_nothing_is_concluded():
    assert conclusion(_comps({}, {})).startswith("No paired comparison is possible")


def test_bright_share_counts_the_map_on_the_brightest_two_percent():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 200, (60, 60)).astype(np.uint8)
    image[10:13, 20:23] = 255  # a 3x3 speck: 9 of the 72 brightest pixels
    speck_only = np.zeros((60, 60))
    speck_only[10:13, 20:23] = 1.0
    assert bright_share(image, speck_only) == 1.0
    assert bright_share(image, np.ones((60, 60))) == pytest.approx(72 / 3600)
    assert np.isnan(bright_share(image, np.zeros((60, 60))))


def test_source_letter_is_the_tag_after_the_case_id():
    letters = source_letters(["0227u1_3_1", "0033f1_4_0", "odd_name"], r"^\d{4}(?P<source>[A-Za-z])")
    assert letters.tolist() == ["u", "f", "—"]
    labels = np.array([1, 1, 0, 0, 1])
    assert single_class_letters(np.array(["u", "u", "n", "—", "n"]), labels) == {"u": 1}
