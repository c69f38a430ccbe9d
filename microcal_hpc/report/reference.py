"""The reference study beside this run, and the study's settings in one table.

:data:`REFERENCE_FIGURES` is the one declaration of the reference study's figures (facts about the
reference code's behaviour on this data, measured outside this repository; :data:`REFERENCE_SOURCE`).
The "this run" column and the notes on method are generated from the run.
"""
from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from microcal_hpc import metrics as M
from microcal_hpc.config import Config
from microcal_hpc.report.tables import CLASSIFIER_NAMES, Column, ModelSummary, Summaries, Table, mean_std

REFERENCE_SOURCE = ("the reference study's README (CNN cross-validation) and its own code run on this data set on the "
                    "project's 2-core development machine, 4 runs of 25 epochs (measured outside this repository, "
                    "recorded in the project's NOTES.md)")
REFERENCE_PRESET = "reference"  # microcal_hpc.cnn.augment.PRESETS: the reference study's augmentation
CV_NAMES = {"loss": "validation loss", "accuracy": "accuracy", "auc": "AUC"}


@dataclass(frozen=True)
class ReferenceFigure:
    measure: str
    reference: str  # the reference study's figures, as found
    method: str  # how the reference computed them, against how this run does


REFERENCE_FIGURES = {
    "cnn_test": ReferenceFigure(
        "CNN, official Test set", "AUC 0.988-0.994, accuracy 0.94-0.98 (4 runs)",
        "reference: trained on Train minus a validation split taken from it"),
    "cnn_augment": ReferenceFigure(
        "CNN with the reference's augmentation, official Test set", "AUC 0.90-0.98 (unstable across runs)",
        "reference: Keras ImageDataGenerator, validation split taken from Train"),
    "cnn_cv": ReferenceFigure(
        "CNN, 5-fold cross-validation", "README: test loss 0.27 ± 0.15, accuracy 0.89 ± 0.07; its code here: mean "
        "AUC 0.95-0.98", "reference: folds of single patches (crops of one source image or case on both sides)"),
    "rf_coeffs": ReferenceFigure(
        "Random forest on the wavelet detail coefficients (db5, levels 2-4), cross-validation",
        "AUC 0.87 computed from hard 0/1 predictions (from probabilities: 0.94-0.96)",
        "reference: ROC of the hard labels (one operating point, i.e. the balanced accuracy), not of the scores"),
}


def _auc_text(s: Optional[ModelSummary]) -> Optional[str]:
    if s is None or s.test is None:
        return None
    ci = f" [{s.auc_ci[0]:.3f}, {s.auc_ci[1]:.3f}]" if s.auc_ci else ""
    return f"AUC {s.test['auc']:.3f}{ci}, accuracy {s.test['accuracy']:.3f} (1 run)"


def _hard_label_auc(labels: np.ndarray, prob: np.ndarray, threshold: float) -> float:
    return float(M.binary_metrics(labels, (prob >= threshold).astype(float))["auc"])


def _rf_text(S: Summaries, key: str) -> Optional[str]:
    w = S.wavelet.get(key)
    if w is None or not w.cv_per_fold:
        return None
    hard = [{"auc": _hard_label_auc(p.labels, p.prob, w.threshold)} for p in w.cv_preds.values()]
    soft, hard_ms = w.cv["auc"], mean_std(hard, ("auc",))["auc"]
    text = (f"CV AUC from probabilities {soft['mean']:.3f} ± {soft['std']:.3f}, from hard labels "
            f"{hard_ms['mean']:.3f} ± {hard_ms['std']:.3f} ({len(hard)} folds)")
    if w.test:
        t = w.run.test
        text += (f"; Test AUC {w.test['auc']:.3f} from probabilities, "
                 f"{_hard_label_auc(t.labels, t.prob, w.threshold):.3f} from hard labels")
    return text


def reference_table(S: Summaries, cfg: Config, presets: dict[str, Any]) -> Table:
    """The reference study's figures next to this run's, with a note on each difference in method."""
    off = S.official
    aug = next((s for s in S.cnn_single if s.run.name == f"augment-{REFERENCE_PRESET}"), None)
    folds = S.cnn_cv_per_fold()
    cv = mean_std(list(folds.values()), ("loss", "accuracy", "auc")) if folds else {}
    n_train = off.run.metrics.get("n_train") if off else None
    ours = {
        "cnn_test": (_auc_text(off), f"here: trained on {n_train} Train images" if n_train else ""),
        "cnn_augment": (_auc_text(aug), f"here: preset '{REFERENCE_PRESET}': {presets[REFERENCE_PRESET]}"
                        if REFERENCE_PRESET in presets else f"here: no preset named '{REFERENCE_PRESET}'"),
        "cnn_cv": (", ".join(f"{CV_NAMES[k]} {v['mean']:.3f} ± {v['std']:.3f}" for k, v in cv.items())
                   + f" ({len(folds)} folds)" if cv else None,
                   f"here: folds grouped by '{cfg.train.group_by}', pixel-identical images merged; validation fold "
                   "loss/accuracy/AUC"),
        "rf_coeffs": (_rf_text(S, "coeffs/rf"), "here: AUC from the forest's probabilities (the hard-label AUC "
                                                "beside it for comparison)"),
    }
    rows = []
    for key, fig in REFERENCE_FIGURES.items():
        value, here = ours[key]
        rows.append({"measure": fig.measure, "reference": fig.reference, "this_run": value or "not in this run",
                     "method": f"{fig.method}; {here}" if here else fig.method})
    return Table("reference_study", "The reference study beside this run", f"reference figures: {REFERENCE_SOURCE}",
                 [Column("measure", "Measure"), Column("reference", "Reference study"), Column("this_run", "This run"),
                  Column("method", "Difference in method")], rows,
                 "The CNN architecture is the reference study's (settings table); its Test set is the same 161 "
                 "images. Numbers of the reference are ranges over its runs, ours are one run with a 95% CI.")


# ----------------------------------------------------------------------------------------------
# Settings


def keras_architecture(model_file: Path) -> Optional[tuple[str, int]]:
    """(layer summary, number of parameters) of a saved ``.keras`` model, read without TensorFlow."""
    import h5py

    try:
        with zipfile.ZipFile(model_file) as z:
            layers = json.loads(z.read("config.json"))["config"]["layers"]
            weights = z.read("model.weights.h5")
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None
    sizes: list[int] = []
    with h5py.File(io.BytesIO(weights), "r") as f:
        f.visititems(lambda _, obj: sizes.append(int(obj.size)) if isinstance(obj, h5py.Dataset) else None)
    parts = []
    for layer in layers:
        c, name = layer["config"], layer["class_name"]
        if name == "Conv2D":
            parts.append(f"Conv {c['filters']} {c['kernel_size'][0]}×{c['kernel_size'][1]} {c['activation']}")
        elif name == "MaxPooling2D":
            parts.append(f"MaxPool {c['pool_size'][0]}×{c['pool_size'][1]}")
        elif name == "Dropout":
            parts.append(f"Dropout {c['rate']:g}")
        elif name == "Dense":
            parts.append(f"Dense {c['units']} {c['activation']}")
        elif name != "InputLayer":
            parts.append(name)
    return " → ".join(parts), sum(sizes)


def settings_table(S: Summaries, cfg: Config, presets: dict[str, Any], feature_sets: dict[str, str]) -> Table:
    """CNN architecture and training settings, augmentation presets, folds, wavelet features, classifiers."""
    rows: list[dict[str, Any]] = []

    def add(setting: str, value: Any, source: str) -> None:
        rows.append({"setting": setting, "value": value, "source": source})

    t = cfg.train
    off = S.official or next(iter(S.cnn_folds.values()), None)
    m = off.run.metrics if off else {}
    arch = keras_architecture(off.run.path / "model.keras") if off else None
    where = f"cnn/{off.run.name}" if off else "config"
    if arch:
        add("CNN architecture", arch[0], f"{where}/model.keras")
        add("CNN parameters", f"{arch[1]:,}", f"{where}/model.keras")
    add("Optimizer", m.get("optimizer") or "not recorded in metrics.json", f"{where}/metrics.json")
    add("Learning rate; batch size", f"{t.learning_rate:g}; {t.batch_size}", "config")
    add("Epochs (configured; run)", f"{t.epochs}; {m.get('epochs_run', '?')}", f"config; {where}/metrics.json")
    add("Schedule; early stopping", f"{t.lr_schedule}; " + (f"patience {t.early_stopping_patience}"
                                                           if t.early_stopping_patience else "off"), "config")
    add("Precision", m.get("mixed_precision", t.mixed_precision), f"{where}/metrics.json")
    add("Determinism", ("TensorFlow op determinism on" if t.deterministic else "off") + f", seed {t.seed}", "config")
    if S.official and S.official.run.metrics.get("n_train") is not None:
        add("Official run: training images", S.official.run.metrics["n_train"], "cnn/official/metrics.json")
    for name, what in presets.items():
        ran = any(s.run.name == f"augment-{name}" for s in S.cnn_single)
        add(f"Augmentation '{name}'", what + (" (run here)" if ran else ""), "microcal_hpc.cnn.augment.PRESETS")
    add("Cross-validation", f"{S.expected_folds} folds, grouping '{t.group_by}' (pixel-identical images merged), "
        f"seed {t.seed}; the same folds for every model", "config")
    w = cfg.wavelet
    add("Wavelet", f"{w.wavelet}, level {w.level}, detail levels kept {w.keep_levels}, mode {w.mode}, {w.dtype}", "config")
    for fs in cfg.classify.feature_sets:
        n = next((s.run.metrics.get("n_features") for s in S.wavelet.values() if s.run.feature_set == fs), None)
        add(f"Feature set '{fs}'", feature_sets.get(fs, "?") + (f" ({n} values)" if n else ""),
            "microcal_hpc.wavelet.transform.FEATURE_SETS")
    seen = set()
    for s in list(S.wavelet.values()) + list(S.baseline.values()):
        label = CLASSIFIER_NAMES.get(s.run.model) if s.run.arm == "wavelet" else s.run.model
        if label in seen or not s.run.metrics.get("estimator"):
            continue
        seen.add(label)
        add(f"Classifier: {label}", s.run.metrics["estimator"], f"{s.run.arm}/{s.run.name}/metrics.json")
    return Table("settings", "Settings of the study", "the run's config and the jobs' own records", [
        Column("setting", "Setting"), Column("value", "Value"), Column("source", "Recorded in")], rows)
