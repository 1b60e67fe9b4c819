"""Generated C for functional graphs (residual additions, concatenations, depthwise and separable convolutions,
squeeze-and-excitation gates): compiled with warnings as errors and compared with Keras."""

import shutil

import hypothesis.strategies as st
import keras
import numpy as np
import pytest
from helpers import randomize
from hypothesis import HealthCheck, given, settings
from test_c_backend import check
from test_surgery_graphs import random_graph

import c_backend
from c_backend import armv6
from keras_grs import UnsupportedLayerError, analyze, shrink

L = keras.layers


def build(inputs, outputs, seed=1):
    model = keras.Model(inputs, outputs)
    randomize(model, np.random.default_rng(seed))
    return model


def residual_block():
    """conv-BN-relu-conv-BN plus a projection shortcut (conv-BN), added, relu; then an identity block."""
    inputs = keras.Input((8, 8, 3))
    h = L.Conv2D(5, 3, padding="same", name="a1")(inputs)
    h = L.BatchNormalization(name="a1_bn")(h)
    h = L.ReLU(name="a1_relu")(h)
    h = L.Conv2D(6, 3, strides=2, padding="same", name="a2")(h)
    h = L.BatchNormalization(name="a2_bn")(h)
    s = L.Conv2D(6, 1, strides=2, name="proj")(inputs)
    s = L.BatchNormalization(name="proj_bn")(s)
    x = L.ReLU(name="relu1")(L.Add(name="add1")([h, s]))
    h = L.Conv2D(6, 3, padding="same", activation="relu", name="b1")(x)
    x = L.Activation("relu", name="relu2")(L.Add(name="add2")([x, h]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return build(inputs, L.Dense(4, activation="softmax", name="out")(x))


def inception_block():
    """The input feeds three branches (1x1; 1x1 then 3x3; max pool then 1x1), concatenated, then normalized."""
    inputs = keras.Input((7, 7, 4))
    a = L.Conv2D(3, 1, activation="relu", name="a")(inputs)
    b = L.Conv2D(2, 1, activation="relu", name="b1")(inputs)
    b = L.Conv2D(4, 3, padding="same", name="b2")(b)
    c = L.MaxPooling2D(3, strides=1, padding="same", name="c_pool")(inputs)
    c = L.Conv2D(2, 1, name="c")(c)
    x = L.Concatenate(name="cat")([a, b, c])
    x = L.BatchNormalization(name="cat_bn")(x)
    x = L.Flatten(name="flat")(x)
    return build(inputs, L.Dense(3, name="out")(x))


def separable_se_block():
    """Rescaling, zero padding and cropping, a strided depthwise conv (BN, ReLU6), a squeeze-and-excitation gate of 1x1 convs,
    a separable conv with a multiplier, a depthwise conv with a multiplier, and a gate of Dense layers reshaped."""
    inputs = keras.Input((9, 9, 3))
    x = L.Rescaling(0.5, offset=-0.25, name="scale")(inputs)
    x = L.Conv2D(4, 3, padding="same", name="stem")(x)
    x = L.ZeroPadding2D(((0, 2), (1, 1)), name="pad")(x)
    x = L.Cropping2D(((1, 0), (0, 1)), name="crop")(x)
    x = L.DepthwiseConv2D(3, strides=2, use_bias=False, name="dw")(x)
    x = L.BatchNormalization(name="dw_bn")(x)
    x = L.ReLU(6.0, name="dw_relu6")(x)
    se = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    se = L.Conv2D(2, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(4, 1, activation="sigmoid", name="se_expand")(se)
    x = L.Multiply(name="se_gate")([x, se])
    x = L.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, activation="relu", name="sep")(x)
    x = L.DepthwiseConv2D(2, depth_multiplier=2, padding="same", activation="tanh", name="dw2")(x)
    gate = L.GlobalMaxPooling2D(name="gate_pool")(x)
    gate = L.Dense(3, activation="relu", name="gate_reduce")(gate)
    gate = L.Dense(10, activation="sigmoid", name="gate_expand")(gate)
    gate = L.Reshape((1, 1, 10), name="gate_shape")(gate)
    x = L.Multiply(name="gate")([gate, x])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return build(inputs, L.Dense(3, name="out")(x))


def kinds(exported):
    return [op.kind for op in exported.ops]


def op_named(exported, layer):
    return next(op for op in exported.ops if op.layer == layer)


def test_a_residual_block_with_projection_matches_keras_with_gcc_and_clang(tmp_path):
    model = residual_block()
    x = np.random.default_rng(0).normal(size=(6, 8, 8, 3)).astype("float32")
    exported, _ = check(model, tmp_path, x)
    # BN folds into a2 and proj (each read by its BN only); relu1 stays separate (Add fuses nothing)
    assert kinds(exported) == ["conv", "conv", "conv", "merge", "activation", "conv", "merge", "activation",
                               "global_pool", "dense"]
    add1 = op_named(exported, "add1")
    assert [exported.ops[s].layer for s in add1.sources] == ["a2", "proj"]
    relu1 = op_named(exported, "relu1")
    assert len(relu1.out_fifos) == 2  # read by b1 and by add2: one FIFO per edge
    assert sorted(f for op in exported.ops for f in op.in_fifos) == list(range(len(exported.ops) + 2))
    if shutil.which("clang"):
        assert c_backend.verify(model, tmp_path, x, cc="clang").max_abs_diff <= 1e-4


def test_the_input_feeds_every_branch_of_a_concatenation(tmp_path):
    exported, _ = check(inception_block(), tmp_path)
    assert [exported.ops[s].layer for s in op_named(exported, "cat").sources] == ["a", "b2", "c"]
    assert op_named(exported, "cat_bn").kind == "affine"  # a BatchNormalization after a merge: its own actor
    text = (tmp_path / f"{exported.name}.c").read_text()
    inputs = [f for op in exported.ops for src, f in zip(op.sources, op.in_fifos) if src is None]
    assert len(inputs) == 3  # the input's three edges (a, b1, c_pool), each written once per inference
    for fifo in inputs:
        assert f"lide_c_fifo_write(&context->fifo[{fifo}], &input);" in text


def test_depthwise_separable_convolutions_and_gates_match_keras_with_gcc_and_clang(tmp_path):
    model = separable_se_block()
    exported, _ = check(model, tmp_path)
    assert op_named(exported, "dw").activation == "relu6"  # BN folded, then ReLU6 fused
    assert op_named(exported, "dw").description.endswith("BatchNormalization folded in, then relu6")
    assert [op.actor for op in exported.ops if op.layer == "sep"] == [f"{exported.name}_sep_depthwise",
                                                                            f"{exported.name}_sep"]
    assert op_named(exported, "se_gate").broadcast == [False, True]
    assert op_named(exported, "gate").broadcast == [True, False]
    assert {"affine", "pad", "crop", "depthwise", "merge", "conv"} <= set(kinds(exported))
    if shutil.which("clang"):
        x = np.random.default_rng(0).normal(size=(6, 9, 9, 3)).astype("float32")
        assert c_backend.verify(model, tmp_path, x, cc="clang").max_abs_diff <= 1e-4


@pytest.mark.parametrize("merge", [L.Add, L.Subtract, L.Multiply, L.Average, L.Maximum, L.Minimum])
def test_every_element_wise_merge_matches_keras(merge, tmp_path):
    inputs = keras.Input((5, 3))
    a = L.Conv1D(3, 2, padding="same", name="a")(inputs)
    b = L.Conv1D(3, 3, padding="causal", activation="tanh", name="b")(inputs)
    branches = [inputs, b] if merge is L.Subtract else [a, b, inputs]  # the model input read directly, too
    x = L.Flatten()(merge(name="merge")(branches))
    exported, _ = check(build(inputs, L.Dense(2, name="out")(x)), tmp_path)
    sources = op_named(exported, "merge").sources
    assert len(sources) == len(branches) and sources[branches.index(inputs)] is None


def test_a_grouped_depthwise_convolution_is_a_depthwise_actor(tmp_path):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(6, 3, padding="same", groups=3, name="grouped")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    exported, _ = check(build(inputs, L.Dense(2, name="out")(L.Flatten()(x))), tmp_path)
    assert op_named(exported, "grouped").kind == "depthwise" and op_named(exported, "grouped").multiplier == 2


def test_nothing_fuses_into_an_op_that_another_also_reads(tmp_path):
    inputs = keras.Input((6,))
    h = L.Dense(4, name="shared")(inputs)
    a = L.BatchNormalization(name="bn")(h)
    b = L.ReLU(name="relu")(h)
    exported, _ = check(build(inputs, L.Dense(2, name="out")(L.Add(name="add")([a, b]))), tmp_path)
    assert kinds(exported) == ["dense", "affine", "activation", "merge", "dense"]
    assert op_named(exported, "shared").activation == "linear"


def test_keras_ops_and_smooth_activations_match_keras(tmp_path):
    """MobileNetV3's hard-swish written with ops, a constant minus a tensor, ops as activations, swish layers and
    an adapted Normalization."""
    inputs = keras.Input((6, 6, 2))
    x = L.Normalization(mean=[0.5, -1.0], variance=[4.0, 0.25], name="norm")(inputs)
    x = L.Conv2D(4, 3, padding="same", name="c1")(x)
    x = x * L.ReLU(6.0, name="hs_relu6")(x + 3.0) * (1.0 / 6.0)
    x = keras.ops.relu6(1.5 - x / 2.0)
    x = L.Conv2D(4, 1, activation="swish", name="c2")(x)
    x = L.Activation("hard_sigmoid", name="hsig")(L.DepthwiseConv2D(3, padding="same", name="dw")(x))
    x = L.Activation("hard_swish", name="hswish")(L.Dense(3, name="d")(x))
    x = keras.ops.sigmoid(L.GlobalAveragePooling2D(name="gap")(x))
    exported, _ = check(build(inputs, L.Dense(2, name="out")(x)), tmp_path)
    assert {op.activation for op in exported.ops} >= {"relu6", "silu", "hard_sigmoid", "hard_silu", "sigmoid"}
    assert kinds(exported).count("affine") == 5  # norm, + 3.0, * (1 / 6), / 2.0, 1.5 - x


def test_a_chain_is_still_a_chain_of_fifos(tmp_path):
    model = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(3, 2), L.BatchNormalization(), L.ReLU(),
                              L.MaxPooling2D(), L.Flatten(), L.Dense(4, activation="relu"), L.Dense(2)], name="c")
    randomize(model, np.random.default_rng(0))
    exported, _ = check(model, tmp_path)
    # the convolution takes the BatchNormalization, the ReLU and the pooling: three actors, four FIFOs
    assert [op.kind for op in exported.ops] == ["conv", "dense", "dense"]
    assert [(op.in_fifos, op.out_fifos) for op in exported.ops] == [([i], [i + 1]) for i in range(3)]
    assert "#define C_FIFO_COUNT 4" in (tmp_path / "c.h").read_text()
    assert "lide_c_fifo_pointer in;" in (tmp_path / "c_actors.h").read_text()


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_graphs_match_keras_before_and_after_shrink(tmp_path_factory, data):
    keras.backend.clear_session()
    model, remove, seed = random_graph(data.draw)
    randomize(model, np.random.default_rng(seed))
    check(model, tmp_path_factory.mktemp("graph"), seed=seed)
    check(shrink(model, remove), tmp_path_factory.mktemp("shrunk"), seed=seed)


def settled(model, rng):
    """Glorot weights (Keras's own) and BatchNormalization statistics near 1 and 0, so that a deep model's values
    stay of order one, as in a trained model, and a difference of 1e-4 means something."""
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.1, beta.shape),
                               rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, variance.shape)])


def test_mobilenet_v2_matches_keras_before_and_after_shrink(tmp_path):
    model = keras.applications.MobileNetV2(alpha=0.35, input_shape=(32, 32, 3), weights=None, classes=10,
                                           classifier_activation=None)
    settled(model, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(4, 32, 32, 3)).astype("float32")
    exported, result = check(model, tmp_path / "original", x)
    assert {"pad", "depthwise", "merge"} <= set(kinds(exported)) and result.agreement == 1.0
    groups = analyze(model).groups
    remove = {g.name: list(range(0, g.width, 4)) for g in groups[1:8:3]}
    pruned = shrink(model, remove)
    assert pruned.count_params() < model.count_params()
    check(pruned, tmp_path / "pruned", x)


@pytest.mark.skipif(bool(armv6.missing_tools()), reason="make c-toolchains installs the ARM tools")
def test_a_graph_runs_on_armv6_under_qemu(tmp_path):
    model = separable_se_block()
    x = np.random.default_rng(2).normal(size=(4, 9, 9, 3)).astype("float32")
    c_backend.export(model, tmp_path, target="pi-zero")
    result = c_backend.verify(model, tmp_path, x, target="pi-zero")
    assert result.max_abs_diff <= 1e-4


def test_what_c_cannot_take_is_refused_naming_the_layer(tmp_path):
    with pytest.raises(UnsupportedLayerError, match="int8' exports chains of layers only: layer 'add1' of class Add"):
        c_backend.export(residual_block(), tmp_path, precision="int8", calibration=np.zeros((2, 8, 8, 3)))
    with pytest.raises(UnsupportedLayerError, match="'dw_relu6': activation 'relu6' has no int8 form"):
        model = keras.Sequential([keras.Input((4,)), L.Dense(3), L.ReLU(6.0, name="dw_relu6"), L.Dense(2)])
        c_backend.export(model, tmp_path, precision="int8", calibration=np.zeros((2, 4)))
    inputs = keras.Input((4, 4, 2))
    a, b = L.Conv2D(2, 1, name="a")(inputs), L.Conv2D(2, 1, name="b")(inputs)
    with pytest.raises(UnsupportedLayerError, match="'rows' concatenates on axis 1"):
        c_backend.export(build(inputs, L.Concatenate(axis=1, name="rows")([a, b])), tmp_path)
    x = L.Conv2D(2, 1, name="c")(inputs)
    with pytest.raises(UnsupportedLayerError, match=r"op '\w+' \(\w*Divide\) has no C translation"):
        c_backend.export(build(inputs, 3.0 / x), tmp_path)
    with pytest.raises(UnsupportedLayerError, match="2 outputs"):
        c_backend.export(build(inputs, [a, b]), tmp_path)
