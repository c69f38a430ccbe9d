"""Resumable training state of one CNN job: ``JOB/checkpoints/``.

::

    checkpoints/epoch-0007.npz   after epoch 7: model weights, optimizer variables (Adam's step counter
                                 and moments) and the learning rate, as NumPy arrays
    checkpoints/state.json       {"epoch": 7, "checkpoint": "epoch-0007.npz", "history": {...}, ...}
    checkpoints/best.npz         best weights by validation loss (only with early stopping)

Cheap: at the end of an epoch :class:`Checkpointer` copies the variables to NumPy (a few milliseconds)
and a background thread writes them while training goes on. Atomic: a file is written under a
temporary name and renamed when complete, and ``state.json`` is rewritten (atomically) only after that,
so it always points to a complete checkpoint whatever moment the job is killed at; older epoch files
are removed after the pointer moved on. Nothing random needs saving: every random stream of training
(order, augmentation, dropout) is a pure function of the seed, the epoch and the step, and the step
counter is one of the optimizer's variables, so a resumed job continues bit for bit.
"""
from __future__ import annotations

import json
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from microcal_hpc import atomic
from microcal_hpc.atomic import atomic_path, write_json
from microcal_hpc.errors import InputError, MicrocalError

STATE_FILE = "state.json"
BEST_FILE = "best.npz"


@dataclass
class TrainingState:
    """What a job needs besides the variables to continue where it stopped."""

    epoch: int = 0  # number of completed epochs
    history: dict[str, list] = field(default_factory=dict)  # per-epoch values, Keras-style lists
    stopped_early: bool = False  # early stopping ended training: do not train further
    best_val_loss: float | None = None
    epochs_since_best: int = 0
    plateau_wait: int = 0  # epochs without improvement seen by the plateau LR schedule
    fingerprint: str = ""  # identity of the data and settings the job was started with
    checkpoint: str = ""  # file name of the checkpoint that matches ``epoch``
    elapsed_s: float = 0.0  # wall time spent by all runs of the job up to this checkpoint


def checkpoint_dir(job_dir: str | Path) -> Path:
    return Path(job_dir) / "checkpoints"


def load_state(job_dir: str | Path) -> TrainingState | None:
    """The state of the last complete epoch, or None when the job never finished one."""
    path = checkpoint_dir(job_dir) / STATE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return TrainingState(**data)
    except (ValueError, TypeError) as e:
        raise InputError(f"{path}: unreadable training state ({e}); remove the job folder to start over") from None


def _optimizer_variables(optimizer) -> list:
    variables = optimizer.variables
    return list(variables() if callable(variables) else variables)


def _snapshot(model, optimizer) -> dict[str, np.ndarray]:
    """Copies of every variable a resumed job needs, as named arrays."""
    arrays = {f"weight_{i}": w for i, w in enumerate(model.get_weights())}
    for i, v in enumerate(_optimizer_variables(optimizer)):
        arrays[f"optimizer_{i}"] = v.numpy()
    arrays["learning_rate"] = np.array(float(optimizer.learning_rate.numpy()))
    return arrays


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


class Checkpointer:
    """Takes checkpoints at the end of epochs and writes them in one background thread, in order.

    A write that fails (e.g. a full disk) is raised by the next :meth:`save` or by :meth:`close`, which
    waits for every pending write.
    """

    def __init__(self, job_dir: str | Path):
        self.dir = checkpoint_dir(job_dir)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: list[Future] = []

    def save(self, model, optimizer, state: TrainingState) -> None:
        """Snapshot the variables and ``state`` now; write them (and then point state.json at them) later."""
        self._raise_failures()
        state.checkpoint = f"epoch-{state.epoch:04d}.npz"
        self._submit(self._write_epoch, _snapshot(model, optimizer), asdict(state))

    def save_best(self, model) -> None:
        """Keep the current weights as the best so far."""
        self._raise_failures()
        self._submit(_write_npz, self.dir / BEST_FILE, {f"weight_{i}": w for i, w in enumerate(model.get_weights())})

    def wait(self) -> None:
        """Wait for every pending write; raise the first failure."""
        for future in self._pending:
            future.exception()
        self._raise_failures()

    def close(self) -> None:
        """:meth:`wait`, then end the writing thread."""
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def _submit(self, fn, *args) -> None:
        self._pending = [f for f in self._pending if not f.done() or f.exception() is not None]
        self._pending.append(self._pool.submit(fn, *args))

    def _raise_failures(self) -> None:
        for future in self._pending:
            e = future.exception() if future.done() else None
            if isinstance(e, MicrocalError):  # already one line naming the file (e.g. a full disk)
                raise e
            if e is not None:
                raise MicrocalError(f"{self.dir}: cannot write a checkpoint ({getattr(e, 'strerror', None) or e})")

    def _write_epoch(self, arrays: dict[str, np.ndarray], state: dict) -> None:
        name = state["checkpoint"]
        _write_npz(self.dir / name, arrays)
        write_json(self.dir / STATE_FILE, state)
        for old in self.dir.glob("epoch-*.npz"):
            if old.name != name:
                old.unlink(missing_ok=True)


def remove_stale_temporaries(job_dir: str | Path) -> list[Path]:
    """Remove what killed runs of the job left under temporary names in the job folder and in
    ``checkpoints/`` (:func:`microcal_hpc.atomic.remove_stale_temporaries`: only the temporaries of
    processes that are gone); return them. Call before the job starts writing."""
    return [*atomic.remove_stale_temporaries(job_dir), *atomic.remove_stale_temporaries(checkpoint_dir(job_dir))]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: unreadable checkpoint ({e}); remove the job folder to start over") from None


def restore(job_dir: str | Path, model, optimizer, state: TrainingState) -> None:
    """Load the weights, optimizer variables and learning rate that ``state`` points to."""
    path = checkpoint_dir(job_dir) / state.checkpoint
    if not state.checkpoint or not path.is_file():
        raise InputError(f"{path}: checkpoint named by {STATE_FILE} is missing; remove the job folder to start over")
    arrays = _load_npz(path)
    optimizer.build(model.trainable_variables)  # Adam's slots must exist to be assigned (a no-op when built)
    variables = _optimizer_variables(optimizer)
    weights = [arrays.get(f"weight_{i}") for i in range(len(model.weights))]
    saved = weights + [arrays.get(f"optimizer_{i}") for i in range(len(variables))]
    wanted = [tuple(w.shape) for w in model.weights] + [tuple(v.shape) for v in variables]
    if len(arrays) != len(saved) + 1 or [None if a is None else a.shape for a in saved] != wanted:
        raise InputError(f"{path}: the checkpoint does not match this model and optimizer; "
                         "remove the job folder to start over")
    model.set_weights(weights)
    for i, v in enumerate(variables):
        v.assign(arrays[f"optimizer_{i}"])
    optimizer.learning_rate.assign(float(arrays["learning_rate"]))


def load_best(job_dir: str | Path, model) -> bool:
    """Load the best weights if they were kept; return whether they were."""
    path = checkpoint_dir(job_dir) / BEST_FILE
    if not path.is_file():
        return False
    arrays = _load_npz(path)
    model.set_weights([arrays[f"weight_{i}"] for i in range(len(arrays))])
    return True
