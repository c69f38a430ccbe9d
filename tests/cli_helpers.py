"""Helpers shared by the test modules that write image trees, run the ``microcal-hpc`` command line and
wait for what it does."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def cli_env() -> dict:
    """The environment for ``python -m jobs`` subprocesses: this checkout first on the path."""
    return dict(os.environ, PYTHONPATH=str(REPO))


def write_pgm(path: Path, img: np.ndarray) -> None:
    """A raw 8-bit P5 file of ``img`` (H, W), written without Pillow; creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"P5\n%d %d\n255\n" % (img.shape[1], img.shape[0]) + img.tobytes())


def poll(condition: Callable[[], bool], timeout: float, every: float) -> bool:
    """True as soon as ``condition()`` is, checking every ``every`` s; False once ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)
    return True


def wait_while_running(proc, condition: Callable[[], bool], timeout: float, every: float, never: str,
                       ended: Callable = lambda proc: proc.stderr.read()) -> None:
    """Check ``condition()`` every ``every`` s until it holds, asserting all along that ``proc`` (a Popen,
    or None for none) is still running (message: ``ended(proc)``) and that ``timeout`` s have not passed
    (message: ``never``)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc is None or proc.poll() is None, ended(proc)
        assert time.monotonic() < deadline, never
        time.sleep(every)
