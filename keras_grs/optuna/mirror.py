"""Mirror keras-tuner pruning trials into an Optuna study, so they sit beside Optuna runs in optuna-dashboard."""

from __future__ import annotations

import warnings

import optuna
from optuna.distributions import IntDistribution

from keras_grs.optuna.study import open_storage
from keras_grs.search import check_direction


class StudyMirror:
    """Adds every completed keras-tuner trial to an Optuna study (values: objective, FLOPs; same user attributes
    as the Optuna backend). Trials already mirrored (by keras-tuner trial id) are skipped, so a resumed search
    mirrors each trial once."""

    def __init__(self, storage, study_name, groups, objective, directory="keras_grs_runs", direction="max", guard=None):
        self.groups = groups
        self.guard = guard  # the trial metric holding the guard's score, when the search has a guard
        directions = ["maximize" if check_direction(direction) == "max" else "minimize", "minimize"]
        self.study = optuna.create_study(
            storage=open_storage(storage, directory), study_name=study_name, directions=directions, load_if_exists=True
        )
        if [d.name.lower() for d in self.study.directions] != directions:
            raise ValueError(f"Optuna study {study_name!r} exists with other directions than {directions}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.study.set_metric_names([objective, "flops"])
        self.study.set_user_attr("keras_grs_source", "keras-tuner")
        self._done = {t.user_attrs.get("keras_tuner_trial") for t in self.study.get_trials(deepcopy=False)}

    def record(self, trial, values) -> None:
        """Mirror one finished keras-tuner trial, given its hyperparameter ``values``."""
        if trial.trial_id in self._done or trial.status != "COMPLETED" or trial.score is None:
            return
        def metric(name):
            return trial.metrics.get_last_value(name) if name and trial.metrics.exists(name) else None

        flops, params, guard, samples = (metric(name) for name in ("flops", "params", self.guard, "guard_samples"))
        guarded = {} if guard is None else {"guard": float(guard), "guard_samples": int(samples or 0)}
        frozen = optuna.trial.create_trial(
            params={g.name: int(values[g.name]) for g in self.groups},
            distributions={g.name: IntDistribution(g.min_width, g.width) for g in self.groups},
            values=[float(trial.score), float(flops or 0)],
            user_attrs={
                "keras_tuner_trial": trial.trial_id,
                "parent": values.get("grs_parent") or None,
                "removed": values.get("grs_removed", ""),
                "phase": values.get("grs_phase", ""),
                "params": None if params is None else int(params),
                "structure": "x".join(str(values[g.name]) for g in self.groups),
                **guarded,
            },
        )
        self.study.add_trial(frozen)
        self._done.add(trial.trial_id)
