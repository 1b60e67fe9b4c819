"""GRS, RRS, NWM and JGRS as keras-tuner Oracles.

An oracle only decides: it turns the finished trials into the engine's outcomes, asks the engine what comes next
(:meth:`keras_grs.search.Search.plan`) and hands out one candidate per ``create_trial``. It never trains.

Trial 0 is the initial structure (every width at its ``hp.Int`` ``max_value``); its objective is OriValAcc.
Every later trial is a candidate whose hyperparameter values are the widths (the user's other hyperparameters at
their default). What the search needs to know about a trial is the oracle's own bookkeeping, not a
hyperparameter, so ``get_best_hyperparameters()`` and ``search_space_summary()`` show the user's space only:

==============  ======================================================================
``grs_key``     the candidate's key in the search (``init``, ``grs.c7``, ``far1.a2.c1``)
``grs_parent``  the trial id whose trained weights the candidate inherits ("" for trial 0)
``grs_group``   the width names it prunes, comma-separated
``grs_removed`` JSON: width name -> indices (relative to the parent's units) removed
``grs_phase``   ``initial``, the method name, or the JGRS phase (``far1``, ``far2``, ``near``)
==============  ======================================================================

:meth:`PruningOracle.bookkeeping` returns these values of a trial. They live in the oracle's state
(``oracle.json``, so a resumed search keeps them) and in ``trial_<id>/candidate.json``, written when the trial is
created: a distributed worker, which only talks to the chief through keras-tuner's gRPC protos, reads its
trial's parent and removed units from there (the project directory is shared anyway: workers inherit weights
from their parents' checkpoints in it).

Every decision is derived from the stored trials and the seed, so a search killed at any moment resumes with
``overwrite=False`` without losing or repeating a finished trial.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime

import keras_tuner
from keras_tuner.src.engine import trial as trial_module
from keras_tuner.src.engine.hyperparameters import hp_types
from keras_tuner.src.engine.oracle import Display

from keras_grs.files import settle, write_json
from keras_grs.guard import (DEFAULT_ACCEPTANCE, DEFAULT_GUARD_FRACTION, check_acceptance, check_guard_fraction,
                             epoch_score_for, search_margin)
from keras_grs.scoring import objective_direction, objective_name
from keras_grs.search import (INITIAL_KEY, UNCONSTRAINED, GroupSpec, Outcome, Plan, check_cost, check_tolerance,
                              check_width_multiple, make_search)
from keras_grs.search.methods import ByMethod, method_named

KEY, PARENT, GROUP, REMOVED, PHASE = "grs_key", "grs_parent", "grs_group", "grs_removed", "grs_phase"
BOOKKEEPING = (KEY, PARENT, GROUP, REMOVED, PHASE)
NORMS_FILE = "unit_norms.json"
CANDIDATE_FILE = "candidate.json"  # a trial's bookkeeping, beside keras-tuner's trial.json
GUARD_PREFIX = "guard_"  # a trial's score on the guard split is its metric guard_<objective without val_>
Status = trial_module.TrialStatus


GUARD_FILE = "guard_outcomes.json"  # in a trial's directory: which guard samples it gets right (accuracy only)
VAL_SAMPLES = "val_samples"  # trial metric: how many validation samples scored it (the acceptance margin's noise)
GUARD_SAMPLES = "guard_samples"  # trial metric: the guard's size, which the walk back's noise margin reads


def guard_metric(objective) -> str:
    """The trial metric that holds the guard split's score: ``guard_accuracy`` for ``val_accuracy``."""
    return GUARD_PREFIX + objective_name(objective)


def _as_objective(objective):
    """keras-tuner infers a direction for known metric names only; keras-grs also knows ``*loss`` (minimized) and
    ``*accuracy``/``*auc`` (maximized)."""
    if isinstance(objective, str):
        return keras_tuner.Objective(objective, objective_direction(objective))
    if isinstance(objective, (list, tuple)):
        raise ValueError("a pruning search keeps one objective within tolerance; pass one, not a list")
    return objective


class PruningOracle(keras_tuner.Oracle):
    """Base of the pruning oracles; ``method`` names the search (see :mod:`keras_grs.search`).

    Args:
        objective: the score to keep within tolerance, a keras-tuner objective (default ``val_accuracy``); its
            direction decides acceptance: a maximized score is valid when ``score >= tolerance x reference``, a
            minimized one (``val_loss``, ``Objective("val_mse", "min")``) when ``score <= reference / tolerance``.
        tolerance: in (0, 1], default 0.985; the reference is the initial structure's score.
        acceptance: ``guard`` (default): a candidate clears the tolerance by a margin of its score's sampling
            noise (accuracy), and the final structure is the last accepted one that the guard split confirms (see
            :mod:`keras_grs.guard`); ``seed``: the seed's rule, the last accepted structure.
        guard_fraction: the share of the validation data held back as the guard when no ``guard_data`` is given
            to ``search``.
        epoch_score: how a candidate's epochs make its score: ``best`` (keras-tuner's best epoch) or ``last``
            (the last epoch's score and weights); default: ``last`` with the guard,
            ``best`` with the seed's rule.
        widths: names of the ``hp.Int`` hyperparameters that are layer widths; default: every ``hp.Int``.
        frozen: names of widths (``hp.Int`` names; with ``GRSTuner.from_model`` the group names) the search never
            prunes: they stay at their ``max_value``.
        width_multiple: every width the search proposes is a multiple of it (default 1: any width); a starting
            width that is not a multiple loses the remainder at its first removal (see
            :class:`keras_grs.search.GroupSpec`).
        cost: ``flops`` (default) or ``pi-zero``: what the search minimizes among equally good candidates (greedy
            ties, the JGRS attempt kept): FLOPs, or the estimated Raspberry Pi Zero milliseconds of the generated
            C (:func:`keras_grs.estimate_latency`, recorded per trial as the metric ``latency_ms``).
        seed: seed of every random decision (keras-tuner picks one when None; it is saved with the project).
        units: override the method's unit selection, ``random`` or ``magnitude``.
        max_trials, hyperparameters, allow_new_entries, tune_new_entries, max_retries_per_trial,
        max_consecutive_failed_trials: as for every keras-tuner Oracle.
    """

    method = "grs"

    def __init__(
        self,
        objective="val_accuracy",
        tolerance=0.985,
        widths=None,
        seed=None,
        units=None,
        acceptance=DEFAULT_ACCEPTANCE,
        guard_fraction=DEFAULT_GUARD_FRACTION,
        epoch_score=None,
        frozen=None,
        width_multiple=1,
        cost="flops",
        max_trials=None,
        hyperparameters=None,
        allow_new_entries=True,
        tune_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        **method_options,
    ):
        check_tolerance(tolerance)
        self.frozen = sorted([frozen] if isinstance(frozen, str) else frozen or [])
        self.width_multiple = check_width_multiple(width_multiple)
        self.cost = check_cost(cost)
        self.acceptance = check_acceptance(acceptance)
        self.guard_fraction = check_guard_fraction(guard_fraction)
        self.epoch_score = epoch_score_for(acceptance, epoch_score)
        super().__init__(
            objective=_as_objective(objective),
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries,
            tune_new_entries=tune_new_entries,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        if seed is not None:  # keras-tuner's Oracle takes `seed or random.randint(...)`: a seed of 0 drew a random one
            self.seed = self._seed_state = int(seed)
        self.tolerance = float(tolerance)
        self.widths = list(widths) if widths is not None else None
        self.units = units
        self.method_options = method_named(self.method).stored_options(method_options)
        self._bookkeeping = {}  # trial id -> {grs_key: ..., grs_parent: ..., ...}
        self._display = PruningDisplay(self)
        self.progress = None  # when set, overrides the display's verbosity (fit's verbose stays the user's)
        self._search = None
        self._plan_cache = (None, None)
        self._side_files = {}  # (trial id, file name) -> what a trial's side file holds (None: not written)
        self._outcome_cache = {}  # trial id -> ((status, score), its Outcome)
        self._trial_files_deferred = False
        self._saved_by_caller = False

    # -- the search ----------------------------------------------------------------------------------------
    def width_hyperparameters(self) -> list:
        """The ``hp.Int`` entries of the space that are layer widths, in declaration order."""
        ints = [hp for hp in self.hyperparameters.space if isinstance(hp, hp_types.Int)]
        if self.widths is None:
            return ints
        names = {hp.name for hp in ints}
        missing = [name for name in self.widths if name not in names]
        if missing:
            raise ValueError(
                f"widths {missing} are not hp.Int hyperparameters of the hypermodel; its hp.Int are {sorted(names)}"
            )
        return [hp for hp in ints if hp.name in self.widths]

    @property
    def search(self):
        if self._search is None:
            hps = self.width_hyperparameters()
            if not hps:
                raise ValueError(
                    "the hypermodel declares no width: pruning needs at least one hp.Int(name, min_value, "
                    "max_value) that sets a layer's units or filters"
                )
            groups = [GroupSpec(hp.name, int(hp.max_value), max(1, int(hp.min_value))) for hp in hps]
            self._search = make_search(
                self.method, groups, self.tolerance, self.seed, units=self.units,
                direction=objective_direction(self.objective), frozen=self.frozen,
                width_multiple=self.width_multiple, cost=self.cost,
                margin=search_margin(self.acceptance, self.objective), **self.method_options
            )
        return self._search

    def plan(self) -> Plan:
        """The engine's view of the search, replayed over the finished trials (cached until a trial changes)."""
        signature = tuple((t.trial_id, t.status, t.score) for t in self.trials.values())
        if self._plan_cache[0] != signature:
            self._plan_cache = (signature, self.search.plan(self._outcomes()))
        return self._plan_cache[1]

    def _outcomes(self) -> dict[str, Outcome]:
        outcomes = {}
        for trial in self.trials.values():
            key = self.bookkeeping(trial.trial_id).get(KEY)
            if not key:
                continue
            outcome = self._outcome_of(trial)
            if outcome is not None:
                outcomes[key] = outcome
        return outcomes

    def _outcome_of(self, trial) -> Outcome | None:
        """A finished trial's outcome, read from its metrics and side files once per (status, score): the same
        object every time, so that the engine's replay sees at a glance that it has not changed."""
        state = (trial.status, trial.score)
        cached = self._outcome_cache.get(trial.trial_id)
        if cached is None or cached[0] != state:
            cached = self._outcome_cache[trial.trial_id] = (state, self._read_outcome(trial))
        return cached[1]

    def _read_outcome(self, trial) -> Outcome | None:
        needs_norms = method_named(self.method).needs_norms(self.units)
        guard = guard_metric(self.objective) if self.acceptance == "guard" else None
        if trial.status == Status.COMPLETED:
            return Outcome(
                score=trial.score,
                params=_last(trial, "params"),
                flops=_last(trial, "flops"),
                latency_ms=_last(trial, "latency_ms", float),
                unit_norms=self._unit_norms(trial) if needs_norms else None,
                guard=_last(trial, guard, float) if guard else None,
                guard_samples=_last(trial, GUARD_SAMPLES) if guard else None,
                guard_right=self._guard_right(trial) if guard else None,
                samples=_last(trial, VAL_SAMPLES),
            )
        if trial.status == Status.FAILED:
            return Outcome(score=None)
        return None

    def _side_file(self, trial, name):
        """A JSON file the tuner wrote into the trial's directory (read once), or None when it wrote none."""
        key = (trial.trial_id, name)
        if key not in self._side_files:
            path = os.path.join(self._project_dir, f"trial_{trial.trial_id}", name)  # not _get_trial_dir: it creates
            self._side_files[key] = None
            settle()  # a file this process hands to a writer (see keras_grs.files.deferred_to) is read once written
            if os.path.exists(path):
                with open(path) as f:
                    self._side_files[key] = json.load(f)
        return self._side_files[key]

    def side_file_written(self, trial_id, name, value) -> None:
        """The tuner wrote ``value`` (JSON) to the trial's side file ``name``: remembered, so that it is not read
        back (nor waited for, when it is written behind)."""
        self._side_files[(trial_id, name)] = json.loads(json.dumps(value))

    def _guard_right(self, trial):
        """Which guard samples the trial got right (packed); None when it recorded none."""
        record = self._side_file(trial, GUARD_FILE)
        return record.get("right") if isinstance(record, dict) else None

    def _unit_norms(self, trial):
        return self._side_file(trial, NORMS_FILE)

    def populate_space(self, trial_id):
        plan = self.plan()
        if plan.finished:
            return {"status": Status.STOPPED, "values": None}
        running = {self.bookkeeping(t.trial_id).get(KEY) for t in self.ongoing_trials.values()}
        running |= {self.bookkeeping(t).get(KEY) for t in self._retry_queue}
        for candidate in plan.pending:
            if candidate.key not in running:
                self._record_bookkeeping(trial_id, candidate)
                return {"status": Status.RUNNING, "values": self._values(candidate)}
        return {"status": Status.IDLE, "values": None}

    def _values(self, candidate) -> dict:
        values = {hp.name: hp.default for hp in self.hyperparameters.space if hp.name not in BOOKKEEPING}
        values.update(dict(zip([g.name for g in self.search.groups], candidate.widths)))
        return values

    def _record_bookkeeping(self, trial_id, candidate):
        removed = candidate.removed_dict
        record = {
            KEY: candidate.key,
            PARENT: self.trial_id_of(candidate.parent) if candidate.parent else "",
            GROUP: ",".join(removed),
            REMOVED: json.dumps(removed, sort_keys=True),
            PHASE: candidate.phase,
        }
        self._bookkeeping[trial_id] = record
        # atomic; in a search's own process written behind, in order with the trial's other files (files.deferred_to)
        write_json(os.path.join(self._get_trial_dir(trial_id), CANDIDATE_FILE), record)

    def bookkeeping(self, trial_id) -> dict:
        """What the search knows of a trial: ``grs_key``, ``grs_parent``, ``grs_group``, ``grs_removed`` (JSON),
        ``grs_phase`` (see the module's docstring); empty for a trial id the oracle never handed out."""
        return self._bookkeeping.get(trial_id, {})

    def trial_id_of(self, key: str) -> str:
        for trial in self.trials.values():
            if self.bookkeeping(trial.trial_id).get(KEY) == key and trial.status == Status.COMPLETED:
                return trial.trial_id
        raise KeyError(f"no completed trial holds candidate {key!r}")

    # -- results -------------------------------------------------------------------------------------------
    def get_best_trials(self, num_trials=1):
        """The compact structure's trial first (the final one: last accepted, smallest valid, confirmed by the
        guard with ``acceptance="guard"``), then the earlier accepted ones."""
        plan = self.plan()
        final = plan.final_index
        steps = plan.path[: final + 1] if final is not None else []
        ids = [self.trial_id_of(step.key) for step in reversed(steps)]
        return [self.trials[i] for i in ids[:num_trials]]

    # -- state ---------------------------------------------------------------------------------------------
    def _config(self) -> dict:
        return {
            "method": self.method,
            "tolerance": self.tolerance,
            "widths": self.widths,
            "units": self.units,
            "options": dict(self.method_options),
            "objective": self.objective.name,
            "direction": objective_direction(self.objective),
            "acceptance": self.acceptance,
            "guard_fraction": self.guard_fraction,
            "epoch_score": self.epoch_score,
            "frozen": self.frozen,
            "width_multiple": self.width_multiple,
            "cost": self.cost,
        }

    def get_state(self):
        state = super().get_state()
        state["pruning"] = self._config()
        state["pruning_trials"] = self._bookkeeping
        return state

    def set_state(self, state):
        saved = state.get("pruning")
        if saved is not None:
            saved = {**UNCONSTRAINED, **saved}
        if saved is not None and saved != self._config():
            raise ValueError(
                f"the project at {self._project_dir} was created with {saved}, not {self._config()}; resume it with "
                "the same settings, or pass overwrite=True (or a new project_name) to start a new search"
            )
        super().set_state(state)
        self._outcome_cache = {}
        self._bookkeeping = dict(state.get("pruning_trials", {}))
        for trial_id, trial in self.trials.items():  # a project saved when the bookkeeping were hyperparameters
            if trial_id not in self._bookkeeping and trial.hyperparameters.values.get(KEY):
                self._bookkeeping[trial_id] = {name: trial.hyperparameters.values.get(name, "") for name in BOOKKEEPING}
        self._search = None

    def discard(self, trial_id, why: str) -> None:
        """Forget a finished trial's outcome (its checkpoint was found damaged): it is marked INVALID with ``why``
        and the engine hands its candidate out again as a new trial, never reusing the damaged weights."""
        trial = self.trials[trial_id]
        trial.status, trial.message = Status.INVALID, why
        for name in (NORMS_FILE, GUARD_FILE):
            self._side_files.pop((trial_id, name), None)
        self._save_trial(trial)
        self.save()

    def reload(self):
        super().reload()
        # A trial that completed just before the process died may still be listed as ongoing: do not rerun it.
        self._retry_queue = [t for t in self._retry_queue if self.trials[t].status != Status.COMPLETED]

    # keras-tuner writes its JSON state by truncating the file in place: a stop mid-write left an empty oracle.json
    # or trial.json that made --resume fail. The same content goes through keras_grs.files instead (Oracle.save is
    # public; _save_trial is keras-tuner's private hook, the one place trial.json is written).
    def save(self):
        if not self._saved_by_caller:
            write_json(self._get_oracle_fname(), self.get_state())

    def saved_by_caller(self):
        """Within the block the oracle does not write its state: the caller saves it right after (keras-tuner's
        ``Tuner.on_trial_end`` ends the trial, which saves, then saves the tuner, which saves the oracle again)."""
        return self._holding("_saved_by_caller")

    def _save_trial(self, trial):
        if not self._trial_files_deferred:
            write_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state())

    def trial_files_with_end(self):
        """Within the block, ``update_trial`` does not write the trial's file: the caller ends the trials right
        after, and ``end_trial`` writes it with the metrics. A process killed in between leaves the file of the
        trial as it began (running), which a resumed search runs again, as it would without the metrics."""
        return self._holding("_trial_files_deferred")

    @contextlib.contextmanager
    def _holding(self, flag: str):
        """The write that ``flag`` (an attribute) holds back is skipped within the block."""
        setattr(self, flag, True)
        try:
            yield
        finally:
            setattr(self, flag, False)


def _last(trial, name, kind=int):
    if trial.metrics.exists(name):
        value = trial.metrics.get_last_value(name)
        return kind(value) if value is not None else None
    return None


class GRSOracle(PruningOracle):
    """GRS: greedy inter-layer order, random selection of the unit to remove.

    Each step issues one candidate per width above its minimum (one random unit removed); they may run in
    parallel on distributed workers. The best valid candidate becomes the new structure; the search stops when
    no candidate is valid or every width is at its minimum. ``create_trial`` answers IDLE while the current
    step's candidates are still running, STOPPED when the search is over.

    Example:
        >>> oracle = GRSOracle(objective="val_accuracy", tolerance=0.985, seed=1)
    """

    method = "grs"


class RRSOracle(PruningOracle):
    """RRS: a random width loses a random unit at each step; stop at the first candidate that fails."""

    method = "rrs"


class NWMOracle(PruningOracle):
    """NWM: widths in natural order (input to output); the unit with the smallest L1 norm of its incoming
    weights goes; on a failure the last valid model is kept and the next width starts; stop after the last."""

    method = "nwm"


class JGRSOracle(PruningOracle):
    """JGRS: far sub-phases of jumps (every width loses ``rate`` of its units at once), then GRS near the end.

    Args:
        phases: sequence of ``(rate, attempts)`` (``rate=None`` for the near phase, last); default
            ``[(0.5, 3), (0.2, 3), (None, 3)]``. Attempts of a phase run together; the valid result with the
            fewest FLOPs starts the next phase.
    """

    method = "jgrs"


ORACLES = ByMethod(PruningOracle, "Oracle")  # every registered method's oracle (see keras_grs.search.methods)


class PruningDisplay(Display):
    """One line as a trial starts and one as it ends: phase, structure, parent, score, verdict, elapsed; and a line
    each time the search accepts a new structure."""

    def __init__(self, oracle, verbose=1):
        super().__init__(oracle, verbose)
        self._last_accepted = None

    @property
    def active(self) -> bool:
        progress = getattr(self.oracle, "progress", None)
        return bool(progress) if progress is not None else self.verbose >= 1

    def on_trial_begin(self, trial):
        if not self.active:
            return
        now = datetime.now()
        self.trial_start[trial.trial_id] = now
        self.search_start = self.search_start or now
        self.trial_number[trial.trial_id] = len(self.oracle.trials)
        values = trial.hyperparameters.values
        record = self.oracle.bookkeeping(trial.trial_id)
        widths = "x".join(str(values[g.name]) for g in self.oracle.search.groups)
        source = f"from trial {record[PARENT]}, pruning {record[GROUP]}" if record.get(PARENT) else "initial structure"
        print(f"Trial {trial.trial_id} [{record.get(PHASE)}] {widths}: {source}", flush=True)

    def on_trial_end(self, trial):
        if not self.active:
            return
        plan = self.oracle.plan()
        key = self.oracle.bookkeeping(trial.trial_id).get(KEY)
        elapsed = self.format_duration(datetime.now() - self.search_start) if self.search_start else "?"
        if trial.score is None:
            print(f"  trial {trial.trial_id} failed: {str(trial.message or '').strip().splitlines()[-1:]}", flush=True)
            return
        verdict = plan.verdicts.get(key)  # the engine's verdict; a GRS step decides once all its trials end
        if verdict is None:
            samples = _last(trial, VAL_SAMPLES)
            verdict = "valid" if self.oracle.search.accepts(trial.score, plan.reference, samples) else "failed"
        best = plan.path[-1] if plan.path else None
        best_text = "x".join(map(str, best.widths)) if best else "?"
        print(f"  {self.oracle.objective.name} {trial.score:.4f} {verdict}; elapsed {elapsed}", flush=True)
        if best is not None and best.key != self._last_accepted:
            self._last_accepted = best.key
            if key != INITIAL_KEY:
                print(f"  accepted {best_text} [{best.phase}]: {best.params or 0:,} params, {best.flops or 0:,} FLOPs, "
                      f"{self.oracle.objective.name} {best.score:.4f}", flush=True)
        if plan.finished:
            print(f"  search finished: compact structure {best_text} after {len(self.oracle.trials)} trials", flush=True)
