"""Walk-back rules compared on the same searches: which step of each accepted path a rule keeps, and what that
step loses on the test split.

Reads the per-step records that ``unseen_accuracy.py --store results/unseen_accuracy_paths.json`` writes for guard
runs (every accepted step's search-validation, guard and test accuracy, and which guard samples it gets right), and
the seed rule's runs from ``results/unseen_accuracy.json`` for the params ratio.

    python benchmarks/guard_rules.py [--paths results/unseen_accuracy_paths.json] [--tolerance 0.98]
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
from common import RESULTS, write

from keras_grs.search.engine import beyond_guard_noise, walk_back_index
from keras_grs.search.engine import monotone_decreasing as monotone


def _right(step) -> np.ndarray:
    return np.frombuffer(step["guard_right"].encode(), np.uint8).astype(int) - ord("0")


def last_passing(steps, passes) -> int:
    """The last step (from the end) that passes; the initial structure when none does."""
    for index in range(len(steps) - 1, 0, -1):
        if passes(index):
            return index
    return 0


def before_first_failing(steps, passes) -> int:
    for index in range(1, len(steps)):
        if not passes(index):
            return index - 1
    return len(steps) - 1


def rules(tolerance, probabilities=False):
    """name -> function(steps) -> kept index (with ``probabilities``, the rules that read ``guard_p`` too)."""
    def plain(steps, fitted=False, slack=lambda steps: 0.0):
        values = [s["guard"] for s in steps]
        values = monotone(values) if fitted else values
        bound = tolerance * values[0] - slack(steps)
        return last_passing(steps, lambda i: values[i] >= bound)

    def samples(k):
        return lambda steps: k / len(steps[0]["guard_right"])

    def unpaired(z):
        def slack(steps):
            n = len(steps[0]["guard_right"])
            p = (steps[0]["guard"] * n + 1) / (n + 2)
            return z * math.sqrt(p * (1 - p) / n)
        return slack

    def paired(z, walk=last_passing, fitted=False):
        def keep(steps):
            reference = _right(steps[0])
            n = len(reference)
            shortfalls = [np.mean(reference - _right(s)) for s in steps]
            errors = [np.std(reference - _right(s), ddof=1) / math.sqrt(n) if n > 1 else 0.0 for s in steps]
            if fitted:  # the shortfall only grows along the path
                shortfalls = [-v for v in monotone([-v for v in shortfalls])]
            allowed = (1 - tolerance) * steps[0]["guard"]
            return walk(steps, lambda i: shortfalls[i] - allowed <= z * errors[i])
        return keep

    def nested(z):
        """What keras-grs does (:func:`keras_grs.search.engine.beyond_guard_noise`): the paired test from the two
        scores alone, its standard error at its smallest."""
        def keep(steps):
            n = len(steps[0]["guard_right"])
            values = monotone([s["guard"] for s in steps])
            return last_passing(steps, lambda i: not beyond_guard_noise(values[i], values[0], tolerance, n, z))
        return keep

    def soft(z, when="always", also_hard=False):
        """A paired test on the probability each step gives every guard sample's true class (a continuous
        accuracy: its resolution is not one sample) instead of right/wrong; ``when="coarse"``: only where one
        guard sample is worth more than the tolerance, else the paired right/wrong test."""
        hard = paired(1.0)

        def keep(steps):
            n = len(steps[0]["guard_right"])
            if "guard_p" not in steps[0] or (when == "coarse" and 1 / n <= 1 - tolerance):
                return hard(steps)
            reference = np.asarray(steps[0]["guard_p"])
            allowed = (1 - tolerance) * reference.mean()

            def passes(i):
                d = reference - np.asarray(steps[i]["guard_p"])
                ok = d.mean() - allowed <= z * d.std(ddof=1) / math.sqrt(n)
                if also_hard:
                    right = _right(steps[0]) - _right(steps[i])
                    ok = ok and right.mean() - (1 - tolerance) * steps[0]["guard"] <= right.std(ddof=1) / math.sqrt(n)
                return ok
            return last_passing(steps, passes)
        return keep

    table = {
        "keras-grs (monotone, beyond 1 s.e. at its smallest)": lambda steps: walk_back_index(
            [s["guard"] for s in steps], tolerance, "max", len(steps[0]["guard_right"])),
        "no walk back": lambda steps: len(steps) - 1,
        "guard within T": lambda steps: plain(steps),
        "guard within T, monotone (current)": lambda steps: plain(steps, fitted=True),
        "monotone, 1 guard sample slack": lambda steps: plain(steps, True, samples(1)),
    }
    for z in (0.5, 1.0, 1.645):
        table[f"monotone, unpaired z={z}"] = lambda steps, z=z: plain(steps, True, unpaired(z))
    for z in (1.0, 1.645, 2.0):
        table[f"nested z={z}, monotone"] = nested(z)
    for z in (0.5, 1.0, 1.645):
        table[f"paired z={z}"] = paired(z)
        table[f"paired z={z}, monotone"] = paired(z, fitted=True)
        table[f"paired z={z}, first failing"] = paired(z, walk=before_first_failing)
    for z in (0.0, 1.0) if probabilities else ():
        table[f"soft paired z={z}"] = soft(z)
        table[f"soft paired z={z}, coarse guards only"] = soft(z, "coarse")
        table[f"soft paired z={z} and paired right/wrong"] = soft(z, also_hard=True)
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--paths", nargs="+", default=[str(RESULTS / "unseen_accuracy_paths.json"),
                                                         str(RESULTS / "unseen_accuracy.json")])
    parser.add_argument("--seed-runs", default=str(RESULTS / "unseen_accuracy.json"))
    parser.add_argument("--tolerance", type=float, default=0.98)
    parser.add_argument("--out", default="guard_rules.md", help="the table's file in results/")
    parser.add_argument("--only", help="only the runs whose walk-back tag contains this (e.g. 'margin 0.5')")
    args = parser.parse_args()
    runs = [r for path in args.paths for r in json.load(open(path))
            if r.get("steps") and r["tolerance"] == args.tolerance and (args.only or "") in r.get("walk_back", "")]
    seed_runs = {(r["dataset"], r["seed"]): r for r in json.load(open(args.seed_runs)) if r["rule"] == "seed"}
    # losses are whole test samples: a bound is met up to float rounding
    bound_mean, bound_single = 100 * (1 - args.tolerance) + 1 + 1e-9, 100 * (1 - args.tolerance) + 3 + 1e-9
    lines = [
        "# Walk-back rules on the same searches",
        "",
        f"`python benchmarks/guard_rules.py`: the guard runs that recorded their path in "
        f"{', '.join(p.split('/')[-1] for p in args.paths)} (JGRS, T = "
        f"{args.tolerance}); each rule picks a step of the same accepted paths. Loss in test points against the "
        f"plainly trained initial model; params against the seed rule's runs on the same splits. Verdict: mean <= "
        f"{bound_mean:.0f}, worst <= {bound_single:.0f}, params <= 1.5x (against the seed rule's runs present: seeds "
        "without one count in the loss, not in the ratio). Rule `keras-grs` is the walk back keras-grs does.",
        "",
        "| rule | data set | runs | loss mean | max | params vs seed rule | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, keep in rules(args.tolerance, any("guard_p" in r["steps"][0] for r in runs)).items():
        for dataset in dict.fromkeys(r["dataset"] for r in runs):
            rows = [r for r in runs if r["dataset"] == dataset]
            losses, kept, seed_kept = [], [], []
            for r in rows:
                step = r["steps"][keep(r["steps"])]
                losses.append(100 * (r["reference_test"] - step["test"]))
                kept.append(step["params"])
                seed = seed_runs.get((dataset, r["seed"]))
                seed_kept.append(seed["params"] if seed else np.nan)
            ratio = np.nanmean(kept) / np.nanmean(seed_kept)
            ok = np.mean(losses) <= bound_mean and max(losses) <= bound_single and ratio <= 1.5
            lines.append(f"| {name} | {dataset} | {len(rows)} | {np.mean(losses):.2f} | {max(losses):.2f} | "
                         f"{ratio:.2f}x | {'met' if ok else 'missed'} |")
    lines += indistinguishable(runs, seed_runs, bound_single)
    write(args.out, lines)


def indistinguishable(runs, seed_runs, bound) -> list[str]:
    """What the splits can see: the accepted steps whose search-validation and guard scores are both at least the
    initial structure's (no rule that reads those splits can prefer the initial structure to them), within the params
    budget (1.5x the seed rule's structure on the same splits), and how many of them lose more than ``bound`` test
    points anyway. If a rule picked among such steps without further evidence, all of ``runs`` runs would stay within
    the bound with probability (1 - share) ** runs."""
    lines = ["", "## What the splits can see", "",
             "Accepted steps scoring at least the initial structure on both the searched validation split and the "
             "guard, with at most 1.5x the seed rule's parameters on the same splits: nothing these splits show "
             f"separates them from the initial model. Of those, the ones losing more than {bound:.0f} test points; "
             "`P(all runs within)`: the chance that every run stays within the bound when each keeps one such step.",
             "", "| data set | runs | steps | losing > bound | share | P(all runs within) | their params |",
             "|---|---|---|---|---|---|---|"]
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        rows = [r for r in runs if r["dataset"] == dataset]
        steps, bad = 0, []
        for r in rows:
            first, seed = r["steps"][0], seed_runs.get((dataset, r["seed"]))
            budget = 1.5 * seed["params"] if seed else math.inf
            for step in r["steps"][1:]:
                if step["val"] >= first["val"] and step["guard"] >= first["guard"] and step["params"] <= budget:
                    steps += 1
                    if 100 * (r["reference_test"] - step["test"]) > bound:
                        bad.append(step["params"])
        share = len(bad) / steps if steps else None
        chance = "-" if share is None else f"{(1 - share) ** len(rows):.0%}"
        params = f"{min(bad):,}-{max(bad):,}" if bad else "-"
        lines.append(f"| {dataset} | {len(rows)} | {steps} | {len(bad)} | "
                     f"{'-' if share is None else f'{share:.0%}'} | {chance} | {params} |")
    return lines


if __name__ == "__main__":
    main()
