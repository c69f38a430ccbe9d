"""Pack an image tree ``ROOT/{Train,Test}/{0,1}/*`` into one HDF5 file (layout: microcal_hpc/dataset.py).

Rules of the tree (any violation raises :class:`InputError` naming the file or folder, before or
while writing; the output is then not created and an existing one is left untouched):

- ``ROOT/Train`` and ``ROOT/Test`` must be folders; other entries of ROOT are not read.
- A split folder holds exactly the class folders ``0`` (normal) and ``1`` (cluster); any other
  folder there is an error, and so is an image file outside a class folder.
- A class folder holds image files (see :data:`data_prep.readers.IMAGE_EXTENSIONS`) and no folders;
  it must hold at least one image.
- Files that are not images by extension (``.txt``, ``Thumbs.db`` ...) and hidden names (``.DS_Store``,
  macOS ``._x.pgm``) are skipped; one warning line says how many.
- **Same image id twice.** The image id of a file is its name without the image extension, compared
  case-insensitively. Within one split an id may appear once: ``x.pgm`` beside ``x.png`` or ``X.PGM``
  (one image in two files) and ``0/x.pgm`` beside ``1/x.pgm`` (one image labelled twice) are errors.
  The same name in Train and in Test is allowed (``microcal-hpc inspect`` reports such overlaps).
- Every image is 8-bit greyscale and all have the same size (the first image's, in file order).

Files are packed in sorted order of their path relative to ROOT (``Train/0/...`` before
``Train/1/...``). Everything is streamed: each file is read once, hashed, decoded, and written with
its names and hashes to preallocated chunked datasets ``data.chunk_size`` images at a time. Only the
list of file names (from the scan) and the sets of distinct groups/cases grow with the tree.

Idempotent: the root attribute ``inputs_sha256`` digests the format version, the naming patterns,
the chunk size and every ``(id, sha256 of the file bytes)`` in pack order. If the output exists, is
intact (it matches its whole-file checksum ``FILE.h5.sha256`` and has the packed layout) and has the
same digest, nothing is decoded or written ("up to date"); a damaged one is rebuilt (one warning line
says why); ``force=True`` rebuilds.
Atomic: the file is written under a temporary name beside the output, its checksum is written, and
it is renamed at the end; SIGTERM (e.g. ``scancel``) while writing removes the temporary file, and a
temporary file left by a killed pack is removed by the next one (microcal_hpc.atomic).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from data_prep.naming import namer_from_config
from data_prep.readers import decode_image, is_image_name, pixel_hash, read_bytes
from microcal_hpc.atomic import (SignalReceived, atomic_path, h5_output, remove_stale_temporaries, signal_name,
                                 sigterm_raises)
from microcal_hpc.dataset import (FORMAT_NAME, FORMAT_VERSION, STRING_FIELDS, checksum_problem, open_packed,
                                  write_checksum)
from microcal_hpc.errors import ConfigError, InputError, Terminated
from microcal_hpc.joblog import get_logger

log = get_logger("microcal.pack")

SPLIT_FOLDERS = {"train": "Train", "test": "Test"}  # HDF5 group -> folder under ROOT
CLASS_FOLDERS = ("0", "1")
PROGRESS_MIN_FILES = 5000  # show a progress bar from this many images on (progress=None)


@dataclass
class TreeScan:
    """The image files of a tree: per split, sorted ``(id, label)``; ``id`` is relative to ``root``."""

    root: Path
    files: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return sum(len(v) for v in self.files.values())


# ------------------------------------------------------------------------------------------------
# Scanning the tree (no file is opened here)


def scan_tree(root: str | os.PathLike) -> TreeScan:
    """Check the folder structure and list the image files; raise InputError on the first problem."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: image folder not found")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected ROOT/{{Train,Test}}/{{0,1}}/*)")
    scan = TreeScan(root=root)
    for split, folder in SPLIT_FOLDERS.items():
        split_dir = root / folder
        if not split_dir.is_dir():
            problem = "not a folder" if split_dir.exists() else "split folder missing"
            raise InputError(f"{split_dir}: {problem} (expected ROOT/{{Train,Test}}/{{0,1}}/*)")
        scan.files[split] = _scan_split(root, folder, scan.skipped)
    return scan


def _listdir(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as e:
        raise InputError(f"{path}: cannot list folder ({e.strerror or e})") from None


def _scan_split(root: Path, folder: str, skipped: list[str]) -> list[tuple[str, int]]:
    split_dir = root / folder
    for entry in _listdir(split_dir):
        if entry.name in CLASS_FOLDERS or entry.name.startswith("."):
            continue
        if entry.is_dir():
            raise InputError(f"{split_dir / entry.name}: unexpected class folder (only 0 and 1 are allowed)")
        if is_image_name(entry.name):
            raise InputError(f"{split_dir / entry.name}: image outside a class folder (expected {folder}/0 or {folder}/1)")
        skipped.append(f"{folder}/{entry.name}")
    files: list[tuple[str, int]] = []
    seen: dict[str, str] = {}  # image id (lower-case stem) -> relative path
    for label_name in CLASS_FOLDERS:
        class_dir = split_dir / label_name
        if not class_dir.is_dir():
            problem = "not a folder" if class_dir.exists() else "class folder missing"
            raise InputError(f"{class_dir}: {problem} (every split needs 0 and 1)")
        n_before = len(files)
        for entry in _listdir(class_dir):
            rel = f"{folder}/{label_name}/{entry.name}"
            if entry.is_dir() and not entry.name.startswith("."):
                raise InputError(f"{root / rel}: unexpected folder inside a class folder")
            if not is_image_name(entry.name):  # hidden entries and other files
                skipped.append(rel)
                continue
            key = os.path.splitext(entry.name)[0].lower()
            if key in seen:
                raise InputError(f"{root / rel}: same image id as {root / seen[key]} "
                                 f"(an image name may appear once per split, whatever its extension or label)")
            seen[key] = rel
            files.append((rel, int(label_name)))
        if len(files) == n_before:
            raise InputError(f"{class_dir}: class folder holds no images")
    files.sort()
    return files


# ------------------------------------------------------------------------------------------------
# Digests


def _digest_start(data_cfg) -> "hashlib._Hash":
    h = hashlib.sha256()
    h.update(f"{FORMAT_NAME} {FORMAT_VERSION}\n".encode())
    h.update(f"group_pattern {data_cfg.group_pattern}\ncase_pattern {data_cfg.case_pattern}\n".encode())
    h.update(f"chunk_size {data_cfg.chunk_size}\n".encode())
    return h


def _digest_add(h, rel: str, sha: str) -> None:
    h.update(f"{rel}\t{sha}\n".encode())


def inputs_digest(pairs, data_cfg) -> str:
    """sha256 over the format version, naming rules, chunk size and the ``(id, file sha256)`` pairs in pack order."""
    h = _digest_start(data_cfg)
    for rel, sha in pairs:
        _digest_add(h, rel, sha)
    return h.hexdigest()


def _hash_files(scan: TreeScan):
    """(id, sha256) of every image file in pack order, without decoding."""
    root = str(scan.root)
    for split in SPLIT_FOLDERS:
        for rel, _ in scan.files[split]:
            yield rel, hashlib.sha256(read_bytes(os.path.join(root, rel))).hexdigest()


def _existing_file(out: Path) -> tuple[dict | None, str | None]:
    """(counts, image_shape and inputs_sha256 of an existing packed file, None) if it is intact; else
    (None, why it cannot be trusted). Intact: it matches its recorded checksum (checked before HDF5 opens
    it) and has the packed layout."""
    problem = checksum_problem(out)
    if problem:
        return None, problem
    try:
        with open_packed(out, verify=False) as f:
            return {"counts": json.loads(f.attrs["counts"]), "image_shape": [int(s) for s in f.attrs["image_shape"]],
                    "inputs_sha256": str(f.attrs.get("inputs_sha256"))}, None
    except (InputError, KeyError, ValueError) as e:
        return None, str(e).removeprefix(f"{out}: ")


# ------------------------------------------------------------------------------------------------
# Packing


def pack_tree(root: str | os.PathLike, out: str | os.PathLike, data_cfg, force: bool = False,
              progress: bool | None = None) -> dict:
    """Pack ``root`` into the HDF5 file ``out``; return a summary dict (``status``: packed | up to date).

    ``progress``: show a tqdm bar on stderr (None: only for trees of PROGRESS_MIN_FILES images or more).
    """
    t0 = time.perf_counter()
    data_cfg.validate()
    root, out = Path(root), Path(out)
    if out.is_dir():
        raise InputError(f"{out}: output path is a folder; give a file name such as packed.h5")
    scan = scan_tree(root)
    if scan.skipped:
        examples = ", ".join(scan.skipped[:3]) + (", ..." if len(scan.skipped) > 3 else "")
        log.warning("skipped %d file(s) that are not images by name: %s", len(scan.skipped), examples)

    remove_stale_temporaries(out.parent)  # left by a killed pack, even if the output is up to date
    if out.exists() and not force:
        existing, problem = _existing_file(out)
        if problem:
            log.warning("%s: %s; rebuilding it", out, problem)
        elif inputs_digest(_hash_files(scan), data_cfg) == existing["inputs_sha256"]:
            seconds = time.perf_counter() - t0
            log.info("%s is up to date (%d input files unchanged, checked in %.2f s); nothing to do",
                     out, scan.n_images, seconds)
            return dict(existing, path=str(out), status="up to date", seconds=round(seconds, 3),
                        skipped=len(scan.skipped))
        else:
            log.info("inputs changed since %s was written: repacking", out)

    show = progress if progress is not None else scan.n_images >= PROGRESS_MIN_FILES
    log.info("packing %d images from %s into %s", scan.n_images, root, out)
    try:
        with sigterm_raises(), atomic_path(out) as tmp:
            summary = _write_packed(scan, tmp, data_cfg, show)
            write_checksum(tmp, out)  # before the rename: a packed file never lacks its checksum
    except SignalReceived as e:
        raise Terminated(f"{out}: terminated by {signal_name(e.signum)} while packing; nothing written",
                         e.signum) from None
    seconds = time.perf_counter() - t0
    summary.update(path=str(out), status="packed", seconds=round(seconds, 3),
                   images_per_second=round(scan.n_images / seconds, 1) if seconds > 0 else None,
                   skipped=len(scan.skipped))
    log.info(format_summary(summary))
    return summary


def _write_packed(scan: TreeScan, tmp: Path, data_cfg, show_progress: bool) -> dict:
    """Write every split to ``tmp`` chunk by chunk; return the summary fields."""
    import h5py
    from tqdm import tqdm

    from microcal_hpc import __version__

    namer = namer_from_config(data_cfg)
    root = str(scan.root)
    chunk = int(data_cfg.chunk_size)
    str_dtype = h5py.string_dtype("utf-8")
    digest = _digest_start(data_cfg)
    shape: tuple[int, int] | None = None
    first_path = ""
    counts: dict[str, dict[str, int]] = {}
    n_groups: dict[str, int] = {}
    n_cases: dict[str, int] = {}
    pixel_keys: set[bytes] = set()  # 16-byte prefixes of pixel hashes, to count duplicates
    n_images = 0

    bar = tqdm(total=scan.n_images, unit="img", desc="pack", file=sys.stderr, disable=not show_progress,
               mininterval=0.5 if sys.stderr.isatty() else 10.0, dynamic_ncols=True)
    with bar, h5_output(tmp) as f:
        for split in SPLIT_FOLDERS:
            files = scan.files[split]
            n = len(files)
            rows = min(chunk, n)
            g = f.create_group(split)
            labels = np.fromiter((label for _, label in files), dtype=np.int8, count=n)
            g.create_dataset("labels", data=labels)
            columns = {name: g.create_dataset(name, shape=(n,), dtype=str_dtype, chunks=(rows,))
                       for name in STRING_FIELDS}
            images = buf = None
            split_groups: set[str] = set()
            split_cases: set[str] = set()
            for start in range(0, n, rows):
                batch = files[start:start + rows]
                values: dict[str, list[str]] = {name: [] for name in STRING_FIELDS}
                for j, (rel, _) in enumerate(batch):
                    path = os.path.join(root, rel)
                    data = read_bytes(path)
                    img = decode_image(data, path)
                    if shape is None:
                        shape, first_path = img.shape, path
                    elif img.shape != shape:
                        raise InputError(f"{path}: image is {img.shape[0]}x{img.shape[1]} (HxW), expected "
                                         f"{shape[0]}x{shape[1]} like {first_path}")
                    if images is None:
                        images = g.create_dataset("images", shape=(n,) + shape, dtype=np.uint8,
                                                  chunks=(rows,) + shape)
                        buf = np.empty((rows,) + shape, dtype=np.uint8)
                    buf[j] = img
                    sha = hashlib.sha256(data).hexdigest()
                    phash = pixel_hash(img)
                    group, case = namer(rel)
                    for name, value in zip(STRING_FIELDS, (rel, group, case, sha, phash)):
                        values[name].append(value)
                    split_groups.add(group)
                    split_cases.add(case)
                    pixel_keys.add(bytes.fromhex(phash[:32]))
                    _digest_add(digest, rel, sha)
                stop = start + len(batch)
                images[start:stop] = buf[:len(batch)]
                for name, column in columns.items():
                    column[start:stop] = np.array(values[name], dtype=object)
                bar.update(len(batch))
            counts[split] = {"0": int((labels == 0).sum()), "1": int((labels == 1).sum()), "total": n}
            n_groups[split], n_cases[split] = len(split_groups), len(split_cases)
            n_images += n
        inputs_sha256 = digest.hexdigest()
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["image_shape"] = np.array(shape, dtype=np.int64)
        f.attrs["counts"] = json.dumps(counts)
        f.attrs["source_root"] = str(scan.root.resolve())
        f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        f.attrs["package_version"] = __version__
        f.attrs["inputs_sha256"] = inputs_sha256
        f.attrs["group_pattern"] = data_cfg.group_pattern
        f.attrs["case_pattern"] = data_cfg.case_pattern
    return {"counts": counts, "image_shape": list(shape), "groups": n_groups, "cases": n_cases,
            "duplicate_images": n_images - len(pixel_keys), "inputs_sha256": inputs_sha256}


def format_summary(s: dict) -> str:
    """One line: counts per split and label, image size, groups, duplicates, time."""
    parts = [f"{split} {c['0']} normal + {c['1']} cluster" for split, c in s["counts"].items()]
    groups = ", ".join(f"{k} {v}" for k, v in s.get("groups", {}).items())
    rate = f" ({s['images_per_second']:.0f} images/s)" if s.get("images_per_second") else ""
    return (f"packed {'; '.join(parts)}; {s['image_shape'][0]}x{s['image_shape'][1]} uint8; groups: {groups}; "
            f"{s.get('duplicate_images', 0)} pixel-duplicate image(s); {s['seconds']:.2f} s{rate} -> {s['path']}")


# ------------------------------------------------------------------------------------------------
# The job (command line: ``microcal-hpc pack``)


def log_path_for(out: str | Path) -> Path:
    """The log file of a pack: ``FILE.h5`` -> ``FILE.pack.log``."""
    out = Path(out)
    return out.with_name(out.stem + ".pack.log")


def pack_job(cfg, out: str | None = None, force: bool = False, progress: bool | None = None) -> str:
    """Pack ``cfg.data.root`` into ``out`` (default ``cfg.data.packed``); return the HDF5 path."""
    from microcal_hpc.joblog import setup_job_logging

    out = out or cfg.data.packed
    if not out:
        raise ConfigError("no output file: give --out FILE.h5 or set data.packed")
    if not cfg.data.root:
        raise ConfigError("data.root is empty: give --data ROOT or set data.root")
    setup_job_logging(log_path_for(out), name="microcal.pack")
    pack_tree(cfg.data.root, out, cfg.data, force=force, progress=progress)
    return str(out)
