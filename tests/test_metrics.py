"""The shared metrics without scikit-learn: equal to scikit-learn's, and the vectorised group bootstrap
equal to the loop of roc_auc_score calls it replaced (kept below as the reference)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

from microcal_hpc.metrics import binary_metrics, bootstrap_auc_ci, paired_bootstrap_auc, roc_auc


# ---- the reference: the group bootstrap as it was, one roc_auc_score call per resample and score ----

def _reference_members(groups, n):
    if groups is None:
        return [np.array([i]) for i in range(n)]
    _, inv = np.unique(np.asarray(groups), return_inverse=True)
    order = np.argsort(inv, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(inv[order])) + 1)


def _reference_boot(y, scores, groups, n_boot, seed):
    members = _reference_members(groups, len(y))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_boot):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        if len(np.unique(y[idx])) < 2:
            continue
        out.append([roc_auc_score(y[idx], s[idx]) for s in scores])
    return np.asarray(out)


def reference_ci(y, s, groups, n_boot, seed, alpha=0.05):
    aucs = _reference_boot(np.asarray(y), [np.asarray(s, float)], groups, n_boot, seed)[:, 0]
    return tuple(np.quantile(aucs, [alpha / 2, 1 - alpha / 2]))


def reference_paired(y, a, b, groups, n_boot, seed, alpha=0.05):
    boots = _reference_boot(np.asarray(y), [np.asarray(a, float), np.asarray(b, float)], groups, n_boot, seed)
    d = boots[:, 0] - boots[:, 1]
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    return {"diff": roc_auc_score(y, a) - roc_auc_score(y, b), "ci_low": lo, "ci_high": hi,
            "p_value": min(1.0, 2 * min(np.mean(d <= 0), np.mean(d >= 0))), "n_boot": len(d)}


# ---- fixed data shaped like the official Test set: 161 images in 63 groups, tied scores ----

def _test_like(seed=0, n=161, n_groups=63, tie_step=None):
    rng = np.random.default_rng(seed)
    groups = np.sort(rng.integers(0, n_groups, n)).astype(str)
    group_label = {g: int(rng.random() < 0.48) for g in np.unique(groups)}
    y = np.array([group_label[g] for g in groups])
    a = 1 / (1 + np.exp(-(2.5 * (y - 0.5) + rng.normal(0, 1.0, n))))
    b = 1 / (1 + np.exp(-(1.5 * (y - 0.5) + rng.normal(0, 1.0, n))))
    if tie_step:  # many tied scores, as from a saturated sigmoid or a forest's vote shares
        a, b = np.round(a / tie_step) * tie_step, np.round(b / tie_step) * tie_step
    return y, a, b, groups


CASES = [dict(seed=0), dict(seed=1, tie_step=0.05), dict(seed=2, n=60, n_groups=9), dict(seed=3, tie_step=0.25)]


@pytest.mark.parametrize("case", CASES)
def test_bootstrap_ci_matches_the_roc_auc_score_loop(case):
    y, a, _, groups = _test_like(**case)
    for g in (groups, None):
        want = reference_ci(y, a, g, 500, seed=7)
        got = bootstrap_auc_ci(y, a, g, n_boot=500, seed=7)
        assert got == pytest.approx(want, abs=0.002)
        assert got == pytest.approx(want, abs=1e-12)  # the same resamples: equal but for float rounding


@pytest.mark.parametrize("case", CASES)
def test_paired_bootstrap_matches_the_roc_auc_score_loop(case):
    y, a, b, groups = _test_like(**case)
    want = reference_paired(y, a, b, groups, 500, seed=3)
    got = paired_bootstrap_auc(y, a, b, groups, n_boot=500, seed=3)
    for k in ("diff", "ci_low", "ci_high"):
        assert got[k] == pytest.approx(want[k], abs=0.002), k
        assert got[k] == pytest.approx(want[k], abs=1e-12), k
    assert got["p_value"] == pytest.approx(want["p_value"], abs=1e-12)
    assert got["n_boot"] == want["n_boot"]
    assert got["auc_a"] == pytest.approx(roc_auc_score(y, a), abs=1e-12)


def test_one_class_resamples_are_left_out_as_before():
    # 6 groups, one of them holds the only positives: about a third of the resamples miss it
    y = np.array([0] * 10 + [1] * 3)
    s = np.linspace(0, 1, 13)[::-1]
    groups = np.array(["a", "a", "b", "b", "c", "c", "d", "d", "e", "e", "p", "p", "p"])
    want = _reference_boot(y, [s], groups, 300, 0)
    r = paired_bootstrap_auc(y, s, s[::-1], groups, n_boot=300, seed=0)
    assert 150 < r["n_boot"] == len(want) < 280
    assert bootstrap_auc_ci(y, s, groups, n_boot=300, seed=0) == pytest.approx(
        tuple(np.quantile(want[:, 0], [0.025, 0.975])), abs=1e-12)


def test_undefined_cases_give_nan_not_a_crash():
    y = np.zeros(20, int)
    s = np.linspace(0, 1, 20)
    assert np.isnan(binary_metrics(y, s)["auc"])
    assert all(np.isnan(bootstrap_auc_ci(y, s, n_boot=50)))
    r = paired_bootstrap_auc(y, s, s, n_boot=50)
    assert r["n_boot"] == 0 and np.isnan(r["p_value"]) and np.isnan(r["ci_low"])
    with pytest.raises(ValueError, match="NaN"):
        bootstrap_auc_ci(np.r_[y, 1], np.r_[s, np.nan])
    with pytest.raises(ValueError, match="differ in shape"):
        binary_metrics([0, 1], [0.5])


@pytest.mark.parametrize("seed", range(4))
def test_binary_metrics_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    n = [200, 37, 5, 12][seed]
    y = rng.integers(0, 2, n)
    s = np.round(np.clip(0.3 * y + 0.7 * rng.random(n), 0, 1), 1)  # ties, and scores exactly at 0.5
    thr = [0.5, 0.5, 0.99, 0.0][seed]  # the last two: nothing predicted positive / everything positive
    m = binary_metrics(y, s, threshold=thr, loss=0.25)
    pred = (s >= thr).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert m["confusion_matrix"] == confusion_matrix(y, pred, labels=[0, 1]).tolist()
    prec, rec, f1, sup = precision_recall_fscore_support(y, pred, labels=[0, 1], zero_division=0)
    for c in (0, 1):
        pc = m["per_class"][str(c)]
        assert (pc["precision"], pc["recall"], pc["f1"], pc["support"]) == pytest.approx(
            (prec[c], rec[c], f1[c], sup[c]), abs=1e-12)
    assert (m["precision"], m["f1"], m["sensitivity"]) == pytest.approx((prec[1], f1[1], rec[1]), abs=1e-12)
    assert m["specificity"] == pytest.approx(rec[0], abs=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y)) and m["loss"] == 0.25 and m["n"] == n


def test_roc_auc_is_the_area_from_scores():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.6, 0.4])  # a tie across the classes
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-15) == pytest.approx(5.5 / 9)
    assert roc_auc_score(y, s >= 0.5) == 0.5  # what hard labels would give


def test_importing_the_metrics_does_not_import_scikit_learn():
    code = ("import sys, microcal_hpc.metrics as m; m.bootstrap_auc_ci([0, 1, 1], [0.2, 0.9, 0.4], n_boot=20);"
            "m.binary_metrics([0, 1], [0.2, 0.9]); print(sorted(k for k in sys.modules if k.split('.')[0] "
            "in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
