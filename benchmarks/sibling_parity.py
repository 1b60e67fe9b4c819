"""Sibling parity: does an evaluator favour cutting some layers over others?

A GRS step fine-tunes one candidate per layer (the parent minus one unit of that layer) and keeps the best. The
candidate parity benchmark found no bias in one candidate's scores; a bias that depends on the layer cut would
still steer every step to other layers, and the complete cnn1 searches of the two evaluators do end with other
shapes (the batched ones with fewer first-layer filters in every paired seed, evaluator_parity.md). This
benchmark runs such a step many times: one parent (the pretrained model cut to a stage of a search, then
fine-tuned once by ``model.fit``), one sibling per hidden layer, each sibling fine-tuned --repeats times by each
evaluator (every copy its own batch orders and dropout masks). Per layer: the mean validation and test accuracy by
each evaluator, and the chance that a step picks that layer (the best of one copy of every sibling, over all
combinations of the copies drawn at random).

Run: .venv/bin/python benchmarks/sibling_parity.py [--models cnn1] [--repeats 12] [--epochs 10]
     (writes benchmarks/results/sibling_parity.md)
"""

from __future__ import annotations

import argparse
import tempfile

import keras
import numpy as np

import keras_grs
from candidate_parity import compiled_copy, fine_tune, gap, hidden
from common import calcium_splits, machine, pretrained, write
from keras_grs.evaluate import Job

# the parent of a step: units kept per hidden layer (Dense/Conv, input to output); "half" of every initial width,
# and a shape close to where the complete cnn1 searches end (evaluator_parity.md)
STAGES = {"cnn1": {"half": (16, 8, 16, 8, 4), "late": (20, 7, 5, 2, 2)},
          "nn1": {"half": (16, 8, 4), "late": (9, 2, 2)}}


def parent(model, widths, data, epochs):
    """The pretrained model cut to ``widths`` (the last units of each layer removed), fine-tuned once."""
    copy = compiled_copy(model)
    removed = {layer.name: list(range(width, int(layer.kernel.shape[-1])))
               for layer, width in zip(hidden(copy), widths)}
    cut = keras_grs.shrink(copy, removed)
    keras.utils.set_random_seed(99)
    cut.fit(*data[0], epochs=epochs, batch_size=32, verbose=0, validation_data=data[1],
            callbacks=[keras.callbacks.EarlyStopping("val_accuracy", patience=epochs, restore_best_weights=True)])
    return cut


def siblings(model, rng):
    """{layer name: the parent minus one unit of it, drawn at random} for every layer with more than one unit."""
    out = {}
    for layer in hidden(model):
        units = int(layer.kernel.shape[-1])
        if units > 1:
            out[layer.name] = (int(rng.integers(units)),)
    return out


def sibling_scores(evaluator_name, model, cuts, data, repeats, epochs, directory):
    """{layer: (val accuracies, test accuracies)} over ``repeats`` copies of each sibling."""
    train, validation, test = data
    fit = {"epochs": epochs, "batch_size": 32, "verbose": 0, "validation_data": validation}
    jobs = {name: [] for name in cuts}
    for name, units in cuts.items():
        for i in range(repeats):
            child = keras_grs.shrink(compiled_copy(model), {name: list(units)})
            jobs[name].append(Job(child, True, f"{directory}/{evaluator_name}-{name}-{i}.weights.h5",
                                  key=f"{name}-copy{i}"))
    results = fine_tune(evaluator_name, [job for name in cuts for job in jobs[name]], train, fit)
    vals = iter(r["val_accuracy"] for r in results)
    out = {}
    for name in cuts:
        val, tests = [], []
        for job in jobs[name]:
            val.append(next(vals))
            job.model.load_weights(job.checkpoint)
            tests.append(job.model.evaluate(*test, verbose=0)[1])
        out[name] = (np.array(val), np.array(tests))
    return out


def pick_chances(scores: dict, draws=20000, seed=0) -> dict:
    """{layer: the chance its sibling is the best of a step}: one copy of every sibling drawn at random, ties to
    the first layer (as GRS breaks them)."""
    rng = np.random.default_rng(seed)
    names = list(scores)
    table = np.stack([scores[name][rng.integers(len(scores[name]), size=draws)] for name in names])
    wins = np.bincount(np.argmax(table, axis=0), minlength=len(names))
    return {name: wins[i] / draws for i, name in enumerate(names)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["cnn1"], choices=sorted(STAGES))
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for name in args.models:
        data = calcium_splits(name, seed=0)
        model = pretrained(name, data[0], 30, seed=0)
        for stage, widths in STAGES[name].items():
            start = parent(model, widths, data, args.epochs)
            cuts = siblings(start, np.random.default_rng(0))
            with tempfile.TemporaryDirectory() as directory:
                got = {e: sibling_scores(e, start, cuts, data, args.repeats, args.epochs, directory)
                       for e in ("keras", "batched")}
            chances = {e: pick_chances({layer: got[e][layer][0] for layer in cuts}) for e in got}
            for layer in cuts:
                (val_k, test_k), (val_b, test_b) = got["keras"][layer], got["batched"][layer]
                rows.append(
                    f"| {name} | {stage} | {'x'.join(map(str, widths))} | {layer} "
                    f"| {100 * val_k.mean():.2f} | {100 * val_b.mean():.2f} | {gap(val_b, val_k)} "
                    f"| {100 * test_k.mean():.2f} | {100 * test_b.mean():.2f} | {gap(test_b, test_k)} "
                    f"| {100 * chances['keras'][layer]:.0f}% | {100 * chances['batched'][layer]:.0f}% |")
                print(rows[-1], flush=True)
    write("sibling_parity.md", [
        "# Sibling parity: the layer a GRS step cuts, by each evaluator",
        "",
        f"Machine: {machine()}.",
        "",
        "Simulated calcium data of seed 0 (3000 frames, 140 neurons; 12x12 images for the CNNs), the model "
        f"pretrained 30 epochs, cut to the parent's shape (the last units of each hidden layer removed) and "
        f"fine-tuned once ({args.epochs} epochs, the best validation epoch kept). Each sibling (the parent minus one "
        f"unit of the layer shown, drawn at random) fine-tuned {args.repeats} times for {args.epochs} epochs (batch "
        "32) by each evaluator, every copy its own batch orders and dropout masks. Accuracies in percent, means over "
        "the copies; gaps batched minus keras ± their standard error; **picked**: the chance that a step "
        "(one copy of every sibling) keeps that layer's cut. `benchmarks/sibling_parity.py`.",
        "",
        "| model | stage | parent | layer cut | val, keras | val, batched | val gap | test, keras | test, batched "
        "| test gap | picked, keras | picked, batched |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
