"""Decode one image file into an 8-bit greyscale array ``uint8 (H, W)``, or refuse it with one line.

Accepted: anything Pillow opens as mode ``L`` (8-bit greyscale): PGM (P5), PNG, TIFF, BMP, JPEG ...
Binary PGM with a plain header (``P5 W H 255``, no comments) is decoded directly with NumPy, which
gives the same pixels as Pillow several times faster; every other file goes through Pillow.

Refused with :class:`InputError` (message ``"PATH: problem"``): files that cannot be decoded
(unknown format, truncated), and every mode other than ``L``: RGB/RGBA colour, palette (``P``),
greyscale with alpha (``LA``), 1-bit (``1``: bilevel, not a grey-level patch), 16-bit and 32-bit
greyscale (``I;16``, ``I``, ``F``), and multi-frame files. Nothing is converted silently.
"""
from __future__ import annotations

import hashlib
import io
import os
import re

import numpy as np

from microcal_hpc.errors import InputError

# File name extensions (lower case) that are read as images; any other file is not an image and is skipped.
IMAGE_EXTENSIONS = frozenset({".pgm", ".pnm", ".pbm", ".ppm", ".png", ".tif", ".tiff", ".bmp",
                              ".jpg", ".jpeg", ".gif", ".webp"})

# "P5", width, height, maxval, then exactly one whitespace byte before the pixels (Netpbm format).
_PGM_HEADER = re.compile(rb"\AP5\s+(\d+)\s+(\d+)\s+(\d+)\s")

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk type and its CRC: the last 8 bytes of every PNG

_MODE_NAMES = {
    "1": "1-bit black-and-white",
    "P": "palette (colour-mapped)",
    "PA": "palette with alpha",
    "RGB": "RGB colour",
    "RGBA": "RGBA colour",
    "RGBX": "RGB colour",
    "CMYK": "CMYK colour",
    "YCbCr": "YCbCr colour",
    "LAB": "Lab colour",
    "HSV": "HSV colour",
    "LA": "greyscale with alpha",
    "La": "greyscale with alpha",
    "I;16": "16-bit greyscale",
    "I;16B": "16-bit greyscale",
    "I;16L": "16-bit greyscale",
    "I;16N": "16-bit greyscale",
    "I": "32-bit integer greyscale",
    "F": "32-bit float greyscale",
}


def is_image_name(name: str) -> bool:
    """True if the file name has an image extension (case-insensitive) and is not hidden."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def decode_image(data: bytes, name: str | os.PathLike = "<bytes>") -> np.ndarray:
    """Decode the bytes of one image file into ``uint8 (H, W)``; ``name`` is used in error messages."""
    if data[:2] == b"P5":
        m = _PGM_HEADER.match(data)
        if m:
            width, height, maxval = (int(g) for g in m.groups())
            if maxval > 255:
                raise InputError(f"{name}: 16-bit greyscale PGM (maxval {maxval}); expected 8-bit greyscale")
            if maxval == 255 and width > 0 and height > 0:
                start = m.end()
                n = width * height
                if len(data) - start < n:
                    raise InputError(f"{name}: truncated PGM: {len(data) - start} of {n} pixel bytes present")
                return np.frombuffer(data, dtype=np.uint8, count=n, offset=start).reshape(height, width).copy()
            # other maxval (Pillow rescales it) or a degenerate size: let Pillow decide
    return _decode_with_pillow(data, name)


def _decode_with_pillow(data: bytes, name: str | os.PathLike) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if data[:8] == _PNG_SIGNATURE and not data.endswith(_PNG_END):
        # Pillow decodes a PNG cut after its pixel data without complaint; a cut file is still damaged
        raise InputError(f"{name}: truncated PNG (the file does not end with an IEND chunk)")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a readable image (unknown or damaged format)") from None
    except Exception as e:  # Pillow raises many types for damaged headers
        raise InputError(f"{name}: cannot decode image ({_one_line(e)})") from None
    with im:
        if im.mode != "L":
            what = _MODE_NAMES.get(im.mode, f"mode {im.mode}")
            raise InputError(f"{name}: {what} image (Pillow mode {im.mode}); expected 8-bit greyscale (mode L)")
        frames = getattr(im, "n_frames", 1)
        if frames != 1:
            raise InputError(f"{name}: image has {frames} frames; expected a single 8-bit greyscale image")
        try:
            im.load()
        except Exception as e:
            raise InputError(f"{name}: cannot decode image ({_one_line(e)})") from None
        arr = np.asarray(im, dtype=np.uint8)
    if arr.ndim != 2 or arr.size == 0:
        raise InputError(f"{name}: decoded to shape {arr.shape}; expected a non-empty 2-D greyscale image")
    return np.ascontiguousarray(arr)


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of one file; InputError naming the file if it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError as e:
        raise InputError(f"{path}: cannot read file ({e.strerror or e})") from None


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read and decode one image file into ``uint8 (H, W)``."""
    return decode_image(read_bytes(path), path)


def pixel_hash(image: np.ndarray) -> str:
    """sha256 of the decoded pixels, shape included: equal for the same picture in any file format."""
    return pixel_hashes(np.asarray(image)[None])[0]


def pixel_hashes(images: np.ndarray) -> list[str]:
    """:func:`pixel_hash` of every image of ``images`` (N, H, W), about twice as fast as one call per image."""
    arr = np.ascontiguousarray(images, dtype=np.uint8)
    prefix = hashlib.sha256(f"uint8 {'x'.join(str(s) for s in arr.shape[1:])}\n".encode("ascii"))
    out = []
    for image in arr:
        h = prefix.copy()
        h.update(image.data)
        out.append(h.hexdigest())
    return out


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
