"""Philox4x32-10 written in TensorFlow's elementwise ops, for many seeds at once.

``tf.random.stateless_uniform(shape, seed=(a, b), alg="philox")`` draws one seed's numbers per call; the batched
evaluator needs a dropout mask per candidate, each from the candidate's own seed, at every training step. One call
per candidate put a dozen small random-number kernels (and their transposes and stacking) into every step of the
compiled loop, about a fifth of a small model's training time. :func:`stateless_uniform` computes the numbers of all
the seeds in one elementwise expression, which XLA fuses into one kernel, and gives **exactly** the numbers
``tf.random.stateless_uniform`` gives inside an XLA-compiled function (``tests/test_philox.py`` compares them bit for
bit), so masks and trained weights are unchanged:

- the seed pair ``(a, b)`` forms the 64-bit key ``a | b << 32``, which is scrambled into Philox's key and the high
  half of its 128-bit counter by one Philox block under a fixed key (:data:`_SCRAMBLE`); the low half starts at 0;
- block ``i`` of the stream encrypts counter ``start + i`` and yields four 32-bit words, taken in order;
- a word becomes a float in [0, 1) from its top 23 bits: ``(word >> 9) * 2**-23``.

(Eager ``tf.random.stateless_uniform`` runs TensorFlow's own kernel, which derives key and counter differently: its
numbers are not these. The evaluator only draws inside compiled programs.)
"""

from __future__ import annotations

import tensorflow as tf

# the Philox4x32 multipliers and the Weyl constants added to the key after each round (Salmon et al., SC'11)
_MULTIPLIERS = (0xD2511F53, 0xCD9E8D57)
_WEYL = (0x9E3779B9, 0xBB67AE85)
_ROUNDS = 10
# the fixed key under which XLA scrambles a seed into a key and a counter
_SCRAMBLE = (0x3EC8F720, 0x02461E29)


def _high_low(x, multiplier):
    """The high and low 32-bit words of x * multiplier (uint32 tensors)."""
    product = tf.cast(x, tf.uint64) * tf.constant(multiplier, tf.uint64)
    return tf.cast(tf.bitwise.right_shift(product, tf.constant(32, tf.uint64)), tf.uint32), tf.cast(product, tf.uint32)


def philox(counter, key):
    """Philox4x32-10 of a counter (four uint32 tensors, least significant word first) under a key (two uint32
    tensors); all six broadcast together. Returns the four output words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(_ROUNDS):
        high0, low0 = _high_low(c0, _MULTIPLIERS[0])
        high1, low1 = _high_low(c2, _MULTIPLIERS[1])
        c0, c1, c2, c3 = high1 ^ c1 ^ k0, low1, high0 ^ c3 ^ k1, low0
        k0, k1 = k0 + tf.constant(_WEYL[0], tf.uint32), k1 + tf.constant(_WEYL[1], tf.uint32)
    return c0, c1, c2, c3


def stateless_uniform(seeds, second, n):
    """(len(seeds), n) float32 uniforms in [0, 1): row j is what ``tf.random.stateless_uniform((n,), seed=(seeds[j],
    second), alg="philox")`` gives in an XLA-compiled function. ``seeds``: (k,) int32 tensor, non-negative;
    ``second``: an int32 scalar shared by every row; ``n``: a Python int."""
    first = tf.cast(seeds, tf.uint32)[:, None]  # (k, 1): one seed per row, broadcast along the row's blocks
    second = tf.cast(tf.broadcast_to(second, tf.shape(first)), tf.uint32)
    zero = tf.zeros_like(first)
    key0, key1, high0, high1 = philox((first, zero, second, zero), tuple(tf.constant(w, tf.uint32) for w in _SCRAMBLE))
    blocks = -(-n // 4)
    index = tf.cast(tf.range(blocks), tf.uint32)[None, :]  # block i of row j: counter (i, 0, high0[j], high1[j])
    words = philox((index + zero, zero, high0, high1), (key0, key1))
    words = tf.stack([word + 0 * index for word in words], axis=-1)  # every word (k, blocks): then in stream order
    words = tf.reshape(words, (-1, blocks * 4))[:, :n]
    return tf.cast(tf.bitwise.right_shift(words, tf.constant(9, tf.uint32)), tf.float32) * (2.0 ** -23)
