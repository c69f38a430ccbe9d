"""Train the CNN once (official split hold-out, one CV fold, or an augmentation run) into ``JOB/``.

``JOB = RUN/cnn/<name>`` receives (docs/outputs.md): ``config.yaml``, ``train.log``, ``checkpoints/``,
``history.json``, ``predictions.npz``, ``model.keras`` and, written last, ``metrics.json``.

The job is resumable: after every epoch the weights, the optimizer state and the epoch are
checkpointed atomically (``microcal_hpc.cnn.checkpoint``); started again with the same arguments it
continues after the last complete epoch, and a job whose ``metrics.json`` exists is not retrained.

Data-parallel runs go through a :class:`microcal_hpc.distributed.Context`: its callbacks come first
(rank 0's variables are broadcast before anything else), the training order is sharded over ranks,
and only the root rank writes files. With one process nothing of Horovod is imported.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from microcal_hpc.atomic import atomic_path, write_json
from microcal_hpc.cnn import checkpoint
from microcal_hpc.cnn.augment import check_preset
from microcal_hpc.config import Config, TrainConfig, load_config, save_config
from microcal_hpc.errors import ConfigError
from microcal_hpc.joblog import get_logger, setup_job_logging

# Plateau learning-rate schedule (train.lr_schedule = plateau): halve the rate after this many
# epochs without a lower validation loss, never below MIN_LR.
PLATEAU_PATIENCE = 3
PLATEAU_FACTOR = 0.5
MIN_LR = 1e-6
# history.json keys that measure time, not learning (they differ between identical runs)
TIME_KEYS = ("epoch_seconds", "train_seconds", "images_per_second")
# Test hook: when set (to anything), every rank logs the training-image indices it consumed per epoch.
SHARD_LOG_ENV = "MICROCAL_DEBUG_SHARDS"
# settings that may change between a run and its resumption
_RESUMABLE_CHANGES = ("epochs", "stop_after_epoch", "steps_per_execution")  # none changes the model

log = get_logger("cnn.train")


def job_folder(run_dir: str | Path, name: str) -> Path:
    """Folder of one training job."""
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"job name {name!r} must be a plain folder name (e.g. official, fold-2)")
    return Path(run_dir) / name


def is_complete(job_dir: str | Path) -> bool:
    """A job is complete when its metrics.json exists (written last, atomically)."""
    return (Path(job_dir) / "metrics.json").is_file()


@dataclasses.dataclass
class _Data:
    """The arrays one job works on."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    val_ids: np.ndarray
    val_groups: np.ndarray
    val_fold: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    test_ids: np.ndarray
    test_groups: np.ndarray
    test_bootstrap_groups: np.ndarray
    fingerprint: str


def _load_data(data: str | Path, train: TrainConfig) -> _Data:
    from microcal_hpc.dataset import load_split
    from microcal_hpc.splits import split_groups, train_validation_indices

    tr = load_split(data, "train")
    te = load_split(data, "test")
    tr_idx, va_idx = train_validation_indices(tr, train.group_by, train.seed, train.fold, train.folds,
                                              train.val_fraction)
    h = hashlib.sha256()
    for arr in (tr.ids, tr.labels, tr.pixel_hash, te.ids, te.pixel_hash, tr_idx, va_idx):
        h.update("\n".join(map(str, arr)).encode())
    fold = -1 if train.fold is None else train.fold
    return _Data(
        train_x=tr.images[tr_idx], train_y=tr.labels[tr_idx],
        val_x=tr.images[va_idx], val_y=tr.labels[va_idx], val_ids=tr.ids[va_idx], val_groups=tr.groups[va_idx],
        val_fold=np.full(len(va_idx), fold, dtype=np.int64),
        test_x=te.images, test_y=te.labels, test_ids=te.ids, test_groups=te.groups,
        # bootstrap unit on Test: the source mammogram merged with pixel-identical copies
        test_bootstrap_groups=split_groups(te, train.group_by),
        fingerprint=h.hexdigest(),
    )


def _settings_fingerprint(train: TrainConfig, data_fingerprint: str) -> str:
    keep = {k: v for k, v in dataclasses.asdict(train).items() if k not in _RESUMABLE_CHANGES}
    return hashlib.sha256(f"{sorted(keep.items())}|{data_fingerprint}".encode()).hexdigest()[:16]


def _settings_changes(job_dir: Path, train: TrainConfig) -> list[str]:
    """Differences between the train settings saved in ``job_dir/config.yaml`` and ``train``."""
    saved = job_dir / "config.yaml"
    if not saved.is_file():
        return []
    old = load_config(saved).train
    return [f"train.{f.name} {getattr(old, f.name)!r} -> {getattr(train, f.name)!r}"
            for f in dataclasses.fields(train)
            if f.name not in _RESUMABLE_CHANGES and getattr(old, f.name) != getattr(train, f.name)]


def _refuse(job_dir: Path, what: str) -> None:
    raise ConfigError(f"{job_dir}: holds a job started with other settings ({what}); "
                      "use another --name or remove the folder")


def _check_same_settings(job_dir: Path, train: TrainConfig) -> None:
    """Refuse to report a finished job as done for a call with other settings."""
    changes = _settings_changes(job_dir, train)
    if changes:
        _refuse(job_dir, "; ".join(changes))


def _check_same_job(job_dir: Path, train: TrainConfig, state: checkpoint.TrainingState, fingerprint: str) -> None:
    """Refuse to resume a job that was started with other settings or other data."""
    if state.fingerprint != fingerprint:
        _refuse(job_dir, "; ".join(_settings_changes(job_dir, train)) or "the data or the split differ")


def _set_determinism(train: TrainConfig) -> None:
    import tensorflow as tf

    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(train.seed)  # python, numpy and TensorFlow
    if train.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # a previous job in this process may have switched it on (there is no public switch-off)
        from tensorflow.python.framework import config as tf_config

        if tf_config.is_op_determinism_enabled():
            tf_config.disable_op_determinism()


def _make_epoch_callback(ctx, job_dir: Path, model, optimizer, state: checkpoint.TrainingState, train: TrainConfig,
                         base_lr: float, warmup_epochs: int, images_per_epoch: int, job_started: float):
    """The callback that schedules the learning rate, logs, checkpoints and stops (early or by the test hook)."""
    import tensorflow as tf

    class EpochEnd(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.stop_requested = False

        def _set_lr(self, epoch: int) -> None:
            if train.lr_schedule == "cosine" and epoch >= warmup_epochs:
                lr = base_lr * 0.5 * (1.0 + math.cos(math.pi * epoch / train.epochs))
                optimizer.learning_rate.assign(max(lr, MIN_LR))

        def on_epoch_begin(self, epoch, logs=None):
            self._set_lr(epoch)
            self.t0 = time.perf_counter()
            self.t_train = None

        def on_test_begin(self, logs=None):
            if self.t_train is None:
                self.t_train = time.perf_counter() - self.t0

        def on_epoch_end(self, epoch, logs=None):
            logs = dict(logs or {})
            seconds = time.perf_counter() - self.t0
            train_seconds = self.t_train if self.t_train is not None else seconds
            lr = float(tf.keras.backend.get_value(optimizer.learning_rate))
            row = {k: float(v) for k, v in logs.items() if k != "lr"}
            row.update(lr=lr, epoch_seconds=seconds, train_seconds=train_seconds,
                       images_per_second=images_per_epoch / max(train_seconds, 1e-9))
            h = state.history
            h.setdefault("epoch", []).append(epoch + 1)
            for k, v in row.items():
                h.setdefault(k, []).append(v)
            state.epoch = epoch + 1
            self._early_stopping_and_plateau(row)
            log.info("epoch %d/%d  %s  lr %.2e  %.1f s (%.0f img/s)", epoch + 1, train.epochs,
                     "  ".join(f"{k} {row[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc")
                               if k in row), lr, seconds, row["images_per_second"])
            state.elapsed_s = time.perf_counter() - job_started
            if ctx.is_root:
                checkpoint.save(job_dir, model, optimizer, state)
            if state.stopped_early:
                log.info("early stopping: no lower validation loss for %d epochs", train.early_stopping_patience)
                self.model.stop_training = True
            elif train.stop_after_epoch == state.epoch < train.epochs:
                log.info("stopping after epoch %d (train.stop_after_epoch: test/preemption hook)", state.epoch)
                self.stop_requested = True
                self.model.stop_training = True

        def _early_stopping_and_plateau(self, row: dict[str, float]) -> None:
            val_loss = row.get("val_loss")
            if val_loss is None or not math.isfinite(val_loss):
                return
            improved = state.best_val_loss is None or val_loss < state.best_val_loss
            if improved:
                state.best_val_loss = val_loss
                state.epochs_since_best = 0
                state.plateau_wait = 0
                if train.early_stopping_patience and ctx.is_root:
                    checkpoint.save_best(job_dir, model)
                return
            state.epochs_since_best += 1
            state.plateau_wait += 1
            if train.lr_schedule == "plateau" and state.plateau_wait >= PLATEAU_PATIENCE:
                old = float(tf.keras.backend.get_value(optimizer.learning_rate))
                optimizer.learning_rate.assign(max(old * PLATEAU_FACTOR, MIN_LR))
                state.plateau_wait = 0
            if train.early_stopping_patience and state.epochs_since_best >= train.early_stopping_patience:
                state.stopped_early = True

    return EpochEnd()


def _predict(model, images: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, float]:
    """P(cluster) of every image and the loss as Keras computes it (so it matches history's val_loss)."""
    from microcal_hpc.cnn.pipeline import evaluation_dataset

    prob = model.predict(evaluation_dataset(images), verbose=0).reshape(-1).astype(np.float64)
    loss = model.evaluate(evaluation_dataset(images, labels), verbose=0, return_dict=True)["loss"]
    return prob, float(loss)


def save_model_atomically(model, final: Path) -> None:
    """Save a ``.keras`` archive under a temporary folder beside ``final``, then rename it into place."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f".{final.name}.", dir=final.parent) as tmp:
        path = Path(tmp) / final.name  # Keras needs the .keras extension to pick the format
        model.save(path)
        os.replace(path, final)


def _write_outputs(cfg: Config, job_dir: Path, name: str, model, d: _Data, state: checkpoint.TrainingState,
                   ctx, job_started: float) -> None:
    """history.json, predictions.npz, model.keras, then metrics.json (last: marks the job complete).

    ``job_started``: ``time.perf_counter()`` value at which the job would have started had it run in one go."""
    from microcal_hpc.cnn.model import build_model, resolve_mixed_precision
    from microcal_hpc.metrics import binary_metrics, bootstrap_auc_ci

    train = cfg.train
    if train.early_stopping_patience and checkpoint.load_best(job_dir, model):
        log.info("restored the weights of the lowest validation loss (%.4f)", state.best_val_loss)
    val_prob, val_loss = _predict(model, d.val_x, d.val_y)
    test_prob, test_loss = _predict(model, d.test_x, d.test_y)

    write_json(job_dir / "history.json", state.history)
    with atomic_path(job_dir / "predictions.npz") as tmp, open(tmp, "wb") as fh:
        np.savez(fh, test_ids=d.test_ids.astype(str), test_labels=d.test_y.astype(np.int64), test_prob=test_prob,
                 test_groups=d.test_groups.astype(str), val_ids=d.val_ids.astype(str),
                 val_labels=d.val_y.astype(np.int64), val_prob=val_prob, val_groups=d.val_groups.astype(str),
                 val_fold=d.val_fold)
    # the saved model carries no (possibly Horovod-wrapped) optimizer: it is for inference
    export = build_model(model.input_shape[1:], train)
    export.set_weights(model.get_weights())
    save_model_atomically(export, job_dir / "model.keras")

    test = binary_metrics(d.test_y, test_prob, loss=test_loss)
    lo, hi = bootstrap_auc_ci(d.test_y, test_prob, groups=d.test_bootstrap_groups, n_boot=cfg.report.bootstrap,
                              seed=cfg.report.seed)
    test.update(auc_ci=[lo, hi], auc_ci_method=f"group bootstrap, {cfg.report.bootstrap} resamples")
    h = state.history
    metrics: dict[str, Any] = {
        "schema": 1,
        "arm": "cnn",
        "model": "cnn",
        "run": name,
        "feature_set": None,
        "augment": train.augment,
        "fold": train.fold,
        "folds": train.folds,
        "group_by": train.group_by,
        "seed": train.seed,
        "mixed_precision": resolve_mixed_precision(train),
        "validation": binary_metrics(d.val_y, val_prob, loss=val_loss),
        "cv": None,
        "train": {"loss": h["loss"][-1], "accuracy": h["accuracy"][-1]} if h.get("loss") else None,
        "test": test,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "n_train": int(len(d.train_y)),
        "distributed": {"mode": ctx.name, "size": ctx.size},
        "training_seconds": float(sum(h.get("epoch_seconds", []))),
        "elapsed_s": float(time.perf_counter() - job_started),  # all runs of the job
    }
    write_json(job_dir / "metrics.json", metrics)
    log.info("done: validation AUC %.4f, official Test AUC %.4f (95%% CI %.4f-%.4f) -> %s",
             metrics["validation"]["auc"], test["auc"], lo, hi, job_dir)


def train_cnn(cfg: Config, data: str | Path, run_dir: str | Path, name: str) -> Path:
    """Train (or resume, or skip when complete) one CNN job; return its folder ``run_dir/name``."""
    from microcal_hpc.distributed import init_context

    started = time.perf_counter()
    train = cfg.train
    check_preset(train.augment)
    job_dir = job_folder(run_dir, name)

    ctx = init_context(cfg.distributed)
    if ctx.is_root:
        setup_job_logging(job_dir / "train.log")
    else:
        setup_job_logging(job_dir / "logs" / f"rank-{ctx.rank}.log", console=False)
    ctx.pin_device()  # before any TensorFlow op; after the logging set-up so that its line is logged
    with ctx.fail_fast(log):  # several ranks: an error on one is logged and ends them all (non-zero exit)
        return _train_cnn(cfg, data, job_dir, name, ctx, started)


def _train_cnn(cfg: Config, data: str | Path, job_dir: Path, name: str, ctx, started: float) -> Path:
    train = cfg.train
    if is_complete(job_dir):
        _check_same_settings(job_dir, train)
        log.info("%s: already complete (metrics.json exists); not retraining", job_dir)
        return job_dir

    import tensorflow as tf

    from microcal_hpc.cnn.model import build_model, compile_model, resolve_mixed_precision
    from microcal_hpc.cnn.pipeline import epoch_order, evaluation_dataset, steps_per_epoch, training_dataset

    if train.jit_compile and ctx.size > 1:
        log.warning("train.jit_compile ignored with %d ranks: Horovod's collective ops are not XLA-compiled", ctx.size)
        train = dataclasses.replace(train, jit_compile=False)
        cfg = dataclasses.replace(cfg, train=train)
    if train.steps_per_execution > 1 and ctx.size > 1:
        # Horovod's broadcast and warm-up callbacks act per batch
        train = dataclasses.replace(train, steps_per_execution=1)
        cfg = dataclasses.replace(cfg, train=train)
    _set_determinism(train)
    d = _load_data(data, train)
    fingerprint = _settings_fingerprint(train, d.fingerprint)

    state = checkpoint.load_state(job_dir)
    if state is not None:
        _check_same_job(job_dir, train, state, fingerprint)
    else:
        state = checkpoint.TrainingState(fingerprint=fingerprint)
    job_started = started - state.elapsed_s  # count the time of earlier runs of a resumed job
    if ctx.is_root:
        save_config(cfg, job_dir / "config.yaml")

    base_lr = ctx.learning_rate(train.learning_rate)
    optimizer = ctx.wrap_optimizer(tf.keras.optimizers.Adam(learning_rate=base_lr))
    model = build_model(d.train_x.shape[1:] + (1,), train)
    compile_model(model, optimizer, train)
    if state.epoch:
        checkpoint.restore(job_dir, model, optimizer, state)
    if ctx.allreduce_mean(float(state.epoch), "resume_epoch") != state.epoch:
        raise ConfigError(f"{job_dir}: ranks found different checkpoints; is checkpoints/ on a shared file system?")
    if state.epoch:
        ctx.broadcast_variables(model, optimizer)  # every rank continues from rank 0's variables

    log.info("%s: %d training, %d validation, %d official Test images; augment=%s, precision=%s, %d ranks (%s)%s",
             name, len(d.train_y), len(d.val_y), len(d.test_y), train.augment, resolve_mixed_precision(train),
             ctx.size, ctx.name,
             f"; resuming after epoch {state.epoch}" if state.epoch else "")

    if state.epoch < train.epochs and not state.stopped_early:
        n = len(d.train_y)
        steps = steps_per_epoch(n, train.batch_size, ctx.size)
        images_per_epoch = len(epoch_order(n, train.seed, 0, ctx.size, 0)) * ctx.size
        warmup = cfg.distributed.warmup_epochs if ctx.size > 1 else 0
        epoch_cb = _make_epoch_callback(ctx, job_dir, model, optimizer, state, train, base_lr, warmup,
                                        images_per_epoch, job_started)
        record = [] if os.environ.get(SHARD_LOG_ENV) else None
        first_epoch = state.epoch
        ds = training_dataset(d.train_x, d.train_y, batch_size=train.batch_size, seed=train.seed,
                              first_epoch=state.epoch, epochs=train.epochs, augment=train.augment,
                              num_shards=ctx.size, shard_index=ctx.rank, record_batches=record)
        model.fit(ds, epochs=train.epochs, initial_epoch=state.epoch, steps_per_epoch=steps,
                  validation_data=evaluation_dataset(d.val_x, d.val_y), verbose=0,
                  callbacks=list(ctx.callbacks(train.learning_rate, steps)) + [epoch_cb])
        for i in range(0, len(record or []), steps):
            seen = [j for batch in record[i:i + steps] for j in batch]
            log.info("shards: rank %d/%d epoch %d trained on %d of %d images: %s", ctx.rank, ctx.size,
                     first_epoch + i // steps + 1, len(seen), n, json.dumps(seen))
        if epoch_cb.stop_requested:
            log.info("%s: stopped after epoch %d of %d; run again with the same arguments to resume",
                     job_dir, state.epoch, train.epochs)
            ctx.barrier()
            return job_dir
    else:
        log.info("training already finished at epoch %d; writing the outputs", state.epoch)

    if ctx.is_root:
        _write_outputs(cfg, job_dir, name, model, d, state, ctx, job_started)
    ctx.barrier()
    return job_dir
