"""scripts/setup.sh on machines it must not change: MPI already on PATH (a loaded module) and no root,
what it says when MPI, a suitable Python or a CUDA 12 toolkit is missing, one TensorFlow flavour per
environment, and a real set-up as a non-root user.

Root is needed only to create the non-root user (when the suite itself runs as a non-root user, the
tests run as that user). sudo, apt-get and dpkg-query are replaced by fakes that record their calls,
so a test sees any attempt to install system packages. The GPU checks use small fake `nvcc` scripts
(and the machine's real nvcc, if any): this machine has no GPU and no CUDA 12 toolkit.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from install_helpers import (SYSTEM_PATH, chown_tree, copy_checkout, lock_module, owner_uid, path_without,
                             recording_fakes, run_setup, write_script)

pytestmark = pytest.mark.install
NO_MPI = ("mpi", "orte", "opal")  # mpicc, mpirun, mpiexec, orterun, opal_wrapper ...
USER = "microcal-install"


def _fail_or_skip(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def plain_user():
    """The name of a user without root to run set-up as; None when the suite already runs as one."""
    if os.geteuid() != 0:
        yield None
        return
    if not (shutil.which("useradd") and shutil.which("runuser")):
        _fail_or_skip("useradd/runuser not found: cannot create a non-root user")
    created = subprocess.run(["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                              "--shell", "/usr/sbin/nologin", USER], capture_output=True).returncode == 0
    try:
        yield USER
    finally:
        if created:
            subprocess.run(["userdel", USER], capture_output=True)


@pytest.fixture
def ws(plain_user):
    """A workspace the user owns: a copy of the checkout, a HOME, fake system commands and their log."""
    root = Path(tempfile.mkdtemp(prefix="mc-install-", dir="/tmp"))  # pytest's tmp_path is private to root
    try:
        copy_checkout(root / "repo")
        (root / "home").mkdir()
        recording_fakes(root / "fakebin", root / "calls")
        if plain_user:
            chown_tree(root, plain_user)
        root.chmod(0o755)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _setup(ws: Path, args, *, user=None, path=None, env=None, timeout=120):
    return run_setup(ws / "repo", args, home=ws / "home", user=user, env=env, timeout=timeout,
                     path=path or f"{ws / 'fakebin'}:{SYSTEM_PATH}")


def _installs_attempted(ws: Path) -> list[str]:
    """Recorded calls of the fakes other than the harmless probe `sudo -n true`."""
    calls = (ws / "calls").read_text().splitlines() if (ws / "calls").exists() else []
    return [c for c in calls if c != "sudo -n true"]


def _require_mpi():
    if not (shutil.which("mpicc") and shutil.which("mpirun")):
        _fail_or_skip("MPI (mpicc, mpirun) is not on PATH: run scripts/setup.sh first")


# --- no root, MPI present or absent -------------------------------------------------------------

def test_non_root_check_takes_mpi_from_path_and_needs_no_system_packages(ws, plain_user):
    _require_mpi()
    result = _setup(ws, ["check"], user=plain_user, env={"MICROCAL_VENV": str(ws / "venv")})
    assert result.returncode == 0, result.stderr
    assert "no system packages needed" in result.stderr
    assert "ready for the cpu flavour" in result.stderr
    assert not (ws / "calls").exists()  # not even probed


def test_non_root_without_mpi_says_what_to_load_or_install_and_changes_nothing(ws, plain_user):
    path = f"{ws / 'fakebin'}:{path_without(ws / 'no-mpi-bin', NO_MPI)}"
    result = _setup(ws, ["env"], user=plain_user, path=path, env={"MICROCAL_VENV": str(ws / "venv")})
    assert result.returncode == 1
    problems = [line for line in result.stderr.splitlines() if line.startswith("setup: ")]
    assert len(problems) == 1, result.stderr
    assert "missing: mpirun, mpicc." in problems[0]
    assert "module load" in problems[0] and "apt-get install libopenmpi-dev openmpi-bin" in problems[0]
    assert "Traceback" not in result.stderr
    assert _installs_attempted(ws) == []
    assert not (ws / "venv").exists()


# --- Python ------------------------------------------------------------------------------------

def test_a_python_other_than_310_or_311_is_refused_with_what_to_do(ws):
    others = ["/bin/true"] + sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.12*/bin/python3.12"))[:1]
    for python in others:
        result = _setup(ws, ["check"], env={"PYTHON": python, "MICROCAL_VENV": str(ws / "venv")})
        assert result.returncode == 1, python
        assert f"setup: PYTHON={python} is not a Python 3.10 or 3.11 with its venv module" in result.stderr


def test_python_310_is_accepted(ws):
    python310 = lock_module().find_python("3.10")
    if not python310:
        _fail_or_skip("no Python 3.10 on this machine")
    result = _setup(ws, ["check"], env={"PYTHON": python310, "MICROCAL_VENV": str(ws / "venv")})
    assert result.returncode == 0, result.stderr
    assert re.search(r"Python: \S+ \(Python 3\.10\.\d+\)", result.stderr)


# --- GPU: the CUDA toolkit ------------------------------------------------------------------------

def _fake_nvcc(folder: Path, release: str) -> Path:
    major, minor = release.split(".")
    return write_script(folder / "nvcc", f'echo "Cuda compilation tools, release {release}, V{major}.{minor}.140"')


def test_gpu_check_accepts_a_cuda_12_toolkit_on_path_or_in_cuda_home(ws):
    env = {"MICROCAL_VENV": str(ws / "venv")}
    on_path = _fake_nvcc(ws / "cuda-on-path", "12.2")
    result = _setup(ws, ["check", "gpu"], path=f"{on_path.parent}:{SYSTEM_PATH}", env=env)
    assert result.returncode == 0, result.stderr
    assert f"CUDA toolkit: {on_path} (release 12.2)" in result.stderr

    _fake_nvcc(ws / "cuda-13-on-path", "13.0")
    home_nvcc = _fake_nvcc(ws / "cuda-12.4" / "bin", "12.4")
    result = _setup(ws, ["check", "gpu"], path=f"{ws / 'cuda-13-on-path'}:{SYSTEM_PATH}",
                    env={**env, "CUDA_HOME": str(ws / "cuda-12.4")})
    assert result.returncode == 0, result.stderr
    assert f"CUDA toolkit: {home_nvcc} (release 12.4)" in result.stderr  # CUDA_HOME wins over PATH


def test_gpu_check_refuses_another_cuda_or_none_and_says_what_it_needs(ws):
    env = {"MICROCAL_VENV": str(ws / "venv")}
    wrong = _fake_nvcc(ws / "cuda-11", "11.8")
    result = _setup(ws, ["check", "gpu"], path=f"{wrong.parent}:{SYSTEM_PATH}", env=env)
    assert result.returncode == 1
    assert f"setup: {wrong} is CUDA 11.8, but TensorFlow 2.15.1 runs on CUDA 12" in result.stderr
    assert "module load cuda/12.x, or set CUDA_HOME" in result.stderr

    no_nvcc = path_without(ws / "no-nvcc-bin", ("nvcc",))
    result = _setup(ws, ["check", "gpu"], path=no_nvcc, env=env)
    assert result.returncode == 1
    assert "setup: no CUDA toolkit: nvcc is not on PATH and CUDA_HOME is not set" in result.stderr

    result = _setup(ws, ["check", "gpu"], path=no_nvcc, env={**env, "CUDA_HOME": str(ws / "no-such-cuda")})
    assert result.returncode == 1
    assert f"setup: no CUDA toolkit: CUDA_HOME={ws / 'no-such-cuda'} has no bin/nvcc" in result.stderr


def test_gpu_check_reads_the_real_nvcc_of_this_machine(ws):
    nvcc = shutil.which("nvcc")
    if not nvcc:
        pytest.skip("no nvcc on this machine")
    version = subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    release = re.search(r"release (\d+\.\d+)", version).group(1)
    result = _setup(ws, ["check", "gpu"], path=SYSTEM_PATH, env={"MICROCAL_VENV": str(ws / "venv")})
    if release.startswith("12."):
        assert result.returncode == 0 and f"(release {release})" in result.stderr, result.stderr
    else:
        assert result.returncode == 1
        assert f"is CUDA {release}, but TensorFlow 2.15.1 runs on CUDA 12" in result.stderr


# --- one flavour per environment ----------------------------------------------------------------

def test_gpu_setup_refuses_an_environment_holding_tensorflow_cpu(ws):
    venv = ws / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next(venv.glob("lib/python3.*/site-packages"))
    dist = site / "tensorflow_cpu-2.15.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tensorflow-cpu\nVersion: 2.15.1\n")
    before = sorted(p.name for p in site.iterdir())
    result = _setup(ws, ["gpu"], env={"MICROCAL_VENV": str(venv)})
    assert result.returncode == 1
    assert f"setup: {venv} holds the cpu flavour of TensorFlow; the gpu flavour needs an environment of its own" \
        in result.stderr
    assert "MICROCAL_VENV=" in result.stderr
    assert sorted(p.name for p in site.iterdir()) == before


# --- a real set-up as a non-root user -----------------------------------------------------------

def _cached_horovod_wheels() -> list[Path]:
    """This machine's cached Horovod builds for this Python (set-up as the user picks the same python3.X)."""
    cache = Path(os.environ.get("MICROCAL_WHEEL_CACHE")
                 or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "microcal-hpc" / "wheels")
    tag = "cp%d%d" % sys.version_info[:2]
    return sorted({wheel.parent for wheel in cache.glob(f"horovod-*/horovod-*-{tag}-*.whl")})


@pytest.mark.slow
def test_non_root_setup_with_mpi_on_path_builds_a_working_environment(ws, plain_user):
    """`setup.sh env` as a user without root, MPI from PATH: no system package touched, the environment
    is the user's, Horovod comes from the wheel cache (a copy of this machine's, so no second 3-5 min
    build; without one, set-up builds Horovod as the user) and runs 2 ranks over MPI as that user."""
    _require_mpi()
    cached = _cached_horovod_wheels()
    if not cached and os.environ.get("CI") != "true":
        pytest.skip("no cached Horovod wheel for this Python (run scripts/setup.sh once); without it this test "
                    "builds Horovod as the user (3-5 min more)")
    for entry in cached:
        shutil.copytree(entry, ws / "home" / "wheels" / entry.name)
    if plain_user:
        chown_tree(ws / "home", plain_user)
    venv = ws / "home" / "venv"
    env = {"MICROCAL_VENV": str(venv), "MICROCAL_WHEEL_CACHE": str(ws / "home" / "wheels")}
    result = _setup(ws, ["env"], user=plain_user, env=env, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "no system packages needed" in result.stderr
    if cached:
        assert f"horovod==0.28.1 from the cached wheel in {ws / 'home' / 'wheels'}" in result.stderr
    assert not (ws / "calls").exists()  # sudo, apt-get, dpkg-query: not even probed
    assert owner_uid(venv / "pyvenv.cfg") == (owner_uid(ws / "home") if plain_user else os.geteuid())

    allreduce = ("import horovod.tensorflow as hvd, tensorflow as tf; hvd.init(); "
                 "print('sum', int(hvd.allreduce(tf.constant(hvd.rank() + 1), op=hvd.Sum)))")
    command = ["env", "-i", f"HOME={ws / 'home'}", f"PATH={venv / 'bin'}:{SYSTEM_PATH}", "TF_CPP_MIN_LOG_LEVEL=3",
               "OMPI_MCA_rmaps_base_oversubscribe=1", "mpirun", "-np", "2", str(venv / "bin" / "python"), "-c",
               allreduce]
    if plain_user:
        command = ["runuser", "-u", plain_user, "--", *command]
    ranks = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    assert ranks.stdout.split().count("3") == 2, ranks.stdout  # 1 + 2 on both ranks
