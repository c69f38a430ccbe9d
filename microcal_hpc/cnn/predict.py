"""Score patches with a CNN: probabilities and their loss (used by the training job), and the
``predict`` job (a trained job's model on a folder of image files or a packed HDF5 file -> CSV).

Images are read with ``data_prep.readers`` (the same decoder and the same one-line errors as the
pack step) and must have the size the model was trained on.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from microcal_hpc.errors import InputError

THRESHOLD = 0.5  # predicted_label = probability >= THRESHOLD (as in metrics.binary_metrics)
EPSILON = 1e-7  # Keras' backend.epsilon(): probabilities are clipped to [EPSILON, 1 - EPSILON] for the loss


def load_trained_model(job_dir: str | os.PathLike):
    """The inference model saved by a training job (``JOB/model.keras``)."""
    import tensorflow as tf

    path = Path(job_dir) / "model.keras"
    if not path.is_file():
        what = "the job is not complete" if Path(job_dir).is_dir() else "no such job folder"
        raise InputError(f"{path}: trained model not found ({what})")
    try:
        return tf.keras.models.load_model(path, compile=False)
    except Exception as e:  # a damaged or foreign archive
        raise InputError(f"{path}: cannot load the model ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89HDF\r\n\x1a\n"


def read_inputs(path: str | os.PathLike) -> tuple[np.ndarray, list[np.ndarray], list[str]]:
    """(ids, images, sources) of every image under ``path``: a packed HDF5 file (train then test split,
    ids as stored) or a folder searched recursively (ids = paths relative to it, sorted). ``sources``
    names each image in error messages."""
    from data_prep.readers import is_image_name, read_image

    p = Path(path)
    if p.is_file() and _is_hdf5(p):
        from microcal_hpc.dataset import SPLITS, load_split

        ids, images = [], []
        for split in SPLITS:
            s = load_split(p, split)
            ids.extend(s.ids.tolist())
            images.extend(list(s.images))
        return np.array(ids, dtype=str), images, [f"{p}:{i}" for i in ids]
    if p.is_file():
        return np.array([p.name]), [read_image(p)], [str(p)]
    if not p.is_dir():
        raise InputError(f"{p}: no such file or folder")
    files = sorted(f for f in p.rglob("*") if f.is_file() and is_image_name(f.name))
    if not files:
        raise InputError(f"{p}: no image files found (looked for .pgm, .png, .tif ... recursively)")
    return (np.array([f.relative_to(p).as_posix() for f in files]), [read_image(f) for f in files],
            [str(f) for f in files])


def stack_for_model(images: list[np.ndarray], sources: list[str], shape: tuple[int, int]) -> np.ndarray:
    """Stack ``uint8 (H, W)`` images into (N, H, W), refusing any image whose size is not ``shape``."""
    for img, src in zip(images, sources):
        if img.shape != tuple(shape):
            raise InputError(f"{src}: image is {img.shape[1]}x{img.shape[0]} pixels; "
                             f"the model expects {shape[1]}x{shape[0]}")
    return np.stack(images).astype(np.uint8, copy=False) if images else np.zeros((0,) + tuple(shape), np.uint8)


def predict_probabilities(model, images, batch_size: int = 256) -> np.ndarray:
    """P(cluster) for every image of ``images`` (uint8 (N, H, W) or a ``cnn.source`` image source),
    scaled as in training, never augmented; one pass."""
    from microcal_hpc.cnn.pipeline import evaluation_dataset

    if len(images) == 0:
        return np.zeros(0)
    return model.predict(evaluation_dataset(images, batch_size=batch_size), verbose=0).reshape(-1).astype(np.float64)


def binary_cross_entropy(labels: np.ndarray, prob: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities, as Keras computes it from probabilities: clipped to
    [EPSILON, 1 - EPSILON], then -(y log(p + EPSILON) + (1 - y) log(1 - p + EPSILON)). NaN for no image."""
    if len(prob) == 0:
        return float("nan")
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), EPSILON, 1.0 - EPSILON)
    return float(-np.mean(y * np.log(p + EPSILON) + (1.0 - y) * np.log(1.0 - p + EPSILON)))


def predict_job(model_dir: str, images: str, out: str) -> str:
    """Write ``out`` (CSV: id, probability, predicted_label) for every image under ``images``; return ``out``."""
    from microcal_hpc.atomic import write_text
    from microcal_hpc.joblog import get_logger

    log = get_logger("cnn.predict")
    ids, imgs, sources = read_inputs(images)  # bad input fails here, before TensorFlow loads
    model = load_trained_model(model_dir)
    x = stack_for_model(imgs, sources, tuple(model.input_shape[1:3]))
    prob = predict_probabilities(model, x)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "probability", "predicted_label"])
    for i, p in zip(ids, prob):
        w.writerow([i, f"{p:.6f}", int(p >= THRESHOLD)])
    write_text(out, buf.getvalue())
    log.info("%d images scored -> %s (%d predicted clusters)", len(ids), out, int((prob >= THRESHOLD).sum()))
    return out
