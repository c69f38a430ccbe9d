"""The multilevel 2-D DWT of many small images as dense matrix products (the ``matrix`` engine).

One level of a separable 2-D DWT is linear in the image: with ``W = [A; D]`` the analysis matrix of
one axis (the low-pass rows ``A`` stacked on the high-pass rows ``D``, boundary extension included),
``W_h X W_w^T`` holds the four sub-bands of ``X`` as its blocks. ``W`` is read off PyWavelets itself
(``pywt.dwt`` of the identity), so every wavelet and every extension mode gives PyWavelets' numbers, up
to rounding (1e-15 relative in float64, 1e-13 at worst in ``smooth`` mode; ``tests/test_wavelet_matrix.py``).

Images are processed in tiles of :data:`TILE` images. Each pass is ONE matrix product over the whole
tile (``(TILE*rows, cols) @ W^T``), which BLAS runs near its peak, where PyWavelets filters one short row
at a time (see :class:`_Level` for how the transpositions are kept to a minimum).

Reproducibility: every product has the same shape (partial tiles are zero-padded to :data:`TILE`), lives
in the same aligned buffers and runs with BLAS limited to one thread, so an image's coefficients do not
depend on the other images in its tile. They could still depend on the tile slot the image sits in, if
the BLAS rounds rows differently by position. OpenBLAS's float32 products do that on this machine. Its
float64 products do not: an image gets the same bits in any slot, as a test checks on the machine that
runs the tests. So the computation is done in float64 (float32 output is rounded from it). On top of
that, ``first_slot`` pins every image to the slot given by its index. The MPI job uses it, so the
features are bit-identical for any chunking and number of ranks, with any BLAS.
"""
from __future__ import annotations

import functools
import threading

import numpy as np

TILE = 32  # images per matrix product: every product has a multiple of 32 rows (no BLAS edge kernels)

_local = threading.local()  # per-thread plans: their buffers are reused between calls
_blas = None


@functools.lru_cache(maxsize=64)
def analysis_matrix(n: int, wavelet: str, mode: str) -> np.ndarray:
    """``W^T`` (n, 2m) for signals of length n: ``x @ W^T`` is ``[cA, cD]`` of ``pywt.dwt(x, wavelet, mode)``."""
    import pywt

    cA, cD = pywt.dwt(np.eye(n), wavelet, mode=mode, axis=0)  # column j: the transform of e_j
    wt = np.ascontiguousarray(np.vstack([cA, cD]).T, dtype=np.float64)
    wt.setflags(write=False)
    return wt


def _aligned_empty(shape: tuple[int, ...], align: int = 64) -> np.ndarray:
    """A float64 array of ``shape`` whose data starts on an ``align``-byte boundary."""
    nbytes = int(np.prod(shape)) * 8
    raw = np.empty(nbytes + align, np.uint8)
    offset = (-raw.ctypes.data) % align
    return raw[offset:offset + nbytes].view(np.float64).reshape(shape)


class _Level:
    """Matrices and buffers of one decomposition level of an (h, w) approximation.

    The input tile holds the TRANSPOSED approximation X^T (w, h): pass 1 runs along its last axis (the
    image's height), the transposed copy in between turns ``W_h X`` upright, and pass 2 (along the width)
    leaves ``P = W_h X W_w^T = [[cA, cV], [cH, cD]]`` upright in ``r``. Only the next level's input, cA,
    is transposed again (a quarter of the output), and the first level's transposition is folded into the
    copy that converts the 8-bit images to float64.
    """

    def __init__(self, h: int, w: int, wavelet: str, mode: str):
        self.h, self.w = h, w
        self.w1, self.w2 = analysis_matrix(h, wavelet, mode), analysis_matrix(w, wavelet, mode)
        self.mh, self.mw = self.w1.shape[1] // 2, self.w2.shape[1] // 2
        self.y = _aligned_empty((TILE, w, 2 * self.mh))
        self.yt = _aligned_empty((TILE, 2 * self.mh, w))
        self.r = _aligned_empty((TILE, 2 * self.mh, 2 * self.mw))
        self.next = _aligned_empty((TILE, self.mw, self.mh))

    def run(self, xt: np.ndarray) -> None:
        """Transform the tile ``xt`` (TILE, w, h) of transposed approximations into ``r``."""
        h, w, kh, kw = self.h, self.w, 2 * self.mh, 2 * self.mw
        np.matmul(xt.reshape(TILE * w, h), self.w1, out=self.y.reshape(TILE * w, kh))
        self.yt[...] = self.y.transpose(0, 2, 1)
        np.matmul(self.yt.reshape(TILE * kh, w), self.w2, out=self.r.reshape(TILE * kh, kw))

    def bands(self, slots: slice) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Views of (cA, cH, cV, cD) of the images in tile ``slots``."""
        r, mh, mw = self.r[slots], self.mh, self.mw
        return r[:, :mh, :mw], r[:, mh:, :mw], r[:, :mh, mw:], r[:, mh:, mw:]

    def approximation(self) -> np.ndarray:
        """The next level's input tile: cA transposed."""
        self.next[...] = self.r[:, :self.mh, :self.mw].transpose(0, 2, 1)
        return self.next


class _Plan:
    """All levels of one (shape, wavelet, level, mode) decomposition, with an input tile buffer."""

    def __init__(self, shape: tuple[int, int], wavelet: str, level: int, mode: str):
        h, w = shape
        self.tile = _aligned_empty((TILE, w, h))  # transposed images
        self.levels = []
        for _ in range(level):
            lv = _Level(h, w, wavelet, mode)
            self.levels.append(lv)
            h, w = lv.mh, lv.mw


def _plan(shape: tuple[int, int], wavelet: str, level: int, mode: str) -> _Plan:
    plans = getattr(_local, "plans", None)
    if plans is None:
        plans = _local.plans = {}
    key = (shape, wavelet, level, mode)
    if key not in plans:
        plans[key] = _Plan(shape, wavelet, level, mode)
    return plans[key]


def _one_blas_thread():
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


def _reusable(out: list | None, shapes: list, dtype: np.dtype) -> bool:
    """True if ``out`` is a coefficient list with exactly these array shapes and dtype."""
    try:
        arrays = [out[0]] + [a for details in out[1:] for a in details]
    except (TypeError, IndexError):
        return False
    return len(arrays) == len(shapes) and all(isinstance(a, np.ndarray) and a.shape == sh and a.dtype == dtype and a.flags.c_contiguous
               for a, sh in zip(arrays, shapes))


def wavedec2_matrix(images: np.ndarray, wavelet: str, level: int, mode: str = "symmetric",
                    dtype: str = "float64", out: list | None = None, first_slot: int = 0) -> list:
    """``pywt.wavedec2(images, wavelet, mode, level, axes=(-2, -1))`` of ``images`` (N, H, W) by matrix products.

    Same list layout as PyWavelets (``[cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]``), arrays of
    ``dtype`` (computed in float64). ``out``: the result of an earlier call for as many images of the same
    size, whose arrays are overwritten and returned (saves allocating fresh pages for every batch, about
    a third of the time at 256 images); any other value is ignored. ``first_slot``: the tile slot of
    ``images[0]``; image ``i`` is computed in slot ``(first_slot + i) % TILE``. Callers that give each
    image its index in a fixed numbering (the MPI job: the index within its split) compute every image
    in the same slot whatever the batching, so the bits cannot depend on it even with a BLAS whose
    rounding depends on the row. Settings are not validated here (see ``transform.resolve_level``).
    """
    x = np.asarray(images)
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {x.shape}")
    n, dt = x.shape[0], np.dtype(dtype)
    plan = _plan((int(x.shape[1]), int(x.shape[2])), wavelet, int(level), mode)
    last = plan.levels[-1]
    shapes = [(n, last.mh, last.mw)] + [(n, lv.mh, lv.mw) for lv in reversed(plan.levels) for _ in range(3)]
    if not _reusable(out, shapes, dt):
        out = [np.empty(shapes[0], dt)] + [tuple(np.empty((n, lv.mh, lv.mw), dt) for _ in range(3))
                                           for lv in reversed(plan.levels)]
    details = out[1:][::-1]  # finest level first, as the plan runs
    lead = int(first_slot) % TILE
    with _one_blas_thread():
        for tile_start in range(-lead, n, TILE):  # images tile_start .. tile_start + TILE - 1
            lo, hi = max(tile_start, 0), min(tile_start + TILE, n)
            slots = slice(lo - tile_start, hi - tile_start)
            tile = plan.tile
            tile[:slots.start] = 0.0
            tile[slots] = x[lo:hi].transpose(0, 2, 1)
            tile[slots.stop:] = 0.0
            for lv, bands in zip(plan.levels, details):
                lv.run(tile)
                cA, cH, cV, cD = lv.bands(slots)
                for dst, src in zip(bands, (cH, cV, cD)):
                    dst[lo:hi] = src
                if lv is last:
                    out[0][lo:hi] = cA
                else:
                    tile = lv.approximation()
    return out
