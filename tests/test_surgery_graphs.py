"""Shrinking functional graphs: residual additions, concatenations, depthwise and separable convolutions,
squeeze-and-excitation gates and plain Keras ops. The reference is always the parent with the removed units
silenced (zeroed at every layer that carries them)."""

import warnings
import hypothesis
import hypothesis.strategies as st
import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import randomize
from hypothesis import HealthCheck, given, settings

import keras_grs
from keras_grs import analyze, shrink
from keras_grs.surgery import kept_units, resized, set_chain_weights, silenced_call, surviving_weights

L = keras.layers


def outputs(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def assert_matches_silenced(model, remove, x, atol=1e-5):
    child = shrink(model, remove)
    np.testing.assert_allclose(outputs(child, x), keras.ops.convert_to_numpy(silenced_call(model, remove, x)),
                               atol=atol)
    return child


def residual_model():
    """stem -> [conv-bn-relu-conv-bn] + identity -> relu -> [conv-bn] + projection -> GAP -> dense -> out."""
    inputs = keras.Input((8, 8, 3))
    stem = L.Conv2D(6, 3, padding="same", name="stem")(inputs)
    h = L.Conv2D(5, 3, padding="same", activation="relu", name="a1")(stem)
    h = L.BatchNormalization(name="a1_bn")(h)
    h = L.Conv2D(6, 3, padding="same", name="a2")(h)
    h = L.BatchNormalization(name="a2_bn")(h)
    h = L.Add(name="add1")([stem, h])
    h = L.ReLU(name="relu1")(h)
    branch = L.Conv2D(4, 1, name="b1")(h)
    branch = L.BatchNormalization(name="b1_bn")(branch)
    shortcut = L.Conv2D(4, 1, name="proj")(h)
    h = L.Add(name="add2")([branch, shortcut])
    h = L.GlobalAveragePooling2D(name="gap")(h)
    h = L.Dense(7, activation="tanh", name="fc")(h)
    return keras.Model(inputs, L.Dense(3, name="out")(h))


def test_a_residual_add_joins_the_groups_of_its_inputs():
    structure = analyze(residual_model())
    assert structure.names == ("stem", "a1", "b1", "fc")
    stem, a1, b1, fc = structure.groups
    assert stem.layers == ("stem", "a2", "a2_bn", "add1", "relu1") and stem.width == 6
    assert stem.consumers == ("a1", "b1", "proj")
    assert b1.layer == b1.layers[0] == "b1" and set(b1.layers) == {"b1", "b1_bn", "proj", "add2", "gap"}
    assert b1.layers[-2:] == ("add2", "gap")  # graph order: the merge after both producers
    assert b1.consumers == ("fc",)
    assert a1.dependents == ("a1_bn", "a2")
    assert [g.name for g in structure.pinned] == ["input_layer", "out"]


def test_shrinking_a_joined_group_removes_the_filters_of_every_producer():
    model = residual_model()
    randomize(model, np.random.default_rng(0))
    x = np.random.default_rng(1).normal(size=(4, 8, 8, 3)).astype("float32")
    remove = {"stem": [0, 4], "a1": [2], "b1": [1, 2, 3], "fc": [6]}
    child = assert_matches_silenced(model, remove, x)
    assert analyze(child).widths == (4, 4, 1, 6)
    assert child.get_layer("a2").kernel.shape == (3, 3, 4, 4)  # a2 produces the stem group and reads a1's
    np.testing.assert_array_equal(child.get_layer("a2").kernel.numpy(),
                                  model.get_layer("a2").kernel.numpy()[:, :, [0, 1, 3, 4]][..., [1, 2, 3, 5]])
    np.testing.assert_array_equal(child.get_layer("proj").kernel.numpy(),
                                  model.get_layer("proj").kernel.numpy()[:, :, [1, 2, 3, 5]][..., [0]])
    assert np.abs(outputs(child, x) - outputs(model, x)).max() > 1e-3  # the removal really changed something


def test_concatenate_keeps_each_input_at_its_offset():
    inputs = keras.Input((6, 6, 2))
    a = L.Conv2D(3, 1, name="a")(inputs)
    b = L.SeparableConv2D(4, 3, padding="same", depth_multiplier=2, name="b")(inputs)
    h = L.Concatenate(name="cat")([a, b])
    h = L.BatchNormalization(name="bn")(h)
    h = L.Flatten(name="flat")(h)
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    randomize(model, np.random.default_rng(2))
    structure = analyze(model)
    assert structure.names == ("a", "b")
    assert structure.group("a").layers == ("a", "cat", "bn", "flat")
    assert structure.group("b").consumers == ("out",)
    child = assert_matches_silenced(model, {"a": [1], "b": [0, 3]}, np.ones((2, 6, 6, 2), "float32"))
    # BatchNormalization after the concatenation keeps channels 0, 2 (of a) and 3 + 1, 3 + 2 (of b)
    np.testing.assert_array_equal(child.get_layer("bn").get_weights()[0],
                                  model.get_layer("bn").get_weights()[0][[0, 2, 4, 5]])
    # Flatten: 36 positions of 7 channels become 36 positions of 4
    assert child.get_layer("out").kernel.shape == (36 * 4, 2)


def test_depthwise_with_a_multiplier_carries_each_channel_into_adjacent_outputs():
    inputs = keras.Input((5, 5, 2))
    h = L.Conv2D(3, 1, name="c")(inputs)
    h = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(h)
    h = L.BatchNormalization(name="bn")(h)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalMaxPooling2D()(h)))
    randomize(model, np.random.default_rng(3))
    group = analyze(model).group("c")
    assert group.layers[:3] == ("c", "dw", "bn") and group.width == 3
    child = assert_matches_silenced(model, {"c": [1]}, np.ones((2, 5, 5, 2), "float32"))
    assert child.get_layer("dw").kernel.shape == (3, 3, 2, 2)
    np.testing.assert_array_equal(child.get_layer("bn").get_weights()[1],
                                  model.get_layer("bn").get_weights()[1][[0, 1, 4, 5]])


def test_a_conv_with_one_input_channel_per_group_is_depthwise_and_other_grouped_convs_pin():
    inputs = keras.Input((5, 5, 2))
    h = L.Conv2D(4, 1, name="c")(inputs)
    h = L.Conv2D(8, 3, padding="same", groups=4, name="dw")(h)  # ConvNeXt's depthwise convolution, multiplier 2
    g = L.Conv2D(4, 1, name="g")(h)
    g = L.Conv2D(6, 1, groups=2, name="grouped")(g)
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(g)))
    randomize(model, np.random.default_rng(10))
    structure = analyze(model)
    assert structure.names == ("c",) and structure.group("c").layers == ("c", "dw")
    assert {g.name: g.pinned for g in structure.pinned}["g"] == "grouped (Conv2D): grouped convolution (groups=2)"
    child = assert_matches_silenced(model, {"c": [0, 2]}, np.ones((2, 5, 5, 2), "float32"))
    assert (child.get_layer("dw").filters, child.get_layer("dw").groups) == (4, 2)


def test_squeeze_excitation_and_scalar_ops_follow_the_gated_group():
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(8, 1, name="expand")(inputs)
    x = x * keras.ops.relu6(x + 3.0) * (1.0 / 6.0)  # hard-swish, as MobileNetV3 writes it
    se = L.GlobalAveragePooling2D(keepdims=True, name="se_pool")(x)
    se = L.Conv2D(2, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(8, 1, activation="sigmoid", name="se_expand")(se)
    x = L.Multiply(name="se_mul")([x, se])
    model = keras.Model(inputs, L.Conv2D(4, 1, name="project")(x))
    randomize(model, np.random.default_rng(4))
    structure = analyze(model)
    assert structure.names == ("expand", "se_reduce")
    assert {"se_expand", "se_mul", "se_pool"} <= set(structure.group("expand").layers)
    child = assert_matches_silenced(model, {"expand": [0, 5, 7], "se_reduce": [1]},
                                    np.random.default_rng(5).normal(size=(2, 6, 6, 3)).astype("float32"))
    assert child.get_layer("se_expand").kernel.shape == (1, 1, 1, 5)


def test_a_reshape_that_states_the_channels_is_resized():
    inputs = keras.Input((4, 4, 2))
    x = L.Conv2D(6, 1, name="c")(inputs)
    se = L.GlobalAveragePooling2D(name="pool")(x)
    se = L.Reshape((1, 1, 6), name="reshape")(se)
    se = L.Conv2D(6, 1, activation="sigmoid", name="gate")(se)
    model = keras.Model(inputs, L.Conv2D(2, 1, name="out")(L.Multiply()([x, se])))
    randomize(model, np.random.default_rng(6))
    child = assert_matches_silenced(model, {"c": [2, 3]}, np.ones((1, 4, 4, 2), "float32"))
    assert child.get_layer("reshape").output.shape == (None, 1, 1, 4)


def test_a_nested_model_is_analyzed_and_shrunk_through():
    stem = keras.Sequential([keras.Input((6, 6, 2)), L.Conv2D(5, 3, name="inner_conv"),
                             L.BatchNormalization(name="inner_bn")], name="stem")
    inputs = keras.Input((6, 6, 2))
    h = L.Conv2D(4, 1, name="c")(stem(inputs))
    model = keras.Model(inputs, L.Dense(2, name="out")(L.GlobalAveragePooling2D(name="gap")(h)))
    randomize(model, np.random.default_rng(11))
    structure = analyze(model)
    assert structure.names == ("inner_conv", "c")
    assert structure.group("inner_conv").layers == ("inner_conv", "inner_bn")
    child = assert_matches_silenced(model, {"inner_conv": [1, 3], "c": [0]}, np.ones((2, 6, 6, 2), "float32"))
    assert child.get_layer("stem").get_layer("inner_bn").get_weights()[0].shape == (3,)
    assert keras_grs.count_flops(model) == 2 * (16 * 3 * 3 * 2 * 5 + 16 * 5 * 4 + 4 * 2)


def test_layer_normalization_pins_its_group_and_indices_on_it_are_refused():
    inputs = keras.Input((10,))
    h = L.Dense(6, name="d1")(inputs)
    h = L.LayerNormalization(name="ln")(h)
    h = L.Dense(5, name="d2")(h)
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    structure = analyze(model)
    assert structure.names == ("d2",)
    d1 = next(g for g in structure.pinned if g.name == "d1")
    assert "ln (LayerNormalization)" in d1.pinned and "mixes channels" in d1.pinned
    assert "d1" in structure.summary() and "pinned" in structure.summary()
    with pytest.raises(ValueError, match="'d1' is pinned .*LayerNormalization"):
        shrink(model, {"d1": [0]})


def test_an_op_with_a_per_channel_constant_pins_its_group():
    inputs = keras.Input((10,))
    h = L.Dense(4, name="d")(inputs)
    h = h * np.arange(4, dtype="float32")
    model = keras.Model(inputs, L.Dense(2, name="out")(h))
    assert analyze(model).groups == ()
    assert "non-scalar constant" in analyze(model).pinned[1].pinned


def test_frozen_groups_and_width_multiples():
    model = residual_model()
    structure = analyze(model, frozen=["a1"], width_multiple=2)
    assert structure.names == ("stem", "b1", "fc")
    assert all(g.width_multiple == 2 for g in structure.groups)
    assert next(g for g in structure.pinned if g.name == "a1").pinned == "frozen"
    with pytest.raises(ValueError, match="frozen names unknown groups \\['nope'\\]"):
        analyze(model, frozen=["nope"])
    with pytest.raises(ValueError, match="width_multiple"):
        analyze(model, width_multiple=0)


def test_unknown_group_and_unknown_custom_layer_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown width group 'nope'"):
        shrink(residual_model(), {"nope": [0]})

    class Twist(L.Layer):
        def call(self, x):
            return keras.ops.flip(x, axis=-1)

    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(Twist(name="twist")(L.Dense(3)(inputs))))
    with pytest.raises(keras_grs.UnsupportedLayerError, match="layer 'twist' of class Twist is not supported"):
        analyze(model)


def test_a_shared_layer_is_refused_by_name():
    inputs = keras.Input((4,))
    shared = L.Dense(4, name="shared")
    model = keras.Model(inputs, L.Dense(2)(shared(shared(inputs))))
    with pytest.raises(keras_grs.UnsupportedLayerError, match="'shared' is called more than once"):
        analyze(model)


def test_resized_and_inherited_weights_rebuild_what_shrink_builds():
    """The tuner's path: a fresh model at the new widths, then the parent's surviving weights set into it."""
    model = residual_model()
    randomize(model, np.random.default_rng(7))
    structure = analyze(model)
    remove = {"stem": [1], "b1": [0]}
    fresh = resized(model, {"stem": 5, "b1": 3})
    assert analyze(fresh).widths == (5, 5, 3, 7)
    keep = kept_units(structure, remove)
    set_chain_weights(fresh, surviving_weights(model, keep))
    x = np.random.default_rng(8).normal(size=(2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(outputs(fresh, x), outputs(shrink(model, remove), x), atol=1e-6)


def test_the_batched_evaluator_plans_graphs_and_chain_only_code_refuses_them_naming_the_layer():
    from keras_grs.evaluate.batched import _plan

    model = residual_model()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    plan = _plan(model)
    merges = [op for op in plan.ops if op.kind == "merge"]
    assert [op.merge for op in merges] == ["add", "add"] and all(len(op.inputs) == 2 for op in merges)
    # stem and a2 (add1), b1 and proj (add2): their padded widths must match
    assert sorted(plan.ties) == [(0, 2), (3, 4)]
    from c_backend.ir import describe

    with pytest.raises(keras_grs.UnsupportedLayerError, match="layer 'add1' of class Add is not supported here"):
        describe(model, "m", precision="int8", calibration=np.zeros((1, 8, 8, 3)))  # float32 takes graphs


# -- property test: random functional graphs ----------------------------------------------------------------
BLOCKS = ("residual", "projection", "concat", "depthwise", "separable", "se", "ops", "pool")


def _block(draw, x, n, kinds=BLOCKS):
    """One random block of ``kinds`` on tensor ``x`` (channels last, 2-D); returns the new tensor."""
    channels = x.shape[-1]
    kind = draw(st.sampled_from(kinds))
    width = draw(st.integers(2, 6))
    if kind == "residual":
        h = L.Conv2D(width, 3, padding="same", activation="relu", name=f"r{n}a")(x)
        if draw(st.booleans()):
            h = L.BatchNormalization(name=f"r{n}bn")(h)
        h = L.Conv2D(channels, 1, name=f"r{n}b")(h)
        return L.Add(name=f"r{n}add")([x, h])
    if kind == "projection":
        h = L.Conv2D(width, 3, padding="same", name=f"p{n}a")(x)
        h = L.BatchNormalization(name=f"p{n}bn")(h)
        s = L.Conv2D(width, 1, name=f"p{n}s")(x)
        merge = draw(st.sampled_from([L.Add, L.Maximum, L.Average, L.Subtract, L.Multiply]))
        return L.ReLU(name=f"p{n}relu")(merge(name=f"p{n}merge")([h, s]))
    if kind == "concat":
        a = L.Conv2D(width, 1, name=f"c{n}a")(x)
        b = L.DepthwiseConv2D(3, padding="same", name=f"c{n}dw")(x)
        h = L.Concatenate(name=f"c{n}cat")([a, b, x] if draw(st.booleans()) else [a, b])
        return L.BatchNormalization(name=f"c{n}bn")(h)
    if kind == "depthwise":
        multiplier = draw(st.integers(1, 2))
        if draw(st.booleans()):
            h = L.DepthwiseConv2D(3, padding="same", depth_multiplier=multiplier, name=f"d{n}")(x)
        else:
            h = L.Conv2D(channels * multiplier, 3, padding="same", groups=channels, name=f"d{n}")(x)
        return L.BatchNormalization(name=f"d{n}bn")(h)
    if kind == "separable":
        return L.SeparableConv2D(width, 3, padding="same", depth_multiplier=draw(st.integers(1, 2)),
                                 activation="relu", name=f"s{n}")(x)
    if kind == "se":
        se = L.GlobalAveragePooling2D(keepdims=True, name=f"e{n}pool")(x)
        se = L.Conv2D(2, 1, activation="relu", name=f"e{n}r")(se)
        se = L.Conv2D(channels, 1, activation="sigmoid", name=f"e{n}x")(se)
        return L.Multiply(name=f"e{n}mul")([x, se])
    if kind == "ops":
        return x * keras.ops.relu6(x + 3.0) * (1.0 / 6.0)
    pool = draw(st.sampled_from([L.MaxPooling2D(2, padding="same", name=f"m{n}"),
                                 L.ZeroPadding2D(1, name=f"z{n}"), L.Dropout(0.3, name=f"o{n}")]))
    return pool(x)


def random_graph(draw, kinds=BLOCKS):
    inputs = keras.Input((draw(st.integers(5, 7)), draw(st.integers(5, 7)), draw(st.integers(1, 3))))
    x = L.Conv2D(draw(st.integers(2, 6)), 3, padding="same", name="stem")(inputs)
    for n in range(draw(st.integers(1, 4))):
        x = _block(draw, x, n, kinds)
    if draw(st.booleans()):
        x = L.GlobalAveragePooling2D(name="gap")(x)
    else:
        x = L.Flatten(name="flat")(x)
    x = L.Dense(draw(st.integers(2, 5)), activation="tanh", name="fc")(x)
    model = keras.Model(inputs, L.Dense(3, name="out")(x))
    remove = {}
    for group in analyze(model).groups:
        units = draw(st.lists(st.integers(0, group.width - 1), unique=True, max_size=group.width - 1))
        if units:
            remove[group.name] = units
    return model, remove, draw(st.integers(0, 2**16))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_shrunk_graph_equals_parent_with_removed_units_silenced(data):
    keras.backend.clear_session()
    model, remove, seed = random_graph(data.draw)
    rng = np.random.default_rng(seed)
    randomize(model, rng)
    structure = analyze(model)
    x = rng.normal(size=(3, *model.input_shape[1:])).astype("float32")
    child = assert_matches_silenced(model, remove, x)
    # (a grouped depthwise Conv left with one channel is an ordinary Conv in the child: it may start a new group)
    widths = {g.name: g.width for g in analyze(child).groups}
    assert {g.name: widths[g.name] for g in structure.groups} == {
        g.name: g.width - len(remove.get(g.name, [])) for g in structure.groups}
    assert keras_grs.count_params(child) == child.count_params()


def test_grs_tuner_prunes_a_residual_model_from_its_weights(tmp_path):
    """GRSTuner.from_model on a graph: widths are groups (a residual group resizes both of its producers) and
    every candidate inherits its parent's surviving weights."""
    rng = np.random.default_rng(9)
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    y = (x[:, :, :, 0].mean(axis=(1, 2)) > 0).astype("int64")
    model = residual_model()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    tuner = keras_grs.GRSTuner.from_model(model, train_first=False, method="rrs", tolerance=0.01, seed=0, max_trials=3,
                                          directory=tmp_path, project_name="residual")
    assert [g.name for g in tuner.oracle.search.groups] == ["stem", "a1", "b1", "fc"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # trained batched: no fallback to one fit per trial
        tuner.search(x, y, validation_data=(x, y), epochs=1, batch_size=32, verbose=0)
    assert tuner.evaluator._calls >= 2
    best = tuner.get_best_models(1)[0]
    assert sum(analyze(best).widths) < sum(analyze(model).widths)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.data())
def test_the_batched_forward_of_random_graph_candidates_computes_what_each_candidate_computes(data):
    """Residual merges, projections, concatenations, depthwise and separable convolutions, squeeze-and-excitation
    blocks, Keras ops (a hard-swish), poolings and zero padding at random: the parent and a shrunk child stacked
    at the parent's widths (the child padded and masked) give each model's own outputs, and the child's weights
    come back out of the stack unchanged."""
    from keras_tuner import Objective

    from keras_grs.evaluate import Job
    from keras_grs.evaluate.batched import BatchedEvaluator, _forward_function, _plan

    keras.backend.clear_session()
    model, remove, seed = random_graph(data.draw, BLOCKS)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    randomize(model, rng)
    child = shrink(model, remove)
    jobs = [Job(model, True, ""), Job(child, True, "")]
    evaluator = BatchedEvaluator(Objective("val_loss", "min"), workers=1)
    reason = evaluator.supports(jobs, {"epochs": 1})
    hypothesis.assume(reason is None)  # a depth multiplier, a grouped Conv, a concatenated input
    evaluator.pad_to(model)
    plan = _plan(model)
    per_job = evaluator._widen(jobs)
    params, masks = evaluator._pack(per_job, plan, model.input_shape[-1])
    x = rng.normal(size=(4, *model.input_shape[1:])).astype("float32")
    logits = _forward_function(plan.ops, evaluator._slots)(params, masks, tf.constant(x), None)
    for j, job in enumerate(jobs):
        np.testing.assert_allclose(logits[j].numpy(), job.model.predict(x, verbose=0), rtol=1e-4, atol=1e-4)
    weights = child.get_weights()
    evaluator._unpack(per_job, plan, [p.numpy() for p in params], model.input_shape[-1])
    for got, want in zip(child.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
