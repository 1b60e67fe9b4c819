"""A fake, deterministic objective for driving pruning samplers without Keras (also run as a worker process)."""

import json
import sys
import time

import optuna

from keras_grs.optuna.samplers import CONFIG_ATTR, FINISHED_ATTR, SAMPLERS

GROUPS = [{"name": "a", "width": 6, "min_width": 1}, {"name": "b", "width": 5, "min_width": 1},
          {"name": "c", "width": 4, "min_width": 1}]
COSTS = {"a": 0.001, "b": 0.004, "c": 0.01}


def score(widths):
    return 1.0 - sum(COSTS[g["name"]] * (g["width"] - w) for g, w in zip(GROUPS, widths))


def prepare(study, tolerance=0.985):
    if CONFIG_ATTR not in study.user_attrs:
        study.set_user_attr(CONFIG_ATTR, {"groups": GROUPS, "tolerance": tolerance, "sampler": {}, "model": {}})


def objective_for(study, delay=0.0):
    def objective(trial):
        if study._storage.get_trial_system_attrs(trial._trial_id).get(FINISHED_ATTR):
            study.stop()
            raise optuna.TrialPruned()
        widths = [trial.suggest_int(g["name"], g["min_width"], g["width"]) for g in GROUPS]
        trial.set_user_attr("unit_norms", json.dumps({g["name"]: list(range(w)) for g, w in zip(GROUPS, widths)}))
        time.sleep(delay)
        return score(widths), float(sum(widths))

    return objective


def drive(study, n_trials=500, delay=0.0):
    prepare(study)
    study.optimize(objective_for(study, delay), n_trials=n_trials)


if __name__ == "__main__":
    url, method, n_trials, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=url, study_name="fake", sampler=SAMPLERS[method](seed=3),
                                directions=["maximize", "minimize"], load_if_exists=True)
    drive(study, n_trials, delay)
