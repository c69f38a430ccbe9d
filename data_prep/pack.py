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
its names and hashes to preallocated chunked datasets ``data.chunk_size`` images at a time. Memory does
not grow with the tree: the file names of the scan, the image ids compared for duplicates and the
groups, cases and pixel hashes counted for the summary go through external sorts (data_prep.extsort),
which hold at most ``extsort.RUN_SIZE`` items each and write sorted runs beyond that into a scratch
folder beside the output (``.FILE.h5.HOST~PID~XXXXXXXX.scratch.tmp``, removed when the pack ends).

Idempotent: the root attribute ``inputs_sha256`` digests the format version, the naming patterns,
the chunk size and every ``(id, sha256 of the file bytes)`` in pack order. If the output exists, is
intact (it matches its whole-file checksum ``FILE.h5.sha256`` and has the packed layout) and has the
same digest, nothing is decoded or written ("up to date"); a damaged one is rebuilt (one warning line
says why); ``force=True`` rebuilds.
Atomic: the file is written under a temporary name beside the output, its checksum is written, and
it is renamed at the end; SIGTERM (e.g. ``scancel``) while scanning or writing removes the temporary
file and the scratch folder, and those left by a killed pack are removed by the next one
(microcal_hpc.atomic).
"""
from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from data_prep.extsort import ExternalSort, equal_neighbours
from data_prep.naming import namer_from_config
from data_prep.readers import decode_image, is_image_name, pixel_hash, read_bytes
from microcal_hpc.atomic import (SignalReceived, atomic_path, h5_output, remove_stale_temporaries, scratch_folder,
                                 signal_name, sigterm_raises)
from microcal_hpc.dataset import (FORMAT_NAME, FORMAT_VERSION, STRING_FIELDS, checksum_problem, open_packed,
                                  write_checksum)
from microcal_hpc.errors import ConfigError, InputError, Terminated
from microcal_hpc.joblog import get_logger

log = get_logger("microcal.pack")

SPLIT_FOLDERS = {"train": "Train", "test": "Test"}  # HDF5 group -> folder under ROOT
CLASS_FOLDERS = ("0", "1")
PROGRESS_MIN_FILES = 5000  # show a progress bar from this many images on (progress=None)


class Skipped:
    """Files skipped as not images: how many, and the first three in file order (the warning's examples)."""

    def __init__(self) -> None:
        self.n = 0
        self._first: list[tuple[tuple, str]] = []  # (position in file order, id), the first three

    def add(self, position: tuple, rel: str) -> None:
        self.n += 1
        if len(self._first) < 3 or position < self._first[-1][0]:
            bisect.insort(self._first, (position, rel))
            del self._first[3:]

    @property
    def examples(self) -> list[str]:
        return [rel for _, rel in self._first]


@dataclass
class SplitFiles:
    """The image files of one split in pack order: ``Train/0/*`` sorted by name, then ``Train/1/*``.
    Iterating yields ``(id, label)``; ``id`` is the path relative to the root."""

    folder: str
    names: list[ExternalSort] = field(default_factory=list)  # per label: file names, sorted when iterated
    counts: list[int] = field(default_factory=list)  # per label: number of images

    def __len__(self) -> int:
        return sum(self.counts)

    def __iter__(self) -> Iterator[tuple[str, int]]:
        for label, names in enumerate(self.names):
            prefix = f"{self.folder}/{label}/"
            for name in names:
                yield prefix + name, label


@dataclass
class TreeScan:
    """The image files of a tree, per split, and the files skipped as not images."""

    root: Path
    files: dict[str, SplitFiles] = field(default_factory=dict)
    skipped: Skipped = field(default_factory=Skipped)

    @property
    def n_images(self) -> int:
        return sum(len(v) for v in self.files.values())


class _ScanProblem(InputError):
    """A problem of the tree found by the scan; a duplicate image id met before ``before`` ((label, name) in
    file order; None: everything scanned so far) is reported instead, as a scan in file order meets it first."""

    def __init__(self, message: str, before: tuple[int, str] | None = None):
        super().__init__(message)
        self.before = before


# ------------------------------------------------------------------------------------------------
# Scanning the tree (no file is opened here)


def scan_tree(root: str | os.PathLike, scratch: Callable[[], Path] | None = None) -> TreeScan:
    """Check the folder structure and list the image files; raise InputError on the first problem in file order.

    The file names are sorted, and image ids compared, by external sorts (data_prep.extsort) whose runs go
    into the folder ``scratch()`` returns (the scan's files are read back from there when iterated); without
    ``scratch`` every name is held in memory.
    """
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root}: image folder not found")
    if not root.is_dir():
        raise InputError(f"{root}: not a folder (expected ROOT/{{Train,Test}}/{{0,1}}/*)")
    scan = TreeScan(root=root)
    for index, (split, folder) in enumerate(SPLIT_FOLDERS.items()):
        split_dir = root / folder
        if not split_dir.is_dir():
            problem = "not a folder" if split_dir.exists() else "split folder missing"
            raise InputError(f"{split_dir}: {problem} (expected ROOT/{{Train,Test}}/{{0,1}}/*)")
        scan.files[split] = _scan_split(root, folder, index, scratch, scan.skipped)
    return scan


def _entries(path: Path, before: tuple[int, str] | None = None) -> Iterator[os.DirEntry]:
    """The entries of a folder in the file system's order; _ScanProblem if it cannot be listed."""
    try:
        with os.scandir(path) as it:
            yield from it
    except OSError as e:
        raise _ScanProblem(f"{path}: cannot list folder ({e.strerror or e})", before) from None


def _scan_split(root: Path, folder: str, index: int, scratch, skipped: Skipped) -> SplitFiles:
    """The image files of split folder ``folder`` (number ``index`` in file order); refuses duplicate ids."""
    split_dir = root / folder
    for entry in sorted(_entries(split_dir), key=lambda e: e.name):
        if entry.name in CLASS_FOLDERS or entry.name.startswith("."):
            continue
        if entry.is_dir():
            raise InputError(f"{split_dir / entry.name}: unexpected class folder (only 0 and 1 are allowed)")
        if is_image_name(entry.name):
            raise InputError(f"{split_dir / entry.name}: image outside a class folder (expected {folder}/0 or {folder}/1)")
        skipped.add((index, -1, entry.name), f"{folder}/{entry.name}")
    files = SplitFiles(folder)
    # image id, NUL, label, name: one string sorts like the tuple (id, label, name) (NUL sorts before any
    # character of a name) in half the memory; equal ids are neighbours, in file order
    ids = ExternalSort(scratch)
    try:
        for label in range(len(CLASS_FOLDERS)):
            names, n = _scan_class(root, folder, (index, label), ids, scratch, skipped)
            files.names.append(names)
            files.counts.append(n)
        _refuse_duplicate_ids(root, folder, ids)
    except _ScanProblem as problem:
        _refuse_duplicate_ids(root, folder, ids, before=problem.before)
        raise
    finally:
        ids.close()
    return files


def _scan_class(root: Path, folder: str, where: tuple[int, int], ids: ExternalSort, scratch,
                skipped: Skipped) -> tuple[ExternalSort, int]:
    """The image names of class folder ``where`` = (split index, label) and their number; their ids go to ``ids``."""
    label = where[1]
    class_dir = root / folder / CLASS_FOLDERS[label]
    if not class_dir.is_dir():
        problem = "not a folder" if class_dir.exists() else "class folder missing"
        raise _ScanProblem(f"{class_dir}: {problem} (every split needs 0 and 1)")
    names, n, inner = ExternalSort(scratch), 0, None
    for entry in _entries(class_dir, before=(label, "")):
        name = entry.name
        if entry.is_dir() and not name.startswith("."):
            inner = name if inner is None else min(inner, name)
        elif is_image_name(name):
            names.add(name)
            ids.add(f"{os.path.splitext(name)[0].lower()}\0{label}{name}")
            n += 1
        else:  # hidden entries and other files
            skipped.add(where + (name,), f"{folder}/{label}/{name}")
    if inner is not None:
        raise _ScanProblem(f"{class_dir / inner}: unexpected folder inside a class folder", before=(label, inner))
    if n == 0:
        raise _ScanProblem(f"{class_dir}: class folder holds no images")
    return names, n


def _refuse_duplicate_ids(root: Path, folder: str, ids: ExternalSort, before: tuple[int, str] | None = None) -> None:
    """Raise InputError naming both files of the image id that a scan in file order meets twice first
    (among the files before ``before``): the pair of equal ids whose second file comes first."""
    pairs = ((_file_of(a), _file_of(b)) for a, b in equal_neighbours(ids, key=lambda item: item.partition("\0")[0]))
    first = min((pair for pair in pairs if before is None or pair[1] < before), key=lambda pair: pair[1], default=None)
    if first is not None:
        (label1, name1), (label2, name2) = first
        raise InputError(f"{root / f'{folder}/{label2}/{name2}'}: same image id as "
                         f"{root / f'{folder}/{label1}/{name1}'} "
                         f"(an image name may appear once per split, whatever its extension or label)")


def _file_of(id_item: str) -> tuple[int, str]:
    """The (label, name) of an item of the ids sort: ``"x" NUL "1" "x.PGM"`` -> ``(1, "x.PGM")``."""
    rest = id_item.partition("\0")[2]
    return int(rest[0]), rest[1:]


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
    with sigterm_raises(), scratch_folder(out) as scratch:  # SIGTERM raises, so the scratch folder goes too
        return _pack(root, out, data_cfg, force, progress, scratch, t0)


def _pack(root: Path, out: Path, data_cfg, force: bool, progress: bool | None, scratch, t0: float) -> dict:
    scan = scan_tree(root, scratch)
    if scan.skipped.n:
        examples = ", ".join(scan.skipped.examples) + (", ..." if scan.skipped.n > 3 else "")
        log.warning("skipped %d file(s) that are not images by name: %s", scan.skipped.n, examples)

    remove_stale_temporaries(out.parent)  # left by a killed pack, even if the output is up to date
    if out.exists() and not force:
        unchanged = _up_to_date(scan, out, data_cfg, t0)
        if unchanged:
            return unchanged

    show = progress if progress is not None else scan.n_images >= PROGRESS_MIN_FILES
    log.info("packing %d images from %s into %s", scan.n_images, root, out)
    try:
        with atomic_path(out) as tmp:
            summary = _write_packed(scan, tmp, data_cfg, show, scratch)
            write_checksum(tmp, out)  # before the rename: a packed file never lacks its checksum
    except SignalReceived as e:
        raise Terminated(f"{out}: terminated by {signal_name(e.signum)} while packing; nothing written",
                         e.signum) from None
    seconds = time.perf_counter() - t0
    summary.update(path=str(out), status="packed", seconds=round(seconds, 3),
                   images_per_second=round(scan.n_images / seconds, 1) if seconds > 0 else None,
                   skipped=scan.skipped.n)
    log.info(format_summary(summary))
    return summary


def _up_to_date(scan: TreeScan, out: Path, data_cfg, t0: float) -> dict | None:
    """The summary of an intact existing ``out`` packed from the same inputs; else None (saying why)."""
    existing, problem = _existing_file(out)
    if problem:
        log.warning("%s: %s; rebuilding it", out, problem)
        return None
    if inputs_digest(_hash_files(scan), data_cfg) != existing["inputs_sha256"]:
        log.info("inputs changed since %s was written: repacking", out)
        return None
    seconds = time.perf_counter() - t0
    log.info("%s is up to date (%d input files unchanged, checked in %.2f s); nothing to do",
             out, scan.n_images, seconds)
    return dict(existing, path=str(out), status="up to date", seconds=round(seconds, 3), skipped=scan.skipped.n)


class _Images:
    """Reads the images in pack order: decodes and checks each (every image has the first one's size), hashes
    and names it. :meth:`tally` counts what the summary reports: distinct groups and cases per split and
    distinct pixel hashes overall, by external sorts (memory does not grow with their number)."""

    def __init__(self, root: Path, data_cfg, scratch):
        self.root, self.scratch = str(root), scratch
        self.namer = namer_from_config(data_cfg)
        self.digest = _digest_start(data_cfg)
        self.shape: tuple[int, int] | None = None
        self.first_path = ""
        self.pixels = ExternalSort(scratch, unique=True)  # 16-byte prefixes of pixel hashes, to count duplicates
        self.groups, self.cases = ExternalSort(scratch, unique=True), ExternalSort(scratch, unique=True)

    def split_counts(self) -> tuple[int, int]:
        """The numbers of distinct groups and cases tallied since the last call (in the split just written)."""
        counts = self.groups.count(), self.cases.count()
        self.groups.close()
        self.cases.close()
        return counts

    def read(self, rel: str) -> tuple[np.ndarray, tuple[str, ...]]:
        """The pixels of image ``rel`` and its STRING_FIELDS values (id, group, case, sha256, pixel hash)."""
        path = os.path.join(self.root, rel)
        data = read_bytes(path)
        img = decode_image(data, path)
        if self.shape is None:
            self.shape, self.first_path = img.shape, path
        elif img.shape != self.shape:
            raise InputError(f"{path}: image is {img.shape[0]}x{img.shape[1]} (HxW), expected "
                             f"{self.shape[0]}x{self.shape[1]} like {self.first_path}")
        sha = hashlib.sha256(data).hexdigest()
        _digest_add(self.digest, rel, sha)
        return img, (rel, *self.namer(rel), sha, pixel_hash(img))

    def tally(self, groups, cases, pixel_hashes) -> None:
        """Add a batch of images' groups, cases and pixel hashes to the distinct counts."""
        self.groups.extend(groups)
        self.cases.extend(cases)
        self.pixels.extend(bytes.fromhex(h[:32]) for h in pixel_hashes)


def _write_packed(scan: TreeScan, tmp: Path, data_cfg, show_progress: bool, scratch) -> dict:
    """Write every split to ``tmp`` chunk by chunk; return the summary fields."""
    from tqdm import tqdm

    images = _Images(scan.root, data_cfg, scratch)
    counts: dict[str, dict[str, int]] = {}
    n_groups: dict[str, int] = {}
    n_cases: dict[str, int] = {}
    bar = tqdm(total=scan.n_images, unit="img", desc="pack", file=sys.stderr, disable=not show_progress,
               mininterval=0.5 if sys.stderr.isatty() else 10.0, dynamic_ncols=True)
    with bar, h5_output(tmp) as f:
        for split in SPLIT_FOLDERS:
            counts[split] = _write_split(f.create_group(split), scan.files[split], images, int(data_cfg.chunk_size),
                                         bar)
            n_groups[split], n_cases[split] = images.split_counts()
        inputs_sha256 = images.digest.hexdigest()
        _write_attributes(f, scan, images.shape, counts, inputs_sha256, data_cfg)
    return {"counts": counts, "image_shape": list(images.shape), "groups": n_groups, "cases": n_cases,
            "duplicate_images": scan.n_images - images.pixels.count(), "inputs_sha256": inputs_sha256}


def _write_split(g, files: SplitFiles, images: _Images, chunk: int, bar) -> dict[str, int]:
    """Write one split's datasets ``chunk`` images at a time; return its counts per label."""
    import h5py

    n = len(files)
    rows = min(chunk, n)
    labels = g.create_dataset("labels", shape=(n,), dtype=np.int8)
    columns = {name: g.create_dataset(name, shape=(n,), dtype=h5py.string_dtype("utf-8"), chunks=(rows,))
               for name in STRING_FIELDS}
    pixels = buf = None
    todo = iter(files)
    for start in range(0, n, rows):
        batch = list(itertools.islice(todo, rows))
        described = []
        for j, (rel, _) in enumerate(batch):
            img, fields = images.read(rel)
            if pixels is None:
                pixels = g.create_dataset("images", shape=(n,) + img.shape, dtype=np.uint8, chunks=(rows,) + img.shape)
                buf = np.empty((rows,) + img.shape, dtype=np.uint8)
            buf[j] = img
            described.append(fields)
        stop = start + len(batch)
        pixels[start:stop] = buf[:len(batch)]
        labels[start:stop] = np.array([label for _, label in batch], dtype=np.int8)
        values = dict(zip(STRING_FIELDS, zip(*described)))
        for name, column in columns.items():
            column[start:stop] = np.array(values[name], dtype=object)
        images.tally(values["groups"], values["cases"], values["pixel_hash"])
        bar.update(len(batch))
    return {"0": files.counts[0], "1": files.counts[1], "total": n}


def _write_attributes(f, scan: TreeScan, shape, counts: dict, inputs_sha256: str, data_cfg) -> None:
    from microcal_hpc import __version__

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
