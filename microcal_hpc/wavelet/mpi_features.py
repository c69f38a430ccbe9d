"""MPI-parallel wavelet feature extraction: packed HDF5 in, FEATURES.h5 out (layout: features_file.py).

How the work is split
    The images of both splits form one index range (Train first, then Test). Rank ``r`` of ``P`` takes
    the contiguous slice ``[r*G//P, (r+1)*G//P)``, its ends moved to the nearest multiple of the matrix
    engine's tile (32 images) within their split, and reads it from the packed file in pieces of at most
    ``cfg.wavelet.chunk_size`` images that do not cross the Train/Test border. Memory per rank is bounded
    by the chunk size, not by the number of images. Each image is computed the same way whatever its rank
    or piece, so the output is identical (byte for byte) for any number of ranks.

How the output is written
    Rank 0 creates the output under a temporary name with everything but the features: ids, labels,
    groups, and one contiguous, allocated feature dataset per split and feature set
    (``features_file.create_layout``), and sends every rank the byte offset of each dataset. Each rank
    then writes its own rows there itself (``os.pwrite`` from a writer thread, overlapping the next
    piece's computing): no rank sends features to another, and writing is spread over the ranks like
    the computing (a rank-0 writer was the bottleneck of 2 ranks at 100k images: 2 GB for ``both``).
    Every write is one contiguous byte range that no other rank touches and nothing is read back, which
    is safe on local disks, parallel file systems and NFS. When all ranks have written and closed the
    file, rank 0 reopens it, adds the settings and the 'complete' flag, and renames it into place.
    Ranks that wait for others do so in a polled non-blocking collective, not a busy-polling one.

Errors
    Every rank validates the settings and opens the input before the first collective. After each
    step all ranks agree through ``allreduce`` of an error flag; if any rank failed, rank 0 raises the
    first failing rank's message (one line, naming the file) and every other rank raises
    :class:`PeerFailed`, which the command line turns into a silent non-zero exit. No rank waits
    forever in a collective, and the output is written under a temporary name and renamed only at the end.

Signals
    SIGTERM or SIGINT to one rank (``kill``, a time limit, Ctrl-C): that rank unwinds (rank 0 removes the
    temporary output), says so in one line and exits with 128 + the signal's number at once, without
    MPI_Finalize (which would wait for the others); mpiexec, or srun with ``--kill-on-bad-exit``, then
    stops the other ranks with SIGTERM, and they end quietly (:class:`~microcal_hpc.distributed.Peers`).
    A rank killed outright (SIGKILL) is named by the launcher; rank 0's temporary output is then removed
    by the next run (:func:`~microcal_hpc.atomic.remove_stale_temporaries`).

Launching
    ``mpiexec -n N microcal-hpc wavelet-features ...`` or ``srun`` with N tasks; a plain process (no MPI
    launcher) runs serially without importing mpi4py.
"""
from __future__ import annotations

import contextlib
import logging
import os
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from microcal_hpc.atomic import (SignalReceived, atomic_path, remove_stale_temporaries, require_free_space,
                                 signal_name, signal_number, sigterm_raises)
from microcal_hpc.dataset import DAMAGE_ERRORS, SPLITS, cheap_to_verify, open_packed, verify_pixels
from microcal_hpc.distributed import Peers
from microcal_hpc.errors import ConfigError, InputError, MicrocalError, OutputError, Terminated, os_reason
from microcal_hpc.wavelet import features_file
from microcal_hpc.wavelet.matrix_dwt import TILE
from microcal_hpc.wavelet.transform import (check_feature_sets, check_keep_levels, feature_set_columns,
                                            feature_set_values, resolve_level, wavedec2_batch)

log = logging.getLogger("microcal.wavelet.features")


class PeerFailed(MicrocalError):
    """This rank stops because another rank failed; rank 0 reports that rank's error."""


# ------------------------------------------------------------------------------------------------
# Communicator: mpi4py when launched by an MPI launcher, a one-rank stand-in otherwise


class SerialComm:
    """The few communicator calls used here, for one process (no MPI needed)."""

    def Get_rank(self) -> int:
        return 0

    def Get_size(self) -> int:
        return 1

    def gather(self, value, root=0):
        return [value]

    def bcast(self, value, root=0):
        return value


_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "PMI_RANK", "MPI_LOCALNRANKS")


def get_comm():
    """MPI.COMM_WORLD when an MPI launcher (mpiexec, srun) started this process, else a SerialComm."""
    srun_tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1") or 1) if "SLURM_PROCID" in os.environ else 1
    mpi_env = any(os.environ.get(v) for v in _MPI_ENV)
    if not mpi_env and srun_tasks <= 1:
        return SerialComm()
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if not mpi_env and srun_tasks > 1 and comm.Get_size() != srun_tasks:
        # srun without an MPI plugin: each task initialised MPI alone and all would write the same output
        raise ConfigError(f"srun started {srun_tasks} tasks but MPI sees {comm.Get_size()} rank(s) per task; "
                          "launch with `srun --mpi=pmix` (or pmi2, as your SLURM supports) or with mpiexec")
    return comm


def _max_op():
    try:
        from mpi4py import MPI

        return MPI.MAX
    except ImportError:  # SerialComm ignores the op
        return None


# ------------------------------------------------------------------------------------------------
# Agreeing on errors


POLL_SECONDS = 0.0005
AGREE_EVERY_IMAGES = 4096  # the ranks agree on errors after every this many images (and at the end)


class _Agreement:
    """Collective error handling: after each step every rank learns whether any rank failed.

    This is also where a rank that finished its piece waits for the slower ones (and for rank 0's
    write). It waits in a non-blocking allreduce polled with short sleeps: a blocking MPI call
    busy-polls at 100% CPU (Open MPI's default), which on shared or oversubscribed cores takes CPU
    from the ranks still computing (measured here: 2 ranks slower than 1 on 2 busy cores).
    """

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.op = _max_op() if self.size > 1 else None

    def _any_failed(self, failed: bool) -> bool:
        if self.size == 1:
            return failed
        send = np.array([1 if failed else 0], dtype=np.int32)
        recv = np.zeros(1, dtype=np.int32)
        req = self.comm.Iallreduce(send, recv, op=self.op)
        while not req.Test():
            time.sleep(POLL_SECONDS)
        return bool(recv[0])

    def check(self, error: BaseException | None) -> None:
        """Collective. Return if no rank failed; otherwise raise on every rank (see module docstring)."""
        if not self._any_failed(error is not None):
            return
        summary = None if error is None else (type(error).__name__, str(error), isinstance(error, MicrocalError))
        reports = self.comm.gather(summary, root=0)
        if self.rank != 0:
            raise PeerFailed(f"rank {self.rank}: stopped because a rank failed (rank 0 reports the error)")
        if error is not None:
            raise error
        first = next(r for r, s in enumerate(reports) if s is not None)
        name, message, expected = reports[first]
        where = f" (on rank {first} of {self.size})"
        if expected:  # the same one-line error, with its exit code
            kind = {cls.__name__: cls for cls in (ConfigError, OutputError)}.get(name, InputError)
            raise kind(message + where)
        raise RuntimeError(f"{name}: {message}{where}")


@contextlib.contextmanager
def _capture(box: list):
    """Run a block, storing an Exception in ``box`` instead of raising it (to be agreed on collectively)."""
    try:
        yield
    except Exception as e:  # noqa: BLE001 - every failure must reach the agreement, not kill one rank
        box.append(e)


# ------------------------------------------------------------------------------------------------
# The plan: who computes which images in which round


@dataclass(frozen=True)
class Piece:
    split: str
    start: int  # within the split
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def rank_slices(counts: dict[str, int], size: int, align: int = 1) -> list[tuple[int, int]]:
    """Contiguous, balanced [start, stop) of the global index range (Train then Test) for each rank.

    With ``align`` > 1 every boundary sits at a multiple of ``align`` within its split (or at the split's
    end), so that ranks start on a tile of the matrix engine (slices then differ by up to ``align``).
    """
    total = sum(counts[s] for s in SPLITS)
    bounds = [0]
    for r in range(1, size):
        b = r * total // size
        offset = 0
        for split in SPLITS:
            if b < offset + counts[split] or split == SPLITS[-1]:
                within = (b - offset + align // 2) // align * align
                b = offset + min(within, counts[split])
                break
            offset += counts[split]
        bounds.append(max(b, bounds[-1]))
    bounds.append(total)
    return list(zip(bounds[:-1], bounds[1:]))


def rank_pieces(counts: dict[str, int], size: int, rank: int, chunk: int, align: int = 1) -> list[Piece]:
    """The pieces (<= chunk images, within one split) of one rank's slice, in order."""
    start, stop = rank_slices(counts, size, align)[rank]
    pieces, offset = [], 0
    for split in SPLITS:
        lo, hi = max(start, offset), min(stop, offset + counts[split])
        for a in range(lo, hi, chunk):
            pieces.append(Piece(split, a - offset, min(a + chunk, hi) - offset))
        offset += counts[split]
    return pieces


# ------------------------------------------------------------------------------------------------
# The job


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _cpu_seconds() -> float:
    """User + system CPU time of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _describe_settings(wcfg) -> str:
    return (f"wavelet={wcfg.wavelet} level={wcfg.level} keep_levels={list(wcfg.keep_levels)} mode={wcfg.mode} "
            f"features={wcfg.features} dtype={wcfg.dtype} engine={wcfg.engine}")


def extract_to_file(wcfg, data: str | os.PathLike, out: str | os.PathLike, comm=None, force: bool = False,
                    verify: bool | None = None, progress_every: float = 10.0) -> dict:
    """Compute the wavelet features of every image of ``data`` into ``out``; collective over ``comm``.

    ``verify``: check the packed file's whole-file checksum (rank 0) and every image read against its
    pixel hash (None: only when the file is small enough for this to be cheap, dataset.cheap_to_verify).
    Returns a run summary (identical keys on every rank; timings and memory are gathered on rank 0):
    status (written | up to date), ranks, images, seconds, images_per_second, peak_rss_mb_per_rank.

    A signal that stops one rank (SIGTERM, SIGINT) stops every rank: see :class:`Peers`.
    """
    comm = comm if comm is not None else get_comm()
    peers = Peers(comm.Get_rank(), comm.allgather(Peers.here()) if comm.Get_size() > 1 else [Peers.here()])
    if comm.Get_rank() == 0:
        remove_stale_temporaries(Path(out).parent)  # left by a killed run, even if the output is up to date
    try:
        with sigterm_raises():
            return _extract(wcfg, data, out, comm, force, verify, progress_every)
    except (SignalReceived, KeyboardInterrupt) as e:
        signum = signal_number(e)
        if peers.size > 1:  # not MPI_Abort: srun would SIGKILL rank 0 before it removes the temporary output
            peers.stop_after_signal(signum, f"; every rank stops, {out} not written")
        if isinstance(e, KeyboardInterrupt):
            raise
        raise Terminated(f"{out}: terminated by {signal_name(signum)}; nothing written", signum) from None


def _extract(wcfg, data, out, comm, force: bool, verify: bool | None, progress_every: float) -> dict:
    """The collective job, step by step; every step ends with the ranks agreeing on errors."""
    run = _Extraction(wcfg, Path(data), Path(out), comm)
    run.open_input(verify)
    if run.up_to_date(force):
        return run.summary("up to date")
    run.plan()
    stack = contextlib.ExitStack()  # holds the temporary output; closing it renames the file into place
    run.create_output(stack)
    try:
        run.compute_rounds(progress_every)
        run.finish_file()
    except BaseException as e:
        run.writer.close()  # let a running write finish before the file is removed
        run.close_fd()
        stack.__exit__(type(e), e, e.__traceback__)
        run.packed.close()
        raise
    run.writer.close()
    with _capture(run.err):
        stack.close()
    run.packed.close()
    run.agree.check(run.first_error())
    return run.summary("written")


class _Extraction:
    """One rank's state through the steps of :func:`_extract` (numbered in the order it runs them)."""

    def __init__(self, wcfg, data: Path, out: Path, comm):
        self.wcfg, self.data, self.out, self.comm = wcfg, data, out, comm
        self.agree = _Agreement(comm)
        self.rank, self.size = self.agree.rank, self.agree.size
        self.t0 = time.perf_counter()
        self.err: list = []  # this rank's error of the current step, to be agreed on
        self.packed = None
        self.fd = None
        self.timers = dict.fromkeys(("read", "compute", "wait", "write", "write_wait"), 0.0)
        self.writer = None

    def first_error(self) -> BaseException | None:
        return self.err[0] if self.err else None

    def _agree(self) -> None:
        """Close the input if this rank failed, then agree (raises on every rank if any failed)."""
        _close_on_error(self.packed, self.err)
        self.agree.check(self.first_error())

    def open_input(self, verify: bool | None) -> None:
        """1. Every rank: the settings and the input, before any data collective."""
        wcfg, data, out = self.wcfg, self.data, self.out
        with _capture(self.err):
            if out.is_dir():
                raise InputError(f"{out}: output path is a folder; give a file name such as features.h5")
            if self.rank == 0:
                try:
                    out.parent.mkdir(parents=True, exist_ok=True)
                except OSError as e:
                    raise OutputError(f"{out}: cannot create the output folder ({os_reason(e)})") from None
            wcfg.validate()
            self.verify = cheap_to_verify(data) if verify is None else verify
            self.packed = open_packed(data, verify=self.verify and self.rank == 0)
            self.shape = tuple(int(s) for s in self.packed.attrs["image_shape"])
            self.counts = {s: int(self.packed[s]["images"].shape[0]) for s in SPLITS}
            for s in SPLITS:
                if tuple(self.packed[s]["images"].shape[1:]) != self.shape:
                    raise InputError(f"{data}: /{s}/images has shape {self.packed[s]['images'].shape}, "
                                     f"attribute image_shape says {self.shape}")
            self.info = resolve_level(self.shape, wcfg.wavelet, wcfg.level, wcfg.mode,
                                      logger=log if self.rank == 0 else logging.getLogger("microcal.quiet"))
            self.keep = check_keep_levels(wcfg.keep_levels, self.info.effective)
            self.sets = check_feature_sets(wcfg.features, self.info.effective, self.keep)
        self._agree()

    def up_to_date(self, force: bool) -> bool:
        """2. Rank 0: is the output already complete for these settings and this input? (All ranks learn it.)"""
        status = None
        with _capture(self.err):
            if self.rank == 0:
                self.expected = features_file.settings_attrs(self.wcfg, self.info, self.shape, self.sets)
                self.expected["input_digest"] = features_file.input_digest(self.data)
                if not force and features_file.is_complete(self.out, self.expected):
                    status = "up to date"
        self._agree()
        if self.comm.bcast(status, root=0) != "up to date":
            return False
        self.packed.close()
        if self.rank == 0:
            log.info("%s is already complete for these settings and this input (%s); nothing to do", self.out,
                     _describe_settings(self.wcfg))
        return True

    def plan(self) -> None:
        """3. The columns of each feature set (from a one-image probe: the same on every rank) and the pieces."""
        wcfg, shape = self.wcfg, self.shape
        probe = wavedec2_batch(np.zeros((1,) + shape, np.uint8), wcfg.wavelet, self.info.effective, wcfg.mode,
                               wcfg.dtype, wcfg.engine)
        self.columns = {fs: feature_set_columns(fs, probe, self.keep) for fs in self.sets}
        self.widths = {fs: len(cols) for fs, cols in self.columns.items()}
        self.chunk = int(wcfg.chunk_size)
        # ranks and pieces start on the matrix engine's tiles (a piece that did not would compute one
        # more, partly empty, tile per chunk: 12% more work for chunks of 256)
        align = TILE if wcfg.engine == "matrix" else 1
        self.plans = [rank_pieces(self.counts, self.size, r, self.chunk, align) for r in range(self.size)]
        self.rounds = max(len(p) for p in self.plans)
        self.dtype = np.dtype(wcfg.dtype)
        if self.rank == 0:
            log.info("%d images (train %d, test %d) of %dx%d on %d rank(s); %d round(s) of <= %d images per "
                     "rank; features: %s", self.total, self.counts["train"], self.counts["test"], shape[0],
                     shape[1], self.size, self.rounds, self.chunk,
                     ", ".join(f"{k} {v}" for k, v in self.widths.items()))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def create_output(self, stack: contextlib.ExitStack) -> None:
        """4. Rank 0 creates the output under a temporary name (in ``stack``): metadata, and the feature
        datasets allocated (contiguous, not filled) so that every rank writes its own rows at their byte
        offsets; every rank opens it for writing (its error is agreed on in the next step)."""
        layout = None
        with _capture(self.err):
            if self.rank == 0:
                # HDF5 can crash when the disk fills while it copies the metadata: refuse a file that cannot fit
                require_free_space(self.out, features_file.layout_bytes(self.packed, self.counts, self.columns,
                                                                        self.dtype))
                tmp = stack.enter_context(atomic_path(self.out))
                layout = {"path": str(tmp), "offsets": features_file.create_layout(tmp, self.packed, self.counts,
                                                                                   self.columns, self.dtype)}
        if self.err:
            stack.__exit__(type(self.err[0]), self.err[0], None)
        self._agree()
        self.layout = self.comm.bcast(layout, root=0)
        self.writer = _BackgroundWriter(self.timers)
        with _capture(self.err):
            try:
                self.fd = os.open(self.layout["path"], os.O_WRONLY)
            except OSError as e:
                raise InputError(f"{self.out}: rank {self.rank} cannot open the temporary output "
                                 f"{self.layout['path']} for writing ({e.strerror or e}); is the output folder "
                                 f"shared by all nodes?") from None

    def compute_rounds(self, progress_every: float) -> None:
        """5. Every rank computes its k-th piece (the next piece is read ahead) and hands the rows to its
        writer thread, which puts them at their offsets in the output (os.pwrite: one contiguous byte range
        per feature set, never overlapping another rank's) while the rank computes round k+1 (BLAS,
        PyWavelets and pwrite release the GIL). Ranks agree on errors every ``agree_every`` rounds and at
        the end; a failed rank computes nothing more."""
        self.agree.check(self.first_error())
        plan, err = self.plans[self.rank], self.err
        # two sets of per-feature-set buffers: round k is computed into one while round k-1's is being written
        buffers = [{name: np.zeros((self.chunk, width), dtype=self.dtype) for name, width in self.widths.items()}
                   for _ in range(2)]
        # agreeing after every piece would make each rank wait for the other's jitter every ~15 ms (0.3 s per
        # 100k images on 2 ranks); every AGREE_EVERY_IMAGES images it averages out, and an error still stops
        # every rank within a fraction of a second
        agree_every = max(1, AGREE_EVERY_IMAGES // self.chunk)
        progress = _Progress(self, progress_every)
        coeff_buffers = None
        images = _read_piece(self.packed, self.data, plan[0], self.verify, self.timers, err) if plan else None
        for k in range(self.rounds):
            piece = plan[k] if k < len(plan) else None
            bufs = buffers[k % 2]
            with _capture(err):
                if piece is not None and not err:
                    t = time.perf_counter()
                    coeff_buffers = _features_into(images, self.wcfg, self.info.effective, self.keep, bufs,
                                                   coeff_buffers, first_slot=piece.start)
                    self.timers["compute"] += time.perf_counter() - t
            self.writer.wait(err)  # round k-1's write: done, and its error (if any) joins the next agreement
            if (k + 1) % agree_every == 0 or k == self.rounds - 1:
                t = time.perf_counter()
                self.agree.check(self.first_error())
                self.timers["wait"] += time.perf_counter() - t
            if k + 1 < len(plan):
                images = _read_piece(self.packed, self.data, plan[k + 1], self.verify, self.timers, err)
            if piece is not None and not err:
                self.writer.submit(_write_piece, self.out, self.fd, self.layout["offsets"], bufs, piece)
            progress.round_done(k)
        self.writer.wait(err)
        with _capture(err):
            self.close_fd()  # on NFS: flushes this rank's writes before rank 0 reopens the file
        self.agree.check(self.first_error())

    def close_fd(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)

    def finish_file(self) -> None:
        """6. Rank 0 finishes the file: attributes, 'complete' flag (the rename follows)."""
        with _capture(self.err):
            if self.rank == 0:
                features_file.finish(self.layout["path"], dict(self.expected, input_file=str(self.data.resolve())))
        self.agree.check(self.first_error())

    def summary(self, status: str) -> dict:
        """The run summary: identical keys on every rank; timings and memory gathered on rank 0 once written."""
        seconds = time.perf_counter() - self.t0
        out = {"status": status, "path": str(self.out), "ranks": self.size, "images": self.total,
               "seconds": round(seconds, 3)}
        if status != "written":
            return out
        per_rank = self.comm.gather({"rss": _peak_rss_mb(), "cpu": _cpu_seconds(), **self.timers}, root=0)
        out.update({"images_per_second": round(self.total / seconds, 1) if seconds else None,
                    "feature_widths": self.widths, "effective_level": self.info.effective, "chunk_size": self.chunk})
        if self.rank == 0:
            for key in self.timers:
                out[f"{key}_seconds_per_rank"] = [round(r[key], 3) for r in per_rank]
            out["peak_rss_mb_per_rank"] = [round(r["rss"], 1) for r in per_rank]
            out["cpu_seconds_per_rank"] = [round(r["cpu"], 3) for r in per_rank]  # whole process, imports included
            log.info("wrote %s: %d images in %.2f s (%.0f images/s) on %d rank(s); per rank: compute %s s, "
                     "writing (in the background) %s s, waiting %s s, CPU %s s, peak memory %s MB", self.out,
                     self.total, seconds, self.total / max(seconds, 1e-9), self.size, out["compute_seconds_per_rank"],
                     out["write_seconds_per_rank"], out["wait_seconds_per_rank"], out["cpu_seconds_per_rank"],
                     out["peak_rss_mb_per_rank"])
        return out


class _Progress:
    """Rank 0's progress line, at most every ``every`` seconds and after the last round."""

    def __init__(self, run: _Extraction, every: float):
        self.run, self.every = run, every
        self.done, self.next_report = 0, every

    def round_done(self, k: int) -> None:
        run = self.run
        if run.rank != 0:
            return
        self.done += sum(len(p[k]) for p in run.plans if k < len(p))
        elapsed = time.perf_counter() - run.t0
        if elapsed >= self.next_report or k == run.rounds - 1:
            log.info("round %d/%d: %d/%d images (%.0f%%), %.1f s, %.0f images/s", k + 1, run.rounds, self.done,
                     run.total, 100.0 * self.done / max(run.total, 1), elapsed, self.done / max(elapsed, 1e-9))
            self.next_report = elapsed + self.every


def _read_piece(packed, data: Path, piece: Piece, verify: bool, timers: dict, err: list) -> np.ndarray | None:
    """The images of one piece (uint8), checked against their pixel hashes if ``verify``, or None with the
    error appended to ``err``."""
    t = time.perf_counter()
    with _capture(err):
        try:
            g = packed[piece.split]
            images = g["images"][piece.start:piece.stop]
            if verify:
                verify_pixels(data, piece.split, images, g["pixel_hash"].asstr()[piece.start:piece.stop], piece.start)
            return images
        except DAMAGE_ERRORS as e:
            raise InputError(f"{data}: cannot read /{piece.split}/images[{piece.start}:{piece.stop}] ({e})") from None
        finally:
            timers["read"] += time.perf_counter() - t
    return None


def _features_into(images: np.ndarray, wcfg, level: int, keep: tuple[int, ...], outs: dict[str, np.ndarray],
                   coeff_buffers: list | None = None, first_slot: int = 0) -> list:
    """Decompose ``images`` once and write their rows of each feature set into ``outs[name][:len(images)]``.

    Returns the coefficient arrays, to be passed back as ``coeff_buffers`` for the next piece (reused
    when it has as many images). ``first_slot``: the index of ``images[0]`` within its split, which
    fixes each image's place in the matrix engine's tiles whatever the ranks and chunks.
    """
    n = len(images)
    coeffs = wavedec2_batch(images, wcfg.wavelet, level, wcfg.mode, wcfg.dtype, wcfg.engine, out=coeff_buffers,
                            first_slot=first_slot)
    for name, buf in outs.items():
        feature_set_values(name, coeffs, keep, out=buf[:n])
    return coeffs


class _BackgroundWriter:
    """One writer thread on rank 0: at most one write in flight; errors come back through :meth:`wait`."""

    def __init__(self, timers: dict):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-writer")
        self._pending = None
        self._timers = timers

    def submit(self, fn, *args) -> None:
        def timed():
            t = time.perf_counter()
            try:
                fn(*args)
            finally:
                self._timers["write"] += time.perf_counter() - t

        self._pending = self._pool.submit(timed)

    def wait(self, err: list) -> None:
        """Block until the write in flight is done; append its exception (if any) to ``err``."""
        if self._pending is None:
            return
        t = time.perf_counter()
        with _capture(err):
            try:
                self._pending.result()
            finally:
                self._pending = None
                self._timers["write_wait"] += time.perf_counter() - t

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _write_piece(out: Path, fd: int, offsets: dict, bufs: dict[str, np.ndarray], piece: Piece) -> None:
    """Write the rows of ``piece`` of every feature set at their byte offsets in the output file."""
    for name, buf in bufs.items():
        rows = buf[:len(piece)]
        at = offsets[(piece.split, name)] + piece.start * rows.strides[0]
        view = memoryview(rows).cast("B")
        while view:  # pwrite may write less than asked
            try:
                written = os.pwrite(fd, view, at)
            except OSError as e:
                raise OutputError(f"{out}: cannot write ({os_reason(e)})") from None
            view, at = view[written:], at + written


def _close_on_error(packed, err: list) -> None:
    if err and packed is not None:
        with contextlib.suppress(Exception):
            packed.close()
