"""Pack with its external sorts spilling runs (a tiny extsort.RUN_SIZE): the same packed file as in memory,
the same duplicate-id errors, and a scratch folder beside the output that goes however the pack ends."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cli_helpers import cli_env, wait_while_running, write_pgm
from data_prep import extsort
from data_prep.pack import pack_tree, scan_tree
from microcal_hpc.config import DataConfig
from microcal_hpc.errors import InputError
from test_pack import raw_pgm_tree

pytestmark = pytest.mark.timeout(120)

# the CLI with runs of 4 items, merged 3 at a time
TINY_RUNS_CLI = ("import sys, data_prep.extsort as e; e.RUN_SIZE, e.MAX_RUNS = 4, 3; "
                 "from jobs.cli import main; sys.exit(main())")


def use_tiny_runs(monkeypatch) -> list[Path]:
    """Runs of 4 items, merged 3 at a time; returns the list of run files written."""
    monkeypatch.setattr(extsort, "RUN_SIZE", 4)
    monkeypatch.setattr(extsort, "MAX_RUNS", 3)
    written: list[Path] = []
    write_run = extsort.ExternalSort._write_run

    def spy(self, items):
        path = write_run(self, items)
        written.append(Path(path))
        return path

    monkeypatch.setattr(extsort.ExternalSort, "_write_run", spy)
    return written


@pytest.fixture
def tiny_runs(monkeypatch) -> list[Path]:
    return use_tiny_runs(monkeypatch)


def tree_with_repeats(root: Path) -> Path:
    """30 images per class and split, some pixel-identical, groups of 4 crops, junk files to skip."""
    raw_pgm_tree(root, 30, shape=(6, 6))
    for i, label in enumerate("0101"):
        shutil.copy(root / "Train" / "0" / "0000s1_0_0.pgm_1.pgm", root / "Test" / label / f"same{i}.pgm")
    for junk in ("Train/0/notes.txt", "Train/1/.DS_Store", "Test/0/Thumbs.db", "Test/1/b.csv"):
        (root / junk).write_bytes(b"junk")
    return root


def contents(path: Path) -> dict:
    with h5py.File(path) as f:
        data = {name: f[name][()].tolist() for name in _datasets(f)}
        data.update({f"attr {k}": np.asarray(v).tolist() for k, v in f.attrs.items() if k != "created"})
    return data


def _datasets(f) -> list[str]:
    names = []
    f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def test_a_pack_with_spilled_runs_equals_one_in_memory(tmp_path, monkeypatch):
    root = tree_with_repeats(tmp_path / "tree")
    memory = pack_tree(root, tmp_path / "memory" / "p.h5", DataConfig(chunk_size=7))
    written = use_tiny_runs(monkeypatch)
    spilled = pack_tree(root, tmp_path / "spilled" / "p.h5", DataConfig(chunk_size=7))
    scratch = {p.parent for p in written}
    assert len(written) > 50 and len(scratch) == 1
    [folder] = scratch
    assert folder.parent == tmp_path / "spilled" and folder.name.startswith(".p.h5.") and folder.name.endswith(
        ".scratch.tmp")
    assert sorted(p.name for p in (tmp_path / "spilled").iterdir()) == ["p.h5", "p.h5.sha256"]  # scratch removed
    for s in (memory, spilled):
        s.pop("seconds"), s.pop("images_per_second"), s.pop("path")
    assert spilled == memory and memory["duplicate_images"] == 4 and memory["skipped"] == 4
    assert contents(tmp_path / "spilled" / "p.h5") == contents(tmp_path / "memory" / "p.h5")


def test_a_scan_with_spilled_runs_lists_the_files_in_pack_order(tmp_path, tiny_runs):
    root = tree_with_repeats(tmp_path / "tree")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    scan = scan_tree(root, lambda: scratch)
    expected = sorted(p.relative_to(root).as_posix() for p in (root / "Train").rglob("*.pgm"))
    assert tiny_runs and [rel for rel, _ in scan.files["train"]] == expected
    assert [label for _, label in scan.files["train"]] == [int(rel.split("/")[1]) for rel in expected]
    assert len(scan.files["train"]) == 60 and scan.skipped.n == 4
    assert scan.skipped.examples == ["Train/0/notes.txt", "Train/1/.DS_Store", "Test/0/Thumbs.db"]


@pytest.mark.parametrize("spill", [False, True])
def test_the_first_duplicate_id_in_file_order_is_named_with_both_files(tmp_path, monkeypatch, spill):
    root = raw_pgm_tree(tmp_path / "tree", 20, shape=(4, 4))
    train = root / "Train"
    shutil.copy(train / "0" / "0003s1_0_0.pgm_2.pgm", train / "1" / "0003S1_0_0.PGM_2.png")  # met second
    shutil.copy(train / "0" / "0001s1_0_0.pgm_1.pgm", train / "0" / "0001s1_0_0.pgm_1.tif")  # met first
    (train / "1" / "zz").mkdir()  # a folder in a class folder, after both in file order
    if spill:
        use_tiny_runs(monkeypatch)
    with pytest.raises(InputError) as e:
        pack_tree(root, tmp_path / "out" / "p.h5", DataConfig())
    assert str(e.value) == (f"{train / '0' / '0001s1_0_0.pgm_1.tif'}: same image id as "
                            f"{train / '0' / '0001s1_0_0.pgm_1.pgm'} (an image name may appear once per split, "
                            "whatever its extension or label)")
    (train / "0" / "0001s1_0_0.pgm_1.tif").unlink()
    with pytest.raises(InputError, match=r"0003S1_0_0.PGM_2.png: same image id as .*/Train/0/0003s1_0_0.pgm_2.pgm"):
        pack_tree(root, tmp_path / "out" / "p.h5", DataConfig())
    (train / "1" / "0003S1_0_0.PGM_2.png").unlink()
    (train / "0" / "0000s1_0_0.pgm_1.PGM").write_bytes(b"")  # its twin 0000s1_0_0.pgm_1.pgm is met second ...
    (train / "0" / "0000a").mkdir()  # ... after this folder, in file order
    with pytest.raises(InputError, match=r"Train/0/0000a: unexpected folder inside a class folder"):
        pack_tree(root, tmp_path / "out" / "p.h5", DataConfig())
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_a_failed_pack_removes_its_scratch_folder(tmp_path, tiny_runs):
    root = raw_pgm_tree(tmp_path / "tree", 10, shape=(4, 4))
    (root / "Test" / "1" / "zzzz.pgm").write_bytes(b"P5\n4 4\n255\n" + bytes(5))  # the last file is damaged
    with pytest.raises(InputError, match="truncated PGM"):
        pack_tree(root, tmp_path / "out" / "p.h5", DataConfig())
    assert tiny_runs and list((tmp_path / "out").iterdir()) == []


def _pack_blocked_on_a_fifo(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A CLI pack with tiny runs that blocks reading the last image (a FIFO) once its scratch folder and
    temporary output exist."""
    root = raw_pgm_tree(tmp_path / "tree", 5, shape=(4, 4))
    os.mkfifo(root / "Test" / "1" / "zzzz.pgm")
    out = tmp_path / "packed.h5"
    proc = subprocess.Popen([sys.executable, "-c", TINY_RUNS_CLI, "pack", "--data", str(root), "--out", str(out)],
                            stderr=subprocess.PIPE, text=True, env=cli_env())
    wait_while_running(proc, lambda: _temporaries(tmp_path) == ["output", "scratch"], 60, 0.02,
                       "the scratch folder and temporary output never appeared")
    return proc, out


def _temporaries(folder: Path) -> list[str]:
    return sorted("scratch" if p.name.endswith(".scratch.tmp") else "output" for p in folder.iterdir()
                  if p.name.endswith(".tmp"))


def test_sigterm_removes_the_scratch_folder(tmp_path):
    proc, out = _pack_blocked_on_a_fifo(tmp_path)
    try:
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1] == (f"microcal-hpc pack: error: {out}: terminated by SIGTERM while packing; "
                                            "nothing written")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed.pack.log", "tree"]


def test_the_next_pack_removes_a_killed_packs_scratch_folder(tmp_path):
    proc, out = _pack_blocked_on_a_fifo(tmp_path)
    try:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    stale = sorted(p for p in tmp_path.iterdir() if p.name.endswith(".tmp"))
    assert len(stale) == 2 and any(p.is_dir() and any(p.iterdir()) for p in stale)  # runs were written
    (tmp_path / "tree" / "Test" / "1" / "zzzz.pgm").unlink()
    write_pgm(tmp_path / "tree" / "Test" / "1" / "zzzz.pgm", np.zeros((4, 4), np.uint8))
    r = subprocess.run([sys.executable, "-c", TINY_RUNS_CLI, "pack", "--data", str(tmp_path / "tree"), "--out",
                        str(out)], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    for p in stale:
        assert f"removed {p}: a temporary output left by process {proc.pid}, which is gone" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["packed.h5", "packed.h5.sha256", "packed.pack.log", "tree"]
