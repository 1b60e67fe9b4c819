"""Parity of the evaluators: complete GRS searches with one fit per candidate and with the batched evaluator.

For every seed: simulated calcium data drawn and split with that seed (140 neurons, 70/20/10; 3000 frames, the
seed's data, or fewer with --frames so that one fit per candidate fits a time budget), the
model pretrained with it (30 epochs), then both evaluators prune that same model with that same search seed until
no candidate is valid (10 fine-tuning epochs per candidate, batch 32, the seed's acceptance rule). Reported per
evaluator: mean and spread of the parameters and FLOPs kept and of the test accuracy, and the paired differences
(batched minus keras, seed by seed). Target: mean params within 15% and mean test accuracy within 0.5 points.

    python benchmarks/evaluator_parity.py                                  # nn1, seeds 0-4, both evaluators
    python benchmarks/evaluator_parity.py --evaluators keras --seeds 3     # one more run into the store

Runs are stored in results/evaluator_parity.json as they finish (a second call adds to the store, a run already
stored is not repeated, a search a kill cut short continues from its last trial); results/evaluator_parity.md is
written from the whole store.
"""

from __future__ import annotations

import argparse
import json
import shutil

from common import RESULTS, calcium_splits, machine, pretrained, search, write

import numpy as np

STORE = RESULTS / "evaluator_parity.json"
WORK = RESULTS.parent / ".work" / "evaluator_parity"  # searches in progress: a killed one continues from its last trial
EVALUATORS = ("keras", "batched")


def load_store() -> list[dict]:
    return json.loads(STORE.read_text()) if STORE.exists() else []


def save_store(runs: list[dict]) -> None:
    temporary = STORE.with_suffix(".tmp")
    temporary.write_text(json.dumps(runs, indent=1) + "\n")
    temporary.replace(STORE)


def key(run: dict) -> tuple:
    return run["model"], run.get("frames", 3000), run["epochs"], run["evaluator"], run["seed"], random_seed(run)


def random_seed(run: dict) -> bool:
    """A seed-0 run stored before commit 8bda89b: keras-tuner took seed=0 for no seed, so its unit choices came from
    a random seed and it pairs with no other run (kept for the means, left out of the paired comparisons)."""
    return bool(run.get("random_seed"))


def seed_label(run: dict) -> str:
    return f"{run['seed']} (random)" if random_seed(run) else str(run["seed"])


def run_one(model_name, evaluator, seed, epochs, pretrain_epochs, label, frames) -> dict:
    data = calcium_splits(model_name, seed=seed, n_frames=frames)
    model = pretrained(model_name, data[0], pretrain_epochs, seed=seed)
    work = WORK / f"{model_name}-f{frames}-e{epochs}-{label or evaluator}-s{seed}"
    run = search(model, data, evaluator=evaluator, epochs=epochs, seed=seed, directory=work)
    shutil.rmtree(work)
    return {"model": model_name, "frames": frames, "epochs": epochs, "evaluator": label or evaluator, "seed": seed,
            "trials": run.trials, "finished": run.finished, "seconds": round(run.seconds, 1), "structure": run.structure,
            "params": run.params, "flops": run.flops, "test": run.test, "initial_params": run.initial_params,
            "initial_flops": run.initial_flops, "initial_test": run.initial_test}


def spread(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():,.1f} ± {values.std(ddof=1) if len(values) > 1 else 0:,.1f}"


def order(evaluator: str) -> tuple:
    """keras first, then batched, then variants measured with other code (``--label``)."""
    return (EVALUATORS.index(evaluator) if evaluator in EVALUATORS else len(EVALUATORS), evaluator)


def report(runs: list[dict]) -> list[str]:
    lines = [
        "# Evaluator parity: complete GRS searches, one fit per candidate vs batched",
        "",
        f"Machine: {machine()} (shared with other jobs while these ran: wall times are indicative only).",
        "",
        "Per seed: simulated calcium data drawn and split with the seed (140 neurons, 70/20/10, the frames the "
        "heading says), the "
        "model pretrained with it for 30 epochs, then both evaluators prune that model with that search seed until "
        "no candidate is valid (the seed's acceptance rule, tolerance 0.985, batch 32). `benchmarks/"
        "evaluator_parity.py`; every run in `evaluator_parity.json`. Target: mean params within 15%, mean test "
        "accuracy within 0.5 points.",
        "",
        "A seed shown as `0 (random)`: a run stored before commit 8bda89b, when keras-tuner took `seed=0` for no seed "
        "and drew a random one for the unit choices; it counts in the means but pairs with no other run.",
        "",
    ]
    notes = {r["evaluator"]: r["note"] for r in runs if r.get("note")}
    lines += [f"- `{label}`: {note}" for label, note in sorted(notes.items())] + ([""] if notes else [])
    for setting in sorted({key(r)[:3] for r in runs}):
        model_name, frames, epochs = setting
        group = {(r["evaluator"], seed_label(r)): r for r in runs if key(r)[:3] == setting}
        lines += [f"## {model_name}, {frames} frames, {epochs} epochs per candidate", "",
                  "| evaluator | seed | trials | wall s | structure | params | FLOPs | test accuracy | initial test |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for (evaluator, seed), r in sorted(group.items(), key=lambda item: (order(item[0][0]), item[1]["seed"],
                                                                              random_seed(item[1]))):
            lines.append(f"| {evaluator} | {seed} | {r['trials']} | {r['seconds']} | {r['structure']} | "
                         f"{r['params']:,} | {r['flops']:,} | {r['test']:.4f} | {r['initial_test']:.4f} |")
        labels = sorted({e for e, _ in group}, key=order)
        missing = [e for e in EVALUATORS if e not in labels]
        if missing:
            lines += ["", f"No {' or '.join(missing)} run stored for this setting yet: no paired comparison "
                          f"(`--evaluators {' '.join(missing)}` adds them)."]
        lines += ["", "| evaluator | runs | params (mean ± sd) | FLOPs (mean ± sd) | test accuracy, % (mean ± sd) |",
                  "|---|---|---|---|---|"]
        for evaluator in labels:
            rs = [r for (e, _), r in group.items() if e == evaluator]
            lines.append(f"| {evaluator} | {len(rs)} | {spread([r['params'] for r in rs])} | "
                         f"{spread([r['flops'] for r in rs])} | {spread([100 * r['test'] for r in rs])} |")
        lines.append("")
        for evaluator in labels[1:] if labels[0] == "keras" else ():
            paired = sorted((seed for (e, seed) in group if e == "keras" and (evaluator, seed) in group
                             and not random_seed(group[e, seed])), key=int)
            if not paired:
                continue
            keras_runs = [group["keras", s] for s in paired]
            other = [group[evaluator, s] for s in paired]
            params = 100 * (np.mean([r["params"] for r in other]) / np.mean([r["params"] for r in keras_runs]) - 1)
            test = 100 * (np.mean([r["test"] for r in other]) - np.mean([r["test"] for r in keras_runs]))
            speed = np.sum([r["seconds"] for r in keras_runs]) / np.sum([r["seconds"] for r in other])
            verdict = "within" if abs(params) <= 15 and abs(test) <= 0.5 else "outside"
            # the seed-by-seed test differences' standard error: how far apart two evaluators with no systematic
            # difference land over these seeds by training noise alone
            differences = [100 * (o["test"] - k["test"]) for o, k in zip(other, keras_runs)]
            noise = (f"standard error of the paired difference "
                     f"{np.std(differences, ddof=1) / np.sqrt(len(differences)):.2f}" if len(differences) > 1
                     else "one pair: no estimate of the noise")
            lines.append(f"- {evaluator} vs keras, paired seeds {[int(s) for s in paired]}: mean params {params:+.1f}%, mean test "
                         f"accuracy {test:+.2f} points ({noise}; {verdict} the target); {speed:.1f}x less wall time. "
                         f"Test accuracy differences by seed: "
                         + ", ".join(f"{int(s)}: {d:+.2f}" for s, d in zip(paired, differences)) + ".")
        lines.append("")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["nn1"])
    parser.add_argument("--evaluators", nargs="+", default=list(EVALUATORS), choices=EVALUATORS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--frames", type=int, default=3000, help="frames simulated (the seed's data: 3000)")
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--report-only", action="store_true", help="write the report from the store, run nothing")
    parser.add_argument("--label", help="store the runs under this name instead of the evaluator's (a variant of "
                                        "the code, measured on the same seeds)")
    parser.add_argument("--note", help="with --label: what the variant is (shown in the report)")
    args = parser.parse_args()
    runs = load_store()
    if not args.report_only:
        for seed in args.seeds:
            for model_name in args.models:
                for evaluator in args.evaluators:
                    wanted = (model_name, args.frames, args.epochs, args.label or evaluator, seed, False)
                    if any(key(r) == wanted for r in runs):
                        continue
                    run = run_one(model_name, evaluator, seed, args.epochs, args.pretrain_epochs, args.label,
                                  args.frames)
                    if args.note:
                        run["note"] = args.note
                    print(f"{model_name} {evaluator} seed {seed}: {run['seconds']} s, {run['trials']} trials, "
                          f"{run['structure']}, {run['params']} params, test {run['test']:.4f}", flush=True)
                    runs = [r for r in load_store() if key(r) != wanted] + [run]  # another process may have added
                    save_store(runs)
    write("evaluator_parity.md", report(runs))


if __name__ == "__main__":
    main()
