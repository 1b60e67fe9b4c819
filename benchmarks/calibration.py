"""Calibration of the realistic calcium simulator against the difficulty figures of issue 16.

The seed's recordings are hard in a particular way: nn1 (trained 100 epochs) reaches 0.85-0.93 validation
accuracy, a linear decoder does clearly worse, and a tiny network cannot do what nn1 does. Per recording
(``datasets.calcium(dataset=k)``, 3000 frames, 70/20/10 split) this trains

- nn1, 100 epochs, batch 32, Adam (the seed's protocol); validation accuracy after the last epoch;
- logistic regression (scikit-learn, L2 strength chosen by 5-fold cross-validation on the training set);
- nn1 at 3x2x1 width, best validation accuracy of three initialisations;
- cnn1 on the image layout (neurons sorted by centroid), ``--cnn-epochs`` epochs (0: skipped).

Targets: nn1 in [0.85, 0.93]; logistic regression at least 3 points below nn1; 3x2x1 at least 4 points below.

Run: .venv/bin/python benchmarks/calibration.py [--epochs 100] [--datasets 0 1 2] [--cnn-epochs N]
     (writes benchmarks/results/calibration.md; ``make bench-calibration``)
"""

from __future__ import annotations

import argparse
import time

from common import machine, write

import keras  # noqa: E402  (common sets the log level first)
import numpy as np  # noqa: E402

from keras_grs import datasets, models, surgery  # noqa: E402

TINY = {"dense1": 3, "dense2": 2, "dense3": 1}
NN1_RANGE = (0.85, 0.93)
LOGISTIC_GAP = 3.0  # points below nn1, at least
TINY_GAP = 4.0


def splits(dataset: int, image: bool, n_frames: int = 3000, **simulator):
    x, y = datasets.calcium(dataset=dataset, n_frames=n_frames, image=image, **simulator)
    return datasets.split(x, y, val=0.2, test=0.1, seed=dataset)


def network_accuracy(model: keras.Model, train, val, epochs: int) -> float:
    """Validation accuracy after the last of ``epochs`` epochs (no early stopping, as the seed trained)."""
    history = model.fit(*train, epochs=epochs, batch_size=32, validation_data=val, verbose=0)
    keras.backend.clear_session()
    return float(history.history["val_accuracy"][-1])


def nn1_accuracy(train, val, epochs: int, seed: int = 0) -> float:
    keras.utils.set_random_seed(seed)
    return network_accuracy(models.build("nn1", train[0].shape[1:]), train, val, epochs)


def tiny_accuracy(train, val, epochs: int, initialisations: int = 3) -> float:
    """nn1 at 3x2x1 width: the best validation accuracy of several initialisations."""
    best = 0.0
    for seed in range(initialisations):
        keras.utils.set_random_seed(seed)
        model = surgery.resized(models.build("nn1", train[0].shape[1:]), TINY)
        best = max(best, network_accuracy(model, train, val, epochs))
    return best


def cnn1_accuracy(train, val, epochs: int, seed: int = 0) -> float:
    keras.utils.set_random_seed(seed)
    return network_accuracy(models.build("cnn1", train[0].shape[1:]), train, val, epochs)


def logistic_accuracy(train, val) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score

    def cross_validated(strength):
        return cross_val_score(LogisticRegression(C=strength, max_iter=2000), *train, cv=5).mean()

    best = max(np.logspace(-3, 1, 5), key=cross_validated)
    return float(LogisticRegression(C=best, max_iter=2000).fit(*train).score(*val))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--datasets", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--cnn-epochs", type=int, help="epochs of cnn1 (default: --epochs); 0 skips cnn1")
    args = parser.parse_args()
    cnn_epochs = args.epochs if args.cnn_epochs is None else args.cnn_epochs
    rows, verdicts = [], []
    start = time.perf_counter()
    for dataset in args.datasets:
        train, val, _ = splits(dataset, image=False)
        nn1 = nn1_accuracy(train, val, args.epochs)
        logistic = logistic_accuracy(train, val)
        tiny = tiny_accuracy(train, val, args.epochs)
        cnn = "-"
        if cnn_epochs:
            image_train, image_val, _ = splits(dataset, image=True)
            cnn = f"{cnn1_accuracy(image_train, image_val, cnn_epochs):.4f}"
        # Keras reports float32 accuracies (558/600 comes back as 0.93000001): compare at 4 decimals
        nn1, tiny = round(nn1, 4), round(tiny, 4)
        ok = (NN1_RANGE[0] <= nn1 <= NN1_RANGE[1], round(100 * (nn1 - logistic), 2) >= LOGISTIC_GAP,
              round(100 * (nn1 - tiny), 2) >= TINY_GAP)
        verdicts.append(all(ok))
        rows.append(f"| {dataset} | {train[0].shape[1]} | {nn1:.4f} | {logistic:.4f} ({100 * (logistic - nn1):+.1f}) "
                    f"| {tiny:.4f} ({100 * (tiny - nn1):+.1f}) | {cnn} | {'yes' if all(ok) else 'no'} |")
        print(rows[-1], flush=True)
        minutes = (time.perf_counter() - start) / 60
        write("calibration.md", [
            "# Calibration of the realistic calcium simulator",
            "",
            f"Machine: {machine()}.",
            "",
            f"`datasets.calcium(dataset=k)` (realistic, the default), 3000 frames, 70/20/10 split (split seed k). "
            f"Validation accuracy after {args.epochs} epochs, batch 32, Adam (networks seeded 0); logistic regression "
            f"with its L2 strength chosen by 5-fold cross-validation on the training set; 3x2x1 = nn1 resized to "
            f"3x2x1, best of three initialisations. In brackets: points relative to nn1. Targets (issue 16): nn1 in "
            f"[{NN1_RANGE[0]:.2f}, {NN1_RANGE[1]:.2f}], logistic regression at least {LOGISTIC_GAP:.0f} points below "
            f"nn1, 3x2x1 at least {TINY_GAP:.0f} points below. One run of `benchmarks/calibration.py` "
            f"(`make bench-calibration`), {minutes:.0f} min.",
            "",
            f"| dataset | neurons | nn1 | logistic regression | nn1 at 3x2x1 | cnn1 (image, {cnn_epochs} epochs) "
            "| targets met |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
            f"Targets met on {sum(verdicts)} of {len(verdicts)} recordings.",
        ])


if __name__ == "__main__":
    main()
