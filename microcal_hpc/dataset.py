"""Read the packed HDF5 file that the pack step writes (the only input of every later job).

Layout (format ``microcal-hpc-packed``, version 1)::

    /train/images      uint8 (N, H, W), chunked     /test/...  the same for the official Test set
    /train/labels      int8 0/1
    /train/ids         UTF-8 str, path relative to the image root (e.g. "Train/1/0033f1_4_0.pgm_2.pgm")
    /train/groups      UTF-8 str, source mammogram id (e.g. "0033f1_4_0")
    /train/cases       UTF-8 str, case id (e.g. "0033")
    /train/sha256      UTF-8 str, sha256 of the file's bytes
    /train/pixel_hash  UTF-8 str, sha256 of the decoded pixels (shape + bytes; data_prep.readers.pixel_hash)
    root attrs: format, format_version, image_shape, counts (JSON), source_root, created, package_version

Beside it, ``FILE.h5.sha256`` holds the sha256 of the whole file in ``sha256sum`` format
("HEX  FILE.h5"): written by the pack step before the file is renamed into place, checked by its
up-to-date test and by ``microcal-hpc inspect --verify`` (``sha256sum -c`` checks it too).

Damage is reported as :class:`InputError` naming the file (:func:`open_packed`): a file that differs
from its recorded checksum (checked before HDF5 reads it, by default for files up to 16 MB: about 4,000
patches), a structure that is not the layout above, an HDF5 error while reading, and images whose pixels
no longer match their ``pixel_hash`` (:func:`verify_pixels`; :func:`load_split` checks every image it
loads, about 5 µs per image).
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microcal_hpc.errors import InputError, MicrocalError, os_reason

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


# what h5py raises on a damaged file (besides OSError): unreadable objects, names, strings, shapes
DAMAGE_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, UnicodeDecodeError)
STRING_FIELDS = ("ids", "groups", "cases", "sha256", "pixel_hash")
CHECKSUM_AUTO_MAX_BYTES = 16 << 20  # open_packed checks the whole-file checksum of files up to this size


def damaged(path: str | os.PathLike, what: str, error: BaseException, remedy: str) -> InputError:
    """The one-line error for a damaged file: ``PATH: damaged WHAT (first line of the error); REMEDY``."""
    detail = (str(error).strip().splitlines() or [""])[0] or type(error).__name__
    return InputError(f"{path}: damaged {what} ({type(error).__name__}: {detail}); {remedy}")


@functools.lru_cache(maxsize=None)
def _checked_file_class():
    import h5py

    class CheckedFile(h5py.File):
        """An h5py.File whose ``with`` block turns HDF5 errors into one InputError naming the file."""

        what = remedy = ""

        def __exit__(self, kind, error, tb):
            path = self.filename
            super().__exit__(kind, error, tb)
            if isinstance(error, DAMAGE_ERRORS) and not isinstance(error, MicrocalError):
                raise damaged(path, self.what, error, self.remedy) from None

    return CheckedFile


def open_checked_h5(path: str | os.PathLike, format_name: str, format_version: int, what: str, remedy: str):
    """Open an HDF5 file of this project read-only, checking its ``format`` and ``format_version``
    attributes; raise InputError naming the file otherwise (``what``: e.g. "packed data file";
    ``remedy``: what to run to make or remake it). An HDF5 error inside the file's ``with`` block
    becomes an InputError too ("damaged ...")."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: {what} not found ({remedy} first)")
    try:
        f = _checked_file_class()(p, "r")
    except OSError as e:
        raise InputError(f"{p}: not a readable HDF5 file ({e})") from None
    f.what, f.remedy = what, f"{remedy} again"
    try:
        fmt, version = f.attrs.get("format"), f.attrs.get("format_version")
    except DAMAGE_ERRORS as e:
        f.close()
        raise damaged(p, what, e, f.remedy) from None
    if fmt != format_name:
        f.close()
        raise InputError(f"{p}: not a microcal-hpc {what} (attribute 'format' missing or different)")
    if version is None or int(version) != format_version:
        f.close()
        raise InputError(f"{p}: {what} format version {version}, this version reads {format_version}; {remedy} again")
    return f


def open_packed(path: str | os.PathLike, verify: bool | None = None):
    """Open a packed file read-only, checking that it is one and that its structure is intact; raise
    InputError otherwise. Use it in a ``with`` block: HDF5 errors inside it become InputError too.

    ``verify``: first compare the file with its recorded whole-file checksum, if it has one (None: only
    files up to CHECKSUM_AUTO_MAX_BYTES, where it costs a few milliseconds, done once per process).
    A damaged file is then refused before HDF5 parses it: HDF5 can crash on some damaged metadata.
    """
    p = Path(path)
    if verify or (verify is None and cheap_to_verify(p)):
        problem = _checksum_mismatch(p)
        if problem:
            raise InputError(f"{p}: damaged packed data file ({problem}); run `microcal-hpc pack` again")
    f = open_checked_h5(p, FORMAT_NAME, FORMAT_VERSION, "packed data file", "run `microcal-hpc pack`")
    try:
        _check_structure(f)
    except BaseException:
        f.close()
        raise
    return f


def cheap_to_verify(path: str | os.PathLike) -> bool:
    """True for a packed file small enough (CHECKSUM_AUTO_MAX_BYTES) that checking its checksum and pixel
    hashes takes milliseconds: under 2% of any job that reads it. Jobs verify such files by default."""
    try:
        return Path(path).stat().st_size <= CHECKSUM_AUTO_MAX_BYTES
    except OSError:
        return False


def _check_structure(f) -> None:
    """Every split has images (uint8, N x image_shape) and N labels, ids, groups, cases and hashes."""
    def bad(problem: str) -> InputError:
        return InputError(f"{f.filename}: damaged packed data file ({problem}); {f.remedy}")

    try:
        shape = tuple(int(s) for s in f.attrs["image_shape"])
        for split in SPLITS:
            g = f[split]
            images = g["images"]
            n = images.shape[0]
            if images.dtype != np.uint8 or tuple(images.shape[1:]) != shape:
                raise bad(f"/{split}/images is {images.dtype} {images.shape}, expected uint8 (N, {shape[0]}, {shape[1]})")
            for name in ("labels",) + STRING_FIELDS:
                if g[name].shape != (n,):
                    raise bad(f"/{split}/{name} has shape {g[name].shape}, expected ({n},) like /{split}/images")
    except DAMAGE_ERRORS as e:
        raise damaged(f.filename, f.what, e, f.remedy) from None


def load_split(path: str | os.PathLike, split: str, images: bool = True, verify: bool = True) -> Split:
    """Load one split (``train`` or ``test``) of a packed file.

    ``verify``: check the loaded images against their recorded pixel hashes (:func:`verify_pixels`).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    with open_packed(path) as f:
        g = f[split]
        imgs = g["images"][()] if images else np.zeros((0,) + g["images"].shape[1:], np.uint8)
        loaded = Split(
            name=split,
            images=imgs,
            labels=g["labels"][()].astype(np.int64),
            ids=_strings(g["ids"]),
            groups=_strings(g["groups"]),
            cases=_strings(g["cases"]),
            pixel_hash=_strings(g["pixel_hash"]),
        )
    if images and verify:
        verify_pixels(path, split, loaded.images, loaded.pixel_hash)
    return loaded


def verify_pixels(path: str | os.PathLike, split: str, images: np.ndarray, pixel_hashes, start: int = 0) -> None:
    """Check ``images`` (read from ``/split/images[start:start + len(images)]`` of the packed file ``path``)
    against their recorded ``pixel_hashes`` (the same rows of ``/split/pixel_hash``, str); raise InputError
    naming the first image that differs (split, index, id).

    Costs about 5 µs per 60x60 image (one sha256 each). Streaming readers call it once per chunk.
    """
    from data_prep.readers import pixel_hashes as compute

    for offset, (actual, expected) in enumerate(zip(compute(images), pixel_hashes)):
        if actual != str(expected):
            index = start + offset
            raise InputError(f"{path}: damaged packed data file: image {index} of {split} ({_image_id(path, split, index)}) "
                             f"does not match its recorded pixel hash; run `microcal-hpc pack` again")


def _image_id(path, split: str, index: int) -> str:
    try:
        with open_packed(path) as f:
            return f[split]["ids"].asstr()[index]
    except MicrocalError:
        return "id unreadable"


def split_length(path: str | os.PathLike, split: str) -> int:
    """Number of images in one split, without reading them."""
    with open_packed(path) as f:
        return int(f[split]["labels"].shape[0])


def read_images(path: str | os.PathLike, split: str, start: int, stop: int) -> np.ndarray:
    """Read images ``start:stop`` of one split (uint8, (n, H, W)) without loading the rest (not verified:
    pass them to :func:`verify_pixels` with their pixel hashes to check them)."""
    with open_packed(path) as f:
        return f[split]["images"][start:stop]


def checksum_path(path: str | os.PathLike) -> Path:
    """The whole-file checksum beside a packed file: ``FILE.h5`` -> ``FILE.h5.sha256``."""
    p = Path(path)
    return p.with_name(p.name + ".sha256")


def write_checksum(data: str | os.PathLike, final: str | os.PathLike) -> None:
    """Write the sha256 of the file ``data`` (e.g. a temporary name) as the checksum of ``final``."""
    from microcal_hpc.atomic import write_text

    write_text(checksum_path(final), f"{file_sha256(data)}  {Path(final).name}\n")


def checksum_problem(path: str | os.PathLike) -> str | None:
    """None if ``path`` matches its recorded whole-file checksum, else what is wrong, in a few words."""
    if not checksum_path(path).is_file():
        return f"no checksum recorded ({checksum_path(path).name} missing)"
    return _checksum_mismatch(Path(path))


def _checksum_mismatch(path: Path) -> str | None:
    """What is wrong with the file or its recorded checksum (None: they match, or none is recorded)."""
    recorded = checksum_path(path)
    try:
        fields = recorded.read_text(encoding="utf-8").split()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        return f"checksum file {recorded.name} unreadable ({e})"
    if not fields or len(fields[0]) != 64:
        return f"checksum file {recorded.name} is not in sha256sum format"
    try:
        st = path.stat()
        actual = _sha256_of(str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({os_reason(e)})") from None
    if actual != fields[0].lower():
        return f"its sha256 differs from the one recorded in {recorded.name} when it was written"
    return None


@functools.lru_cache(maxsize=16)
def _sha256_of(path: str, inode: int, size: int, mtime_ns: int) -> str:
    """file_sha256, once per version of a file in a process (the job reads each split through open_packed)."""
    return file_sha256(path)


def file_sha256(path: str | os.PathLike, block: int = 1 << 20) -> str:
    """sha256 of a file's bytes, streamed."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(block), b""):
            h.update(chunk)
    return h.hexdigest()
