"""The typed operations of the C description: numbers and arrays taken from the Keras layers, C literals written
only by the templates' filters."""

import keras
import numpy as np
import pytest
from helpers import randomize

from c_backend import ops as O
from c_backend.export import c_float, c_literals
from c_backend.ir import DENSE_BLOCK, describe

L = keras.layers


def unpack_dense(op):
    """The [units][inputs] weights back from the kernel's block order."""
    weights, at = np.zeros((op.units, op.inputs)), 0
    for block in op.blocks:
        for u in range(block["start"], block["start"] + block["count"] * block["size"], block["size"]):
            run = op.inputs * block["size"]
            weights[u:u + block["size"]] = op.weights[at:at + run].reshape(op.inputs, block["size"]).T
            at += run
    assert at == len(op.weights)
    return weights


def test_a_dense_op_holds_the_layers_shapes_and_arrays():
    model = keras.Sequential([keras.Input((13,)), L.Dense(11, activation="relu", name="hidden"), L.Dense(2)], name="m")
    randomize(model, np.random.default_rng(0))
    first, second = describe(model, "m", sparse="never")
    assert isinstance(first, O.Dense) and first.kind == "dense" and first.actor == "m_hidden"
    assert (first.in_shape, first.out_shape, first.inputs, first.units) == ((13,), (11,), 13, 11)
    assert (first.in_size, first.out_size, first.positions, first.channels, first.prefix) == (13, 11, 1, 11, "M_HIDDEN")
    assert first.activation == "relu" and second.activation == "linear"
    assert [b["size"] for b in first.blocks] == [DENSE_BLOCK, 11 - DENSE_BLOCK]
    kernel, bias = (w.astype(np.float64) for w in model.layers[0].get_weights())
    np.testing.assert_array_equal(unpack_dense(first), kernel.T)
    np.testing.assert_array_equal(first.bias, bias)
    assert first.weights.dtype == np.float64 and first.raw is None and first.keras_pre is None
    assert (first.sources, second.sources, first.in_fifos, second.out_fifos) == ([None], [0], [0], [2])


def test_a_conv_op_folds_batchnorm_into_its_arrays():
    # a patch of 18 values: the patch kernel's blocked layout (c_backend.ir.small_patch)
    model = keras.Sequential([keras.Input((5, 6, 3)), L.Conv2D(3, (2, 3), strides=(1, 2), padding="same", name="c"),
                              L.BatchNormalization(name="bn"), L.Flatten(), L.Dense(2)])
    randomize(model, np.random.default_rng(1))
    conv = describe(model, "m")[0]
    assert isinstance(conv, O.Conv) and (conv.in_h, conv.in_w, conv.in_c, conv.out_h, conv.out_w) == (5, 6, 3, 5, 3)
    assert (conv.k_h, conv.k_w, conv.s_h, conv.s_w, conv.filters, conv.scratch) == (2, 3, 1, 2, 3, ("float", 18))
    bn = model.get_layer("bn")
    scale = bn.gamma.numpy() / np.sqrt(bn.moving_variance.numpy() + bn.epsilon)
    shift = bn.beta.numpy() - bn.moving_mean.numpy() * scale
    kernel, bias = model.get_layer("c").get_weights()
    np.testing.assert_allclose(conv.bias, bias * scale + shift, rtol=1e-6)
    filters = kernel.transpose(3, 0, 1, 2).reshape(3, -1) * scale[:, None]
    np.testing.assert_allclose(conv.weights.reshape(18, 3).T, filters, rtol=1e-6)  # one block of 3 filters


def test_a_sparse_dense_op_stores_compressed_rows():
    model = keras.Sequential([keras.Input((6,)), L.Dense(4)])
    kernel = np.zeros((6, 4), "float32")
    kernel[[0, 3, 5], [1, 1, 2]] = [0.5, -2.0, 3.0]
    model.layers[0].set_weights([kernel, np.arange(4, dtype="float32")])
    op = describe(model, "m")[0]
    assert isinstance(op, O.SparseDense) and op.kind == "dense_sparse" and op.nonzero == 3
    assert list(op.row_start) == [0, 0, 2, 3, 3] and list(op.column) == [0, 3, 5]
    assert list(op.nonzero_values) == [0.5, -2.0, 3.0] and op.density == 3 / 24


def test_int8_ops_hold_integers_and_the_quantization():
    model = keras.Sequential([keras.Input((6,)), L.Dense(5, activation="relu"), L.Dense(3, activation="softmax")])
    randomize(model, np.random.default_rng(2))
    x = np.random.default_rng(3).normal(size=(20, 6)).astype("float32")
    ops = describe(model, "m", precision="int8", calibration=x)
    assert [type(op) for op in ops] == [O.Quantize, O.DenseInt8, O.DenseInt8, O.SoftmaxInt8, O.Dequantize]
    dense = ops[1]
    assert dense.weights.dtype.kind == "i" and dense.bias.dtype.kind == "i" and len(dense.multiplier) == 5
    assert dense.input_q == ops[0].output_q and dense.act_min == dense.output_zero  # relu: clamp at zero point
    assert ops[2].activation == "linear" and ops[3].input_q == ops[2].output_q and ops[3].output_q == (1 / 256, -128)
    assert (ops[0].in_type, ops[0].out_type, ops[-1].in_type, ops[-1].out_type) == ("float", "int8_t", "int8_t", "float")


def test_literals_are_written_by_the_filters():
    assert c_float(0.1) == "0.100000001f" and c_float(2) == "2.0f"
    small = c_literals(np.array([1.5, -3e-9]))
    assert small[0] == "1.5f" and small[1].endswith("e-09f")
    assert np.float32(float(small[1][:-1])) == np.float32(-3e-9)  # reads back as the same float32
    assert c_literals(np.array([[7, -128]])) == ["7", "-128"]
    with pytest.raises(ValueError, match="not finite"):
        c_literals(np.array([np.nan]))
    with pytest.raises(TypeError, match="as C literals"):
        c_literals(np.array(["a"]))
