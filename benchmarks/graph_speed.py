"""Residual and branching models: one fit per candidate against the batched evaluator.

Until the batched evaluator trained graphs (a residual ``Add``, branches side by side joined by a
``Concatenate``), a model holding one was trained one fit per candidate. Three such models on the simulated calcium
data (140 neurons, 3000 frames, 70/20/10; 12x12 images for the CNNs), pretrained 30 epochs, then pruned by GRS with
seed 0 for the same number of trials with each evaluator (trial 0 validates the pretrained model, then whole GRS
steps); wall time of the search, what it kept after those trials, and whether the batched evaluator trained every
step itself (``trained as``).

    python benchmarks/graph_speed.py [--epochs 20] [--max-trials 7]

Writes benchmarks/results/graph_speed.md.
"""

from __future__ import annotations

from channelwise_speed import main

import keras

L = keras.layers


def resnet_mlp(input_shape):
    """A Dense stem of 32, two residual blocks (Dense 32 ReLU, Dense 32, Add, ReLU: one width group with the stem),
    then Dense 16 and the output."""
    inputs = keras.Input(input_shape)
    h = L.Dense(32, activation="relu")(inputs)
    for _ in range(2):
        branch = L.Dense(32)(L.Dense(32, activation="relu")(h))
        h = L.ReLU()(L.Add()([h, branch]))
    h = L.Dense(16, activation="relu")(h)
    return keras.Model(inputs, L.Dense(2, activation="softmax")(h), name="resnet_mlp")


def resnet_cnn(input_shape):
    """A Conv2D stem of 16 (3x3), a residual block (two 3x3 Conv2D without bias, each with BatchNormalization, ReLU
    between, Add, ReLU), max pooling, a Conv2D of 16, global average pooling, the output."""
    inputs = keras.Input(input_shape)
    h = L.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    branch = L.ReLU()(L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(h)))
    branch = L.BatchNormalization()(L.Conv2D(16, 3, padding="same", use_bias=False)(branch))
    h = L.MaxPooling2D()(L.ReLU()(L.Add()([h, branch])))
    h = L.Conv2D(16, 3, padding="same", activation="relu")(h)
    return keras.Model(inputs, L.Dense(2, activation="softmax")(L.GlobalAveragePooling2D()(h)), name="resnet_cnn")


def inception_cnn(input_shape):
    """Two branches of the input side by side (Conv2D 1x1 of 8, Conv2D 3x3 of 8), concatenated, max pooling, a
    Conv2D of 16 (3x3), flattened into a Dense of 16, the output."""
    inputs = keras.Input(input_shape)
    h = L.Concatenate()([L.Conv2D(8, 1, activation="relu")(inputs),
                         L.Conv2D(8, 3, padding="same", activation="relu")(inputs)])
    h = L.Conv2D(16, 3, activation="relu")(L.MaxPooling2D()(h))
    h = L.Dense(16, activation="relu")(L.Flatten()(h))
    return keras.Model(inputs, L.Dense(2, activation="softmax")(h), name="inception_cnn")


def mobile_cnn(input_shape):
    """A MobileNetV3-style block: ZeroPadding and a strided 3x3 Conv2D of 16 with a hard-swish written as Keras ops
    (``x * relu6(x + 3) / 6``), a DepthwiseConv2D with BatchNormalization and ReLU6, a squeeze-and-excitation gate
    (global pooling kept as 1x1, two 1x1 Conv2D, Multiply), a pointwise Conv2D of 16 with BatchNormalization added to
    the block's input, global pooling, the output."""
    inputs = keras.Input(input_shape)
    x = L.Conv2D(16, 3, strides=2, use_bias=False)(L.ZeroPadding2D(1)(inputs))
    x = L.BatchNormalization()(x)
    x = x * keras.ops.relu6(x + 3.0) * (1.0 / 6.0)
    h = L.ReLU(max_value=6.0)(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)))
    gate = L.GlobalAveragePooling2D(keepdims=True)(h)
    gate = L.Conv2D(16, 1, activation="hard_sigmoid")(L.Conv2D(4, 1, activation="relu")(gate))
    h = L.BatchNormalization()(L.Conv2D(16, 1, use_bias=False)(L.Multiply()([h, gate])))
    h = L.Add()([x, h])
    return keras.Model(inputs, L.Dense(2, activation="softmax")(L.GlobalAveragePooling2D()(h)), name="mobile_cnn")


MODELS = {"resnet_mlp": ("nn1", resnet_mlp), "resnet_cnn": ("cnn1", resnet_cnn),
          "inception_cnn": ("cnn1", inception_cnn), "mobile_cnn": ("cnn1", mobile_cnn)}


DESCRIBED = ("resnet_mlp: a Dense stem of 32 and two residual blocks of two Dense 32 (one width group), Dense 16; "
             "resnet_cnn: a Conv2D stem of 16 and a residual block of two 3x3 Conv2D with BatchNormalization, max "
             "pooling, a Conv2D of 16, global pooling; inception_cnn: a 1x1 and a 3x3 Conv2D of 8 side by side "
             "(Concatenate), max pooling, a Conv2D of 16, Flatten, Dense 16; mobile_cnn: a MobileNetV3-style block (a "
             "strided Conv2D with a hard-swish written as Keras ops, a DepthwiseConv2D with ReLU6, a "
             "squeeze-and-excitation gate, a pointwise Conv2D added to the block's input); 12x12 images for the "
             "CNNs.")

if __name__ == "__main__":
    main(MODELS, "Residual and branching models", DESCRIBED, "graph_speed.py")
