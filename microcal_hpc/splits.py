"""Group-aware, stratified validation splits shared by the CNN and the wavelet arm.

A "fold" means the same images for every model: both arms call :func:`split_folds` with the same
labels, grouping and seed. Groups are the case (``case``, the default: the four-digit patient number,
so all images of a patient are on one side), the source mammogram (``group``; a case's mammograms may
then sit in different folds) or single images (``none``); in every mode, pixel-identical images (same
``pixel_hash``) are merged into one group so that a duplicate can never sit on both sides of a split.
"""
from __future__ import annotations

import numpy as np

from microcal_hpc.dataset import Split
from microcal_hpc.errors import ConfigError


def _union_find_labels(keys_a: np.ndarray, keys_b: np.ndarray) -> np.ndarray:
    """Connected components of images linked by equal ``keys_a`` or equal ``keys_b``."""
    n = len(keys_a)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for keys in (keys_a, keys_b):
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            j = first.setdefault(k, i)
            if j != i:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    roots = np.array([find(i) for i in range(n)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels


def split_groups(split: Split, group_by: str = "group") -> np.ndarray:
    """Integer group label per image: the chosen grouping merged with pixel-identical duplicates."""
    if group_by == "group":
        keys = split.groups
    elif group_by == "case":
        keys = split.cases
    elif group_by == "none":
        keys = np.array([f"#{i}" for i in range(len(split))])
    else:
        raise ValueError(f"group_by must be group, case or none; got {group_by!r}")
    return _union_find_labels(np.asarray(keys).astype(str), np.asarray(split.pixel_hash).astype(str))


def cv_folds(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int = 0,
             grouping: str = "given") -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_folds`` (train_idx, val_idx) pairs from StratifiedGroupKFold, group order shuffled by ``seed``.

    ConfigError (one line naming the ``grouping``, the number of groups and the folds) when there are
    fewer groups than folds.

    scikit-learn 1.5's ``StratifiedGroupKFold(shuffle=True)`` shuffles the per-group class counts
    without the group ids, which ruins stratification (folds of 0.42 vs 0.67 positives where the
    data has 0.5). We shuffle instead by renaming the groups with a seeded permutation and run the
    splitter unshuffled: its stable greedy assignment then depends on the seed and stays stratified.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    labels = np.asarray(labels)
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    if len(uniq) < n_folds:
        raise ConfigError(f"grouping '{grouping}' gives {len(uniq)} group(s) (pixel-identical images merged), too "
                          f"few for {n_folds} folds: use fewer folds or another grouping (group_by)")
    renamed = np.random.default_rng(seed).permutation(len(uniq))[inverse]
    sgkf = StratifiedGroupKFold(n_splits=n_folds, shuffle=False)
    return [(np.sort(tr), np.sort(va)) for tr, va in sgkf.split(np.zeros(len(labels)), labels, renamed)]


def split_folds(split: Split, group_by: str, n_folds: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The CV folds of a (Train) split under a grouping: the one call every arm makes for its folds."""
    return cv_folds(split.labels, split_groups(split, group_by), n_folds, seed, grouping=group_by)


def fold_of_each(labels: np.ndarray, groups: np.ndarray, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index (0..n_folds-1) of every image, as validation fold."""
    out = np.full(len(labels), -1, dtype=np.int64)
    for k, (_, va) in enumerate(cv_folds(labels, groups, n_folds, seed)):
        out[va] = k
    return out


def train_validation_indices(split: Split, group_by: str, seed: int, fold: int | None,
                             folds: int) -> tuple[np.ndarray, np.ndarray]:
    """The (train_idx, val_idx) of the Train split for CV fold ``fold``; with ``fold`` None, every
    image trains and the validation part is empty (the official protocol: no hold-out from Train)."""
    if fold is None:
        return np.arange(len(split)), np.zeros(0, dtype=np.int64)
    return cv_folds(split.labels, split_groups(split, group_by), folds, seed)[fold]
