"""The CNN architecture: layer order, parameter count, other input sizes, bfloat16 policy."""
from __future__ import annotations

import numpy as np
import pytest

from microcal_hpc.config import TrainConfig

tf = pytest.importorskip("tensorflow")


def test_parameter_count_on_60x60_is_the_reference_networks():
    from microcal_hpc.cnn.model import build_model

    model = build_model((60, 60, 1), TrainConfig())
    assert model.count_params() == 568_449
    assert model.output_shape == (None, 1)


def test_layers_are_in_the_documented_order():
    from microcal_hpc.cnn.model import build_model

    model = build_model((60, 60, 1), TrainConfig())
    L = tf.keras.layers
    described = []
    for layer in model.layers:
        if isinstance(layer, L.Conv2D):
            assert layer.kernel_size == (3, 3) and layer.padding == "same"
            assert layer.activation is tf.keras.activations.relu
            described.append(f"conv{layer.filters}")
        elif isinstance(layer, L.MaxPooling2D):
            described.append("pool")
        elif isinstance(layer, L.Dropout):
            described.append(f"drop{layer.rate}")
        elif isinstance(layer, L.Flatten):
            described.append("flatten")
        elif isinstance(layer, L.Dense):
            described.append(f"dense{layer.units}")
    assert described == ["conv32", "pool", "conv64", "pool", "drop0.25", "conv128", "pool", "drop0.25",
                         "conv128", "pool", "flatten", "drop0.5", "dense256", "dense128", "dense1"]
    assert model.layers[-1].activation is tf.keras.activations.sigmoid


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_48x48_input_builds_and_learns():
    from microcal_hpc.cnn.model import build_model, compile_model

    tf.keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 0.3, size=(64, 48, 48, 1)).astype(np.float32)
    y = np.repeat([0.0, 1.0], 32).astype(np.float32)
    x[y == 1, 20:28, 20:28, 0] += 0.7  # a bright square: learnable
    train = TrainConfig()
    model = build_model((48, 48, 1), train)
    compile_model(model, tf.keras.optimizers.Adam(1e-3), train)
    before = [w.copy() for w in model.get_weights()]
    hist = model.fit(x, y, batch_size=16, epochs=6, verbose=0, shuffle=False)
    assert model.predict(x[:4], verbose=0).shape == (4, 1)
    assert all(np.isfinite(hist.history["loss"]))
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


def test_bfloat16_policy_is_per_model_and_keeps_a_float32_output():
    from microcal_hpc.cnn.model import build_model

    mixed = build_model((60, 60, 1), TrainConfig(mixed_precision="bfloat16"))
    assert mixed.layers[0].compute_dtype == "bfloat16"
    assert mixed.layers[0].variable_dtype == "float32"  # master weights stay float32
    assert mixed.layers[-1].compute_dtype == "float32"
    out = mixed(np.zeros((2, 60, 60, 1), np.float32), training=False)
    assert out.dtype == tf.float32
    plain = build_model((60, 60, 1), TrainConfig(mixed_precision="none"))  # built after: unaffected
    assert plain.layers[0].compute_dtype == "float32"
    assert tf.keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("native,expected", [(True, "bfloat16"), (False, "float32")])
def test_auto_precision_follows_the_hardware(monkeypatch, native, expected):
    from microcal_hpc.cnn import model as model_mod

    monkeypatch.setattr(model_mod, "hardware_supports_bfloat16", lambda: native)
    m = model_mod.build_model((60, 60, 1), TrainConfig(mixed_precision="auto"))
    assert m.layers[0].compute_dtype == expected
    assert model_mod.build_model((60, 60, 1), TrainConfig(mixed_precision="none")).layers[0].compute_dtype == "float32"


def test_training_dropout_masks_are_a_pure_function_of_the_step():
    from microcal_hpc.cnn.model import build_model

    train = TrainConfig(mixed_precision="none")
    step = tf.Variable(5, dtype=tf.int64)
    model = build_model((60, 60, 1), train, step=step, dropout_seed=3)
    assert model.count_params() == 568_449  # the step counter is not a weight
    x = np.random.default_rng(0).uniform(0, 1, (4, 60, 60, 1)).astype(np.float32)
    first = model(x, training=True).numpy()
    np.testing.assert_array_equal(model(x, training=True).numpy(), first)  # same step, same masks
    twin = build_model((60, 60, 1), train, step=step, dropout_seed=3)  # e.g. the same job after a resume
    twin.set_weights(model.get_weights())
    np.testing.assert_array_equal(twin(x, training=True).numpy(), first)
    step.assign(6)
    assert not np.array_equal(model(x, training=True).numpy(), first)  # the next step draws new masks
    other = build_model((60, 60, 1), train, step=step, dropout_seed=4)
    other.set_weights(model.get_weights())
    assert not np.array_equal(other(x, training=True).numpy(), model(x, training=True).numpy())
    plain = build_model((60, 60, 1), train)  # the inference model: plain Dropout, the same predictions
    plain.set_weights(model.get_weights())
    np.testing.assert_array_equal(plain(x, training=False).numpy(), model(x, training=False).numpy())
