"""Path parity: one fixed pruning path, fine-tuned step after step by each evaluator.

A search fine-tunes each accepted model from its parent's fine-tuned weights, some sixty times over for cnn1. The
candidate and sibling parity benchmarks compare one fine-tune; a difference too small to see there could still add
up along a chain (weights that drift, a model that generalises a little worse after each step), and the complete
searches cannot tell that from their path noise (every search takes its own path, and the winner of a step is the
luckiest of its siblings). Here nothing is chosen: the path is fixed (the same units removed at the same steps,
drawn once with a seed), and --chains copies of it are fine-tuned by each evaluator, every copy with its own batch
orders and dropout masks, each step from that copy's previous step. Reported: the validation and test accuracy of
the chains at a few steps along the path, mean by evaluator and the gap (batched minus keras) with its standard
error.

Run: .venv/bin/python benchmarks/path_parity.py [--model cnn1] [--chains 6] [--steps 20] [--epochs 10]
     (writes benchmarks/results/path_parity.md)
"""

from __future__ import annotations

import argparse
import tempfile

import keras
import numpy as np

import keras_grs
from candidate_parity import compiled_copy, fine_tune, gap, hidden, make_evaluator
from common import calcium_splits, machine, pretrained, write
from keras_grs.evaluate import Job

# where each path ends: about where the complete searches of evaluator_parity.md end
ENDS = {"cnn1": (18, 6, 3, 1, 1), "nn1": (7, 1, 1)}


def path(model, end, steps, seed=0):
    """Per step, ({layer name: unit indices (of that step's parent) to remove}, the widths after it): every layer
    shrunk evenly from its initial width to ``end`` over ``steps`` steps, the units drawn at random."""
    rng = np.random.default_rng(seed)
    layers = hidden(model)
    start = [int(layer.kernel.shape[-1]) for layer in layers]
    widths = list(start)
    out = []
    for step in range(1, steps + 1):
        removal = {}
        for i, layer in enumerate(layers):
            target = round(start[i] + (end[i] - start[i]) * step / steps)
            if target < widths[i]:
                removal[layer.name] = sorted(int(u) for u in rng.choice(widths[i], widths[i] - target, replace=False))
                widths[i] = target
        out.append((removal, tuple(widths)))
    return out


def walk(evaluator_name, model, removals, data, chains, epochs, directory, report_at):
    """The chains' (validation, test) accuracies at each step of ``report_at`` (arrays over the chains)."""
    train, validation, test = data
    fit = {"epochs": epochs, "batch_size": 32, "verbose": 0, "validation_data": validation}
    evaluator = make_evaluator(evaluator_name)
    current = [compiled_copy(model) for _ in range(chains)]
    found = {}
    for step, (removal, _) in enumerate(removals, start=1):
        jobs = [Job(keras_grs.shrink(parent, removal), True,
                    f"{directory}/{evaluator_name}-{c}-{step}.weights.h5", key=f"chain{c}-step{step}")
                for c, parent in enumerate(current)]
        results = fine_tune(evaluator_name, jobs, train, fit, evaluator, [1000 * c + step for c in range(chains)])
        current = [job.model for job in jobs]  # each holds its kept epoch's weights
        if step in report_at:
            tests = [job.model.evaluate(*test, verbose=0)[1] for job in jobs]
            found[step] = (np.array([r["val_accuracy"] for r in results]), np.array(tests))
            print(evaluator_name, step, found[step][0].mean(), found[step][1].mean(), flush=True)
        keras.backend.clear_session(free_memory=False)
    return found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="cnn1", choices=sorted(ENDS))
    parser.add_argument("--chains", type=int, default=6)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    data = calcium_splits(args.model, seed=0)
    model = pretrained(args.model, data[0], 30, seed=0)
    removals = path(model, ENDS[args.model], args.steps)
    report_at = sorted({max(1, args.steps // 4), args.steps // 2, 3 * args.steps // 4, args.steps})
    with tempfile.TemporaryDirectory() as directory:
        got = {e: walk(e, model, removals, data, args.chains, args.epochs, directory, report_at)
               for e in ("keras", "batched")}
    rows = []
    for step in report_at:
        shape = removals[step - 1][1]
        (val_k, test_k), (val_b, test_b) = got["keras"][step], got["batched"][step]
        rows.append(f"| {step} | {'x'.join(map(str, shape))} | {100 * val_k.mean():.2f} | {100 * val_b.mean():.2f} "
                    f"| {gap(val_b, val_k)} | {100 * test_k.mean():.2f} | {100 * test_b.mean():.2f} "
                    f"| {gap(test_b, test_k)} |")
    write("path_parity.md", [
        "# Path parity: one fixed pruning path, fine-tuned step after step by each evaluator",
        "",
        f"Machine: {machine()}.",
        "",
        f"{args.model}, simulated calcium data of seed 0 (3000 frames, 140 neurons), pretrained 30 epochs, then "
        f"pruned along one fixed path of {args.steps} steps to {'x'.join(map(str, ENDS[args.model]))} (every layer "
        f"shrunk evenly, the units drawn at random once), each step fine-tuned {args.epochs} epochs (batch 32, the "
        f"best validation epoch kept) from the chain's previous step. {args.chains} chains per evaluator, each with "
        "its own batch orders and dropout masks. Accuracies in percent, means over the chains; gaps batched minus "
        "keras ± their standard error. `benchmarks/path_parity.py`.",
        "",
        "| step | structure | val, keras | val, batched | val gap | test, keras | test, batched | test gap |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
