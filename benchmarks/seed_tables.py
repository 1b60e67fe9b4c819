"""The seed's tables on simulated data: GRS vs RRS and GRS vs NWM (AL, FCI, PCI differences), GRS+TQ, JGRS vs GRS.

For every model, simulated dataset and trial, one model is pretrained and pruned by GRS, RRS and NWM with the
same search seed (so the methods start from the same weights); the compact GRS model then goes through TQ. The
differences GRS - RRS and GRS - NWM of AL (test accuracy loss, points), FCI and PCI (FLOP and parameter count
improvement, percent) are summarized min/max/avg per model, as in the seed's tables, next to the seed's figures
(its recordings and GPU, not this data: the simulator is easier to decode, so compression is higher here).
JGRS vs GRS compares time and compression on the scaled models.

With ``--baselines``, every GRS run also gets the baselines reviewers ask for, on the same data and pretrained
model: GRS's widths trained from scratch (Liu et al., ICLR 2019), every width scaled by one factor to GRS's FLOPs
and trained from scratch, and one-shot L1 channel pruning of the pretrained model to those same uniform widths,
fine-tuned. Every comparison gets its number of pairs, a paired bootstrap 95% interval of the mean difference and a
Wilcoxon signed-rank p-value (benchmarks/stats.py; benchmarks/README.md says how to read them).

Every finished search is stored in benchmarks/results/seed_tables_realistic.json (the default, realistic simulator)
or seed_tables.json (``--difficulty easy``: the first simulator, the committed tables); running again with the
same settings continues where a run stopped: a search cut short (a killed sitting) continues from its last trial, kept
in benchmarks/.work/seed_tables/ until its result is stored. The seed's acceptance rule is used throughout.

Run: .venv/bin/python benchmarks/seed_tables.py [--models nn1 nn2 cnn1 cnn2] [--datasets 2] [--trials 2]
     [--epochs 100] [--scaled nn2_scaled] [--difficulty realistic|easy] [--baselines]
     (writes the .md beside the store; --render-only re-renders it from the store without training)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections import Counter

import keras
import numpy as np
from common import (RESULTS, Run, accuracy_loss, calcium_splits, fit_best, improvement, machine, pretrained, search,
                    stats, write)
from stats import compare

from keras_grs import analyze, count_flops, count_params, eup
from keras_grs.evaluate import unit_norms
from keras_grs.scoring import accuracy
from keras_grs.surgery import resized, shrink

# REFERENCE.md, "The seed's headline figures"
SEED = {
    "params kept": {"nn1": 37.24, "nn2": 57.01, "cnn1": 22.59, "cnn2": 31.42},
    "AL": {"nn1": 1.03, "nn2": 0.62, "cnn1": 0.98, "cnn2": 1.5},
    "TQ nonzero kept": {"nn1": 5.72, "nn2": 2.97, "cnn1": 5.37, "cnn2": 15.69},
    "FCI vs RRS": {"nn1": 41.45, "nn2": 2.39, "cnn1": 62.92, "cnn2": 56.87},
    "FCI vs NWM": {"nn1": 24.18, "nn2": 3.03, "cnn1": 21.91, "cnn2": 34.54},
    "time": {"nn1": 922.9, "nn2": 115.7, "cnn1": 5933.6, "cnn2": 2329.1},
}
def store_name(difficulty: str) -> str:
    """One store per simulator: the committed ``seed_tables.json`` holds runs on the easy (first) simulator."""
    return "seed_tables" if difficulty == "easy" else f"seed_tables_{difficulty}"
ORDER = {"nn1": 0, "nn2": 1, "cnn1": 2, "cnn2": 3}
WORK = RESULTS.parent / ".work" / "seed_tables"  # searches in progress, one directory each

# the baselines of issue 16 (what each isolates is in benchmarks/README.md)
BASELINES = {
    "scratch": "GRS's widths trained from scratch",
    "uniform": "uniform width scaling to GRS's FLOPs, trained from scratch",
    "l1": "one-shot L1 channel pruning to GRS's FLOPs (the uniform widths), fine-tuned",
}


def figures(run) -> dict:
    return {"seconds": run.seconds, "trials": run.trials, "finished": run.finished, "structure": run.structure,
            "params": run.params, "flops": run.flops, "test": run.test, "initial_params": run.initial_params,
            "initial_flops": run.initial_flops, "initial_test": run.initial_test, "al": run.al, "fci": run.fci,
            "pci": run.pci}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="+", default=["nn1", "nn2", "cnn1", "cnn2"])
    parser.add_argument("--datasets", type=int, default=2, help="simulated datasets (seeds 0..N-1)")
    parser.add_argument("--trials", type=int, default=2, help="trials per dataset (pretraining and search seeds)")
    parser.add_argument("--epochs", type=int, default=100, help="fine-tuning epochs per candidate (seed: 100)")
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--scaled", nargs="*", default=["nn2_scaled"], help="models for JGRS vs GRS")
    parser.add_argument("--max-trials", type=int, help="safety cap per search (capped runs are marked)")
    parser.add_argument("--difficulty", default="realistic", help="the calcium simulator (realistic or easy)")
    parser.add_argument("--baselines", action="store_true",
                        help="also train the baselines (scratch, uniform, l1) of every GRS run of the MLPs and CNNs")
    parser.add_argument("--render-only", action="store_true", help="re-render the tables from the store, no training")
    args = parser.parse_args()
    store_path = RESULTS / f"{store_name(args.difficulty)}.json"
    settings = {"frames": args.frames, "pretrain_epochs": args.pretrain_epochs, "max_trials": args.max_trials}
    store = json.loads(store_path.read_text()) if store_path.exists() else {}
    if args.render_only:
        if not store:
            parser.error(f"--render-only needs a store, and {store_path} does not exist")
        args.frames, args.pretrain_epochs = store["settings"]["frames"], store["settings"]["pretrain_epochs"]
    elif store.get("settings") != settings:
        store = {"settings": settings, "runs": {}}
        shutil.rmtree(WORK / store_name(args.difficulty), ignore_errors=True)  # searches under other settings
    runs = store["runs"]

    def save():
        RESULTS.mkdir(exist_ok=True)
        store_path.with_suffix(".tmp").write_text(json.dumps(store, indent=1))
        os.replace(store_path.with_suffix(".tmp"), store_path)

    cases = [(name, d, t) for name in args.models for d in range(args.datasets) for t in range(args.trials)]
    cases += [(name, 0, 0) for name in args.scaled]
    for name, d, t in [] if args.render_only else cases:
        scaled = name.endswith("_scaled")
        methods = ("grs", "jgrs") if scaled else ("grs", "rrs", "nwm")
        keys = {m: f"{name}/e{args.epochs}/d{d}/t{t}/{m}" for m in methods}
        extra = {b: f"{name}/e{args.epochs}/d{d}/t{t}/{b}" for b in BASELINES} if args.baselines and not scaled else {}
        if all(k in runs for k in [*keys.values(), *extra.values()]):
            continue
        data = calcium_splits(name, seed=d, n_frames=args.frames, difficulty=args.difficulty)
        model = pretrained(name, data[0], args.pretrain_epochs, seed=1000 * d + t)
        for method, key in keys.items():
            if key in runs:
                continue
            work = WORK / store_name(args.difficulty) / key.replace("/", "-")
            run = search(model, data, method=method, epochs=args.epochs, seed=t, max_trials=args.max_trials,
                         directory=work)
            result = figures(run)
            if method == "grs" and not name.endswith("_scaled"):
                started = time.perf_counter()
                tq_model, _ = eup.tq(run.compact, data[1])
                result["tq_nonzero"] = count_params(tq_model, nonzero=True)
                result["tq_seconds"] = time.perf_counter() - started
                # recorded since the statistics were added: the TQ model's own AL and FCI
                result["tq_nonzero_flops"] = count_flops(tq_model, nonzero=True)
                result["tq_test"] = accuracy(tq_model, *data[2])
            if run.sittings > 1:  # its seconds include each sitting's warm-up and the trial a kill cut short
                result["sittings"] = run.sittings
            runs[key] = result
            save()
            shutil.rmtree(work)
            print(f"{key}: {run.seconds:.1f} s, {run.trials} trials, {run.structure}, PCI {run.pci:.1f}%, "
                  f"AL {run.al:+.2f}", flush=True)
        missing = [b for b, key in extra.items() if key not in runs]
        if missing:
            reference = runs[keys["grs"]]
            if abs(accuracy(model, *data[2]) - reference["initial_test"]) > 1e-9:
                print(f"warning: the pretrained {name} d{d} t{t} does not reproduce the stored test accuracy "
                      f"{reference['initial_test']:.4f}; its baselines start from a different model", flush=True)
            for kind, result in baselines(model, data, reference["structure"], reference["flops"], missing,
                                          fine_tune_epochs=args.epochs, train_epochs=args.pretrain_epochs,
                                          seed=1000 * d + t).items():
                runs[extra[kind]] = result
                save()
                print(f"{extra[kind]}: {result['structure']}, PCI {result['pci']:.1f}%, AL {result['al']:+.2f}",
                      flush=True)
    write(f"{store_name(args.difficulty)}.md", table(args, runs))


def uniform_widths(model: keras.Model, target_flops: int) -> dict[str, int]:
    """The widths of ``model`` all scaled by one factor (rounded, at least each group's minimum) whose FLOPs come
    closest to ``target_flops``."""
    structure = analyze(model)
    cache = {}

    def widths(scale):
        return {g.name: max(g.min_width, round(scale * g.width)) for g in structure.groups}

    def flops(scale):
        key = tuple(widths(scale).values())
        if key not in cache:
            cache[key] = count_flops(resized(model, widths(scale), structure))
        return cache[key]

    low, high = 0.0, 1.0
    for _ in range(30):  # FLOPs never decrease as the scale grows, so bisect on the scale
        middle = (low + high) / 2
        low, high = (middle, high) if flops(middle) <= target_flops else (low, middle)
    return widths(min((low, high), key=lambda scale: abs(flops(scale) - target_flops)))


def baselines(model: keras.Model, data, structure: str, flops: int, kinds, *, fine_tune_epochs: int,
              train_epochs: int, seed: int) -> dict[str, dict]:
    """Train the baselines ``kinds`` (keys of BASELINES) against one GRS result (its ``structure`` string, e.g.
    ``8x1x1``, and its FLOPs), on the GRS run's data and pretrained ``model`` (never changed).

    From scratch (scratch, uniform): fresh weights, ``train_epochs`` (the initial model's training; Liu et al.'s
    "Scratch-E"). l1: the pretrained model's units with the largest L1 norm of incoming weights kept in every
    group at the uniform widths, in one shot, then ``fine_tune_epochs`` (one candidate's fine-tuning in the
    search). All keep their best validation epoch, as the search does for every candidate."""
    train, validation, test = data
    groups = analyze(model)
    found = [int(w) for w in structure.split("x")]
    if len(found) != len(groups.names):
        raise ValueError(f"structure {structure!r} has {len(found)} widths; the model has groups {groups.names}")
    uniform = uniform_widths(model, flops)
    norms = unit_norms(model)
    build = {
        "scratch": lambda: resized(model, dict(zip(groups.names, found)), groups),
        "uniform": lambda: resized(model, uniform, groups),
        "l1": lambda: shrink(model, {name: np.argsort(norms[name], kind="stable")[: groups.group(name).width - w]
                                     for name, w in uniform.items()}, groups),
    }
    initial = (count_params(model), count_flops(model), accuracy(model, *test))
    results = {}
    for kind in kinds:
        if kind == "uniform" and "scratch" in results and tuple(uniform.values()) == tuple(found):
            results[kind] = results["scratch"]  # one group (nn2), or GRS kept a uniform shape: the same network
            continue
        started = time.perf_counter()
        keras.utils.set_random_seed(seed)
        epochs = fine_tune_epochs if kind == "l1" else train_epochs
        compact = fit_best(build[kind](), train, validation, epochs)
        run = Run(kind, "fit", time.perf_counter() - started, 1, True, *initial, str(analyze(compact)),
                  count_params(compact), count_flops(compact), accuracy(compact, *test), compact)
        results[kind] = {**figures(run), "epochs": epochs, "from": "pretrained" if kind == "l1" else "scratch"}
    return results


def tq_figures(grs: dict) -> dict:
    """GRS+TQ's AL, FCI and PCI (non-zero weights) from a GRS record; None where the record predates them."""
    return {"al": accuracy_loss(grs["initial_test"], grs["tq_test"]) if "tq_test" in grs else None,
            "fci": improvement(grs["initial_flops"], grs["tq_nonzero_flops"]) if "tq_nonzero_flops" in grs else None,
            "pci": improvement(grs["initial_params"], grs["tq_nonzero"]) if "tq_nonzero" in grs else None}


def table(args, runs) -> list[str]:
    """The tables of every model and epoch count in the store (several invocations may have filled it)."""
    groups = sorted({tuple(k.split("/")[:2]) for k in runs}, key=lambda g: (g[0].endswith("_scaled"), ORDER.get(g[0].removesuffix("_scaled"), 9), g))
    plain = [g for g in groups if not g[0].endswith("_scaled")]

    def of(group, method):
        return [r for k, r in runs.items() if tuple(k.split("/")[:2]) == group and k.endswith(f"/{method}")]

    def pairs(group, other, first="grs"):
        """(first, other) records of the same dataset and trial."""
        return [(runs[k], runs[k.rsplit("/", 1)[0] + f"/{other}"]) for k in runs
                if tuple(k.split("/")[:2]) == group and k.endswith(f"/{first}")
                and k.rsplit("/", 1)[0] + f"/{other}" in runs]

    def setting(group):
        cases = {tuple(k.split("/")[2:4]) for k in runs if tuple(k.split("/")[:2]) == group}
        per_dataset = Counter(c[0] for c in cases)
        shape = f"{len(per_dataset)}x{max(per_dataset.values(), default=0)}"
        if len(set(per_dataset.values())) > 1:  # an unfinished grid: say how many runs it has so far
            shape += f" ({len(cases)} runs)"
        return f"{group[0]}", f"{group[1][1:]}", shape

    capped = sum(not r["finished"] for r in runs.values())
    lines = [
        "# The seed's tables on simulated data",
        "",
        f"Machine: {machine()}.",
        "",
        f"Simulated calcium data ({args.frames} frames, 140 neurons; 12x12 images for the CNNs); per model, "
        "datasets x trials as in the tables and the fine-tuning epochs per candidate in the `epochs` column (the "
        f"seed: 100); batch 32, tolerance 0.985, batched evaluator; each model pretrained {args.pretrain_epochs} "
        "epochs, then pruned by every method with the same seed. "
        f"Searches stopped by the --max-trials cap: {capped}. Written by `benchmarks/seed_tables.py` "
        "(`make bench-tables`) from every search in `seed_tables.json`, which may come from several invocations "
        "(one per epoch setting). Seed figures: their recordings, a GTX 1080 GPU.",
        "",
        "## GRS",
        "",
        "| model | epochs | datasets x trials | params kept % (avg) | seed | AL points (avg) | seed | "
        "GRS+TQ nonzero kept % (avg) | seed | GRS time s (avg) | seed (GPU, 100 epochs) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in plain:
        name = group[0]
        grs = of(group, "grs")
        if not grs:
            continue
        kept = stats(100 * r["params"] / r["initial_params"] for r in grs)[2]
        al = stats(r["al"] for r in grs)[2]
        tq = stats(100 * r["tq_nonzero"] / r["initial_params"] for r in grs if "tq_nonzero" in r)[2]
        seconds = stats(r["seconds"] for r in grs)[2]
        lines.append(f"| {' | '.join(setting(group))} | {kept:.2f} | {SEED['params kept'][name]} | {al:.2f} | "
                     f"{SEED['AL'][name]} | {tq:.2f} | {SEED['TQ nonzero kept'][name]} | {seconds:.1f} | "
                     f"{SEED['time'][name]} |")
    for other in ("rrs", "nwm"):
        lines += [
            "",
            f"## GRS vs {other.upper()}: differences GRS - {other.upper()} on the same dataset and trial",
            "",
            "AL in points (negative: GRS loses less accuracy); FCI and PCI in percent (positive: GRS compresses "
            "more).",
            "",
            "| model | epochs | pairs | AL min | AL max | AL avg | FCI min | FCI max | FCI avg | seed FCI avg | "
            "PCI min | PCI max | PCI avg |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for group in plain:
            name = group[0]
            both = pairs(group, other)
            if not both:
                continue
            cells = []
            for metric in ("al", "fci", "pci"):
                cells += [f"{v:+.2f}" for v in stats(a[metric] - b[metric] for a, b in both)]
            cells.insert(6, f"{SEED[f'FCI vs {other.upper()}'][name]:+.2f}")
            lines.append(f"| {name} | {group[1][1:]} | {len(both)} | " + " | ".join(cells) + " |")
    scaled = [(group, runs.get(f"{'/'.join(group)}/d0/t0/grs"), runs.get(f"{'/'.join(group)}/d0/t0/jgrs"))
              for group in groups if group[0].endswith("_scaled")]
    scaled = [s for s in scaled if s[1] and s[2]]
    if scaled:
        lines += [
            "",
            "## JGRS vs GRS on the scaled models",
            "",
            "Seed: JGRS 2-8x faster than GRS on average (up to 23x) at similar accuracy loss; JGRS kept 1.2-5.2% of "
            "the parameters on the scaled models.",
            "",
            "| model | epochs | GRS s | GRS trials | GRS params kept % | GRS AL | JGRS s | JGRS trials | "
            "JGRS params kept % | JGRS AL | JGRS speed-up |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for group, grs, jgrs in scaled:
            lines.append(
                f"| {group[0]} | {group[1][1:]} | {grs['seconds']:.1f} | {grs['trials']} | {100 * grs['params'] / grs['initial_params']:.2f}"
                f" | {grs['al']:+.2f} | {jgrs['seconds']:.1f} | {jgrs['trials']} | "
                f"{100 * jgrs['params'] / jgrs['initial_params']:.2f} | {jgrs['al']:+.2f} | "
                f"**{grs['seconds'] / jgrs['seconds']:.1f}x** |")
    lines += baseline_lines(plain, of, pairs)
    lines += statistics_lines(groups, pairs)
    return lines


def baseline_lines(plain, of, pairs) -> list[str]:
    """What each baseline kept and lost, next to GRS on the same pairs."""
    rows = []
    for group in plain:
        for kind in BASELINES:
            both = pairs(group, kind)
            if not both:
                continue
            mine = [b for _, b in both]
            structures = sorted({b["structure"] for b in mine}, key=lambda x: [int(w) for w in x.split("x")])
            kept = stats(100 * b["params"] / b["initial_params"] for b in mine)[2]
            grs_kept = stats(100 * a["params"] / a["initial_params"] for a, _ in both)[2]
            rows.append(f"| {group[0]} | {group[1][1:]} | {kind} | {mine[0]['epochs']} | {len(both)} | "
                        f"{', '.join(structures[:4])}{', ...' if len(structures) > 4 else ''} | {kept:.2f} | "
                        f"{stats(b['al'] for b in mine)[2]:.2f} | {grs_kept:.2f} | "
                        f"{stats(a['al'] for a, _ in both)[2]:.2f} |")
    if not rows:
        return []
    return [
        "",
        "## Baselines on GRS's pairs",
        "",
        "Per GRS run, on its data and pretrained model (`--baselines`): "
        + "; ".join(f"**{kind}**: {what}" for kind, what in BASELINES.items())
        + ". From scratch: the initial model's training epochs (Liu et al.'s Scratch-E, not the search's total "
        "fine-tuning); l1: one candidate's fine-tuning epochs (the `epochs` column of the search). The best "
        "validation epoch is kept, as in the search. `its epochs` is the baseline's training.",
        "",
        "| model | search epochs | baseline | its epochs | pairs | baseline structures | params kept % (avg) | "
        "AL points (avg) | GRS params kept % (avg) | GRS AL points (avg) |",
        "|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


def statistics_lines(groups, pairs) -> list[str]:
    """Every comparison the tables make, with its pairs, mean difference, bootstrap interval and p-value."""
    comparisons = [("GRS - RRS", "grs", "rrs", None), ("GRS - NWM", "grs", "nwm", None),
                   ("GRS+TQ - GRS", "grs", "grs", tq_figures),
                   *[(f"GRS - {kind}", "grs", kind, None) for kind in BASELINES], ("JGRS - GRS", "jgrs", "grs", None)]
    rows = []
    for label, first, second, view in comparisons:
        for group in groups:
            both = pairs(group, second, first=first)
            if view:  # runs without the view's figures (no TQ on the scaled models) are not pairs of it
                both = [(x, y) for x, y in both if any(v is not None for v in view(x).values())]
            if not both:
                continue
            cells = []
            for metric in ("al", "fci", "pci"):
                a = [(view(x) if view else x)[metric] for x, _ in both]
                cells += ["-", "not recorded", "-"] if None in a else compare(a, [y[metric] for _, y in both]).cells()
            rows.append(f"| {label} | {group[0]} | {group[1][1:]} | {len(both)} | " + " | ".join(cells) + " |")
    return [
        "",
        "## Statistics of every comparison",
        "",
        "Paired differences (first - second) on the same model, dataset and trial: their number, mean, a paired "
        "bootstrap 95% interval of the mean (10000 resamples) and the two-sided Wilcoxon signed-rank p-value. AL "
        "in points (negative: the first loses less accuracy), FCI and PCI in percent (positive: the first "
        "compresses more); GRS+TQ counts non-zero weights. With one pair there is no interval or p; with five "
        "pairs or fewer the Wilcoxon p cannot go below 0.06. How to read them: benchmarks/README.md.",
        "",
        "| comparison | model | epochs | pairs | AL mean | AL 95% CI | AL p | FCI mean | FCI 95% CI | FCI p | "
        "PCI mean | PCI 95% CI | PCI p |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
    ]


if __name__ == "__main__":
    main()
