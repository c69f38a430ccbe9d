"""The TensorFlow flavours and the pins: what `pip install` plans for each selection (real pip
resolutions against the package index, nothing installed), and that the pins are declared once.

The dry runs need the package index (PyPI or the machine's configured mirror). Outside CI they are
skipped when it cannot be reached; under CI=true that is a failure. Each has a timeout: pip reads every
planned wheel's metadata, and from an index without PEP 658 metadata (like this machine's mirror) that
means downloading the wheels (the GPU selection: ~2.6 GB, the CPU one ~0.4 GB).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

from install_helpers import REPO, copy_checkout, lock_module

lock = lock_module()
TF = "2.15.1"
CUDA_WHEELS = {"nvidia-cublas-cu12", "nvidia-cudnn-cu12", "nvidia-cuda-runtime-cu12", "nvidia-nccl-cu12"}
PLAN_TIMEOUT = 900
pytestmark = pytest.mark.install


def _requirement_lines(name: str) -> list[str]:
    lines = (line.split("#")[0].strip() for line in (REPO / name).read_text().splitlines())
    return [line for line in lines if line]


def _metadata(tmp_path: Path) -> list[str]:
    """The package's core metadata lines, as setuptools builds them from setup.py."""
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)], cwd=REPO,
                   check=True, capture_output=True)
    return (next(tmp_path.glob("*.egg-info")) / "PKG-INFO").read_text().splitlines()


# --- declarations (no network) -------------------------------------------------------------------

def test_package_forces_no_tensorflow_and_each_extra_selects_one_flavour(tmp_path):
    meta = _metadata(tmp_path)
    requires = [line.removeprefix("Requires-Dist: ") for line in meta if line.startswith("Requires-Dist: ")]
    unconditional = [r for r in requires if "extra ==" not in r]
    assert not [r for r in unconditional if r.lower().startswith("tensorflow")]
    assert unconditional == _requirement_lines("requirements.txt")
    assert [r for r in requires if r.startswith("tensorflow")] == [
        f'tensorflow-cpu=={TF}; extra == "cpu"', f'tensorflow[and-cuda]=={TF}; extra == "gpu"']
    python = next(line.removeprefix("Requires-Python: ") for line in meta if line.startswith("Requires-Python: "))
    assert SpecifierSet(python) == SpecifierSet(">=3.10,<3.12")


def test_flavour_files_share_everything_but_tensorflow():
    cpu, gpu = (_requirement_lines(f"requirements-{f}.txt") for f in ("cpu", "gpu"))
    assert [line for line in cpu if line.startswith("-r")] == [line for line in gpu if line.startswith("-r")]
    assert [line for line in cpu if not line.startswith("-r")] == [f"tensorflow-cpu=={TF}"]
    assert [line for line in gpu if not line.startswith("-r")] == [f"tensorflow[and-cuda]=={TF}"]


@pytest.mark.parametrize("python_version", lock.PYTHON_VERSIONS)
def test_every_requirement_is_pinned_and_the_lock_agrees(python_version):
    """One version per package: each requirements file pins exactly, and constraints.txt says the same."""
    locked = lock.read_constraints(REPO / "constraints.txt", python_version)
    for name in sorted(p.name for p in REPO.glob("requirements*.txt")):
        for line in _requirement_lines(name):
            if line.startswith("-r"):
                continue
            req = Requirement(line)
            assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", f"{name}: {line}"
            assert locked[canonicalize_name(req.name)] == next(iter(req.specifier)).version, f"{name}: {line}"


# --- real resolutions ---------------------------------------------------------------------------

def _index_reachable() -> bool:
    probe = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "pip"], capture_output=True, timeout=120)
    return probe.returncode == 0


def _plan(python: str, args: list[str]) -> subprocess.Popen:
    """Start pip's plan (never an install) for the interpreter ``python``, with this environment's pip."""
    return subprocess.Popen([sys.executable, "-m", "pip", "--python", python, "install", "--dry-run",
                             "--ignore-installed", "--quiet", "--report", "-", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(name: str, proc: subprocess.Popen) -> tuple[str, dict[str, str]]:
    stdout, stderr = proc.communicate(timeout=PLAN_TIMEOUT)
    assert proc.returncode == 0, f"pip could not plan {name}:\n{stderr[-3000:]}"
    report = json.loads(stdout)
    return report["environment"]["python_version"], lock.planned(report)


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """{selection: (Python version, {package: version})} as pip plans them. "gpu" and "cpu" each combine
    the ways of asking for a flavour: what scripts/setup.sh installs (requirements-<flavour>.txt), the
    package's extra, and for the GPU the command that planned both flavours before the extras existed.
    On Python 3.10 the CPU flavour only, to save a second ~2.6 GB download: the CUDA wheels are the same
    files for every Python (scripts/lock_constraints.py resolves the GPU flavour on 3.10 too)."""
    if not _index_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail("the package index cannot be reached (pip index versions pip failed)")
        pytest.skip("the package index cannot be reached")
    checkout = copy_checkout(tmp_path_factory.mktemp("checkout") / "repo")
    common = ["--no-build-isolation", "-c", str(checkout / "constraints.txt")]
    python310 = lock.find_python("3.10")
    if not python310 and os.environ.get("CI") == "true":
        pytest.fail("no Python 3.10 found (on PATH or in ~/.pyenv) to resolve for")
    running = {  # concurrently: mostly waiting for downloads
        "gpu": _plan(sys.executable, ["-r", str(checkout / "requirements-gpu.txt"), f"tensorflow[and-cuda]=={TF}",
                                      f"{checkout}[gpu]", *common]),
        "cpu": _plan(sys.executable, ["-r", str(checkout / "requirements-cpu.txt"), f"{checkout}[cpu]", *common]),
        **({"cpu-py3.10": _plan(python310, ["-r", str(checkout / "requirements-cpu.txt"), *common])}
           if python310 else {}),
    }
    try:
        return {name: _collect(name, proc) for name, proc in running.items()}
    finally:
        for proc in running.values():  # after a failure the others may still run
            proc.kill()


def test_gpu_selection_plans_tensorflow_with_its_cuda_wheels_and_no_tensorflow_cpu(plans):
    _, plan = plans["gpu"]
    assert plan.get("tensorflow") == TF
    assert "tensorflow-cpu" not in plan
    assert CUDA_WHEELS <= set(plan), sorted(n for n in plan if n.startswith("nvidia"))


def test_cpu_selection_plans_tensorflow_cpu_and_no_cuda(plans):
    for name in [n for n in plans if n.startswith("cpu")]:
        _, plan = plans[name]
        assert plan.get("tensorflow-cpu") == TF, name
        assert "tensorflow" not in plan, name
        assert not [n for n in plan if n.startswith("nvidia-")], name


def test_every_planned_version_is_the_locked_one(plans):
    """constraints.txt is complete: what pip plans on each Python is exactly what the lock says."""
    for name, (python_version, plan) in plans.items():
        locked = lock.read_constraints(REPO / "constraints.txt", python_version)
        plan = {n: v for n, v in plan.items() if n != "microcal-hpc"}
        assert {n: v for n, v in plan.items() if locked.get(n) != v} == {}, f"{name} (Python {python_version})"


def test_python_310_is_resolved(plans):
    if "cpu-py3.10" not in plans:
        pytest.skip("no Python 3.10 on this machine")
    assert plans["cpu-py3.10"][0] == "3.10"
    assert "tomli" in plans["cpu-py3.10"][1]  # a 3.10-only dependency (of pytest): markers were evaluated for 3.10
