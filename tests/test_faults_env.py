"""Environmental failures end with one line naming the file and the problem, a non-zero exit, no traceback,
no crash and no half-written output: a read-only run directory (a read-only tmpfs: root ignores file
permissions), a run directory that is a file, a full disk (a small tmpfs), damaged HDF5 metadata, a
truncated predictions.npz, and a standard output whose reader has gone (``| head``).

Mounting needs root (CI runs as root); where the mount is refused, those tests are skipped and say why.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cli_helpers import cli_env
from test_faults_pack import flip

pytestmark = pytest.mark.timeout(300)


def cli(*args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    env = dict(cli_env(), MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "jobs", *args], stdout=stdout, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=240)


def assert_one_line(r: subprocess.CompletedProcess, command: str, starts: str, reason: str, code: int = 1) -> None:
    """Exit ``code``, no traceback, and exactly one error line, the last one: ``starts ... reason``."""
    lines = r.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"microcal-hpc {command}: error:")]
    assert r.returncode == code and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr[-3000:]
    assert errors[0].startswith(f"microcal-hpc {command}: error: {starts}") and reason in errors[0], errors[0]


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp"))


class Mount:
    """A tmpfs of ``size`` at ``path``, unmounted at exit."""

    def __init__(self, path: Path, size: str):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")

    def read_only(self) -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(self.path)], check=True)

    def fill(self) -> None:
        """Use up every free byte."""
        with open(self.path / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.path)], capture_output=True)


@pytest.fixture
def mount(tmp_path):
    made: list[Mount] = []

    def _mount(name: str, size: str) -> Mount:
        made.append(Mount(tmp_path / name, size))
        return made[-1]

    yield _mount
    for m in made:
        m.unmount()


@pytest.fixture(scope="module")
def features(packed_synthetic, tmp_path_factory) -> Path:
    from microcal_hpc.config import Config
    from microcal_hpc.wavelet.features_job import features_job

    out = tmp_path_factory.mktemp("features") / "features.h5"
    features_job(Config(), str(packed_synthetic), str(out))
    return out


# ------------------------------------------------------------------------------------------------
# A read-only run directory, a run directory that is a file


def job_commands(target: Path, root: Path, packed: Path, features: Path) -> dict[str, list[str]]:
    """The 7 job commands, each writing below ``target``."""
    return {
        "pack": ["pack", "--data", str(root), "--out", str(target / "data" / "packed.h5")],
        "train": ["train", "--data", str(packed), "--run-dir", str(target / "cnn"), "--name", "official"],
        "wavelet-features": ["wavelet-features", "--data", str(packed), "--out", str(target / "wavelet" / "f.h5")],
        "wavelet-classify": ["wavelet-classify", "--features", str(features), "--run-dir", str(target / "wavelet"),
                             "--classifiers", "rf", "--folds", "2"],
        "baseline": ["baseline", "--data", str(packed), "--run-dir", str(target / "baseline"), "--folds", "2"],
        "aggregate": ["aggregate", "--run-dir", str(target)],
        "submit": ["submit", "--executor", "local", "--run-dir", str(target / "campaign"), "--set",
                   f"data.root={root}", "--set", "train.epochs=1"],
    }


@pytest.mark.parametrize("command", ["pack", "train", "wavelet-features", "wavelet-classify", "baseline", "aggregate",
                                     "submit"])
def test_a_read_only_run_directory(command, mount, make_tree, packed_synthetic, features):
    ro = mount("ro", "1m")
    ro.read_only()
    args = job_commands(ro.path, make_tree(), packed_synthetic, features)[command]
    assert_one_line(cli(*args), command, f"{ro.path}/", "Read-only file system")


@pytest.mark.parametrize("command", ["pack", "train", "wavelet-features", "wavelet-classify", "baseline", "submit"])
def test_a_run_directory_that_is_a_file(command, tmp_path, make_tree, packed_synthetic, features):
    occupied = tmp_path / "occupied"
    occupied.write_text("a file, not a folder")
    args = job_commands(occupied, make_tree(), packed_synthetic, features)[command]
    assert_one_line(cli(*args), command, f"{occupied}", "Not a directory")
    assert occupied.read_text() == "a file, not a folder"


# ------------------------------------------------------------------------------------------------
# A full disk


@pytest.mark.parametrize("command, size", [("pack", "64k"), ("train", "512k"), ("wavelet-features", "64k"),
                                           ("wavelet-classify", "16k"), ("baseline", "16k")])
def test_a_full_disk(command, size, mount, make_tree, packed_synthetic, features):
    """pack used to print two tracebacks and crash (segmentation fault, exit 139) when HDF5 could not write."""
    disk = mount("disk", size)
    args = job_commands(disk.path, make_tree(), packed_synthetic, features)[command]
    if command == "train":
        args += ["--epochs", "1"]  # config.yaml and train.log fit; the first checkpoint does not
    r = cli(*args)
    assert_one_line(r, command, f"{disk.path}/", "No space left on device")
    assert leftovers(disk.path) == []


def test_aggregate_on_a_full_disk(mount):
    from report_fixtures import fabricate_run

    disk = mount("disk", "8m")
    fr = fabricate_run(disk.path / "run")
    disk.fill()
    r = cli("aggregate", "--run-dir", str(fr.run_dir), "--force")
    assert_one_line(r, "aggregate", f"{fr.run_dir}/", "No space left on device")
    assert leftovers(disk.path) == []


# ------------------------------------------------------------------------------------------------
# Damaged HDF5 metadata, a truncated predictions.npz


@pytest.mark.parametrize("command", ["inspect", "baseline", "wavelet-features"])
def test_damaged_hdf5_metadata_of_a_packed_file(command, tmp_path, packed_synthetic):
    """Without the checksum file, HDF5 meets the damage (it raised KeyError); with it, the checksum does."""
    bad = tmp_path / "packed.h5"
    shutil.copy(packed_synthetic, bad)
    flip(bad, 704)
    args = {"inspect": ["inspect", str(bad)],
            "baseline": ["baseline", "--data", str(bad), "--run-dir", str(tmp_path / "b"), "--folds", "2"],
            "wavelet-features": ["wavelet-features", "--data", str(bad), "--out", str(tmp_path / "f.h5")]}[command]
    assert_one_line(cli(*args), command, f"{bad}: damaged packed data file (", "run `microcal-hpc pack` again", code=2)
    shutil.copy(packed_synthetic.with_name(packed_synthetic.name + ".sha256"), bad.with_name("packed.h5.sha256"))
    assert_one_line(cli(*args), command, f"{bad}: damaged packed data file (its sha256 differs from the one "
                    "recorded in packed.h5.sha256", "run `microcal-hpc pack` again", code=2)


def test_damaged_hdf5_metadata_of_a_features_file(tmp_path, features):
    bad = tmp_path / "features.h5"
    shutil.copy(features, bad)
    flip(bad, 704)
    r = cli("wavelet-classify", "--features", str(bad), "--run-dir", str(tmp_path / "w"), "--classifiers", "rf",
            "--folds", "2")
    assert_one_line(r, "wavelet-classify", f"{bad}: damaged wavelet features file (",
                    "run `microcal-hpc wavelet-features` again", code=2)


def test_a_truncated_predictions_file_marks_its_job_incomplete_and_the_report_is_written(tmp_path):
    from report_fixtures import fabricate_run

    fr = fabricate_run(tmp_path / "run")
    npz = fr.run_dir / "wavelet" / "coeffs" / "rf" / "predictions.npz"
    os.truncate(npz, npz.stat().st_size // 2)
    r = cli("aggregate", "--run-dir", str(fr.run_dir))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "microcal-hpc aggregate: warning: partial run" in r.stderr
    report = (fr.run_dir / "report" / "report.md").read_text()
    assert f"incomplete: wavelet/coeffs/rf: {npz}: unreadable predictions (BadZipFile: " in report
    assert (fr.run_dir / "report" / "report.html").is_file()


# ------------------------------------------------------------------------------------------------
# | head


@pytest.mark.parametrize("command", ["inspect", "status"])
def test_a_closed_standard_output_ends_quietly(command, tmp_path, packed_synthetic):
    (tmp_path / "run" / "jobs").mkdir(parents=True)
    args = {"inspect": ["inspect", str(packed_synthetic)], "status": ["status", "--run-dir", str(tmp_path / "run"),
                                                                     "--no-slurm"]}[command]
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line: like `| head -0`, deterministically
    try:
        r = cli(*args, stdout=write)
    finally:
        os.close(write)
    assert (r.returncode, r.stderr) == (141, "")
