"""A fake, deterministic objective for driving pruning samplers without Keras (also run as a worker process).

The objective is a plain Optuna objective: the widths come from ``suggest_int``, the sampler learns them from the
first trial. Run as a script: ``python optuna_fake.py STORAGE METHOD N_TRIALS DELAY SEED`` (STORAGE: a database
URL, or ``journal:PATH`` for a JournalStorage file).
"""

import json
import sys
import time

import optuna

from keras_grs.optuna.samplers import SAMPLERS

GROUPS = [{"name": "a", "width": 6, "min_width": 1}, {"name": "b", "width": 5, "min_width": 1},
          {"name": "c", "width": 4, "min_width": 1}]
COSTS = {"a": 0.001, "b": 0.004, "c": 0.01}


def score(widths):
    return 1.0 - sum(COSTS[g["name"]] * (g["width"] - w) for g, w in zip(GROUPS, widths))


def objective_for(delay=0.0, values="both"):
    """``values``: ``both`` (score, total width), ``score`` (single objective), ``loss`` (1 / score, minimized)."""

    def objective(trial):
        widths = [trial.suggest_int(g["name"], g["min_width"], g["width"]) for g in GROUPS]
        # What keras_grs.optuna.keep records for NWM: every unit's norm (here, unit i has norm i).
        trial.set_user_attr("unit_norms", json.dumps({g["name"]: list(range(w)) for g, w in zip(GROUPS, widths)}))
        time.sleep(delay)
        if values == "score":
            return score(widths)
        if values == "loss":
            return 1.0 / score(widths)
        return score(widths), float(sum(widths))

    return objective


def drive(study, n_trials=500, delay=0.0, values="both"):
    study.optimize(objective_for(delay, values), n_trials=n_trials)


def storage_of(spec):
    if spec.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(spec[len("journal:"):]))
    return spec


if __name__ == "__main__":
    spec, method = sys.argv[1], sys.argv[2]
    n_trials, delay, seed = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage_of(spec), study_name="fake", sampler=SAMPLERS[method](seed=seed),
                                directions=["maximize", "minimize"], load_if_exists=True)
    drive(study, n_trials, delay)


def start_worker(spec, method="grs", n_trials=200, delay=0.0, seed=3, **popen):
    """This file as a worker process on ``spec``'s study, importing this checkout's keras_grs."""
    import os
    import subprocess

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, os.path.join(here, "optuna_fake.py"), spec, method, str(n_trials), str(delay), str(seed)]
    return subprocess.Popen(command, cwd=here, env=env, **popen)
