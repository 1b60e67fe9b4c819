"""Batch-normalised and depthwise-separable models: one fit per candidate against the batched evaluator.

Until the batched evaluator trained BatchNormalization and DepthwiseConv layers, a model holding one (the usual
Conv/Dense, BatchNormalization, ReLU block; a depthwise-separable block) was trained one fit per candidate. Three such
models on the simulated calcium data (140 neurons, 3000 frames, 70/20/10; 12x12 images for the CNNs), pretrained 30
epochs, then pruned by GRS with seed 0 for the same
number of trials with each evaluator (trial 0 validates the pretrained model, then whole GRS steps); wall time of
the search, and what it kept after those trials (the two paths part once training noise picks another candidate).

    python benchmarks/channelwise_speed.py [--epochs 20] [--max-trials 7]

Writes benchmarks/results/channelwise_speed.md.
"""

from __future__ import annotations

import argparse
import warnings

from common import calcium_splits, machine, search, write

import keras


def mlp_bn(input_shape):
    """nn1's widths (32x16x8) as Dense without bias, BatchNormalization, ReLU blocks."""
    model = keras.Sequential([keras.Input(input_shape)], name="nn1_bn")
    for units in (32, 16, 8):
        model.add(keras.layers.Dense(units, use_bias=False))
        model.add(keras.layers.BatchNormalization())
        model.add(keras.layers.ReLU())
    model.add(keras.layers.Dense(2, activation="softmax"))
    return model


def cnn_bn(input_shape):
    """Two Conv2D, BatchNormalization, ReLU, max-pooling blocks (16 and 16 filters), then a Dense of 16."""
    model = keras.Sequential([keras.Input(input_shape)], name="cnn_bn")
    for filters in (16, 16):
        model.add(keras.layers.Conv2D(filters, 3, padding="same", use_bias=False))
        model.add(keras.layers.BatchNormalization())
        model.add(keras.layers.ReLU())
        model.add(keras.layers.MaxPooling2D())
    model.add(keras.layers.Flatten())
    model.add(keras.layers.Dense(16, activation="relu"))
    model.add(keras.layers.Dense(2, activation="softmax"))
    return model


def separable_bn(input_shape):
    """A Conv2D of 16, then two depthwise-separable blocks (DepthwiseConv2D 3x3 without bias, BatchNormalization,
    ReLU, pointwise Conv2D of 16 with BatchNormalization and ReLU), max pooling between, then global pooling."""
    model = keras.Sequential([keras.Input(input_shape), keras.layers.Conv2D(16, 3, padding="same", activation="relu")],
                             name="separable_bn")
    for _ in range(2):
        model.add(keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False))
        model.add(keras.layers.BatchNormalization())
        model.add(keras.layers.ReLU())
        model.add(keras.layers.Conv2D(16, 1, use_bias=False))
        model.add(keras.layers.BatchNormalization())
        model.add(keras.layers.ReLU())
        model.add(keras.layers.MaxPooling2D())
    model.add(keras.layers.GlobalAveragePooling2D())
    model.add(keras.layers.Dense(2, activation="softmax"))
    return model


MODELS = {"nn1_bn": ("nn1", mlp_bn), "cnn_bn": ("cnn1", cnn_bn), "separable_bn": ("cnn1", separable_bn)}


def compare(models, epochs, max_trials) -> list[str]:
    """Per model (name -> (the seed model whose data it takes, its builder)): the same capped GRS search with each
    evaluator, as table rows. The batched row says whether any step fell back to one fit per candidate."""
    rows = []
    for name, (data_of, build) in models.items():
        data = calcium_splits(data_of, seed=0)
        keras.utils.set_random_seed(0)
        model = build(data[0][0].shape[1:])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(*data[0], epochs=30, batch_size=32, verbose=0)
        runs, fell_back = {}, {}
        for evaluator in ("keras", "batched"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                runs[evaluator] = search(model, data, evaluator=evaluator, epochs=epochs, seed=0,
                                         max_trials=max_trials)
            fell_back[evaluator] = any("one fit per trial" in str(w.message) for w in caught)
        for evaluator, run in runs.items():
            speed = runs["keras"].seconds / run.seconds
            path = "one fit per candidate" if evaluator == "keras" or fell_back[evaluator] else "batched"
            rows.append(f"| {name} | {evaluator} | {path} | {run.trials} | {run.seconds:.1f} | {run.structure} | "
                        f"{run.params:,} | {run.test:.4f} | **{speed:.1f}x** |")
            print(rows[-1], flush=True)
    return rows


HEADER = ["| model | evaluator | trained as | trials | wall s | structure | params | test accuracy | speed-up |",
          "|---|---|---|---|---|---|---|---|---|"]


DESCRIBED = ("nn1_bn: nn1's widths as Dense (no bias), BatchNormalization, ReLU blocks; cnn_bn: two Conv2D (16 "
             "filters, no bias), BatchNormalization, ReLU, max-pooling blocks, then Dense 16, on 12x12 images; "
             "separable_bn: a Conv2D of 16, then two DepthwiseConv2D, BatchNormalization, ReLU, pointwise Conv2D, "
             "BatchNormalization, ReLU, max-pooling blocks, global average pooling.")


def main(models=MODELS, title="Batch-normalised and depthwise-separable models", described=DESCRIBED,
         script="channelwise_speed.py"):
    """Compare the ``models`` given on the command line and write ``results/<script's name>.md``."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=list(models), choices=list(models))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-trials", type=int, default=7)
    args = parser.parse_args()
    rows = compare({name: models[name] for name in args.models}, args.epochs, args.max_trials)
    lines = [
        f"# {title}: keras evaluator vs batched evaluator", "",
        f"Machine: {machine()}.", "",
        f"GRS, seed 0, {args.epochs} fine-tuning epochs per candidate, batch 32, at most {args.max_trials} trials, "
        f"the seed's acceptance rule; each model pretrained 30 epochs (`benchmarks/{script}`). {described}", "",
        *HEADER,
        *rows,
    ]
    print(write(script.replace(".py", ".md"), lines))


if __name__ == "__main__":
    main()
