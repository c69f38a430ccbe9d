"""Synthetic image trees shaped like the real data, for tests and benchmarks (no real data needed).

Normal patches are smooth textured noise; cluster patches (label 1) add a few small bright spots,
so a model can learn the task. Files are named like the real ones: ``CCCCxD_R_0.pgm_K.pgm``
(``K`` = crop index within the source image), so the default group/case rule applies.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def synthetic_patch(rng: np.random.Generator, label: int, shape: tuple[int, int] = (60, 60)) -> np.ndarray:
    """One 8-bit patch; label 1 gets 3-6 bright 2-3 pixel spots."""
    h, w = shape
    base = rng.normal(110, 18, size=(h // 4 + 2, w // 4 + 2))
    # smooth background: upsample a coarse noise field
    img = np.kron(base, np.ones((4, 4)))[:h, :w] + rng.normal(0, 6, size=(h, w))
    if label == 1:
        for _ in range(rng.integers(3, 7)):
            y, x = rng.integers(3, h - 3), rng.integers(3, w - 3)
            r = rng.integers(1, 3)
            img[y - r:y + r + 1, x - r:x + r + 1] += rng.uniform(60, 110)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_image_tree(root: str | os.PathLike, counts: dict[str, tuple[int, int]] | None = None,
                    shape: tuple[int, int] = (60, 60), fmt: str = "pgm", crops_per_group: int = 4,
                    seed: int = 0) -> Path:
    """Write ``root/{Train,Test}/{0,1}/*.{fmt}`` with ``counts[split] = (n_label0, n_label1)`` images.

    Consecutive images of one split and label share a source group (``crops_per_group`` crops each);
    case ids are unique per split. Returns ``root``.
    """
    from PIL import Image

    counts = counts or {"Train": (24, 24), "Test": (8, 8)}
    root = Path(root)
    rng = np.random.default_rng(seed)
    case = 1 if seed == 0 else 1 + 10 * (seed % 100)
    for split, per_label in counts.items():
        for label, n in enumerate(per_label):
            d = root / split / str(label)
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                if i % crops_per_group == 0:
                    case += 1
                # CCCC = case mod 10000, a letter, then case // 10000 + 1: names stay unique past 10,000 cases
                letter = "s" if label == 0 else "m"
                group = f"{case % 10000:04d}{letter}{case // 10000 + 1}_{i // crops_per_group % 10}_0"
                name = f"{group}.pgm_{i % crops_per_group + 1}.{fmt}"
                Image.fromarray(synthetic_patch(rng, label, shape), mode="L").save(d / name)
    return root
