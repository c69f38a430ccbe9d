"""Helpers for the install tests: a copy of the checkout, fake system commands, a PATH without some
commands, and running scripts/setup.sh (optionally as another user) in a clean environment."""
from __future__ import annotations

import importlib.util
import os
import shutil
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SETUP = "scripts/setup.sh"
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
# what a checkout copy leaves out: environments, run outputs, git, caches
_NOT_COPIED = shutil.ignore_patterns(".git", ".venv*", "runs", "results", "__pycache__", "*.egg-info",
                                     ".pytest_cache", "build")


def lock_module():
    """scripts/lock_constraints.py as a module (its constraint reading and interpreter lookup)."""
    spec = importlib.util.spec_from_file_location("lock_constraints", REPO / "scripts" / "lock_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def copy_checkout(dest: Path) -> Path:
    """The working tree (uncommitted changes included) without environments, outputs or .git."""
    shutil.copytree(REPO, dest, ignore=_NOT_COPIED, symlinks=True)
    return dest


def write_script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def recording_fakes(bin_dir: Path, calls: Path, names=("sudo", "apt-get", "dpkg-query")) -> Path:
    """Commands that only append their name and arguments to ``calls`` and fail: nothing is installed."""
    for name in names:
        write_script(bin_dir / name, f'echo "{name} $*" >> "{calls}"; exit 1')
    return bin_dir


def path_without(dest: Path, excluded_prefixes: tuple[str, ...]) -> str:
    """A PATH (one folder of symlinks) holding every command of SYSTEM_PATH except those whose name starts
    with one of ``excluded_prefixes`` (e.g. a machine without MPI: ("mpi", "orte", "opal"))."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in SYSTEM_PATH.split(":"):
        for entry in Path(folder).iterdir():
            link = dest / entry.name
            if not entry.name.startswith(excluded_prefixes) and not link.exists():
                link.symlink_to(entry)
    return str(dest)


def run_setup(checkout: Path, args: list[str], *, home: Path, path: str, user: str | None = None,
              env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``bash scripts/setup.sh ARGS`` from ``checkout`` with nothing but HOME, PATH and ``env`` set,
    as ``user`` (through runuser; needs root) or as the current user."""
    clean = {"HOME": str(home), "PATH": path, "LANG": "C.UTF-8", **(env or {})}
    command = ["env", "-i", *(f"{k}={v}" for k, v in clean.items()), "bash", str(checkout / SETUP), *args]
    if user:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=checkout)


def chown_tree(path: Path, user: str) -> None:
    subprocess.run(["chown", "-R", f"{user}:{user}", str(path)], check=True)


def owner_uid(path: Path) -> int:
    return os.stat(path).st_uid
