"""Atomic outputs: write to a temporary name in the target folder, rename when complete.

A temporary output is named ``.NAME.HOST~PID~XXXXXXXX[SUFFIX].tmp`` beside ``NAME`` (hidden; ``HOST`` is
the short host name, ``PID`` the writing process); so is a scratch folder for intermediate files
(:func:`scratch_folder`). A process killed while writing (SIGKILL, out of memory) cannot remove them;
the next :func:`atomic_path` in that folder does, once that process is gone
(:func:`remove_stale_temporaries`). Nothing else is ever removed: not a living process's temporary, not
another host's, not a file of any other name.

A failure to write (disk full, read-only file system, quota, I/O error), whichever library reports
it, becomes one :class:`~microcal_hpc.errors.OutputError` naming the output. SIGTERM can be made to
raise (:func:`sigterm_raises`) so that these blocks unwind and remove their temporary output.
"""
from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import traceback
from pathlib import Path
from typing import Any, Callable, Iterator

from microcal_hpc.errors import MicrocalError, OutputError, causes, os_reason
from microcal_hpc.joblog import get_logger

# errno values that mean "this output cannot be written here": with a distinctive text, and without
# ("Permission denied" in a message may be about an input)
_FULL_OR_READ_ONLY = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EFBIG)
WRITE_ERRNOS = _FULL_OR_READ_ONLY + (errno.EACCES, errno.EPERM)
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[^.~/]+)~(?P<pid>\d+)~[a-z0-9_]{8}[^/]*\.tmp$")


def _host() -> str:
    return socket.gethostname().split(".")[0] or "localhost"


def _temporary_prefix(final: Path) -> str:
    return f".{final.name}.{_host()}~{os.getpid()}~"


def process_alive(pid: int) -> bool:
    """True while process ``pid`` of this host exists and has not ended (a zombie has ended)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary outputs in ``folder`` whose writing process (on this host) is gone; return them."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host = _host()
    for entry in entries:
        m = _TEMPORARY.match(entry.name)
        if not m or m["host"] != host or process_alive(int(m["pid"])):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                path.unlink()
        if not path.exists():
            get_logger("atomic").warning("removed %s: a temporary output left by process %s, which is gone",
                                         path, m["pid"])
            removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file or folder is removed and
    ``final`` is left untouched, so readers never see a half-written output; a failure to write
    is raised as OutputError naming ``final``. Stale temporaries of the folder are removed first.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=_temporary_prefix(final), suffix=f"{suffix}.tmp", dir=final.parent)
    except OSError as e:
        raise OutputError(f"{final}: cannot write ({os_reason(e)})") from None
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.unlink()  # the caller creates it (h5py, np.savez, a folder ...)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException as e:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        reason = write_failure(e, tmp)
        if reason is not None:
            _release_writer(e)
            raise OutputError(f"{final}: cannot write ({reason})") from None
        raise


@contextlib.contextmanager
def scratch_folder(final: str | os.PathLike, suffix: str = ".scratch") -> Iterator[Callable[[], Path]]:
    """Yield a function that returns a scratch folder beside ``final`` for intermediate files: created at
    its first call (a block that needs none creates none), removed with its contents when the block ends,
    however it ends. Named like a temporary output, so one left by a killed process is removed by the
    next :func:`atomic_path` there. A failure to write is raised as OutputError naming ``final``."""
    final = Path(final)
    made: list[Path] = []

    def folder() -> Path:
        if not made:
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                made.append(Path(tempfile.mkdtemp(prefix=_temporary_prefix(final), suffix=f"{suffix}.tmp",
                                                  dir=final.parent)))
            except OSError as e:
                raise OutputError(f"{final}: cannot write ({os_reason(e)})") from None
        return made[0]

    try:
        yield folder
    except Exception as e:
        reason = write_failure(e, made[0]) if made else None
        if reason is not None:
            raise OutputError(f"{final}: cannot write ({reason})") from None
        raise
    finally:
        if made:
            shutil.rmtree(made[0], ignore_errors=True)


def _release_writer(exc: BaseException) -> None:
    """Free what the failed writer's frames still hold, now and quietly: e.g. a half-written zip archive
    (np.savez) whose finaliser would otherwise print "Exception ignored ... seek of closed file" at exit."""
    hook = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None
    try:
        for e in causes(exc):
            traceback.clear_frames(e.__traceback__)
        gc.collect()
    finally:
        sys.unraisablehook = hook


def write_failure(exc: BaseException, path: str | os.PathLike | None = None) -> str | None:
    """The OS's reason (e.g. "No space left on device") if ``exc`` or an exception it arose from is a
    failure to write a file, else None. Libraries wrap it differently (h5py: OSError or RuntimeError;
    TensorFlow: its own errors; zipfile: a ValueError while handling it), so the chain and the messages are
    searched. ``path``: an OSError naming another file than ``path`` (or a file inside it) does not count."""
    if isinstance(exc, MicrocalError) or not isinstance(exc, Exception):  # already one line; or a signal
        return None
    for e in causes(exc):
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            if e.filename is None or path is None or str(e.filename).startswith(str(path)):
                return os.strerror(e.errno)
        else:
            for code in _FULL_OR_READ_ONLY:
                if os.strerror(code) in str(e):
                    return os.strerror(code)
    return None


def require_free_space(path: str | os.PathLike, nbytes: int) -> None:
    """Raise OutputError naming ``path`` when its file system has fewer than ``nbytes`` free bytes.

    For outputs whose size is known before writing (the features file): HDF5 can crash the process
    (segmentation fault) when the disk fills in the middle of some operations (copying datasets), so
    a file that cannot fit is refused before HDF5 touches it.
    """
    folder = Path(path).parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return  # nothing to check against; writing will report the problem
    free = st.f_bavail * st.f_frsize
    if free < nbytes:
        raise OutputError(f"{path}: cannot write ({os.strerror(errno.ENOSPC)}: about {_mb(nbytes)} needed, "
                          f"{_mb(free)} free)")


def _mb(nbytes: int) -> str:
    return f"{nbytes / 2**20:.1f} MB"


@contextlib.contextmanager
def h5_output(path: str | os.PathLike, mode: str = "w"):
    """``h5py.File(path, mode)`` for writing a temporary output, closed so that a failure cannot crash the process.

    When a write fails (disk full), HDF5 cannot flush the file at close, and it tries again when the
    process exits, where it crashes (segmentation fault). So chunks are written through (no chunk
    cache: write whole chunks), the file is flushed before it is closed, and if the block or the flush
    fails, the file is emptied first: closing then has only a little metadata to write, which fits.
    Use it only for files that are removed on failure (e.g. inside :func:`atomic_path`).
    """
    import h5py

    f = h5py.File(path, mode, rdcc_nbytes=0)
    try:
        yield f
        f.flush()
    except BaseException:
        with contextlib.suppress(OSError):
            os.truncate(path, 0)
        with contextlib.suppress(Exception):
            f.close()
        raise
    f.close()


class SignalReceived(BaseException):
    """Raised by :func:`sigterm_raises`; a BaseException so that no ``except Exception`` swallows it."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signal_name(signum))
        self.signum = int(signum)


def signal_name(signum: int) -> str:
    """``15`` -> ``"SIGTERM"``."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def signal_number(exc: BaseException) -> int | None:
    """The signal an exception stands for (SIGINT for KeyboardInterrupt, the signal of a SignalReceived),
    also when it was raised while unwinding from one: an exception raised asynchronously can break a
    library's bookkeeping on its way out (TensorFlow: "AssertionError: Concurrent access?")."""
    for e in causes(exc):
        if isinstance(e, SignalReceived):
            return e.signum
        if isinstance(e, KeyboardInterrupt):
            return int(signal.SIGINT)
    return None


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`SignalReceived`, so that the ``atomic_path`` blocks
    inside it unwind and remove their temporary output (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _handler(signum, frame):
        raise SignalReceived(signum)

    previous = signal.signal(signal.SIGTERM, _handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically write a text file."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NumPy scalars and arrays are converted)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
