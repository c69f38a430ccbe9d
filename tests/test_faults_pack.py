"""Damaged packed files are found and rebuilt; a killed pack's temporary file is removed by the next pack.

- pack's up-to-date check verifies the existing file (checksum recorded at write time, structure):
  16 flipped bytes at offset 704 (HDF5 metadata) or inside the image data make it rebuild, saying why;
- ``inspect --verify`` and the jobs that load images name the first image whose pixels changed;
- a pack killed with SIGKILL leaves its temporary file; the next pack removes it, and nothing else.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from cli_helpers import cli_env, wait_while_running
from test_pack import raw_pgm_tree

pytestmark = pytest.mark.timeout(120)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs", *args], capture_output=True, text=True, env=cli_env(),
                          timeout=100)


def flip(path: Path, offset: int, n: int = 16) -> None:
    with open(path, "r+b") as fh:
        fh.seek(offset)
        data = fh.read(n)
        fh.seek(offset)
        fh.write(bytes(b ^ 0xFF for b in data))


def image_offset(path: Path, split: str, index: int) -> int:
    """Byte offset of image ``index`` of ``split`` in the file (uncompressed chunks)."""
    with h5py.File(path, "r") as f:
        ds = f[split]["images"]
        rows = ds.chunks[0]
        info = ds.id.get_chunk_info_by_coord((index // rows * rows, 0, 0))
        return info.byte_offset + (index % rows) * ds.shape[1] * ds.shape[2]


@pytest.fixture
def packed(tmp_path) -> tuple[Path, Path]:
    root = raw_pgm_tree(tmp_path / "tree", 6, shape=(12, 12))
    out = tmp_path / "packed.h5"
    r = cli("pack", "--data", str(root), "--out", str(out))
    assert r.returncode == 0, r.stderr
    return root, out


@pytest.mark.parametrize("where", ["metadata", "pixels"])
def test_pack_rebuilds_a_damaged_file_instead_of_calling_it_up_to_date(packed, where):
    root, out = packed
    good = out.read_bytes()
    assert out.with_name("packed.h5.sha256").read_text().split() == [hashlib.sha256(good).hexdigest(), "packed.h5"]
    flip(out, 704 if where == "metadata" else image_offset(out, "test", 3) + 5)
    r = cli("pack", "--data", str(root), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert (f"{out}: its sha256 differs from the one recorded in packed.h5.sha256 when it was written; rebuilding it"
            in r.stderr)
    assert "packed train 6 normal + 6 cluster" in r.stderr
    assert cli("inspect", "--verify", str(out)).returncode == 0  # rebuilt intact
    assert "is up to date" in cli("pack", "--data", str(root), "--out", str(out)).stderr


def test_a_packed_file_without_its_checksum_is_rebuilt(packed):
    """e.g. one written by an earlier version: it cannot be verified."""
    root, out = packed
    out.with_name("packed.h5.sha256").unlink()
    r = cli("pack", "--data", str(root), "--out", str(out))
    assert r.returncode == 0 and f"{out}: no checksum recorded (packed.h5.sha256 missing); rebuilding it" in r.stderr
    assert out.with_name("packed.h5.sha256").is_file()


def test_changed_pixels_are_named_by_inspect_verify_and_by_the_jobs(packed, tmp_path):
    _, out = packed
    r = cli("inspect", "--verify", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == ("verified: the file matches its checksum packed.h5.sha256; the "
                                                "pixels of all 24 images match their pixel hashes")
    flip(out, image_offset(out, "test", 3) + 5)
    with h5py.File(out, "r") as f:
        image_id = f["test/ids"].asstr()[3]
    r = cli("inspect", "--verify", str(out))  # the checksum sees it first
    assert r.returncode == 2 and r.stderr.strip() == (
        f"microcal-hpc inspect: error: {out}: damaged packed data file (its sha256 differs from the one recorded "
        "in packed.h5.sha256 when it was written); run `microcal-hpc pack` again")
    out.with_name("packed.h5.sha256").unlink()  # without it, the pixel hashes do
    named = (f"{out}: damaged packed data file: image 3 of test ({image_id}) does not match its recorded pixel hash; "
             "run `microcal-hpc pack` again")
    r = cli("inspect", "--verify", str(out))
    assert r.returncode == 2 and r.stderr.strip() == f"microcal-hpc inspect: error: {named}"
    r = cli("baseline", "--data", str(out), "--run-dir", str(tmp_path / "b"), "--folds", "2")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1] == f"microcal-hpc baseline: error: {named}"
    assert "Traceback" not in r.stderr


def test_a_streamed_split_names_the_damaged_image_when_its_chunk_is_first_read(packed):
    """The CNN's streaming reader (train.input=stream) checks each chunk it reads against the pixel hashes."""
    from microcal_hpc.cnn.source import StreamedImages
    from microcal_hpc.errors import InputError

    _, out = packed
    with h5py.File(out, "r") as f:
        image_id, n_test = f["test/ids"].asstr()[3], f["test/labels"].shape[0]
    assert StreamedImages(out, "test", range(n_test)).read(list(range(n_test))).shape[0] == n_test  # intact
    flip(out, image_offset(out, "test", 3) + 5)
    out.with_name("packed.h5.sha256").unlink()  # as for a file too large for the whole-file check
    source = StreamedImages(out, "test", range(n_test))
    with pytest.raises(InputError, match=rf"image 3 of test \({image_id}\) does not match its recorded pixel hash"):
        source.read([3])
    source.close()


def test_the_next_pack_removes_a_killed_packs_temporary_file_and_nothing_else(tmp_path):
    root = raw_pgm_tree(tmp_path / "tree", 3, shape=(10, 10))
    out = tmp_path / "packed.h5"
    fifo = root / "Test" / "1" / "zzzz.pgm"
    os.mkfifo(fifo)  # the pack blocks reading it: a deterministic "still writing" state
    proc = subprocess.Popen([sys.executable, "-m", "jobs", "pack", "--data", str(root), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    try:
        wait_while_running(proc, lambda: any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), 60, 0.02,
                           "the temporary output never appeared")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    fifo.unlink()
    [stale] = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert stale.name.startswith(f".packed.h5.{os.uname().nodename.split('.')[0]}~{proc.pid}~")
    keep = [tmp_path / f".packed.h5.{os.uname().nodename.split('.')[0]}~{os.getpid()}~abcdefgh.tmp",  # alive
            tmp_path / f".packed.h5.otherhost~{proc.pid}~abcdefgh.tmp",  # another host's
            tmp_path / ".packed.h5.notes.tmp", tmp_path / "x.tmp"]  # not of the temporary-name pattern
    for p in keep:
        p.write_text("keep")
    r = cli("pack", "--data", str(root), "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert f"removed {stale}: a temporary output left by process {proc.pid}, which is gone" in r.stderr
    assert not stale.exists() and all(p.read_text() == "keep" for p in keep)
    # up to date now; a stale temporary still goes
    stale.write_bytes(b"left over")
    r = cli("pack", "--data", str(root), "--out", str(out))
    assert "is up to date" in r.stderr and not stale.exists()
