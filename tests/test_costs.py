import keras
import numpy as np
import pytest

from keras_grs import count_flops, count_params, flops_by_layer, models, shrink


def test_params_match_keras_for_every_seed_model():
    for name, shape in [("nn1", (140,)), ("nn2", (140,)), ("cnn1", (12, 12, 1)), ("cnn2", (12, 12, 1))]:
        model = models.build(name, shape)
        assert count_params(model) == model.count_params()


def test_nn1_counts_by_hand():
    model = models.build("nn1", (140,))
    assert count_params(model) == (140 * 32 + 32) + (32 * 16 + 16) + (16 * 8 + 8) + (8 * 2 + 2)
    assert count_flops(model) == 2 * (140 * 32 + 32 * 16 + 16 * 8 + 8 * 2)


def test_cnn1_flops_by_hand():
    # 12x12x1 -> conv 2x2 -> 11x11x32 -> pool -> 5x5x32 -> conv 2x2 -> 4x4x16 -> flatten 256 -> 32 -> 16 -> 8 -> 2
    flops = flops_by_layer(models.build("cnn1", (12, 12, 1)))
    assert flops == {
        "conv1": 2 * 11 * 11 * (2 * 2 * 1) * 32,
        "conv2": 2 * 4 * 4 * (2 * 2 * 32) * 16,
        "dense1": 2 * 256 * 32,
        "dense2": 2 * 32 * 16,
        "dense3": 2 * 16 * 8,
        "output": 2 * 8 * 2,
    }


def test_same_padding_and_strides_use_the_output_positions():
    model = keras.Sequential([keras.Input((9, 9, 2)), keras.layers.Conv2D(4, 3, strides=2, padding="same")])
    assert count_flops(model) == 2 * 5 * 5 * (3 * 3 * 2) * 4


def test_dense_on_a_sequence_counts_every_position():
    model = keras.Sequential([keras.Input((7, 5)), keras.layers.Dense(3)])
    assert count_flops(model) == 2 * 7 * 5 * 3


def test_nonzero_counts_only_nonzero_weights():
    model = models.build("nn2", (140,))
    model.set_weights([np.ones_like(w) for w in model.get_weights()])  # Keras starts biases at zero
    kernel, bias = model.get_layer("dense1").get_weights()
    kernel[:100] = 0.0
    bias[:] = 0.0
    model.get_layer("dense1").set_weights([kernel, bias])
    assert count_params(model, nonzero=True) == count_params(model) - 100 * 32 - 32
    assert count_flops(model, nonzero=True) == count_flops(model) - 2 * 100 * 32


def test_shrinking_reduces_the_counts():
    model = models.build("nn1", (140,))
    child = shrink(model, {"dense1": list(range(16))})
    assert count_params(child) == count_params(model) - 16 * (140 + 1) - 16 * 16
    assert count_flops(child) < count_flops(model)
    assert np.isclose(count_flops(child), count_flops(model) - 2 * (16 * 140 + 16 * 16))


def test_depthwise_separable_and_merges_by_hand():
    inputs = keras.Input((6, 6, 4))
    a = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(inputs)  # 4x4 outputs, 4 x 2 channels
    b = keras.layers.SeparableConv2D(8, 3, name="sep")(inputs)  # 4x4 outputs: 3x3x4 depthwise, 4 -> 8 pointwise
    h = keras.layers.Add(name="add")([a, b])
    h = keras.layers.Concatenate(name="cat")([h, keras.layers.Multiply(name="mul")([a, b])])
    model = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(h))
    assert flops_by_layer(model) == {"dw": 2 * 16 * (3 * 3 * 4 * 2), "sep": 2 * 16 * (3 * 3 * 4 + 4 * 8)}
    assert count_params(model) == model.count_params() == (3 * 3 * 4 * 2 + 8) + (3 * 3 * 4 + 4 * 8 + 8)


def test_shrinking_a_separable_group_reduces_both_halves_of_its_consumer():
    inputs = keras.Input((6, 6, 2))
    h = keras.layers.Conv2D(4, 1, name="c")(inputs)
    h = keras.layers.SeparableConv2D(3, 3, name="sep")(h)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(h)))
    child = shrink(model, {"c": [0]})
    assert flops_by_layer(child)["sep"] == 2 * 16 * (3 * 3 * 3 + 3 * 3)


def test_output_kernel_is_the_one_whose_last_axis_are_the_units():
    from keras_grs.layers import output_kernel

    sep = keras.layers.SeparableConv2D(5, 3)
    sep.build((None, 6, 6, 2))
    dense = keras.layers.Dense(4)
    dense.build((None, 3))
    assert output_kernel(sep).shape == (1, 1, 2, 5) and output_kernel(dense).shape == (3, 4)
    bn = keras.layers.BatchNormalization()
    bn.build((None, 3))
    with pytest.raises(ValueError, match="produces no units"):
        output_kernel(bn)
