"""The shortcut analysis: could the answer come from something other than calcifications?

1. :func:`baselines_table`: the two baselines (brightness without extremes; grey-level statistics with
   extremes, which see specks) beside the models, Test and CV AUC, and the CNN's paired margin over the
   brightness baseline.
2. :func:`within_source`: CV AUC of each model from its out-of-fold predictions within each source
   letter that has both classes in Train, and pooled over the letters that do not identify the class on
   their own; the text explains the confound (on Test the letter separates the classes).
3. :func:`without_overlap`: every model's Test AUC again without the Test images that are
   pixel-identical to a Train image or share a source image (group) or case with Train.

Every sentence is generated from the numbers (thresholds on CIs), and says on which images it rests.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from microcal_hpc import metrics as M
from microcal_hpc.config import Config
from microcal_hpc.report.collect import Predictions
from microcal_hpc.report.comparison import aligned, verdict
from microcal_hpc.report.data import DataSummary
from microcal_hpc.report.sources import letter_of
from microcal_hpc.report.tables import Column, KeyModel, ModelSummary, Summaries, Table, ci_method, group_by_of


MIN_PER_CLASS = 5  # a source letter gets its own within-source AUC only with at least this many images of each class


def _auc(labels: np.ndarray, prob: np.ndarray) -> Optional[float]:
    return float(M.binary_metrics(labels, prob)["auc"]) if len(np.unique(labels)) == 2 else None


def _fmt(x: Optional[float]) -> str:
    return "—" if x is None else f"{x:.3f}"


def _ci(ci) -> str:
    return f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""


# ----------------------------------------------------------------------------------------------
# 1. The baselines beside the models


def _paired_margin(S: Summaries, cfg: Config, cnn: KeyModel, base: KeyModel) -> dict[str, dict[str, Any]]:
    """Paired bootstrap of CNN − baseline on Test and on the pooled out-of-fold predictions."""
    out = {}
    for ev, a, b, split, run in (("test", cnn.summary.run.test if cnn.summary else None,
                                  base.summary.run.test if base.summary else None, "test",
                                  cnn.summary.run if cnn.summary else None),
                                 ("cv", cnn.oof, base.oof, "train", base.summary.run if base.summary else None)):
        al = aligned(a, b) if a is not None and b is not None else None
        if al is None or len(np.unique(al[0])) < 2:
            continue
        y, sa, sb, ids = al
        groups = S.groups.of(Predictions(ids, y, sa, ids), group_by_of(run, cfg), split)
        out[ev] = M.paired_bootstrap_auc(y, sa, sb, groups=groups, n_boot=cfg.report.bootstrap, seed=cfg.report.seed)
    return out


def baselines_table(S: Summaries, models: list[KeyModel], cfg: Config) -> tuple[Table, str, dict]:
    """Test and CV AUC of the baselines beside the CNN and the wavelet models, and what they mean."""
    cols = [Column("model", "Model"), Column("cv_auc", "CV AUC (mean ± std)"), Column("folds", "Folds"),
            Column("test_auc", "Test AUC"), Column("test_auc_ci", "Test AUC 95% CI"),
            Column("test_accuracy", "Test accuracy"), Column("n", "n Test images")]
    rows = []
    for m in models:
        t = m.summary.test if m.summary else None
        rows.append({"model": m.label, "key": m.key, "cv_auc": m.cv_auc,
                     "folds": S.folds_label(m.cv_auc["n"]) if m.cv_auc else "none",
                     "test_auc": t["auc"] if t else None, "test_auc_ci": m.summary.auc_ci if m.summary else None,
                     "test_accuracy": t["accuracy"] if t else None, "n": t["n"] if t else None})
    table = Table("shortcut", "Baselines next to the models", "CV: out-of-fold predictions on Train with the same "
                  "folds as the models; Test: official Test set, 1 fitted model each (the ensemble: mean of the "
                  "fold models)", cols, rows, f"CIs: {ci_method(cfg)}.")
    by = {m.key: m for m in models}
    bright, grey, cnn = by.get("baseline:brightness-rf"), by.get("baseline:greylevel-rf"), by.get("cnn")
    margin = _paired_margin(S, cfg, cnn, bright) if cnn and bright else {}
    text = []
    if bright and bright.summary and bright.summary.test:
        text.append(f"Brightness alone (no extremes, blind to small specks) reaches a Test AUC of "
                    f"{bright.summary.test['auc']:.3f}{_ci(bright.summary.auc_ci)}"
                    + (f" and a CV AUC of {bright.cv_auc['mean']:.3f}" if bright.cv_auc else "")
                    + ": the classes differ in global brightness, so part of any model's AUC can come from "
                      "brightness (acquisition or tissue differences) rather than from calcifications.")
    if grey and grey.summary and grey.summary.test:
        text.append(f"The 12 grey-level statistics with extremes reach {grey.summary.test['auc']:.3f} on Test; "
                    "their max, 95th percentile and kurtosis respond to the bright specks that are "
                    "microcalcifications, so this is not a pure shortcut either.")
    for ev, where in (("test", "on Test"), ("cv", "in cross-validation")):
        p = margin.get(ev)
        if p:
            v = verdict(p)
            text.append(f"The CNN's AUC minus the brightness baseline's {where}: {p['diff']:+.3f} (95% CI "
                        f"{p['ci_low']:+.3f} to {p['ci_high']:+.3f}): "
                        + {"higher": "the CNN does better than brightness alone.",
                           "lower": "brightness alone does better than the CNN.",
                           "unclear": "not distinguishable from brightness alone."}[v])
    if not text:
        text.append("The baselines are missing from this run: how much a trivial cue explains is unknown.")
    return table, " ".join(text), {ev: dict(p, verdict=verdict(p)) for ev, p in margin.items()}


# ----------------------------------------------------------------------------------------------
# 2. Within-source performance


@dataclass
class WithinSource:
    table: Table
    text: str
    values: dict[str, Any]


def _source_only_auc(D: DataSummary) -> Optional[float]:
    """Test AUC of a 'classifier' that knows only the source letter: the share of clusters of that letter in Train."""
    tr_letters = letter_of(D.train.ids, D.letter_by_id)
    te_letters = letter_of(D.test.ids, D.letter_by_id)
    overall = float(D.train.labels.mean())
    rate = {L: float(D.train.labels[tr_letters == L].mean()) for L in np.unique(tr_letters)}
    return _auc(D.test.labels, np.array([rate.get(L, overall) for L in te_letters]))


def within_source(S: Summaries, models: list[KeyModel], D: DataSummary, cfg: Config) -> WithinSource:
    """Per-letter and pooled CV AUCs from the out-of-fold predictions, and the text explaining the confound."""
    cv_models = [m for m in models if m.oof is not None]
    tr_letters = letter_of(D.train.ids, D.letter_by_id)
    counts = {L: np.bincount(D.train.labels[tr_letters == L], minlength=2) for L in sorted(np.unique(tr_letters))}
    both = [L for L, n in counts.items() if n.min() >= MIN_PER_CLASS]
    dropped = {L: n for L, n in counts.items() if L not in both}
    excluded = sorted(D.single_class)
    cols = [Column("source", "Source letter"), Column("n0", "Label 0"), Column("n1", "Label 1")]
    cols += [Column(f"auc_{i}", m.label, "CV AUC (out-of-fold)") for i, m in enumerate(cv_models)]
    pooled_key = f"sources except {'/'.join(excluded)}" if excluded else "every source"
    subsets = [(f"source {L}", f"“{L}”", lambda lt, L=L: lt == L) for L in both]
    subsets.append((pooled_key, f"pooled, without {', '.join(excluded)}" if excluded else "pooled",
                    lambda lt: ~np.isin(lt, excluded)))
    subsets.append(("all Train", "pooled, all Train", lambda lt: np.ones(len(lt), bool)))
    rows, values = [], {"letters": both, "excluded": excluded, "pooled_key": pooled_key, "auc": {}, "n": {}}
    for name, shown, select in subsets:
        mask = select(tr_letters)
        if len(np.unique(D.train.labels[mask])) < 2:  # a pooled row without both classes has no AUC
            continue
        row: dict[str, Any] = {"source": shown, "subset": name, "n0": int((D.train.labels[mask] == 0).sum()),
                               "n1": int((D.train.labels[mask] == 1).sum())}
        for i, m in enumerate(cv_models):
            lt = letter_of(m.oof.ids, D.letter_by_id)
            keep = select(lt) if lt is not None else np.zeros(len(m.oof), bool)
            row[f"auc_{i}"] = _auc(m.oof.labels[keep], m.oof.prob[keep]) if keep.any() else None
            values["auc"].setdefault(m.key, {})[name] = row[f"auc_{i}"]
            values["n"].setdefault(m.key, {})[name] = int(keep.sum())
        rows.append(row)
    pooled_ci = {}
    for m in cv_models:
        lt = letter_of(m.oof.ids, D.letter_by_id)
        keep = ~np.isin(lt, excluded) if lt is not None else None
        if keep is not None and len(np.unique(m.oof.labels[keep])) == 2:
            sub = m.oof.subset(keep)
            g = S.groups.of(sub, group_by_of(m.summary.run, cfg) if m.summary else cfg.train.group_by, "train")
            pooled_ci[m.key] = list(M.bootstrap_auc_ci(sub.labels, sub.prob, groups=g, n_boot=cfg.report.bootstrap,
                                                       seed=cfg.report.seed))
    values["pooled_without_excluded_ci"] = pooled_ci
    values["dropped"] = {L: [int(n[0]), int(n[1])] for L, n in dropped.items()}
    note = ("Out-of-fold predictions of each model on Train (CNN: the fold models), split by source letter; a letter "
            f"gets its own row only with at least {MIN_PER_CLASS} Train images of each class"
            + (" (left out: " + ", ".join(f"“{L}”: {n[0]} normal, {n[1]} cluster" for L, n in dropped.items()) + ")"
               if dropped else "")
            + f". Pooled rows: all those images at once. CIs of the pooled rows in the text: {ci_method(cfg, 'Train')}.")
    table = Table("within_source", "Cross-validation AUC within each source letter",
                  f"{len(D.train)} Train patches, out-of-fold predictions", cols, rows, note)
    return WithinSource(table, _confound_text(D, cv_models, values, both), values)


def _confound_text(D: DataSummary, cv_models: list[KeyModel], values: dict, both: list[str]) -> str:
    te_letters = letter_of(D.test.ids, D.letter_by_id)
    pos = sorted(set(te_letters[D.test.labels == 1].tolist()))
    neg = sorted(set(te_letters[D.test.labels == 0].tolist()))
    excluded = values["excluded"]
    text = [f"On the official Test set the cluster patches have source letter(s) {', '.join(pos)} and the normal "
            f"patches {', '.join(neg)}"
            + (" — no letter is shared, so the letter alone separates the Test classes perfectly."
               if not set(pos) & set(neg) else ".")]
    only = _source_only_auc(D)
    if only is not None:
        text.append(f"A 'classifier' that knows only the letter (its share of clusters in Train) reaches a Test AUC "
                    f"of {only:.3f}.")
    on_test = int(np.isin(te_letters, excluded).sum())
    if excluded:
        text.append(f"Letter(s) {', '.join(excluded)} occur in one class only anywhere in the data; they tag {on_test} "
                    f"of the {len(te_letters)} Test patches, whose class a model could tell from the source (scanner, "
                    "digitisation, cropping) instead of from calcifications.")
    cnn = next((m for m in cv_models if m.key == "cnn"), None)
    per = [a for L, a in values["auc"].get("cnn", {}).items() if L.startswith("source ") and a is not None]
    pooled_name = values["pooled_key"]
    if cnn is None or not per or pooled_name not in values["auc"]["cnn"]:
        text.append("Within-source performance cannot be measured in this run (no CNN fold models, or no letter "
                    "with both classes in Train).")
        return " ".join(text)
    n_other = int(((~np.isin(letter_of(D.train.ids, D.letter_by_id), excluded)) & (D.train.labels == 1)).sum())
    pooled, ci = values["auc"]["cnn"][pooled_name], values["pooled_without_excluded_ci"].get("cnn")
    text.append(f"Train has {n_other} cluster patches from other letters, so performance within a source can be "
                f"measured from the out-of-fold predictions: within the {len(per)} letter(s) with at least "
                f"{MIN_PER_CLASS} Train images of each class the "
                f"CNN's CV AUC ranges from {min(per):.3f} to {max(per):.3f}; pooled over the letters other than "
                f"{', '.join(excluded) or '—'} it is {_fmt(pooled)}{_ci(ci)}.")
    bright = values["auc"].get("baseline:brightness-rf", {}).get(pooled_name)
    if ci and ci[0] > 0.5:
        better = bright is not None and ci[0] > bright
        text.append("So the CNN separates the classes among patches of one source, where the letter cannot tell them "
                    "apart, and among the sources whose letter does not identify the class"
                    + (f"; better than brightness alone does there ({bright:.3f}): " if better else
                       (f"; not clearly better than brightness alone does there ({bright:.3f}): "
                        if bright is not None else ": "))
                    + "its performance does not rest on the source cue alone. These are cross-validation numbers on "
                      "Train; the official Test set cannot show within-source performance, because there the letter "
                      "coincides with the class.")
    elif ci:
        text.append("Within sources the CNN's AUC is not shown to exceed chance (the CI reaches 0.5): its Test AUC may "
                    "rest on the source cue.")
    return " ".join(text)


# ----------------------------------------------------------------------------------------------
# 3. Test without the images that overlap Train


def without_overlap(summaries: list[tuple[str, ModelSummary]], D: DataSummary) -> tuple[Table, str, dict]:
    """Every model's Test AUC on all Test images and without those that overlap Train."""
    masks = D.test_overlap
    drop_ids = set(D.test.ids[masks["any"]].tolist())
    keep_labels = D.test.labels[~masks["any"]]
    n0, n1 = int((keep_labels == 0).sum()), int((keep_labels == 1).sum())
    cols = [Column("model", "Model"), Column("auc_all", "Test AUC, all"), Column("n_all", "n"),
            Column("auc_clean", "Test AUC without overlap"), Column("n_clean", "n"), Column("diff_auc", "Change")]
    rows, values = [], {}
    for key, s in summaries:
        if s is None or s.run.test is None or not len(s.run.test):
            continue
        t = s.run.test
        keep = np.array([i not in drop_ids for i in t.ids.tolist()])
        a_all, a_clean = _auc(t.labels, t.prob), _auc(t.labels[keep], t.prob[keep])
        rows.append({"model": s.label, "key": key, "auc_all": a_all, "n_all": len(t), "auc_clean": a_clean,
                     "n_clean": int(keep.sum()),
                     "diff_auc": None if a_all is None or a_clean is None else a_clean - a_all})
        values[key] = {"auc_all": a_all, "auc_without_overlap": a_clean, "n": int(keep.sum())}
    reasons = "; ".join(f"{k}: {int(v.sum())}" for k, v in masks.items() if k != "any")
    basis = (f"rule: drop every Test image that is pixel-identical to a Train image, or comes from a source image "
             f"(group) or a case that also has images in Train ({reasons}); {int(masks['any'].sum())} of "
             f"{len(D.test)} dropped, {len(keep_labels)} remain ({n0} normal, {n1} cluster)")
    table = Table("test_without_overlap", "Official Test AUC without the images that overlap Train", basis, cols, rows)
    diffs = [r for r in rows if r["diff_auc"] is not None]
    if not (n0 and n1):
        text = "Without the overlapping images Test holds one class only: no AUC can be computed."
    elif diffs:
        big = max(diffs, key=lambda r: abs(r["diff_auc"]))
        text = (f"Without the {int(masks['any'].sum())} Test images that overlap Train, {len(keep_labels)} remain; "
                f"the Test AUCs change by at most {abs(big['diff_auc']):.3f} ({big['model']}: "
                f"{big['auc_all']:.3f} -> {big['auc_clean']:.3f}).")
    else:
        text = "No model was scored on Test."
    return table, text, {"dropped": int(masks["any"].sum()), "remaining": len(keep_labels), "models": values}
