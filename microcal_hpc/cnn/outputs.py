"""The end of a CNN job (root rank): score the final model once, then write its files (docs/outputs.md).

Evaluation: one pass over Test: a prediction pass for fold jobs (and one over the fold, unless the
last epoch's validation pass already scored it with the final weights), the Grad-CAM pass for jobs
without a fold (``cnn/saliency.py``: maps and probabilities at once); losses from the probabilities
(``predict.binary_cross_entropy``); metrics and the Test AUC's bootstrap interval.

Files, each under a temporary name and renamed when complete: ``history.json``, ``predictions.npz``,
``saliency.npz`` (no fold), ``model.keras`` (the inference model: plain layers, no optimizer, loadable
without this package or Horovod), then, once the last checkpoint is on disk, ``metrics.json``: it marks
the job complete.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from microcal_hpc.atomic import atomic_path, scratch_folder, write_json
from microcal_hpc.cnn import checkpoint
from microcal_hpc.cnn.data import JobData
from microcal_hpc.cnn.tracking import PhaseTimer, format_breakdown
from microcal_hpc.config import Config
from microcal_hpc.joblog import get_logger

log = get_logger("cnn.train")


def write_predictions(path: Path, d: JobData, val_prob: np.ndarray, test_prob: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, test_ids=d.test.ids.astype(str), test_labels=d.test.labels.astype(np.int64),
                 test_prob=test_prob, test_groups=d.test.groups.astype(str), val_ids=d.val.ids.astype(str),
                 val_labels=d.val.labels.astype(np.int64), val_prob=val_prob, val_groups=d.val.groups.astype(str),
                 val_fold=np.full(len(d.val), d.val_fold, dtype=np.int64))


def save_inference_model(model, cfg: Config, final: Path) -> None:
    """``model``'s weights in a fresh inference model (plain Dropout, no optimizer) saved as ``.keras``:
    written in a scratch folder beside ``final`` (Keras needs the extension), then renamed into place."""
    from microcal_hpc.cnn.model import build_model

    export = build_model(model.input_shape[1:], cfg.train)
    export.set_weights(model.get_weights())
    with scratch_folder(final) as scratch:
        path = scratch() / final.name
        export.save(path)
        os.replace(path, final)


@dataclass
class Scores:
    """The final model's scores."""

    val_prob: np.ndarray  # the fold's probabilities; length 0 without a fold
    test_prob: np.ndarray
    maps: np.ndarray | None  # Grad-CAM maps of Test (jobs without a fold)


def score(cfg: Config, job_dir: Path, model, d: JobData, state: checkpoint.TrainingState,
          checkpointer: checkpoint.Checkpointer, val_prob: np.ndarray | None) -> Scores:
    """One pass over Test (and over the fold when ``val_prob``, the last validation pass, is not the final
    model's). With early stopping the best epoch's weights are loaded first."""
    from microcal_hpc.cnn.predict import predict_probabilities

    if cfg.train.early_stopping_patience:
        checkpointer.wait()  # best.npz is written in the background
        if checkpoint.load_best(job_dir, model):
            log.info("restored the weights of the lowest validation loss (%.4f)", state.best_val_loss)
            val_prob = None
    if cfg.train.fold is None:  # the Grad-CAM pass: saliency maps and probabilities at once
        from microcal_hpc.cnn.saliency import grad_cam

        maps, test_prob = grad_cam(model, d.test.source)
        return Scores(np.zeros(0), test_prob, maps)
    val_prob = predict_probabilities(model, d.val.source) if val_prob is None else val_prob
    return Scores(val_prob, predict_probabilities(model, d.test.source), None)


def describe_optimizer(optimizer, cfg: Config, ctx) -> str:
    """The model's optimizer in one line, as metrics.json records it."""
    c = optimizer.get_config()
    name = c.get("name", type(optimizer).__name__).removeprefix("Distributed")
    lr = ctx.learning_rate(cfg.train.learning_rate)
    ranks = f", {ctx.size} ranks ({ctx.name}: gradients averaged)" if ctx.size > 1 else ""
    return (f"{name} (beta_1 {c.get('beta_1')}, beta_2 {c.get('beta_2')}, epsilon {c.get('epsilon')}), "
            f"learning rate {lr:g} ({cfg.train.lr_schedule} schedule), batch {cfg.train.batch_size} per rank{ranks}")


def _metrics(labels: np.ndarray, prob: np.ndarray) -> dict[str, Any]:
    from microcal_hpc.cnn.predict import binary_cross_entropy
    from microcal_hpc.metrics import binary_metrics

    return binary_metrics(labels, prob, loss=binary_cross_entropy(labels, prob))


def official_test_metrics(cfg: Config, d: JobData, s: Scores) -> dict[str, Any]:
    """Test metrics with the AUC's group-bootstrap interval."""
    from microcal_hpc.metrics import bootstrap_auc_ci

    report = cfg.report
    test = _metrics(d.test.labels, s.test_prob)
    lo, hi = bootstrap_auc_ci(d.test.labels, s.test_prob, groups=d.test_bootstrap_groups, n_boot=report.bootstrap,
                              seed=report.seed)
    test.update(auc_ci=[lo, hi], auc_ci_method=f"group bootstrap, {report.bootstrap} resamples")
    return test


def write_files(cfg: Config, job_dir: Path, model, d: JobData, s: Scores, history: dict) -> str | None:
    """Every output but metrics.json; return the saliency method line (None without maps)."""
    method = None
    if s.maps is not None:
        from microcal_hpc.cnn.saliency import method_description, write_saliency

        method = method_description(model)
        write_saliency(job_dir / "saliency.npz", d.test.ids, s.maps, method)
    write_json(job_dir / "history.json", history)
    write_predictions(job_dir / "predictions.npz", d, s.val_prob, s.test_prob)
    save_inference_model(model, cfg, job_dir / "model.keras")
    return method


def evaluate_and_write(cfg: Config, job_dir: Path, name: str, model, d: JobData, state: checkpoint.TrainingState,
                       ctx, val_prob: np.ndarray | None, timer: PhaseTimer, checkpointer: checkpoint.Checkpointer,
                       *, devices: dict, first_epoch: int, job_started: float) -> None:
    """Score the final model, write every output, metrics.json last. ``val_prob``: the last epoch's
    validation pass, if it ran with the final weights; ``first_epoch``: where this run of the job started;
    ``job_started``: ``perf_counter()`` at which the job would have started had it run in one go."""
    from microcal_hpc.cnn.model import resolve_mixed_precision

    train, h = cfg.train, state.history
    scores = score(cfg, job_dir, model, d, state, checkpointer, val_prob)
    timer.lap("evaluation")
    test = official_test_metrics(cfg, d, scores)
    validation = _metrics(d.val.labels, scores.val_prob) if train.fold is not None else None
    timer.lap("metrics")
    saliency = write_files(cfg, job_dir, model, d, scores, h)
    checkpointer.wait()  # the last epoch's checkpoint is on disk before the job is marked complete
    timer.lap("saving")
    timing = timer.breakdown(float(sum(h.get("epoch_seconds", [])[first_epoch:])))
    write_json(job_dir / "metrics.json", {
        "schema": 1, "arm": "cnn", "model": "cnn", "run": name, "feature_set": None, "augment": train.augment,
        "fold": train.fold, "folds": train.folds, "group_by": train.group_by, "seed": train.seed,
        "mixed_precision": resolve_mixed_precision(train),
        "optimizer": describe_optimizer(model.optimizer, cfg, ctx),
        "validation": validation,
        "cv": None,
        "train": {"loss": h["loss"][-1], "accuracy": h["accuracy"][-1]} if h.get("loss") else None,
        "test": test,
        "epochs_run": state.epoch,
        "stopped_early": state.stopped_early,
        "n_train": int(len(d.train)),
        "input": d.input,
        "saliency": saliency,
        "distributed": {"mode": ctx.name, "size": ctx.size},
        "devices": devices,
        "training_seconds": float(sum(h.get("epoch_seconds", []))),
        "timing": timing,
        "elapsed_s": float(time.perf_counter() - job_started),  # all runs of the job
    })
    log.info("time: %s", format_breakdown(timing))
    lo, hi = test["auc_ci"]
    log.info("done: %sofficial Test AUC %.4f (95%% CI %.4f-%.4f), trained on %d images -> %s",
             f"validation AUC {validation['auc']:.4f}, " if validation else "", test["auc"], lo, hi, len(d.train),
             job_dir)
