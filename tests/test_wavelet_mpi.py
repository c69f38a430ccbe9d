"""MPI-parallel wavelet features: identical output for any number of ranks, clean failure on every rank.

The MPI tests launch the real ``mpiexec -n 2`` (Open MPI, as root with the ALLOW_RUN_AS_ROOT variables,
oversubscribed) on the command line ``python -m jobs wavelet-features``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from microcal_hpc.config import Config, WaveletConfig
from microcal_hpc.dataset import load_split
from microcal_hpc.wavelet.mpi_features import rank_pieces, rank_slices
from microcal_hpc.wavelet.transform import extract_features

MPI_TIMEOUT = 120  # seconds per mpiexec launch (the 2 cores are shared with other test processes)


def _mpi_env() -> dict:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               PYTHONHASHSEED="0")
    return env


def _mpiexec(n: int, *args: str) -> tuple[subprocess.CompletedProcess, float]:
    mpiexec = shutil.which("mpiexec")
    if mpiexec is None:
        pytest.fail("mpiexec not found on PATH (Debian: apt-get install openmpi-bin)")
    cmd = [mpiexec, "-n", str(n), "--oversubscribe", sys.executable, "-m", "jobs", "wavelet-features", *args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=_mpi_env(), capture_output=True, text=True, timeout=MPI_TIMEOUT)
    return proc, time.monotonic() - t0


def _datasets(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        out = {f"/{s}/{k}": f[s][k][()] for s in ("train", "test", "feature_names") for k in f[s]}
        out.update({f"@{k}": v for k, v in f.attrs.items()})
    return out


def _assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        va, vb = np.asarray(a[k]), np.asarray(b[k])
        assert va.dtype == vb.dtype and va.shape == vb.shape, k
        assert va.tobytes() == vb.tobytes() if va.dtype != object else np.array_equal(va, vb), k


@pytest.mark.parametrize("total, size, chunk", [(797, 1, 2048), (797, 2, 100), (797, 3, 64), (5, 4, 2), (2, 3, 1)])
def test_rank_pieces_cover_every_image_once(total, size, chunk):
    counts = {"train": min(total, 636), "test": max(0, total - 636)}
    seen = {"train": [], "test": []}
    for r in range(size):
        for p in rank_pieces(counts, size, r, chunk):
            assert 0 < len(p) <= chunk
            seen[p.split] += list(range(p.start, p.stop))
    for s in seen:
        assert seen[s] == list(range(counts[s]))
    slices = rank_slices(counts, size)
    assert max(b - a for a, b in slices) - min(b - a for a, b in slices) <= 1  # balanced


@pytest.mark.parametrize("total, size", [(797, 2), (797, 3), (100_000, 2), (100_000, 5), (40, 3)])
def test_tile_aligned_rank_slices_start_on_a_tile_of_their_split(total, size):
    counts = {"train": total * 4 // 5, "test": total - total * 4 // 5}
    slices = rank_slices(counts, size, align=32)
    assert slices[0][0] == 0 and slices[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:]))  # contiguous
    seen = {"train": [], "test": []}
    for r in range(size):
        pieces = rank_pieces(counts, size, r, 256, align=32)
        for p in pieces:
            seen[p.split] += list(range(p.start, p.stop))
        if pieces:
            assert pieces[0].start % 32 == 0  # index within its split
            assert all(p.start % 32 == 0 for p in pieces)
    assert seen == {s: list(range(counts[s])) for s in seen}
    if total >= 32 * size * 4:  # each end moves by at most half a tile: a slice is within a tile of its share
        assert all(abs((b - a) - total / size) <= 32 + 1 for a, b in slices)


@pytest.mark.realdata
@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_ranks_write_the_same_bytes_as_one(packed_real, tmp_path):
    from microcal_hpc.wavelet.features_job import features_job

    every_set = ["coeffs", "stats", "approx_stats", "other_levels_stats"]
    cfg = Config(wavelet=WaveletConfig(features=every_set))
    serial = tmp_path / "serial" / "features.h5"
    features_job(cfg, str(packed_real), str(serial))  # in-process: no MPI launcher, SerialComm

    parallel = tmp_path / "mpi" / "features.h5"
    proc, _ = _mpiexec(2, "--data", str(packed_real), "--out", str(parallel), "--features", ",".join(every_set),
                       "--chunk-size", "150")  # 3 uneven rounds per rank, rank 1 spans Train and Test
    assert proc.returncode == 0, proc.stderr
    assert "on 2 rank(s)" in proc.stderr
    _assert_same(_datasets(serial), _datasets(parallel))
    assert serial.read_bytes() == parallel.read_bytes()  # even the HDF5 file is byte-identical

    data = _datasets(serial)
    train = load_split(packed_real, "train")
    assert data["/train/coeffs"].shape == (636, 2430) and data["/test/stats"].shape == (161, 45)
    assert data["/train/approx_stats"].shape == (636, 5) and data["/test/other_levels_stats"].shape == (161, 15)
    # every column is named: sub-band and statistic, or sub-band, row and column
    names = {fs: list(data[f"/feature_names/{fs}"].astype(str)) for fs in every_set}
    assert names["approx_stats"] == ["A4_energy", "A4_mean_abs", "A4_std", "A4_skewness", "A4_kurtosis"]
    assert names["stats"][:2] == ["H4_energy", "H4_mean_abs"] and names["stats"][-1] == "D2_kurtosis"
    assert {n[:2] for n in names["other_levels_stats"]} == {"H1", "V1", "D1"}
    assert names["coeffs"][0] == "H4_0_0" and names["coeffs"][-1] == "D2_20_20"
    assert [len(names[fs]) for fs in every_set] == [2430, 45, 5, 15]
    assert list(data["/train/ids"].astype(str)) == list(train.ids)
    assert np.array_equal(data["/train/labels"], train.labels)
    ref = extract_features(train.images[:5], feature_sets=every_set, dtype=cfg.wavelet.dtype)
    for fs in every_set:
        assert np.array_equal(data[f"/train/{fs}"][:5], ref[fs]), fs
    assert data["@effective_level"] == 4 and data["@boundary_free_max_level"] == 2

    # complete for the same settings and input: nothing is rewritten
    before = serial.stat().st_mtime_ns
    summary: dict = {}
    features_job(cfg, str(packed_real), str(serial), summary=summary)
    assert summary["status"] == "up to date" and serial.stat().st_mtime_ns == before
    # other settings: recomputed
    cfg.wavelet.keep_levels = [4]
    features_job(cfg, str(packed_real), str(serial), summary=summary)
    assert summary["status"] == "written"
    with h5py.File(serial) as f:
        assert f["train/coeffs"].shape == (636, 3 * 144)
        assert f["train/other_levels_stats"].shape == (636, 3 * 3 * 5)  # levels 3, 2, 1


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("flags, message", [
    (["--wavelet", "db55"], "wavelet 'db55' is not a discrete wavelet known to PyWavelets (did you mean"),
    (["--level", "9"], "wavelet level 9 is too high for 60x60 images with db5"),
])
def test_bad_settings_stop_every_rank_with_one_message(packed_synthetic, tmp_path, flags, message):
    out = tmp_path / "features.h5"
    proc, seconds = _mpiexec(2, "--data", str(packed_synthetic), "--out", str(out), *flags)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "microcal-hpc wavelet-features: error:" in ln]
    assert len(lines) == 1, proc.stderr  # printed once, by rank 0
    assert message in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".features.h5*"))
    assert seconds < MPI_TIMEOUT


def _corrupt_last_test_chunk(src: Path, dst: Path) -> None:
    """Copy a packed file with gzip-compressed one-image chunks and zero the bytes of the last Test chunk."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w") as b:
        for k, v in a.attrs.items():
            b.attrs[k] = v
        for s in ("train", "test"):
            g = b.create_group(s)
            for k in a[s]:
                if k == "images":
                    g.create_dataset(k, data=a[s][k][()], chunks=(1,) + a[s][k].shape[1:], compression="gzip")
                else:
                    a.copy(a[s][k], g, name=k)
    with h5py.File(dst, "r") as f:
        ds = f["test/images"]
        info = ds.id.get_chunk_info(ds.id.get_num_chunks() - 1)
    with open(dst, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\0" * info.size)


@pytest.mark.mpi
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failure_on_one_rank_stops_all_ranks(packed_synthetic, tmp_path):
    # unreadable data in rank 1's slice only (the Test images come last)
    bad = tmp_path / "corrupt.h5"
    _corrupt_last_test_chunk(packed_synthetic, bad)
    out = tmp_path / "features.h5"
    proc, _ = _mpiexec(2, "--data", str(bad), "--out", str(out))
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if "error:" in ln]
    assert len(lines) == 1 and "corrupt.h5: cannot read /test/images" in lines[0] and "rank 1 of 2" in lines[0]
    assert not out.exists() and not list(tmp_path.glob(".features.h5*"))

    # an output rank 0 cannot create (its folder is a file): rank 1 must not wait forever
    (tmp_path / "occupied").write_text("x")
    proc, _ = _mpiexec(2, "--data", str(packed_synthetic), "--out", str(tmp_path / "occupied" / "features.h5"))
    assert proc.returncode != 0
    assert "cannot create the output folder" in proc.stderr and "Traceback" not in proc.stderr
