"""The CNN of the study: four convolution blocks and three dense layers (568,449 parameters on 60x60x1).

Read top to bottom, it is the network of the reference study::

    Conv2D 32 -> MaxPool -> Conv2D 64 -> MaxPool -> Dropout 0.25 -> Conv2D 128 -> MaxPool -> Dropout 0.25
    -> Conv2D 128 -> MaxPool -> Flatten -> Dropout 0.5 -> Dense 256 -> Dense 128 -> Dense 1 (sigmoid)

3x3 kernels, "same" padding and ReLU everywhere; binary cross-entropy and Adam.
"""
from __future__ import annotations

from microcal_hpc.config import TrainConfig


def hardware_supports_bfloat16() -> bool:
    """True when bfloat16 math is native here: every visible GPU is Ampere or newer (compute capability
    >= 8.0), or, without GPUs, the CPU reports AVX512_BF16 or AMX-BF16 (Linux /proc/cpuinfo)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        caps = [tf.config.experimental.get_device_details(g).get("compute_capability", (0, 0)) for g in gpus]
        return all(tuple(c) >= (8, 0) for c in caps)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def resolve_mixed_precision(train: TrainConfig) -> str:
    """``none`` or ``bfloat16``: ``train.mixed_precision`` with ``auto`` decided by the hardware."""
    if train.mixed_precision == "auto":
        return "bfloat16" if hardware_supports_bfloat16() else "none"
    return train.mixed_precision


def _policy(train: TrainConfig) -> str:
    """Keras dtype policy name of the hidden layers (the output layer always computes in float32)."""
    return "mixed_bfloat16" if resolve_mixed_precision(train) == "bfloat16" else "float32"


def build_model(input_shape: tuple[int, int, int], train: TrainConfig):
    """The uncompiled CNN for images of ``input_shape`` (H, W, 1), in the dtype policy of ``train``.

    The policy is given to every layer instead of being set globally, so that building a bfloat16
    model never changes the models built after it in the same process.
    """
    import tensorflow as tf

    layers = tf.keras.layers
    dtype = _policy(train)

    def conv(filters: int):
        return layers.Conv2D(filters, (3, 3), padding="same", activation="relu", dtype=dtype)

    def pool():
        return layers.MaxPooling2D((2, 2), dtype=dtype)

    model = tf.keras.Sequential(name="microcal_cnn")
    model.add(tf.keras.Input(shape=tuple(input_shape), name="patch"))
    model.add(conv(32))
    model.add(pool())
    model.add(conv(64))
    model.add(pool())
    model.add(layers.Dropout(0.25, dtype=dtype))
    model.add(conv(128))
    model.add(pool())
    model.add(layers.Dropout(0.25, dtype=dtype))
    model.add(conv(128))
    model.add(pool())
    model.add(layers.Flatten(dtype=dtype))
    model.add(layers.Dropout(0.5, dtype=dtype))
    model.add(layers.Dense(256, activation="relu", dtype=dtype))
    model.add(layers.Dense(128, activation="relu", dtype=dtype))
    model.add(layers.Dense(1, activation="sigmoid", dtype="float32", name="p_cluster"))
    return model


def compile_model(model, optimizer, train: TrainConfig) -> None:
    """Compile with binary cross-entropy, accuracy and AUC (XLA when ``train.jit_compile``).

    ``train.steps_per_execution`` training steps run per call into TensorFlow.
    """
    import tensorflow as tf

    model.compile(
        optimizer=optimizer,
        loss=tf.keras.losses.BinaryCrossentropy(),
        metrics=[tf.keras.metrics.BinaryAccuracy(name="accuracy"), tf.keras.metrics.AUC(name="auc")],
        jit_compile=bool(train.jit_compile),
        steps_per_execution=int(train.steps_per_execution),
    )
