"""nn1 GRS through keras-tuner's distributed mode: a chief and 1, 2, 3 worker processes on this machine.

Every process runs this file (``--role``), as a user runs one script on every machine. Candidates really train
(``--epochs``) and inherit weights through the shared project directory, but their objective is a function of their
widths, so the accepted path is decided by the search alone and must be the same for every worker count (the
benchmark checks it). Wall time runs from starting the chief to the last process leaving (process start-up and
TensorFlow's import included: what a user waits for).

    python benchmarks/distributed.py --workers 1 2 3 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def scripted(values, groups):
    """The objective of a candidate: 1 minus 0.001 per unit removed from the initial widths."""
    return 1.0 - 0.001 * sum(width - values[name] for name, width in groups.items())


class Scripted:
    def __init__(self, inner, groups):
        self.inner, self.groups = inner, groups
        self.batches = getattr(inner, "batches", False)

    def evaluate(self, jobs, fit_args, fit_kwargs):
        results = self.inner.evaluate(jobs, fit_args, fit_kwargs)
        for job, metrics in zip(jobs, results):
            metrics["val_accuracy"] = scripted(job.hyperparameters.values, self.groups)
        return results


def work(directory, evaluator, epochs, seed):
    """One process of the search: the chief or a worker, by KERASTUNER_TUNER_ID."""
    sys.path.insert(0, HERE)
    from common import calcium_splits

    import keras_grs
    from keras_grs import models
    from keras_grs.evaluate import make_evaluator

    train, validation, _ = calcium_splits("nn1", seed)
    tuner = keras_grs.GRSTuner.from_model(models.build("nn1", train[0].shape[1:]), seed=seed, evaluator=evaluator,
                                          directory=directory, project_name="nn1")
    groups = {g.name: g.width for g in tuner.oracle.search.groups}
    inner = make_evaluator(evaluator, tuner.oracle.objective, tuner.hypermodel, seed=tuner.oracle.seed)
    tuner.evaluator = Scripted(inner, groups)
    tuner.search(*train, validation_data=validation, epochs=epochs, batch_size=32, verbose=0, progress=False)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(workers, evaluator, epochs, seed):
    """Wall seconds, trials and accepted path of one distributed search."""
    directory = tempfile.mkdtemp(prefix="kgrs-dist-")
    port = free_port()
    roles = ["chief"] + [f"tuner{i}" for i in range(workers)]
    start = time.perf_counter()
    processes = []
    for role in roles:
        env = dict(os.environ, KERASTUNER_TUNER_ID=role, KERASTUNER_ORACLE_IP="127.0.0.1",
                   KERASTUNER_ORACLE_PORT=str(port), PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
        args = [sys.executable, __file__, "--role", directory, "--evaluator", evaluator, "--epochs", str(epochs),
                "--seed", str(seed)]
        processes.append(subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    for role, process in zip(roles, processes):
        _, err = process.communicate()
        if process.returncode:
            raise RuntimeError(f"{role} exited with {process.returncode}:\n{err[-3000:]}")
    seconds = time.perf_counter() - start
    project = os.path.join(directory, "nn1")
    with open(os.path.join(project, "oracle.json")) as f:
        bookkeeping = json.load(f)["pruning_trials"]
    trials = len(bookkeeping)
    completed = {}
    for trial_id in bookkeeping:
        with open(os.path.join(project, f"trial_{trial_id}", "trial.json")) as f:
            trial = json.load(f)
        completed[trial_id] = (trial["status"], tuple(sorted(trial["hyperparameters"]["values"].items())))
    path = sorted(values for status, values in completed.values() if status == "COMPLETED")
    return seconds, trials, path


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--evaluator", default="keras", choices=["keras", "batched"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--role", metavar="DIRECTORY", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.role:
        return work(args.role, args.evaluator, args.epochs, args.seed)
    rows, reference = [], None
    for workers in args.workers:
        seconds, trials, path = run(workers, args.evaluator, args.epochs, args.seed)
        same = reference is None or path == reference
        reference = reference if reference is not None else path
        rows.append(f"| {workers} | {seconds:.1f} | {trials} | {60 * trials / seconds:.1f} | {'yes' if same else 'NO'} |")
        print(rows[-1], flush=True)
    print(f"\nnn1 GRS, keras-tuner distributed (gRPC on 127.0.0.1), evaluator={args.evaluator}, {args.epochs} epochs, "
          f"{os.cpu_count()} cores")
    print("| workers | wall s | trials | trials/min | same trials as the first row |\n|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
