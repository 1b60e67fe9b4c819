"""Where a batched search spends its time: per phase, for a complete GRS search of nn1 at 5 epochs per candidate.

With the batched evaluator a candidate's fine-tuning is a few milliseconds of compiled arithmetic, so what
surrounds it (building the candidate's Keras model, copying weights in and out, writing its checkpoint, the
oracle's files) decides the speed of short fine-tunes. Every phase below is timed exclusively (a phase called
inside another is subtracted from the outer one), so the rows add up to the search's wall time.

Phases: **build candidates** (the tuner's job: the parent's surviving weights, the candidate's model when one is
built),
**copy weights** (stacking the candidates for the compiled program, copying the chosen epoch back), **train**
(the compiled fits: every epoch's steps and validation and the choice of the epoch kept, in one call, and the
batch orders drawn for them; compiled by the untimed first search, whose programs the process keeps), **save checkpoints**, **count params/FLOPs** (and the estimated latency), **oracle bookkeeping**
(creating and ending trials,
the oracle's and the trials' files, unit norms, the guard, tidying between batches) and **other** (the rest).
Training (with its validation) is the work; everything else is the per-trial overhead. Tables of code before the
compiled fit included the validation and the choice of the epoch (until then a host loop) show them as a separate
**evaluate** phase.

``--compare`` also times the search as it ran before candidates were held as arrays, in the same process: every
candidate built as a Keras model (``surgery.resized``) and given its parent's surviving weights, as
``CandidateRunner(arrays=False)`` does. The variants alternate, so that warm caches favour neither.

Run: .venv/bin/python benchmarks/overhead.py [--epochs 5] [--frames 3000] [--compare]
     (writes benchmarks/results/overhead.md)
"""

from __future__ import annotations

import argparse
import collections
import functools
import tempfile
import time

from common import calcium_splits, machine, pretrained, write

import keras_grs
from keras_grs.evaluate import batched
from keras_grs.evaluate.candidate import Candidate
from keras_grs.evaluate import runner as runner_module
from keras_grs.tuner import tuner as tuner_module

PHASES = ("build candidates", "copy weights", "train", "save checkpoints", "count params/FLOPs",
          "oracle bookkeeping", "other")
WORK = ("train",)


class PhaseClock:
    """Exclusive time per phase: entering a phase pauses the one it is called from."""

    def __init__(self):
        self.seconds = collections.Counter()
        self.stack = []
        self.mark = time.perf_counter()

    def _switch(self):
        now = time.perf_counter()
        if self.stack:
            self.seconds[self.stack[-1]] += now - self.mark
        self.mark = now

    def wrap(self, function, phase):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            self._switch()
            self.stack.append(phase)
            try:
                return function(*args, **kwargs)
            finally:
                self._switch()
                self.stack.pop()

        return timed


def instrument(clock, tuner):
    """Wrap the tuner's, oracle's and evaluator's steps in the clock's phases (on this tuner and its evaluator
    only, plus the module functions they call)."""
    evaluator = tuner.evaluator
    for name, phase in (("_stored", "oracle bookkeeping"), ("_evaluate_with", "oracle bookkeeping"),
                        ("on_trial_begin", "oracle bookkeeping"), ("on_trial_end", "oracle bookkeeping")):
        setattr(tuner, name, clock.wrap(getattr(tuner, name), phase))
    runner = tuner._runner  # building a candidate; its norms and guard record are bookkeeping, as before
    runner.prepare = clock.wrap(runner.prepare, "build candidates")
    runner._record = clock.wrap(runner._record, "oracle bookkeeping")
    for name in ("create_trial", "update_trial", "end_trial", "save"):
        setattr(tuner.oracle, name, clock.wrap(getattr(tuner.oracle, name), "oracle bookkeeping"))
    for name, phase in (("_pack", "copy weights"), ("_unpack", "copy weights"), ("_train", "train"),
                        ("_save", "save checkpoints")):
        setattr(evaluator, name, clock.wrap(getattr(evaluator, name), phase))
    program = evaluator._program
    evaluator._program = lambda *args, **kwargs: clock.wrap(program(*args, **kwargs), "train")
    return {
        (batched, "measure"): clock.wrap(batched.measure, "count params/FLOPs"),
        (Candidate, "materialize"): clock.wrap(Candidate.materialize, "build candidates"),
        (tuner_module, "tidy"): clock.wrap(tuner_module.tidy, "oracle bookkeeping"),
        (runner_module, "tidy"): clock.wrap(runner_module.tidy, "oracle bookkeeping"),
    }


def as_before(tuner):
    """Every candidate built as a Keras model (see the module docstring)."""
    tuner._runner.arrays = False
    return {}


def timed_search(model, data, epochs, seed, fast, max_trials=None):
    """One GRS search (complete unless capped); (seconds per phase, wall seconds, trials)."""
    train, validation, _ = data
    with tempfile.TemporaryDirectory() as directory:
        tuner = keras_grs.GRSTuner.from_model(model, train_first=False, seed=seed, evaluator="batched",
                                              acceptance="seed", directory=directory, max_trials=max_trials)
        tuner.oracle.verbose = 0
        clock = PhaseClock()
        patches = instrument(clock, tuner)
        if not fast:
            patches.update(as_before(tuner))
        originals = {key: getattr(*key) for key in patches}
        for (module, name), wrapped in patches.items():
            setattr(module, name, wrapped)
        try:
            clock.stack.append("other")
            clock.mark = start = time.perf_counter()
            tuner.search(*train, validation_data=validation, epochs=epochs, batch_size=32, verbose=0,
                         progress=False)
            clock._switch()
            wall = time.perf_counter() - start
        finally:
            for (module, name), original in originals.items():
                setattr(module, name, original)
        trials = len(tuner.oracle.trials)
    return clock.seconds, wall, trials


def table(runs) -> list[str]:
    """One column pair (seconds, share) per run."""
    header = "| phase | " + " | ".join(f"{label} s | {label} %" for label, *_ in runs) + " |"
    lines = [header, "|---|" + "---|---|" * len(runs)]
    for phase in PHASES:
        cells = [f"{seconds[phase]:.2f} | {100 * seconds[phase] / wall:.1f}" for _, seconds, wall, _ in runs]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    overhead = [f"**{sum(s[p] for p in PHASES if p not in WORK):.2f}** | "
                f"**{100 * sum(s[p] for p in PHASES if p not in WORK) / wall:.1f}**" for _, s, wall, _ in runs]
    lines.append("| **per-trial overhead** (all but train) | " + " | ".join(overhead) + " |")
    lines.append("| wall time | " + " | ".join(f"{wall:.2f} | 100" for _, _, wall, _ in runs) + " |")
    lines.append("| trials (mean) | " + " | ".join(f"{trials:.1f} | " for *_, trials in runs) + " |")
    lines.append("| overhead per trial, s | " + " | ".join(
        f"{sum(s[p] for p in PHASES if p not in WORK) / trials:.3f} | " for _, s, _, trials in runs) + " |")
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="nn1")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true", help="also time the search as it ran before, same run")
    parser.add_argument("--repeats", type=int, default=1, help="timed searches per variant (alternated), averaged")
    args = parser.parse_args()
    data = calcium_splits(args.model, seed=args.seed, n_frames=args.frames)
    model = pretrained(args.model, data[0], args.pretrain_epochs, seed=args.seed)
    # a first, untimed search compiles the programs every timed search shares
    timed_search(model, data, args.epochs, args.seed, fast=True, max_trials=10)
    order = ([("before", False), ("now", True)] if args.compare else [("now", True)]) * args.repeats
    results = collections.defaultdict(list)
    for label, fast in order:
        results[label].append(timed_search(model, data, args.epochs, args.seed, fast))
    runs = []
    for label, measured in results.items():
        seconds = collections.Counter()
        for phases, _, _ in measured:
            seconds.update({p: s / len(measured) for p, s in phases.items()})
        runs.append((label, seconds, sum(w for _, w, _ in measured) / len(measured),
                     sum(t for _, _, t in measured) / len(measured)))
    lines = [
        "# Per-trial overhead of a batched search",
        "",
        f"Machine: {machine()}.",
        "",
        f"Complete GRS searches of {args.model} (simulated calcium data, {args.frames} frames, pretrained "
        f"{args.pretrain_epochs} epochs, seed {args.seed}), batched evaluator, {args.epochs} fine-tuning epochs per "
        f"candidate, batch 32, the seed's acceptance rule; after a short untimed search that compiles the programs, "
        f"{args.repeats} timed search(es) per variant{', alternated,' if args.compare else ''} averaged. Exclusive "
        f"seconds per phase and their share of the wall time (`benchmarks/overhead.py"
        f"{' --compare' if args.compare else ''} --repeats {args.repeats}`, `make bench-overhead`).",
        "",
        *table(runs),
    ]
    write("overhead.md", lines)


if __name__ == "__main__":
    main()
