"""Named augmentation presets, built from Keras preprocessing layers.

A preset is applied to batches of training images scaled to [0, 1] (shape (B, H, W, 1)) in the
training pipeline only; validation and test images are never augmented.

Random draws. Keras 2.15's image layers (``RandomFlip``, ``RandomRotation`` ...) draw from a
``tf.random.Generator`` of their own (``force_generator=True``), seeded once when the layer is built,
whose state then advances batch after batch. Because the tf.data pipeline runs ahead of training, that
state cannot be checkpointed at an epoch boundary, and a resumed job would draw other transforms.
:func:`augment_batch` therefore sets every generator's state, before each batch, from the batch's key
(seed, rank, epoch, step): the transforms of a batch are a pure function of that key, the same in an
uninterrupted and a resumed job.

Presets:

``none``
    no augmentation.
``flips``
    horizontal and vertical flips and 90-degree rotations: the 8 symmetries of the square, which
    leave the pixel grid intact (no interpolation). Patches have no preferred orientation.
``reference``
    the reference study's ``ImageDataGenerator`` settings: rotation 40 degrees, width/height shift
    0.2, zoom 0.2, horizontal flip, ``fill_mode="nearest"``. Its ``shear_range=0.2`` is left out:
    tf.keras 2.15 has no shear layer, and ``ImageDataGenerator`` reads the value in degrees, so a
    shear of at most 0.2 degrees moves a pixel of a 60x60 patch by at most 0.1 pixel.
``strong``
    ``flips`` plus rotation up to 20 degrees, shifts 0.1, zoom 0.1 and brightness 0.1 (reflect fill).
"""
from __future__ import annotations

from microcal_hpc.errors import ConfigError

# The one declaration of the presets: name -> one-line description of its transforms (the report lists it).
PRESETS: dict[str, str] = {
    "none": "no augmentation",
    "flips": "horizontal + vertical flips and 90-degree rotations",
    "reference": "the reference study's ImageDataGenerator: rotation 40 deg, width/height shift 0.2, zoom 0.2, "
                 "horizontal flip, nearest fill (its 0.2-degree shear left out)",
    "strong": "flips + rotation 20 deg, shifts 0.1, zoom 0.1, brightness 0.1",
}


def check_preset(name: str) -> str:
    """Return ``name`` if it is a known preset; raise ConfigError listing the known ones otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"train.augment: unknown augmentation preset {name!r}; known: {', '.join(PRESETS)}")
    return name


def _random_rot90_class():
    import tensorflow as tf

    class RandomRot90(tf.keras.layers.Layer):
        """Rotate each square image of a batch by a random multiple of 90 degrees."""

        def __init__(self, seed: int | None = None, **kwargs):
            super().__init__(**kwargs)
            self.seed = seed
            with tf.init_scope():
                self.generator = tf.random.Generator.from_seed(0 if self.seed is None else self.seed)

        def call(self, images, training=True):
            if not training:
                return images
            h, w = images.shape[1], images.shape[2]
            if h is not None and w is not None and h != w:
                raise ValueError(f"90-degree rotations need square images, got {h}x{w}")
            k = self.generator.uniform([tf.shape(images)[0]], 0, 4, dtype=tf.int32)
            rotations = tf.stack([tf.image.rot90(images, i) for i in range(4)], axis=1)  # (B, 4, H, W, C)
            return tf.gather(rotations, k, axis=1, batch_dims=1)

        def get_config(self):
            return {**super().get_config(), "seed": self.seed}

    return RandomRot90


def build_augmenter(name: str, seed: int = 0):
    """The preset ``name`` as a ``tf.keras.Sequential`` of random layers, or None for ``none``.

    Every random layer gets its own seed derived from ``seed``, so a pipeline built twice with the
    same seed produces the same augmented images.
    """
    check_preset(name)
    if name == "none":
        return None
    import tensorflow as tf

    L = tf.keras.layers
    seeds = iter(range(seed * 101 + 1, seed * 101 + 100))
    flips = [L.RandomFlip("horizontal_and_vertical", seed=next(seeds)), _random_rot90_class()(seed=next(seeds))]
    if name == "flips":
        layers = flips
    elif name == "reference":
        layers = [
            L.RandomRotation(40.0 / 360.0, fill_mode="nearest", seed=next(seeds)),
            L.RandomTranslation(0.2, 0.2, fill_mode="nearest", seed=next(seeds)),
            L.RandomZoom(0.2, 0.2, fill_mode="nearest", seed=next(seeds)),
            L.RandomFlip("horizontal", seed=next(seeds)),
        ]
    else:  # strong
        layers = flips + [
            L.RandomRotation(20.0 / 360.0, fill_mode="reflect", seed=next(seeds)),
            L.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=next(seeds)),
            L.RandomZoom(0.1, 0.1, fill_mode="reflect", seed=next(seeds)),
            L.RandomBrightness(0.1, value_range=(0.0, 1.0), seed=next(seeds)),
        ]
    return tf.keras.Sequential(layers, name=f"augment_{name}")


def random_generators(augmenter) -> list:
    """The ``tf.random.Generator`` of every layer of ``augmenter`` (created now where Keras creates it lazily)."""
    generators = []
    for layer in augmenter.layers:
        if hasattr(layer, "generator"):  # RandomRot90
            generators.append(layer.generator)
        else:  # Keras 2.15 BaseRandomLayer with force_generator=True (private attributes; Keras is pinned)
            layer._random_generator._maybe_init()
            generators.append(layer._random_generator._generator)
    return generators


def augment_batch(augmenter, generators: list, images, key):
    """``augmenter`` applied to ``images`` with every generator's state first set from ``key`` (int64 [2]).

    Call inside the tf.data map function (a traced graph: the state assignments run before the
    layers' draws, which read the same variables).
    """
    import tensorflow as tf

    resets = []
    for i, gen in enumerate(generators):
        seed = tf.random.experimental.stateless_fold_in(key, i)
        state = tf.random.stateless_uniform(gen.state.shape, seed=seed, minval=None, maxval=None, dtype=tf.int64)
        resets.append(gen.state.assign(state))
    with tf.control_dependencies(resets):
        images = tf.identity(images)
    return augmenter(images, training=True)
