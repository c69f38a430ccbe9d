"""The images one CNN job works on: its training part, its validation part and the official Test set.

A job with ``train.fold`` trains on the other folds of Train and validates on fold ``k``; a job without
one trains on every Train image and its validation part is empty. Each part is an image source
(``cnn/source.py``: held in memory or streamed from the packed file, chosen per split by
``train.input``) with its labels, ids and groups in file order.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microcal_hpc.cnn.source import input_mode, open_source, split_size
from microcal_hpc.config import TrainConfig


@dataclass
class Part:
    """Some images of one split: the source to read them and what is known about each, in file order."""

    source: object  # cnn.source.InMemoryImages or StreamedImages
    labels: np.ndarray  # int64
    ids: np.ndarray  # str
    groups: np.ndarray  # str (source mammogram)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class JobData:
    train: Part
    val: Part  # empty without a fold
    test: Part
    val_fold: int  # fold index of the validation part; -1 without a fold
    test_bootstrap_groups: np.ndarray  # bootstrap unit on Test: the job's grouping merged with pixel duplicates
    input: dict[str, str]  # split -> memory | stream
    fingerprint: str  # identity of the images, labels and split

    def window_chunks(self, train: TrainConfig) -> int:
        """File chunks per shuffle window of the training order (at least one)."""
        return max(1, train.shuffle_buffer // self.train.source.chunk_len)

    def close(self) -> None:
        """Close the packed file where a part streams from it."""
        for part in (self.train, self.val, self.test):
            getattr(part.source, "close", lambda: None)()


def load_job_data(path: str | Path, train: TrainConfig) -> JobData:
    """Open the parts of the packed file ``path`` that a job with settings ``train`` uses."""
    from microcal_hpc.dataset import load_split
    from microcal_hpc.splits import split_groups, train_validation_indices

    modes = {split: input_mode(train, *split_size(path, split)) for split in ("train", "test")}
    # a split held in memory is read (and checked) at once; a streamed one reads its images chunk by chunk
    tr, te = (load_split(path, split, images=modes[split] == "memory") for split in ("train", "test"))
    tr_idx, va_idx = train_validation_indices(tr, train.group_by, train.seed, train.fold, train.folds)

    def part(split, rows) -> Part:
        images = split.images if modes[split.name] == "memory" else None
        source = open_source(path, split.name, rows, modes[split.name], images)
        return Part(source, split.labels[rows], split.ids[rows], split.groups[rows])

    h = hashlib.sha256()
    for arr in (tr.ids, tr.labels, tr.pixel_hash, te.ids, te.pixel_hash, tr_idx, va_idx):
        h.update("\n".join(map(str, arr)).encode())
    return JobData(
        train=part(tr, tr_idx), val=part(tr, va_idx), test=part(te, np.arange(len(te))),
        val_fold=-1 if train.fold is None else int(train.fold),
        test_bootstrap_groups=split_groups(te, train.group_by),
        input=modes, fingerprint=h.hexdigest(),
    )
