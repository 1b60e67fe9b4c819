"""An AUC objective: one fit per candidate against the batched evaluator.

Until the batched evaluator computed an AUC, a search whose objective was ``val_auc`` trained one fit per candidate.
nn1's widths (32x16x8) with one sigmoid output, binary cross-entropy and a ``keras.metrics.AUC`` (ROC, and PR with
``--curve PR``), on the simulated calcium data (140 neurons, 3000 frames, 70/20/10), pretrained 30 epochs, then
pruned by GRS with seed 0 for the same number of trials with each evaluator (trial 0 validates the pretrained model,
then whole GRS steps), the objective ``val_auc``; wall time of the search, what it kept, its AUC on the test split,
and whether the batched evaluator trained every step itself (``trained as``).

    python benchmarks/objective_speed.py [--epochs 100] [--max-trials 10] [--curve ROC]

Writes benchmarks/results/objective_speed.md.
"""

from __future__ import annotations

import argparse
import functools

from common import calcium_splits, evaluator_rows, evaluator_runs, machine, write

import keras
import keras_tuner
import numpy as np


def build(input_shape, curve):
    model = keras.Sequential([keras.Input(input_shape)], name="nn1_binary")
    for units in (32, 16, 8):
        model.add(keras.layers.Dense(units, activation="relu"))
        model.add(keras.layers.Dropout(0.1))
    model.add(keras.layers.Dense(1, activation="sigmoid"))
    model.compile(optimizer="adam", loss="binary_crossentropy",
                  metrics=["accuracy", keras.metrics.AUC(name="auc", curve=curve)])
    return model


def test_auc(model, x, y, curve) -> float:
    metric = keras.metrics.AUC(curve=curve)
    metric.update_state(y, model.predict(x, verbose=0, batch_size=256))
    return float(metric.result())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--max-trials", type=int, default=10)
    parser.add_argument("--curve", default="ROC", choices=["ROC", "PR"])
    args = parser.parse_args()
    (x, y), (x_val, y_val), (x_test, y_test) = calcium_splits("nn1", seed=0)
    y, y_val, y_test = (np.asarray(labels, "float32").reshape(-1, 1) for labels in (y, y_val, y_test))
    keras.utils.set_random_seed(0)
    model = build(x.shape[1:], args.curve)
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    runs = evaluator_runs(model, ((x, y), (x_val, y_val), (x_test, y_test)), epochs=args.epochs, seed=0,
                          max_trials=args.max_trials, objective=keras_tuner.Objective("val_auc", "max"),
                          test_score=functools.partial(test_auc, curve=args.curve))
    rows = evaluator_rows(runs)
    lines = [
        "# An AUC objective: keras evaluator vs batched evaluator", "",
        f"Machine: {machine()}.", "",
        f"GRS, seed 0, objective `val_auc` ({args.curve}), {args.epochs} fine-tuning epochs per candidate, batch 32, "
        f"at most {args.max_trials} trials, the seed's acceptance rule; nn1's widths with one sigmoid output and "
        f"binary cross-entropy, pretrained 30 epochs (initial test AUC "
        f"{runs['keras'][0].initial_test:.4f}; `benchmarks/objective_speed.py`).", "",
        "| evaluator | trained as | trials | wall s | structure | params | test AUC | speed-up |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ]
    write("objective_speed.md", lines)


if __name__ == "__main__":
    main()
