"""Convolutions with a small patch (first convolutions over one to three channels): the float kernel that computes a
group of output positions at once (a fused pooling's window, or 4 in a row) and the int8 kernel that walks 2x2
windows of one channel by column words. Outputs match Keras (float, within 1e-4) and TFLite (int8, within one
step) on the host and, with the ARM tools, on ARMv6 under qemu, for odd sizes, strides, both paddings, 1 and 3
input channels and 1, 3, 10 and 17 filters, with and without a fused pooling."""

import shutil
import subprocess

import keras
import numpy as np
import pytest
from test_c_int8 import against_tflite, seq

import c_backend
from c_backend import armv6
from c_backend.targets import STRICT

L = keras.layers
needs_arm = pytest.mark.skipif(bool(armv6.missing_tools()), reason="make c-toolchains installs the ARM tools")

# case -> (model, the positions the first convolution computes together)
FLOAT = {
    "one_channel_2x2_max_relu_10": (lambda: seq((12, 12, 1), L.Conv2D(10, 2, activation="relu"), L.MaxPooling2D(2),
                                                L.Flatten(), L.Dense(2)), 4),
    "one_channel_3x3_same_strided_3": (lambda: seq((9, 11, 1), L.Conv2D(3, 3, strides=2, padding="same",
                                                                        activation="relu"),
                                                   L.Flatten(), L.Dense(2)), 4),
    "three_channels_1x1_tanh_17_odd_positions": (lambda: seq((7, 5, 3), L.Conv2D(17, 1, activation="tanh"),
                                                             L.Flatten(), L.Dense(3)), 4),
    "three_channels_2x2_relu_average_1": (lambda: seq((10, 9, 3), L.Conv2D(1, 2, activation="relu"),
                                                      L.AveragePooling2D(2), L.Flatten(), L.Dense(2)), 4),
    "one_channel_max_3x3_windows_linear_3": (lambda: seq((13, 13, 1), L.Conv2D(3, 2), L.MaxPooling2D(3),
                                                         L.Flatten(), L.Dense(2)), 9),
    "one_channel_1x1_max_3x3_windows_2": (lambda: seq((10, 9, 1), L.Conv2D(2, 1, activation="relu"),
                                                      L.MaxPooling2D(3), L.Flatten(), L.Dense(2)), 9),
    "one_channel_same_padding_max_sigmoid_17": (lambda: seq((8, 7, 1), L.Conv2D(17, 2, padding="same",
                                                                                activation="sigmoid"),
                                                            L.MaxPooling2D(2), L.Flatten(), L.Dense(2)), 4),
    "conv1d_three_channels_strided_max": (lambda: seq((15, 3), L.Conv1D(10, 2, strides=2, activation="relu"),
                                                      L.MaxPooling1D(2), L.Flatten(), L.Dense(2)), 2),
    # a pooling window crossing its padding keeps the patch kernel (which skips the cells outside)
    "same_pooling_crossing_its_padding": (lambda: seq((12, 12, 1), L.Conv2D(3, 2, activation="relu"),
                                                      L.MaxPooling2D(2, padding="same"), L.Flatten(), L.Dense(2)), 0),
    # a patch of 27 values keeps the patch kernel
    "three_channels_3x3_patch_kernel": (lambda: seq((7, 7, 3), L.Conv2D(4, 3, activation="relu"), L.Flatten(),
                                                    L.Dense(2)), 0),
}


def float_against_keras(case, directory, target):
    build, group = FLOAT[case]
    model = build()
    x = np.random.default_rng(3).normal(size=(5, *model.input_shape[1:])).astype("float32")
    exported = c_backend.export(model, directory, target=target)
    first = exported.ops[0]
    assert first.kind == "conv" and first.group == group, (case, first.group)
    return c_backend.verify(model, directory, x, target=target).max_abs_diff


@pytest.mark.parametrize("case", sorted(FLOAT))
def test_small_patch_float_convolutions_match_keras_on_the_host(case, tmp_path):
    assert float_against_keras(case, tmp_path, "host") <= 1e-4, case


@pytest.mark.parametrize("case", sorted(FLOAT))
def test_small_patch_float_convolutions_match_keras_in_portable_c(case, tmp_path):
    assert float_against_keras(case, tmp_path, "portable") <= 1e-4, case


@needs_arm
@pytest.mark.parametrize("case", sorted(FLOAT))
def test_small_patch_float_convolutions_match_keras_on_armv6_under_qemu(case, tmp_path):
    assert float_against_keras(case, tmp_path, "pi-zero") <= 1e-4, case


def test_the_grouped_kernel_keeps_no_patch_buffer_and_packs_each_filter_with_its_bias(tmp_path):
    model = FLOAT["one_channel_2x2_max_relu_10"][0]()
    exported = c_backend.export(model, tmp_path)
    first = exported.ops[0]
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in model.layers[0].weights)
    records = first.weights.reshape(10, 5)
    np.testing.assert_allclose(records[:, :4], kernel.reshape(4, 10).T, rtol=1e-6)
    np.testing.assert_allclose(records[:, 4], bias, rtol=1e-6)
    assert first.scratch is None and first.blocks == []


@pytest.mark.skipif(shutil.which("clang") is None or bool(armv6.missing_tools()),
                    reason="make c-toolchains installs clang and the ARM headers")
def test_clang_compiles_both_grouped_forms_with_warnings_as_errors(tmp_path):
    # the scalar form with its asm ordering statement (ARMv6) and the vector form (x86)
    c_backend.export(FLOAT["one_channel_2x2_max_relu_10"][0](), tmp_path, name="g")
    source = tmp_path / "g_conv2d.c"
    assert "__asm__" in source.read_text()
    arm = ["--target=arm-linux-gnueabi", "-march=armv6zk", "-mfpu=vfp2", "-mfloat-abi=softfp", "-isystem",
           "/usr/arm-linux-gnueabi/include"]
    for flags in (arm, []):
        subprocess.run(["clang", *flags, *STRICT.split(), "-c", str(source), "-o", str(tmp_path / "g.o")],
                       check=True)


# 2x2 windows over one channel, inside the input, strides 1 along a row: the int8 column-word kernel. Output rows
# of 1, 5 (4 + 1) and 6 (4 + 2) positions, strides 2 down the rows, 1, 3 and 17 filters, a clamp above the zero
# point (a ReLU whose output range starts above zero) and the two-position kernel where the columns do not apply.
INT8 = {
    "columns_one_filter_odd_rows": (lambda: seq((7, 6, 1), L.Conv2D(1, 2, activation="relu"), L.Flatten(),
                                                L.Dense(2)), True),
    "columns_three_filters_row_strides": (lambda: seq((9, 7, 1), L.Conv2D(3, 2, strides=(2, 1), activation="relu"),
                                                      L.Flatten(), L.Dense(2)), True),
    "columns_seventeen_filters_one_column": (lambda: seq((6, 2, 1), L.Conv2D(17, 2, activation="relu"), L.Flatten(),
                                                         L.Dense(3)), True),
    "columns_compact_cnn1_conv1": (lambda: seq((12, 12, 1), L.Conv2D(10, 2, activation="relu"), L.MaxPooling2D(2),
                                               L.Conv2D(6, 2, activation="relu"), L.Flatten(), L.Dense(2)), True),
    "two_positions_where_strided_along_rows": (lambda: seq((8, 9, 1), L.Conv2D(10, 2, strides=2, activation="relu"),
                                                           L.Flatten(), L.Dense(2)), False),
    "two_positions_where_padded": (lambda: seq((7, 7, 1), L.Conv2D(3, 2, padding="same", activation="relu"),
                                               L.Flatten(), L.Dense(2)), False),
}


def int8_case(case, directory, target):
    build, columns = INT8[case]
    model = build()
    exported, outputs, reference = against_tflite(model, directory, target)
    first = exported.ops[1]
    assert first.kind == "conv_int8" and first.small_patch and first.columns == columns, case
    assert np.max(np.abs(reference.steps(outputs) - reference.output)) <= 1, case
    return outputs


@pytest.mark.parametrize("case", sorted(INT8))
def test_small_int8_convolutions_match_tflite_on_the_host(case, tmp_path):
    int8_case(case, tmp_path, "host")


@needs_arm
@pytest.mark.parametrize("case", sorted(INT8))
def test_column_word_kernel_equals_the_plain_c_under_qemu(case, tmp_path):
    host = int8_case(case, tmp_path / "host", "host")
    arm = int8_case(case, tmp_path / "arm", "pi-zero")
    assert np.array_equal(arm, host)  # integer arithmetic: the assembly gives the plain C's bits
