"""A regression model (a dense autoencoder): one fit per candidate against the batched evaluator.

Until the batched evaluator computed mean squared error, a regression model trained one fit per candidate. The
model is the shape of the anomaly-detection autoencoder of embedded benchmarks, scaled to the simulated calcium data
(140 neurons, 3000 frames, 70/20/10): Dense 64-32-8-32-64 with ReLU, a linear output of the 140 inputs, mean squared
error, pretrained 30 epochs; then pruned by GRS with seed 0 for the same number of trials with each evaluator (trial
0 validates the pretrained model, then whole GRS steps), the objective ``val_loss`` (the guard acceptance: its
tolerance lets a candidate's loss grow to 1/tolerance of the root's). Wall time of the search, what it kept, its
reconstruction error on the test split, and whether the batched evaluator trained every step itself (``trained
as``).

    python benchmarks/regression_speed.py [--epochs 20] [--max-trials 16] [--tolerance 0.95]

Writes benchmarks/results/regression_speed.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

from common import calcium_splits, machine, write

import keras
import keras_tuner

import keras_grs

WIDTHS = (64, 32, 8, 32, 64)


def build(features):
    model = keras.Sequential([keras.Input((features,))], name="autoencoder")
    for units in WIDTHS:
        model.add(keras.layers.Dense(units, activation="relu"))
    model.add(keras.layers.Dense(features))
    model.compile(optimizer="adam", loss="mse")
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-trials", type=int, default=16)
    parser.add_argument("--tolerance", type=float, default=0.95)
    args = parser.parse_args()
    (x, _), (x_val, _), (x_test, _) = calcium_splits("nn1", seed=0)
    keras.utils.set_random_seed(0)
    model = build(x.shape[1])
    model.fit(x, x, epochs=30, batch_size=32, verbose=0)
    rows, seconds = [], {}
    for evaluator in ("keras", "batched"):
        with tempfile.TemporaryDirectory() as directory, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tuner = keras_grs.GRSTuner.from_model(
                model, train_first=False, objective=keras_tuner.Objective("val_loss", "min"), seed=0,
                evaluator=evaluator, tolerance=args.tolerance, max_trials=args.max_trials, directory=directory)
            tuner.oracle.verbose = 0
            start = time.perf_counter()
            tuner.search(x, x, validation_data=(x_val, x_val), epochs=args.epochs, batch_size=32, verbose=0,
                         progress=False)
            seconds[evaluator] = time.perf_counter() - start
            compact = tuner.get_best_models(1)[0]
            trials = len(tuner.oracle.trials)
        fell_back = any("one fit per trial" in str(w.message) for w in caught)
        path = "one fit per candidate" if evaluator == "keras" or fell_back else "batched"
        rows.append(f"| {evaluator} | {path} | {trials} | {seconds[evaluator]:.1f} | {keras_grs.analyze(compact)} | "
                    f"{keras_grs.count_params(compact):,} | {compact.evaluate(x_test, x_test, verbose=0):.4f} | "
                    f"**{seconds['keras'] / seconds[evaluator]:.1f}x** |")
        print(rows[-1], flush=True)
    lines = [
        "# A regression model: keras evaluator vs batched evaluator", "",
        f"Machine: {machine()}.", "",
        f"GRS, seed 0, objective `val_loss` (mean squared error, tolerance {args.tolerance}, the guard acceptance), "
        f"{args.epochs} fine-tuning epochs per candidate, batch 32, at most {args.max_trials} trials; a dense "
        f"autoencoder {'x'.join(map(str, WIDTHS))} of the calcium data's 140 neurons, pretrained 30 epochs (initial "
        f"test MSE {model.evaluate(x_test, x_test, verbose=0):.4f}; `benchmarks/regression_speed.py`).", "",
        "| evaluator | trained as | trials | wall s | structure | params | test MSE | speed-up |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    write("regression_speed.md", lines)


if __name__ == "__main__":
    main()
