"""Bad input trees through the real CLI: exit 2, one-line error naming the file or folder, no output file."""
from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_helpers import cli_env, write_pgm

SHAPE = (8, 8)


def png_bytes(img: np.ndarray, mode: str | None = None) -> bytes:
    b = io.BytesIO()
    im = Image.fromarray(img)
    (im.convert(mode) if mode else im).save(b, "PNG")
    return b.getvalue()


@pytest.fixture
def tree(tmp_path) -> Path:
    """A valid 8x8 tree: 2 images per class and split, PGM and PNG."""
    root = tmp_path / "tree"
    rng = np.random.default_rng(0)
    for split in ("Train", "Test"):
        for label in ("0", "1"):
            write_pgm(root / split / label / f"{split[:2]}{label}a.pgm", rng.integers(0, 256, SHAPE, dtype=np.uint8))
            (root / split / label / f"{split[:2]}{label}b.png").write_bytes(
                png_bytes(rng.integers(0, 256, SHAPE, dtype=np.uint8)))
    return root


def run_pack(root: Path, out: Path) -> subprocess.CompletedProcess:
    env = cli_env()
    return subprocess.run([sys.executable, "-m", "jobs", "pack", "--data", str(root), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=60)


def grey(value: int = 0, shape=SHAPE) -> np.ndarray:
    return np.full(shape, value, dtype=np.uint8)


def truncated_pgm(root):
    p = root / "Train/1/Tr1a.pgm"
    p.write_bytes(p.read_bytes()[:-10])
    return p, "truncated PGM: 54 of 64 pixel bytes present"


def truncated_png(root):
    p = root / "Test/0/Te0b.png"
    p.write_bytes(p.read_bytes()[:-20])  # Pillow alone would still decode this one
    return p, "truncated PNG (the file does not end with an IEND chunk)"


def truncated_tiff(root):
    p = root / "Train/0/cut.tif"
    b = io.BytesIO()
    Image.fromarray(grey(4, (40, 8))).save(b, "TIFF")
    p.write_bytes(b.getvalue()[:150])  # header and tags ahead of the pixels are kept
    return p, "cannot decode image (image file is truncated"


def garbage_png(root):
    p = root / "Test/0/junk.png"
    p.write_bytes(b"this is not a picture")
    return p, "not a readable image"


def rgb_png(root):
    p = root / "Train/0/colour.png"
    p.write_bytes(png_bytes(np.zeros(SHAPE + (3,), np.uint8)))
    return p, "RGB colour image (Pillow mode RGB); expected 8-bit greyscale"


def png_16bit(root):
    p = root / "Test/1/deep.png"
    p.write_bytes(png_bytes(np.full(SHAPE, 1000, np.uint16)))
    return p, "16-bit greyscale image (Pillow mode I;16)"


def pgm_16bit(root):
    p = root / "Test/1/deep.pgm"
    p.write_bytes(b"P5\n8 8\n65535\n" + np.full(SHAPE, 1000, ">u2").tobytes())
    return p, "16-bit greyscale PGM (maxval 65535)"


def palette_png(root):
    p = root / "Train/1/pal.png"
    p.write_bytes(png_bytes(grey(3), mode="P"))
    return p, "palette (colour-mapped) image"


def bilevel_png(root):
    p = root / "Train/1/bw.png"
    p.write_bytes(png_bytes(grey(255), mode="1"))
    return p, "1-bit black-and-white image"


def other_size(root):
    p = root / "Test/1/small.pgm"
    write_pgm(p, grey(5, (6, 8)))
    return p, "image is 6x8 (HxW), expected 8x8 like"


def same_stem_two_formats(root):
    shutil.copy(root / "Train/0/Tr0a.pgm", root / "Train/0/Tr0a.png")
    return root / "Train/0/Tr0a.png", "same image id as"


def same_name_other_case(root):
    write_pgm(root / "Test/0/TE0A.PGM", grey(9))  # sorts first, so the original is the repeat
    return root / "Test/0/Te0a.pgm", f"same image id as {root / 'Test/0/TE0A.PGM'}"


def same_name_both_labels(root):
    shutil.copy(root / "Train/0/Tr0a.pgm", root / "Train/1/Tr0a.pgm")
    return root / "Train/1/Tr0a.pgm", f"same image id as {root / 'Train/0/Tr0a.pgm'}"


def missing_root(root):
    shutil.rmtree(root)
    return root, "image folder not found"


def missing_train(root):
    shutil.rmtree(root / "Train")
    return root / "Train", "split folder missing"


def missing_test(root):
    shutil.rmtree(root / "Test")
    return root / "Test", "split folder missing"


def extra_class_folder(root):
    write_pgm(root / "Train/2/x.pgm", grey())
    return root / "Train/2", "unexpected class folder (only 0 and 1 are allowed)"


def missing_class_folder(root):
    shutil.rmtree(root / "Test/1")
    return root / "Test/1", "class folder missing"


def empty_class_folder(root):
    for p in (root / "Test/0").iterdir():
        p.unlink()
    (root / "Test/0/notes.txt").write_text("only notes here")
    return root / "Test/0", "class folder holds no images"


def image_outside_class_folder(root):
    write_pgm(root / "Train/loose.pgm", grey())
    return root / "Train/loose.pgm", "image outside a class folder"


def nested_folder(root):
    write_pgm(root / "Train/0/more/x.pgm", grey())
    return root / "Train/0/more", "unexpected folder inside a class folder"


CASES = [truncated_pgm, truncated_png, truncated_tiff, garbage_png, rgb_png, png_16bit, pgm_16bit, palette_png, bilevel_png,
         other_size, same_stem_two_formats, same_name_other_case, same_name_both_labels, missing_root,
         missing_train, missing_test, extra_class_folder, missing_class_folder, empty_class_folder,
         image_outside_class_folder, nested_folder]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_fails_with_one_line_and_no_output(tree, tmp_path, damage):
    path, problem = damage(tree)
    out = tmp_path / "out" / "packed.h5"
    r = run_pack(tree, out)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors == r.stderr.strip().splitlines()[-1:], r.stderr
    assert errors[0].startswith(f"microcal-hpc pack: error: {path}: "), errors[0]
    assert problem in errors[0]
    assert not out.exists()
    leftovers = [p.name for p in out.parent.iterdir() if p.name != "packed.pack.log"] if out.parent.exists() else []
    assert leftovers == []


@pytest.mark.timeout(60)
def test_non_image_files_are_skipped_with_one_warning(tree, tmp_path):
    for junk in ("Train/0/notes.txt", "Train/1/.DS_Store", "Test/0/Thumbs.db", "Test/1/._Te1a.pgm", "Test/list.csv"):
        (tree / junk).write_bytes(b"\x00junk")
    out = tmp_path / "packed.h5"
    r = run_pack(tree, out)
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if "skipped" in line]
    assert len(warnings) == 1 and "skipped 5 file(s) that are not images by name" in warnings[0]
    import h5py

    with h5py.File(out) as f:
        assert f["train"]["images"].shape == (4, 8, 8) and f["test"]["images"].shape == (4, 8, 8)


@pytest.mark.timeout(60)
def test_cli_needs_a_data_root(tmp_path):
    env = cli_env()
    r = subprocess.run([sys.executable, "-m", "jobs", "pack", "--out", str(tmp_path / "p.h5")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip() == "microcal-hpc pack: error: data.root is empty: give --data ROOT or set data.root"
    assert not (tmp_path / "p.h5").exists()
