"""Where a result came from: installed library versions and the git commit of this package's checkout.

Read by the launcher's ``RUN/manifest.json`` and by the report (which falls back to them when a run has no
manifest). Versions come from package metadata, so nothing is imported.
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
