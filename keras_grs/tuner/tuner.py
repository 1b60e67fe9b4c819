"""GRSTuner: a keras-tuner Tuner that turns pruning trials into trained, smaller models."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import warnings

import keras
import keras_tuner

from keras_grs.evaluate import make_evaluator, tidy
from keras_grs.evaluate.keras import check_objective
from keras_grs.evaluate.runner import PARENT_CACHE_SIZE, CandidateRunner, Request  # noqa: F401  (its old home)
from keras_grs.files import BackgroundWriter, CorruptFileError, JsonWriter, deferred_to, verify, write_json
from keras_grs.guard import (DEFAULT_ACCEPTANCE, DEFAULT_GUARD_FRACTION, ResolutionWarning, check_guard_data,
                             loss_reads_classes, resolution_warnings, split_guard)
from keras_grs.latency import format_ms
from keras_grs.runlock import RunLock
from keras_grs.search import check_tolerance
from keras_grs.search.methods import method_named
from keras_grs.structure import UnsupportedLayerError, analyze
from keras_grs.surgery import resized
from keras_grs.tuner import distributed, fit_arguments
from keras_grs.tuner.oracles import (GUARD_FILE, GUARD_SAMPLES, KEY, NORMS_FILE, ORACLES, PARENT, REMOVED,
                                     guard_metric)


EVALUATION_FILE = "evaluation.json"  # per trial: the evaluator that trained it, and why one fit per trial if so


@contextlib.contextmanager
def _old_objects_frozen():
    """While a search runs, the objects that existed before it (TensorFlow's and Keras' modules, the data, the
    user's model) are left out of garbage collection (``gc.freeze``): they live until the search ends anyway, and a
    full collection walked all of them (about 0.25 s each, several per search, more than fine-tuning a small
    candidate). The young generations are collected first (what the set-up just left, such as the models built to
    discover the widths), not the oldest: a full collection costs as much as those it saves (0.3-0.4 s), and old
    garbage frozen here is only kept until the search ends. Objects the search creates are collected as usual.
    Untouched when the caller froze some already."""
    if gc.get_freeze_count():
        yield
        return
    gc.collect(1)
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


class GRSTuner(keras_tuner.Tuner):
    """Search for a compact structure of a hypermodel, the keras-tuner way.

    Drop-in for ``keras_tuner.RandomSearch`` and friends: ``tuner.search(x, y, validation_data=..., epochs=...)``,
    ``tuner.get_best_models()``, ``tuner.results_summary()``. Each ``hp.Int`` of the hypermodel is a layer width
    that starts at its ``max_value`` and shrinks toward its ``min_value``; other hyperparameters keep their default.
    Trial 0 trains the initial structure; every later trial builds a candidate, copies its parent trial's trained
    weights minus the removed units, fine-tunes it with your fit arguments and reports the objective, ``params``
    and ``flops``.

    Args:
        hypermodel: a ``keras_tuner.HyperModel`` or a ``build(hp)`` function returning a compiled model.
        objective: the score to keep within tolerance (default ``val_accuracy``). A maximized objective is valid
            when ``score >= tolerance x OriValAcc``; a minimized one (``val_loss``, any ``*loss``,
            ``keras_tuner.Objective("val_mse", "min")``) when ``score <= reference / tolerance``.
        tolerance: in (0, 1], default 0.985.
        acceptance: ``"guard"`` (default): part of the validation data (``guard_fraction``, or the
            ``guard_data`` given to ``search``) is held back from the search; at the end the accepted path is
            walked back to the smallest structure whose guard score is within tolerance too, so the result does
            not rest on a lucky validation score; for accuracy, a candidate must also clear the tolerance by half
            a binomial standard error of the reference's validation accuracy (:data:`keras_grs.guard.GUARD_MARGIN`).
            ``"seed"``: the seed's rule (the last accepted structure).
        guard_fraction: share of the validation data carved out as the guard (stratified by class), in (0, 0.9).
        epoch_score: ``"last"`` (default with the guard): a candidate keeps its last epoch's weights and score;
            ``"best"`` (default with the seed's rule): its best epoch, as
            keras-tuner does. The best of many noisy epochs is optimistic, and on a small validation split an
            early, under-trained checkpoint.
        method: ``grs``, ``jgrs``, ``rrs`` or ``nwm``.
        widths: names of the ``hp.Int`` that are layer widths (default: all of them).
        inherit_weights: candidates start from their parent's trained weights (True) or from scratch (False).
        seed: seed of the search's random decisions.
        phases: for ``method="jgrs"``: ``[(rate, attempts), ..., (None, attempts)]``.
        units: override the unit selection: ``random`` or ``magnitude``.
        frozen: names of widths the search never prunes (``hp.Int`` names; with :meth:`from_model`, group names
            as :func:`keras_grs.analyze` lists them); they keep their ``max_value``. An unknown name is refused,
            listing the widths.
        width_multiple: every width the search proposes is a multiple of this (4 or 8 suit SIMD kernels); a
            starting width that is not a multiple loses its remainder at the first removal of its group (10 -> 8
            -> 4 with 4), and no width goes below the multiple. Refused when larger than a width being pruned.
        cost: ``flops`` (default) or ``pi-zero``: what the search minimizes among equally good candidates (greedy
            ties, the JGRS attempt kept): FLOPs, or the estimated Raspberry Pi Zero milliseconds of the generated
            C (:func:`keras_grs.estimate_latency`, recorded per trial as the metric ``latency_ms``).
        initial_epochs: epochs for trial 0 (the initial model) when it differs from the fine-tuning epochs.
        evaluator: how candidates are fine-tuned: ``"batched"`` (default: all pending trials trained together in
            one compiled computation; a model it does not support falls back to ``model.fit``, said once),
            ``"keras"`` (one ``model.fit`` per trial, the reference), or an evaluator object.
        optuna_storage: an Optuna storage URL or object: every completed trial is mirrored into the study
            ``optuna_study_name`` (default: the project name), to sit beside Optuna runs in optuna-dashboard.
        **tuner_kwargs: every usual Tuner argument (directory, project_name, overwrite, max_trials,
            executions_per_trial, max_retries_per_trial, ...).

    Example:
        >>> import keras, keras_grs
        >>> def build(hp):
        ...     model = keras.Sequential([
        ...         keras.Input((20,)),
        ...         keras.layers.Dense(hp.Int("units", 1, 16), activation="relu"),
        ...         keras.layers.Dense(2, activation="softmax"),
        ...     ])
        ...     model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        ...     return model
        >>> import tempfile
        >>> tuner = keras_grs.GRSTuner(build, directory=tempfile.mkdtemp(), seed=1)
        >>> tuner.oracle.search.groups[0].width
        16
    """

    def __init__(
        self,
        hypermodel=None,
        objective="val_accuracy",
        tolerance=0.985,
        method="grs",
        widths=None,
        inherit_weights=True,
        seed=None,
        phases=None,
        units=None,
        acceptance=DEFAULT_ACCEPTANCE,
        guard_fraction=DEFAULT_GUARD_FRACTION,
        epoch_score=None,
        frozen=None,
        width_multiple=1,
        cost="flops",
        initial_epochs=None,
        evaluator=None,
        optuna_storage=None,
        optuna_study_name=None,
        max_trials=None,
        hyperparameters=None,
        tune_new_entries=True,
        allow_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
        **tuner_kwargs,
    ):
        check_tolerance(tolerance)
        method_named(method)  # an unknown method is refused, listing the registered ones
        oracle = ORACLES[method](
            objective=objective,
            tolerance=tolerance,
            widths=widths,
            seed=seed,
            units=units,
            acceptance=acceptance,
            guard_fraction=guard_fraction,
            epoch_score=epoch_score,
            frozen=frozen,
            width_multiple=width_multiple,
            cost=cost,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            tune_new_entries=tune_new_entries,
            allow_new_entries=allow_new_entries,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
            phases=phases,  # refused by a method that takes no phases
        )
        if distributed.is_worker():
            tuner_kwargs["overwrite"] = False  # the chief's project: only the chief may start it afresh
        self._state_file = JsonWriter()  # before keras-tuner's constructor, which may save
        super().__init__(oracle=oracle, hypermodel=hypermodel, **tuner_kwargs)
        if distributed.is_worker():  # keras-tuner's client, plus what the worker derives itself
            self.oracle = distributed.PruningOracleClient(oracle)
        elif self._searched_by_others(tuner_kwargs.get("overwrite", False)):
            self.oracle.reload()
        if not distributed.is_worker():
            self._discard_damaged_checkpoints()
        self.evaluator = make_evaluator(evaluator, self.oracle.objective, self.hypermodel, self.executions_per_trial,
                                        seed=self.oracle.seed, epoch_score=self.oracle.epoch_score)
        self._writer = BackgroundWriter()  # one trial at a time: joined before the trial is reported complete
        if hasattr(self.evaluator, "writer"):
            self.evaluator.writer = self._writer
        self._group_of = self._discover_widths()
        self._runner = CandidateRunner(
            build=self._checked_build,  # the runner tidies, once per trial or per batch
            load_parent=lambda trial_id: self.load_model(self.oracle.get_trial(trial_id)),
            objective=self.oracle.objective, initial_epochs=initial_epochs, inherit=inherit_weights,
            norms=method_named(oracle.method).needs_norms(oracle.units), names=self._group_of,
            # candidates as arrays where a child differs from its parent in its widths alone
            arrays=isinstance(self.hypermodel, ModelHyperModel),
        )
        _ = self.oracle.search  # frozen names and the width multiple checked against the widths, before any trial
        self._guard = None  # (x_guard, y_guard) while a search with acceptance="guard" runs
        self._running = None  # (evaluator, why one fit per trial or None) while a search runs
        self._mirror = None
        if optuna_storage is not None:
            from keras_grs.optuna.mirror import StudyMirror

            self._mirror = StudyMirror(
                optuna_storage, optuna_study_name or self.project_name, self.oracle.search.groups,
                self.oracle.objective.name, directory=self.directory, direction=self.oracle.search.direction,
                guard=guard_metric(self.oracle.objective) if self.oracle.acceptance == "guard" else None,
            )
            if not distributed.is_worker():
                for finished in self.oracle.trials.values():  # a resumed project: mirror what is missing
                    self._mirror.record(finished, self._mirrored_values(finished))

    inherit_weights = property(lambda self: self._runner.inherit, doc="Candidates start from their parent's weights.")
    initial_epochs = property(lambda self: self._runner.initial_epochs, doc="Epochs for trial 0, when set.")

    # -- setting up -------------------------------------------------------------------------------------------
    @classmethod
    def from_model(cls, model, train_first=True, min_width=1, **kwargs):
        """Prune an existing Keras model.

        Every Dense/Conv layer but the output becomes a width (named after the layer). Trial 0 starts from the
        model's current weights and trains them (``train_first=True``) or only validates them
        (``train_first=False``, for a pretrained model).

        Args:
            model: a compiled Sequential or Functional model that :func:`keras_grs.analyze` accepts.
            train_first: train the initial model before pruning (True) or prune from its weights (False).
            min_width: the smallest width, for all groups or per layer name.
            **kwargs: as for :class:`GRSTuner`.
        """
        if not model.compiled:
            raise ValueError(f"model {model.name!r} is not compiled; compile it with the loss and metrics to use")
        tuner = cls(ModelHyperModel(model, min_width), **kwargs)
        tuner._runner.base_weights = model.get_weights()
        tuner._runner.train_first = bool(train_first)
        return tuner

    def _searched_by_others(self, overwrite) -> bool:
        """A project whose oracle was saved by other tuner ids only (a distributed chief and its workers):
        keras-tuner resumes a project only when this tuner id's own file exists, this one is resumed too."""
        return (not overwrite and not os.path.exists(self._get_tuner_fname())
                and os.path.exists(os.path.join(self.project_dir, "oracle.json")))

    def _discard_damaged_checkpoints(self):
        """A resumed project's finished trial whose checkpoint was truncated or altered since it was written is
        evaluated again (as a new trial), instead of failing its children or passing on garbage weights."""
        for trial in list(self.oracle.trials.values()):
            if trial.status == "COMPLETED":
                try:
                    verify(self._get_checkpoint_fname(trial.trial_id))
                except CorruptFileError as error:
                    warnings.warn(f"trial {trial.trial_id} is evaluated again: {error}", stacklevel=3)
                    self.oracle.discard(trial.trial_id, f"checkpoint damaged: {error}")

    def _discover_widths(self) -> dict[str, int]:
        """Which width group of the built model each width hyperparameter controls: build with every width at
        its maximum, then with one width one smaller, and see which group changed (a model's own widths,
        :meth:`from_model`, are known without building it: 4-6 builds, 0.3-0.6 s, fewer per search)."""
        hps = self.oracle.width_hyperparameters()
        if not hps:
            raise ValueError(
                "the hypermodel declares no width: pruning needs at least one hp.Int(name, min_value, max_value) "
                "that sets a layer's units or filters"
            )
        if isinstance(self.hypermodel, ModelHyperModel):  # its hp.Int of each group is named after the group
            index = {g.name: i for i, g in enumerate(self.hypermodel.structure.groups)}
            return {hp.name: index[hp.name] for hp in hps}
        base = self._structure_at({})
        mapping = {}
        for hp in hps:
            if hp.max_value <= max(1, hp.min_value):
                raise ValueError(f"width {hp.name!r} has nothing to prune: max_value {hp.max_value} <= min_value")
            changed = [
                i
                for i, (a, b) in enumerate(zip(base.widths, self._structure_at({hp.name: hp.max_value - 1}).widths))
                if a != b
            ]
            if len(changed) != 1:
                where = "no layer" if not changed else f"{len(changed)} layers"
                raise ValueError(
                    f"hp.Int {hp.name!r} controls {where} of the built model; each width must set the units or "
                    f"filters of exactly one Dense/Conv layer (pass widths=[...] to name the ones that do)"
                )
            if base.groups[changed[0]].width != hp.max_value:
                raise ValueError(
                    f"hp.Int {hp.name!r} at {hp.max_value} built a layer of width {base.groups[changed[0]].width}"
                )
            mapping[hp.name] = changed[0]
        keras.backend.clear_session(free_memory=False)  # see evaluate.base.tidy
        return mapping

    def _structure_at(self, overrides):
        hp = self._initial_hyperparameters()
        hp.values.update(overrides)
        keras.backend.clear_session(free_memory=False)
        try:
            model = self._build_hypermodel(hp)
            return analyze(model)
        except UnsupportedLayerError as error:
            raise UnsupportedLayerError(f"the hypermodel's model cannot be pruned: {error}") from None

    # -- searching ------------------------------------------------------------------------------------------
    def search(self, *fit_args, progress=None, guard_data=None, **fit_kwargs):
        """Run the pruning search. Takes ``model.fit``'s arguments: ``x, y, validation_data=..., epochs=...``.

        As keras-tuner's: ``x=``/``y=`` keywords, ``tf.data.Dataset`` training and validation data,
        ``validation_split``, ``callbacks`` (a ``TensorBoard`` logs each trial to ``<log_dir>/<trial id>``),
        ``class_weight``, ``sample_weight`` (see :mod:`keras_grs.tuner.fit_arguments`). An argument the batched
        evaluator cannot honour makes it fit one trial at a time, with one warning naming it; each trial's
        ``evaluation.json`` records why. In keras-tuner's distributed mode the chief serves the oracle and returns
        when the search is over (see :mod:`keras_grs.tuner.distributed`).

        The validation data and the objective are checked before any trial runs. Searching again on a finished
        project runs no new trial. ``progress=True`` prints a line per trial and per accepted structure even when
        ``verbose=0`` silences ``fit`` (keras-tuner ties both to ``verbose``); ``progress=False`` prints nothing.

        With ``acceptance="guard"``, ``guard_data=(x, y)`` is the guard split; without it, ``guard_fraction`` of
        ``validation_data`` is carved out (the same samples on every resume: the split is seeded by the search's
        seed). The guard never reaches ``fit`` or the search's decisions; each trial's model is scored on it once
        (trial metric ``guard_<objective>``), and the final structure is chosen by walking back along the path.
        """
        self.oracle.progress = progress
        if distributed.is_chief():  # keras-tuner's distributed mode: serve the oracle, train nothing
            if "verbose" in fit_kwargs:
                self.oracle.verbose = fit_kwargs["verbose"]
            self.save()
            distributed.serve(self.oracle)
            self.save()  # keras-tuner saves before it lets go of a trial: the state without ongoing trials
            return
        batches = getattr(self.evaluator, "batches", False)
        fit_args, fit_kwargs, reason = fit_arguments.normalise(fit_args, fit_kwargs, batches)
        evaluator = self.evaluator
        if reason is not None and batches:
            warnings.warn(f"{reason} cannot be read into memory for the batched evaluator: one fit per trial",
                          stacklevel=2)
            evaluator = getattr(self.evaluator, "fallback", self.evaluator)
        self._running = (evaluator, reason)
        initial = None  # built once for every use below
        if hasattr(evaluator, "pad_to"):  # every batch padded alike, in any process (see BatchedEvaluator.pad_to)
            initial = self._try_build(self._initial_hyperparameters())
            evaluator.pad_to(initial)
        if self.oracle.acceptance == "guard" and guard_data is None and initial is None:  # its loss: classes?
            initial = self._try_build(self._initial_hyperparameters())
        fit_kwargs = self._hold_back_guard(guard_data, fit_kwargs, initial)
        self._check_fit_arguments(fit_args, fit_kwargs, initial)
        del initial
        try:
            # one process per project; the workers of keras-tuner's distributed mode share theirs by design
            with contextlib.nullcontext() if distributed.is_worker() else RunLock(self.project_dir,
                                                                                    command="GRSTuner.search"), \
                    _old_objects_frozen():
                if getattr(evaluator, "batches", False):
                    if "verbose" in fit_kwargs:
                        self.oracle.verbose = fit_kwargs["verbose"]
                    return self._search_in_batches(fit_args, fit_kwargs)
                return super().search(*fit_args, **fit_kwargs)
        finally:
            self._guard = None
            self._running = None

    def _hold_back_guard(self, guard_data, fit_kwargs, initial):
        """Set the guard split aside; the fit arguments the search trains and decides with. ``initial``: the
        initial model, whose loss says whether the labels are classes to stratify the split by."""
        acceptance = self.oracle.acceptance
        guard_data = check_guard_data(guard_data, acceptance)
        if acceptance != "guard":
            self._warn_resolution(fit_kwargs.get("validation_data"), None)
            return fit_kwargs
        if guard_data is None:
            validation = fit_kwargs.get("validation_data")
            if validation is None:
                raise ValueError(
                    "acceptance='guard' needs validation_data=(x_val, y_val) to carve the guard from (or "
                    "guard_data=(x, y)); acceptance='seed' uses no guard"
                )
            validation, guard_data = split_guard(validation, self.oracle.guard_fraction, seed=self.oracle.seed,
                                                 classes=loss_reads_classes(initial))
            fit_kwargs = dict(fit_kwargs, validation_data=validation)
        self._guard = guard_data
        self._warn_resolution(fit_kwargs.get("validation_data"), guard_data)
        return fit_kwargs

    def _warn_resolution(self, validation, guard):
        """Warn when a split is too small for the tolerance (one sample is worth more than it allows)."""
        def labels(data):
            return data[1] if isinstance(data, (tuple, list)) and len(data) >= 2 else None

        for text in resolution_warnings(self.oracle.objective.name, self.oracle.tolerance,
                                        validation=labels(validation), guard=labels(guard)):
            warnings.warn(text, ResolutionWarning, stacklevel=4)

    def _stored(self, record) -> dict:
        """A candidate's record as its trial keeps it: the evaluator's metrics plus its guard score (its
        checkpoint's weights on the guard split); for accuracy, which guard samples it gets right, and its unit
        norms when the method reads them, go to files in the trial's directory (metrics hold numbers only)."""
        trial_dir, metrics, guard = self.get_trial_dir(record.request.id), record.metrics, record.guard
        if guard is not None:
            if guard["guard_right"] is not None:
                right = {"samples": guard["guard_samples"], "right": guard["guard_right"]}
                write_json(os.path.join(trial_dir, GUARD_FILE), right)
                self._side_file_written(record.request.id, GUARD_FILE, right)
            metrics[guard_metric(self.oracle.objective)] = guard["guard"]
            metrics[GUARD_SAMPLES] = guard["guard_samples"]
        if record.unit_norms is not None:
            self._writer.submit(write_json, os.path.join(trial_dir, NORMS_FILE), record.unit_norms)
            self._side_file_written(record.request.id, NORMS_FILE, record.unit_norms)
        return metrics

    def _side_file_written(self, trial_id, name, value):
        if not self._is_worker():  # a worker's oracle is the chief's, in another process: it reads the file
            self.oracle.side_file_written(trial_id, name, value)

    def _check_fit_arguments(self, fit_args, fit_kwargs, initial=None):
        """Refuse, before any trial, validation data the objective cannot be read from (``initial``: the initial
        hyperparameters' model, when already built)."""
        objective = self.oracle.objective.name
        if fit_kwargs.get("validation_data") is None:
            if objective.startswith("val_"):
                raise ValueError(
                    f"the objective {objective!r} needs validation data: pass validation_data=(x_val, y_val) to "
                    "search()"
                )
            return
        validation = fit_kwargs["validation_data"]
        if not isinstance(validation, (tuple, list)) or len(validation) < 2:
            raise ValueError("validation_data must be a tuple (x_val, y_val)")
        if not distributed.is_worker() and self.oracle.plan().finished:
            return
        model = initial if initial is not None else self._try_build(self._initial_hyperparameters())
        del initial
        check_objective(model, objective, validation, fit_kwargs.get("batch_size"))
        del model
        keras.backend.clear_session(free_memory=False)

    def run_trial(self, trial, *fit_args, **fit_kwargs):
        (record,) = self._run([trial], fit_args, fit_kwargs)
        metrics = self._stored(record)
        self._writer.join()
        return metrics

    def _run(self, trials, fit_args, fit_kwargs):
        """Build, train and record the trials' candidates (see :class:`keras_grs.evaluate.runner.CandidateRunner`)."""
        requests = []
        for trial in trials:
            record = self.oracle.bookkeeping(trial.trial_id)
            parent = record.get(PARENT) or None
            requests.append(Request(
                trial.trial_id, trial.hyperparameters, self._get_checkpoint_fname(trial.trial_id), key=record.get(KEY),
                parent=parent, removed=json.loads(record[REMOVED]) if parent is not None else {},
                hyperparameters=trial.hyperparameters))
        return self._runner.run(requests, fit_args, fit_kwargs, choose=self._evaluate_with, guard=self._guard)

    def _initial_hyperparameters(self):
        """The hyperparameters of the initial structure: every width at its maximum."""
        hp = self.oracle.get_space()
        for width_hp in self.oracle.width_hyperparameters():
            hp.values[width_hp.name] = width_hp.max_value
        return hp

    def _try_build(self, hp):
        # keras-tuner's own version collects garbage fully twice per build; see tidy()
        tidy()
        return self._checked_build(hp)

    def _checked_build(self, hp):
        """Build the hypermodel's model with keras-tuner's checks (a Keras model, max_model_size)."""
        model = self._build_hypermodel(hp)
        if not isinstance(model, keras.Model):
            raise keras_tuner.errors.FatalTypeError(
                f"the hypermodel's build() must return a Keras Model, got {type(model).__name__}"
            )
        if self.max_model_size and model.count_params() > self.max_model_size:
            raise keras_tuner.errors.FailedTrialError(f"Oversized model: {model.count_params()} parameters")
        return model

    def _search_in_batches(self, fit_args, fit_kwargs):
        """Pull every pending trial from the oracle (a GRS step, a JGRS phase's attempts) until it answers IDLE,
        evaluate them together, and record each as an ordinary trial.

        Trial statuses and errors as keras-tuner's own loop: a ``keras_tuner.errors.FatalError`` stops the search,
        a ``FailedTrialError`` fails the batch's unfinished trials, any other error marks them INVALID (retried
        up to ``max_retries_per_trial``). A distributed worker asks for each trial under its own id plus a suffix
        (``tuner0``, ``tuner0-1``, ...), and when the search stops it tells the chief each of them is leaving."""
        self.on_search_begin()
        # the checkpoints and the state files (trial.json, oracle.json, ...) are written behind, in order, while
        # the next batch trains: a trial's file says it completed only after its checkpoint is whole on disk
        with deferred_to(self._writer):
            used = self._batches(fit_args, fit_kwargs)
        if distributed.is_worker():
            for tuner_id in sorted(used - {self.tuner_id}):
                self.oracle.create_trial(tuner_id)  # answered STOPPED: the chief forgets this id
        self._runner.release()
        self.on_search_end()

    def _batches(self, fit_args, fit_kwargs) -> set:
        """The loop of :meth:`_search_in_batches`; the tuner ids it asked under."""
        used = {self.tuner_id}
        while True:
            self.pre_create_trial()
            trials, trial = [], None
            while True:
                tuner_id = self.tuner_id if not trials else f"{self.tuner_id}-{len(trials)}"
                trial = self.oracle.create_trial(tuner_id)
                used.add(tuner_id)  # the chief registers every id that asks
                if trial.status != "RUNNING":
                    break
                trials.append(trial)
            if not trials:
                if trial.status == "STOPPED":
                    break
                continue
            for t in trials:
                self.on_trial_begin(t)
            self._writer.check()  # a file that could not be written behind stops the search here
            done = self._run_batch(trials, fit_args, fit_kwargs)
            for t in trials:
                # one by one: in one process these are the oracle's own trial objects, and a trial marked
                # COMPLETED before end_trial scores it would be seen finished without a score
                if t.trial_id in done:
                    t.status = "COMPLETED"
                self.on_trial_end(t)
        return used

    def _run_batch(self, trials, fit_args, fit_kwargs) -> set:
        """Train a batch of trials; the ids of those that completed (the others are marked FAILED or INVALID)."""
        done = set()
        try:
            records = self._run(trials, fit_args, fit_kwargs)
            # end_trial writes each trial.json, metrics included (a distributed worker's oracle is the chief's)
            with contextlib.nullcontext() if self._is_worker() else self.oracle.trial_files_with_end():
                for record in records:
                    self.oracle.update_trial(record.request.id, self._stored(record))
            # in one process, no wait for the checkpoints: the trial files that say these trials completed are
            # written after them (see _search_in_batches); a worker's chief, and the workers that build on these
            # trials, learn it from end_trial, so a worker's checkpoints are whole first
            if self._is_worker():
                self._writer.join()
            done.update(record.request.id for record in records)
        except keras_tuner.errors.FatalError:
            raise
        except Exception as error:
            import traceback

            self._writer.join()  # the retry must not race a write still finishing (a failed write stops the search)

            failed = isinstance(error, keras_tuner.errors.FailedTrialError)
            for t in trials:
                if t.trial_id not in done:
                    t.status = "FAILED" if failed else "INVALID"
                    t.message = traceback.format_exc()
        return done

    def _evaluate_with(self, requests, jobs, fit_kwargs):
        """The evaluator of this search; records in each trial's ``evaluation.json`` which one trains it and, when
        it is one fit per trial instead of batched, the argument that forced it."""
        evaluator, reason = self._running or (self.evaluator, None)
        if reason is None and hasattr(evaluator, "supports") and all(job.train for job in jobs):
            reason = evaluator.supports(jobs, fit_kwargs)
        record = {"evaluator": type(evaluator).__name__, "one_fit_per_trial": reason}
        for request in requests:
            write_json(os.path.join(self.get_trial_dir(request.id), EVALUATION_FILE), record)
        return evaluator

    def save(self):
        """As keras-tuner's, with every JSON file written whole or not at all (see :mod:`keras_grs.files`)."""
        if not self._is_worker():
            self.oracle.save()
        self._state_file.write(self._get_tuner_fname(), self.get_state())

    def on_trial_end(self, trial):
        # keras-tuner's (end the trial, save), with the oracle's state written once: end_trial saves it before it
        # lets the trial go, save() after (a worker's save leaves the oracle to the chief: its end_trial saves)
        with contextlib.nullcontext() if self._is_worker() else self.oracle.saved_by_caller():
            self.oracle.end_trial(trial)
        self.save()
        if self._mirror is not None:
            finished = self.oracle.get_trial(trial.trial_id)
            self._mirror.record(finished, self._mirrored_values(finished))

    def _mirrored_values(self, trial):
        return {**trial.hyperparameters.values, **self.oracle.bookkeeping(trial.trial_id)}

    # -- results --------------------------------------------------------------------------------------------
    def pruning_path(self) -> list[dict]:
        """The accepted structures, initial first: trial id, phase, widths, params, FLOPs, objective."""
        return self.oracle.plan().path_rows([g.name for g in self.oracle.search.groups], self.oracle.trial_id_of)

    def results_summary(self, num_trials=None):
        """Print the pruning path (every accepted structure, initial first), the final structure (marked ``*``;
        with ``acceptance="guard"`` the last one the guard confirms) and the overall reduction."""
        plan = self.oracle.plan()
        path = self.pruning_path()
        objective = self.oracle.objective.name
        state = "finished" if plan.finished else "not finished"
        print(f"Results summary ({self.oracle.method.upper()} pruning search, {state})")
        print(f"Results in {self.project_dir}")
        print(f"Widths: {', '.join(g.name for g in self.oracle.search.groups)}; tolerance {self.oracle.tolerance}; "
              f"acceptance {self.oracle.acceptance}; cost {self.oracle.cost} (Pi0 ms: estimated Pi Zero milliseconds)")
        if not path:
            print("No trial has completed yet.")
            return
        guarded = plan.guard_reference is not None
        rows = path if num_trials is None else path[-num_trials:]
        header = f"{'trial':>7}  {'phase':<8} {'structure':<20} {'params':>9} {'FLOPs':>11} {'Pi0 ms':>7}  {objective}"
        print(header + ("  guard" if guarded else ""))
        for row in rows:
            guard = f"  {row['guard']:.4f}" if guarded and row["guard"] is not None else ""
            print(
                f"{'*' if row['final'] else ' '}{row['trial_id']:>6}  {row['phase']:<8} {row['structure']:<20} "
                f"{row['params'] or 0:>9,} {row['flops'] or 0:>11,} {format_ms(row.get('latency_ms')):>7}  "
                f"{row['objective']:.4f}{guard}"
            )
        first, final = path[0], next(row for row in path if row["final"])
        if first["params"] and first["flops"]:
            bound = "min" if self.oracle.search.direction == "max" else "max"
            limit = (self.oracle.tolerance * first["objective"] if bound == "min"
                     else first["objective"] / self.oracle.tolerance)
            print(
                f"Compact structure {final['structure']}: params {final['params'] / first['params']:.1%} and FLOPs "
                f"{final['flops'] / first['flops']:.1%} of the initial {first['structure']}; {objective} "
                f"{first['objective']:.4f} -> {final['objective']:.4f} (valid {'from' if bound == 'min' else 'up to'} "
                f"{limit:.4f}); {len(self.oracle.trials)} trials"
            )
            if final is not path[-1]:
                print(f"The guard walked back from {path[-1]['structure']} (its guard score "
                      f"{path[-1]['guard']:.4f} is outside tolerance of the initial {first['guard']:.4f} by more "
                      "than the guard's sampling noise)")

    def get_best_models(self, num_models=1):
        """The compact model first (the final structure: last accepted and, with ``acceptance="guard"``, confirmed
        by the guard), then the structures accepted before it, each with its trained weights."""
        return super().get_best_models(num_models)

    def load_model(self, trial):
        """The trial's model with the weights of its checkpoint (the epoch that achieved its score)."""
        verify(self._get_checkpoint_fname(trial.trial_id))  # a truncated or altered checkpoint is named, not loaded
        with warnings.catch_warnings():
            # Checkpoints hold weights only; Keras warns that the fresh optimizer's variables were not restored.
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            return super().load_model(trial)


class ModelHyperModel(keras_tuner.HyperModel):
    """A hypermodel over the widths of a fixed Keras model: one ``hp.Int`` per width group, named after its layer."""

    def __init__(self, model, min_width=1):
        super().__init__(name=f"{model.name}_widths")
        self.model = model
        self.structure = analyze(model, min_width)
        if not self.structure.groups:
            raise ValueError(f"model {model.name!r} has no prunable layer (only an output layer)")

    def build(self, hp):
        widths = {g.name: hp.Int(g.name, g.min_width, g.width, default=g.width) for g in self.structure.groups}
        return resized(self.model, widths)
