"""Per-job logging: one log file in the job's folder, plus concise lines on stderr."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


def file_handler(log_file: str | os.PathLike) -> logging.FileHandler:
    """A handler appending job log lines (time, level, logger, message) to ``log_file``; creates its folder."""
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
    return handler


def setup_job_logging(log_file: str | os.PathLike | None, name: str = "microcal", level: int = logging.INFO,
                      console: bool = True) -> logging.Logger:
    """Route the ``microcal`` logger hierarchy to ``log_file`` (appended) and to stderr.

    Calling it again for another job replaces the previous handlers, so in-process (debug)
    campaigns write each job's lines to that job's own file.
    """
    root = logging.getLogger("microcal")
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    root.setLevel(level)
    root.propagate = False
    if log_file is not None:
        root.addHandler(file_handler(log_file))
    if console:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        root.addHandler(sh)
    return logging.getLogger(name if name.startswith("microcal") else f"microcal.{name}")


def get_logger(name: str) -> logging.Logger:
    """A logger below the ``microcal`` hierarchy."""
    return logging.getLogger(name if name.startswith("microcal") else f"microcal.{name}")
