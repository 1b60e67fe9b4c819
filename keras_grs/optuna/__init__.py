"""Optuna backend: the pruning methods as Optuna samplers, studies visible in optuna-dashboard.

Example::

    from keras_grs import optuna as kgo
    study = kgo.create_study(kgo.RRSSampler(seed=0), directory="runs", study_name="nn1-rrs")
    kgo.optimize(study, model, x, y, (x_val, y_val), tolerance=0.985, epochs=10)
    compact = kgo.best_model(study, model, directory="runs")
"""

from keras_grs.optuna.samplers import GRSSampler, JGRSSampler, NWMSampler, PruningSampler, RRSSampler
from keras_grs.optuna.study import best_model, create_study, open_storage, optimize, pruning_path, trial_model

__all__ = [
    "GRSSampler",
    "JGRSSampler",
    "NWMSampler",
    "PruningSampler",
    "RRSSampler",
    "best_model",
    "create_study",
    "open_storage",
    "optimize",
    "pruning_path",
    "trial_model",
]
