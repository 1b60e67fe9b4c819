"""Models of one or two width groups: a candidate per slot, or two slots a group (one of them padding).

A GRS step trains one candidate per width group. With two workers, a model of one or two groups used to train its
step as one group of two slots (a GRU: its one candidate beside a padding slot, on one core; two stacked LSTMs: both
candidates in one group, the other core idle). The batched evaluator now fixes one slot per group for such models
(``BatchedEvaluator._fix_slots``, ``MIN_SLOTS``): each candidate in its own group, on its own core, no padding.
Timed here side by side in one process, alternated, the compiled programs dropped between variants: "two slots"
puts the floor of the slots (``MIN_SLOTS``) back at 2, "one slot" is the evaluator's.

Models (``--models``): ``gru`` and ``lstm`` of ``sequence_speed.py`` on the calcium data read as 20 steps of 7
channels; ``mlp-64`` (one ReLU Dense layer of 64 units) and ``mlp-64-32`` on the 140 features. Each is pretrained
30 epochs, then searched by GRS (seed 0, batched evaluator, 20 epochs per candidate, at most ``--max-trials``
trials) with each variant.

    python benchmarks/one_slot.py [--models gru lstm mlp-64 mlp-64-32] [--max-trials 9] [--repeats 2]

Writes benchmarks/results/one_slot.md.
"""

from __future__ import annotations

import argparse

from common import calcium_splits, forget_programs, machine, search, write
from sequence_speed import CHANNELS, MODELS, STEPS

import keras

from keras_grs.evaluate import batched

EPOCHS = 20
VARIANTS = {"two slots": 2, "one slot": batched.MIN_SLOTS}  # the fewest slots a compiled fit has


def use(variant):
    """The variant's floor of the slots, and no compiled program of the other one."""
    batched.MIN_SLOTS = VARIANTS[variant]
    forget_programs()


def model_and_data(name, flat):
    keras.utils.set_random_seed(0)
    if name in MODELS:
        data = [(x.reshape(-1, STEPS, CHANNELS), y) for x, y in flat]
        model = MODELS[name]((STEPS, CHANNELS))
    else:
        data = flat
        model = keras.Sequential([keras.Input((flat[0][0].shape[1],)),
                                  *[keras.layers.Dense(int(w), activation="relu") for w in name.split("-")[1:]],
                                  keras.layers.Dense(2, activation="softmax")], name=name)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(*data[0], epochs=30, batch_size=32, verbose=0)
    return model, data


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gru", "lstm", "mlp-64", "mlp-64-32"])
    parser.add_argument("--max-trials", type=int, default=9)
    parser.add_argument("--repeats", type=int, default=2, help="searches per variant, alternated")
    args = parser.parse_args()
    flat = calcium_splits("nn1", seed=0)
    rows = []
    for name in args.models:
        model, data = model_and_data(name, flat)
        runs = {variant: [] for variant in VARIANTS}
        for _ in range(args.repeats):
            for variant in VARIANTS:
                use(variant)
                runs[variant].append(search(model, data, evaluator="batched", epochs=EPOCHS, seed=0,
                                            max_trials=args.max_trials))
        before, after = (min(r.seconds for r in runs[v]) for v in VARIANTS)
        for variant in VARIANTS:
            run = runs[variant][0]
            rows.append(f"| {name} | {variant} | {', '.join(f'{r.seconds:.1f}' for r in runs[variant])} | "
                        f"{run.trials} | {run.structure} | {run.params:,} | {run.test:.4f} | "
                        f"{'**%.1fx**' % (before / after) if variant == 'one slot' else '1x'} |")
            print(rows[-1], flush=True)
    use("one slot")
    write("one_slot.md", [
        "# Models of one or two width groups: one candidate a slot", "",
        f"Machine: {machine()}.", "",
        f"GRS (seed 0, batched evaluator, {EPOCHS} epochs per candidate, batch 32, at most {args.max_trials} trials, "
        "the seed's acceptance rule) of models pretrained 30 epochs on the simulated calcium data (gru and lstm as in "
        "`sequence_speed.py`, on 20 steps of 7 channels; mlp-64 and mlp-64-32, ReLU Dense layers, on the 140 "
        f"features), {args.repeats} searches per variant, alternated in one process (`benchmarks/one_slot.py`). "
        "\"Two slots\": the floor of the slots at 2, as before; \"one slot\": the evaluator's, a group per candidate "
        "for a model of one or two width groups. Speed-up: the fastest search of each variant.", "",
        "| model | variant | search s | trials | structure | params | test accuracy | speed-up |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
