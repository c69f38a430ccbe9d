"""Train the CNN once (on all of Train, or on the other folds of one CV fold) into ``JOB/``.

``JOB = RUN/cnn/<name>`` receives (docs/outputs.md): ``config.yaml``, ``train.log``, ``checkpoints/``,
``tensorboard/``, ``history.json``, ``predictions.npz``, ``saliency.npz`` (no fold), ``model.keras`` and,
written last, ``metrics.json``.

Protocol. Without ``train.fold`` (the official job and the augmentation jobs) the model trains on every
Train image for ``train.epochs`` epochs with no validation part, and the official Test set is predicted
once at the end. With a fold it trains on the other folds, is validated on fold ``k`` after every epoch
(early stopping and the plateau schedule need that), and Test is predicted at the end too.

Resumable: after every epoch the variables are checkpointed (``cnn/checkpoint.py``); started again with
the same arguments the job continues after the last complete epoch and ends bit-identical to an
uninterrupted run. A finished job (``metrics.json`` exists) is not retrained; asked again with other
settings (``--epochs`` included) it refuses. An unfinished job may continue with another
``train.epochs`` only where that gives the same model as a run started with it (not with the cosine
schedule, which depends on the epoch count; not below the epochs already trained).

Data-parallel runs go through a :class:`microcal_hpc.distributed.Context`: its callbacks come first
(rank 0's variables are broadcast before anything else), the training order is sharded over ranks,
and only the root rank writes files. With one process nothing of Horovod is imported.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np

from microcal_hpc.cnn import checkpoint
from microcal_hpc.cnn.augment import check_preset
from microcal_hpc.cnn.tracking import PhaseTimer
from microcal_hpc.config import Config, TrainConfig, load_config, save_config
from microcal_hpc.errors import ConfigError
from microcal_hpc.joblog import get_logger, setup_job_logging

# history.json keys that measure time, not learning (they differ between identical runs)
TIME_KEYS = ("epoch_seconds", "train_seconds", "images_per_second")
# train settings that never change the trained model: they may differ between runs of one job
RESULT_NEUTRAL = ("steps_per_execution", "input", "input_memory_mb")

log = get_logger("cnn.train")


def job_folder(run_dir: str | Path, name: str) -> Path:
    """Folder of one training job."""
    if not name or "/" in name or name in (".", ".."):
        raise ConfigError(f"job name {name!r} must be a plain folder name (e.g. official, fold-2)")
    return Path(run_dir) / name


def is_complete(job_dir: str | Path) -> bool:
    """A job is complete when its metrics.json exists (written last, atomically)."""
    return (Path(job_dir) / "metrics.json").is_file()


# ------------------------------------------------------------------------------------------------
# same job, same settings


def _fingerprint(cfg: Config, ranks: int, data_fingerprint: str) -> str:
    """Identity of a training run: data, split and every setting that changes the model. ``train.epochs``
    is left out where more (or fewer) epochs continue the same run (not with the cosine schedule)."""
    skip = RESULT_NEUTRAL + (() if cfg.train.lr_schedule == "cosine" else ("epochs",))
    keep = {k: v for k, v in dataclasses.asdict(cfg.train).items() if k not in skip}
    dist = dataclasses.asdict(cfg.distributed) if ranks > 1 else {}
    return hashlib.sha256(f"{sorted(keep.items())}|{ranks}|{sorted(dist.items())}|{data_fingerprint}"
                          .encode()).hexdigest()[:16]


def _settings_changes(job_dir: Path, train: TrainConfig, ignore: tuple[str, ...] = ()) -> list[str]:
    """Differences between the train settings saved in ``job_dir/config.yaml`` and ``train``."""
    saved = job_dir / "config.yaml"
    if not saved.is_file():
        return []
    old = load_config(saved).train
    return [f"train.{f.name} {getattr(old, f.name)!r} -> {getattr(train, f.name)!r}"
            for f in dataclasses.fields(train)
            if f.name not in RESULT_NEUTRAL + ignore and getattr(old, f.name) != getattr(train, f.name)]


def _refuse(job_dir: Path, what: str) -> None:
    raise ConfigError(f"{job_dir}: {what}; use another --name or remove the folder")


def _check_finished_job(job_dir: Path, train: TrainConfig) -> None:
    """A finished job answers only a call with its own settings."""
    changes = _settings_changes(job_dir, train)
    if changes:
        _refuse(job_dir, f"finished with other settings ({'; '.join(changes)})")


def _check_resumable(job_dir: Path, train: TrainConfig, state: checkpoint.TrainingState, fingerprint: str) -> None:
    """Refuse to resume a job whose continuation would not equal an uninterrupted run with these settings."""
    if state.fingerprint != fingerprint:
        changes = _settings_changes(job_dir, train, () if train.lr_schedule == "cosine" else ("epochs",))
        _refuse(job_dir, "was started with other settings ("
                + ("; ".join(changes) or "the data, the split or the number of ranks differ") + ")")
    if state.epoch > train.epochs:
        _refuse(job_dir, f"has already trained {state.epoch} epochs, more than train.epochs={train.epochs}")


# ------------------------------------------------------------------------------------------------
# the job


def _set_determinism(train: TrainConfig) -> None:
    import tensorflow as tf

    tf.keras.backend.clear_session()
    tf.keras.utils.set_random_seed(train.seed)  # python, numpy and TensorFlow (weight initialisation)
    if train.deterministic:
        tf.config.experimental.enable_op_determinism()
    else:  # a previous job in this process may have switched it on (there is no public switch-off)
        from tensorflow.python.framework import config as tf_config

        if tf_config.is_op_determinism_enabled():
            tf_config.disable_op_determinism()


def _for_ranks(cfg: Config, ranks: int) -> Config:
    """Settings Horovod cannot use, switched off (with a warning) when training on several ranks."""
    train = cfg.train
    if train.jit_compile and ranks > 1:
        log.warning("train.jit_compile ignored with %d ranks: Horovod's collective ops are not XLA-compiled", ranks)
        train = dataclasses.replace(train, jit_compile=False)
    if train.steps_per_execution > 1 and ranks > 1:  # Horovod's broadcast and warm-up callbacks act per batch
        train = dataclasses.replace(train, steps_per_execution=1)
    return dataclasses.replace(cfg, train=train)


def dropout_seed(seed: int, rank: int) -> int:
    """Seed of the first dropout layer of rank ``rank`` (each rank draws its own masks)."""
    return int(np.random.default_rng([int(seed), int(rank), 11]).integers(0, 2**62))


def train_cnn(cfg: Config, data: str | Path, run_dir: str | Path, name: str) -> Path:
    """Train (or resume, or skip when complete) one CNN job; return its folder ``run_dir/name``."""
    from microcal_hpc.distributed import init_context

    timer = PhaseTimer()
    check_preset(cfg.train.augment)
    cfg.train.validate()
    job_dir = job_folder(run_dir, name)

    ctx = init_context(cfg.distributed)
    if ctx.is_root:
        setup_job_logging(job_dir / "train.log")
    else:
        setup_job_logging(job_dir / "logs" / f"rank-{ctx.rank}.log", console=False)
    ctx.pin_device()  # before any TensorFlow op; after the logging set-up so that its line is logged
    with ctx.fail_fast(log):  # several ranks: an error on one is logged and ends them all (non-zero exit)
        return _train_cnn(cfg, data, job_dir, name, ctx, timer)


def _train_cnn(cfg: Config, data: str | Path, job_dir: Path, name: str, ctx, timer: PhaseTimer) -> Path:
    if is_complete(job_dir):
        _check_finished_job(job_dir, cfg.train)
        log.info("%s: already complete (metrics.json exists); not retraining", job_dir)
        return job_dir

    import tensorflow  # noqa: F401  (the import is a phase of its own in the job's timing)

    from microcal_hpc.cnn.data import load_job_data
    from microcal_hpc.cnn.model import resolve_mixed_precision
    from microcal_hpc.cnn.tracking import describe_devices, format_devices

    timer.lap("import")
    cfg = _for_ranks(cfg, ctx.size)
    train = cfg.train
    _set_determinism(train)
    d = load_job_data(data, train)
    try:
        state = _state_to_continue(cfg, job_dir, ctx, d.fingerprint)
        job_started = timer.start - state.elapsed_s  # earlier runs of a resumed job count
        timer.lap("data")
        model, optimizer, base_lr = _build(cfg, job_dir, d, state, ctx)
        devices = describe_devices()
        log.info(format_devices(devices))
        log.info("%s: %d training, %d validation, %d official Test images (input: %s); augment=%s, precision=%s, "
                 "%d rank%s (%s)%s", name, len(d.train), len(d.val), len(d.test),
                 ", ".join(f"{k} {v}" for k, v in d.input.items()), train.augment, resolve_mixed_precision(train),
                 ctx.size, "s" if ctx.size > 1 else "", ctx.name,
                 f"; resuming after epoch {state.epoch}" if state.epoch else "")
        timer.lap("build")

        first_epoch = state.epoch
        checkpointer = checkpoint.Checkpointer(job_dir) if ctx.is_root else None
        try:
            val_prob = _fit(cfg, job_dir, model, optimizer, d, state, ctx, base_lr, timer, checkpointer, job_started)
            if ctx.is_root:
                from microcal_hpc.cnn.outputs import evaluate_and_write

                evaluate_and_write(cfg, job_dir, name, model, d, state, ctx, val_prob, timer, checkpointer,
                                   devices=devices, first_epoch=first_epoch, job_started=job_started)
        finally:
            if checkpointer is not None:
                checkpointer.close()
    finally:
        d.close()
    ctx.barrier()
    return job_dir


def _state_to_continue(cfg: Config, job_dir: Path, ctx, data_fingerprint: str) -> checkpoint.TrainingState:
    """The checkpointed state of an unfinished job (after checking it may continue), or a fresh one."""
    fingerprint = _fingerprint(cfg, ctx.size, data_fingerprint)
    state = checkpoint.load_state(job_dir)
    if state is not None:
        _check_resumable(job_dir, cfg.train, state, fingerprint)
    if ctx.is_root:
        checkpoint.remove_stale_temporaries(job_dir)
        save_config(cfg, job_dir / "config.yaml")
    return state or checkpoint.TrainingState(fingerprint=fingerprint)


def _build(cfg: Config, job_dir: Path, d, state: checkpoint.TrainingState, ctx):
    """(model, optimizer, learning rate after scaling for the ranks), restored from the checkpoint if any."""
    import tensorflow as tf

    from microcal_hpc.cnn.model import build_model, compile_model

    train = cfg.train
    base_lr = ctx.learning_rate(train.learning_rate)
    optimizer = ctx.wrap_optimizer(tf.keras.optimizers.Adam(learning_rate=base_lr))
    model = build_model(d.train.source.image_shape + (1,), train, step=optimizer.iterations,
                        dropout_seed=dropout_seed(train.seed, ctx.rank))
    compile_model(model, optimizer, train)
    # Adam's slots now, not inside the first training step: a tf.function that creates variables on its
    # first call is traced twice (1.5 s of CPU on 2 cores)
    optimizer.build(model.trainable_variables)
    if state.epoch:
        checkpoint.restore(job_dir, model, optimizer, state)
    if ctx.allreduce_mean(float(state.epoch), "resume_epoch") != state.epoch:
        raise ConfigError(f"{job_dir}: ranks found different checkpoints; is checkpoints/ on a shared file system?")
    if state.epoch:
        ctx.broadcast_variables(model, optimizer)  # every rank continues from rank 0's variables
    return model, optimizer, base_lr


def _fit(cfg: Config, job_dir: Path, model, optimizer, d, state: checkpoint.TrainingState, ctx, base_lr: float,
         timer: PhaseTimer, checkpointer: checkpoint.Checkpointer | None, job_started: float) -> np.ndarray | None:
    """Train the epochs left; return the probabilities of the last validation pass (None if none ran)."""
    from microcal_hpc import parallel_math
    from microcal_hpc.cnn.callbacks import EpochSettings, make_epoch_callback
    from microcal_hpc.cnn.pipeline import steps_per_epoch, training_dataset
    from microcal_hpc.cnn.tracking import TensorBoardLog

    train = cfg.train
    if state.epoch >= train.epochs or state.stopped_early:
        log.info("training already finished at epoch %d; writing the outputs", state.epoch)
        return None
    n = len(d.train)
    steps = steps_per_epoch(n, train.batch_size, ctx.size)
    settings = EpochSettings(train=train, base_lr=base_lr,
                             warmup_epochs=cfg.distributed.warmup_epochs if ctx.size > 1 else 0,
                             images_per_epoch=parallel_math.equal_shard_length(n, ctx.size) * ctx.size,
                             steps_per_epoch=steps, job_started=job_started)
    tensorboard = TensorBoardLog(job_dir / "tensorboard", state.history) if ctx.is_root else None
    callback = make_epoch_callback(settings, state, optimizer, d.val if len(d.val) else None, checkpointer,
                                   tensorboard)
    ds = training_dataset(d.train.source, d.train.labels, batch_size=train.batch_size, seed=train.seed,
                          first_epoch=state.epoch, epochs=train.epochs, augment=train.augment, num_shards=ctx.size,
                          shard_index=ctx.rank, window_chunks=d.window_chunks(train))
    try:
        model.fit(ds, epochs=train.epochs, initial_epoch=state.epoch, steps_per_epoch=steps, verbose=0,
                  callbacks=[*ctx.callbacks(train.learning_rate, steps), callback])
    finally:
        if tensorboard is not None:
            tensorboard.close()
    timer.lap("fit")
    return callback.val_prob
