"""The wavelet features file (FEATURES.h5) that the wavelet-features job writes and the classifiers read.

Layout (format ``microcal-hpc-wavelet-features``, version 2)::

    /train/<set>         float (N, F_set)  one dataset per computed feature set (transform.FEATURE_SETS:
                         coeffs, stats, approx_stats, other_levels_stats; transform.feature_set_values)
    /train/labels        int8, /train/ids, /train/groups, /train/cases, /train/pixel_hash (UTF-8 str),
                         copied from the packed file in its order
    /test/...            the same for the official Test set
    /feature_names/<set> UTF-8 str (F_set,): the name of every column: sub-band and statistic
                         (``H4_energy``, ``A4_mean_abs``) or sub-band, row and column (``H4_0_0``)
    root attrs: format, format_version, wavelet, level (as asked), effective_level,
                boundary_free_max_level, keep_levels, mode, dtype, engine, feature_sets (JSON list),
                coeffs_layout, image_shape, input_file, input_digest, pywt_version, numpy_version,
                package_version, complete

Only the feature sets asked for (``wavelet.features``) are present. Version 1 files (whose ``stats``
also held the approximation and the levels outside ``keep_levels``) are refused. Nothing in the file
depends on the number of MPI ranks or the chunk size: the same input and settings give the same bytes
in every dataset and attribute.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from microcal_hpc.dataset import SPLITS, Split, _strings, open_packed
from microcal_hpc.errors import InputError

FORMAT_NAME = "microcal-hpc-wavelet-features"
FORMAT_VERSION = 2
META_FIELDS = ("labels", "ids", "groups", "cases", "pixel_hash")


def settings_attrs(wcfg, info, image_shape, feature_sets) -> dict:
    """The attributes that identify how features were computed (compared to decide 'already complete')."""
    import pywt

    from microcal_hpc import __version__

    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "wavelet": wcfg.wavelet,
        "level": int(wcfg.level),
        "effective_level": int(info.effective),
        "boundary_free_max_level": int(info.boundary_free_max),
        "keep_levels": np.asarray(sorted(wcfg.keep_levels, reverse=True), dtype=np.int64),
        "mode": wcfg.mode,
        "dtype": wcfg.dtype,
        "engine": wcfg.engine,
        "feature_sets": json.dumps(list(feature_sets)),
        "image_shape": np.asarray(image_shape, dtype=np.int64),
        "coeffs_layout": ("detail levels coarsest first (wavedec2 index level-j+1); per level H, V, D; "
                          "each sub-band flattened in C order"),
        "pywt_version": pywt.__version__,
        "numpy_version": np.__version__,
        "package_version": __version__,
    }


def create_layout(path: str | os.PathLike, packed, counts: dict[str, int], columns: dict[str, list[str]],
                  dtype: np.dtype) -> dict[tuple[str, str], int | None]:
    """Create the features file at ``path`` with the metadata of ``packed`` and empty feature datasets.

    ``columns``: feature set -> its column names (written to /feature_names). The feature datasets are
    contiguous and allocated now but not filled, so that the job's ranks can write their rows straight
    into the file. Returns the byte offset of each ``(split, feature set)`` dataset (None for an empty
    one). Attributes are added by :func:`finish` once every row is written.
    """
    import h5py

    from microcal_hpc.atomic import h5_output

    offsets = {}
    with h5_output(path) as f:
        names = f.create_group("feature_names")
        for name, cols in columns.items():
            names.create_dataset(name, data=np.asarray(cols, dtype=object), dtype=h5py.string_dtype(), track_times=False)
        for split in SPLITS:
            g = f.create_group(split)
            for name, cols in columns.items():
                width = len(cols)
                dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
                dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
                dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)  # every byte is written by a rank
                ds = g.create_dataset(name, shape=(counts[split], width), dtype=dtype, track_times=False, dcpl=dcpl)
                offsets[(split, name)] = ds.id.get_offset()
            for name in META_FIELDS:  # HDF5-level copies: no Python strings, O(1) memory
                packed.copy(packed[split][name], g, name=name)
    return offsets


def layout_bytes(packed, counts: dict[str, int], columns: dict[str, list[str]], dtype: np.dtype) -> int:
    """A generous estimate of the size of the file :func:`create_layout` makes: the feature rows, the copied
    metadata (as stored in the packed file), the column names, and 1 MB for HDF5's own structures."""
    rows = sum(counts[split] * len(cols) for split in SPLITS for cols in columns.values()) * np.dtype(dtype).itemsize
    meta = sum(packed[split][name].id.get_storage_size() for split in SPLITS for name in META_FIELDS)
    names = sum(len(c) + 16 for cols in columns.values() for c in cols)
    return int(rows + meta + names + 2**20)


def finish(path: str | os.PathLike, attrs: dict) -> None:
    """Add the settings attributes and the 'complete' flag to a features file whose rows are all written."""
    from microcal_hpc.atomic import h5_output

    with h5_output(path, "r+") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        f.attrs["complete"] = True


def input_digest(packed: str | os.PathLike) -> str:
    """sha256 of what the features depend on in a packed file: image shape, ids, labels and pixel hashes.

    Cheap (no pixel is read): the pixel hashes stand for the pixels.
    """
    h = hashlib.sha256()
    with open_packed(packed) as f:
        h.update(f"shape {tuple(int(s) for s in f.attrs['image_shape'])}\n".encode())
        for split in SPLITS:
            g = f[split]
            h.update(f"[{split}] {g['labels'].shape[0]}\n".encode())
            n = g["labels"].shape[0]
            for a in range(0, n, 65536):  # in blocks: memory does not grow with the number of images
                b = min(n, a + 65536)
                h.update(np.ascontiguousarray(g["labels"][a:b].astype(np.int8)).tobytes())
                for name in ("ids", "pixel_hash"):
                    h.update(("\n".join(g[name].asstr()[a:b].tolist()) + "\n").encode())
    return h.hexdigest()


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def is_complete(path: str | os.PathLike, expected: dict) -> bool:
    """True if ``path`` is a finished features file whose attributes equal ``expected`` (settings + input)."""
    import h5py

    p = Path(path)
    if not p.is_file():
        return False
    try:
        with h5py.File(p, "r") as f:
            if not bool(f.attrs.get("complete", False)):
                return False
            for key, value in expected.items():
                if key in ("pywt_version", "numpy_version", "package_version"):
                    value = str(value)
                if key not in f.attrs or not _same(_attr(f.attrs[key]), value):
                    return False
            return True
    except (OSError, ValueError):
        return False


def _attr(v):
    if isinstance(v, bytes):
        return v.decode()
    return v


def open_features(path: str | os.PathLike):
    """Open a features file read-only after checking its format; InputError otherwise."""
    from microcal_hpc.dataset import open_checked_h5

    f = open_checked_h5(path, FORMAT_NAME, FORMAT_VERSION, "wavelet features file",
                        "run `microcal-hpc wavelet-features`")
    if not bool(f.attrs.get("complete", False)):
        f.close()
        raise InputError(f"{path}: features file is incomplete; recompute it")
    return f


def feature_sets_in(path: str | os.PathLike) -> list[str]:
    """The feature sets a features file holds."""
    with open_features(path) as f:
        return json.loads(f.attrs["feature_sets"])


def load_features(path: str | os.PathLike, split: str, feature_set: str) -> tuple[np.ndarray, Split]:
    """(X, meta) of one split: the (N, F) features and a Split with labels/ids/groups/... (no images)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    with open_features(path) as f:
        sets = json.loads(f.attrs["feature_sets"])
        if feature_set not in sets:
            raise InputError(f"{path}: holds feature set(s) {', '.join(sets)}, not {feature_set!r} "
                             f"(recompute with wavelet.features listing {feature_set})")
        g = f[split]
        X = g[feature_set][()]
        shape = tuple(int(s) for s in f.attrs["image_shape"])
        meta = Split(name=split, images=np.zeros((0,) + shape, np.uint8), labels=g["labels"][()].astype(np.int64),
                     ids=_strings(g["ids"]), groups=_strings(g["groups"]), cases=_strings(g["cases"]),
                     pixel_hash=_strings(g["pixel_hash"]))
    return X, meta


def feature_names(path: str | os.PathLike, feature_set: str) -> list[str]:
    """The column names of one feature set of a features file (sub-band and statistic, or position)."""
    with open_features(path) as f:
        if feature_set not in f.get("feature_names", {}):
            raise InputError(f"{path}: no column names for feature set {feature_set!r}")
        return f["feature_names"][feature_set].asstr()[()].tolist()


def features_settings(path: str | os.PathLike) -> dict:
    """The settings attributes of a features file, as plain Python values (for logs and metrics.json)."""
    with open_features(path) as f:
        out = {}
        for k, v in f.attrs.items():
            v = _attr(v)
            out[k] = v.tolist() if isinstance(v, np.ndarray) else (v.item() if isinstance(v, np.generic) else v)
        return out
