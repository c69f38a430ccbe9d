"""Run the microcal-hpc CLI and record which files this process creates or renames under a folder.

    python tests/write_audit.py WATCH_DIR REPORT_PREFIX -- train --data ... (microcal-hpc arguments)

A Python audit hook (sys.addaudithook) sees every ``open`` for writing, ``os.rename``/``os.replace``,
``os.mkdir`` and ``shutil`` move made from Python. At exit the paths (relative to WATCH_DIR) go to
``REPORT_PREFIX-rank<R>.json``, R from the launcher's rank variable. Used by tests/test_horovod.py to
check that only rank 0 writes a job's outputs. Writes made inside C++ (TensorFlow's checkpoint
files) are not seen, but every output of the job is renamed or opened from Python at least once.
"""
from __future__ import annotations

import atexit
import json
import os
import sys

_RANK_VARS = ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")


def _rank() -> str:
    for var in _RANK_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return "0"


def main() -> int:
    watch, prefix, sep, *cli_args = sys.argv[1:]
    if sep != "--":
        raise SystemExit("usage: write_audit.py WATCH_DIR REPORT_PREFIX -- ARGS...")
    watch = os.path.realpath(watch)
    seen: list[list[str]] = []

    def rel(path) -> str | None:
        try:
            p = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return None
        return os.path.relpath(p, watch) if p == watch or p.startswith(watch + os.sep) else None

    def hook(event: str, args: tuple) -> None:
        if event == "open" and len(args) >= 2 and isinstance(args[0], (str, bytes, os.PathLike)):
            mode, flags = args[1], args[2] if len(args) > 2 else 0
            writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            paths = [args[0]] if writes else []
        elif event in ("os.rename", "os.replace", "shutil.move"):
            paths = [args[0], args[1]]
        elif event == "os.mkdir":
            paths = [args[0]]
        else:
            return
        for p in paths:
            r = rel(p)
            if r is not None:
                seen.append([event, r])

    def report() -> None:
        with open(f"{prefix}-rank{_rank()}.json", "w", encoding="utf-8") as fh:
            json.dump(seen, fh)

    atexit.register(report)
    sys.addaudithook(hook)
    from jobs.cli import main as cli_main

    return cli_main(cli_args)


if __name__ == "__main__":
    sys.exit(main())
