"""Per-job logging: one log file in the job's folder, plus concise lines on stderr."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from microcal_hpc.errors import os_reason

_FORMAT = "%(asctime)s %(levelname)s [%(name)s] %(message)s"


class JobLogFile(logging.FileHandler):
    """A job's log file. If a line cannot be written (disk full), one warning says so on stderr and the job
    carries on: a log line must not end the job or print logging's traceback for every record."""

    _warned = False

    def handleError(self, record: logging.LogRecord) -> None:
        if self._warned:
            return
        self._warned = True
        error = sys.exc_info()[1]
        reason = os_reason(error) if isinstance(error, OSError) else error
        try:
            print(f"microcal-hpc: warning: {self.baseFilename}: cannot write the job log ({reason}); "
                  "continuing without it", file=sys.stderr)
        except OSError:
            pass


def file_handler(log_file: str | os.PathLike) -> logging.FileHandler:
    """A handler appending job log lines (time, level, logger, message) to ``log_file``; creates its folder."""
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    handler = JobLogFile(log_file, mode="a", encoding="utf-8")
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


def log_file() -> str | None:
    """The current job's log file (None when it logs to stderr only)."""
    for handler in logging.getLogger("microcal").handlers:
        if isinstance(handler, logging.FileHandler):
            return handler.baseFilename
    return None


def log_to_file_only(name: str, message: str, level: int = logging.ERROR) -> None:
    """Record ``message`` in the job's log file but not on stderr (where the caller prints its own line)."""
    record = logging.LogRecord(get_logger(name).name, level, __file__, 0, message, None, None)
    for handler in logging.getLogger("microcal").handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
