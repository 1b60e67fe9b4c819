import hypothesis.strategies as st
import keras
import numpy as np
import pytest
from helpers import randomize, silenced
from hypothesis import HealthCheck, given, settings

import keras_grs
from keras_grs import analyze, models, shrink
from keras_grs.surgery import resized


def test_empty_removal_reproduces_outputs_bit_for_bit():
    model = models.build("cnn1", (12, 12, 1))
    randomize(model, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(16, 12, 12, 1)).astype("float32")
    child = shrink(model, {})
    np.testing.assert_array_equal(child.predict(x, verbose=0), model.predict(x, verbose=0))


def test_flatten_rows_of_removed_channels_follow_them():
    model = models.build("cnn1", (12, 12, 1))
    randomize(model, np.random.default_rng(2))
    remove = {"conv1": [0, 31], "conv2": [3, 4, 15], "dense2": [1]}
    child = shrink(model, remove)
    assert analyze(child).widths == (30, 13, 32, 15, 8)
    x = np.random.default_rng(3).normal(size=(8, 12, 12, 1)).astype("float32")
    np.testing.assert_allclose(child(x), silenced(model, remove)(x), atol=1e-5)
    # conv2's output is 4x4x16, flattened: the dense1 rows of channel c are 16 * position + c.
    kept = [c for c in range(16) if c not in (3, 4, 15)]
    rows = [16 * p + c for p in range(16) for c in kept]
    np.testing.assert_array_equal(child.get_layer("dense1").kernel.numpy(), model.get_layer("dense1").kernel.numpy()[rows])


def test_parent_is_not_mutated_and_child_is_compiled_like_it():
    model = models.build("nn1", (140,), learning_rate=0.005)
    before = [w.copy() for w in model.get_weights()]
    child = shrink(model, {"dense1": [1, 2, 3]})
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))
    assert analyze(model).widths == (32, 16, 8)
    assert type(child.optimizer) is keras.optimizers.Adam
    assert float(child.optimizer.learning_rate) == pytest.approx(0.005)
    assert child.loss == model.loss
    x = np.zeros((4, 140), "float32")
    history = child.fit(x, np.array([0, 1, 0, 1]), epochs=1, verbose=0)
    assert "accuracy" in history.history


def test_uncompiled_parent_gives_uncompiled_child():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    assert not shrink(model, {}).compiled


def test_batch_normalization_statistics_follow_their_channels():
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(5, name="d"), keras.layers.BatchNormalization(name="bn"),
         keras.layers.Dense(2, name="out")]
    )
    randomize(model, np.random.default_rng(4))
    child = shrink(model, {"d": [0, 3]})
    for parent_w, child_w in zip(model.get_layer("bn").get_weights(), child.get_layer("bn").get_weights()):
        np.testing.assert_array_equal(child_w, parent_w[[1, 2, 4]])


@pytest.mark.parametrize(
    "remove, message",
    [
        ({"nope": [0]}, "unknown width group 'nope'"),
        ({"output": [0]}, "width group 'output' is pinned \\(model output\\)"),
        ({"dense1": [32]}, "out of range: \\[32\\]"),
        ({"dense1": [-1]}, "out of range"),
        ({"dense1": [2, 2]}, "repeated: \\[2\\]"),
        ({"dense3": list(range(8))}, "removing all 8 units"),
        ({"dense1": [1.5]}, "must be integers"),
    ],
)
def test_bad_removals_are_refused_and_change_nothing(remove, message):
    model = models.build("nn1", (140,))
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=message):
        shrink(model, remove)
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))


def test_a_dropout_drawn_per_channel_keeps_its_noise_shape_in_step_with_the_channels():
    # Dropout(noise_shape=(None, 1, C)) states the channel count: a pruned Conv leaves fewer, and so must it
    model = keras.Sequential([keras.Input((10, 3)), keras.layers.Conv1D(8, 3, activation="relu", name="conv"),
                              keras.layers.Dropout(0.3, noise_shape=(None, 1, 8), name="drop"),
                              keras.layers.Dropout(0.3, noise_shape=(None, 8, 1), name="per_position"),
                              keras.layers.AlphaDropout(0.1, noise_shape=(None, 1, 8), name="alpha"),
                              keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    child = keras_grs.shrink(model, {"conv": [0, 5]})
    assert tuple(child.get_layer("drop").noise_shape) == (None, 1, 6)
    assert tuple(child.get_layer("per_position").noise_shape) == (None, 8, 1)  # one draw for every channel: kept
    assert tuple(child.get_layer("alpha").noise_shape) == (None, 1, 6)
    assert tuple(resized(model, {"conv": 5}).get_layer("drop").noise_shape) == (None, 1, 5)
    x = np.random.default_rng(0).normal(size=(16, 10, 3)).astype("float32")
    child.fit(x, np.zeros(16), epochs=1, verbose=0)  # the parent's noise_shape would not broadcast here


def test_numpy_integer_indices_are_accepted():
    child = shrink(models.build("nn2", (140,)), {"dense1": np.array([0, 1])})
    assert keras_grs.analyze(child).widths == (30,)


def random_model(draw):
    """A random Sequential model of the supported layers, and a random removal from its groups."""
    kind = draw(st.sampled_from(["dense", "conv1d", "conv2d"]))
    layers = []
    if kind == "dense":
        shape = (draw(st.integers(3, 10)),)
    else:
        rank = 1 if kind == "conv1d" else 2
        side = draw(st.integers(6, 10))
        shape = (side,) * rank + (draw(st.integers(1, 3)),)
        conv = keras.layers.Conv1D if rank == 1 else keras.layers.Conv2D
        pools = {
            1: [keras.layers.MaxPooling1D, keras.layers.AveragePooling1D],
            2: [keras.layers.MaxPooling2D, keras.layers.AveragePooling2D],
        }[rank]
        for _ in range(draw(st.integers(1, 2))):
            padding = draw(st.sampled_from(["valid", "same"]))
            kernel = draw(st.integers(1, 2))
            strides = draw(st.integers(1, 2)) if padding == "same" else 1
            layers.append(conv(draw(st.integers(2, 6)), kernel, strides=strides, padding=padding,
                               activation=draw(st.sampled_from(["relu", "linear", "tanh"]))))
            if draw(st.booleans()):
                layers.append(keras.layers.BatchNormalization())
            if draw(st.booleans()):
                layers.append(keras.layers.ReLU())
            if draw(st.booleans()):
                layers.append(draw(st.sampled_from(pools))(pool_size=2, padding="same"))
            if draw(st.booleans()):
                layers.append(keras.layers.Dropout(0.3))
        ending = draw(st.sampled_from(["flatten", "global_avg", "global_max"]))
        layers.append({
            "flatten": keras.layers.Flatten,
            "global_avg": [keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D][rank - 1],
            "global_max": [keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D][rank - 1],
        }[ending]())
    for _ in range(draw(st.integers(0 if kind != "dense" else 1, 2))):
        layers.append(keras.layers.Dense(draw(st.integers(2, 6)), activation=draw(st.sampled_from(["relu", "tanh"]))))
        if draw(st.booleans()):
            layers.append(keras.layers.BatchNormalization())
        if draw(st.booleans()):
            layers.append(keras.layers.Activation("relu"))
        if draw(st.booleans()):
            layers.append(keras.layers.Dropout(0.5))
    layers.append(keras.layers.Dense(draw(st.integers(2, 3)), activation="softmax"))
    model = keras.Sequential([keras.Input(shape), *layers])
    remove = {}
    for group in analyze(model).groups:
        units = draw(st.lists(st.integers(0, group.width - 1), unique=True, max_size=group.width - 1))
        if units:
            remove[group.name] = units
    seed = draw(st.integers(0, 2**16))
    return model, remove, seed


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_shrunk_model_equals_parent_with_removed_units_silenced(data):
    model, remove, seed = random_model(data.draw)
    rng = np.random.default_rng(seed)
    randomize(model, rng)
    child = shrink(model, remove)
    expected_widths = tuple(g.width - len(remove.get(g.name, [])) for g in analyze(model).groups)
    assert analyze(child).widths == expected_widths
    x = rng.normal(size=(4, *model.input_shape[1:])).astype("float32")
    np.testing.assert_allclose(child(x, training=False), silenced(model, remove)(x, training=False), atol=1e-5)
    assert keras_grs.count_params(child) == child.count_params()


def gates_zeroed(model, remove):
    """A copy of ``model`` whose removed recurrent units have every gate's weights and bias at zero: with the default
    activations such a unit's state and output stay exactly zero (an LSTM's gates at 0.5 and candidate 0, a GRU's
    update at 0.5 and candidate 0, a SimpleRNN's tanh(0)), which is what removing it computes."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    for name, units in remove.items():
        layer = copy.get_layer(name)
        kernel, recurrent, bias = layer.get_weights()
        n = recurrent.shape[0]
        columns = [u + g * n for g in range(recurrent.shape[1] // n) for u in units]
        kernel[:, columns], recurrent[:, columns], bias[..., columns] = 0.0, 0.0, 0.0
        layer.set_weights([kernel, recurrent, bias])
    return copy


@pytest.mark.parametrize("cls", [keras.layers.LSTM, keras.layers.GRU, keras.layers.SimpleRNN])
def test_a_recurrent_layers_removed_units_are_gone_from_every_gate(cls):
    L = keras.layers
    model = keras.Sequential([keras.Input((6, 3)), cls(5, return_sequences=True, name="r1"), L.Dropout(0.1),
                              cls(4, name="r2"), L.Dense(3, name="out")])
    randomize(model, np.random.default_rng(7))
    assert analyze(model).widths == (5, 4)
    remove = {"r1": [1, 3], "r2": [0]}
    child = shrink(model, remove)
    assert analyze(child).widths == (3, 3)
    x = np.random.default_rng(8).normal(size=(4, 6, 3)).astype("float32")
    reference = gates_zeroed(model, remove)
    np.testing.assert_allclose(child(x), reference(x), atol=1e-5)
    assert np.abs(model(x) - reference(x)).max() > 1e-3  # the units removed mattered
    # each unit's incoming weights, every gate's: what the weight-magnitude method (NWM) ranks units by
    norms, child_norms = keras_grs.importance.unit_norms(model), keras_grs.importance.unit_norms(child)
    assert len(norms["r1"]) == 5 and len(child_norms["r1"]) == 3
    gates = model.get_layer("r1").get_weights()[1].shape[1] // 5
    own = np.abs(model.get_layer("r1").get_weights()[0]).reshape(3, gates, 5).sum(axis=(0, 1))
    own += np.abs(model.get_layer("r1").get_weights()[1]).reshape(5, gates, 5).sum(axis=(0, 1))
    np.testing.assert_allclose(norms["r1"], own, rtol=1e-5)
    # MACs: every step multiplies the input and the previous state, as the layers' weights count
    macs = 6 * (3 * 5 * gates + 5 * 5 * gates) + 6 * (5 * 4 * gates + 4 * 4 * gates) + 4 * 3
    assert keras_grs.count_flops(model) == 2 * macs
