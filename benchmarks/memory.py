"""Memory over a long search: resident set size after every trial of a GRS run of at least 200 trials.

A search that leaks (models, compiled programs, optimizer state, trial objects) grows with every trial; this one
should stay flat after the warm-up (the first compiled programs, the first checkpoints). Target: from trial 50 on,
RSS within 5% of RSS at trial 50.

Run: .venv/bin/python benchmarks/memory.py [--model nn1_scaled] [--trials 400] [--evaluator batched]
     (writes benchmarks/results/memory.md)
     .venv/bin/python benchmarks/memory.py --trials 300 --trace 50 300
     (what grows between two trials: Python allocations by line and live objects by type; several times slower,
     and tracemalloc's records inflate RSS, so it writes benchmarks/results/memory_trace.md)
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from common import calcium_splits, machine, pretrained, write

import keras_grs

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * PAGE / 2**20


def object_counts() -> collections.Counter:
    """Live Python objects tracked by the garbage collector, by type name (after a full collection)."""
    gc.collect()
    return collections.Counter(type(o).__name__ for o in gc.get_objects())


class Recording(keras_grs.GRSTuner):
    """A GRSTuner that notes the process's RSS after every trial, and with ``trace`` a snapshot of Python's
    allocations and live objects at two trials, to diff."""

    samples: list
    trace: tuple = ()  # (first trial, second trial) to snapshot
    snapshots: dict

    def on_trial_end(self, trial):
        super().on_trial_end(trial)
        self.samples.append((len(self.samples) + 1, time.perf_counter(), rss_mib()))
        if len(self.samples) in self.trace:
            self.snapshots[len(self.samples)] = (tracemalloc.take_snapshot(), object_counts(), rss_mib())


def trace_lines(snapshots, first, second) -> list[str]:
    """What grew between two trials: Python allocations by source line and live objects by type."""
    (snap_a, count_a, rss_a), (snap_b, count_b, rss_b) = snapshots[first], snapshots[second]
    diff = snap_b.compare_to(snap_a, "lineno")
    python_growth = sum(d.size_diff for d in diff) / 2**20
    lines = [
        "",
        f"## What grows between trials {first} and {second}",
        "",
        f"RSS {rss_a:.0f} -> {rss_b:.0f} MiB ({rss_b - rss_a:+.0f} MiB); memory allocated by Python code "
        f"(tracemalloc, started before the search) {python_growth:+.2f} MiB.",
        "",
        "| Python allocation site | growth KiB | blocks |",
        "|---|---|---|",
    ]
    for d in sorted(diff, key=lambda d: -d.size_diff)[:8]:
        frame = d.traceback[0]
        where = f"{Path(frame.filename).parent.name}/{Path(frame.filename).name}:{frame.lineno}"
        lines.append(f"| {where} | {d.size_diff / 1024:+.1f} | {d.count_diff:+d} |")
    lines += ["", "| live objects (gc) | at " + str(first) + " | at " + str(second) + " | change |", "|---|---|---|---|"]
    changes = sorted(set(count_a) | set(count_b), key=lambda t: -abs(count_b[t] - count_a[t]))[:8]
    for name in changes:
        lines.append(f"| {name} | {count_a[name]} | {count_b[name]} | {count_b[name] - count_a[name]:+d} |")
    total_a, total_b = sum(count_a.values()), sum(count_b.values())
    lines.append(f"| (all) | {total_a} | {total_b} | {total_b - total_a:+d} |")
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="nn1_scaled")
    parser.add_argument("--trials", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=50, help="trials before the reference RSS")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--evaluator", default="batched", choices=["batched", "keras"])
    parser.add_argument("--trace", type=int, nargs=2, metavar=("FIRST", "SECOND"), default=None,
                        help="diff Python allocations and live objects between these two trials (slower)")
    args = parser.parse_args()
    data = calcium_splits(args.model, seed=0, n_frames=args.frames)
    model = pretrained(args.model, data[0], 5, seed=0)
    start_rss = rss_mib()
    with tempfile.TemporaryDirectory() as directory:
        # a tolerance every candidate meets, so that the search runs all its trials
        tuner = Recording.from_model(model, train_first=False, tolerance=0.01, seed=0, evaluator=args.evaluator,
                                     acceptance="seed", max_trials=args.trials, directory=directory)
        tuner.samples, tuner.snapshots = [], {}
        if args.trace:
            tuner.trace = tuple(args.trace)
            tracemalloc.start()
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
        f"(**{growth:+.1f}%**, target within 5%); at the end: {final:.0f} MiB. Process peak (ru_maxrss): "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB. Trials per second: "
        f"{len(samples) / (samples[-1][1] - samples[0][1]):.2f}.",
    ]
    if args.trace:
        lines += trace_lines(tuner.snapshots, *args.trace)
    # tracemalloc's own records inflate RSS: a traced run is kept apart from the plain measurement
    write("memory_trace.md" if args.trace else "memory.md", lines)


if __name__ == "__main__":
    main()
