"""The table of layer kinds is the one place each kind's rules live: every batched op and C actor it names must
be one the evaluator and the C backend implement, and they must find their rules there."""

from dataclasses import replace

import keras
import pytest

from c_backend import ir
from keras_grs.evaluate import batched
from keras_grs.evaluate.training import UnsupportedForBatching
from keras_grs.layers import KINDS, kind_of


def test_every_batched_op_and_c_actor_the_table_names_is_implemented():
    named_ops = {k.batched for k in KINDS.values()} - {None}
    named_actors = {k.actor for k in KINDS.values()} - {None, "identity"}
    assert named_ops == set(batched._OP_BUILDERS)
    assert named_actors | {"op"} == set(ir.TRANSLATIONS)


def test_the_evaluator_and_the_c_backend_read_their_dispatch_from_the_table(monkeypatch):
    """Take Dense's entries out of the table: both modules stop knowing it (they no longer test classes)."""
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert batched._plan(model).ops[0].kind == "dense"
    assert ir.describe(model, "m")[0].kind == "dense"
    dense = KINDS[keras.layers.Dense]
    monkeypatch.setitem(KINDS, keras.layers.Dense, replace(dense, batched=None, actor=None))
    with pytest.raises(UnsupportedForBatching, match="layer Dense"):
        batched._plan(model)
    with pytest.raises(Exception, match="has no C translation"):
        ir.describe(model, "m")


@pytest.mark.parametrize("layer, actor", [
    (keras.layers.Dropout(0.5), "identity"), (keras.layers.Flatten(), "identity"),
    (keras.layers.MaxPooling2D(), "pool"), (keras.layers.GlobalAveragePooling2D(), "global_pool"),
    (keras.layers.ZeroPadding2D(), "pad"), (keras.layers.Cropping2D(), "crop"),
    (keras.layers.BatchNormalization(), "affine"), (keras.layers.Add(), "merge"),
    (keras.layers.Concatenate(), "concat"), (keras.layers.LayerNormalization(), None),
])
def test_kinds_name_their_actor(layer, actor):
    assert kind_of(layer).actor == actor


def test_a_depthwise_written_as_a_grouped_convolution_is_the_depthwise_actor():
    conv = keras.layers.Conv2D(8, 3, groups=4)
    conv.build((None, 6, 6, 4))
    assert kind_of(conv).actor == "depthwise" and kind_of(conv).batched is None
    inputs = keras.Input((6, 6, 4))
    model = keras.Model(inputs, keras.layers.Conv2D(8, 3, groups=2)(inputs))
    assert kind_of(model.layers[-1]).actor == "conv"
    with pytest.raises(Exception, match=r"grouped convolution \(groups=2\)"):  # the conv actor names the groups
        ir.describe(model, "m")
