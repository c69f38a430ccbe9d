"""Shared fixtures: the real data set (packed once per session), synthetic image trees, markers.

Real-data tests need ``../shared/data/Mammography_micro`` (or MICROCAL_DATA). Outside CI they are
skipped when it is absent; in CI (CI=true) its absence is a failure, so nothing is skipped silently.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def real_data_root() -> Path:
    return Path(os.environ.get("MICROCAL_DATA", REPO.parent / "shared" / "data" / "Mammography_micro")).resolve()


def pytest_configure(config):
    for name, text in [
        ("realdata", "needs the real data set"),
        ("slow", "trains models or launches processes (seconds to minutes)"),
        ("mpi", "launches mpiexec"),
        ("horovod", "launches Horovod ranks"),
        ("slurm", "needs the real single-node SLURM cluster started by tests/slurm_cluster"),
        ("install", "checks installation: pip resolutions (need the package index), set-up as a non-root user"),
    ]:
        config.addinivalue_line("markers", f"{name}: {text}")


@pytest.fixture(autouse=True)
def _fresh_job_logging():
    """Jobs run in-process route the ``microcal`` loggers to their own files and stop propagation
    (joblog.setup_job_logging); undo that after each test so that ``caplog`` works in any test order."""
    import logging

    yield
    root = logging.getLogger("microcal")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.propagate = True
    root.setLevel(logging.NOTSET)


@pytest.fixture(scope="session")
def real_root() -> Path:
    root = real_data_root()
    if not (root / "Train").is_dir():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real data set not found at {root} (CI must have ../shared beside the clone)")
        pytest.skip(f"real data set not found at {root}")
    return root


@pytest.fixture(scope="session")
def real_manifest(real_root) -> Path:
    return real_root.parent / "Mammography_micro.sha256"


@pytest.fixture(scope="session")
def packed_real(real_root, tmp_path_factory) -> Path:
    """The real data set packed once per test session."""
    from data_prep.pack import pack_tree
    from microcal_hpc.config import DataConfig

    out = tmp_path_factory.mktemp("packed") / "real.h5"
    pack_tree(real_root, out, DataConfig())
    return out


@pytest.fixture
def make_tree(tmp_path):
    """Factory: ``make_tree(counts=..., shape=..., fmt=...)`` writes a synthetic tree under tmp_path."""
    from microcal_hpc.synthetic import make_image_tree

    made = []

    def _make(name: str = "tree", **kwargs) -> Path:
        root = make_image_tree(tmp_path / name, **kwargs)
        made.append(root)
        return root

    return _make


@pytest.fixture(scope="session")
def packed_synthetic(tmp_path_factory) -> Path:
    """A small synthetic 60x60 set (Train 40/40, Test 12/12) packed once per session."""
    from data_prep.pack import pack_tree
    from microcal_hpc.config import DataConfig
    from microcal_hpc.synthetic import make_image_tree

    base = tmp_path_factory.mktemp("synthetic")
    root = make_image_tree(base / "tree", counts={"Train": (40, 40), "Test": (12, 12)})
    out = base / "synthetic.h5"
    pack_tree(root, out, DataConfig())
    return out
