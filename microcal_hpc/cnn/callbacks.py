"""The per-epoch work of the training job, as one Keras callback (:func:`make_epoch_callback`).

At the start of an epoch: the cosine learning-rate schedule. During a long epoch: a progress line every
``PROGRESS_SECONDS``. At its end: validation on the fold (one prediction pass; loss, accuracy and AUC
from the probabilities), the history row and its log line, the plateau schedule and early stopping
(fold jobs only), a checkpoint (snapshot now, written in the background) and the TensorBoard scalars.
Epoch time (``epoch_seconds``) runs from the epoch's start to the end of its validation; the checkpoint
and TensorBoard come after it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from microcal_hpc.cnn.checkpoint import Checkpointer, TrainingState
from microcal_hpc.cnn.data import Part
from microcal_hpc.cnn.tracking import TensorBoardLog
from microcal_hpc.config import TrainConfig
from microcal_hpc.joblog import get_logger

# Plateau learning-rate schedule (train.lr_schedule = plateau): halve the rate after this many
# epochs without a lower validation loss, never below MIN_LR.
PLATEAU_PATIENCE = 3
PLATEAU_FACTOR = 0.5
MIN_LR = 1e-6
LOGGED = ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc")  # history keys in the epoch's log line
PROGRESS_SECONDS = 60.0

log = get_logger("cnn.train")


@dataclass
class EpochSettings:
    """What the callback needs to know besides the model."""

    train: TrainConfig
    base_lr: float  # the learning rate after scaling for the ranks (cosine starts from it)
    warmup_epochs: int  # Horovod warm-up: the cosine schedule leaves these epochs alone
    images_per_epoch: int  # over all ranks
    steps_per_epoch: int  # per rank
    job_started: float  # perf_counter() at which the job would have started had it run in one go


def validation_row(labels: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    """val_loss (Keras' binary cross-entropy of the probabilities), val_accuracy and val_auc."""
    from microcal_hpc.cnn.predict import binary_cross_entropy
    from microcal_hpc.metrics import binary_metrics

    m = binary_metrics(labels, prob)
    return {"val_loss": binary_cross_entropy(labels, prob), "val_accuracy": m["accuracy"], "val_auc": m["auc"]}


def make_epoch_callback(s: EpochSettings, state: TrainingState, optimizer, validation: Part | None,
                        checkpointer: Checkpointer | None, tensorboard: TensorBoardLog | None):
    """The callback. ``validation``: the fold (None: no validation); ``checkpointer`` and ``tensorboard``:
    None on ranks other than the root. After training, its ``val_prob`` holds the last validation pass."""
    import tensorflow as tf

    from microcal_hpc.cnn.predict import predict_probabilities

    train = s.train

    class EpochEnd(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.val_prob: np.ndarray | None = None

        def on_epoch_begin(self, epoch, logs=None):
            if train.lr_schedule == "cosine" and epoch >= s.warmup_epochs:
                lr = s.base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / train.epochs))
                optimizer.learning_rate.assign(max(lr, MIN_LR))
            self.t0 = self.last_progress = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if now - self.last_progress >= PROGRESS_SECONDS:
                self.last_progress = now
                done = (batch + 1) / s.steps_per_epoch
                log.info("epoch %d/%d: %.0f%% of its %d steps, %.0f img/s", state.epoch + 1, train.epochs, 100 * done,
                         s.steps_per_epoch, done * s.images_per_epoch / (now - self.t0))

        def on_epoch_end(self, epoch, logs=None):
            train_seconds = time.perf_counter() - self.t0
            row = {k: float(v) for k, v in (logs or {}).items() if k != "lr"}
            if validation is not None:
                self.val_prob = predict_probabilities(self.model, validation.source)
                row.update(validation_row(validation.labels, self.val_prob))
            seconds = time.perf_counter() - self.t0
            row.update(lr=float(optimizer.learning_rate.numpy()), epoch_seconds=seconds, train_seconds=train_seconds,
                       images_per_second=s.images_per_epoch / max(train_seconds, 1e-9))
            state.history.setdefault("epoch", []).append(epoch + 1)
            for k, v in row.items():
                state.history.setdefault(k, []).append(v)
            state.epoch = epoch + 1
            if "val_loss" in row:
                _plateau_and_early_stopping(train, state, optimizer, checkpointer, self.model, row["val_loss"])
            log.info("epoch %d/%d  %s  lr %.2e  %.1f s (%.0f img/s)", epoch + 1, train.epochs,
                     "  ".join(f"{k} {row[k]:.4f}" for k in LOGGED if k in row), row["lr"], seconds,
                     row["images_per_second"])
            state.elapsed_s = time.perf_counter() - s.job_started
            if checkpointer is not None:
                checkpointer.save(self.model, optimizer, state)
            if tensorboard is not None:
                tensorboard.epoch(epoch + 1, row)
            if state.stopped_early:
                log.info("early stopping: no lower validation loss for %d epochs", train.early_stopping_patience)
                self.model.stop_training = True

    return EpochEnd()


def _plateau_and_early_stopping(train: TrainConfig, state: TrainingState, optimizer,
                                checkpointer: Checkpointer | None, model, val_loss: float) -> None:
    """After a validation pass: keep the best weights, halve the rate on a plateau, flag early stopping."""
    if not math.isfinite(val_loss):
        return
    if state.best_val_loss is None or val_loss < state.best_val_loss:
        state.best_val_loss = val_loss
        state.epochs_since_best = 0
        state.plateau_wait = 0
        if train.early_stopping_patience and checkpointer is not None:
            checkpointer.save_best(model)
        return
    state.epochs_since_best += 1
    state.plateau_wait += 1
    if train.lr_schedule == "plateau" and state.plateau_wait >= PLATEAU_PATIENCE:
        optimizer.learning_rate.assign(max(float(optimizer.learning_rate.numpy()) * PLATEAU_FACTOR, MIN_LR))
        state.plateau_wait = 0
    if train.early_stopping_patience and state.epochs_since_best >= train.early_stopping_patience:
        state.stopped_early = True
