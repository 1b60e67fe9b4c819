"""The batched evaluator's Philox: every candidate's numbers in one expression, bit for bit those of
``tf.random.stateless_uniform`` in a compiled function (so masks, and the weights they train, did not change)."""

import numpy as np
import pytest
import tensorflow as tf

from keras_grs.evaluate.batched import _dropout_keep
from keras_grs.evaluate.philox import stateless_uniform


def reference(seeds, second, n):
    return tf.stack([tf.random.stateless_uniform((n,), seed=tf.stack([s, second]), alg="philox") for s in seeds])


@pytest.mark.parametrize("n", [1, 4, 7, 130])
def test_the_numbers_are_tensorflows_compiled_stateless_uniform(n):
    seeds = tf.constant([0, 3, 11, 123456789, (1 << 30) + 17], tf.int32)
    for second in (0, 1, 65, 40000):
        mine = tf.function(lambda s, b: stateless_uniform(s, b, n), jit_compile=True)(seeds, tf.constant(second))
        want = tf.function(lambda s, b: reference(tf.unstack(s), b, n), jit_compile=True)(seeds, tf.constant(second))
        np.testing.assert_array_equal(mine.numpy(), want.numpy())
        # the same numbers run eagerly, op by op
        np.testing.assert_array_equal(stateless_uniform(seeds, tf.constant(second), n).numpy(), mine.numpy())


def test_the_numbers_are_uniform_and_a_longer_stream_extends_a_shorter_one():
    numbers = stateless_uniform(tf.constant([1, 2]), tf.constant(9), 40000).numpy()
    assert numbers.min() >= 0.0 and numbers.max() < 1.0
    assert abs(numbers.mean() - 0.5) < 0.01 and abs(numbers.var() - 1 / 12) < 0.005
    assert np.histogram(numbers[0], bins=10, range=(0, 1))[0].min() > 3700  # 4000 expected per tenth
    assert abs(np.corrcoef(numbers[0], numbers[1])[0, 1]) < 0.02  # two seeds: unrelated streams
    np.testing.assert_array_equal(stateless_uniform(tf.constant([1, 2]), tf.constant(9), 13).numpy(), numbers[:, :13])


def test_a_dropout_mask_is_one_draw_per_candidate_filled_unit_by_unit():
    shape, seeds = (3, 5, 2, 7), tf.constant([4, 8, 15])
    keep = tf.function(lambda s: _dropout_keep(shape, s, tf.constant(2), 1, 0.4), jit_compile=True)(seeds).numpy()
    for j in range(3):
        uniform = tf.function(lambda: tf.random.stateless_uniform((7, 10), seed=tf.stack([seeds[j] + 1, 2]),
                                                                  alg="philox"), jit_compile=True)()
        np.testing.assert_array_equal(keep[j], tf.reshape(tf.transpose(uniform), (5, 2, 7)).numpy() >= 0.4)


@pytest.mark.parametrize("slots", [2, 3])
@pytest.mark.parametrize("unit_shape", [(6, 3, 3, 5), (32, 40), (32, 8)], ids=["conv", "dense-wide", "dense-narrow"])
def test_a_candidates_mask_is_the_same_whatever_its_batch_mates_two_slots_included(slots, unit_shape):
    # one or two slots draw rows up to a third that nobody uses (XLA emits fewer rows far slower than three, for a
    # convolution's dropout and above FEW_ROWS_NUMBERS numbers a row): the rows kept must be the candidates' own
    # masks, as a batch of one candidate per slot gives them
    shape = (slots, *unit_shape)
    seeds = tf.constant([7, 1 << 20, 99][:slots])
    keep = tf.function(lambda s: _dropout_keep(shape, s, tf.constant(5), 3, 0.5), jit_compile=True)(seeds).numpy()
    assert keep.shape == shape
    for j in range(slots):
        alone = tf.function(lambda s: _dropout_keep((1, *shape[1:]), s, tf.constant(5), 3, 0.5),
                            jit_compile=True)(seeds[j : j + 1]).numpy()
        np.testing.assert_array_equal(keep[j], alone[0])
    assert 0.3 < keep.mean() < 0.7 and not np.array_equal(keep[0], keep[1])
