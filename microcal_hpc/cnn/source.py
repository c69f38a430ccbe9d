"""Where the CNN job's images come from: held in memory, or streamed from the packed HDF5 file.

A source stands for the selected images of one split of a packed file: ``rows`` (file rows, sorted),
e.g. the training part of a CV fold. It answers one question, :meth:`read`: the uint8 images
``(k, H, W)`` at ``positions`` (indices into ``rows``), in that order.

- :class:`InMemoryImages` indexes the split's images, read once (the packed real data set is 2.9 MB).
- :class:`StreamedImages` reads the HDF5 chunks that hold the requested rows, whole chunks one at a time
  (:meth:`StreamedImages.read_chunk`), and keeps nothing between calls. The training pipeline asks for
  one shuffle window at a time and evaluation for one block of consecutive rows at a time
  (``cnn/pipeline.py``), so the memory a job needs is bounded by the window, whatever the file's size.

Both give the same images, so the choice never changes a result. ``train.input`` chooses: ``memory``,
``stream``, or ``auto`` (:func:`input_mode`: stream a split whose images exceed ``train.input_memory_mb``).
"""
from __future__ import annotations

import os

import numpy as np

from microcal_hpc.config import TrainConfig
from microcal_hpc.dataset import open_packed, verify_pixels

MB = 1 << 20


def split_size(path: str | os.PathLike, split: str) -> tuple[int, tuple[int, ...]]:
    """(number of images, image shape) of one split of a packed file, without reading the images."""
    with open_packed(path) as f:
        shape = f[split]["images"].shape
    return shape[0], tuple(shape[1:])


def input_mode(train: TrainConfig, n_images: int, image_shape: tuple[int, ...]) -> str:
    """``memory`` or ``stream`` for a split of ``n_images`` uint8 images of ``image_shape``."""
    if train.input != "auto":
        return train.input
    return "stream" if n_images * int(np.prod(image_shape)) > train.input_memory_mb * MB else "memory"


class _Source:
    """What both sources share: the rows they stand for and the file's chunk layout."""

    def __init__(self, rows: np.ndarray, chunk_len: int, image_shape: tuple[int, int]):
        self.rows = np.asarray(rows, dtype=np.int64)
        if len(self.rows) > 1 and np.any(np.diff(self.rows) <= 0):
            raise ValueError("rows must be sorted and distinct")
        self.chunk_len = int(chunk_len)
        self.image_shape = tuple(image_shape)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def chunk_ids(self) -> np.ndarray:
        """The file chunk that holds each position (non-decreasing)."""
        return self.rows // self.chunk_len

    def read(self, positions: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class InMemoryImages(_Source):
    """Images of a split held in memory: ``images`` is the whole split (N, H, W), ``rows`` the selected part."""

    mode = "memory"

    def __init__(self, images: np.ndarray, rows: np.ndarray | None = None, chunk_len: int | None = None):
        rows = np.arange(len(images)) if rows is None else rows
        super().__init__(rows, chunk_len or max(1, len(images)), images.shape[1:])
        self._images = images

    def read(self, positions: np.ndarray) -> np.ndarray:
        return self._images[self.rows[np.asarray(positions, dtype=np.int64)]]


class StreamedImages(_Source):
    """Images of ``split`` in the packed file ``path``, read chunk by chunk when asked for."""

    mode = "stream"

    def __init__(self, path: str | os.PathLike, split: str, rows: np.ndarray):
        self.path, self.split = path, split
        with open_packed(path) as f:
            ds = f[split]["images"]
            self._n = ds.shape[0]
            chunk_len = ds.chunks[0] if ds.chunks else ds.shape[0]
            shape = ds.shape[1:]
        super().__init__(rows, max(1, chunk_len), shape)
        self._file = None
        self._verified: set[int] = set()

    def read_chunk(self, chunk: int) -> np.ndarray:
        """All images of one HDF5 chunk (the unit of reading), checked against their pixel hashes the first
        time the chunk is read (InputError naming the first damaged image)."""
        if self._file is None:
            self._file = open_packed(self.path)
        start, stop = chunk * self.chunk_len, min((chunk + 1) * self.chunk_len, self._n)
        group = self._file[self.split]
        images = group["images"][start:stop]
        if chunk not in self._verified:
            verify_pixels(self.path, self.split, images, group["pixel_hash"].asstr()[start:stop], start)
            self._verified.add(chunk)
        return images

    def read(self, positions: np.ndarray) -> np.ndarray:
        rows = self.rows[np.asarray(positions, dtype=np.int64)]
        chunks = rows // self.chunk_len
        out = np.empty((len(rows),) + self.image_shape, dtype=np.uint8)
        for chunk in np.unique(chunks):
            picked = np.flatnonzero(chunks == chunk)
            out[picked] = self.read_chunk(int(chunk))[rows[picked] - chunk * self.chunk_len]
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def open_source(path: str | os.PathLike, split: str, rows: np.ndarray, mode: str,
                images: np.ndarray | None = None):
    """A source for ``rows`` of ``split``: ``images`` (the split's, already read; read now when None) when
    ``mode`` is memory."""
    if mode == "stream":
        return StreamedImages(path, split, rows)
    with open_packed(path) as f:
        ds = f[split]["images"]
        chunk_len = ds.chunks[0] if ds.chunks else ds.shape[0]
        if images is None:
            images = ds[()]
    return InMemoryImages(images, rows, chunk_len)
