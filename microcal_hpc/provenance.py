"""Where a result came from: installed library versions, the git commit of this package's checkout and a
digest of this package's source.

Read by the launcher's ``RUN/manifest.json`` and by the report (which falls back to them when a run has no
manifest, and rebuilds a report built by other code: :func:`source_digest`). Versions come from package
metadata, so nothing is imported.
"""
from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any, Optional

LIBRARIES = {  # import name -> distribution name(s)
    "tensorflow": ("tensorflow-cpu", "tensorflow"),
    "numpy": ("numpy",),
    "h5py": ("h5py",),
    "pywt": ("PyWavelets",),
    "sklearn": ("scikit-learn",),
    "matplotlib": ("matplotlib",),
    "submitit": ("submitit",),
    "mpi4py": ("mpi4py",),
    "horovod": ("horovod",),
    "yaml": ("PyYAML",),
}


def library_versions() -> dict[str, Optional[str]]:
    """Installed version of each library of ``LIBRARIES`` (None if it is not installed)."""
    from importlib import metadata

    out: dict[str, Optional[str]] = {}
    for name, dists in LIBRARIES.items():
        out[name] = None
        for d in dists:
            try:
                out[name] = metadata.version(d)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the checkout holding this package ({} outside a git checkout)."""
    here = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10)
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=20)
        return {"commit": commit.stdout.strip(), "dirty": bool(dirty.stdout.strip()), "path": str(here)}
    except (OSError, subprocess.SubprocessError):
        return {}


def source_digest() -> str:
    """sha256 (16 hex digits) of every ``.py`` file of the microcal_hpc package, by relative path and content:
    it changes with the code, in a git checkout or an installed copy alike."""
    import hashlib

    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(f"{path.relative_to(root).as_posix()}\n".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]
