"""Pruning searches as Optuna samplers, for plain Optuna objectives.

A sampler keeps nothing that the study's storage does not hold. Before each trial it replays the method
(:meth:`keras_grs.search.Search.plan`) over the study's finished trials, picks a pending candidate that no running
trial holds, and writes the candidate's key into the trial's system attributes; the trial's ``suggest_int`` calls
then return the candidate's widths. Any process that loads the study continues the same search, and several workers
on one study share a GRS step's candidates between them: a claim is written, then checked against every other
trial's (see ``_claim_holds``).

The search space is learnt from the objective: the study's first trial is the initial structure, so every
``suggest_int`` of it returns its upper bound, and the integer parameters it suggests, in that order, are the width
groups. They are recorded with the method's settings in the study's user attribute ``keras_grs_config`` when that
trial completes, so every process agrees on them (:func:`keras_grs.optuna.optimize` writes them beforehand, from
the model).

Values: the first is the score (its direction, the study's first direction, is honoured); a second value, when the
study has one, is the cost (FLOPs, to minimize). Without it the cost is the FLOPs that
:func:`keras_grs.optuna.keep` recorded, else the total width.

The end: when the method stops, the sampler calls ``study.stop()`` (from ``after_trial``, so a single process starts
no further trial); a trial that starts after the end (another worker's) is pruned at its first ``suggest_*`` call,
before the objective builds or trains anything, with the message "the pruning search has finished".
"""

from __future__ import annotations

import json
import random
import threading
import time
import warnings

import optuna
from optuna.distributions import IntDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from keras_grs.search import (
    INITIAL_KEY,
    UNCONSTRAINED,
    GroupSpec,
    Outcome,
    check_cost,
    check_direction,
    check_tolerance,
    check_width_multiple,
    make_search,
)
from keras_grs.search.methods import ByMethod, method_named

CONFIG_ATTR = "keras_grs_config"
PATH_ATTR = "keras_grs_path"
KEY_ATTR = "keras_grs_key"
RAISED_ATTR = "keras_grs_raised"  # a trial that raised: its process lived to say so (see raised())
ERROR_ATTR = "keras_grs_error"  # what it raised, when keras-grs's objective ran it
DISCARDED_ATTR = "keras_grs_discarded"  # study attribute: completed trials set aside, {number: why}
DEFAULT_TOLERANCE = 0.985
DEFAULT_SEED = 0
MAX_FAILURES = 2  # a candidate whose trial failed this many times counts as not valid
IDLE_POLL_SECONDS = 0.5
FINISHED_MESSAGE = "the pruning search has finished"


def raised(trial) -> bool:
    """A FAIL trial whose objective raised; not one failed because its process died (a kill, a crash of the
    machine): that candidate simply runs again, however often it happens."""
    return trial.state == TrialState.FAIL and bool(trial.system_attrs.get(RAISED_ATTR))


def spent_trials(study) -> int:
    """How much of a trial budget (``max_trials``) the study has spent: the trials that finished, were pruned or
    raised. One failed because its process died, still marked running, or set aside (:func:`discard`) is not
    spent: its candidate runs again, and a run killed and resumed evaluates as many candidates as its uninterrupted
    twin (as with keras-tuner, which retries an interrupted trial under its own id)."""
    set_aside = discarded(study)
    return sum(1 for t in study.get_trials(deepcopy=False) if t.number not in set_aside
               and (t.state in (TrialState.COMPLETE, TrialState.PRUNED) or raised(t)))


def stop_at_budget(max_trials: int):
    """An Optuna callback that stops the study once :func:`spent_trials` reaches ``max_trials``: the budget of the
    whole study, which several workers share (each worker's own ``n_trials`` cannot see the others' trials). A
    worker may still finish the trial it is running when another one fills the budget."""
    def stop(study, trial) -> None:
        if spent_trials(study) >= max_trials:
            study.stop()

    return stop


def discarded(study) -> dict[int, str]:
    """The completed trials set aside by :func:`discard`, with why: the search ignores their results."""
    return {int(number): why for number, why in (study.user_attrs.get(DISCARDED_ATTR) or {}).items()}


def discard(study, number: int, reason: str) -> None:
    """Set completed trial ``number`` aside (its checkpoint was found damaged): the search no longer counts its
    result, and a new trial evaluates its candidate again. Optuna cannot change a finished trial, so the study's
    user attribute ``keras_grs_discarded`` records it."""
    study.set_user_attr(DISCARDED_ATTR, {**(study.user_attrs.get(DISCARDED_ATTR) or {}), str(number): reason})


def _set_trial_attr(study, trial, key, value, system=False) -> None:
    """Write an attribute of a running trial from a sampler hook.

    Optuna 5.0 has no public way to do this: the hooks receive a FrozenTrial, and a study exposes neither its
    storage nor a trial's id publicly; Optuna's own samplers (GridSampler, ...) write through ``study._storage``.
    """
    storage, trial_id = study._storage, trial._trial_id
    if system:
        storage.set_trial_system_attr(trial_id, key, value)
    else:
        storage.set_trial_user_attr(trial_id, key, value)


def _stop(study) -> None:
    """``study.stop()``, which Optuna refuses outside ``study.optimize`` (with ask-and-tell the caller stops)."""
    try:
        study.stop()
    except RuntimeError:
        pass


class PruningSampler(BaseSampler):
    """Base of the pruning samplers. ``method`` names the search (see :mod:`keras_grs.search`).

    Args:
        seed: seed of the search's random decisions. A study keeps the seed of the process that started it; a
            worker passing another one joins with a warning and follows the study's (None: the study's, or 0).
        tolerance: acceptance: a candidate is valid when its score >= tolerance x the initial score (a score to
            maximize) or <= the initial score / tolerance (to minimize). None: the study's, or 0.985.
        units: override the method's unit selection (``random`` or ``magnitude``).
        frozen: names of widths (``suggest_int`` names) the search never prunes: they stay at their upper bound.
        width_multiple: every width the search proposes is a multiple of it (see
            :class:`keras_grs.search.GroupSpec` for a width that is not one at the start).
        cost: ``flops`` (default) or ``pi-zero``: what the search minimizes among equally good candidates (greedy
            ties, the JGRS attempt kept): FLOPs, or the estimated Raspberry Pi Zero milliseconds of the generated
            C (:func:`keras_grs.estimate_latency`, recorded per trial as the user attribute ``latency_ms``).
        store: where :func:`keras_grs.optuna.keep` puts trained weights when not told otherwise: a directory (on
            shared disk for several machines) or an Optuna artifact store. None: next to the storage's file.
        idle_timeout: seconds a worker waits for the running candidates of a step before giving up on the trial.

    Example (plain Optuna; see :func:`keras_grs.optuna.inherit` for training)::

        >>> import optuna, keras_grs.optuna as kgo
        >>> study = optuna.create_study(direction="maximize", sampler=kgo.GRSSampler(tolerance=0.95, seed=0))
        >>> study.optimize(lambda t: 1.0 - (8 - t.suggest_int("a", 1, 8)) / 30, n_trials=50)
        >>> study.trials[0].params, kgo.pruning_path(study)[-1]["structure"]
        ({'a': 8}, '7')
    """

    method = "grs"

    def __init__(self, seed=None, tolerance=None, units=None, store=None, idle_timeout=3600.0, frozen=None,
                 width_multiple=1, cost="flops", **method_options):
        if tolerance is not None:
            check_tolerance(tolerance)
        self.frozen = sorted([frozen] if isinstance(frozen, str) else frozen or [])
        self.width_multiple = check_width_multiple(width_multiple)
        self.cost = check_cost(cost)
        self.seed = None if seed is None else int(seed)
        self.tolerance = None if tolerance is None else float(tolerance)
        self.units = units
        self.store = store
        self.idle_timeout = idle_timeout
        self.method_options = method_named(self.method).stored_options(method_options)
        self._searches = {}
        self._warned = set()
        # What one process knows about the trials it runs (claims, and the initial trial's suggestions in order).
        self._running = {}
        self._lock = threading.Lock()

    @property
    def needs_norms(self) -> bool:
        """Whether the method reads the trained units' L1 norms (NWM): :func:`keep` records them then."""
        return method_named(self.method).needs_norms(self.units)

    # -- configuration ------------------------------------------------------------------------------------
    def config(self, seed=None) -> dict:
        """The sampler's settings as the study records them (``seed``: the one to record)."""
        options = dict(self.method_options)
        chosen = seed if seed is not None else self.seed
        return {"method": self.method, "seed": DEFAULT_SEED if chosen is None else chosen, "units": self.units,
                "options": options, "frozen": self.frozen, "width_multiple": self.width_multiple,
                "cost": self.cost}

    def settings(self, study) -> dict | None:
        """The study's recorded configuration, checked against this sampler (None for a study not started yet).

        A different method, unit selection, options, frozen widths, width multiple, cost or tolerance is refused; a
        different seed is overruled by the study's, with a warning (so workers may pass their own seeds, as Optuna
        users do)."""
        config = study.user_attrs.get(CONFIG_ATTR)
        if config is None:
            return None
        recorded, mine = {**UNCONSTRAINED, **config["sampler"]}, self.config(seed=config["sampler"]["seed"])
        differing = sorted(k for k in mine if recorded.get(k) != mine[k])
        if differing:
            raise ValueError(
                f"study {study.study_name!r} runs another pruning search ({', '.join(differing)}: "
                f"{({k: recorded.get(k) for k in differing})}); this sampler has {({k: mine[k] for k in differing})}"
            )
        if self.tolerance is not None and self.tolerance != config["tolerance"]:
            raise ValueError(
                f"study {study.study_name!r} was started with tolerance {config['tolerance']}; this sampler has "
                f"{self.tolerance}"
            )
        if self.seed is not None and self.seed != recorded["seed"] and study.study_name not in self._warned:
            self._warned.add(study.study_name)
            warnings.warn(
                f"study {study.study_name!r} was started with sampler seed {recorded['seed']}; this worker's seed "
                f"{self.seed} is ignored so that every worker takes the same decisions",
                stacklevel=2,
            )
        return config

    def study_seed(self, study) -> int:
        """The seed the study's search uses (the recorded one once the study has started)."""
        config = self.settings(study)
        return config["sampler"]["seed"] if config is not None else self.config()["seed"]

    def search(self, study):
        """The study's :class:`keras_grs.search.Search` (its widths are known once the first trial completed)."""
        config = self.settings(study)
        if config is None or "groups" not in config:
            raise ValueError(
                f"study {study.study_name!r} has no completed first trial yet: its widths are learnt from the "
                "first trial's suggest_int calls"
            )
        direction = self.direction(study)
        signature = json.dumps([config, direction], sort_keys=True)
        if signature not in self._searches:
            groups = [GroupSpec(g["name"], g["width"], g["min_width"]) for g in config["groups"]]
            self._searches[signature] = make_search(
                self.method, groups, config["tolerance"], config["sampler"]["seed"], units=self.units,
                direction=direction, frozen=self.frozen, width_multiple=self.width_multiple, cost=self.cost,
                margin=config.get("margin", 0.0), **self.method_options,
            )
        return self._searches[signature]

    @staticmethod
    def direction(study) -> str:
        """``max`` or ``min``: the study's first direction (a second one, for FLOPs, must be ``minimize``)."""
        directions = study.directions
        if len(directions) > 2 or (len(directions) == 2 and directions[1] != optuna.study.StudyDirection.MINIMIZE):
            raise ValueError(
                f"study {study.study_name!r} has directions {[d.name.lower() for d in directions]}; a pruning study "
                "has one value (the score) or two (the score, then FLOPs to minimize)"
            )
        return check_direction(directions[0])

    # -- the study's state ----------------------------------------------------------------------------------
    def outcomes(self, study, trials=None) -> dict[str, Outcome]:
        """The evaluated candidates, by key: completed trials, trials the objective pruned or that failed twice
        (not valid)."""
        trials = trials if trials is not None else study.get_trials(deepcopy=False)
        outcomes, failures = {}, {}
        set_aside = discarded(study)
        for trial in trials:
            key = trial.system_attrs.get(KEY_ATTR)
            if key is None or trial.number in set_aside:
                continue
            if trial.state == TrialState.COMPLETE:
                outcomes[key] = self.outcome(trial.number, trial.values, trial.user_attrs)
            elif trial.state == TrialState.PRUNED:
                outcomes.setdefault(key, Outcome(score=None))
            elif raised(trial):
                failures[key] = failures.get(key, 0) + 1
                if failures[key] >= MAX_FAILURES:
                    outcomes.setdefault(key, Outcome(score=None))
        return outcomes

    def outcome(self, number, values, user_attrs) -> Outcome:
        """Completed trial ``number`` as the engine sees it: the first value is the score; FLOPs are the second
        value, or what :func:`keras_grs.optuna.keep` recorded; ``guard`` the score on the guard split, when the
        objective recorded one (``optimize`` does with ``acceptance="guard"``)."""
        norms = user_attrs.get("unit_norms")
        if self.needs_norms and not norms:
            raise ValueError(
                f"trial {number} recorded no unit norms: {type(self).__name__} removes the units of smallest weight "
                "magnitude, so the objective calls keras_grs.optuna.keep(trial, model) after training"
            )
        flops = values[1] if len(values) > 1 else user_attrs.get("flops")
        return Outcome(
            score=values[0],
            params=user_attrs.get("params"),
            flops=None if flops is None else int(flops),
            unit_norms=json.loads(norms) if norms else None,
            guard=user_attrs.get("guard"),
            guard_samples=user_attrs.get("guard_samples"),
            guard_right=user_attrs.get("guard_right"),
            latency_ms=user_attrs.get("latency_ms"),
            samples=user_attrs.get("val_samples"),
        )

    def plan(self, study, trials=None, extra=None):
        """The method replayed over the study's trials (plus ``extra`` outcomes by key)."""
        outcomes = self.outcomes(study, trials)
        outcomes.update(extra or {})
        return self.search(study).plan(outcomes)

    def candidate(self, trial):
        """The candidate a running trial of this process evaluates (None: the search had finished)."""
        key = self._running.get((trial.study.study_name, trial.number), {}).get("key")
        if key is None:
            return None
        if key == INITIAL_KEY and "groups" not in (self.settings(trial.study) or {}):
            return None  # the initial structure of a study whose widths are being learnt: no parent
        return self.plan(trial.study).candidates[key]

    # -- Optuna's sampler interface -------------------------------------------------------------------------
    def before_trial(self, study, trial) -> None:
        """Claim a pending candidate for this trial (waiting while a step's candidates run elsewhere)."""
        self.direction(study)
        started = time.monotonic()
        while True:
            trials = study.get_trials(deepcopy=False)
            config = self.settings(study)
            if config is None or "groups" not in config:
                if self._claim_initial(study, trial, trials, config):
                    return
            else:
                plan = self.plan(study, trials)
                if plan.finished:
                    self._remember(study, trial, finished=True)
                    _stop(study)
                    return
                if self._claim_pending(study, trial, trials, plan):
                    return
            if time.monotonic() - started > self.idle_timeout:
                raise RuntimeError(f"no candidate became available within {self.idle_timeout} s")
            # Optuna fails a dead process's trial (heartbeat overdue) only when a trial starts: while this one waits
            # for a candidate such a trial holds, nothing else would, and a resumed run would wait idle_timeout.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)
            time.sleep(IDLE_POLL_SECONDS * (0.5 + random.random()))  # jitter: two workers that backed off differ

    def _claim_pending(self, study, trial, trials, plan) -> bool:
        names = [g.name for g in self.search(study).groups]
        taken = {
            t.system_attrs.get(KEY_ATTR)
            for t in trials
            if t.state == TrialState.RUNNING and t.number != trial.number and t.system_attrs.get(KEY_ATTR)
        }
        for candidate in plan.pending:
            if candidate.key in taken or not self._claim(study, trial, candidate.key):
                continue
            parent = None if candidate.parent is None else trial_number_of(study, candidate.parent, trials)
            for name, value in (
                ("parent", parent),
                ("removed", json.dumps(candidate.removed_dict, sort_keys=True)),
                ("phase", candidate.phase),
                ("structure", "x".join(map(str, candidate.widths))),
            ):
                _set_trial_attr(study, trial, name, value)
            self._remember(study, trial, key=candidate.key, widths=dict(zip(names, candidate.widths)))
            return True
        return False

    def _claim_initial(self, study, trial, trials, config) -> bool:
        """The first trial of a study whose widths are not known yet: claim the initial structure (unless another
        trial runs it), and record the sampler's settings."""
        initial = [t for t in trials if t.system_attrs.get(KEY_ATTR) == INITIAL_KEY and t.number != trial.number]
        if any(t.state == TrialState.COMPLETE for t in initial):
            done = next(t for t in initial if t.state == TrialState.COMPLETE)
            raise ValueError(
                f"trial {done.number} of study {study.study_name!r} completed without suggesting an integer: a "
                "pruning study learns its widths from the first trial's suggest_int calls"
            )
        if any(t.state == TrialState.RUNNING for t in initial):
            return False
        failed = [t for t in initial if raised(t) or t.state == TrialState.PRUNED]
        if len(failed) >= MAX_FAILURES or any(t.state == TrialState.PRUNED for t in failed):
            raise ValueError(
                f"the initial structure of study {study.study_name!r} could not be evaluated: trials "
                f"{[t.number for t in failed]} failed or were pruned"
            )
        if not self._claim(study, trial, INITIAL_KEY):
            return False
        if config is None:
            study.set_user_attr(CONFIG_ATTR, {
                "tolerance": DEFAULT_TOLERANCE if self.tolerance is None else self.tolerance,
                "sampler": self.config(),
            })
        _set_trial_attr(study, trial, "phase", "initial")
        self._remember(study, trial, key=INITIAL_KEY, learning=[])
        return True

    def _claim(self, study, trial, key) -> bool:
        _set_trial_attr(study, trial, KEY_ATTR, key, system=True)
        if self._claim_holds(study, trial, key):
            return True
        _set_trial_attr(study, trial, KEY_ATTR, None, system=True)  # back off
        return False

    def _claim_holds(self, study, trial, key) -> bool:
        """Checked after writing the claim: if any other running or finished trial holds the candidate, back off.
        Of two claims on one candidate, the later writer always sees the earlier one, so both can never keep it
        (at worst both back off and try again)."""
        set_aside = discarded(study)
        for other in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE)):
            if other.number not in (trial.number, *set_aside) and other.system_attrs.get(KEY_ATTR) == key:
                return False
        return True

    def _remember(self, study, trial, **state) -> None:
        with self._lock:
            self._running[(study.study_name, trial.number)] = state

    def _state(self, study, trial) -> dict:
        return self._running.get((study.study_name, trial.number), {})

    def infer_relative_search_space(self, study, trial):
        config = study.user_attrs.get(CONFIG_ATTR) or {}
        return {g["name"]: IntDistribution(g["min_width"], g["width"]) for g in config.get("groups", ())}

    def sample_relative(self, study, trial, search_space):
        # Optuna calls this at the trial's first suggest_* call, inside the objective: the place to prune a trial
        # that started after the search ended, before the objective builds or trains anything.
        state = self._state(study, trial)
        if state.get("finished"):
            raise optuna.TrialPruned(FINISHED_MESSAGE)
        return dict(state.get("widths", {}))

    def sample_independent(self, study, trial, param_name, param_distribution):
        state = self._state(study, trial)
        if state.get("finished"):
            raise optuna.TrialPruned(FINISHED_MESSAGE)
        if isinstance(param_distribution, IntDistribution):
            learning = state.get("learning")
            if learning is None:
                known = list(self.infer_relative_search_space(study, trial))
                raise ValueError(
                    f"suggest_int({param_name!r}, {param_distribution.low}, {param_distribution.high}) is not one of "
                    f"the study's widths {known} as its first trial suggested them: every trial of a pruning study "
                    "suggests the same widths with the same bounds"
                )
            if param_distribution.step != 1:
                raise ValueError(
                    f"width {param_name!r} has step {param_distribution.step}: a pruning search removes one unit at "
                    "a time, so widths are suggested with step 1"
                )
            learning.append({"name": param_name, "width": param_distribution.high,
                             "min_width": param_distribution.low})
            return param_distribution.high  # the first trial is the initial structure: every width at its maximum
        # Anything but a width keeps one value for the whole search, the same in every process (drawn from the seed).
        return optuna.samplers.RandomSampler(seed=self.study_seed(study)).sample_independent(
            study, trial, param_name, param_distribution
        )

    def after_trial(self, study, trial, state, values) -> None:
        """Record the widths after the first trial, the trial's verdict and the path; stop the study at the end."""
        with self._lock:
            mine = self._running.pop((study.study_name, trial.number), {})
        key = mine.get("key")
        if key is None:
            return
        if mine.get("learning") is not None and state == TrialState.COMPLETE:
            if not mine["learning"]:
                raise ValueError(
                    f"trial {trial.number} of study {study.study_name!r} suggested no integer: a pruning study "
                    "learns its widths from the first trial's suggest_int calls"
                )
            config = dict(study.user_attrs[CONFIG_ATTR], groups=mine["learning"])
            study.set_user_attr(CONFIG_ATTR, config)  # before the trial is marked complete: no worker sees one without
        if state == TrialState.FAIL:  # it raised; a trial whose process died never reaches this hook
            _set_trial_attr(study, trial, RAISED_ATTR, True, system=True)
        if state != TrialState.COMPLETE:
            return
        trials = study.get_trials(deepcopy=False)
        plan = self.plan(study, trials, extra={key: self.outcome(trial.number, values, trial.user_attrs)})
        search = self.search(study)
        samples = trial.user_attrs.get("val_samples")
        _set_trial_attr(study, trial, "valid", bool(search.accepts(values[0], plan.reference, samples)))
        set_aside = discarded(study)
        numbers = {t.system_attrs.get(KEY_ATTR): t.number for t in trials
                   if t.state == TrialState.COMPLETE and t.number not in set_aside}
        numbers[key] = trial.number
        study.set_user_attr(PATH_ATTR, [
            {"trial": numbers.get(step.key), "phase": step.phase, "structure": "x".join(map(str, step.widths)),
             "objective": step.score, "flops": step.flops, "params": step.params, "guard": step.guard,
             "latency_ms": step.latency_ms, "final": step.key == plan.final}
            for step in plan.path
        ])
        if plan.finished:
            _stop(study)


def trial_number_of(study, key, trials=None) -> int:
    """The number of the completed trial that evaluated candidate ``key`` (not one set aside by :func:`discard`)."""
    trials = trials if trials is not None else study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    set_aside = discarded(study)
    for trial in trials:
        if trial.state == TrialState.COMPLETE and trial.system_attrs.get(KEY_ATTR) == key \
                and trial.number not in set_aside:
            return trial.number
    raise KeyError(f"no completed trial of study {study.study_name!r} holds candidate {key!r}")


class GRSSampler(PruningSampler):
    """GRS as an Optuna sampler: greedy inter-layer order, random selection of the unit to remove."""

    method = "grs"


class RRSSampler(PruningSampler):
    """RRS as an Optuna sampler: a random width loses a random unit; stop at the first failure."""

    method = "rrs"


class NWMSampler(PruningSampler):
    """NWM as an Optuna sampler: widths in model order, the unit with the smallest L1 norm goes first (the
    objective calls :func:`keras_grs.optuna.keep`, which records the norms)."""

    method = "nwm"


class JGRSSampler(PruningSampler):
    """JGRS as an Optuna sampler: jumps through the far phase, then GRS (``phases`` as for JGRSOracle)."""

    method = "jgrs"

    def __init__(self, seed=None, phases=None, **kwargs):  # phases second, as it always was
        super().__init__(seed=seed, phases=phases, **kwargs)


SAMPLERS = ByMethod(PruningSampler, "Sampler")  # every registered method's sampler (see keras_grs.search.methods)
