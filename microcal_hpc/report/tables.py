"""The report's tables as data. Every number is recomputed from the stored predictions with
:mod:`microcal_hpc.metrics` (never copied from a job's metrics.json), so the report's metrics.json
matches a direct scikit-learn computation on ``predictions.npz``.

A :class:`Table` is a title, the basis it rests on (images, runs, folds), columns and rows of plain
numbers; :mod:`microcal_hpc.report.render` formats the same rows as HTML, Markdown and JSON.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from microcal_hpc import metrics as M
from microcal_hpc.config import Config
from microcal_hpc.launcher.plan import STAGES
from microcal_hpc.report.collect import ACTIVE_STATES, ModelRun, Predictions, RunCollection

FLAT_KEYS = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1", "loss",
             "precision_0", "recall_0", "f1_0", "precision_1", "recall_1", "f1_1")
SIX = ("auc", "accuracy", "sensitivity", "specificity", "precision", "f1")
SIX_HEAD = {"auc": "AUC", "accuracy": "Accuracy", "sensitivity": "Sensitivity", "specificity": "Specificity",
            "precision": "Precision", "f1": "F1"}
KERAS_EPSILON = 1e-7  # tf.keras.backend.epsilon(): probabilities are clipped to [eps, 1 - eps] in the BCE loss


@dataclass
class Column:
    """One column: ``key`` into each row dict, its header, and an optional header group."""

    key: str
    header: str
    group: str = ""


@dataclass
class Table:
    """A table of the report. Row values: float, int, str, None, {"mean","std","n"} or [low, high]."""

    key: str
    title: str
    basis: str  # what the numbers rest on: images, runs, folds
    columns: list[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"title": self.title, "basis": self.basis, "note": self.note,
                "columns": [{"key": c.key, "header": c.header, "group": c.group} for c in self.columns],
                "rows": self.rows}


# ----------------------------------------------------------------------------------------------
# Metric helpers


def flat_metrics(m: dict[str, Any]) -> dict[str, Any]:
    """A binary_metrics() dict flattened: the six metrics, loss, per-class P/R/F1, n and the confusion matrix."""
    out = {k: m[k] for k in SIX if k in m}
    if "loss" in m:
        out["loss"] = m["loss"]
    for c in ("0", "1"):
        pc = m["per_class"][c]
        out[f"precision_{c}"], out[f"recall_{c}"], out[f"f1_{c}"] = pc["precision"], pc["recall"], pc["f1"]
    (tn, fp), (fn, tp) = m["confusion_matrix"]
    out.update(n=m["n"], tn=tn, fp=fp, fn=fn, tp=tp, threshold=m["threshold"])
    return out


def bce_loss(labels: np.ndarray, prob: np.ndarray) -> Optional[float]:
    """Binary cross-entropy as Keras computes it (clipped probabilities); None for non-probability scores."""
    p = np.asarray(prob, float)
    if len(p) == 0 or p.min() < 0 or p.max() > 1:
        return None
    p = np.clip(p, KERAS_EPSILON, 1 - KERAS_EPSILON)
    y = np.asarray(labels, float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def evaluate(pred: Predictions, threshold: float, with_loss: bool = False) -> dict[str, Any]:
    """Flat metrics of one set of predictions (loss: BCE recomputed from the probabilities)."""
    loss = bce_loss(pred.labels, pred.prob) if with_loss else None
    return flat_metrics(M.binary_metrics(pred.labels, pred.prob, threshold=threshold, loss=loss))


def mean_std(per_fold: list[dict[str, Any]], keys=FLAT_KEYS) -> dict[str, dict[str, float]]:
    """{key: {"mean", "std", "n"}} over folds (std with ddof=1), via microcal_hpc.metrics.summarize."""
    return M.summarize(per_fold, keys)


@dataclass
class ModelSummary:
    """Everything the tables need about one model, recomputed from its predictions."""

    run: ModelRun
    label: str
    threshold: float
    test: Optional[dict[str, Any]] = None  # flat metrics on the official Test set
    holdout: Optional[dict[str, Any]] = None  # CNN hold-out validation (val_fold == -1)
    cv_per_fold: dict[int, dict[str, Any]] = field(default_factory=dict)  # wavelet/baseline out-of-fold
    cv_preds: dict[int, Predictions] = field(default_factory=dict)
    auc_ci: Optional[list[float]] = None

    @property
    def cv(self) -> dict[str, dict[str, float]]:
        return mean_std(list(self.cv_per_fold.values())) if self.cv_per_fold else {}


def summarise_model(run: ModelRun, label: str) -> ModelSummary:
    """Test metrics, hold-out validation metrics and per-fold CV metrics of one model job."""
    thr = run.threshold("test")
    is_cnn = run.arm == "cnn"
    s = ModelSummary(run=run, label=label, threshold=thr)
    if run.test is not None and len(run.test):
        s.test = evaluate(run.test, thr, with_loss=is_cnn)
    if run.val is not None and len(run.val):
        folds = run.val.fold if run.val.fold is not None else np.full(len(run.val), -1)
        if is_cnn:
            s.holdout = evaluate(run.val, run.threshold("validation"), with_loss=True)
        else:
            for k in sorted(int(f) for f in np.unique(folds) if f >= 0):
                part = run.val.subset(folds == k)
                s.cv_preds[k] = part
                s.cv_per_fold[k] = evaluate(part, run.threshold("validation"))
    return s


class BootstrapGroups:
    """The groups the Test bootstrap resamples, as the jobs use them: ``splits.split_groups`` of the
    packed Test split (the grouping merged with pixel-identical images); without the packed file,
    the ``test_groups`` stored in predictions.npz."""

    def __init__(self, packed: Optional[Any]):
        self.packed = packed
        self._maps: dict[str, dict[str, int]] = {}

    def _map(self, group_by: str) -> dict[str, int]:
        if group_by not in self._maps:
            from microcal_hpc.dataset import load_split
            from microcal_hpc.splits import split_groups

            te = load_split(self.packed, "test", images=False)
            self._maps[group_by] = dict(zip(te.ids.tolist(), split_groups(te, group_by).tolist()))
        return self._maps[group_by]

    def of(self, pred: Predictions, group_by: str) -> np.ndarray:
        if self.packed is not None and group_by in ("group", "case", "none"):
            m = self._map(group_by)
            if all(i in m for i in pred.ids.tolist()):
                return np.array([m[i] for i in pred.ids.tolist()])
        return pred.groups


def add_test_ci(s: ModelSummary, cfg: Config, groups: BootstrapGroups) -> None:
    """Group-bootstrap 95% CI of the Test AUC (resampling source-image groups)."""
    if s.test is None or s.auc_ci is not None or math.isnan(s.test["auc"]):
        return
    t = s.run.test
    g = groups.of(t, str(s.run.metrics.get("group_by") or cfg.train.group_by))
    lo, hi = M.bootstrap_auc_ci(t.labels, t.prob, groups=g, n_boot=cfg.report.bootstrap, seed=cfg.report.seed)
    s.auc_ci = [lo, hi]


CI_METHOD = "percentile 95% CI, group bootstrap (source images, pixel-identical images merged)"


# ----------------------------------------------------------------------------------------------
# The model summaries of a run


@dataclass
class Summaries:
    """All model summaries of a run and the choices the report makes from them."""

    cnn_single: list[ModelSummary]  # official then augment-<preset>
    cnn_folds: dict[int, ModelSummary]  # fold k -> summary (holdout = that fold's validation)
    wavelet: dict[str, ModelSummary]  # "<fs>/<clf>"
    baseline: dict[str, ModelSummary]
    expected_folds: int
    groups: BootstrapGroups
    best_wavelet: Optional[str] = None  # key of the wavelet classifier with the highest CV mean AUC

    @property
    def official(self) -> Optional[ModelSummary]:
        return next((s for s in self.cnn_single if s.run.name == "official"), None)

    def cnn_cv_per_fold(self) -> dict[int, dict[str, Any]]:
        return {k: s.holdout for k, s in self.cnn_folds.items() if s.holdout is not None}

    def folds_label(self, n: int) -> str:
        k = self.expected_folds or n
        return f"{n} of {k} folds"


def augment_label(name: str) -> str:
    return f"CNN + augmentation ({name.split('-', 1)[1]})"


def summarise_run(coll: RunCollection, cfg: Config) -> Summaries:
    """Recompute every model's metrics from its predictions; pick the best wavelet classifier by CV AUC."""
    single = []
    if "official" in coll.cnn:
        single.append(summarise_model(coll.cnn["official"], "CNN"))
    for name in sorted(n for n in coll.cnn if n.startswith("augment-")):
        single.append(summarise_model(coll.cnn[name], augment_label(name)))
    folds = {k: summarise_model(r, f"CNN fold {k}") for k, r in coll.cnn_folds().items()}
    wav = {k: summarise_model(r, k) for k, r in sorted(coll.wavelet.items())}
    base = {k: summarise_model(r, k) for k, r in sorted(coll.baseline.items())}
    expected = coll.expected_folds() or int(cfg.campaign.cv_folds)
    s = Summaries(single, folds, wav, base, expected, BootstrapGroups(coll.packed))
    cv_auc = {k: w.cv["auc"]["mean"] for k, w in wav.items() if "auc" in w.cv}
    if cv_auc:
        s.best_wavelet = max(cv_auc, key=lambda k: (cv_auc[k], k))
    for m in single:
        add_test_ci(m, cfg, s.groups)
    if s.best_wavelet:
        add_test_ci(wav[s.best_wavelet], cfg, s.groups)
    for b in base.values():
        add_test_ci(b, cfg, s.groups)
    return s


# ----------------------------------------------------------------------------------------------
# CNN tables (the study's format)


def cnn_study_table(S: Summaries) -> Table:
    """Precision/recall/F1 per class, accuracy and AUC: CNN, CNN + augmentation, CNN cross-validation."""
    cols = [Column("model", "Model"), Column("evaluated_on", "Evaluated on")]
    for c, name in (("0", "Class 0 (normal)"), ("1", "Class 1 (cluster)")):
        cols += [Column(f"precision_{c}", "Precision", name), Column(f"recall_{c}", "Recall", name),
                 Column(f"f1_{c}", "F1", name)]
    cols += [Column("accuracy", "Accuracy"), Column("auc", "AUC"), Column("auc_ci", "AUC 95% CI"),
             Column("n", "n images")]
    rows = []
    for s in S.cnn_single:
        if s.test is None:
            continue
        row = {"model": s.label, "evaluated_on": "official Test, 1 run"}
        row.update({k: s.test[k] for k in ("precision_0", "recall_0", "f1_0", "precision_1", "recall_1", "f1_1",
                                          "accuracy", "auc", "n")})
        row["auc_ci"] = s.auc_ci
        row["runs"] = "1 run"
        rows.append(row)
    per_fold = S.cnn_cv_per_fold()
    if per_fold:
        ms = mean_std(list(per_fold.values()))
        row = {"model": "CNN cross-validation",
               "evaluated_on": f"validation folds, {S.folds_label(len(per_fold))} (mean ± std)"}
        row.update({k: ms.get(k) for k in ("precision_0", "recall_0", "f1_0", "precision_1", "recall_1", "f1_1",
                                          "accuracy", "auc")})
        row["auc_ci"] = None
        row["n"] = int(sum(m["n"] for m in per_fold.values()))
        row["runs"] = S.folds_label(len(per_fold))
        rows.append(row)
    test_n = next((r["n"] for r in rows if r["evaluated_on"].startswith("official Test")), None)
    basis = (f"single runs: official Test set (n = {test_n} images), threshold 0.5; "
             if test_n else "") + (f"cross-validation: {S.folds_label(len(per_fold))}, each fold's own validation images"
                                   if per_fold else "no cross-validation folds available")
    note = (f"AUC from predicted probabilities; 95% CI: {CI_METHOD} over the Test set's groups. "
            "Precision, recall and F1 per class at threshold 0.5.")
    return Table("cnn_study", "CNN: per-class precision, recall, F1, accuracy and AUC", basis, cols, rows, note)


def _last(hist: Optional[dict[str, list[float]]], key: str) -> Optional[float]:
    if not hist or key not in hist or not hist[key]:
        return None
    v = hist[key][-1]
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _train_values(s: ModelSummary) -> tuple[Optional[float], Optional[float]]:
    h = s.run.history
    loss, acc = _last(h, "loss"), _last(h, "accuracy")
    tr = s.run.metrics.get("train") or {}
    if loss is None and tr.get("loss") is not None:
        loss = float(tr["loss"])
    if acc is None and tr.get("accuracy") is not None:
        acc = float(tr["accuracy"])
    return loss, acc


def cnn_loss_table(S: Summaries) -> Table:
    """Train / validation / Test loss and accuracy of every CNN run (CV: mean ± std over folds)."""
    cols = [Column("model", "Model"),
            Column("train_loss", "Loss", "Train (last epoch)"), Column("train_accuracy", "Accuracy", "Train (last epoch)"),
            Column("val_loss", "Loss", "Validation"), Column("val_accuracy", "Accuracy", "Validation"),
            Column("val_n", "n", "Validation"),
            Column("test_loss", "Loss", "Official Test"), Column("test_accuracy", "Accuracy", "Official Test"),
            Column("test_n", "n", "Official Test"), Column("runs", "Runs / folds")]
    rows = []
    for s in S.cnn_single:
        tl, ta = _train_values(s)
        rows.append({"model": s.label, "train_loss": tl, "train_accuracy": ta,
                     "val_loss": s.holdout.get("loss") if s.holdout else None,
                     "val_accuracy": s.holdout["accuracy"] if s.holdout else None,
                     "val_n": s.holdout["n"] if s.holdout else None,
                     "test_loss": s.test.get("loss") if s.test else None,
                     "test_accuracy": s.test["accuracy"] if s.test else None,
                     "test_n": s.test["n"] if s.test else None, "runs": "1 run"})
    if S.cnn_folds:
        per = []
        for k, s in S.cnn_folds.items():
            tl, ta = _train_values(s)
            per.append({"train_loss": tl, "train_accuracy": ta,
                        "val_loss": s.holdout.get("loss") if s.holdout else None,
                        "val_accuracy": s.holdout["accuracy"] if s.holdout else None,
                        "test_loss": s.test.get("loss") if s.test else None,
                        "test_accuracy": s.test["accuracy"] if s.test else None})
        ms = M.summarize(per, ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"))
        row = {"model": "CNN cross-validation (fold models)", **{k: ms.get(k) for k in
               ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")}}
        row["val_n"] = int(sum(s.holdout["n"] for s in S.cnn_folds.values() if s.holdout))
        tests = [s.test["n"] for s in S.cnn_folds.values() if s.test]
        row["test_n"] = tests[0] if tests else None
        row["runs"] = S.folds_label(len(S.cnn_folds))
        rows.append(row)
    basis = ("train values: the last epoch's running mean reported by Keras (history.json); validation and Test: "
             "binary cross-entropy and accuracy recomputed from the stored probabilities (threshold 0.5)")
    note = ("Validation: the hold-out part of Train for single runs, the held-out fold for fold models; "
            "CV row: mean ± std over the fold models (each fold model also scored on the official Test set).")
    return Table("cnn_loss", "CNN: loss and accuracy on train, validation and Test", basis, cols, rows, note)


# ----------------------------------------------------------------------------------------------
# Wavelet classifiers


CLASSIFIER_NAMES = {"rf": "Random forest", "svm": "SVM", "lr": "Logistic regression", "knn": "k-nearest neighbours",
                    "nb": "Naive Bayes", "dt": "Decision tree", "mlp": "MLP", "hgb": "Gradient boosting (HGB)",
                    "greylevel-rf": "Random forest on 12 grey-level statistics"}


def wavelet_tables(S: Summaries) -> list[Table]:
    """One table per feature set: CV mean ± std and official Test of AUC, accuracy, sensitivity, ..."""
    by_fs: dict[str, list[ModelSummary]] = {}
    for key, s in S.wavelet.items():
        by_fs.setdefault(s.run.feature_set or key.split("/")[0], []).append(s)
    tables = []
    for fs, items in sorted(by_fs.items()):
        kfold = max((len(s.cv_per_fold) for s in items), default=0)
        test_n = next((s.test["n"] for s in items if s.test), None)
        cols = [Column("classifier", "Classifier")]
        cols += [Column(f"cv_{k}", SIX_HEAD[k], "Cross-validation, mean ± std") for k in SIX]
        cols += [Column("folds", "Folds", "Cross-validation, mean ± std")]
        cols += [Column(f"test_{k}", SIX_HEAD[k], "Official Test") for k in SIX]
        rows = []
        for s in sorted(items, key=lambda s: -(s.cv.get("auc", {}).get("mean", -1))):
            row: dict[str, Any] = {"classifier": CLASSIFIER_NAMES.get(s.run.model, s.run.model), "key": s.run.name,
                                   "best": s.run.name == S.best_wavelet}
            cv = s.cv
            row.update({f"cv_{k}": cv.get(k) for k in SIX})
            row["folds"] = S.folds_label(len(s.cv_per_fold)) if s.cv_per_fold else "none"
            row.update({f"test_{k}": (s.test[k] if s.test else None) for k in SIX})
            row["threshold"] = s.threshold
            rows.append(row)
        basis = (f"cross-validation: out-of-fold predictions on Train, {kfold} folds; "
                 f"official Test: n = {test_n} images; models sorted by CV AUC")
        kinds = sorted({f"{s.run.model}: {s.run.metrics['score']}" for s in items if s.run.metrics.get("score")})
        thresholds = ", ".join(f"{t:g}" for t in sorted({s.threshold for s in items}))
        note = ("AUC from the classifiers' scores (never hard labels); the other metrics at the threshold each job "
                f"used ({thresholds})." + (f" Scores: {'; '.join(kinds)}." if kinds else ""))
        tables.append(Table(f"wavelet_{fs}", f"Wavelet features '{fs}': scikit-learn classifiers", basis, cols, rows, note))
    return tables


# ----------------------------------------------------------------------------------------------
# CNN versus wavelet, and the shortcut baseline


@dataclass
class Comparison:
    """Best CNN versus best wavelet classifier: per-fold CV AUCs and the paired Test bootstrap."""

    folds: Table
    test: Table
    text: str
    paired: Optional[dict[str, Any]] = None


def _same_images(a: Predictions, b: Predictions) -> bool:
    return set(a.ids.tolist()) == set(b.ids.tolist())


def _aligned(a: Predictions, b: Predictions) -> Optional[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """(labels, score_a, score_b, groups) of the images both predictions hold, in a's order."""
    pos = {i: k for k, i in enumerate(b.ids.tolist())}
    keep = np.array([i in pos for i in a.ids.tolist()])
    if not keep.any():
        return None
    idx_b = np.array([pos[i] for i in a.ids[keep].tolist()])
    if not np.array_equal(a.labels[keep], b.labels[idx_b]):
        return None
    return a.labels[keep], a.prob[keep], b.prob[idx_b], a.groups[keep]


def comparison(S: Summaries, cfg: Config) -> Comparison:
    """CNN (cross-validated configuration, official run on Test) versus the best wavelet classifier by CV AUC."""
    wkey = S.best_wavelet
    w = S.wavelet.get(wkey) if wkey else None
    wname = f"{CLASSIFIER_NAMES.get(w.run.model, w.run.model)} on '{w.run.feature_set}'" if w else "n/a"
    fcols = [Column("fold", "Fold"), Column("cnn_auc", "CNN AUC"), Column("wavelet_auc", f"Wavelet AUC ({wname})"),
             Column("diff", "Difference (CNN − wavelet)"), Column("n", "n images"), Column("same_images", "Same images")]
    frows = []
    for k, s in S.cnn_folds.items():
        if s.holdout is None:
            continue
        row: dict[str, Any] = {"fold": k, "cnn_auc": s.holdout["auc"], "n": s.holdout["n"]}
        if w is not None and k in w.cv_per_fold:
            row["wavelet_auc"] = w.cv_per_fold[k]["auc"]
            row["diff"] = row["cnn_auc"] - row["wavelet_auc"]
            row["same_images"] = "yes" if _same_images(s.run.val, w.cv_preds[k]) else "NO"
        else:
            row.update(wavelet_auc=None, diff=None, same_images="n/a")
        frows.append(row)
    if frows:
        diffs = [r for r in frows if r["diff"] is not None]
        ms = M.summarize([{"cnn_auc": r["cnn_auc"]} for r in frows], ("cnn_auc",))
        msw = M.summarize([{"wavelet_auc": r["wavelet_auc"]} for r in diffs], ("wavelet_auc",))
        msd = M.summarize([{"diff": r["diff"]} for r in diffs], ("diff",))
        frows.append({"fold": "mean ± std", "cnn_auc": ms.get("cnn_auc"), "wavelet_auc": msw.get("wavelet_auc"),
                      "diff": msd.get("diff"), "n": int(sum(r["n"] for r in frows)),
                      "same_images": "all" if all(r["same_images"] == "yes" for r in frows) else "NOT all"})
    n_cnn = len([r for r in frows if isinstance(r["fold"], int)])
    fbasis = (f"CNN: {S.folds_label(n_cnn)} (fold-k job's validation images); wavelet: the same fold k of its "
              "out-of-fold predictions; 'Same images' checks the image ids of both")
    folds = Table("comparison_folds", "CNN versus best wavelet classifier: cross-validation AUC per fold", fbasis,
                  fcols, frows, "Both arms build folds with microcal_hpc.splits.cv_folds (same labels, grouping and seed).")

    tcols = [Column("model", "Model"), Column("auc", "Test AUC"), Column("auc_ci", "AUC 95% CI"),
             Column("cv_auc", "CV AUC (mean ± std)"), Column("n", "n images")]
    trows: list[dict[str, Any]] = []
    paired = None
    off = S.official
    if off and off.test:
        cv = mean_std(list(S.cnn_cv_per_fold().values()), ("auc",)).get("auc") if S.cnn_folds else None
        trows.append({"model": "CNN (official run)", "auc": off.test["auc"], "auc_ci": off.auc_ci, "cv_auc": cv,
                      "n": off.test["n"]})
    if w and w.test:
        trows.append({"model": f"Wavelet: {wname}", "auc": w.test["auc"], "auc_ci": w.auc_ci,
                      "cv_auc": w.cv.get("auc"), "n": w.test["n"]})
    if off and off.test and w and w.test:
        al = _aligned(off.run.test, w.run.test)
        if al is not None:
            y, a, b, g = al
            g = S.groups.of(off.run.test, str(off.run.metrics.get("group_by") or cfg.train.group_by)) \
                if len(y) == len(off.run.test) else g
            paired = M.paired_bootstrap_auc(y, a, b, groups=g, n_boot=cfg.report.bootstrap, seed=cfg.report.seed)
            paired["n"] = int(len(y))
            paired["method"] = ("paired group bootstrap of the AUC difference (source-image groups, pixel-identical "
                                "images merged, resampled; both models scored on the same resampled images); "
                                "two-sided bootstrap p-value")
            trows.append({"model": "Difference (CNN − wavelet)", "auc": paired["diff"],
                          "auc_ci": [paired["ci_low"], paired["ci_high"]], "cv_auc": None, "n": paired["n"],
                          "p_value": paired["p_value"], "n_boot": paired["n_boot"]})
            tcols.append(Column("p_value", "p (paired bootstrap)"))
    tbasis = "official Test set" + (f", n = {trows[0]['n']} images, 1 run per model" if trows else "")
    test = Table("comparison_test", "CNN versus best wavelet classifier on the official Test set", tbasis, tcols, trows,
                 f"CIs: {CI_METHOD}, {cfg.report.bootstrap} resamples.")
    text = ("“Best” is chosen by cross-validation AUC, never by Test AUC: the CNN side is the cross-validated "
            "configuration (no augmentation), represented on Test by its official run; the wavelet side is the "
            f"classifier/feature set with the highest mean CV AUC ({wname}). ")
    if paired:
        pv = "p < 0.001" if paired["p_value"] < 0.001 else f"p = {paired['p_value']:.3f}"
        text += (f"On the {paired['n']} Test images the CNN's AUC minus the wavelet classifier's is "
                 f"{paired['diff']:+.3f} (95% CI {paired['ci_low']:+.3f} to {paired['ci_high']:+.3f}, two-sided "
                 f"{pv}; test: paired group bootstrap of the AUC difference, "
                 f"{paired['n_boot']} resamples of source-image groups).")
    else:
        text += "The paired Test comparison needs both the official CNN run and a wavelet classifier; one is missing."
    return Comparison(folds, test, text, paired)


def shortcut_table(S: Summaries) -> tuple[Table, str]:
    """The grey-level baseline cross-validated like the real models, next to the best CNN and wavelet model."""
    cols = [Column("model", "Model"), Column("cv_auc", "CV AUC (mean ± std)"), Column("folds", "Folds"),
            Column("test_auc", "Test AUC"), Column("test_auc_ci", "Test AUC 95% CI"),
            Column("test_accuracy", "Test accuracy"), Column("n", "n Test images")]
    rows = []
    for key, b in S.baseline.items():
        rows.append({"model": f"Shortcut baseline: {CLASSIFIER_NAMES.get(b.run.model, key)}", "key": key,
                     "cv_auc": b.cv.get("auc"), "folds": S.folds_label(len(b.cv_per_fold)) if b.cv_per_fold else "none",
                     "test_auc": b.test["auc"] if b.test else None, "test_auc_ci": b.auc_ci,
                     "test_accuracy": b.test["accuracy"] if b.test else None, "n": b.test["n"] if b.test else None})
    off = S.official
    if off and off.test:
        cv = S.cnn_cv_per_fold()
        rows.append({"model": "CNN", "key": "cnn", "cv_auc": mean_std(list(cv.values()), ("auc",)).get("auc") if cv else None,
                     "folds": S.folds_label(len(cv)) if cv else "none", "test_auc": off.test["auc"],
                     "test_auc_ci": off.auc_ci, "test_accuracy": off.test["accuracy"], "n": off.test["n"]})
    if S.best_wavelet:
        w = S.wavelet[S.best_wavelet]
        rows.append({"model": f"Best wavelet: {CLASSIFIER_NAMES.get(w.run.model, w.run.model)} on '{w.run.feature_set}'",
                     "key": S.best_wavelet, "cv_auc": w.cv.get("auc"), "folds": S.folds_label(len(w.cv_per_fold)),
                     "test_auc": w.test["auc"] if w.test else None, "test_auc_ci": w.auc_ci,
                     "test_accuracy": w.test["accuracy"] if w.test else None, "n": w.test["n"] if w.test else None})
    table = Table("shortcut", "Shortcut baseline next to the real models", "CV: out-of-fold predictions on Train with "
                  "the same folds as the models; Test: official Test set, 1 run per model", cols, rows,
                  f"CIs: {CI_METHOD}.")
    base = rows[0] if rows and rows[0]["key"] in S.baseline else None
    real = [r for r in rows if r["key"] not in S.baseline and r["test_auc"] is not None]
    if base and base["test_auc"] is not None:
        text = (f"A random forest that sees only 12 global grey-level statistics of each patch (no spatial detail, so it "
                f"cannot locate microcalcifications) reaches an official-Test AUC of {base['test_auc']:.3f}"
                + (f" and a CV AUC of {base['cv_auc']['mean']:.3f}" if base.get("cv_auc") else "") + ". ")
        best = max(real, key=lambda r: r["test_auc"]) if real else None
        if best and best["test_auc"] > 0.5:
            share = max(0.0, (base["test_auc"] - 0.5) / (best["test_auc"] - 0.5))
            text += (f"That is {100 * share:.0f}% of the above-chance Test AUC of the best real model "
                     f"({best['model']}, {best['test_auc']:.3f}; share = (AUC_baseline − 0.5) / (AUC_model − 0.5)). ")
            if share >= 0.5:
                text += ("A trivial intensity cue (for example acquisition differences between the sources of normal "
                         "and cluster patches) therefore explains much of the AUC on this data: the models' margin over "
                         "this baseline, not their absolute AUC, is what can be credited to microcalcification detection.")
            else:
                text += ("Here such a trivial cue explains only a small part of the models' AUC.")
    else:
        text = ("The grey-level shortcut baseline is missing from this run, so the share of the AUC a trivial cue "
                "explains is unknown.")
    return table, text


# ----------------------------------------------------------------------------------------------
# Run summary tables


def _fmt_elapsed(s: Optional[float]) -> Optional[str]:
    if s is None:
        return None
    s = float(s)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def job_table(coll: RunCollection) -> Table:
    """Every launcher record: name, stage, state, elapsed, node, log path."""
    cols = [Column("name", "Job"), Column("stage", "Stage"), Column("state", "State"), Column("job_id", "Job id"),
            Column("elapsed", "Elapsed"), Column("node", "Node"), Column("log", "Log"), Column("error", "Error")]
    order = {s: i for i, s in enumerate(STAGES)}
    jobs = sorted(coll.jobs, key=lambda j: (order.get(j.stage, len(order)), str(j.raw.get("submitted") or ""),
                                            j.stage, j.name))
    rows = [{"name": j.name, "stage": j.stage,
             "state": f"{j.state} (this report)" if j.is_report and j.state in ACTIVE_STATES else j.state,
             "job_id": j.job_id, "elapsed": _fmt_elapsed(j.elapsed_s), "elapsed_s": j.elapsed_s, "node": j.node,
             "log": j.log, "error": j.error, "failed": j.failed} for j in jobs]
    if not any(r["error"] for r in rows):
        cols = [c for c in cols if c.key != "error"]
    return Table("jobs", "Jobs of the campaign", f"{len(rows)} launcher records in jobs/", cols, rows)


def model_output_table(coll: RunCollection) -> Table:
    """Which expected model outputs exist: per arm, found / expected."""
    cols = [Column("arm", "Arm"), Column("found", "Complete"), Column("expected", "Expected"), Column("missing", "Missing or incomplete")]
    rows = []
    for arm, found in (("cnn", coll.cnn), ("wavelet", coll.wavelet), ("baseline", coll.baseline)):
        exp = coll.expected.get(arm, [])
        bad = [m.split("/", 1)[1] for m in coll.missing if m.startswith(arm + "/")]
        bad += [m.split("/", 1)[1].split(":")[0] for m in coll.incomplete if m.startswith(arm + "/")]
        rows.append({"arm": arm, "found": len(found), "expected": len(exp), "missing": ", ".join(bad) or "none"})
    return Table("outputs", "Model outputs", "expected: from the run's config", cols, rows)


# ----------------------------------------------------------------------------------------------
# Data tables


@dataclass
class DataSummary:
    """What the data section shows: tables plus what the figures need."""

    tables: list[Table]
    counts: dict[str, dict[str, int]]  # split -> label -> n
    integrity: dict[str, Any]
    train_images: Optional[np.ndarray] = None
    train_labels: Optional[np.ndarray] = None
    test_images: Optional[np.ndarray] = None
    test_ids: Optional[np.ndarray] = None
    mean_grey: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # split -> label -> mean grey per image


def _code_after_case(groups: np.ndarray, cases: np.ndarray) -> list[str]:
    out = []
    for g, c in zip(groups, cases):
        rest = g[len(c):] if g.startswith(c) and g != c else ""
        out.append(rest[0] if rest else "—")
    return out


def data_summary(packed_path, cfg: Config) -> DataSummary:
    """Partition, fold grouping and integrity tables of the packed data."""
    from microcal_hpc.dataset import load_split
    from microcal_hpc.splits import fold_of_each, split_groups

    tr, te = load_split(packed_path, "train"), load_split(packed_path, "test")
    counts = {s.name: {"0": int((s.labels == 0).sum()), "1": int((s.labels == 1).sum())} for s in (tr, te)}
    prow = []
    for s, name in ((tr, "Train"), (te, "Test")):
        prow.append({"split": name, "n0": counts[s.name]["0"], "n1": counts[s.name]["1"], "total": len(s),
                     "groups": int(len(np.unique(s.groups))), "cases": int(len(np.unique(s.cases)))})
    prow.append({"split": "Total", "n0": sum(r["n0"] for r in prow), "n1": sum(r["n1"] for r in prow),
                 "total": sum(r["total"] for r in prow), "groups": int(len(np.unique(np.r_[tr.groups, te.groups]))),
                 "cases": int(len(np.unique(np.r_[tr.cases, te.cases])))})
    partition = Table("partition", "Data partition", f"{len(tr) + len(te)} patches of {tr.images.shape[1]}×"
                      f"{tr.images.shape[2]} pixels in {packed_path}",
                      [Column("split", "Split"), Column("n0", "Label 0 (normal)"), Column("n1", "Label 1 (cluster)"),
                       Column("total", "Total"), Column("groups", "Source images (groups)"), Column("cases", "Cases")],
                      prow)

    t = cfg.train
    n_folds = cfg.campaign.cv_folds or t.folds  # the launcher gives CNN fold jobs train.folds = campaign.cv_folds
    gid = split_groups(tr, t.group_by)
    fold = fold_of_each(tr.labels, gid, n_folds, t.seed)
    frows = []
    for k in range(n_folds):
        m = fold == k
        frows.append({"fold": k, "n0": int((tr.labels[m] == 0).sum()), "n1": int((tr.labels[m] == 1).sum()),
                      "total": int(m.sum()), "groups": int(len(np.unique(gid[m])))})
    c = cfg.classify
    same = (c.folds, c.group_by, c.seed) == (n_folds, t.group_by, t.seed)
    fnote = (f"microcal_hpc.splits.cv_folds (stratified, group-aware) on Train. CNN: {n_folds} folds, grouping "
             f"'{t.group_by}' merged with pixel-identical images, seed {t.seed}. Wavelet classifiers and baseline: "
             f"{c.folds} folds, grouping '{c.group_by}', seed {c.seed} — "
             + ("the same folds." if same else "DIFFERENT settings: fold k is not the same images in both arms."))
    folds = Table("folds", "Cross-validation folds (fold grouping used)", f"{len(tr)} Train patches",
                  [Column("fold", "Fold"), Column("n0", "Label 0"), Column("n1", "Label 1"), Column("total", "Total"),
                   Column("groups", "Groups (after merging duplicates)")], frows, fnote)

    shared_groups = sorted(set(tr.groups.tolist()) & set(te.groups.tolist()))
    shared_cases = sorted(set(tr.cases.tolist()) & set(te.cases.tolist()))
    tr_hash = {}
    for i, h in enumerate(tr.pixel_hash.tolist()):
        tr_hash.setdefault(h, []).append(i)
    cross = [(tr.ids[j], te.ids[i], int(tr.labels[j]), int(te.labels[i]))
             for i, h in enumerate(te.pixel_hash.tolist()) for j in tr_hash.get(h, [])]
    within = {}
    for s in (tr, te):
        _, inv, cnt = np.unique(s.pixel_hash, return_inverse=True, return_counts=True)
        within[s.name] = int(sum(c * (c - 1) // 2 for c in cnt if c > 1))
    conflicts = sum(1 for a in cross if a[2] != a[3])
    test_dup = len({b for _, b, _, _ in cross})
    integrity = {"shared_groups": shared_groups, "shared_cases": shared_cases,
                 "cross_split_identical_pairs": [[a, b] for a, b, _, _ in cross],
                 "test_images_identical_to_train": test_dup, "identical_pairs_within": within,
                 "label_conflicts": conflicts, "fold_settings_equal": same}
    irows = [
        {"check": "Source images (groups) in both Train and Test", "count": len(shared_groups),
         "examples": ", ".join(shared_groups[:5])},
        {"check": "Cases in both Train and Test", "count": len(shared_cases), "examples": ", ".join(shared_cases[:8])},
        {"check": "Pixel-identical pairs across Train and Test", "count": len(cross),
         "examples": "; ".join(f"{b} = {a}" for a, b, _, _ in cross[:3])},
        {"check": "Test patches with a pixel-identical Train patch", "count": test_dup,
         "examples": f"{100 * test_dup / max(len(te), 1):.1f}% of Test"},
        {"check": "Pixel-identical pairs within Train", "count": within["train"], "examples": "merged into one CV group"},
        {"check": "Pixel-identical pairs within Test", "count": within["test"], "examples": ""},
        {"check": "Identical pixels with conflicting labels (across splits)", "count": conflicts, "examples": ""},
    ]
    integ = Table("integrity", "Data integrity", "pixel identity from the sha256 of the decoded pixels (pixel_hash)",
                  [Column("check", "Check"), Column("count", "Count"), Column("examples", "Examples")], irows,
                  "Test patches identical to Train patches, or from the same source image or case, make the official "
                  "Test AUC optimistic; cross-validation folds never split such images.")

    codes_tr, codes_te = _code_after_case(tr.groups, tr.cases), _code_after_case(te.groups, te.cases)
    letters = sorted(set(codes_tr) | set(codes_te))
    crows = []
    for s, codes, name in ((tr, codes_tr, "Train"), (te, codes_te, "Test")):
        for lab in (0, 1):
            sel = [c for c, l in zip(codes, s.labels) if l == lab]
            row = {"part": f"{name}, label {lab}", "patches": len(sel)}
            row.update({f"code_{L}": sel.count(L) for L in letters})
            crows.append(row)
    code_table = Table("acquisition_codes", "Character after the case id in the file name, by split and label",
                       "every patch; a code that separates the labels is a potential shortcut",
                       [Column("part", "Split, label"), Column("patches", "Patches")]
                       + [Column(f"code_{L}", f"“{L}”", "Patches with this character after the case id")
                          for L in letters],
                       crows)
    mean_grey = {s.name: {str(l): s.images[s.labels == l].reshape((s.labels == l).sum(), -1).mean(axis=1)
                          for l in (0, 1)} for s in (tr, te)}
    return DataSummary([partition, folds, integ, code_table], counts, integrity, tr.images, tr.labels, te.images,
                       te.ids, mean_grey)


def table_values(tables: list[Table]) -> dict[str, Any]:
    """{table key: table as dict} for metrics.json."""
    return {t.key: t.to_dict() for t in tables}

