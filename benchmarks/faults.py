"""Fault injection, long form: ``keras-grs prune`` SIGKILLed again and again at every stage, resumed each time.

For each backend: one uninterrupted twin run, then runs that are each killed several times (write kills that hit a
stage exactly, timed kills at random moments; see ``tests/faults/harness.py``) and resumed with ``--resume`` until
they finish. Every finished run is checked (exit statuses, tracebacks, lost or repeated trials, every file whole,
a shrinking accepted path) and its decisions compared with the twin's.

Run: .venv/bin/python benchmarks/faults.py [--kills 30] [--backends keras-tuner optuna] [--seed 0]
     (writes benchmarks/results/faults.md; ``make bench-faults``)
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this tree's keras_grs (the one the harness runs); the harness

from common import RESULTS, machine, write  # noqa: E402
from faults.harness import STAGES, decisions, prune_argv, random_kills, run_with_kills  # noqa: E402

from keras_grs import datasets  # noqa: E402
from keras_grs.files import write_json, write_text  # noqa: E402

KILLS_PER_RUN = 4
# what the code seeded a candidate's training by when a result was measured (results keep theirs)
SEEDING = "each candidate's training seeded by (seed, its key), padded to the initial widths"
EARLIER_SEEDING = "earlier code: training seeded by the process's history"
FILE_PROBLEMS = ("temporary file", "zero-byte", "not valid JSON", "does not load", "bytes but", "SHA-256",
                 "missing", "no size/SHA-256")


def tiny_data(directory: Path) -> Path:
    import numpy as np

    x, y = datasets.calcium(n_neurons=20, n_frames=240, seed=0, difficulty="easy")
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.25, test=0.0)
    path = directory / "data.npz"
    np.savez(path, x_train=xt, y_train=yt, x_val=xv, y_val=yv)
    return path


def one_backend(backend: str, kills: int, rng: random.Random, work: Path, data: Path, log, save) -> dict:
    started = time.time()
    twin_out = work / f"{backend}-twin"
    twin = run_with_kills(prune_argv(data, twin_out, backend), twin_out, backend, [])
    duration = time.time() - started
    expected = decisions(twin_out) if twin.finished else None
    log(f"{backend}: twin finished in {duration:.0f} s, problems {twin.problems}")
    stats = {"injected": Counter(), "survived": Counter(), "runs": 0, "equal": 0, "lost": 0, "corrupt": 0,
             "tracebacks": 0, "problems": [], "twin_problems": twin.problems, "attempts": 0, "differs": []}
    injected = 0
    while injected < kills:
        out = work / f"{backend}-run{stats['runs']}"
        plan = random_kills(rng, backend, min(KILLS_PER_RUN, kills - injected), duration)
        run = run_with_kills(prune_argv(data, out, backend), out, backend, plan)
        stats["runs"] += 1
        stats["attempts"] += len(run.attempts)
        injected += len(run.kills)
        if not run.kills:  # every kill came too late (the run had finished): try again with others
            continue
        whole = run.problems == []
        for a in run.kills:
            stats["injected"][a.stage] += 1
            stats["survived"][a.stage] += whole
        stats["lost"] += len(set(run.lost_trials))
        stats["corrupt"] += sum(any(k in p for k in FILE_PROBLEMS) for p in run.problems)
        stats["tracebacks"] += sum(a.traceback for a in run.attempts)
        stats["problems"] += [f"run {stats['runs']}: {p}" for p in run.problems]
        if run.finished and expected is not None:
            same = decisions(out) == expected
            stats["equal"] += same
            if not same:
                stats["differs"].append(", ".join(a.stage for a in run.kills))
        log(f"{backend}: run {stats['runs']}: kills at {[a.stage for a in run.kills]} "
            f"({[a.kill.describe() for a in run.kills]}); problems {run.problems}")
        stats["seconds"] = time.time() - started
        save(backend, stats, done=False)  # a long measurement stopped early still leaves its figures
    save(backend, stats, done=True)
    return stats


def render(results: dict) -> list[str]:
    lines = [
        "# Fault injection: SIGKILL at every stage, resumed until finished",
        "",
        f"Measured on {machine()}, a machine shared with other jobs at the time.",
        "",
        "Each run is a tiny JGRS search (nn1, 240 simulated frames, one epoch per candidate, at most 8 trials, "
        "EUP and C export on) killed with SIGKILL up to "
        f"{KILLS_PER_RUN} times, then resumed with `--resume` until it exits. A *write kill* hits a stage exactly "
        "(the process kills itself when a checkpoint, `compact.keras`, a report file or a C file is complete "
        "under its temporary name, before the rename; see `keras_grs.files._fault_point`); a *timed kill* lands at "
        "a random moment. The stage is read afterwards from what the process wrote. A kill *survived* when its "
        "run finished with exit status 0 and every check held: no traceback in any attempt, no finished trial "
        "lost or evaluated again, every `.json` parses, every `.keras` loads and matches its SHA-256 record, every "
        "checkpoint matches its record, no zero-byte or temporary file, no lock left, the accepted path shrinks.",
        "",
    ]
    for name, s in sorted(results.items(), key=lambda item: item[1].get("seeding") is not None, reverse=True):
        backend = s.get("backend", name)
        total = sum(s["injected"].values())
        lines += [
            f"## {backend}, {total} kills ({s.get('seeding', EARLIER_SEEDING)})",
            "",
            f"`benchmarks/faults.py --backends {backend} --kills {s['kills']} --seed {s['seed']}`"
            + ("" if s.get("done", True) else f" (stopped early, after {total} kills)"),
            "",
            f"{total} kills in {s['runs']} run(s) ({s['attempts']} processes), {s['seconds'] / 60:.0f} min. "
            f"Lost trials: **{s['lost']}**, corrupt files: **{s['corrupt']}**, tracebacks: **{s['tracebacks']}**. "
            f"Finished runs with the decisions of the uninterrupted twin: {s['equal']} of {s['runs']}.",
            "",
            "| stage | kills injected | survived |",
            "|---|---:|---:|",
        ]
        for stage in STAGES:
            if s["injected"].get(stage):
                lines.append(f"| {stage} | {s['injected'][stage]} | {s['survived'].get(stage, 0)} |")
        lines.append("")
        if s["twin_problems"]:
            lines += ["Problems of the uninterrupted twin: " + "; ".join(s["twin_problems"]), ""]
        if s["problems"]:
            lines += ["Problems:", ""] + [f"- {p}" for p in s["problems"]] + [""]
        if s["differs"]:
            lines += ["Runs whose decisions differ from the twin's (their kills): "
                      + "; ".join(s["differs"]), ""]
    lines += [
        "## Why resumed runs of the earlier code decided differently from their twin, and what changed",
        "",
        "With the earlier code, a kill mid-search changed the fine-tuning of the candidates trained after it: the "
        "batched evaluator drew its shuffling and dropout seeds from `(seed, number of batches this process has "
        "trained)`, one dropout draw covered all slots of a batch (a candidate's masks depended on its slot and on "
        "its batch-mates), the stacked weights were padded to the widest structure this process had seen (padding "
        "changes how a layer's sums are rounded, and so do XLA's products for a batch of one), and an Optuna trial "
        "killed with its process counted against `--max-trials`, so a resumed Optuna run evaluated fewer "
        "candidates. The search's own decisions were never the cause: the engine replays them from (seed, "
        "outcomes). Now each candidate draws its batch order and dropout from (seed, its key), its dropout masks "
        "do not depend on the padding or its slot, every batch is padded to the initial model's widths, each "
        "candidate's products are computed apart, and only trials that ran to an end count against "
        "`--max-trials`: a candidate trains bit for bit the same alone, beside others, in a fresh or a resumed "
        "process (`tests/test_faults_twin.py`). A run that still differs from its twin would show it above.",
        "",
    ]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=30, help="kills to inject per backend")
    parser.add_argument("--backends", nargs="+", default=["keras-tuner", "optuna"])
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill plan")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    results = {}

    def log(text):
        print(time.strftime("%H:%M:%S"), text, flush=True)

    def save(backend, stats, done):
        # each backend's figures are kept, so the backends may be measured by separate (parallel) invocations
        store = RESULTS / "faults.json"
        kept = json.loads(store.read_text()) if store.exists() else {}
        kept[f"{backend}, seeded by key"] = dict(stats, kills=args.kills, seed=args.seed, done=done, backend=backend,
                                                  seeding=SEEDING)
        write_json(store, kept, indent=1)
        if done:
            write("faults.md", render(kept))
        else:
            write_text(RESULTS / "faults.md", "\n".join(render(kept)) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = tiny_data(work)
        for backend in args.backends:
            results[backend] = one_backend(backend, args.kills, rng, work, data, log, save)
    return 0


if __name__ == "__main__":
    sys.exit(main())
