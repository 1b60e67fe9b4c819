"""What the dropout masks' Philox numbers cost in a compiled loop, and two ways of drawing them.

``keras_grs.evaluate.philox.stateless_uniform`` stacks the four words of each Philox block into the stream (the
numbers ``tf.random.stateless_uniform`` gives). Timed here against the same count of numbers taken one word per
block (four times the blocks, no stacking: other numbers), and against the stacking with an XLA optimization barrier
on the words (the same numbers, if XLA computed each block once). Each: 2,000 draws of 3 rows in one compiled loop,
alternated twice. Prints microseconds per draw.

    python benchmarks/philox_speed.py [--numbers 1024 4096]
"""

from __future__ import annotations

import argparse
import time

import tensorflow as tf
from tensorflow.compiler.tf2xla.ops import gen_xla_ops

from keras_grs.evaluate import philox

DRAWS = 2000


def _words(seeds, second, blocks):
    first = tf.cast(seeds, tf.uint32)[:, None]
    second = tf.cast(tf.broadcast_to(second, tf.shape(first)), tf.uint32)
    zero = tf.zeros_like(first)
    key0, key1, high0, high1 = philox.philox((first, zero, second, zero),
                                             tuple(tf.constant(w, tf.uint32) for w in philox._SCRAMBLE))
    index = tf.cast(tf.range(blocks), tf.uint32)[None, :]
    return [word + 0 * index for word in philox.philox((index + zero, zero, high0, high1), (key0, key1))]


def _floats(words):
    return tf.cast(tf.bitwise.right_shift(words, tf.constant(9, tf.uint32)), tf.float32) * (2.0 ** -23)


def one_word_per_block(seeds, second, n):
    return _floats(_words(seeds, second, n)[0])


def barrier(seeds, second, n):
    blocks = -(-n // 4)
    words = gen_xla_ops.xla_optimization_barrier(_words(seeds, second, blocks))
    return _floats(tf.reshape(tf.stack(words, axis=-1), (-1, blocks * 4))[:, :n])


VARIANTS = {"stacked (the evaluator's)": philox.stateless_uniform, "one word per block": one_word_per_block,
            "stacked behind a barrier": barrier}


def time_draws(draw, n) -> tuple[float, object]:
    @tf.function(jit_compile=True)
    def loop(seeds):
        def body(i, total):
            return i + 1, total + draw(seeds + i, i, n)
        return tf.while_loop(lambda i, _: i < DRAWS, body, (tf.constant(0), tf.zeros((3, n))))[1]

    seeds = tf.constant([1, 2, 3])
    values = loop(seeds).numpy()  # compiles
    start = time.perf_counter()
    loop(seeds)
    return (time.perf_counter() - start) * 1e6 / DRAWS, values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numbers", type=int, nargs="+", default=[1024, 4096], help="numbers per row and draw")
    args = parser.parse_args()
    for n in args.numbers:
        values = {}
        for _ in range(2):
            for name, draw in VARIANTS.items():
                micros, values[name] = time_draws(draw, n)
                print(f"3 x {n}: {name}: {micros:.1f} us a draw", flush=True)
        same = (values["stacked behind a barrier"] == values["stacked (the evaluator's)"]).all()
        print(f"3 x {n}: the barrier's numbers are the evaluator's: {same}", flush=True)


if __name__ == "__main__":
    main()
