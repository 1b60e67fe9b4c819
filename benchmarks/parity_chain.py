"""Along the accepted chain of an evaluator_parity search: how each accepted model generalises.

A GRS project's accepted trials are the parents of later trials. For each, the score the search recorded, and its
checkpoint's validation and test accuracy recomputed with Keras, on the data of the search's seed. Compares how
two evaluators' accepted models generalise, step by step, where the final models' test accuracies (one model
each, 300 test samples) are too noisy to.

    python benchmarks/parity_chain.py benchmarks/.work/evaluator_parity/cnn1-f3000-e10-keras-s1 --seed 1
"""

from __future__ import annotations

import argparse
from pathlib import Path

from common import accuracy, calcium_splits, pretrained

import keras_grs
from keras_grs.tuner.oracles import PARENT


def chain(project: Path, model_name: str, seed: int, frames: int, evaluator: str) -> list[tuple]:
    """(trial id, structure, params, recorded score, val accuracy, test accuracy) of each accepted trial."""
    data = calcium_splits(model_name, seed=seed, n_frames=frames)
    model = pretrained(model_name, data[0], 30, seed=seed)
    tuner = keras_grs.GRSTuner.from_model(model, train_first=False, seed=seed, evaluator=evaluator,
                                          directory=str(project), acceptance="seed")
    parents = {tuner.oracle.bookkeeping(trial_id).get(PARENT) for trial_id in tuner.oracle.trials}
    rows = []
    for trial_id in sorted(p for p in parents if p):
        trial = tuner.oracle.trials[trial_id]
        accepted = tuner.load_model(trial)
        rows.append((trial_id, str(keras_grs.analyze(accepted)), keras_grs.count_params(accepted), trial.score,
                     accuracy(accepted, *data[1]), accuracy(accepted, *data[2])))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("project", type=Path, help="a search directory of evaluator_parity (with its model.sha256)")
    parser.add_argument("--model", default="cnn1")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--evaluator", default="batched", help="as the search was run (only to reload it)")
    args = parser.parse_args()
    print("| trial | structure | params | recorded score | val accuracy | test accuracy |\n|---|---|---|---|---|---|")
    for trial_id, structure, params, score, val, test in chain(args.project, args.model, args.seed, args.frames,
                                                              args.evaluator):
        print(f"| {trial_id} | {structure} | {params:,} | {score:.4f} | {val:.4f} | {test:.4f} |", flush=True)


if __name__ == "__main__":
    main()
