"""Pruning searches as Optuna samplers.

A sampler keeps nothing that the study's storage does not hold. Before each trial it replays the method
(:meth:`keras_grs.search.Search.plan`) over the study's finished trials, picks a pending candidate that no running
trial holds, and writes the candidate's key into the trial's system attributes; the trial's parameters are the
candidate's widths. Any process that loads the study continues the same search, and several workers on one
study share a GRS step's candidates between them: a claim is written, then checked against every other trial's
(see ``_claim_holds``).

The search's configuration (widths, tolerance, method) lives in the study's user attributes, written by
:func:`keras_grs.optuna.optimize` on the study's first run.
"""

from __future__ import annotations

import json
import random
import time

import optuna
from optuna.distributions import IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from keras_grs.search import GroupSpec, Outcome, make_search
from keras_grs.search.order import DEFAULT_PHASES, check_phases

CONFIG_ATTR = "keras_grs_config"
PATH_ATTR = "keras_grs_path"
KEY_ATTR = "keras_grs_key"
FINISHED_ATTR = "keras_grs_finished"
MAX_FAILURES = 2  # a candidate whose trial failed this many times counts as not valid
IDLE_POLL_SECONDS = 0.5


class PruningSampler(BaseSampler):
    """Base of the pruning samplers. ``method`` names the search (see :mod:`keras_grs.search`).

    Args:
        seed: seed of the search's random decisions (every process of a study must use the same).
        units: override the method's unit selection (``random`` or ``magnitude``).
        idle_timeout: seconds a worker waits for the running candidates of a step before giving up on the trial.
    """

    method = "grs"

    def __init__(self, seed=None, units=None, idle_timeout=3600.0, **method_options):
        self.seed = 0 if seed is None else int(seed)
        self.units = units
        self.idle_timeout = idle_timeout
        self.method_options = method_options
        self._searches = {}

    # -- configuration ------------------------------------------------------------------------------------
    def config(self) -> dict:
        options = dict(self.method_options)
        if "phases" in options:
            options["phases"] = [[p.rate, p.attempts] for p in check_phases(options["phases"])]
        return {"method": self.method, "seed": self.seed, "units": self.units, "options": options}

    def search(self, study):
        config = study.user_attrs.get(CONFIG_ATTR)
        if config is None:
            raise ValueError(
                f"study {study.study_name!r} is not a keras-grs pruning study: run keras_grs.optuna.optimize on it"
            )
        signature = json.dumps(config, sort_keys=True)
        if signature not in self._searches:
            groups = [GroupSpec(g["name"], g["width"], g["min_width"]) for g in config["groups"]]
            self._searches[signature] = make_search(
                self.method, groups, config["tolerance"], self.seed, units=self.units,
                direction=config.get("direction", "max"), **self.method_options
            )
        return self._searches[signature]

    # -- the study's state ----------------------------------------------------------------------------------
    def outcomes(self, study, trials=None) -> dict[str, Outcome]:
        trials = trials if trials is not None else study.get_trials(deepcopy=False)
        outcomes, failures = {}, {}
        for trial in trials:
            key = trial.system_attrs.get(KEY_ATTR)
            if key is None:
                continue
            if trial.state == TrialState.COMPLETE:
                norms = trial.user_attrs.get("unit_norms")
                outcomes[key] = Outcome(
                    score=trial.values[0],
                    params=trial.user_attrs.get("params"),
                    flops=int(trial.values[1]),
                    unit_norms=json.loads(norms) if norms else None,
                    guard=trial.user_attrs.get("guard"),
                )
            elif trial.state == TrialState.FAIL:
                failures[key] = failures.get(key, 0) + 1
                if failures[key] >= MAX_FAILURES and key not in outcomes:
                    outcomes[key] = Outcome(score=None)
        return outcomes

    def plan(self, study):
        return self.search(study).plan(self.outcomes(study))

    # -- Optuna's sampler interface -------------------------------------------------------------------------
    def before_trial(self, study, trial) -> None:
        """Claim a pending candidate for this trial (waiting while a step's candidates run elsewhere)."""
        search = self.search(study)
        started = time.monotonic()
        while True:
            trials = study.get_trials(deepcopy=False)
            plan = search.plan(self.outcomes(study, trials))
            if plan.finished:
                study._storage.set_trial_system_attr(trial._trial_id, FINISHED_ATTR, True)
                return
            taken = {
                t.system_attrs.get(KEY_ATTR): t.number
                for t in trials
                if t.state == TrialState.RUNNING and t.number != trial.number and t.system_attrs.get(KEY_ATTR)
            }
            for candidate in plan.pending:
                if candidate.key in taken:
                    continue
                study._storage.set_trial_system_attr(trial._trial_id, KEY_ATTR, candidate.key)
                if self._claim_holds(study, trial, candidate.key):
                    return
                study._storage.set_trial_system_attr(trial._trial_id, KEY_ATTR, None)  # back off
            if time.monotonic() - started > self.idle_timeout:
                raise RuntimeError(f"no candidate became available within {self.idle_timeout} s")
            time.sleep(IDLE_POLL_SECONDS * (0.5 + random.random()))  # jitter: two workers that backed off differ

    def _claim_holds(self, study, trial, key) -> bool:
        """Checked after writing the claim: if any other running or finished trial holds the candidate, back off.
        Of two claims on one candidate, the later writer always sees the earlier one, so both can never keep it
        (at worst both back off and try again)."""
        for other in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE)):
            if other.number != trial.number and other.system_attrs.get(KEY_ATTR) == key:
                return False
        return True

    def infer_relative_search_space(self, study, trial):
        config = study.user_attrs.get(CONFIG_ATTR)
        if config is None:
            return {}
        return {g["name"]: IntDistribution(g["min_width"], g["width"]) for g in config["groups"]}

    def sample_relative(self, study, trial, search_space):
        # The frozen trial was read before before_trial claimed a candidate: ask the storage.
        key = study._storage.get_trial_system_attrs(trial._trial_id).get(KEY_ATTR)
        if key is None:
            return {}
        candidate = self.plan(study).candidates[key]
        names = [g.name for g in self.search(study).groups]
        return dict(zip(names, candidate.widths))

    def sample_independent(self, study, trial, param_name, param_distribution):
        # Only the widths are sampled, relatively; anything else keeps the low end of its range.
        return optuna.samplers.RandomSampler(seed=self.seed).sample_independent(
            study, trial, param_name, param_distribution
        )


class GRSSampler(PruningSampler):
    """GRS as an Optuna sampler: greedy inter-layer order, random selection of the unit to remove."""

    method = "grs"


class RRSSampler(PruningSampler):
    """RRS as an Optuna sampler: a random width loses a random unit; stop at the first failure."""

    method = "rrs"


class NWMSampler(PruningSampler):
    """NWM as an Optuna sampler: widths in model order, the unit with the smallest L1 norm goes first."""

    method = "nwm"

    def __init__(self, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)


class JGRSSampler(PruningSampler):
    """JGRS as an Optuna sampler: jumps through the far phase, then GRS (``phases`` as for JGRSOracle)."""

    method = "jgrs"

    def __init__(self, seed=None, phases=None, **kwargs):
        phases = [[p.rate, p.attempts] for p in check_phases(phases if phases is not None else DEFAULT_PHASES)]
        super().__init__(seed=seed, phases=phases, **kwargs)


SAMPLERS = {"grs": GRSSampler, "rrs": RRSSampler, "nwm": NWMSampler, "jgrs": JGRSSampler}
