"""The seed's tables on simulated data: GRS vs RRS and GRS vs NWM (AL, FCI, PCI differences), GRS+TQ, JGRS vs GRS.

For every model, simulated dataset and trial, one model is pretrained and pruned by GRS, RRS and NWM with the
same search seed (so the methods start from the same weights); the compact GRS model then goes through TQ. The
differences GRS - RRS and GRS - NWM of AL (test accuracy loss, points), FCI and PCI (FLOP and parameter count
improvement, percent) are summarized min/max/avg per model, as in the seed's tables, next to the seed's figures
(its recordings and GPU, not this data: the simulator is easier to decode, so compression is higher here).
JGRS vs GRS compares time and compression on the scaled models.

Every finished search is stored in benchmarks/results/seed_tables_realistic.json (the default, realistic simulator)
or seed_tables.json (``--difficulty easy``: the first simulator, the committed tables); running again with the
same settings continues where a run stopped. The seed's acceptance rule is used throughout.

Run: .venv/bin/python benchmarks/seed_tables.py [--models nn1 nn2 cnn1 cnn2] [--datasets 2] [--trials 2]
     [--epochs 100] [--scaled nn2_scaled] [--difficulty realistic|easy]   (writes the .md beside the store)
"""

from __future__ import annotations

import argparse
import json
import os
import time

from common import RESULTS, calcium_splits, machine, pretrained, search, stats, write

from keras_grs import count_params, eup

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
    args = parser.parse_args()
    store_path = RESULTS / f"{store_name(args.difficulty)}.json"
    settings = {"frames": args.frames, "pretrain_epochs": args.pretrain_epochs, "max_trials": args.max_trials}
    store = json.loads(store_path.read_text()) if store_path.exists() else {}
    if store.get("settings") != settings:
        store = {"settings": settings, "runs": {}}
    runs = store["runs"]

    def save():
        RESULTS.mkdir(exist_ok=True)
        store_path.with_suffix(".tmp").write_text(json.dumps(store, indent=1))
        os.replace(store_path.with_suffix(".tmp"), store_path)

    cases = [(name, d, t) for name in args.models for d in range(args.datasets) for t in range(args.trials)]
    cases += [(name, 0, 0) for name in args.scaled]
    for name, d, t in cases:
        methods = ("grs", "jgrs") if name.endswith("_scaled") else ("grs", "rrs", "nwm")
        keys = {m: f"{name}/e{args.epochs}/d{d}/t{t}/{m}" for m in methods}
        if all(k in runs for k in keys.values()):
            continue
        data = calcium_splits(name, seed=d, n_frames=args.frames, difficulty=args.difficulty)
        model = pretrained(name, data[0], args.pretrain_epochs, seed=1000 * d + t)
        for method, key in keys.items():
            if key in runs:
                continue
            run = search(model, data, method=method, epochs=args.epochs, seed=t, max_trials=args.max_trials)
            result = figures(run)
            if method == "grs" and not name.endswith("_scaled"):
                started = time.perf_counter()
                tq_model, _ = eup.tq(run.compact, data[1])
                result["tq_nonzero"] = count_params(tq_model, nonzero=True)
                result["tq_seconds"] = time.perf_counter() - started
            runs[key] = result
            save()
            print(f"{key}: {run.seconds:.1f} s, {run.trials} trials, {run.structure}, PCI {run.pci:.1f}%, "
                  f"AL {run.al:+.2f}", flush=True)
    write(f"{store_name(args.difficulty)}.md", table(args, runs))


def table(args, runs) -> list[str]:
    """The tables of every model and epoch count in the store (several invocations may have filled it)."""
    groups = sorted({tuple(k.split("/")[:2]) for k in runs}, key=lambda g: (g[0].endswith("_scaled"), ORDER.get(g[0].removesuffix("_scaled"), 9), g))
    plain = [g for g in groups if not g[0].endswith("_scaled")]

    def of(group, method):
        return [r for k, r in runs.items() if tuple(k.split("/")[:2]) == group and k.endswith(f"/{method}")]

    def pairs(group, other):
        return [(runs[k], runs[k.rsplit("/", 1)[0] + f"/{other}"]) for k in runs
                if tuple(k.split("/")[:2]) == group and k.endswith("/grs")
                and k.rsplit("/", 1)[0] + f"/{other}" in runs]

    def setting(group):
        cases = {tuple(k.split("/")[2:4]) for k in runs if tuple(k.split("/")[:2]) == group}
        datasets = len({c[0] for c in cases})
        return f"{group[0]}", f"{group[1][1:]}", f"{datasets}x{len(cases) // max(datasets, 1)}"

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
    return lines


if __name__ == "__main__":
    main()
