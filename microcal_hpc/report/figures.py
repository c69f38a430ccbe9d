"""The report's figures (matplotlib, Agg backend): one function per figure, each writing a PNG
atomically and returning its path, or returning None when the run lacks what the figure needs.

Colours are fixed across figures: the CNN is blue, wavelet classifiers orange (feature set 'coeffs'),
purple ('stats') or brown/pink (the other sets), the baselines grey (brightness) and dark grey (grey-level
statistics with extremes); class 0 (normal) green, class 1 (cluster) red; training curves solid, validation
curves dashed. ROC figures carry a zoomed inset of their top-left corner.
"""
from __future__ import annotations

import math
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
PAD = 0.1  # inches of white kept around the artists of a figure
EDGE = 1.5 / 72  # inches: an artist closer to the canvas's border may be cut off (glyphs overshoot their boxes);
# constrained layout keeps 3 points free
TILE_MARGIN = 0.05  # inches: the figures of tiles keep it free at their border
PNG_COMPRESSION = 3  # zlib level: the default, 6, takes twice as long for files 7% smaller

plt.rcParams.update({"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 9,
                     "figure.constrained_layout.use": True})


def _save(fig, path: str | os.PathLike) -> str:
    """Draw ``fig`` once (constrained layout runs in that draw) and write it as PNG cut to its artists plus PAD inches:
    the picture of matplotlib's tight bounding box without the second draw that box costs. When an artist comes within
    EDGE of the canvas's border or beyond (a title wider than the figure), matplotlib's tight bounding box saves the
    figure instead: it grows the canvas, so rotated tick labels and long titles are never clipped."""
    from PIL import Image

    _skip_unseen_work(fig)
    fig.set_dpi(DPI)
    fig.canvas.draw()
    pixels = _cropped(fig)
    with atomic_path(path, suffix=".png") as tmp:
        if pixels is None:
            fig.savefig(tmp, dpi=DPI, format="png", bbox_inches="tight", pad_inches=PAD)
        else:  # opaque white background: RGB, a quarter less to compress than RGBA
            Image.fromarray(np.ascontiguousarray(pixels[..., :3])).save(tmp, format="png", dpi=(DPI, DPI),
                                                                        compress_level=PNG_COMPRESSION)
    plt.close(fig)
    return str(path)


def _skip_unseen_work(fig) -> None:
    """Spare matplotlib work that changes no pixel of ``fig``. Spines leave the layout: a spine (an Axes' edge with its
    tick marks) lies inside the box of its Axes and tick labels, and measuring it costs a tick update. Axes without
    minor ticks skip trimming minor ticks off the major ones, which runs the major locator again at every update."""
    from matplotlib.ticker import NullLocator

    for ax in fig.axes + [child for ax in fig.axes for child in ax.child_axes]:
        for spine in ax.spines.values():
            spine.set_in_layout(False)
        for axis in (ax.xaxis, ax.yaxis):
            axis.remove_overlapping_locs = not isinstance(axis.get_minor_locator(), NullLocator)


def _cropped(fig) -> Optional[np.ndarray]:
    """The drawn canvas of ``fig`` (RGBA rows, top first) cut to its artists plus PAD inches, or None when an
    artist comes within EDGE of the canvas's border or reaches beyond it (it may be cut off)."""
    box = fig.get_tightbbox(fig.canvas.get_renderer())  # inches from the bottom left
    width, height = fig.get_size_inches()
    if min(box.x0, box.y0, width - box.x1, height - box.y1) < EDGE:
        return None
    rgba = np.asarray(fig.canvas.buffer_rgba())
    rows, cols = rgba.shape[:2]
    top, bottom = (height - box.y1 - PAD) * DPI, (height - box.y0 + PAD) * DPI
    left, right = (box.x0 - PAD) * DPI, (box.x1 + PAD) * DPI
    return rgba[max(0, int(top)):min(rows, math.ceil(bottom)), max(0, int(left)):min(cols, math.ceil(right))]


def _tile_figure(width: float, height: float):
    """A ``width`` x ``height`` inch figure and one invisible Axes whose data coordinates are inches from the figure's
    top left: the patch and confusion-matrix figures place every tile, frame and label on it themselves (one Axes for
    all the tiles and no layout engine, where an Axes per tile made them the slowest figures to draw). The Axes leaves
    a margin of TILE_MARGIN at the figure's border, where nothing is placed."""
    fig = plt.figure(figsize=(width, height), layout="none")
    m = TILE_MARGIN
    ax = fig.add_axes((m / width, m / height, 1 - 2 * m / width, 1 - 2 * m / height))
    ax.set_axis_off()
    ax.set_xlim(m, width - m)
    ax.set_ylim(height - m, m)
    return fig, ax


def _row_label(ax, x: float, y: float, text: str, **kw) -> None:
    """``text`` (a row's or an axis' name) written upwards, ending at ``x`` and centred on ``y`` (inches)."""
    ax.text(x, y, text, rotation=90, ha="right", va="center", **kw)


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
    """Official-Test confusion matrix of each model (counts and row percentages), four to a row."""
    models = [m for m in models if m.test]
    if not models:
        return None
    titles = [f"{textwrap.fill(m.label, 34)}\nTest n={m.test['n']}, threshold {m.threshold:g}" for m in models]
    ncol = min(4, len(models))
    side, left, top, bottom = 2.2, 0.95, 0.2 + 0.16 * max(t.count("\n") + 1 for t in titles), 0.55  # inches
    width, height = left + side + 0.25, top + side + bottom  # of one panel
    fig, ax = _tile_figure(ncol * width, (len(models) + ncol - 1) // ncol * height)
    for k, (m, title) in enumerate(zip(models, titles)):
        x, y = k % ncol * width + left, k // ncol * height + top
        _confusion_tile(ax, x, y, side, m.test)
        ax.text(x + side / 2, y - 0.08, title, ha="center", va="bottom", fontsize=9)
    return _save(fig, path)


def _confusion_tile(ax, x: float, y: float, size: float, t: dict) -> None:
    """The confusion matrix of Test metrics ``t`` as a ``size``-inch square with its top left at (``x``, ``y``), as
    scikit-learn's ConfusionMatrixDisplay draws it: cells shaded (Blues) by count, each with its count and its share
    of the true class, the class names along the left (true) and below (predicted)."""
    from matplotlib.patches import Rectangle

    cm = np.array([[t["tn"], t["fp"]], [t["fn"], t["tp"]]])
    cmap = plt.get_cmap("Blues")
    ax.imshow(cm, cmap=cmap, interpolation="nearest", extent=(x, x + size, y + size, y), aspect="auto")
    ax.add_patch(Rectangle((x, y), size, size, fill=False, edgecolor="black", lw=0.8))
    cell, middle = size / 2, (cm.max() + cm.min()) / 2
    for (i, j), n in np.ndenumerate(cm):
        ax.text(x + (j + 0.5) * cell, y + (i + 0.5) * cell, f"{n}\n({100 * n / max(cm[i].sum(), 1):.0f}%)",
                ha="center", va="center", color=cmap(1.0) if n < middle else cmap(0.0))
    for k, name in enumerate(("normal", "cluster")):
        ax.text(x + (k + 0.5) * cell, y + size + 0.08, name, ha="center", va="top")
        ax.text(x - 0.08, y + (k + 0.5) * cell, name, ha="right", va="center")
    ax.text(x + cell, y + size + 0.3, "Predicted", ha="center", va="top")
    _row_label(ax, x - 0.62, y + cell, "True")


def roc_single(curves: Sequence[tuple[str, Predictions, str, str]], path: str | os.PathLike) -> Optional[str]:
    """ROC curves on the official Test set; ``curves``: (label, predictions, colour, line style)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    curves = [c for c in curves if c[1] is not None and len(np.unique(c[1].labels)) == 2]
    if not curves:
        return None
    fig, ax, zoom = _roc_figure(7.4)
    for label, p, colour, style in curves:
        fpr, tpr, _ = roc_curve(p.labels, p.prob)
        for a in (ax, zoom):
            a.plot(fpr, tpr, style, color=colour, lw=1.8 if a is ax else 1.4,
                   label=f"{label} (AUC {roc_auc_score(p.labels, p.prob):.3f})" if a is ax else None)
    _finish_roc_axes(ax, f"ROC on the official Test set (n = {len(curves[0][1])})")
    return _save(fig, path)


ZOOM = (0.0, 0.25, 0.75, 1.0)  # false positive rate 0-0.25, true positive rate 0.75-1: the top-left corner


def _roc_figure(height: float):
    """A 6.2 x ``height`` inch figure, its Axes and the Axes' zoom inset. Its layout is "compressed", constrained
    layout for an Axes of fixed aspect: plain constrained layout left the title on the canvas's top edge."""
    fig, ax = plt.subplots(figsize=(6.2, height), layout="compressed")
    return fig, ax, _zoom_axes(ax)


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
    fig, ax, zoom = _roc_figure(7.6)
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


def _tile(ax, x: float, y: float, size: float, image: np.ndarray, colour: str,
          overlay: Optional[np.ndarray] = None) -> None:
    """``image`` (grey levels 0-255) as a ``size``-inch square with its top left at (``x``, ``y``), framed in
    ``colour``; ``overlay`` (0-1), when given, laid over it in the jet colour map at 45% opacity.

    The tile is drawn as one RGB image, coloured here: half the cost of a grey-level image and a map over it."""
    from matplotlib.patches import Rectangle

    rgb = np.repeat(np.clip(np.asarray(image, dtype=float), 0, 255)[..., None], 3, axis=2)
    if overlay is not None:
        rgb = 0.55 * rgb + 0.45 * 255 * plt.get_cmap("jet")(overlay)[..., :3]
    ax.imshow(rgb.astype(np.uint8), extent=(x, x + size, y + size, y), aspect="auto")
    ax.add_patch(Rectangle((x, y), size, size, fill=False, edgecolor=colour, lw=2.5))


def patch_grid(images: np.ndarray, labels: np.ndarray, per_class: int, seed: int, path: str | os.PathLike,
               title: str = "Random Train patches") -> Optional[str]:
    """Two rows of random patches per class (seeded), class 0 above class 1."""
    if images is None or len(images) == 0:
        return None
    rng = np.random.default_rng(seed)
    rows_per_class, tile, left, top = 2, 1.2, 0.4, 0.45  # inches
    pitch, row_pitch = tile + 0.1, tile + 0.25
    fig, ax = _tile_figure(left + per_class * pitch, top + 2 * rows_per_class * row_pitch)
    for ci, lab in enumerate((0, 1)):
        idx = np.flatnonzero(labels == lab)
        pick = rng.choice(idx, size=min(len(idx), per_class * rows_per_class), replace=False) if len(idx) else []
        y0 = top + ci * rows_per_class * row_pitch
        for j, i in enumerate(pick):
            _tile(ax, left + (j % per_class) * pitch, y0 + (j // per_class) * row_pitch, tile, images[i],
                  CLASS_COLOURS[lab])
        _row_label(ax, left - 0.1, y0 + tile / 2, CLASS_NAMES[lab], color=CLASS_COLOURS[lab], fontsize=10)
    ax.text(fig.get_figwidth() / 2, top / 2, f"{title}: top rows {CLASS_NAMES[0]}, bottom rows {CLASS_NAMES[1]} "
            "(grey levels 0–255)", ha="center", va="center", fontsize="large")
    return _save(fig, path)


def _short_id(image_id: str) -> str:
    """A Test id as the gallery shows it: the file name without its extension (``0227u1_3_1_1.pgm_1``)."""
    return Path(image_id).stem


def _gallery_categories(test: Predictions, threshold: float, per_row: int, seed: int,
                        images_by_id: dict[str, np.ndarray]) -> list[tuple[str, list[int]]]:
    """The gallery's rows of patches (indices into ``test``) with their titles, those without an image left out."""
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
    return [(t, idx) for t, idx in cats if idx]


def _gallery_tile(ax, x: float, y: float, size: float, image: np.ndarray, label: int, kind: str,
                  smap: Optional[np.ndarray], caption: str) -> None:
    """One gallery tile with its top left at (``x``, ``y``) inches, framed in the colour of its true class: the patch
    with ``caption`` above it (``kind`` "patch"), or the patch under its saliency map (``kind`` "saliency"; "no map"
    written on it when ``smap`` is None)."""
    overlay = smap / max(float(smap.max()), 1e-12) if kind == "saliency" and smap is not None else None
    _tile(ax, x, y, size, image, CLASS_COLOURS[label], overlay)
    if kind == "patch":
        ax.text(x + size / 2, y - 0.05, caption, ha="center", va="bottom", fontsize=6.5)
    elif overlay is None:
        ax.text(x + size / 2, y + size / 2, "no map", ha="center", va="center", color="white")


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
    cats = _gallery_categories(test, threshold, per_row, seed, images_by_id)
    if not cats:
        return None
    y = test.labels
    with_maps = saliency is not None
    rows = [(t, idx, kind) for t, idx in cats for kind in (("patch", "saliency") if with_maps else ("patch",))]
    tile, pitch, left, top = 1.55, 1.65, 0.4, 0.35  # inches
    gaps = [0.35 if kind == "patch" else 0.1 for _, _, kind in rows]  # above a patch row: its tiles' captions
    tops = top + np.cumsum(gaps) + tile * np.arange(len(rows))
    fig, ax = _tile_figure(left + pitch * max(len(idx) for _, idx in cats), tops[-1] + tile + 0.1)
    for (title, idx, kind), row_top in zip(rows, tops):
        for j, i in enumerate(idx):
            image_id = test.ids[i]
            _gallery_tile(ax, left + j * pitch, row_top, tile, images_by_id[image_id], int(y[i]), kind,
                          saliency.get(image_id) if with_maps else None,
                          f"{_short_id(image_id)}\np = {test.prob[i]:.2f}")
        _row_label(ax, left - 0.1, row_top + tile / 2, title if kind == "patch" else "saliency", fontsize=8.5)
    ax.text(fig.get_figwidth() / 2, top / 2, f"{model_label} on the official Test set: id and score p = P(cluster), "
            f"threshold {threshold:g}; frame colour = true class (green normal, red cluster)"
            + ("; below each row: its saliency map (red = most important)" if with_maps else ""),
            ha="center", va="center", fontsize=9.5)
    return _save(fig, path)


# ----------------------------------------------------------------------------------------------
# Wavelet comparison


def _once(ax, label: str) -> Optional[str]:
    """``label`` the first time it is used on ``ax``, None afterwards (one legend entry per label)."""
    return None if label in ax.get_legend_handles_labels()[1] else label


def _bar_group(ax, group: list[tuple[float, ModelSummary]], width: float, colour: str, auc: dict[str, dict],
               best: Optional[str]) -> None:
    """One feature set's bars at the x positions of ``group`` ((x, model) pairs) in one call: CV AUC mean ± std from
    ``auc`` (run name -> mean, std), a black frame on the ``best`` run, a diamond at each official-Test AUC."""
    ax.bar([xi for xi, _ in group], [auc[s.run.name]["mean"] for _, s in group], width,
           yerr=[auc[s.run.name]["std"] for _, s in group], capsize=3, color=colour, lw=1.5,
           edgecolor=["black" if s.run.name == best else "none" for _, s in group])
    tested = [(xi, s.test["auc"]) for xi, s in group if s.test]
    if tested:
        ax.plot(*zip(*tested), "D", color="black", ms=5, label=_once(ax, "official Test AUC"))


def wavelet_bars(S: Summaries, path: str | os.PathLike) -> Optional[str]:
    """CV AUC (mean ± std, bars) and official-Test AUC (diamonds) of every wavelet classifier, per feature set,
    with the CNN and the baselines as reference lines; the y-axis spans where the values are."""
    items = [s for s in S.wavelet.values() if "auc" in s.cv]
    if not items:
        return None
    auc = {s.run.name: s.cv["auc"] for s in items}  # mean and std over the folds, summarised once
    models = sorted({s.run.model for s in items},
                    key=lambda m: -max(auc[s.run.name]["mean"] for s in items if s.run.model == m))
    fsets = sorted({s.run.feature_set for s in items})
    first: dict[tuple, ModelSummary] = {}
    for s in items:
        first.setdefault((s.run.model, s.run.feature_set), s)
    x = np.arange(len(models))
    w = 0.8 / len(fsets)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.05 * len(models) + 5.5), 4.6))
    for i, fs in enumerate(fsets):
        offset = (i - (len(fsets) - 1) / 2) * w
        _bar_group(ax, [(x[j] + offset, first[m, fs]) for j, m in enumerate(models) if (m, fs) in first], w * 0.92,
                   FEATURE_COLOURS.get(fs, ARM_COLOURS["wavelet"]), auc, S.best_wavelet)
    levels = [a["mean"] - a["std"] for a in auc.values()] + [s.test["auc"] for s in items if s.test]
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
