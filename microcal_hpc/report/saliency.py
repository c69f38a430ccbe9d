"""Where the official CNN looks: its saliency maps and how much of them falls on the brightest pixels.

The CNN job writes ``JOB/saliency.npz`` for every run without a fold (docs/outputs.md): ``test_ids`` (N),
``maps`` (N x H x W, non-negative, larger = more important) and ``method`` (one line: what was computed).
The report draws the maps over the gallery patches and measures, per Test image, the share of the map's
total that falls on its brightest pixels (:data:`BRIGHT_FRACTION` of them: microcalcifications are small
bright specks), averaged over the Test positives. A map spread evenly over the patch would give
BRIGHT_FRACTION itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

BRIGHT_FRACTION = 0.02
SALIENCY_FILE = "saliency.npz"


@dataclass
class Saliency:
    """One run's saliency maps on Test, by image id."""

    ids: np.ndarray
    maps: np.ndarray  # (N, H, W) float32, >= 0
    method: str

    def by_id(self) -> dict[str, np.ndarray]:
        return dict(zip(self.ids.tolist(), self.maps))


def read_saliency(job_dir: Path, image_shape: Optional[tuple[int, int]]) -> tuple[Optional[Saliency], str]:
    """(maps, "") or (None, the one-line reason they cannot be used)."""
    path = Path(job_dir) / SALIENCY_FILE
    if not path.is_file():
        return None, f"{path} is missing (the CNN job writes it)"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = {"test_ids", "maps", "method"} - set(z.files)
            if missing:
                return None, f"{path}: lacks {', '.join(sorted(missing))}"
            ids, maps, method = np.asarray(z["test_ids"]).astype(str), np.asarray(z["maps"], np.float32), str(z["method"])
    except (OSError, ValueError) as e:
        return None, f"{path}: unreadable ({e})"
    if maps.ndim != 3 or len(maps) != len(ids):
        return None, f"{path}: maps of shape {maps.shape} for {len(ids)} ids"
    if image_shape is not None and tuple(maps.shape[1:]) != tuple(image_shape):
        return None, f"{path}: maps of {maps.shape[1]}x{maps.shape[2]} for {image_shape[0]}x{image_shape[1]} patches"
    if not np.isfinite(maps).all() or (maps < 0).any():
        return None, f"{path}: maps must be finite and non-negative"
    return Saliency(ids, maps, method), ""


def bright_share(image: np.ndarray, smap: np.ndarray, fraction: float = BRIGHT_FRACTION) -> float:
    """Share of the map's total on the ceil(fraction x H x W) brightest pixels of ``image`` (ties: by position);
    NaN for an all-zero map."""
    k = max(1, math.ceil(fraction * image.size))
    brightest = np.argsort(image.ravel(), kind="stable")[-k:]
    total = float(smap.sum())
    return float(smap.ravel()[brightest].sum()) / total if total > 0 else float("nan")


def share_summary(sal: Saliency, images_by_id: dict[str, np.ndarray], labels_by_id: dict[str, int]) -> dict[str, Any]:
    """Mean bright share over the Test positives (and the negatives, for contrast), with counts."""
    shares: dict[int, list[float]] = {0: [], 1: []}
    skipped = 0
    for i, smap in zip(sal.ids.tolist(), sal.maps):
        if i not in images_by_id or i not in labels_by_id:
            skipped += 1
            continue
        s = bright_share(images_by_id[i], smap)
        if math.isnan(s):
            skipped += 1
            continue
        shares[labels_by_id[i]].append(s)
    return {"fraction": BRIGHT_FRACTION, "method": sal.method,
            "positives": {"mean": float(np.mean(shares[1])) if shares[1] else None, "n": len(shares[1])},
            "negatives": {"mean": float(np.mean(shares[0])) if shares[0] else None, "n": len(shares[0])},
            "skipped": skipped}


def share_text(summary: dict[str, Any]) -> str:
    """One paragraph: what was computed and the measured shares."""
    f = summary["fraction"]
    pos, neg = summary["positives"], summary["negatives"]
    if pos["mean"] is None:
        return "No saliency map of a Test positive could be used."
    return (f"Saliency: {summary['method']}. Share of the saliency that falls on the brightest {100 * f:g}% of "
            f"each patch's pixels, averaged over the {pos['n']} Test positives: {100 * pos['mean']:.1f}%"
            + (f" (Test negatives: {100 * neg['mean']:.1f}%, n = {neg['n']})" if neg["mean"] is not None else "")
            + f"; a map spread evenly over the patch would give {100 * f:g}%."
            + (f" {summary['skipped']} maps were left out (no matching image, or all zero)." if summary["skipped"] else ""))
