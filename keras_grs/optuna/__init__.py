"""Optuna backend: the pruning methods as Optuna samplers, studies visible in optuna-dashboard.

In a plain Optuna objective::

    study = optuna.create_study(direction="maximize", sampler=kgo.GRSSampler(tolerance=0.97, seed=0))
    def objective(trial):
        model = build(a=trial.suggest_int("a", 1, 16), b=trial.suggest_int("b", 1, 8))
        kgo.inherit(trial, model)      # the parent's surviving trained weights
        model.fit(x, y, epochs=5, verbose=0)
        kgo.keep(trial, model)         # stored for the trial's children
        return model.evaluate(x_val, y_val, verbose=0)[1]
    study.optimize(objective, n_trials=100)   # stops by itself when the method ends

Or let :func:`optimize` build, inherit and train::

    from keras_grs import optuna as kgo
    study = kgo.create_study(kgo.RRSSampler(seed=0), directory="runs", study_name="nn1-rrs")
    kgo.optimize(study, model, x, y, (x_val, y_val), tolerance=0.985, epochs=10)
    compact = kgo.best_model(study, model, directory="runs")
"""

from keras_grs.optuna.samplers import GRSSampler, JGRSSampler, NWMSampler, PruningSampler, RRSSampler
from keras_grs.optuna.study import best_model, create_study, open_storage, optimize, pruning_path, trial_model
from keras_grs.optuna.weights import inherit, keep

__all__ = [
    "GRSSampler",
    "JGRSSampler",
    "NWMSampler",
    "PruningSampler",
    "RRSSampler",
    "best_model",
    "create_study",
    "inherit",
    "keep",
    "open_storage",
    "optimize",
    "pruning_path",
    "trial_model",
]
