"""Memory over a long search: resident set size after every trial of a GRS run of at least 200 trials.

A search that leaks (models, compiled programs, optimizer state, trial objects) grows with every trial; this one
should stay flat after the warm-up (the first compiled programs, the first checkpoints). Target: RSS at the end
within 10% of RSS after warm-up.

Run: .venv/bin/python benchmarks/memory.py [--model nn1_scaled] [--trials 240] [--evaluator batched]
     (writes benchmarks/results/memory.md)
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from common import calcium_splits, machine, pretrained, write

import keras_grs

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE / 2**20


class Recording(keras_grs.GRSTuner):
    """A GRSTuner that notes the process's RSS after every trial."""

    samples: list

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self.samples.append((len(self.samples) + 1, time.perf_counter(), rss_mib()))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="nn1_scaled")
    parser.add_argument("--trials", type=int, default=240)
    parser.add_argument("--warmup", type=int, default=30, help="trials before the reference RSS")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--evaluator", default="batched", choices=["batched", "keras"])
    args = parser.parse_args()
    data = calcium_splits(args.model, seed=0, n_frames=args.frames)
    model = pretrained(args.model, data[0], 5, seed=0)
    start_rss = rss_mib()
    with tempfile.TemporaryDirectory() as directory:
        # a tolerance every candidate meets, so that the search runs all its trials
        tuner = Recording.from_model(model, train_first=False, tolerance=0.01, seed=0, evaluator=args.evaluator,
                                     acceptance="seed", max_trials=args.trials, directory=directory)
        tuner.samples = []
        tuner.search(*data[0], validation_data=data[1], epochs=args.epochs, batch_size=32, verbose=0,
                     progress=False)
        samples = tuner.samples
    if len(samples) < args.trials:
        raise SystemExit(f"the search stopped after {len(samples)} trials; use a larger model")
    warm = samples[args.warmup - 1][2]
    final = samples[-1][2]
    peak_after = max(s[2] for s in samples[args.warmup - 1:])
    growth = 100 * (peak_after / warm - 1)
    lines = [
        "# Memory over a long search",
        "",
        f"Machine: {machine()}.",
        "",
        f"GRS on {args.model} (simulated calcium data, {args.frames} frames), {args.evaluator} evaluator, "
        f"{args.epochs} fine-tuning epoch(s) per candidate, {len(samples)} trials in one process; resident set size "
        f"sampled after every trial. One run of `benchmarks/memory.py` (`make bench-memory`).",
        "",
        "| after trial | RSS MiB |",
        "|---|---|",
        f"| (before the search) | {start_rss:.0f} |",
    ]
    marks = sorted({1, 10, args.warmup, *range(50, len(samples) + 1, 50), len(samples)})
    for number, _, rss in samples:
        if number in marks:
            lines.append(f"| {number} | {rss:.0f} |")
    lines += [
        "",
        f"After warm-up (trial {args.warmup}): {warm:.0f} MiB; highest after that: {peak_after:.0f} MiB "
        f"(**{growth:+.1f}%**, target within 10%); at the end: {final:.0f} MiB. Process peak (ru_maxrss): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB. Trials per second: "
        f"{len(samples) / (samples[-1][1] - samples[0][1]):.2f}.",
    ]
    write("memory.md", lines)


if __name__ == "__main__":
    main()
