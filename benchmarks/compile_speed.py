"""Ways of compiling that used to fall back: one fit per candidate against the batched evaluator.

nn1's widths (32x16x8, 3 classes of the simulated calcium data) compiled three ways that fell back to one fit per
candidate until the batched evaluator reproduced them: Nadam with ``clipnorm`` (objective ``val_accuracy``), a
categorical focal cross-entropy on one-hot labels, and a macro F1 score as the objective. Each pretrained 30 epochs,
then pruned by GRS with seed 0 for the same number of trials with each evaluator; wall time, what the search kept,
its test accuracy, and whether the batched evaluator trained every step itself (``trained as``).

    python benchmarks/compile_speed.py [--epochs 20] [--max-trials 10]

Writes benchmarks/results/compile_speed.md.
"""

from __future__ import annotations

import argparse

from common import calcium_splits, evaluator_rows, evaluator_runs, machine, write

import keras
import keras_tuner
import numpy as np

from keras_grs.scoring import accuracy


def setups():
    """(name, compile arguments, objective, one-hot labels)."""
    return [
        ("Nadam, clipnorm 1.0", dict(optimizer=keras.optimizers.Nadam(clipnorm=1.0),
                                     loss="sparse_categorical_crossentropy", metrics=["accuracy"]), "val_accuracy",
         False),
        ("categorical focal cross-entropy", dict(optimizer="adam", loss="categorical_focal_crossentropy",
                                                 metrics=["accuracy"]), "val_accuracy", True),
        ("macro F1 objective", dict(optimizer="adam", loss="categorical_crossentropy",
                                    metrics=[keras.metrics.F1Score(average="macro", name="f1")]), "val_f1", True),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-trials", type=int, default=10)
    args = parser.parse_args()
    (x, y), (x_val, y_val), (x_test, y_test) = calcium_splits("nn1", seed=0)
    classes = int(np.max(y)) + 1
    rows = []
    for name, arguments, objective, one_hot in setups():
        labels = [np.eye(classes, dtype="float32")[t] if one_hot else t for t in (y, y_val, y_test)]
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input(x.shape[1:])] + [keras.layers.Dense(u, activation="relu")
                                                              for u in (32, 16, 8)]
                                 + [keras.layers.Dense(classes, activation="softmax")], name="nn1")
        model.compile(**arguments)
        model.fit(x, labels[0], epochs=30, batch_size=32, verbose=0)
        runs = evaluator_runs(model, ((x, labels[0]), (x_val, labels[1]), (x_test, labels[2])), epochs=args.epochs,
                              seed=0, max_trials=args.max_trials, objective=keras_tuner.Objective(objective, "max"),
                              test_score=accuracy)
        rows += evaluator_rows(runs, first=f"{name} (`{objective}`)")
    write("compile_speed.md", [
        "# Ways of compiling that used to fall back: keras evaluator vs batched evaluator", "",
        f"Machine: {machine()}.", "",
        f"GRS, seed 0, {args.epochs} fine-tuning epochs per candidate, batch 32, at most {args.max_trials} trials, "
        "the seed's acceptance rule; nn1's widths with a softmax output, pretrained 30 epochs each way "
        "(`benchmarks/compile_speed.py`). Test accuracy on the test split.", "",
        "| compiled with | evaluator | trained as | trials | wall s | structure | params | test accuracy | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
