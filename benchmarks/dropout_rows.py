"""Dropout masks of one or two candidates: drawn as they are, or with rows up to a third that nobody uses.

XLA's CPU backend emits the Philox numbers of a training program's dropout far slower for one or two rows (one per
candidate slot) than for three, once a row holds more than about a thousand numbers (units x batch). The batched
evaluator then draws a third row (``FEW_ROWS_NUMBERS`` in ``keras_grs/evaluate/batched.py``); rows are independent
streams, so the masks, and so the trained weights, are the same numbers either way. Timed here, side by side in
one process (alternated, the compiled programs dropped between variants): "as drawn" sets the threshold out of reach
(a convolution's dropout still takes its third row, as before), "third row" is the evaluator's.

Models: MLPs with ReLU Dense layers, each followed by Dropout(0.2), on the simulated calcium data (140 features,
3000 frames, 70/20/10), pretrained 30 epochs. Per model: one GRS step (one unit removed from each width group),
20 epochs, batch 32, after an untimed warm-up step; then a capped GRS search (seed 0, ``--max-trials``, 20 epochs
per candidate) with each variant: the same trials and structure are expected.

    python benchmarks/dropout_rows.py [--models 128-64-32 64 256-128 32-16-8] [--max-trials 16]

Writes benchmarks/results/dropout_rows.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import calcium_splits, forget_programs, machine, search, write

import keras
from keras_tuner import Objective

import keras_grs
from keras_grs.evaluate import Job
from keras_grs.evaluate import batched

VARIANTS = {"as drawn": float("inf"), "third row": batched.FEW_ROWS_NUMBERS}
EPOCHS = 20


def mlp(widths, train):
    layers = [keras.Input((train[0].shape[1],))]
    for width in widths:
        layers += [keras.layers.Dense(width, activation="relu"), keras.layers.Dropout(0.2)]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([*layers, keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*train, epochs=30, batch_size=32, verbose=0)
    return model


def use(variant):
    """The variant's threshold, and no compiled program of the other one."""
    batched.FEW_ROWS_NUMBERS = VARIANTS[variant]
    forget_programs()


def step_seconds(model, data) -> float:
    """One GRS step of ``model`` (a candidate per width group), EPOCHS epochs, after a warm-up step."""
    train, validation, _ = data
    groups = keras_grs.analyze(model).names
    evaluator = batched.BatchedEvaluator(Objective("val_accuracy", "max"))
    evaluator.pad_to(model)
    fit = {"epochs": EPOCHS, "batch_size": 32, "validation_data": validation, "verbose": 0}
    with tempfile.TemporaryDirectory() as directory:
        def step(unit):
            return [Job(keras_grs.shrink(model, {g: [unit]}), True, f"{directory}/{g}{unit}.weights.h5",
                        key=f"{g}{unit}") for g in groups]

        evaluator.evaluate(step(0), train, dict(fit, epochs=2))
        start = time.perf_counter()
        evaluator.evaluate(step(1), train, fit)
        return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["128-64-32", "64", "256-128", "32-16-8"])
    parser.add_argument("--max-trials", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2, help="timings of each variant's step, alternated")
    args = parser.parse_args()
    data = calcium_splits("nn1", seed=0)
    rows = []
    for name in args.models:
        model = mlp([int(w) for w in name.split("-")], data[0])
        steps = {variant: [] for variant in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:
                use(variant)
                steps[variant].append(step_seconds(model, data))
        runs = {}
        for variant in VARIANTS:
            use(variant)
            runs[variant] = search(model, data, evaluator="batched", epochs=EPOCHS, seed=0, max_trials=args.max_trials)
        before, after = (min(steps[v]) for v in VARIANTS)
        search_before, search_after = (runs[v].seconds for v in VARIANTS)
        same = all(runs[v].structure == runs["third row"].structure and runs[v].trials == runs["third row"].trials
                   for v in VARIANTS)
        rows.append(
            f"| {name} | {', '.join(f'{s:.2f}' for s in steps['as drawn'])} | "
            f"{', '.join(f'{s:.2f}' for s in steps['third row'])} | **{before / after:.1f}x** | "
            f"{search_before:.1f} | {search_after:.1f} | **{search_before / search_after:.1f}x** | "
            f"{runs['third row'].trials} | {runs['third row'].structure} | {'yes' if same else 'no'} |")
        print(rows[-1], flush=True)
    use("third row")
    write("dropout_rows.md", [
        "# Dropout masks of one or two candidates: a third row", "",
        f"Machine: {machine()}.", "",
        f"MLPs (ReLU Dense layers of the widths named, each followed by Dropout(0.2)) on the simulated calcium data, "
        f"pretrained 30 epochs; a GRS step of the batched evaluator (a candidate per width group, {EPOCHS} epochs, "
        f"batch 32, two slots a group) timed {args.repeats} times per variant, alternated, and a capped GRS search "
        f"(seed 0, at most {args.max_trials} trials, {EPOCHS} epochs per candidate) with each "
        "(`benchmarks/dropout_rows.py`). \"As drawn\": one or two rows of random numbers, one per candidate slot; "
        "\"third row\": the evaluator's, a third row drawn once a row holds more than "
        f"{batched.FEW_ROWS_NUMBERS} numbers. The masks are the same numbers either way: \"same\" says whether both "
        "searches took the same trials to the same structure.", "",
        "| model | step s, as drawn | step s, third row | step speed-up | search s, as drawn | search s, third row "
        "| search speed-up | trials | structure | same |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
