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
from microcal_hpc.baseline import BASELINES
from microcal_hpc.config import Config
from microcal_hpc.launcher.jobkinds import official_seed_of
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
    validation: Optional[dict[str, Any]] = None  # a CNN fold job: metrics on its validation fold
    cv_per_fold: dict[int, dict[str, Any]] = field(default_factory=dict)  # wavelet/baseline out-of-fold
    cv_preds: dict[int, Predictions] = field(default_factory=dict)
    auc_ci: Optional[list[float]] = None

    @property
    def cv(self) -> dict[str, dict[str, float]]:
        return mean_std(list(self.cv_per_fold.values())) if self.cv_per_fold else {}


def summarise_model(run: ModelRun, label: str) -> ModelSummary:
    """Test metrics, validation-fold metrics (CNN) and per-fold CV metrics (wavelet, baseline) of one model job."""
    thr = run.threshold("test")
    is_cnn = run.arm == "cnn"
    s = ModelSummary(run=run, label=label, threshold=thr)
    if run.test is not None and len(run.test):
        s.test = evaluate(run.test, thr, with_loss=is_cnn)
    if run.val is not None and len(run.val):
        folds = run.val.fold if run.val.fold is not None else np.full(len(run.val), -1)
        if is_cnn:
            s.validation = evaluate(run.val, run.threshold("validation"), with_loss=True)
        else:
            for k in sorted(int(f) for f in np.unique(folds) if f >= 0):
                part = run.val.subset(folds == k)
                s.cv_preds[k] = part
                s.cv_per_fold[k] = evaluate(part, run.threshold("validation"))
    return s


class BootstrapGroups:
    """The groups a bootstrap resamples, as the jobs use them: ``splits.split_groups`` of the packed
    Test (or Train) split (the grouping merged with pixel-identical images); without the packed file,
    the groups stored in predictions.npz."""

    def __init__(self, packed: Optional[Any]):
        self.packed = packed
        self._maps: dict[tuple[str, str], dict[str, int]] = {}

    def _map(self, group_by: str, split: str) -> dict[str, int]:
        if (group_by, split) not in self._maps:
            from microcal_hpc.dataset import load_split
            from microcal_hpc.splits import split_groups

            s = load_split(self.packed, split, images=False)
            self._maps[group_by, split] = dict(zip(s.ids.tolist(), split_groups(s, group_by).tolist()))
        return self._maps[group_by, split]

    def of(self, pred: Predictions, group_by: str, split: str = "test") -> np.ndarray:
        if self.packed is not None and group_by in ("group", "case", "none"):
            m = self._map(group_by, split)
            if all(i in m for i in pred.ids.tolist()):
                return np.array([m[i] for i in pred.ids.tolist()])
        return pred.groups


def group_by_of(run: ModelRun, cfg: Config) -> str:
    """The grouping a job used for its folds and its Test bootstrap (its metrics.json, else the config's)."""
    return str(run.metrics.get("group_by") or cfg.train.group_by)


def add_test_ci(s: ModelSummary, cfg: Config, groups: BootstrapGroups) -> None:
    """Group-bootstrap 95% CI of the Test AUC (resampling the job's groups: cases by default)."""
    if s.test is None or s.auc_ci is not None or math.isnan(s.test["auc"]):
        return
    t = s.run.test
    g = groups.of(t, group_by_of(s.run, cfg))
    lo, hi = M.bootstrap_auc_ci(t.labels, t.prob, groups=g, n_boot=cfg.report.bootstrap, seed=cfg.report.seed)
    s.auc_ci = [lo, hi]


def ci_method(cfg: Config, images: str = "Test") -> str:
    """How the report's AUC CIs are computed (``images``: Test or Train)."""
    return (f"percentile 95% CI, group bootstrap of the {images} images ({cfg.report.bootstrap} resamples of the "
            f"'{cfg.train.group_by}' groups, pixel-identical images merged)")


# ----------------------------------------------------------------------------------------------
# The model summaries of a run


@dataclass
class Summaries:
    """All model summaries of a run and the choices the report makes from them."""

    cnn_single: list[ModelSummary]  # official then augment-<preset>
    cnn_folds: dict[int, ModelSummary]  # fold k -> summary (validation = that fold)
    wavelet: dict[str, ModelSummary]  # "<fs>/<clf>"
    baseline: dict[str, ModelSummary]
    expected_folds: int
    groups: BootstrapGroups
    best_wavelet: Optional[str] = None  # key of the wavelet classifier with the highest CV mean AUC
    reference_wavelet: Optional[str] = None  # REFERENCE_PIPELINE when the run has it
    ensemble: Optional[ModelSummary] = None  # mean P of the fold models on Test
    # training seed -> the official CNN run with that seed: cnn/official and its repeats cnn/official-seed-<S>
    cnn_seeds: dict[int, ModelSummary] = field(default_factory=dict)

    @property
    def official(self) -> Optional[ModelSummary]:
        return next((s for s in self.cnn_single if s.run.name == "official"), None)

    @property
    def seed_repeats(self) -> list[ModelSummary]:
        """The official run's repeats with other training seeds (cnn/official-seed-<S>), by seed."""
        return [m for m in self.cnn_seeds.values() if m is not self.official]

    def cnn_cv_per_fold(self) -> dict[int, dict[str, Any]]:
        return {k: s.validation for k, s in self.cnn_folds.items() if s.validation is not None}

    def cnn_cv_auc(self) -> Optional[dict[str, float]]:
        """Mean ± std of the CNN fold models' validation AUC (folds without an AUC left out)."""
        return mean_std(list(self.cnn_cv_per_fold().values()), ("auc",)).get("auc")

    def cnn_oof(self) -> Optional[Predictions]:
        """The CNN's out-of-fold predictions on Train: every fold model's validation fold, fold in ``fold``."""
        parts = {k: s.run.val for k, s in self.cnn_folds.items() if s.run.val is not None and len(s.run.val)}
        if not parts:
            return None
        cat = {f: np.concatenate([getattr(p, f) for p in parts.values()]) for f in ("ids", "labels", "prob", "groups")}
        return Predictions(**cat, fold=np.concatenate([np.full(len(p), k) for k, p in parts.items()]))

    def folds_label(self, n: int) -> str:
        k = self.expected_folds or n
        return f"{n} of {k} folds"


def augment_label(name: str) -> str:
    return f"CNN + augmentation ({name.split('-', 1)[1]})"


def fold_ensemble(folds: dict[int, ModelSummary], expected: int) -> Optional[ModelSummary]:
    """The fold models as one model on Test: the mean P(cluster) of the fold models for each Test image.

    None with fewer than two fold models or when they scored different Test images.
    """
    runs = [s.run for s in folds.values() if s.run.test is not None and len(s.run.test)]
    if len(runs) < 2:
        return None
    first = runs[0].test
    order = first.ids.tolist()
    probs = []
    for r in runs:
        pos = {i: k for k, i in enumerate(r.test.ids.tolist())}
        if set(pos) != set(order):
            return None
        probs.append(r.test.prob[[pos[i] for i in order]])
    test = Predictions(first.ids, first.labels, np.mean(probs, axis=0), first.groups)
    metrics = {"arm": "cnn", "model": "cnn", "run": "ensemble", "group_by": runs[0].metrics.get("group_by"),
               "folds_used": sorted(int(r.fold) for r in runs if r.fold is not None)}
    run = ModelRun(arm="cnn", name="ensemble", path=runs[0].path.parent, metrics=metrics, test=test)
    n = f"{len(runs)} fold models" if len(runs) == expected else f"{len(runs)} of {expected} fold models"
    return summarise_model(run, f"CNN ensemble (mean P of {n})")


# The reference study's own wavelet pipeline: a random forest on the detail coefficients.
REFERENCE_PIPELINE = "coeffs/rf"


def summarise_run(coll: RunCollection, cfg: Config) -> Summaries:
    """Recompute every model's metrics from its predictions; pick the best wavelet classifier by CV AUC."""
    single = []
    if "official" in coll.cnn:
        single.append(summarise_model(coll.cnn["official"], "CNN"))
    for name in sorted(n for n in coll.cnn if n.startswith("augment-")):
        single.append(summarise_model(coll.cnn[name], augment_label(name)))
    folds = {k: summarise_model(r, f"CNN fold {k}") for k, r in coll.cnn_folds().items()}
    wav = {k: summarise_model(r, wavelet_label(r)) for k, r in sorted(coll.wavelet.items())}
    base = {k: summarise_model(r, f"{BASELINES[k].label} ({k})" if k in BASELINES else k)
            for k, r in sorted(coll.baseline.items())}
    expected = coll.expected_folds() or int(cfg.campaign.cv_folds)
    s = Summaries(single, folds, wav, base, expected, BootstrapGroups(coll.packed))
    cv_auc = {k: w.cv["auc"]["mean"] for k, w in wav.items() if "auc" in w.cv}
    if cv_auc:
        s.best_wavelet = max(cv_auc, key=lambda k: (cv_auc[k], k))
    s.reference_wavelet = REFERENCE_PIPELINE if REFERENCE_PIPELINE in wav else None
    s.ensemble = fold_ensemble(folds, expected)
    s.cnn_seeds = official_seed_runs(coll, s.official, cfg)
    key_wavelets = [wav[k] for k in {s.best_wavelet, s.reference_wavelet} if k]
    for m in single + s.seed_repeats + [s.ensemble] + key_wavelets + list(base.values()):
        if m is not None:
            add_test_ci(m, cfg, s.groups)
    return s


def official_seed_runs(coll: RunCollection, official: Optional[ModelSummary], cfg: Config) -> dict[int, ModelSummary]:
    """{training seed: summary} of the official CNN run (its recorded seed) and its seed repeats, by seed."""
    out = {}
    if official is not None:
        out[int(official.run.metrics.get("seed", cfg.train.seed))] = official
    for name, run in coll.cnn.items():
        seed = official_seed_of(name)
        if seed is not None:
            out[seed] = summarise_model(run, f"CNN (training seed {seed})")
    return dict(sorted(out.items()))


@dataclass
class KeyModel:
    """A model the CNN-versus-wavelet and shortcut analyses compare: its Test summary and out-of-fold predictions."""

    key: str  # cnn | cnn-ensemble | wavelet:<fs>/<clf> | baseline:<name>
    label: str
    summary: Optional[ModelSummary]  # Test metrics and CI (None: not scored on Test)
    oof: Optional[Predictions]  # out-of-fold predictions on Train (None: no CV)
    cv_auc: Optional[dict[str, float]]  # mean ± std over folds


def wavelet_label(run: ModelRun) -> str:
    return f"{CLASSIFIER_NAMES.get(run.model, run.model)} on '{run.feature_set}'"


def key_models(S: Summaries) -> list[KeyModel]:
    """CNN, CNN ensemble, the reference pipeline, the best wavelet model by CV AUC, and every baseline."""
    out = [KeyModel("cnn", "CNN", S.official, S.cnn_oof(), S.cnn_cv_auc())]
    if S.ensemble is not None:
        out.append(KeyModel("cnn-ensemble", S.ensemble.label, S.ensemble, None, None))
    for key, role in ((S.reference_wavelet, "Reference pipeline"), (S.best_wavelet, "Best wavelet by CV AUC")):
        if key and not any(m.key == f"wavelet:{key}" for m in out):
            w = S.wavelet[key]
            same = key == S.reference_wavelet == S.best_wavelet
            label = f"{'Reference pipeline = best wavelet by CV AUC' if same else role}: {wavelet_label(w.run)}"
            out.append(KeyModel(f"wavelet:{key}", label, w, w.run.val, w.cv.get("auc")))
    for name, b in S.baseline.items():
        out.append(KeyModel(f"baseline:{name}", b.label, b, b.run.val, b.cv.get("auc")))
    return out


# ----------------------------------------------------------------------------------------------
# CNN tables (the study's format)


def cnn_study_table(S: Summaries, cfg: Config) -> Table:
    """Precision/recall/F1 per class, accuracy and AUC: CNN, CNN + augmentation, the fold models' ensemble
    on Test, CNN cross-validation."""
    cols = [Column("model", "Model"), Column("evaluated_on", "Evaluated on")]
    for c, name in (("0", "Class 0 (normal)"), ("1", "Class 1 (cluster)")):
        cols += [Column(f"precision_{c}", "Precision", name), Column(f"recall_{c}", "Recall", name),
                 Column(f"f1_{c}", "F1", name)]
    cols += [Column("accuracy", "Accuracy"), Column("auc", "AUC"), Column("auc_ci", "AUC 95% CI"),
             Column("n", "n images")]
    rows = []
    for s in S.cnn_single + ([S.ensemble] if S.ensemble else []):
        if s.test is None:
            continue
        ensemble = s is S.ensemble
        row = {"model": s.label, "evaluated_on": "official Test, mean P of the fold models" if ensemble
               else "official Test, 1 run"}
        row.update({k: s.test[k] for k in ("precision_0", "recall_0", "f1_0", "precision_1", "recall_1", "f1_1",
                                          "accuracy", "auc", "n")})
        row["auc_ci"] = s.auc_ci
        row["runs"] = f"{len(s.run.metrics['folds_used'])} fold models" if ensemble else "1 run"
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
    note = (f"AUC from predicted probabilities; 95% CI: {ci_method(cfg)}. Precision, recall and F1 per class at "
            "threshold 0.5. The ensemble averages the fold models' probabilities per Test image (no extra training).")
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
                     "val_loss": s.validation.get("loss") if s.validation else None,
                     "val_accuracy": s.validation["accuracy"] if s.validation else None,
                     "val_n": s.validation["n"] if s.validation else None,
                     "test_loss": s.test.get("loss") if s.test else None,
                     "test_accuracy": s.test["accuracy"] if s.test else None,
                     "test_n": s.test["n"] if s.test else None, "runs": "1 run"})
    if S.cnn_folds:
        per = []
        for k, s in S.cnn_folds.items():
            tl, ta = _train_values(s)
            per.append({"train_loss": tl, "train_accuracy": ta,
                        "val_loss": s.validation.get("loss") if s.validation else None,
                        "val_accuracy": s.validation["accuracy"] if s.validation else None,
                        "test_loss": s.test.get("loss") if s.test else None,
                        "test_accuracy": s.test["accuracy"] if s.test else None})
        ms = M.summarize(per, ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy"))
        row = {"model": "CNN cross-validation (fold models)", **{k: ms.get(k) for k in
               ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")}}
        row["val_n"] = int(sum(s.validation["n"] for s in S.cnn_folds.values() if s.validation))
        tests = [s.test["n"] for s in S.cnn_folds.values() if s.test]
        row["test_n"] = tests[0] if tests else None
        row["runs"] = S.folds_label(len(S.cnn_folds))
        rows.append(row)
    basis = ("train values: the last epoch's running mean reported by Keras (history.json); validation and Test: "
             "binary cross-entropy and accuracy recomputed from the stored probabilities (threshold 0.5)")
    note = ("Validation: the held-out fold for fold models; single runs train on all of Train and have none (—). "
            "CV row: mean ± std over the fold models (each fold model also scored on the official Test set).")
    return Table("cnn_loss", "CNN: loss and accuracy on train, validation and Test", basis, cols, rows, note)


# ----------------------------------------------------------------------------------------------
# Wavelet classifiers


CLASSIFIER_NAMES = {"rf": "Random forest", "svm": "SVM", "lr": "Logistic regression", "knn": "k-nearest neighbours",
                    "nb": "Naive Bayes", "dt": "Decision tree", "mlp": "MLP", "hgb": "Gradient boosting (HGB)"}


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


def table_values(tables: list[Table]) -> dict[str, Any]:
    """{table key: table as dict} for metrics.json."""
    return {t.key: t.to_dict() for t in tables}

