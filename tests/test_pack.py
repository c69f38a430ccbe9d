"""The pack step: readers, naming, real-data packing, synthetic round trips, idempotence, atomicity, streaming."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from data_prep.naming import Namer, group_and_case, namer_from_config
from data_prep.pack import pack_tree, scan_tree
from data_prep.readers import decode_image, pixel_hash, read_image
from data_prep.pack import log_path_for, pack_job
from microcal_hpc.config import Config, DataConfig
from microcal_hpc.dataset import load_split, read_images, split_length

from cli_helpers import cli_env, wait_while_running, write_pgm


def raw_pgm_tree(root: Path, n_per_class: int, shape=(60, 60), seed=0) -> Path:
    """A tree of raw P5 files written without Pillow (fast for thousands of files)."""
    rng = np.random.default_rng(seed)
    for split in ("Train", "Test"):
        for label in (0, 1):
            for i in range(n_per_class):
                write_pgm(root / split / str(label) / f"{i // 4:04d}{'s' if label == 0 else 'm'}1_0_0.pgm_{i % 4 + 1}.pgm",
                          rng.integers(0, 256, size=shape, dtype=np.uint8))
    return root


def pillow_pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.mode == "L"
        return np.asarray(im, dtype=np.uint8)


# ------------------------------------------------------------------------------------------------
# Readers and naming


def encoded(img: np.ndarray, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(img).save(b, fmt, **kw)
    return b.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "PPM"])
def test_readers_decode_lossless_greyscale_formats_exactly(fmt):
    img = np.random.default_rng(1).integers(0, 256, size=(13, 17), dtype=np.uint8)
    out = decode_image(encoded(img, fmt), f"x.{fmt.lower()}")
    assert out.dtype == np.uint8 and out.shape == (13, 17)
    np.testing.assert_array_equal(out, img)


def test_readers_accept_greyscale_jpeg_like_pillow():
    img = np.random.default_rng(2).integers(0, 256, size=(16, 16), dtype=np.uint8)
    data = encoded(img, "JPEG")
    np.testing.assert_array_equal(decode_image(data, "x.jpg"), np.asarray(Image.open(io.BytesIO(data))))


@pytest.mark.parametrize("header", [
    b"P5\n7 5\n255\n", b"P5 7 5 255 ", b"P5\n# a comment\n7 5\n255\n", b"P5\r\n7\t5\r\n255\n", b"P5\n7 5\n100\n",
])
def test_pgm_fast_path_agrees_with_pillow(header):
    pixels = np.random.default_rng(3).integers(0, 101, size=(5, 7), dtype=np.uint8)
    data = header + pixels.tobytes() + b"trailing"
    expected = np.asarray(Image.open(io.BytesIO(data)), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(data, "x.pgm"), expected)


def test_pixel_hash_depends_on_pixels_and_shape_not_format():
    img = np.arange(24, dtype=np.uint8).reshape(4, 6)
    assert pixel_hash(decode_image(encoded(img, "PNG"))) == pixel_hash(decode_image(encoded(img, "PPM"))) == pixel_hash(img)
    assert pixel_hash(img) != pixel_hash(img.reshape(6, 4))
    other = img.copy()
    other[0, 0] += 1
    assert pixel_hash(img) != pixel_hash(other)


def test_naming_defaults_and_fallbacks():
    cfg = DataConfig()
    assert group_and_case("0033f1_4_0.pgm_2.pgm", cfg) == ("0033f1_4_0", "0033")
    assert group_and_case("Train/1/0227u1_3_1_1.pgm_5.pgm", cfg) == ("0227u1_3_1_1", "0227")
    assert group_and_case("0002s1_0_0.pgm_1.png", cfg) == ("0002s1_0_0", "0002")
    # no match: the stem is the group; a group without 4 leading digits is its own case
    assert group_and_case("patch.png", cfg) == ("patch", "patch")
    assert group_and_case("12x_a.pgm_3.pgm", cfg) == ("12x_a", "12x_a")
    custom = Namer(r"^(?P<group>[a-z0-9]+)-\d+", r"(?P<case>p\d+)")
    assert custom("p7case-3.png") == ("p7case", "p7")
    cfg2 = DataConfig(case_pattern=r"^(?P<case>\d{4}[a-z])")
    assert namer_from_config(cfg2)("0033f1_4_0.pgm_2.pgm") == ("0033f1_4_0", "0033f")


# ------------------------------------------------------------------------------------------------
# Real data


@pytest.mark.realdata
def test_real_data_pack_matches_the_files(packed_real, real_root, real_manifest):
    manifest = {}
    for line in real_manifest.read_text().splitlines():
        sha, name = line.split(maxsplit=1)
        manifest[name.split("/", 1)[1]] = sha  # drop the leading "Mammography_micro/"
    expected_counts = {"train": (330, 306), "test": (84, 77)}
    expected_groups = {"train": 252, "test": 63}
    seen = 0
    for split in ("train", "test"):
        s = load_split(packed_real, split)
        assert s.images.dtype == np.uint8 and s.images.shape == (sum(expected_counts[split]), 60, 60)
        assert (int((s.labels == 0).sum()), int((s.labels == 1).sum())) == expected_counts[split]
        assert list(s.ids) == sorted(s.ids)
        assert len(set(s.groups)) == expected_groups[split]
        with h5py.File(packed_real) as f:
            shas = f[split]["sha256"].asstr()[()]
            assert f[split]["labels"].dtype == np.int8
            assert f[split]["images"].chunks == (1024 if len(s) > 1024 else len(s), 60, 60)
        for i, rel in enumerate(s.ids):
            path = real_root / rel
            assert int(rel.split("/")[1]) == s.labels[i]
            np.testing.assert_array_equal(s.images[i], pillow_pixels(path))
            assert shas[i] == manifest[rel]
            assert s.pixel_hash[i] == pixel_hash(s.images[i])
            seen += 1
    assert seen == len(manifest) == 797
    with h5py.File(packed_real) as f:
        assert f.attrs["format"] == "microcal-hpc-packed" and int(f.attrs["format_version"]) == 1
        assert list(f.attrs["image_shape"]) == [60, 60]
        assert json.loads(f.attrs["counts"]) == {"train": {"0": 330, "1": 306, "total": 636},
                                                 "test": {"0": 84, "1": 77, "total": 161}}
        assert Path(f.attrs["source_root"]) == real_root.resolve()
        assert f.attrs["created"] and f.attrs["package_version"] and len(f.attrs["inputs_sha256"]) == 64
    assert split_length(packed_real, "test") == 161
    np.testing.assert_array_equal(read_images(packed_real, "train", 10, 13), load_split(packed_real, "train").images[10:13])


# ------------------------------------------------------------------------------------------------
# Synthetic round trips


@pytest.mark.parametrize("fmt", ["png", "pgm", "tif"])
def test_synthetic_tree_round_trips(make_tree, tmp_path, fmt):
    root = make_tree(counts={"Train": (9, 7), "Test": (3, 5)}, shape=(48, 48), fmt=fmt)
    out = tmp_path / "out" / "packed.h5"
    cfg = DataConfig(chunk_size=4)  # several chunks and a partial last one
    summary = pack_tree(root, out, cfg)
    assert summary["status"] == "packed" and summary["image_shape"] == [48, 48]
    assert summary["counts"]["train"] == {"0": 9, "1": 7, "total": 16}
    namer = namer_from_config(cfg)
    for split, folder in (("train", "Train"), ("test", "Test")):
        s = load_split(out, split)
        files = sorted(p.relative_to(root).as_posix() for p in (root / folder).rglob(f"*.{fmt}"))
        assert list(s.ids) == files
        assert s.images.shape == (len(files), 48, 48)
        for i, rel in enumerate(files):
            np.testing.assert_array_equal(s.images[i], pillow_pixels(root / rel))
            assert s.labels[i] == int(rel.split("/")[1])
            assert (s.groups[i], s.cases[i]) == namer(rel)
    with h5py.File(out) as f:
        assert f["train"]["images"].chunks == (4, 48, 48)


def test_mixed_formats_and_skipped_files(tmp_path, caplog):
    root = tmp_path / "tree"
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, size=(8, 8, 8), dtype=np.uint8)
    for k, split in enumerate(("Train", "Test")):
        for label in (0, 1):
            d = root / split / str(label)
            d.mkdir(parents=True)
            Image.fromarray(imgs[4 * k + label]).save(d / f"a{label}.png")
            write_pgm(d / f"b{label}.pgm", imgs[4 * k + 2 + label])
    Image.fromarray(imgs[0]).save(root / "Train" / "1" / "same_as_a0.tiff")  # same pixels, other name/format
    for junk in ("Train/0/notes.txt", "Train/1/.DS_Store", "Test/0/Thumbs.db", "Test/1/._b1.pgm", "Test/README"):
        (root / junk).write_bytes(b"not an image")
    caplog.set_level("WARNING", logger="microcal")
    summary = pack_tree(root, tmp_path / "p.h5", DataConfig())
    assert summary["skipped"] == 5 and summary["duplicate_images"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "skipped 5 file(s)" in warnings[0]
    s = load_split(tmp_path / "p.h5", "train")
    assert list(s.ids) == ["Train/0/a0.png", "Train/0/b0.pgm", "Train/1/a1.png", "Train/1/b1.pgm",
                           "Train/1/same_as_a0.tiff"]
    assert s.pixel_hash[0] == s.pixel_hash[4] and len(set(s.pixel_hash)) == 4
    np.testing.assert_array_equal(s.images[4], imgs[0])


# ------------------------------------------------------------------------------------------------
# Idempotence, force, atomicity


def test_rerun_is_up_to_date_force_rebuilds_and_changes_repack(tmp_path):
    root = raw_pgm_tree(tmp_path / "tree", 6, shape=(12, 12))
    out = tmp_path / "run" / "data" / "packed.h5"
    cfg = Config()
    cfg.data.root = str(root)
    assert pack_job(cfg, str(out)) == str(out)
    log_file = log_path_for(out)
    assert log_file.name == "packed.pack.log" and "packed train 6 normal + 6 cluster" in log_file.read_text()
    st = out.stat()

    pack_job(cfg, str(out))  # unchanged inputs: nothing rewritten
    st2 = out.stat()
    assert (st2.st_ino, st2.st_mtime_ns, st2.st_size) == (st.st_ino, st.st_mtime_ns, st.st_size)
    assert "is up to date (24 input files unchanged" in log_file.read_text().splitlines()[-1]

    pack_job(cfg, str(out), force=True)  # --force: a new file replaces the old one
    assert out.stat().st_ino != st.st_ino
    assert "packed train" in log_file.read_text().splitlines()[-1]

    # one changed input: repacked with the new pixels; a changed naming rule: repacked too
    new = np.full((12, 12), 7, np.uint8)
    write_pgm(root / "Test" / "1" / "0000m1_0_0.pgm_1.pgm", new)
    before = out.stat().st_ino
    pack_job(cfg, str(out))
    assert out.stat().st_ino != before
    test = load_split(out, "test")
    np.testing.assert_array_equal(test.images[list(test.ids).index("Test/1/0000m1_0_0.pgm_1.pgm")], new)
    cfg.data.case_pattern = r"^(?P<case>\d{4}[a-z])"
    before = out.stat().st_ino
    pack_job(cfg, str(out))
    assert out.stat().st_ino != before and load_split(out, "train").cases[0] == "0000s"
    assert not [p.name for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def _packed_small_tree(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A small tree packed to tmp_path/packed.h5: (tree root, packed file, its bytes)."""
    root = raw_pgm_tree(tmp_path / "tree", 3, shape=(10, 10))
    out = tmp_path / "packed.h5"
    pack_tree(root, out, DataConfig())
    return root, out, out.read_bytes()


@pytest.mark.timeout(60)
def test_failed_pack_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    root, out, old = _packed_small_tree(tmp_path)
    ino = out.stat().st_ino
    # the last file in pack order is damaged: the failure happens after most images were written
    (root / "Test" / "1" / "zzzz.pgm").write_bytes(b"P5\n10 10\n255\n" + bytes(50))
    r = subprocess.run([sys.executable, "-m", "jobs", "pack", "--data", str(root), "--out", str(out)],
                       capture_output=True, text=True, env=cli_env(), timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == (f"microcal-hpc pack: error: {root}/Test/1/zzzz.pgm: "
                                                 "truncated PGM: 50 of 100 pixel bytes present")
    assert out.stat().st_ino == ino and out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed.h5", "packed.h5.sha256", "packed.pack.log", "tree"]


@pytest.mark.timeout(60)
def test_sigterm_during_pack_removes_the_temporary_and_keeps_the_old_file(tmp_path):
    root, out, old = _packed_small_tree(tmp_path)
    fifo = root / "Test" / "1" / "zzzz.pgm"
    os.mkfifo(fifo)  # the pack blocks reading it: a deterministic "still writing" state
    proc = subprocess.Popen([sys.executable, "-m", "jobs", "pack", "--data", str(root), "--out", str(out),
                             "--force"], stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        wait_while_running(proc, lambda: any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), 30, 0.02,
                           "the temporary output never appeared")
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == f"microcal-hpc pack: error: {out}: terminated by SIGTERM while packing; nothing written"
    assert "Traceback" not in err
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed.h5", "packed.h5.sha256", "packed.pack.log", "tree"]


# ------------------------------------------------------------------------------------------------
# Streaming


def test_pack_streams_pixels_in_chunks(tmp_path):
    """Python-side peak memory stays far below the pixel data (2,000 x 128x128 = 32.8 MB)."""
    root = raw_pgm_tree(tmp_path / "tree", 500, shape=(128, 128))
    out = tmp_path / "big.h5"
    tracemalloc.start()
    try:
        summary = pack_tree(root, out, DataConfig(chunk_size=64), progress=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["counts"]["train"]["total"] == 1000
    pixel_bytes = 2000 * 128 * 128
    assert peak < 6_000_000, f"peak {peak / 1e6:.1f} MB of Python allocations for {pixel_bytes / 1e6:.1f} MB of pixels"
    s = scan_tree(root)
    last = list(s.files["test"])[-1][0]  # the files of a split are iterated, not indexed
    np.testing.assert_array_equal(read_images(out, "test", 999, 1000)[0], read_image(root / last))
