"""The CNN of the study: four convolution blocks and three dense layers (568,449 parameters on 60x60x1).

Read top to bottom, it is the network of the reference study::

    Conv2D 32 -> MaxPool -> Conv2D 64 -> MaxPool -> Dropout 0.25 -> Conv2D 128 -> MaxPool -> Dropout 0.25
    -> Conv2D 128 -> MaxPool -> Flatten -> Dropout 0.5 -> Dense 256 -> Dense 128 -> Dense 1 (sigmoid)

3x3 kernels, "same" padding and ReLU everywhere; binary cross-entropy and Adam.

Dropout during training: Keras' own ``Dropout`` (without a seed) draws its masks from a stateful
TensorFlow op whose position in its random stream lives in the op's kernel, so a job resumed from a
checkpoint starts that stream again and diverges from an uninterrupted run. The training model
therefore uses ``StepSeededDropout``: a stateless mask seeded with (layer seed, optimizer step),
a pure function of the step counter that the checkpoint holds. The model saved for inference has plain
``Dropout`` layers (dropout does nothing at inference).
"""
from __future__ import annotations

import itertools

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


def _step_seeded_dropout_class():
    import tensorflow as tf

    class StepSeededDropout(tf.keras.layers.Dropout):
        """Dropout whose training mask is ``stateless_dropout`` seeded with (``seed``, ``step``)."""

        def __init__(self, rate: float, seed: int, step, **kwargs):
            super().__init__(rate, seed=seed, **kwargs)
            self._step = lambda: step  # the optimizer's counter; a closure, so Keras does not track it as a weight

        def call(self, inputs, training=None):
            def dropped():
                key = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(self._step(), tf.int64)])
                return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=key)

            if training is None:
                training = tf.keras.backend.learning_phase()
            return tf.__internal__.smart_cond.smart_cond(training, dropped, lambda: tf.identity(inputs))

    return StepSeededDropout


def build_model(input_shape: tuple[int, int, int], train: TrainConfig, step=None, dropout_seed: int = 0):
    """The uncompiled CNN for images of ``input_shape`` (H, W, 1), in the dtype policy of ``train``.

    ``step``: the optimizer's iteration counter; given, the dropout masks of training are a pure function
    of (``dropout_seed``, layer, step) (module docstring); None: plain Keras dropout (inference models).
    The policy is given to every layer instead of being set globally, so that building a bfloat16
    model never changes the models built after it in the same process.
    """
    import tensorflow as tf

    layers = tf.keras.layers
    dtype = _policy(train)
    seeded = _step_seeded_dropout_class() if step is not None else None
    layer_seeds = itertools.count(dropout_seed)  # one seed per dropout layer

    def dropout(rate: float):
        if seeded is None:
            return layers.Dropout(rate, dtype=dtype)
        return seeded(rate, seed=next(layer_seeds), step=step, dtype=dtype)

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
    model.add(dropout(0.25))
    model.add(conv(128))
    model.add(pool())
    model.add(dropout(0.25))
    model.add(conv(128))
    model.add(pool())
    model.add(layers.Flatten(dtype=dtype))
    model.add(dropout(0.5))
    model.add(layers.Dense(256, activation="relu", dtype=dtype))
    model.add(layers.Dense(128, activation="relu", dtype=dtype))
    model.add(layers.Dense(1, activation="sigmoid", dtype="float32", name="p_cluster"))
    return model


def compile_model(model, optimizer, train: TrainConfig) -> None:
    """Compile with binary cross-entropy and accuracy (XLA when ``train.jit_compile``).

    ``train.steps_per_execution`` training steps run per call into TensorFlow.
    """
    import tensorflow as tf

    model.compile(
        optimizer=optimizer,
        loss=tf.keras.losses.BinaryCrossentropy(),
        metrics=[tf.keras.metrics.BinaryAccuracy(name="accuracy")],
        jit_compile=bool(train.jit_compile),
        steps_per_execution=int(train.steps_per_execution),
    )
