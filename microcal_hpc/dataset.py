"""Read the packed HDF5 file that the pack step writes (the only input of every later job).

Layout (format ``microcal-hpc-packed``, version 1)::

    /train/images      uint8 (N, H, W), chunked     /test/...  the same for the official Test set
    /train/labels      int8 0/1
    /train/ids         UTF-8 str, path relative to the image root (e.g. "Train/1/0033f1_4_0.pgm_2.pgm")
    /train/groups      UTF-8 str, source mammogram id (e.g. "0033f1_4_0")
    /train/cases       UTF-8 str, case id (e.g. "0033")
    /train/sha256      UTF-8 str, sha256 of the file's bytes
    /train/pixel_hash  UTF-8 str, sha256 of the decoded pixels (shape + bytes)
    root attrs: format, format_version, image_shape, counts (JSON), source_root, created, package_version
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microcal_hpc.errors import InputError

FORMAT_NAME = "microcal-hpc-packed"
FORMAT_VERSION = 1
SPLITS = ("train", "test")


@dataclass
class Split:
    """One split of the packed data, fully in memory (800 patches of 60x60 are 2.9 MB)."""

    name: str
    images: np.ndarray  # uint8 (N, H, W); empty (0, H, W) when loaded without images
    labels: np.ndarray  # int64 (N,)
    ids: np.ndarray  # str (N,)
    groups: np.ndarray  # str (N,)
    cases: np.ndarray  # str (N,)
    pixel_hash: np.ndarray  # str (N,)

    def __len__(self) -> int:
        return len(self.labels)


def _strings(ds) -> np.ndarray:
    return np.array(ds.asstr()[()], dtype=object).astype(str)


def open_checked_h5(path: str | os.PathLike, format_name: str, format_version: int, what: str, remedy: str):
    """Open an HDF5 file of this project read-only, checking its ``format`` and ``format_version``
    attributes; raise InputError naming the file otherwise (``what``: e.g. "packed data file";
    ``remedy``: what to run to make or remake it)."""
    import h5py

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} not found ({remedy} first)")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise InputError(f"{p}: not a readable HDF5 file ({e})") from None
    if f.attrs.get("format") != format_name:
        f.close()
        raise InputError(f"{p}: not a microcal-hpc {what} (attribute 'format' missing or different)")
    if int(f.attrs.get("format_version", -1)) != format_version:
        found = f.attrs.get("format_version")
        f.close()
        raise InputError(f"{p}: {what} format version {found}, this version reads {format_version}; {remedy} again")
    return f


def open_packed(path: str | os.PathLike):
    """Open a packed file read-only, checking that it is one; raise InputError otherwise."""
    return open_checked_h5(path, FORMAT_NAME, FORMAT_VERSION, "packed data file", "run `microcal-hpc pack`")


def load_split(path: str | os.PathLike, split: str, images: bool = True) -> Split:
    """Load one split (``train`` or ``test``) of a packed file."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    with open_packed(path) as f:
        g = f[split]
        imgs = g["images"][()] if images else np.zeros((0,) + g["images"].shape[1:], np.uint8)
        return Split(
            name=split,
            images=imgs,
            labels=g["labels"][()].astype(np.int64),
            ids=_strings(g["ids"]),
            groups=_strings(g["groups"]),
            cases=_strings(g["cases"]),
            pixel_hash=_strings(g["pixel_hash"]),
        )


def split_length(path: str | os.PathLike, split: str) -> int:
    """Number of images in one split, without reading them."""
    with open_packed(path) as f:
        return int(f[split]["labels"].shape[0])


def read_images(path: str | os.PathLike, split: str, start: int, stop: int) -> np.ndarray:
    """Read images ``start:stop`` of one split (uint8, (n, H, W)) without loading the rest."""
    with open_packed(path) as f:
        return f[split]["images"][start:stop]


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
