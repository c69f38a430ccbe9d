"""Error types that the command line turns into one-line messages and a non-zero exit."""
from __future__ import annotations

import os
import signal
from typing import Iterator


class MicrocalError(Exception):
    """Base class: an expected failure whose message is shown to the user as one line."""

    exit_code = 2


class InputError(MicrocalError):
    """Bad input data: the message names the file and the problem."""


class ConfigError(MicrocalError):
    """Bad configuration: unknown key, wrong type, or an invalid value."""


class OutputError(MicrocalError):
    """An output cannot be written (disk full, read-only file system, quota ...): the message names it."""

    exit_code = 1


class Terminated(MicrocalError):
    """The job was stopped by a signal (e.g. SIGTERM from scancel) while writing; its temporary output was removed.

    Exit code 128 + the signal's number, as a shell reports a process killed by it (SIGTERM: 143).
    """

    def __init__(self, message: str, signum: int = signal.SIGTERM):
        super().__init__(message)
        self.exit_code = 128 + int(signum)


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc``, then the exception it was raised from or while handling, and so on (each once)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def os_reason(e: OSError) -> str:
    """The OS's reason for ``e`` in a few words (a folder to be created that is a file: said so)."""
    if isinstance(e, FileExistsError) and e.filename is not None and not os.path.isdir(e.filename):
        return "exists and is not a folder"
    return os.strerror(e.errno) if e.errno else ((str(e).splitlines() or [type(e).__name__])[0])


def describe_os_error(e: OSError) -> str:
    """``FILE: reason`` (``FILE -> OTHER: reason`` for a rename) in one line."""
    if e.filename is None:
        return os_reason(e)
    other = f" -> {e.filename2}" if e.filename2 is not None else ""
    return f"{e.filename}{other}: {os_reason(e)}"
