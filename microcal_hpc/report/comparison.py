"""CNN versus the wavelet arm, twice: against the reference study's own pipeline (a random forest on the
detail coefficients, :data:`~microcal_hpc.report.tables.REFERENCE_PIPELINE`) and against the best wavelet
model by cross-validation AUC (never by Test AUC). Each is paired twice: on the same official Test images
(the official CNN run) and on the same CV folds (the fold models' out-of-fold predictions, pooled), with a
paired group bootstrap of the AUC difference. The conclusion sentence is generated from the 95% CIs and
claims no difference only where every CI includes 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from microcal_hpc import metrics as M
from microcal_hpc.config import Config
from microcal_hpc.report.collect import Predictions
from microcal_hpc.report.tables import Column, Summaries, Table, group_by_of, mean_std, wavelet_label

EVALUATIONS = {"test": "on the official Test set", "cv": "in cross-validation"}


@dataclass
class PairedComparison:
    """CNN minus one wavelet model: per-fold AUCs and the paired bootstraps on Test and on the pooled CV folds."""

    role: str  # "reference pipeline" | "best wavelet model by CV AUC" | both
    key: str  # "<fs>/<clf>"
    label: str
    folds: list[dict[str, Any]] = field(default_factory=list)  # fold, cnn_auc, wavelet_auc, diff, n, same_images
    paired: dict[str, dict[str, Any]] = field(default_factory=dict)  # "test" | "cv" -> paired_bootstrap_auc + n


def aligned(a: Predictions, b: Predictions) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(labels, score_a, score_b, ids) of the images both hold, in a's order; None if none or labels differ."""
    pos = {i: k for k, i in enumerate(b.ids.tolist())}
    keep = np.array([i in pos for i in a.ids.tolist()])
    if not keep.any():
        return None
    idx_b = np.array([pos[i] for i in a.ids[keep].tolist()])
    if not np.array_equal(a.labels[keep], b.labels[idx_b]):
        return None
    return a.labels[keep], a.prob[keep], b.prob[idx_b], a.ids[keep]


def verdict(p: dict[str, Any]) -> str:
    """``higher`` / ``lower`` when the CI of CNN − wavelet excludes 0, else ``unclear``."""
    return "higher" if p["ci_low"] > 0 else "lower" if p["ci_high"] < 0 else "unclear"


# how the tables say a verdict: where the 95% CI of CNN − wavelet lies
CI_WORDS = {"higher": "above 0", "lower": "below 0", "unclear": "includes 0"}


def paired_difference(S: Summaries, cfg: Config, a: Predictions, b: Predictions, split: str,
                      group_run) -> Optional[dict[str, Any]]:
    """Paired group bootstrap of AUC(a) − AUC(b) on the images both scored (None if fewer than 2 classes)."""
    al = aligned(a, b)
    if al is None or len(np.unique(al[0])) < 2:
        return None
    y, sa, sb, ids = al
    groups = S.groups.of(Predictions(ids, y, sa, ids), group_by_of(group_run, cfg), split)
    out = M.paired_bootstrap_auc(y, sa, sb, groups=groups, n_boot=cfg.report.bootstrap, seed=cfg.report.seed)
    out["n"] = int(len(y))
    return out


def _folds(S: Summaries, w) -> list[dict[str, Any]]:
    rows = []
    for k, s in S.cnn_folds.items():
        if s.validation is None or k not in w.cv_per_fold:
            continue
        c, v = s.validation["auc"], w.cv_per_fold[k]["auc"]
        same = set(s.run.val.ids.tolist()) == set(w.cv_preds[k].ids.tolist())
        rows.append({"fold": k, "cnn_auc": c, "wavelet_auc": v, "diff": c - v, "n": s.validation["n"],
                     "same_images": "yes" if same else "NO"})
    return rows


def compare_all(S: Summaries, cfg: Config) -> list[PairedComparison]:
    """The CNN against the reference pipeline and against the best wavelet model by CV AUC (one entry if same)."""
    targets: dict[str, list[str]] = {}
    for key, role in ((S.reference_wavelet, "reference pipeline"), (S.best_wavelet, "best wavelet model by CV AUC")):
        if key:
            targets.setdefault(key, []).append(role)
    off, oof = S.official, S.cnn_oof()
    out = []
    for key, roles in targets.items():
        w = S.wavelet[key]
        c = PairedComparison(" = ".join(roles), key, wavelet_label(w.run), _folds(S, w))
        if off is not None and off.run.test is not None and w.run.test is not None:
            p = paired_difference(S, cfg, off.run.test, w.run.test, "test", off.run)
            if p:
                c.paired["test"] = p
        if oof is not None and w.run.val is not None:
            p = paired_difference(S, cfg, oof, w.run.val, "train", w.run)
            if p:
                c.paired["cv"] = p
        out.append(c)
    return out


def _fmt_p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def _describe(p: dict[str, Any]) -> str:
    return (f"{p['diff']:+.3f} (95% CI {p['ci_low']:+.3f} to {p['ci_high']:+.3f}, {_fmt_p(p['p_value'])}, "
            f"n = {p['n']})")


def conclusion(comps: list[PairedComparison]) -> str:
    """The CNN-versus-wavelet conclusion, generated from the CIs (see the module docstring)."""
    if not any(c.paired for c in comps):
        return ("No paired comparison is possible: it needs the official CNN run or the CNN fold models and the "
                "wavelet classifiers in the same run.")
    lines, verdicts = [], {}
    for c in comps:
        found = {ev: verdict(p) for ev, p in c.paired.items()}
        verdicts[c.key] = found
        parts = [f"{EVALUATIONS[ev]} {_describe(p)}" for ev, p in c.paired.items()]
        lines.append(f"CNN minus {c.label} ({c.role}): AUC difference " + "; ".join(parts) + ".")
    every = [v for found in verdicts.values() for v in found.values()]
    label = {c.key: c.label for c in comps}
    if all(v == "higher" for v in every):
        claim = ("Every 95% CI lies above 0: the CNN's AUC is higher than "
                 + " and ".join(label[k] for k in verdicts) + "'s, wherever it was measured.")
    elif all(v == "unclear" for v in every):
        claim = ("Every 95% CI includes 0: these data show no difference between the CNN and the wavelet models "
                 "(which is not evidence that they are equally good).")
    else:
        bits = []
        for k, found in verdicts.items():
            if not found:
                continue
            by = {v: [EVALUATIONS[ev] for ev, x in found.items() if x == v] for v in ("higher", "lower", "unclear")}
            said = []
            if by["higher"]:
                said.append(f"the CNN's AUC is higher {' and '.join(by['higher'])}")
            if by["lower"]:
                said.append(f"the CNN's AUC is lower {' and '.join(by['lower'])}")
            if by["unclear"]:
                said.append(f"no difference is shown {' and '.join(by['unclear'])} (CI includes 0)")
            bits.append(f"against {label[k]}, " + "; ".join(said))
        claim = ("The comparisons disagree, so neither 'better' nor 'no difference' holds overall: "
                 + "; ".join(bits) + ".")
    return " ".join(lines + [claim])


def comparison_tables(S: Summaries, comps: list[PairedComparison], cfg: Config) -> list[Table]:
    """The per-fold AUCs of both comparisons and the paired differences (Test and pooled CV)."""
    fcols = [Column("fold", "Fold"), Column("cnn_auc", "CNN AUC")]
    for i, c in enumerate(comps):
        fcols += [Column(f"w{i}_auc", "AUC", c.label), Column(f"diff{i}", "CNN − it", c.label),
                  Column(f"same{i}", "Same images", c.label)]
    fcols.append(Column("n", "n images"))
    folds = sorted({r["fold"] for c in comps for r in c.folds})
    rows = []
    for k in folds:
        row: dict[str, Any] = {"fold": k}
        for i, c in enumerate(comps):
            r = next((r for r in c.folds if r["fold"] == k), None)
            if r:
                row.update({"cnn_auc": r["cnn_auc"], f"w{i}_auc": r["wavelet_auc"], f"diff{i}": r["diff"],
                            f"same{i}": r["same_images"], "n": r["n"]})
        rows.append(row)
    if rows:
        summary: dict[str, Any] = {"fold": "mean ± std", "cnn_auc": mean_std(rows, ("cnn_auc",)).get("cnn_auc"),
                                   "n": int(sum(r.get("n", 0) for r in rows))}
        for i, c in enumerate(comps):
            summary[f"w{i}_auc"] = mean_std(rows, (f"w{i}_auc",)).get(f"w{i}_auc")
            summary[f"diff{i}"] = mean_std(rows, (f"diff{i}",)).get(f"diff{i}")
            wins = sum(1 for r in rows if r.get(f"diff{i}", 0) > 0)
            same = all(r.get(f"same{i}") == "yes" for r in rows)
            summary[f"same{i}"] = ("all" if same else "NOT all") + f"; CNN higher in {wins} of {len(rows)}"
        rows.append(summary)
    fold_table = Table("comparison_folds", "CNN versus wavelet models: AUC per cross-validation fold",
                       f"CNN: the fold-k model on its validation fold ({S.folds_label(len(folds))}); wavelet: fold k "
                       "of its out-of-fold predictions; 'Same images' checks the image ids", fcols, rows,
                       "Both arms build fold k with microcal_hpc.splits (same labels, grouping and seed).")
    pcols = [Column("comparison", "CNN versus"), Column("evaluation", "Evaluated"), Column("n", "n images"),
             Column("auc_a", "CNN AUC"), Column("auc_b", "Wavelet AUC"), Column("diff", "Difference (CNN − wavelet)"),
             Column("diff_ci", "95% CI of the difference"), Column("p_value", "p (two-sided)"),
             Column("verdict", "CI")]
    prow = []
    for c in comps:
        for ev, p in c.paired.items():
            prow.append({"comparison": f"{c.label} ({c.role})", "key": c.key, "evaluation": EVALUATIONS[ev],
                         "n": p["n"], "auc_a": p["auc_a"], "auc_b": p["auc_b"], "diff": p["diff"],
                         "diff_ci": [p["ci_low"], p["ci_high"]], "p_value": p["p_value"],
                         "verdict": CI_WORDS[verdict(p)]})
    paired = Table("comparison_paired", "CNN versus wavelet models: paired AUC differences",
                   "Test: the official CNN run and the wavelet model (fitted on all of Train) on the same Test images; "
                   "CV: the CNN fold models' and the wavelet model's out-of-fold predictions on the same Train images, "
                   "pooled over the folds", pcols, prow,
                   f"Paired group bootstrap of the AUC difference: {cfg.report.bootstrap} resamples of the "
                   f"'{cfg.train.group_by}' groups (pixel-identical images merged), both models scored on each "
                   "resample; percentile CI; p = twice the smaller share of resampled differences on either side of 0.")
    return [fold_table, paired]


def comparison_values(comps: list[PairedComparison]) -> list[dict[str, Any]]:
    """The comparisons for the report's metrics.json."""
    return [{"role": c.role, "wavelet": c.key, "label": c.label, "folds": c.folds,
             "paired": {ev: dict(p, verdict=verdict(p)) for ev, p in c.paired.items()}} for c in comps]
