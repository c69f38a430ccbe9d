"""Source letters of the patches and the images of Test that overlap Train: the two data facts the
report's shortcut analysis rests on.

The source letter is the tag right after the case id in the group id (``0227u1_3_1`` -> ``u``), found
by ``data.source_pattern`` (:class:`microcal_hpc.config.DataConfig`; the one declaration of how it is
parsed). In this copy of the data some letters occur in one class only (every Test positive is ``b`` or
``u``), so the letter alone can identify the class: :func:`single_class_letters`.
"""
from __future__ import annotations

import re
from typing import Optional

import numpy as np

from microcal_hpc.dataset import Split

NO_SOURCE = "—"  # the letter of a group id the pattern does not match


def source_letters(groups, pattern: str) -> np.ndarray:
    """The source letter of each group id (``data.source_pattern``'s ``source`` group; NO_SOURCE if no match)."""
    rx = re.compile(pattern)
    out = []
    for g in np.asarray(groups).astype(str):
        m = rx.search(g)
        out.append(m.group("source") if m and m.group("source") else NO_SOURCE)
    return np.asarray(out, dtype=str)


def single_class_letters(letters: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """{letter: its only class} for the letters whose every patch has the same label (NO_SOURCE excluded)."""
    out = {}
    for letter in sorted(set(letters.tolist()) - {NO_SOURCE}):
        classes = np.unique(labels[letters == letter])
        if len(classes) == 1:
            out[letter] = int(classes[0])
    return out


def overlap_with_train(train: Split, test: Split) -> dict[str, np.ndarray]:
    """Boolean masks over Test: pixel-identical to a Train image, same source group, same case, and any."""
    masks = {"pixel-identical to a Train image": np.isin(test.pixel_hash, train.pixel_hash),
             "source image (group) also in Train": np.isin(test.groups, train.groups),
             "case also in Train": np.isin(test.cases, train.cases)}
    masks["any"] = np.logical_or.reduce(list(masks.values()))
    return masks


def letter_of(ids: np.ndarray, by_id: dict[str, str]) -> Optional[np.ndarray]:
    """The letters of the images ``ids`` (None when one of them is unknown to ``by_id``)."""
    try:
        return np.asarray([by_id[i] for i in np.asarray(ids).astype(str).tolist()], dtype=str)
    except KeyError:
        return None
