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

from common import calcium_splits, evaluator_rows, evaluator_runs, machine, write

import keras
import keras_tuner

WIDTHS = (64, 32, 8, 32, 64)


def build(features):
    model = keras.Sequential([keras.Input((features,))], name="autoencoder")
    for units in WIDTHS:
        model.add(keras.layers.Dense(units, activation="relu"))
    model.add(keras.layers.Dense(features))
    model.compile(optimizer="adam", loss="mse")
    return model


def test_mse(model, x, y) -> float:
    return float(model.evaluate(x, y, verbose=0))


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
    runs = evaluator_runs(model, ((x, x), (x_val, x_val), (x_test, x_test)), epochs=args.epochs, seed=0,
                          max_trials=args.max_trials, tolerance=args.tolerance, acceptance="guard",
                          objective=keras_tuner.Objective("val_loss", "min"), test_score=test_mse)
    rows = evaluator_rows(runs)
    lines = [
        "# A regression model: keras evaluator vs batched evaluator", "",
        f"Machine: {machine()}.", "",
        f"GRS, seed 0, objective `val_loss` (mean squared error, tolerance {args.tolerance}, the guard acceptance), "
        f"{args.epochs} fine-tuning epochs per candidate, batch 32, at most {args.max_trials} trials; a dense "
        f"autoencoder {'x'.join(map(str, WIDTHS))} of the calcium data's 140 neurons, pretrained 30 epochs (initial "
        f"test MSE {runs['keras'][0].initial_test:.4f}; `benchmarks/regression_speed.py`).", "",
        "| evaluator | trained as | trials | wall s | structure | params | test MSE | speed-up |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    write("regression_speed.md", lines)


if __name__ == "__main__":
    main()
