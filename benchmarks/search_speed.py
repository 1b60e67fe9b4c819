"""Search speed: GRS with the keras evaluator (one model.fit per trial) vs the batched evaluator, in one run.

The seed's protocol: simulated calcium data (3000 frames, 140 neurons; 12x12 images for cnn1), 100 fine-tuning
epochs per candidate, batch 32. Both evaluators prune the same pretrained model with the same seed for the same
number of trials (--max-trials), so their wall times compare the same work; structure, parameters and test accuracy
at the end show the quality. A full GRS with the keras evaluator at 100 epochs would run for hours on a CPU, hence
the cap (stated in the table).

The seed's protocol in full (--protocol, default nn1 and cnn1): one complete GRS search per model with the batched
evaluator at 100 epochs per candidate, timed against the seed's GRS prune times on a GTX 1080 (nn1 922.9 s, cnn1
5,933.6 s). These searches are kept in benchmarks/.work and continue across sittings; their seconds add up the
sittings.

Run: .venv/bin/python benchmarks/search_speed.py [--models nn1 cnn1] [--epochs 100] [--max-trials 16 11]
     [--protocol nn1 cnn1] [--batched-only]
     (writes benchmarks/results/search_speed.md, search_quality.md for the complete nn1 searches and
     search_protocol.md for the complete searches at the seed's protocol)
"""

from __future__ import annotations

import argparse
import shutil

from common import RESULTS, calcium_splits, machine, pretrained, search, write

SEED_SECONDS = {"nn1": 922.9, "nn2": 115.7, "cnn1": 5933.6, "cnn2": 2329.1}  # GRS prune time, GTX 1080
WORK = RESULTS.parent / ".work" / "search_speed"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=["nn1", "cnn1"], help="capped side-by-side searches")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--max-trials", type=int, nargs="+", default=[16, 11],
                        help="per model: trial 0 plus whole GRS steps (nn1: 3 candidates a step, cnn1: 5)")
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--quality-epochs", type=int, default=10,
                        help="epochs of the uncapped nn1 searches that compare the final quality (0: skip)")
    parser.add_argument("--protocol", nargs="*", default=["nn1", "cnn1"], choices=sorted(SEED_SECONDS),
                        help="complete batched GRS searches at --epochs, timed against the seed's (none: skip)")
    parser.add_argument("--batched-only", action="store_true",
                        help="only print the capped batched searches' times, write nothing: to compare two checkouts "
                             "of the code side by side (run it in each, alternated)")
    args = parser.parse_args()
    caps = dict(zip(args.models, args.max_trials + args.max_trials[-1:] * len(args.models)))
    rows = []
    for name in args.models:
        data = calcium_splits(name, seed=0)
        model = pretrained(name, data[0], args.pretrain_epochs, seed=0)
        runs = {}
        for evaluator in ("batched",) if args.batched_only else ("keras", "batched"):
            runs[evaluator] = search(model, data, evaluator=evaluator, epochs=args.epochs, max_trials=caps[name])
            run = runs[evaluator]
            print(f"{name} {evaluator}: {run.seconds:.1f} s, {run.trials} trials, {run.structure}, "
                  f"{run.params} params, test {run.test:.4f}", flush=True)
        if not args.batched_only:
            rows.append((name, runs["keras"], runs["batched"]))
    if args.batched_only:
        return
    complete = []
    if args.quality_epochs:
        data = calcium_splits("nn1", seed=0)
        model = pretrained("nn1", data[0], args.pretrain_epochs, seed=0)
        for evaluator in ("keras", "batched"):
            complete.append(search(model, data, evaluator=evaluator, epochs=args.quality_epochs))
            run = complete[-1]
            print(f"nn1 complete {evaluator}: {run.seconds:.1f} s, {run.trials} trials, {run.structure}", flush=True)
    lines = [
        "# Search speed: keras evaluator vs batched evaluator",
        "",
        f"Machine: {machine()}.",
        "",
        f"GRS, simulated calcium data (3000 frames, 140 neurons, 70/20/10 split; 12x12 images for the CNN), "
        f"{args.epochs} fine-tuning epochs per candidate, batch 32. Each model is pretrained for "
        f"{args.pretrain_epochs} epochs, then both evaluators prune it with seed 0 for the same number of trials "
        "(trial 0 validates the pretrained model; then whole GRS steps). One run of `benchmarks/search_speed.py` "
        "(`make bench-search`).",
        "",
        "| model | evaluator | trials | wall s | s per trial | structure | params | test accuracy | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, keras_run, batched in rows:
        for run in (keras_run, batched):
            speedup = f"**{keras_run.seconds / run.seconds:.1f}x**" if run is batched else "1x"
            lines.append(f"| {name} | {run.evaluator} | {run.trials} | {run.seconds:.1f} | "
                         f"{run.seconds / run.trials:.2f} | {run.structure} | {run.params:,} | {run.test:.4f} | "
                         f"{speedup} |")
    lines += ["", "Quality after the same trials (batched vs keras; the paths differ once training noise picks "
              "another candidate, so this compares two capped searches, not the final results): "]
    for name, keras_run, batched in rows:
        lines.append(f"- {name}: params {100 * (batched.params / keras_run.params - 1):+.1f}%, test accuracy "
                     f"{100 * (batched.test - keras_run.test):+.2f} points")
    if rows:
        write("search_speed.md", lines)
    if complete:
        keras_run, batched = complete
        lines = [
            f"# Complete searches: nn1, {args.quality_epochs} epochs per candidate, no cap",
            "",
            f"Machine: {machine()}.",
            "",
            "Simulated calcium data as in `search_speed.md`, the same pretrained nn1 and seed; one run of "
            f"`benchmarks/search_speed.py --models --quality-epochs {args.quality_epochs}`.",
            "",
            "Both GRS searches run until no candidate is valid; the final results compare the quality (target: "
            "params within 15%, accuracy loss within 0.5 points).",
            "",
            "| evaluator | trials | wall s | structure | params | test accuracy | initial test accuracy |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in complete:
            lines.append(f"| {run.evaluator} | {run.trials} | {run.seconds:.1f} | {run.structure} | {run.params:,} | "
                         f"{run.test:.4f} | {run.initial_test:.4f} |")
        lines += ["", f"Batched vs keras: **{keras_run.seconds / batched.seconds:.1f}x** faster, params "
                      f"{100 * (batched.params / keras_run.params - 1):+.1f}%, test accuracy "
                      f"{100 * (batched.test - keras_run.test):+.2f} points."]
        write("search_quality.md", lines)
    if args.protocol:
        write("search_protocol.md", protocol(args))
        shutil.rmtree(WORK)  # only once every row is written: a finished search called again returns at once


def protocol(args) -> list[str]:
    """Complete batched GRS searches at the seed's protocol, one per model, against the seed's GPU times."""
    lines = [
        f"# Complete GRS searches at the seed's protocol ({args.epochs} epochs per candidate)",
        "",
        f"Machine: {machine()}.",
        "",
        f"Simulated calcium data as in `search_speed.md` (seed 0), each model pretrained {args.pretrain_epochs} "
        f"epochs, then one GRS search with the batched evaluator until no candidate is valid ({args.epochs} "
        "fine-tuning epochs per candidate, batch 32, the seed's acceptance rule). `benchmarks/search_speed.py "
        f"--models --quality-epochs 0 --protocol {' '.join(args.protocol)}`; a search continues across sittings "
        "(`sittings`), its seconds add them up. The seed's time: its GRS prune time on a GTX 1080 GPU, on its own "
        "recordings.",
        "",
        "| model | trials | sittings | wall s | s per trial | structure | params kept | test accuracy (initial) | "
        "seed's GPU s | seed / ours |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in args.protocol:
        data = calcium_splits(name, seed=0)
        model = pretrained(name, data[0], args.pretrain_epochs, seed=0)
        run = search(model, data, evaluator="batched", epochs=args.epochs, directory=WORK / f"{name}-e{args.epochs}")
        print(f"{name} protocol: {run.seconds:.1f} s, {run.trials} trials, {run.structure}", flush=True)
        lines.append(f"| {name} | {run.trials} | {run.sittings} | {run.seconds:.1f} | {run.seconds / run.trials:.2f} | "
                     f"{run.structure} | {run.params:,} ({100 * run.params / run.initial_params:.1f}%) | "
                     f"{run.test:.4f} ({run.initial_test:.4f}) | {SEED_SECONDS[name]:,.1f} | "
                     f"**{SEED_SECONDS[name] / run.seconds:.1f}x** |")
    return lines


if __name__ == "__main__":
    main()
