"""Where the CNN looks: Grad-CAM maps of the trained model on the Test images (``JOB/saliency.npz``).

Grad-CAM (Selvaraju et al. 2017) on the third convolution, whose 15x15 output (on 60x60 patches: a
quarter of the patch side, 4 pixels per cell) is fine enough to place a calcification speck; the last
convolutions (7x7, 3x3) are too coarse. For each image: the gradient of the cluster logit (the final
layer's input to its sigmoid) with respect to that layer's activations, averaged over the cells, weighs
the channels; the weighted sum of the activations, clipped at zero, is upsampled bilinearly to the
patch size. Larger values mark pixels whose features raise the model's evidence for a cluster; a map
is all zeros where nothing does. One batched forward and backward pass over the images, which also
gives their probabilities: a job without a fold scores Test with this pass (one pass, no second one).

``saliency.npz``: ``test_ids`` (str, N, Test order), ``maps`` (float32, N x H x W, non-negative),
``method`` (str, one line).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from microcal_hpc.atomic import atomic_path

CONV_INDEX = 2  # 0-based index among the Conv2D layers: the third convolution
BATCH = 512  # images per forward/backward pass


def _target_layer(model):
    import tensorflow as tf

    convs = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Conv2D)]
    return convs[CONV_INDEX]


def method_description(model) -> str:
    layer = _target_layer(model)
    h, w = layer.output.shape[1:3]
    H, W = model.input_shape[1:3]
    return (f"Grad-CAM of the cluster logit on {layer.name} ({h}x{w}), ReLU, "
            f"bilinear upsampling to {H}x{W}")


def grad_cam(model, source) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM maps (float32 (N, H, W)) of every image of ``source`` (an image source or a uint8 array), and
    from the same forward pass P(cluster) of each image (float64 (N,); ``model.predict``'s values to float32
    rounding).

    One traced function (a graph, like ``predict``'s: run eagerly, bfloat16 layers round differently and the
    probabilities move by up to 0.02). The layers up to the target convolution run outside the gradient
    tape, so nothing below it is differentiated (max-pooling gradients are slow under op determinism).
    """
    import tensorflow as tf

    from microcal_hpc.cnn.pipeline import scale_images
    from microcal_hpc.cnn.source import InMemoryImages

    source = source if hasattr(source, "read") else InMemoryImages(np.asarray(source))
    cut = model.layers.index(_target_layer(model)) + 1
    lower, upper, head = model.layers[:cut], model.layers[cut:-1], model.layers[-1]
    size = tuple(model.input_shape[1:3])

    @tf.function(input_signature=[tf.TensorSpec((None,) + size + (1,), tf.float32)])
    def one_pass(x):
        activations = x
        for layer in lower:
            activations = layer(activations, training=False)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(activations)
            hidden = activations
            for layer in upper:
                hidden = layer(hidden, training=False)
            logit = tf.matmul(tf.cast(hidden, tf.float32), head.kernel) + head.bias  # the head's sigmoid input
        grads = tf.cast(tape.gradient(logit, activations), tf.float32)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # one weight per channel and image
        cam = tf.nn.relu(tf.reduce_sum(weights * tf.cast(activations, tf.float32), axis=-1, keepdims=True))
        return tf.image.resize(cam, size, method="bilinear")[..., 0], head(hidden, training=False)[:, 0]

    maps, probs = [np.zeros((0,) + size, np.float32)], [np.zeros(0)]
    for start in range(0, len(source), BATCH):
        batch_maps, batch_probs = one_pass(scale_images(source.read(np.arange(start, min(start + BATCH, len(source))))))
        maps.append(batch_maps.numpy())
        probs.append(batch_probs.numpy())
    return np.concatenate(maps).astype(np.float32), np.concatenate(probs).astype(np.float64)


def write_saliency(path: str | Path, test_ids: np.ndarray, maps: np.ndarray, method: str) -> None:
    """``saliency.npz`` (atomic)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, test_ids=np.asarray(test_ids).astype(str), maps=maps.astype(np.float32), method=np.array(method))
