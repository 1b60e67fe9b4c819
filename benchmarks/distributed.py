"""nn1 GRS by 1, 2, 3 worker processes on this machine: keras-tuner's distributed mode and an Optuna/SQLite study.

keras-tuner: a chief (the gRPC oracle on 127.0.0.1) and N workers. Optuna: N processes running
``keras_grs.optuna.optimize`` on one study in an SQLite file, as ``keras-grs prune --backend optuna --storage`` does
on every machine. Every process runs this file (``--role``), as a user runs one script on every machine. Candidates
really train (``--epochs``, one ``model.fit`` each) and inherit weights through the shared directory, but their
objective is a function of their widths, so the accepted path is decided by the search alone: it must be the same
for every worker count and for both backends (the benchmark checks both). Wall time runs from starting the first
process to the last one leaving (process start-up and TensorFlow's import included: what a user waits for).

Runs are kept in ``results/distributed.json`` (the latest per backend, worker count, epochs, evaluator and seed); the
tables in ``results/distributed.md`` are rendered from it (each backend's runs at the most epochs), so one backend can
be measured again without the other.

    python benchmarks/distributed.py --backend both --workers 1 2 3 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results", "distributed")
BACKENDS = ("keras-tuner", "optuna")
STUDY = "nn1"


def scripted(values, groups):
    """The objective of a candidate: 1 minus 0.001 per unit removed from the initial widths."""
    return 1.0 - 0.001 * sum(width - values[name] for name, width in groups.items())


class Scripted:
    """An evaluator that trains through ``inner`` and reports the scripted objective as ``val_accuracy``.

    The widths come from the trial's hyperparameters (keras-tuner) or from the candidate model itself (Optuna's
    jobs carry none)."""

    def __init__(self, inner, groups):
        self.inner, self.groups = inner, groups
        self.batches = getattr(inner, "batches", False)

    def evaluate(self, jobs, fit_args, fit_kwargs):
        from keras_grs.structure import analyze

        results = self.inner.evaluate(jobs, fit_args, fit_kwargs)
        for job, metrics in zip(jobs, results):
            if job.hyperparameters is not None:
                values = job.hyperparameters.values
            else:
                values = {g.name: g.width for g in analyze(job.model).groups}
            metrics["val_accuracy"] = scripted(values, self.groups)
        return results


def storage_url(directory):
    return f"sqlite:///{os.path.join(directory, 'optuna.db')}"


def work(backend, directory, evaluator, epochs, seed):
    """One process of the search: keras-tuner's chief or a worker (by KERASTUNER_TUNER_ID), or an Optuna worker."""
    sys.path.insert(0, HERE)
    from common import calcium_splits

    import keras

    import keras_grs
    from keras_grs import models
    from keras_grs.evaluate import make_evaluator

    train, validation, _ = calcium_splits("nn1", seed)
    if backend == "optuna":
        from keras_grs import optuna as kgo
        from keras_grs.guard import DEFAULT_ACCEPTANCE, epoch_score_for
        from keras_grs.optuna.study import keras_tuner_objective
        from keras_grs.structure import analyze

        keras.utils.set_random_seed(seed)  # the same initial weights in every process, whichever trains them
        model = models.build("nn1", train[0].shape[1:])
        groups = {g.name: g.width for g in analyze(model).groups}
        # what optimize() builds from evaluator="keras" with its default acceptance, wrapped
        inner = make_evaluator(evaluator, keras_tuner_objective("val_accuracy"), seed=seed,
                               epoch_score=epoch_score_for(DEFAULT_ACCEPTANCE))
        study = kgo.create_study(kgo.GRSSampler(seed=seed), storage=storage_url(directory), study_name=STUDY,
                                 directory=directory)
        kgo.optimize(study, model, *train, validation_data=validation, epochs=epochs, batch_size=32,
                     evaluator=Scripted(inner, groups), directory=directory)
        return
    tuner = keras_grs.GRSTuner.from_model(models.build("nn1", train[0].shape[1:]), seed=seed, evaluator=evaluator,
                                          directory=directory, project_name=STUDY)
    groups = {g.name: g.width for g in tuner.oracle.search.groups}
    inner = make_evaluator(evaluator, tuner.oracle.objective, tuner.hypermodel, seed=tuner.oracle.seed)
    tuner.evaluator = Scripted(inner, groups)
    tuner.search(*train, validation_data=validation, epochs=epochs, batch_size=32, verbose=0, progress=False)
    if os.environ.get("KERASTUNER_TUNER_ID") == "chief":  # the chief holds the oracle, hence the accepted path
        with open(os.path.join(directory, "path.json"), "w") as f:
            json.dump([row["structure"] for row in tuner.pruning_path()], f)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(backend, workers, evaluator, epochs, seed):
    """Start the processes of one search and wait for them; the directory and the wall seconds."""
    directory = tempfile.mkdtemp(prefix=f"kgrs-dist-{backend}-")
    if backend == "keras-tuner":
        port = free_port()
        roles = ["chief"] + [f"tuner{i}" for i in range(workers)]
        extra = {"KERASTUNER_ORACLE_IP": "127.0.0.1", "KERASTUNER_ORACLE_PORT": str(port)}
    else:
        roles, extra = [f"worker{i}" for i in range(workers)], {}
    start = time.perf_counter()
    processes = []
    for role in roles:
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", **extra)
        if backend == "keras-tuner":
            env["KERASTUNER_TUNER_ID"] = role
        args = [sys.executable, __file__, "--role", directory, "--backend", backend, "--evaluator", evaluator,
                "--epochs", str(epochs), "--seed", str(seed)]
        processes.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for role, process in zip(roles, processes):
        _, err = process.communicate()
        if process.returncode:
            raise RuntimeError(f"{backend} {role} exited with {process.returncode}:\n{err[-3000:]}")
    return directory, time.perf_counter() - start


def outcome(backend, directory, seed):
    """Trials evaluated and the accepted path (structures, initial first) of a finished search."""
    if backend == "keras-tuner":
        with open(os.path.join(directory, STUDY, "oracle.json")) as f:
            trials = len(json.load(f)["pruning_trials"])
        with open(os.path.join(directory, "path.json")) as f:
            return trials, json.load(f)
    import optuna
    from optuna.trial import TrialState

    from keras_grs import optuna as kgo
    from keras_grs.optuna.samplers import KEY_ATTR
    from keras_grs.optuna.study import open_storage

    study = optuna.load_study(study_name=STUDY, storage=open_storage(storage_url(directory)),
                              sampler=kgo.GRSSampler(seed=seed))
    # a worker's last trial, started after the search ended, is pruned before it trains: not a candidate
    trials = sum(t.state == TrialState.COMPLETE and KEY_ATTR in t.system_attrs for t in study.trials)
    return trials, [row["structure"] for row in kgo.pruning_path(study)]


def load():
    if os.path.exists(RESULTS + ".json"):
        with open(RESULTS + ".json") as f:
            return json.load(f)
    return {"runs": []}


def save(results):
    with open(RESULTS + ".json", "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    with open(RESULTS + ".md", "w") as f:
        f.write(render(results))


def same(path, reference, checked="not recorded"):
    """yes / NO; ``checked``: what was checked instead when a path was not recorded."""
    if path is None or reference is None:
        return checked
    return "yes" if path == reference else "NO"


def render(results):
    """The Markdown page: one table per backend (its runs at the most epochs), from the stored runs."""
    runs = results["runs"]
    # the objective is scripted from the widths, so the path does not depend on the epochs: any keras-tuner run's
    # path is the reference, the table's own (most epochs, fewest workers) first
    recorded = sorted((r for r in runs if r["backend"] == "keras-tuner" and r["path"] is not None),
                      key=lambda r: (-r["epochs"], r["workers"]))
    reference = recorded[0] if recorded else None
    out = ["# nn1 GRS by 1, 2, 3 worker processes on one 2-core machine: keras-tuner gRPC and Optuna/SQLite", ""]
    out.append("`python benchmarks/distributed.py --backend both --workers 1 2 3 --epochs 20` (one run of each "
               "backend; `--backend keras-tuner` or `optuna` measures one again and keeps the other's rows, from "
               "`distributed.json`). nn1 GRS, seed 0, keras evaluator (one `model.fit` per trial, batch 32); "
               "candidates train and inherit weights through the shared directory, their objective is a function "
               "of their widths, so every worker count and both backends must accept the same structures in the "
               "same order (checked). Wall time from starting the first process to the last one leaving (process "
               "start-up and TensorFlow's import included).")
    for backend, title in [("keras-tuner", "keras-tuner distributed mode: a chief (gRPC oracle on 127.0.0.1) and N "
                                           "workers"),
                           ("optuna", "Optuna: N processes running `keras_grs.optuna.optimize` on one study in an "
                                      "SQLite file")]:
        mine = [r for r in runs if r["backend"] == backend]
        if not mine:
            continue
        epochs = max(r["epochs"] for r in mine)
        rows = sorted((r for r in mine if r["epochs"] == epochs), key=lambda r: r["workers"])
        first = rows[0]
        conditions = "".join(f" {c}" for c in dict.fromkeys(r["conditions"] for r in rows if r.get("conditions")))
        out += ["", f"## {title}", "", f"{epochs} epochs; {first['machine']}.{conditions}", "",
                "| workers | wall s | trials | trials/min | vs 1 worker | same path as 1 worker | same path as keras-tuner |",
                "|---|---|---|---|---|---|---|"]
        for r in rows:
            out.append(f"| {r['workers']} | {r['seconds']:.1f} | {r['trials']} | {60 * r['trials'] / r['seconds']:.1f} "
                       f"| {first['seconds'] / r['seconds']:.2f}x "
                       f"| {same(r['path'], first['path'], r.get('checked', 'not recorded'))} "
                       f"| {same(r['path'], reference and reference['path'])} |")
    if reference is not None:
        path = reference["path"]
        out += ["", f"Accepted path ({len(path)} structures, keras-tuner, {reference['workers']} worker(s), "
                    f"{reference['epochs']} epochs): {' > '.join(path)}."]
    out += ["", NOTES.strip(), ""]
    return "\n".join(out)


NOTES = """
**What limits scaling here: two cores.** One `model.fit` of nn1 already keeps more than one core busy at times, so a
second worker gains only the gaps the first leaves (process start-up, Python between epochs, checkpoint writes, the
backend's coordination) and a third fills what is left; the cores, not the backends, are the ceiling. A GRS step
offers one candidate per width group (3 for nn1: a step is 3 trials), so a fourth worker would wait idle at every
step, and each step waits for its slowest candidate before the next step's candidates exist.

**What Optuna/SQLite adds, compared with gRPC.** There is no chief: the study file is the whole state. Before each
trial a worker reads every trial of the study and replays the search to find a pending candidate, claims it by
writing a trial attribute and reading the trials back (SQLite lets one writer at a time hold its file lock, so of
two claims on one candidate the later sees the earlier and backs off), and when the others hold all of a step's
candidates it polls every 0.25 to 0.75 s until one finishes. keras-tuner's chief answers each worker from memory
over one gRPC call. So the Optuna side pays lock waits and one read of the study per poll, which grow with the
trials and the workers but stay small next to a 20-epoch fit; in return a worker can join, leave or be killed and
restarted at any time (`soak.md`), while a keras-tuner search ends with its chief.

**A user with N machines.** SQLite is for the processes of one machine (its file locks are not to be trusted on a
network file system): for several machines use one PostgreSQL database
([docs/optuna.md](../../docs/optuna.md#several-machines-on-one-postgresql)) and a directory all of them share for
the checkpoints, or keras-tuner's chief with a shared project directory. Expect close to min(N, width groups) times
one machine's speed per step, less each step's wait for its slowest candidate, the database's or the chief's round
trips and the shared file system's latency for checkpoints: a model with few width groups gains little from many
machines.
"""


def machine():
    from importlib.metadata import version

    packages = ", ".join(f"{name} {version(name)}" for name in ("tensorflow", "keras", "keras-tuner", "optuna"))
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; Python {platform.python_version()}, {packages}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="both", choices=[*BACKENDS, "both"])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--evaluator", default="keras", choices=["keras", "batched"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--render", action="store_true", help="only write distributed.md from distributed.json")
    parser.add_argument("--role", metavar="DIRECTORY", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if any(n < 1 for n in args.workers):
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if args.role:
        return work(args.backend, args.role, args.evaluator, args.epochs, args.seed)
    results = load()
    if args.render:
        return save(results)
    for backend in BACKENDS if args.backend == "both" else [args.backend]:
        for workers in args.workers:
            directory, seconds = launch(backend, workers, args.evaluator, args.epochs, args.seed)
            trials, path = outcome(backend, directory, args.seed)
            run = {"backend": backend, "workers": workers, "epochs": args.epochs, "evaluator": args.evaluator,
                   "seed": args.seed, "seconds": round(seconds, 1), "trials": trials, "path": path,
                   "machine": machine()}
            key = (backend, workers, args.epochs, args.evaluator, args.seed)
            results["runs"] = [r for r in results["runs"]
                               if (r["backend"], r["workers"], r["epochs"], r["evaluator"], r["seed"]) != key]
            results["runs"].append(run)
            save(results)
            print(f"{backend} workers={workers}: {seconds:.1f} s, {trials} trials, path {' > '.join(path)}", flush=True)
    print(render(results))


if __name__ == "__main__":
    main()
