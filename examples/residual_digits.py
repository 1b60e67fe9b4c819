"""A small residual CNN (BatchNormalization, a projection shortcut) on scikit-learn's digits, end to end: JGRS
prunes it (the shortcut's two sides are one width group), EUP thresholds and quantizes it, and the compact model is
written as C, a dataflow graph whose Add actor reads two FIFOs, compiled and checked against Keras.

Run: python examples/residual_digits.py [RUN_DIRECTORY] [MAX_TRIALS]

MAX_TRIALS (default 60) bounds the search: about 5 minutes on 2 CPU cores (measured: 8x16x16x16 -> 7x15x14x16,
4,322 -> 3,606 params, test accuracy 0.9694 -> 0.9582, C max |C - Keras| 1.5e-6), and the report says the search
did not finish. Pass 0 for the complete search: 279 trials, about 35 minutes (the batched evaluator does not train
graphs yet, so every candidate is one `model.fit`); measured: 8x16x16x16 -> 5x12x6x11, 4,322 -> 1,576 params, test
accuracy 0.9694 -> 0.9526, EUP 0.9526, C max |C - Keras| 1.5e-6, same class on every validation sample.

The same job from the command line, on the files this script writes into RUN_DIRECTORY:

    keras-grs prune RUN_DIRECTORY/resnet.keras --data RUN_DIRECTORY/digits.npz --out RUN_DIRECTORY/cli \\
        --method jgrs --tolerance 0.98 --epochs 3 --initial-epochs 30 --max-trials 60
"""

import sys
from pathlib import Path

import keras
import numpy as np

import keras_grs
from keras_grs import datasets


def residual_cnn(classes: int = 10) -> keras.Model:
    """Stem, one residual block whose shortcut is a 1x1 projection (the block widens 8 -> 16 channels), head."""
    layers = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization(name="stem_bn")(x))
    y = layers.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="block_conv1")(x)
    y = layers.Activation("relu")(layers.BatchNormalization(name="block_bn1")(y))
    y = layers.Conv2D(16, 3, padding="same", use_bias=False, name="block_conv2")(y)
    y = layers.BatchNormalization(name="block_bn2")(y)
    shortcut = layers.BatchNormalization(name="proj_bn")(
        layers.Conv2D(16, 1, strides=2, use_bias=False, name="proj")(x))
    x = layers.Activation("relu")(layers.Add(name="add")([y, shortcut]))
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(16, activation="relu", name="dense")(x)
    outputs = layers.Dense(classes, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs, name="resnet_digits")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main(directory: Path, max_trials: int | None = 60) -> keras_grs.PruneResult:
    x, y = datasets.digits()
    train, validation, test = datasets.split(x, y, val=0.2, test=0.2, seed=0)
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory / "digits.npz", x_train=train[0], y_train=train[1], x_val=validation[0],
             y_val=validation[1], x_test=test[0], y_test=test[1])
    keras.utils.set_random_seed(0)
    model = residual_cnn()
    model.save(directory / "resnet.keras")
    print(keras_grs.analyze(model))  # the width groups: the shortcut's sides share one
    result = keras_grs.prune(model, *train, validation, test_data=test, method="jgrs", tolerance=0.98, epochs=3,
                             initial_epochs=30, seed=0, out=directory / "api", export_c=True, verbose=0,
                             max_trials=max_trials or None)
    r = result.results[0]
    c = result.report["c_export"]
    print(f"{r.initial_structure} -> {r.structure}: params {r.initial_params:,} -> {r.params:,}, "
          f"test accuracy {r.initial_test_accuracy:.4f} -> {r.test_accuracy:.4f} (EUP {r.eup_test_accuracy:.4f})")
    print(f"C: {c['directory']}, actors {', '.join(c['actors'])}; max |C - Keras| {c['max_abs_diff']:.2e}, "
          f"same class for {c['agreement']:.2%} of the validation samples")
    return result


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "residual_digits_run"),
         int(sys.argv[2]) if len(sys.argv) > 2 else 60)
