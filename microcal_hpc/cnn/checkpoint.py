"""Resumable training state of one CNN job: ``JOB/checkpoints/``.

::

    checkpoints/epoch-0007/ckpt.*   weights + optimizer state (tf.train.Checkpoint) after epoch 7
    checkpoints/state.json          {"epoch": 7, "checkpoint": "epoch-0007", "history": {...}, ...}
    checkpoints/best.npz            best weights by validation loss (only with early stopping)

A checkpoint folder is written under a temporary name and renamed when complete; ``state.json``
is rewritten atomically only after that, so it always points to a complete checkpoint, whatever
moment the job is killed at. Older epoch folders are removed after the pointer moved on.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
import numpy as np

from microcal_hpc.atomic import atomic_path, write_json
from microcal_hpc.errors import InputError

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
    checkpoint: str = ""  # folder name of the checkpoint that matches ``epoch``
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


def _tf_checkpoint(model, optimizer):
    import tensorflow as tf

    return tf.train.Checkpoint(model=model, optimizer=optimizer)


def save(job_dir: str | Path, model, optimizer, state: TrainingState) -> Path:
    """Write the variables of ``state.epoch`` and then point ``state.json`` at them (both atomic)."""
    ckdir = checkpoint_dir(job_dir)
    name = f"epoch-{state.epoch:04d}"
    final = ckdir / name
    if final.exists():  # left by a run killed between the rename and the pointer update
        shutil.rmtree(final)
    with atomic_path(final) as tmp:
        tmp.mkdir()
        _tf_checkpoint(model, optimizer).write(str(tmp / "ckpt"))
    state.checkpoint = name
    write_json(ckdir / STATE_FILE, asdict(state))
    for old in ckdir.glob("epoch-*"):
        if old.name != name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return final


def restore(job_dir: str | Path, model, optimizer, state: TrainingState) -> None:
    """Load the weights and optimizer state that ``state`` points to into ``model`` / ``optimizer``."""
    path = checkpoint_dir(job_dir) / state.checkpoint / "ckpt"
    if not state.checkpoint or not Path(str(path) + ".index").is_file():
        raise InputError(f"{path}: checkpoint named by {STATE_FILE} is missing; remove the job folder to start over")
    optimizer.build(model.trainable_variables)  # create the slots so that they are restored now
    _tf_checkpoint(model, optimizer).read(str(path)).assert_existing_objects_matched()


def save_best(job_dir: str | Path, model) -> None:
    """Keep the current weights as the best so far (atomic)."""
    with atomic_path(checkpoint_dir(job_dir) / BEST_FILE) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, *model.get_weights())


def load_best(job_dir: str | Path, model) -> bool:
    """Load the best weights if they were kept; return whether they were."""
    path = checkpoint_dir(job_dir) / BEST_FILE
    if not path.is_file():
        return False
    with np.load(path) as z:
        model.set_weights([z[f"arr_{i}"] for i in range(len(z.files))])
    return True
