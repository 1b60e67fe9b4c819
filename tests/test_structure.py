import keras
import pytest

import keras_grs
from keras_grs import UnsupportedLayerError, analyze, models


def test_nn1_has_one_group_per_hidden_dense_layer():
    structure = analyze(models.build("nn1", (140,)))
    assert str(structure) == "32x16x8"
    assert [g.name for g in structure.groups] == ["dense1", "dense2", "dense3"]
    assert [g.dependents for g in structure.groups] == [("dense2",), ("dense3",), ("output",)]
    assert all(g.min_width == 1 for g in structure.groups)


def test_cnn1_groups_follow_through_pooling_and_flatten():
    structure = analyze(models.build("cnn1", (12, 12, 1)))
    assert structure.widths == (32, 16, 32, 16, 8)
    conv1, conv2 = structure.groups[:2]
    assert conv1.layer == "conv1" and conv1.dependents == ("conv2",)
    assert conv2.dependents == ("flatten", "dense1")


def test_output_layer_is_never_a_group():
    structure = analyze(models.build("nn2", (140,)))
    assert structure.names == ("dense1",)
    with pytest.raises(KeyError, match="output"):
        structure.group("output")


def test_functional_chain_with_batch_normalization():
    inputs = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", name="c")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(6, name="d")(h)
    outputs = keras.layers.Dense(3, activation="softmax", name="out")(h)
    structure = analyze(keras.Model(inputs, outputs))
    assert [(g.name, g.width, g.dependents) for g in structure.groups] == [("c", 8, ("bn", "d")), ("d", 6, ("out",))]


def test_min_width_per_group():
    structure = analyze(models.build("nn1", (140,)), min_width={"dense1": 4})
    assert [g.min_width for g in structure.groups] == [4, 1, 1]
    assert structure.group("dense1").removable == 28
    with pytest.raises(ValueError, match="unknown groups"):
        analyze(models.build("nn1", (140,)), min_width={"nope": 2})


def test_unsupported_layer_is_named_with_its_class_and_the_supported_list():
    memory = keras.layers.Bidirectional(keras.layers.LSTM(4), name="memory")
    model = keras.Sequential([keras.Input((5, 3)), memory, keras.layers.Dense(2)])
    with pytest.raises(UnsupportedLayerError) as error:
        analyze(model)
    message = str(error.value)
    assert "'memory'" in message and "Bidirectional" in message and "Dense" in message and "LSTM" in message


def test_a_residual_addition_onto_the_model_input_is_pinned_with_it():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(8, name="d")(inputs)
    h = keras.layers.Add(name="skip")([h, inputs])
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
    structure = analyze(model)
    assert structure.groups == ()
    joined = next(g for g in structure.pinned if "d" in g.layers)
    assert joined.pinned == "model input" and joined.layers == ("input_layer", "d", "skip")
    with pytest.raises(KeyError, match="pinned \\(model input\\)"):
        structure.group(joined.name)


def test_two_outputs_pin_both_output_layers():
    inputs = keras.Input((8,))
    h = keras.layers.Dense(6, name="h")(inputs)
    a = keras.layers.Dense(4, name="a")(h)
    b = keras.layers.Dense(3, name="b")(h)
    structure = analyze(keras.Model(inputs, [a, b]))
    assert [(g.name, sorted(g.consumers)) for g in structure.groups] == [("h", ["a", "b"])]
    assert {g.name: g.pinned for g in structure.pinned if g.name in "ab"} == {"a": "model output", "b": "model output"}


def test_channels_first_is_refused():
    model = keras.Sequential(
        [keras.Input((3, 8, 8)), keras.layers.Conv2D(4, 2, data_format="channels_first", name="cf"),
         keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    with pytest.raises(UnsupportedLayerError, match="channels_first"):
        analyze(model)


def test_analyze_does_not_change_the_model():
    model = models.build("cnn2", (12, 12, 1))
    before = [w.copy() for w in model.get_weights()]
    keras_grs.analyze(model)
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))
