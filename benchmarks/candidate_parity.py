"""Candidate parity: one candidate fine-tuned many times by each evaluator, its scores' distributions compared.

A complete search is a long chain of accept/reject decisions near the tolerance, so two searches of the same model
part ways at the first close call and their end points differ by far more than any bias of the evaluator (see
evaluator_parity.md). This benchmark looks for the bias where it would act: the same candidate (the pretrained
model minus fixed units), fine-tuned --repeats times by the batched evaluator (one batch, each copy its own key:
its own batch orders and dropout masks) and as often by one ``model.fit`` per candidate (each with its own Keras
seed). A systematic difference (a higher validation score for the same weights, say) shows as a gap between the
means larger than its standard error; the test accuracy of the weights each kept says whether it carries to unseen
data. Two candidates per model: early in a search (about half of each hidden layer kept) and late (a few units).

Run: .venv/bin/python benchmarks/candidate_parity.py [--models nn1 cnn1] [--repeats 12] [--epochs 10]
     (writes benchmarks/results/candidate_parity.md)
"""

from __future__ import annotations

import argparse
import tempfile

import keras
import numpy as np
from keras_tuner import Objective

import keras_grs
from common import calcium_splits, machine, pretrained, write
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator
from keras_grs.evaluate.keras import KerasEvaluator

# units kept per hidden layer (Dense/Conv, input to output), as fractions of the initial widths
STAGES = {"early": 0.5, "late": 0.15}


def hidden(model) -> list:
    """The model's Dense/Conv layers but the output layer, input to output (what a search prunes)."""
    return [layer for layer in model.layers if hasattr(layer, "kernel")][:-1]


def compiled_copy(model):
    """A copy of the model with its weights, compiled (Adam, sparse categorical cross-entropy, accuracy) so that
    :func:`keras_grs.shrink` compiles its children alike."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    copy.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return copy


def candidate(model, keep: float):
    copy = compiled_copy(model)
    removed = {}
    for layer in hidden(copy):
        units = int(layer.kernel.shape[-1])
        removed[layer.name] = list(range(units - max(1, round(units * keep))))
    return keras_grs.shrink(copy, removed)


def make_evaluator(evaluator_name):
    objective = Objective("val_accuracy", "max")
    return BatchedEvaluator(objective, seed=1) if evaluator_name == "batched" else KerasEvaluator(objective)


def fine_tune(evaluator_name, jobs, train, fit, evaluator=None, seeds=None) -> list[dict]:
    """Fine-tune the jobs with ``evaluator`` (a new one of ``evaluator_name`` when None): the batched evaluator
    all in one call, each job with its own key; ``model.fit`` job by job, each with its own Keras seed (``seeds``,
    by default 1000 + the job's index)."""
    evaluator = evaluator or make_evaluator(evaluator_name)
    if evaluator_name == "batched":
        return evaluator.evaluate(jobs, train, fit)
    results = []
    for i, job in enumerate(jobs):
        keras.utils.set_random_seed(1000 + i if seeds is None else seeds[i])
        results += evaluator.evaluate([job], train, fit)
    return results


def scores(evaluator_name, model, keep, data, repeats, epochs, directory):
    train, validation, test = data
    fit = {"epochs": epochs, "batch_size": 32, "verbose": 0, "validation_data": validation}
    jobs = [Job(candidate(model, keep), True, f"{directory}/{evaluator_name}{i}.weights.h5", key=f"copy{i}")
            for i in range(repeats)]
    results = fine_tune(evaluator_name, jobs, train, fit)
    tests = []
    for job in jobs:
        job.model.load_weights(job.checkpoint)
        tests.append(job.model.evaluate(*test, verbose=0)[1])
    structure = "x".join(str(int(layer.kernel.shape[-1])) for layer in jobs[0].model.layers
                         if hasattr(layer, "kernel"))
    return structure, np.array([r["val_accuracy"] for r in results]), np.array(tests)


def gap(a, b) -> str:
    """mean(a) - mean(b) in points, with its standard error."""
    error = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
    return f"{100 * (a.mean() - b.mean()):+.2f} ± {100 * error:.2f}"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["nn1", "cnn1"])
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    for name in args.models:
        data = calcium_splits(name, seed=0)
        model = pretrained(name, data[0], 30, seed=0)
        for stage, keep in STAGES.items():
            got = {}
            with tempfile.TemporaryDirectory() as directory:
                for evaluator in ("keras", "batched"):
                    got[evaluator] = scores(evaluator, model, keep, data, args.repeats, args.epochs,
                                            directory)
            (structure, val_k, test_k), (_, val_b, test_b) = got["keras"], got["batched"]
            rows.append(f"| {name} | {stage} | {structure} | {100 * val_k.mean():.2f} ± {100 * val_k.std(ddof=1):.2f}"
                        f" | {100 * val_b.mean():.2f} ± {100 * val_b.std(ddof=1):.2f} | {gap(val_b, val_k)}"
                        f" | {100 * test_k.mean():.2f} ± {100 * test_k.std(ddof=1):.2f}"
                        f" | {100 * test_b.mean():.2f} ± {100 * test_b.std(ddof=1):.2f} | {gap(test_b, test_k)} |")
            print(rows[-1], flush=True)
    write("candidate_parity.md", [
        "# Candidate parity: one candidate fine-tuned many times by each evaluator",
        "",
        f"Machine: {machine()}.",
        "",
        f"Simulated calcium data of seed 0 (3000 frames, 140 neurons; 12x12 images for the CNNs), the model pretrained "
        f"30 epochs, then one candidate per row (its hidden layers cut to the structure shown) fine-tuned "
        f"{args.repeats} times for {args.epochs} epochs (batch 32) by each evaluator, each copy with its own batch "
        "orders and dropout masks; the weights of its best validation epoch kept, as in a search. Accuracies in "
        "percent, mean ± sd over the copies; the gaps are batched minus keras, ± their standard error. "
        "`benchmarks/candidate_parity.py`.",
        "",
        "| model | stage | structure | val, keras | val, batched | val gap | test, keras | test, batched | test gap |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
