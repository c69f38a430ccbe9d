"""What a training job reports about itself: where its time went, the devices it used, TensorBoard scalars.

- :class:`PhaseTimer`: wall time per phase of the job (import, data, build, epochs, between epochs,
  evaluation, metrics, saving), logged in one line at the end and recorded in ``metrics.json`` (``timing``).
- :func:`describe_devices`: TensorFlow's physical and logical devices, GPU names, ``CUDA_VISIBLE_DEVICES``
  and the CPU cores the process may use; logged and recorded in ``metrics.json`` (``devices``).
- :class:`TensorBoardLog`: per-epoch scalars in ``JOB/tensorboard/`` (root rank only).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

# the phases of a job in order; "fit" (Keras' fit) is split into "epochs" and "between_epochs"
PHASES = ("import", "data", "build", "epochs", "between_epochs", "evaluation", "metrics", "saving")
SCALARS = ("loss", "accuracy", "val_loss", "val_accuracy", "val_auc", "lr")  # history keys written to TensorBoard


class PhaseTimer:
    """Wall time of the phases of one run of a job, measured from its creation (the job's start)."""

    def __init__(self):
        self.start = time.perf_counter()
        self._last = self.start
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        """Charge the time since the previous lap to ``phase`` (added up if it comes again)."""
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now

    def breakdown(self, epoch_seconds: float) -> dict[str, float]:
        """Seconds per phase of this run. ``epochs`` is the sum of the epoch times measured by training;
        the rest of the time spent in Keras' ``fit`` (setting up, callbacks between epochs) is
        ``between_epochs``; ``overhead`` = total - epochs."""
        total = time.perf_counter() - self.start
        out = {p: round(self.seconds.get(p, 0.0), 3) for p in PHASES}
        out["epochs"] = round(epoch_seconds, 3)
        out["between_epochs"] = round(max(0.0, self.seconds.get("fit", 0.0) - epoch_seconds), 3)
        out["total"] = round(total, 3)
        out["overhead"] = round(total - epoch_seconds, 3)
        return out


def format_breakdown(t: dict[str, float]) -> str:
    """One log line: ``total 31.20 s = epochs 22.40 + overhead 8.80 (import 3.30, data 0.10, ...)``."""
    parts = ", ".join(f"{k} {t[k]:.2f}" for k in PHASES if k != "epochs")
    return f"total {t['total']:.2f} s = epochs {t['epochs']:.2f} + overhead {t['overhead']:.2f} ({parts})"


def describe_devices() -> dict:
    """The devices this process trains on, as TensorFlow sees them, and the CPU cores it may use."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "physical": [d.name for d in tf.config.list_physical_devices()],
        "logical": [d.name for d in tf.config.list_logical_devices()],
        "gpus": [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus],
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cpu_cores": cores,
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads() or cores,
        "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads() or cores,
    }


def format_devices(d: dict) -> str:
    gpus = ", ".join(d["gpus"]) or "none"
    return (f"devices: {', '.join(d['logical'])}; GPUs: {gpus}; CUDA_VISIBLE_DEVICES={d['cuda_visible_devices']}; "
            f"{d['cpu_cores']} CPU core{'s' if d['cpu_cores'] != 1 else ''} allowed, {d['intra_op_threads']} "
            f"intra-op / {d['inter_op_threads']} "
            "inter-op threads")


class TensorBoardLog:
    """Per-epoch scalars (:data:`SCALARS` present in a history row) under ``folder``, step = epoch (1-based).

    A resumed job starts the folder again from the history of its checkpoint, so the event files never
    hold epochs that the checkpoint does not (a killed run may have logged one more)."""

    def __init__(self, folder: str | Path, history: dict[str, list]):
        import tensorflow as tf

        self.folder = Path(folder)
        shutil.rmtree(self.folder, ignore_errors=True)
        self._writer = tf.summary.create_file_writer(str(self.folder))
        for i, epoch in enumerate(history.get("epoch", [])):
            self.epoch(epoch, {k: v[i] for k, v in history.items() if k in SCALARS and i < len(v)})

    def epoch(self, epoch: int, row: dict[str, float]) -> None:
        import tensorflow as tf

        with self._writer.as_default(step=int(epoch)):
            for key in SCALARS:
                if key in row:
                    tf.summary.scalar(key, float(row[key]))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
