"""Float32 pooling fused into the convolution that writes its input: the convolution actor writes the pooled output,
so the pre-pool tensor has no FIFO and the pooling no actor; outputs still match Keras, on the host and (with the
ARM tools) on ARMv6 under qemu. Int8 keeps the pooling as an actor of its own."""

import keras
import numpy as np
import pytest
from helpers import randomize
from test_c_int8 import seq

import c_backend
from c_backend import armv6

L = keras.layers


# Strides, same/valid padding, odd sizes (valid pooling drops the last row/column, same pooling's windows cross
# its padding), both modes, 1-D and 2-D, activations fused before the pooling (relu in the assembly, tanh after it).
FUSED = {
    "conv2d_relu_max_valid_odd": lambda: seq((12, 12, 1), L.Conv2D(9, 2, activation="relu"), L.MaxPooling2D(2),
                                             L.Flatten(), L.Dense(2)),
    "conv2d_strided_same_avg_same_odd": lambda: seq((11, 9, 3), L.Conv2D(5, 3, strides=2, padding="same"),
                                                    L.AveragePooling2D(2, padding="same"), L.Flatten(), L.Dense(3)),
    "conv2d_tanh_max_same_rect": lambda: seq((9, 10, 2), L.Conv2D(10, (2, 3), activation="tanh"),
                                             L.MaxPooling2D((3, 2), padding="same"), L.Flatten(), L.Dense(2)),
    "conv2d_avg_gaps": lambda: seq((10, 10, 2), L.Conv2D(4, 2, padding="same"), L.AveragePooling2D(2, strides=3),
                                   L.Flatten(), L.Dense(2)),
    "conv1d_relu_max_same_odd": lambda: seq((15, 3), L.Conv1D(6, 3, activation="relu"),
                                            L.MaxPooling1D(2, padding="same"), L.Flatten(), L.Dense(2)),
    "conv1d_strided_avg_valid": lambda: seq((16, 2), L.Conv1D(9, 2, strides=2, padding="same"),
                                            L.AveragePooling1D(3), L.Flatten(), L.Dense(2)),
    "two_fused_blocks": lambda: seq((14, 14, 1), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(2),
                                    L.Conv2D(6, 2, activation="relu", padding="same"), L.AveragePooling2D(2),
                                    L.Flatten(), L.Dense(2, activation="softmax")),
}


def compare(model, directory, target="host"):
    x = np.random.default_rng(3).normal(size=(5, *model.input_shape[1:])).astype("float32")
    exported = c_backend.export(model, directory, target=target)
    result = c_backend.verify(model, directory, x, target=target)
    return exported, result


@pytest.mark.parametrize("case", sorted(FUSED))
def test_fused_conv_pool_matches_keras_on_the_host(case, tmp_path):
    model = FUSED[case]()
    exported, result = compare(model, tmp_path)
    pools = [layer for layer in model.layers if "Pooling" in type(layer).__name__]
    assert not any(op.kind == "pool" for op in exported.ops)
    assert sum(op.kind == "conv" and op.pool is not None for op in exported.ops) == len(pools)
    assert result.max_abs_diff <= 1e-4, case


@pytest.mark.skipif(bool(armv6.missing_tools()), reason="make c-toolchains installs the ARM tools")
@pytest.mark.parametrize("case", ["conv2d_relu_max_valid_odd", "conv2d_strided_same_avg_same_odd",
                                  "conv2d_tanh_max_same_rect", "conv1d_relu_max_same_odd", "two_fused_blocks"])
def test_fused_conv_pool_matches_keras_on_armv6_under_qemu(case, tmp_path):
    _, result = compare(FUSED[case](), tmp_path, target="pi-zero")
    assert result.max_abs_diff <= 1e-4, case


def test_the_fused_graph_has_one_actor_and_one_fifo_fewer(tmp_path):
    model = FUSED["conv2d_relu_max_valid_odd"]()
    fused = c_backend.export(model, tmp_path / "fused")
    separate = c_backend.export(model, tmp_path / "int8", precision="int8",
                                calibration=np.random.default_rng(0).normal(size=(8, 12, 12, 1)).astype("float32"))
    assert [op.kind for op in fused.ops] == ["conv", "dense"]
    conv = fused.ops[0]
    assert conv.out_shape == (5, 5, 9) and (conv.out_h, conv.out_w) == (11, 11)  # writes the pooled tensor
    assert conv.out_fifos == fused.ops[1].in_fifos == [1]  # FIFOs: input, conv -> dense, output; none pre-pool
    assert max(fifo for op in fused.ops for fifo in op.out_fifos) == 2
    model_c = (tmp_path / "fused" / f"{fused.name}.c").read_text()
    assert "pool" not in model_c.replace(conv.description, "")  # no pooling actor is created or scheduled
    # int8 keeps the pooling as an actor (and its FIFO) of its own
    assert [op.kind for op in separate.ops] == ["quantize", "conv_int8", "pool_int8", "dense_int8", "dequantize"]


@pytest.mark.parametrize("layers, reason", [
    (lambda: [L.Conv2D(4, 2), L.MaxPooling2D(3, strides=2)], "windows overlap"),
    (lambda: [L.Conv2D(4, 2, activation="softmax"), L.MaxPooling2D(2)], "softmax sees the whole position"),
    (lambda: [L.MaxPooling2D(2), L.Conv2D(4, 2)], "no convolution before the pooling"),
])
def test_pooling_stays_an_actor_where_fusing_would_not_pay_or_not_be_right(layers, reason, tmp_path):
    model = seq((9, 9, 2), *layers(), L.Flatten(), L.Dense(2))
    exported, result = compare(model, tmp_path)
    assert any(op.kind == "pool" for op in exported.ops), reason
    assert result.max_abs_diff <= 1e-4


def test_a_convolution_read_by_more_than_the_pooling_is_not_fused(tmp_path):
    inputs = keras.Input((8, 8, 2))
    conv = L.Conv2D(4, 2, activation="relu")(inputs)
    pooled = L.Flatten()(L.MaxPooling2D(2)(conv))
    other = L.Flatten()(L.MaxPooling2D(7)(conv))
    model = keras.Model(inputs, L.Dense(2)(L.Concatenate()([pooled, other])))
    randomize(model, np.random.default_rng(2))
    exported, result = compare(model, tmp_path)
    assert sum(op.kind == "pool" for op in exported.ops) == 2
    assert result.max_abs_diff <= 1e-4
