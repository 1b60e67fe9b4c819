"""Parity of the evaluators: complete GRS searches with one fit per candidate and with the batched evaluator.

For every seed: simulated calcium data drawn and split with that seed (140 neurons, 70/20/10; 3000 frames, the
seed's data, or fewer with --frames so that one fit per candidate fits a time budget), the
model pretrained with it (30 epochs), then both evaluators prune that same model with that same search seed until
no candidate is valid (10 fine-tuning epochs per candidate, batch 32, the seed's acceptance rule). Reported per
evaluator: mean and spread of the parameters and FLOPs kept and of the test accuracy, and the paired differences
(batched minus keras, seed by seed). Target: mean params within 15% and mean test accuracy within 0.5 points.

    python benchmarks/evaluator_parity.py                                  # nn1, seeds 0-4, both evaluators
    python benchmarks/evaluator_parity.py --evaluators keras --seeds 3     # one more run into the store
    python benchmarks/evaluator_parity.py --models cnn1 --evaluators batched --search-seeds 1 2 3   # replicates

A search's final test accuracy varies with its search seed (which unit each step removes, every candidate's batch
order and dropout) as much as with the evaluator: ``--search-seeds`` runs more searches of each seed's model and data
with other search seeds, so that the report can say how far apart two searches of one model land by chance alone.

Runs are stored in results/evaluator_parity.json as they finish (a second call adds to the store, a run already
stored is not repeated, a search a kill cut short continues from its last trial); results/evaluator_parity.md is
written from the whole store.
"""

from __future__ import annotations

import argparse
import itertools
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
    return (run["model"], run.get("frames", 3000), run["epochs"], run["evaluator"], run["seed"], random_seed(run),
            search_seed(run))


def search_seed(run: dict) -> int:
    """The seed of the search's own choices; the data seed unless the run is a replicate (``--search-seeds``)."""
    return run.get("search_seed", run["seed"])


def replicate(run: dict) -> bool:
    return search_seed(run) != run["seed"]


def random_seed(run: dict) -> bool:
    """A seed-0 run stored before commit 8bda89b: keras-tuner took seed=0 for no seed, so its unit choices came from
    a random seed and it pairs with no other run (kept for the means, left out of the paired comparisons)."""
    return bool(run.get("random_seed"))


def seed_label(run: dict) -> str:
    return f"{run['seed']} (random)" if random_seed(run) else str(run["seed"])


def run_one(model_name, evaluator, seed, epochs, pretrain_epochs, label, frames, searched_with=None) -> dict:
    """One complete search of the model pretrained on seed's data; ``searched_with``: its search seed, if not seed."""
    searched_with = seed if searched_with is None else searched_with
    data = calcium_splits(model_name, seed=seed, n_frames=frames)
    model = pretrained(model_name, data[0], pretrain_epochs, seed=seed)
    replica = f"-r{searched_with}" if searched_with != seed else ""
    work = WORK / f"{model_name}-f{frames}-e{epochs}-{label or evaluator}-s{seed}{replica}"
    run = search(model, data, evaluator=evaluator, epochs=epochs, seed=searched_with, directory=work)
    shutil.rmtree(work)
    extra = {"search_seed": searched_with} if searched_with != seed else {}
    return {"model": model_name, "frames": frames, "epochs": epochs, "evaluator": label or evaluator, "seed": seed,
            **extra, "trials": run.trials, "finished": run.finished, "seconds": round(run.seconds, 1),
            "structure": run.structure,
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
    for setting in sorted({key(r)[:3] for r in runs if not replicate(r)}):
        model_name, frames, epochs = setting
        group = {(r["evaluator"], seed_label(r)): r for r in runs if key(r)[:3] == setting and not replicate(r)}
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
        lines += replicates_report([r for r in runs if key(r)[:3] == setting and r["evaluator"] in EVALUATORS])
    return lines


def replicates_report(runs: list[dict]) -> list[str]:
    """Per data seed with replicates (``runs``: the current code's, no ``--label`` variants): every search's test
    accuracy by evaluator; the noise of one search (the pooled spread over search seeds) and the evaluators'
    difference with each data seed's searches averaged."""
    seeds = sorted({r["seed"] for r in runs if replicate(r) or random_seed(r)})
    if not seeds:
        return []
    lines = ["### Search-seed replicates: how far one model's searches land apart", "",
             "The same model and data (data seed), searched again with other search seeds (`--search-seeds`): "
             "test accuracy in % of every search, search seed in brackets (`random`: a run whose search seed "
             "keras-tuner drew, see above).", "",
             "| data seed | evaluator | searches | test accuracy, % (search seed) | mean ± sd | params (mean) |",
             "|---|---|---|---|---|---|"]
    tests, params = {}, {}  # (seed, evaluator) -> test accuracies in %, parameters kept
    for seed in seeds:
        for evaluator in sorted({r["evaluator"] for r in runs if r["seed"] == seed}, key=order):
            rs = sorted((r for r in runs if r["seed"] == seed and r["evaluator"] == evaluator), key=search_seed)
            tests[seed, evaluator] = [100 * r["test"] for r in rs]
            params[seed, evaluator] = [r["params"] for r in rs]
            lines.append(f"| {seed} | {evaluator} | {len(rs)} | "
                         + ", ".join(f"{100 * r['test']:.2f} ({'random' if random_seed(r) else search_seed(r)})"
                                     for r in rs)
                         + f" | {spread(tests[seed, evaluator])} | {np.mean(params[seed, evaluator]):,.0f} |")
    several = [values for values in tests.values() if len(values) > 1]
    freedom = sum(len(v) - 1 for v in several)
    if not freedom:
        return lines + [""]
    sd = np.sqrt(sum((len(v) - 1) * np.var(v, ddof=1) for v in several) / freedom)
    lines += ["", f"- One search's test accuracy, spread over search seeds (pooled over the {len(several)} rows "
                  f"with more than one search, {freedom} degrees of freedom): **sd {sd:.2f} points**. Two single "
                  f"searches of one model with no systematic difference land {sd * np.sqrt(2):.2f} points apart "
                  f"(sd); the mean of 5 such paired seeds has a standard error of {sd * np.sqrt(2 / 5):.2f} points."]
    for evaluator in sorted({e for _, e in tests if e != "keras"}, key=order):
        both = [seed for seed in seeds if (seed, "keras") in tests and (seed, evaluator) in tests]
        if not both:
            continue
        differences = [np.mean(tests[seed, evaluator]) - np.mean(tests[seed, "keras"]) for seed in both]
        error = sd * np.sqrt(sum(1 / len(tests[seed, evaluator]) + 1 / len(tests[seed, "keras"]) for seed in both)) \
            / len(both)
        kept = 100 * (sum(np.mean(params[seed, evaluator]) for seed in both)
                      / sum(np.mean(params[seed, "keras"]) for seed in both) - 1)
        lines.append(f"- {evaluator} vs keras, each data seed's searches averaged (data seeds {both}): mean params "
                     f"{kept:+.1f}%, mean test accuracy {np.mean(differences):+.2f} points, standard error "
                     f"{error:.2f} from the spread above; by data seed "
                     + ", ".join(f"{s}: {d:+.2f}" for s, d in zip(both, differences)) + ".")
    return lines + [""]


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
    parser.add_argument("--search-seeds", type=int, nargs="+", default=[],
                        help="replicates: also search each seed's model with these search seeds")
    args = parser.parse_args()
    runs = load_store()
    if not args.report_only:
        for seed in args.seeds:
            for model_name, evaluator, searched_with in itertools.product(
                    args.models, args.evaluators, dict.fromkeys([seed] + args.search_seeds)):
                wanted = (model_name, args.frames, args.epochs, args.label or evaluator, seed, False, searched_with)
                if any(key(r) == wanted for r in runs):
                    continue
                run = run_one(model_name, evaluator, seed, args.epochs, args.pretrain_epochs, args.label,
                              args.frames, searched_with)
                if args.note:
                    run["note"] = args.note
                print(f"{model_name} {evaluator} seed {seed} (search seed {searched_with}): {run['seconds']} s, "
                      f"{run['trials']} trials, {run['structure']}, {run['params']} params, test {run['test']:.4f}",
                      flush=True)
                runs = [r for r in load_store() if key(r) != wanted] + [run]  # another process may have added
                save_store(runs)
    write("evaluator_parity.md", report(runs))


if __name__ == "__main__":
    main()
