"""The report's figures (matplotlib, Agg backend): one function per figure, each writing a PNG
atomically and returning its path, or returning None when the run lacks what the figure needs.

Colours are fixed across figures: the CNN is blue, wavelet classifiers orange (feature set 'coeffs'),
purple ('stats') or brown/pink (the other sets), the baselines grey (brightness) and dark grey (grey-level
statistics with extremes); class 0 (normal) green, class 1 (cluster) red; training curves solid, validation
curves dashed. ROC figures carry a zoomed inset of their top-left corner.
"""
from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from microcal_hpc.atomic import atomic_path  # noqa: E402
from microcal_hpc.report.collect import Predictions  # noqa: E402
from microcal_hpc.report.data import DataSummary  # noqa: E402
from microcal_hpc.report.tables import CLASSIFIER_NAMES, ModelSummary, Summaries  # noqa: E402

ARM_COLOURS = {"cnn": "#1f77b4", "wavelet": "#ff7f0e", "baseline": "#7f7f7f"}
FEATURE_COLOURS = {"coeffs": "#ff7f0e", "stats": "#9467bd", "approx_stats": "#8c564b", "other_levels_stats": "#e377c2"}
BASELINE_STYLE = {"brightness-rf": ("#7f7f7f", ":"), "greylevel-rf": ("#3f3f3f", "-.")}  # colour, line style
CLASS_COLOURS = {0: "#2ca02c", 1: "#d62728"}
CLASS_NAMES = {0: "normal (0)", 1: "cluster (1)"}
PART_STYLE = {"train": "-", "validation": "--"}
CNN_SHADES = ["#1f77b4", "#17becf", "#0b3d91", "#6baed6", "#08519c"]
DPI = 110

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
                     "figure.constrained_layout.use": True})


def _save(fig, path: str | os.PathLike) -> str:
    with atomic_path(path, suffix=".png") as tmp:
        # "tight" grows the canvas to every artist, so rotated tick labels and long titles are never clipped
        fig.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return str(path)


def wavelet_colour(s: ModelSummary) -> str:
    return FEATURE_COLOURS.get(s.run.feature_set or "", ARM_COLOURS["wavelet"])


def baseline_style(name: str) -> tuple[str, str]:
    return BASELINE_STYLE.get(name, (ARM_COLOURS["baseline"], ":"))


# ----------------------------------------------------------------------------------------------
# CNN training


def learning_curves(S: Summaries, path: str | os.PathLike) -> Optional[str]:
    """Loss and accuracy per epoch, train (solid) and validation (dashed): one row per single run, one for all folds."""
    rows: list[tuple[str, list[ModelSummary]]] = [(s.label, [s]) for s in S.cnn_single if s.run.history]
    folds = [s for s in S.cnn_folds.values() if s.run.history]
    if folds:
        rows.append((f"CNN cross-validation ({S.folds_label(len(folds))})", folds))
    if not rows:
        return None
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(len(rows), 2, figsize=(11, 2.7 * len(rows) + 0.4), squeeze=False)
    for r, (title, runs) in enumerate(rows):
        many = len(runs) > 1
        shades = plt.cm.viridis(np.linspace(0.0, 0.85, len(runs))) if many else None
        for c, (metric, ylabel) in enumerate((("loss", "Binary cross-entropy"), ("accuracy", "Accuracy"))):
            ax = axes[r, c]
            for i, s in enumerate(runs):
                h = s.run.history
                for part, key in (("train", metric), ("validation", f"val_{metric}")):
                    if key not in h:
                        continue
                    colour = shades[i] if many else (ARM_COLOURS["cnn"] if part == "train" else "#d62728")
                    ax.plot(h["epoch"], h[key], PART_STYLE[part], color=colour, lw=1.2 if many else 1.8,
                            marker="o" if len(h["epoch"]) < 3 else None, ms=4,
                            label=None if many else part)
            ax.set_title(f"{title}: {metric}")
            ax.set_xlabel("Epoch")
            ax.set_ylabel(ylabel)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            last = max(max(s.run.history["epoch"]) for s in runs)
            if last < 4:  # a few epochs: whole-number axis around the points
                ax.set_xlim(0.5, last + 0.5)
            ax.grid(alpha=0.3)
            if many:
                if c == 1:
                    handles = [Line2D([], [], color=shades[i], lw=2, label=f"fold {s.run.fold}") for i, s in enumerate(runs)]
                    handles += [Line2D([], [], color="black", ls=PART_STYLE[p], label=p) for p in ("train", "validation")]
                    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8)
            else:
                ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Confusion matrices and ROC curves


def confusion_matrices(models: Sequence[ModelSummary], path: str | os.PathLike) -> Optional[str]:
    """Official-Test confusion matrix of each model (counts and row percentages)."""
    from sklearn.metrics import ConfusionMatrixDisplay

    models = [m for m in models if m.test]
    if not models:
        return None
    ncol = min(4, len(models))
    nrow = (len(models) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 3.3 * nrow), squeeze=False)
    for ax in axes.ravel()[len(models):]:
        ax.axis("off")
    for ax, m in zip(axes.ravel(), models):
        t = m.test
        cm = np.array([[t["tn"], t["fp"]], [t["fn"], t["tp"]]])
        ConfusionMatrixDisplay(cm, display_labels=["normal", "cluster"]).plot(ax=ax, cmap="Blues", colorbar=False,
                                                                               values_format="d")
        for (i, j), txt in zip(np.ndindex(2, 2), ax.texts):
            pct = 100 * cm[i, j] / max(cm[i].sum(), 1)
            txt.set_text(f"{cm[i, j]}\n({pct:.0f}%)")
        title = textwrap.fill(m.label, 34)
        ax.set_title(f"{title}\nTest n={t['n']}, threshold {m.threshold:g}", fontsize=9)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("True")
    return _save(fig, path)


def roc_single(curves: Sequence[tuple[str, Predictions, str, str]], path: str | os.PathLike) -> Optional[str]:
    """ROC curves on the official Test set; ``curves``: (label, predictions, colour, line style)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    curves = [c for c in curves if c[1] is not None and len(np.unique(c[1].labels)) == 2]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.2, 7.4))
    zoom = _zoom_axes(ax)
    for label, p, colour, style in curves:
        fpr, tpr, _ = roc_curve(p.labels, p.prob)
        for a in (ax, zoom):
            a.plot(fpr, tpr, style, color=colour, lw=1.8 if a is ax else 1.4,
                   label=f"{label} (AUC {roc_auc_score(p.labels, p.prob):.3f})" if a is ax else None)
    _finish_roc_axes(ax, f"ROC on the official Test set (n = {len(curves[0][1])})")
    return _save(fig, path)


ZOOM = (0.0, 0.25, 0.75, 1.0)  # false positive rate 0-0.25, true positive rate 0.75-1: the top-left corner


def _zoom_axes(ax):
    """An inset in the lower right showing the top-left corner of the ROC, where good models differ."""
    zoom = ax.inset_axes([0.42, 0.06, 0.55, 0.55])
    zoom.set_xlim(ZOOM[0], ZOOM[1])
    zoom.set_ylim(ZOOM[2], ZOOM[3])
    zoom.grid(alpha=0.3)
    zoom.tick_params(labelsize=7)
    zoom.set_title("top-left corner", fontsize=8)
    ax.indicate_inset_zoom(zoom, edgecolor="#555555")
    return zoom


def _finish_roc_axes(ax, title: str) -> None:
    """Chance diagonal, labels, square unit axes and the legend below: shared by both ROC figures."""
    ax.plot([0, 1], [0, 1], ":", color="#999999", lw=1, label="chance")
    ax.set_xlabel("False positive rate (1 − specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), fontsize=8, frameon=False)


def mean_roc(folds: dict[int, Predictions], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Mean and std of the fold ROC curves interpolated on ``grid`` (false positive rates), and fold AUCs."""
    from sklearn.metrics import roc_auc_score, roc_curve

    tprs, aucs = [], []
    for p in folds.values():
        fpr, tpr, _ = roc_curve(p.labels, p.prob)
        t = np.interp(grid, fpr, tpr)
        t[0] = 0.0
        tprs.append(t)
        aucs.append(float(roc_auc_score(p.labels, p.prob)))
    tprs = np.array(tprs)
    mean = tprs.mean(axis=0)
    mean[-1] = 1.0
    std = tprs.std(axis=0, ddof=1) if len(tprs) > 1 else np.zeros_like(mean)
    return mean, std, aucs


def roc_cv(groups: Sequence[tuple[str, dict[int, Predictions], str, str]], path: str | os.PathLike,
           expected_folds: int) -> Optional[str]:
    """Mean cross-validation ROC with a ±1 std band for each model; ``groups``: (label, fold->predictions, colour,
    line style)."""
    groups = [g for g in groups if g[1]]
    if not groups:
        return None
    grid = np.linspace(0, 1, 401)
    fig, ax = plt.subplots(figsize=(6.2, 7.6))
    zoom = _zoom_axes(ax)
    for label, folds, colour, style in groups:
        mean, std, aucs = mean_roc(folds, grid)
        sd = np.std(aucs, ddof=1) if len(aucs) > 1 else 0.0
        ax.plot(grid, mean, style, color=colour, lw=2,
                label=f"{label}: AUC {np.mean(aucs):.3f} ± {sd:.3f} ({len(aucs)} of {expected_folds or len(aucs)} folds)")
        ax.fill_between(grid, np.clip(mean - std, 0, 1), np.clip(mean + std, 0, 1), color=colour, alpha=0.15,
                        label=f"{label}: ±1 std")
        zoom.plot(grid, mean, style, color=colour, lw=1.4)  # the inset: means only, the bands would hide them
    _finish_roc_axes(ax, "Mean cross-validation ROC (validation folds)")
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Data


def data_partition(D: DataSummary, path: str | os.PathLike) -> str:
    """Counts per split and label (bars) and the distribution of each patch's mean grey level."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    splits = [s for s in ("train", "test") if s in D.counts]
    x = np.arange(len(splits))
    w = 0.38
    for i, lab in enumerate((0, 1)):
        vals = [D.counts[s][str(lab)] for s in splits]
        bars = a.bar(x + (i - 0.5) * w, vals, w, color=CLASS_COLOURS[lab], label=CLASS_NAMES[lab])
        a.bar_label(bars, padding=2, fontsize=9)
    a.set_xticks(x, [s.capitalize() for s in splits])
    a.set_ylabel("Number of patches")
    a.set_title("Patches per split and label")
    a.legend()
    a.margins(y=0.12)
    a.grid(axis="y", alpha=0.3)
    bins = np.linspace(0, 255, 52)
    for s, style in (("train", "step"), ("test", "step")):
        for lab in (0, 1):
            v = D.mean_grey.get(s, {}).get(str(lab))
            if v is None or not len(v):
                continue
            b.hist(v, bins=bins, histtype=style, density=True, lw=1.6, color=CLASS_COLOURS[lab],
                   ls="-" if s == "train" else "--", label=f"{s.capitalize()}, {CLASS_NAMES[lab]}")
    b.set_xlabel("Mean grey level of the patch (0–255)")
    b.set_ylabel("Density")
    b.set_title("Mean grey level per patch")
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    return _save(fig, path)


def patch_grid(images: np.ndarray, labels: np.ndarray, per_class: int, seed: int, path: str | os.PathLike,
               title: str = "Random Train patches") -> Optional[str]:
    """Two rows of random patches per class (seeded), class 0 above class 1."""
    if images is None or len(images) == 0:
        return None
    rng = np.random.default_rng(seed)
    rows_per_class = 2
    fig, axes = plt.subplots(2 * rows_per_class, per_class, figsize=(1.3 * per_class, 1.45 * 2 * rows_per_class + 0.4),
                             squeeze=False)
    for ci, lab in enumerate((0, 1)):
        idx = np.flatnonzero(labels == lab)
        pick = rng.choice(idx, size=min(len(idx), per_class * rows_per_class), replace=False) if len(idx) else []
        for j in range(per_class * rows_per_class):
            ax = axes[ci * rows_per_class + j // per_class, j % per_class]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(pick):
                ax.imshow(images[pick[j]], cmap="gray", vmin=0, vmax=255)
                for sp in ax.spines.values():
                    sp.set_color(CLASS_COLOURS[lab])
                    sp.set_linewidth(2.5)
            else:
                ax.axis("off")
        axes[ci * rows_per_class, 0].set_ylabel(CLASS_NAMES[lab], color=CLASS_COLOURS[lab], fontsize=10)
    fig.suptitle(f"{title}: top rows {CLASS_NAMES[0]}, bottom rows {CLASS_NAMES[1]} (grey levels 0–255)")
    return _save(fig, path)


def _short_id(image_id: str) -> str:
    """A Test id as the gallery shows it: the file name without its extension (``0227u1_3_1_1.pgm_1``)."""
    return Path(image_id).stem


def gallery(images_by_id: dict[str, np.ndarray], test: Predictions, threshold: float, per_row: int, seed: int,
            path: str | os.PathLike, model_label: str = "CNN",
            saliency: Optional[dict[str, np.ndarray]] = None) -> Optional[str]:
    """Correctly and incorrectly classified Test patches with their ids and scores, and, when ``saliency``
    maps are given (id -> H x W), each patch again with its map laid over it.

    Rows: correct normal (random), correct cluster (random), false positives and false negatives
    (the most confident mistakes first); a category with no patch is left out, and so is a row's tail.
    """
    if test is None or not images_by_id:
        return None
    pred = (test.prob >= threshold).astype(int)
    y = test.labels
    rng = np.random.default_rng(seed)

    def rand(mask):
        idx = np.flatnonzero(mask)
        return rng.choice(idx, size=min(per_row, len(idx)), replace=False) if len(idx) else np.array([], int)

    fp = np.flatnonzero((pred == 1) & (y == 0))
    fn = np.flatnonzero((pred == 0) & (y == 1))
    cats = [("Correct: normal", rand((pred == 0) & (y == 0))), ("Correct: cluster", rand((pred == 1) & (y == 1))),
            (f"False positives ({len(fp)})", fp[np.argsort(-test.prob[fp])][:per_row]),
            (f"False negatives ({len(fn)})", fn[np.argsort(test.prob[fn])][:per_row])]
    cats = [(t, [i for i in idx if test.ids[i] in images_by_id]) for t, idx in cats]
    cats = [(t, idx) for t, idx in cats if idx]
    if not cats:
        return None
    with_maps = saliency is not None
    rows = [(t, idx, kind) for t, idx in cats for kind in (("patch", "saliency") if with_maps else ("patch",))]
    ncol = max(len(idx) for _, idx in cats)
    fig, axes = plt.subplots(len(rows), ncol, figsize=(1.5 * ncol + 1.3, 1.8 * len(rows) + 0.6), squeeze=False)
    for r, (title, idx, kind) in enumerate(rows):
        for j in range(ncol):
            ax = axes[r, j]
            if j >= len(idx):
                ax.axis("off")
                continue
            i = idx[j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.imshow(images_by_id[test.ids[i]], cmap="gray", vmin=0, vmax=255)
            smap = saliency.get(test.ids[i]) if with_maps else None
            if kind == "saliency" and smap is not None:
                ax.imshow(smap / max(float(smap.max()), 1e-12), cmap="jet", alpha=0.45, vmin=0, vmax=1)
            elif kind == "saliency":
                ax.text(0.5, 0.5, "no map", ha="center", va="center", transform=ax.transAxes, color="white")
            if kind == "patch":
                ax.set_title(f"{_short_id(test.ids[i])}\np = {test.prob[i]:.2f}", fontsize=6.5)
            for sp in ax.spines.values():
                sp.set_color(CLASS_COLOURS[int(y[i])])
                sp.set_linewidth(2.5)
        axes[r, 0].set_ylabel(title if kind == "patch" else "saliency", fontsize=8.5)
    fig.suptitle(f"{model_label} on the official Test set: id and score p = P(cluster), threshold {threshold:g}; "
                 "frame colour = true class (green normal, red cluster)"
                 + ("; below each row: its saliency map (red = most important)" if with_maps else ""), fontsize=9.5)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Wavelet comparison


def _once(ax, label: str) -> Optional[str]:
    """``label`` the first time it is used on ``ax``, None afterwards (one legend entry per label)."""
    return None if label in ax.get_legend_handles_labels()[1] else label


def wavelet_bars(S: Summaries, path: str | os.PathLike) -> Optional[str]:
    """CV AUC (mean ± std, bars) and official-Test AUC (diamonds) of every wavelet classifier, per feature set,
    with the CNN and the baselines as reference lines; the y-axis spans where the values are."""
    items = [s for s in S.wavelet.values() if "auc" in s.cv]
    if not items:
        return None
    models = sorted({s.run.model for s in items}, key=lambda m: -max(s.cv["auc"]["mean"] for s in items if s.run.model == m))
    fsets = sorted({s.run.feature_set for s in items})
    x = np.arange(len(models))
    w = 0.8 / len(fsets)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.05 * len(models) + 5.5), 4.6))
    for i, fs in enumerate(fsets):
        for j, m in enumerate(models):
            s = next((s for s in items if s.run.model == m and s.run.feature_set == fs), None)
            if s is None:
                continue
            xi = x[j] + (i - (len(fsets) - 1) / 2) * w
            ax.bar(xi, s.cv["auc"]["mean"], w * 0.92, yerr=s.cv["auc"]["std"], capsize=3,
                   color=FEATURE_COLOURS.get(fs, ARM_COLOURS["wavelet"]), edgecolor="black" if s.run.name == S.best_wavelet else "none",
                   lw=1.5)
            if s.test:
                ax.plot(xi, s.test["auc"], "D", color="black", ms=5,
                        label=_once(ax, "official Test AUC"))
    levels = [s.cv["auc"]["mean"] - s.cv["auc"]["std"] for s in items] + [s.test["auc"] for s in items if s.test]
    cnn_auc = S.cnn_cv_auc()
    if cnn_auc:
        ax.axhline(cnn_auc["mean"], color=ARM_COLOURS["cnn"], ls="--", lw=1.5,
                   label=f"CNN CV AUC ({S.folds_label(cnn_auc['n'])})")
        levels.append(cnn_auc["mean"])
    for name, b in S.baseline.items():
        if "auc" in b.cv:
            colour, style = baseline_style(name)
            ax.axhline(b.cv["auc"]["mean"], color=colour, ls=style, lw=1.8, label=f"{name} baseline CV AUC")
            levels.append(b.cv["auc"]["mean"])
    bottom = max(0.0, np.floor((min(levels) - 0.03) * 20) / 20)  # a multiple of 0.05 below every value shown
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=FEATURE_COLOURS.get(fs, ARM_COLOURS["wavelet"]), label=f"'{fs}' features: CV AUC mean ± std")
               for fs in fsets] + [Patch(facecolor="white", edgecolor="black", lw=1.5, label="best by CV AUC")]
    handles += ax.get_legend_handles_labels()[0]
    ax.set_xticks(x, [CLASSIFIER_NAMES.get(m, m) for m in models], rotation=20, ha="right")
    ax.set_ylim(bottom, 1.0)
    ax.set_ylabel(f"AUC (axis from {bottom:.2f})")
    ax.set_title("Wavelet classifiers: cross-validation and official-Test AUC (black frame: best by CV AUC)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    return _save(fig, path)


def images_by_id(ids: np.ndarray, images: np.ndarray) -> dict[str, np.ndarray]:
    return {str(i): im for i, im in zip(ids, images)}


def figure_path(folder: Path, name: str) -> Path:
    return folder / f"{name}.png"
