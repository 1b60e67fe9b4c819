"""The end-to-end job: prune several initial models, apply EUP, select one, report."""

from __future__ import annotations

import json
import re
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np

from keras_grs import eup as eup_module
from keras_grs.costs import count_flops, count_params
from keras_grs.evaluate.keras import check_objective
from keras_grs.latency import latency_ms
from keras_grs.failures import failure_summary, study_failures, study_search_failed, tuner_failures, tuner_search_failed
from keras_grs.files import save_model, write_json
from keras_grs.guard import (DEFAULT_ACCEPTANCE, DEFAULT_GUARD_FRACTION, ResolutionWarning, check_guard_data,
                             epoch_score_for, loss_reads_classes, resolution_warnings, split_guard)
from keras_grs.inputs import SettingError, check_fits_model, check_splits
from keras_grs.scoring import accuracy, objective_direction, score
from keras_grs.search import check_direction, constrain, within_tolerance
from keras_grs.selection import select
from keras_grs.structure import UnsupportedLayerError, analyze
from keras_grs.tuner import GRSTuner

TIMING_FILE = "keras_grs_timing.json"


class _TunerRun:
    """One model's search with the keras-tuner backend (a GRSTuner project)."""

    def __init__(self, model, x, y, validation_data, guard_data, storage, overwrite, fit, *, method, tolerance, seed,
                 phases, initial_epochs, max_trials, directory, project, verbose, evaluator, objective, acceptance,
                 epoch_score, frozen, width_multiple, cost):
        tuner = GRSTuner.from_model(
            model, train_first=True, method=method, tolerance=tolerance, seed=seed, phases=phases,
            initial_epochs=initial_epochs, max_trials=max_trials, directory=directory, project_name=project,
            overwrite=overwrite, optuna_storage=storage, evaluator=evaluator, objective=objective,
            acceptance=acceptance, epoch_score=epoch_score, frozen=frozen, width_multiple=width_multiple, cost=cost,
        )
        try:
            with warnings.catch_warnings():  # the run's report carries it, with the other warnings
                warnings.simplefilter("ignore", ResolutionWarning)
                tuner.search(x, y, validation_data=validation_data, guard_data=guard_data, verbose=0,
                             progress=bool(verbose), **fit)
        except RuntimeError as error:  # keras-tuner's max_consecutive_failed_trials stop: name the trial and why
            failed = tuner_search_failed(model.name, tuner.oracle, error)
            if failed is None:
                raise
            raise failed from error
        self.failed_trials = tuner_failures(tuner.oracle)
        plan = tuner.oracle.plan()
        self.tuner = tuner
        self.project = tuner.project_dir
        self.path = tuner.pruning_path()
        self.finished = plan.finished
        self.trials = len(tuner.oracle.trials)
        self.phase_ends = {phase: tuner.oracle.trial_id_of(key) for phase, key in plan.phase_ends.items()}

    def initial_model(self):
        return self.tuner.load_model(self.tuner.oracle.get_trial(self.path[0]["trial_id"]))

    def compact_model(self):
        return self.tuner.get_best_models(1)[0]  # the final structure (the guard's, with acceptance="guard")


class _OptunaRun:
    """One model's search with the Optuna backend (a study driven by the method's sampler)."""

    def __init__(self, model, x, y, validation_data, guard_data, storage, fit, *, method, tolerance, seed, phases,
                 initial_epochs, max_trials, directory, project, verbose, evaluator, objective, acceptance,
                 epoch_score, frozen, width_multiple, cost):
        import optuna

        from keras_grs.optuna import create_study, optimize, pruning_path
        from keras_grs.optuna.samplers import SAMPLERS, KEY_ATTR, spent_trials, stop_at_budget
        from keras_grs.optuna.study import trial_number_of

        sampler = SAMPLERS[method](seed=seed, frozen=frozen, width_multiple=width_multiple, cost=cost, phases=phases)
        study = create_study(sampler, storage=storage, study_name=project, directory=directory,
                             direction=objective_direction(objective))
        remaining = None if max_trials is None else max(0, max_trials - spent_trials(study))
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.INFO if verbose else optuna.logging.WARNING)
        failed_before = len(study_failures(study))
        try:
            if remaining != 0:
                optimize(study, model, x, y, validation_data, tolerance=tolerance, initial_epochs=initial_epochs,
                         n_trials=remaining, directory=directory, evaluator=evaluator, objective=objective,
                         study_callbacks=None if max_trials is None else [stop_at_budget(max_trials)],
                         acceptance=acceptance, guard_data=guard_data, epoch_score=epoch_score, **fit)
        except Exception as error:  # Optuna re-raises a trial's exception: name the trial
            failed = study_search_failed(model.name, study, error, failed_before)
            if failed is None:
                raise
            raise failed from error
        finally:
            optuna.logging.set_verbosity(verbosity)
        self.failed_trials = study_failures(study)
        plan = sampler.plan(study)
        self.study, self.model, self.directory = study, model, directory
        self.project = str(Path(directory) / "checkpoints" / project)
        Path(self.project).mkdir(parents=True, exist_ok=True)
        self.path = pruning_path(study)
        self.final = next(row for row in self.path if row["final"])
        self.finished = plan.finished
        self.trials = sum(1 for t in study.trials if t.system_attrs.get(KEY_ATTR))
        self.phase_ends = {phase: str(trial_number_of(study, key)) for phase, key in plan.phase_ends.items()}

    def initial_model(self):
        from keras_grs.optuna import trial_model

        return trial_model(self.study, self.model, int(self.path[0]["trial_id"]), self.directory)

    def compact_model(self):
        from keras_grs.optuna import trial_model

        return trial_model(self.study, self.model, int(self.final["trial_id"]), self.directory)


@dataclass
class ModelResult:
    """The outcome of pruning one initial model. Accuracies are fractions; AL, FCI and PCI are percentages.

    AL (accuracy loss) is the initial minus the compact model's test accuracy (validation accuracy when there is no
    test data, see ``al_on``), in percentage points. A model compiled with a regression loss has no accuracies or
    AL (None): its ``*_score`` fields hold the objective (``val_loss``, say) on each split. FCI and PCI are the
    FLOP and parameter count improvements, ``100 x (1 - final / initial)``; the ``eup_`` variants count non-zero
    weights of the EUP model.
    """

    name: str
    project: str
    method: str
    initial_structure: str
    structure: str
    initial_params: int
    initial_flops: int
    params: int
    flops: int
    initial_val_accuracy: float | None
    val_accuracy: float | None
    initial_test_accuracy: float | None
    test_accuracy: float | None
    al: float | None
    al_on: str
    fci: float
    pci: float
    search_seconds: float
    trials: int
    finished: bool
    path: list[dict]
    phase_ends: dict[str, str]
    eup: dict | None = None
    eup_nonzero_params: int | None = None
    eup_nonzero_flops: int | None = None
    eup_val_accuracy: float | None = None
    eup_test_accuracy: float | None = None
    eup_al: float | None = None
    eup_pci: float | None = None
    eup_fci: float | None = None
    failed_trials: list[dict] = field(default_factory=list)  # trials that failed: not a normal result when any
    objective: str = "val_accuracy"
    direction: str = "max"
    acceptance: str = "seed"
    initial_val_score: float | None = None
    val_score: float | None = None
    initial_guard_score: float | None = None
    guard_score: float | None = None
    initial_test_score: float | None = None
    test_score: float | None = None
    eup_val_score: float | None = None
    eup_guard_score: float | None = None
    eup_test_score: float | None = None
    walked_back: int = 0
    warnings: list[str] = field(default_factory=list)
    # estimated Raspberry Pi Zero milliseconds of the generated float32 C (keras_grs.estimate_latency)
    initial_latency_ms: float | None = None
    latency_ms: float | None = None
    model: keras.Model | None = field(default=None, repr=False, compare=False)
    eup_model: keras.Model | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        # the models are set aside before asdict, which would deep-copy each of them (a save and load of the model)
        data = asdict(replace(self, model=None, eup_model=None))
        data.pop("model")
        data.pop("eup_model")
        return data


@dataclass
class PruneResult:
    """What :func:`prune` returns.

    Attributes:
        model: the selected compact (structured) model.
        eup_model: the selected model after thresholding and quantization (None without EUP).
        results: one :class:`ModelResult` per initial model, in the order given.
        selected: index of the selected result.
        report: the run's report as a JSON-ready dict (config, data, selection, per-model figures).
    """

    model: keras.Model
    eup_model: keras.Model | None
    results: list[ModelResult]
    selected: int
    report: dict

    def save(self, directory) -> Path:
        """Write the selected models (``compact.keras``, ``eup.keras``), ``report.json``, ``report.md`` and plots.

        Every file is written to a temporary name first and renamed, so an interrupted save leaves no half file.
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        _save_model(self.model, directory / "compact.keras")
        if self.eup_model is not None:
            _save_model(self.eup_model, directory / "eup.keras")
        self.save_report(directory)
        return directory

    def save_report(self, directory) -> None:
        """Write ``report.json``, ``report.md`` and the plots (again after :meth:`export_c` added its record)."""
        from keras_grs.report import write_report

        write_report(self.report, directory)

    def export_c(self, directory, validation_data) -> dict:
        """Write the selected model (after EUP when there is one) as LIDE-style C into ``directory``, compile and run
        it on ``validation_data``, compare it with Keras, and record the check in the report (``c_export``).

        A model the C backend cannot express yet (a graph: residual or concatenating) is not written; the record
        says why (``skipped``). Returns the record.
        """
        import c_backend

        model = self.eup_model if self.eup_model is not None else self.model
        try:
            exported = c_backend.export(model, directory, name=model.name)
        except UnsupportedLayerError as error:  # a layer without a C actor (named in the error), or int8 on a graph
            self.report["c_export"] = {"skipped": str(error)}
            return self.report["c_export"]
        check = c_backend.verify(model, directory, *validation_data)
        self.report["c_export"] = {
            "directory": str(directory),
            "name": exported.name,
            "model": "eup" if self.eup_model is not None else "compact",
            "actors": [op.kind for op in exported.ops],
            **check.as_dict(),
        }
        return self.report["c_export"]


def _save_model(model, path: Path) -> None:
    save_model(model, path)


def _percent_improvement(initial, final):
    return round(100.0 * (1.0 - final / initial), 4) if initial else 0.0


def _project_name(index, model):
    return f"{index}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', model.name)}"


def _timing(project_dir, add=0.0):
    path = Path(project_dir) / TIMING_FILE
    total = json.loads(path.read_text())["search_seconds"] if path.exists() else 0.0
    if add:
        total += add
        write_json(path, {"search_seconds": total})
    return total


def prune(
    models,
    x,
    y,
    validation_data,
    test_data=None,
    method="grs",
    tolerance=0.985,
    eup=True,
    selection="minflops",
    epochs=10,
    initial_epochs=None,
    batch_size=32,
    directory=None,
    seed=None,
    phases=None,
    max_trials=None,
    overwrite=False,
    verbose=1,
    eup_options=None,
    backend="keras-tuner",
    storage=None,
    evaluator="batched",
    objective="val_accuracy",
    acceptance=DEFAULT_ACCEPTANCE,
    guard_fraction=DEFAULT_GUARD_FRACTION,
    guard_data=None,
    epoch_score=None,
    frozen=None,
    width_multiple=1,
    cost="flops",
    out=None,
    resume=True,
    export_c=False,
    safe_mode=True,
    **fit_kwargs,
):
    """Prune one or several initial models, apply EUP to each compact model, and select one: the whole job.

    The job owns its run from start to end (see :mod:`keras_grs.run`). Before any work, and before anything is
    written, it checks every setting, every data split and every model against the data. Then it locks the run
    directory (``out``, or ``directory`` without it): a second ``prune`` (or ``keras-grs prune``) on it, in this or
    another process, is refused with :class:`keras_grs.runlock.RunLocked` naming the holder's pid and host. The
    directory must be new or empty, or hold a run started with the same settings (models, data, options), recorded
    in its ``run.json``; that run is then continued: finished trials are kept. Each initial model is trained
    (``initial_epochs``, default ``epochs``), then searched with ``method`` in its own keras-tuner project (or
    Optuna study), EUP is applied and one model is selected. With ``out``, the selected models and the report are
    written into it and, with ``export_c``, the selected model as C (checked against Keras on the validation data).

    Example (a few seconds; the run directory ``out`` holds everything, and the same call again continues it)::

        >>> import tempfile, pathlib, numpy as np, keras_grs
        >>> x = np.random.default_rng(0).normal(size=(64, 6)).astype("float32"); y = (x[:, 0] > 0).astype("int32")
        >>> out = pathlib.Path(tempfile.mkdtemp())
        >>> result = keras_grs.prune("nn2", x, y, (x, y), epochs=1, max_trials=2, seed=0, out=out, verbose=0)
        >>> sorted(p.name for p in out.glob("*.keras")), (out / "run.json").exists(), result.results[0].name
        (['compact.keras', 'eup.keras'], True, 'nn2')

    Args:
        models: a compiled Keras model, a built-in model name (``nn1``, ``cnn1``, ...: built for the data's sample
            shape and classes, seeded by ``seed``), a ``.keras`` file, or a list of them (each pruned separately,
            then one is selected).
        x, y: training data. validation_data: ``(x_val, y_val)``. test_data: optional ``(x_test, y_test)``.
            Labels are class ids or one-hot rows (turned into class ids for built-in models).
        method: ``grs``, ``jgrs``, ``rrs`` or ``nwm``. tolerance: valid when ValAcc >= tolerance x OriValAcc.
        eup: apply thresholding and quantization to each compact model.
        selection: ``minparams``, ``minflops``, ``minlatency``, ``maxvalacc``, ``maxtestacc`` or a function (see
            :func:`select`).
        epochs: fine-tuning epochs per candidate; batch_size: as for ``fit``.
        directory: where the searches live (default ``keras_grs_runs``, or ``out/tuner`` with ``out``).
        seed: seed of the searches' random decisions (also seeds Keras when given).
        phases: JGRS phases (only with ``method="jgrs"``). max_trials: cap on trials per model.
        overwrite: start the searches again instead of continuing them (the run directory's settings are not
            compared then: they are recorded anew).
        eup_options: keyword arguments for :func:`keras_grs.eup.tq`.
        backend: ``keras-tuner`` (a GRSTuner project per model) or ``optuna`` (an Optuna study per model, with
            the method's sampler).
        storage: an Optuna storage URL or object: the optuna backend's studies go there (default: an SQLite file
            in ``directory``); with the keras-tuner backend, trials are mirrored there for optuna-dashboard.
        evaluator: ``batched`` (default: the candidates of a step trained together in one compiled computation)
            or ``keras`` (one ``model.fit`` per candidate); see :class:`keras_grs.GRSTuner`.
        objective: the score kept within tolerance through the whole job: the search, EUP's checks and the
            selection's tie-breaks (``val_accuracy``, ``val_loss``, or any metric the models are compiled with,
            such as ``val_auc``; its direction as keras-tuner infers it, any ``*loss`` minimized).
        acceptance: ``guard`` (default) or ``seed``; see :mod:`keras_grs.guard`. With ``guard``, ``guard_data``
            or else ``guard_fraction`` of ``validation_data`` is held back from the search and EUP, and confirms
            the final structure; for accuracy, a candidate must also clear the tolerance by half a binomial
            standard error of the reference's validation accuracy (:data:`keras_grs.guard.GUARD_MARGIN`).
        epoch_score: ``last`` (default with the guard: a candidate's last epoch, its weights and score) or
            ``best`` (default with the seed's rule: its best epoch).
        frozen: names of width groups (as :func:`keras_grs.analyze` lists them) no search prunes; each model
            freezes the names it has, and a name that is no model's group is refused, listing the groups.
        width_multiple: every width the searches propose is a multiple of it (see :class:`keras_grs.GRSTuner`).
        cost: ``flops`` (default) or ``pi-zero``: what the searches minimize among equally good candidates
            (greedy ties, the JGRS attempt kept): FLOPs, or the estimated Raspberry Pi Zero milliseconds of the
            generated C (:func:`keras_grs.estimate_latency`).
        out: the run directory: it holds ``run.json``, the searches (``out/tuner``), and at the end the selected
            models, the report and plots (:meth:`PruneResult.save`) and with ``export_c`` the C code.
        resume: continue a run the directory holds (started with the same settings); ``False`` refuses a directory
            that is not empty (``keras-grs prune`` without ``--resume``).
        export_c: write the selected model (after EUP when there is one) as C into ``out/c`` and verify it against
            Keras on the validation data (see :meth:`PruneResult.export_c`); needs ``out``.
        safe_mode: load ``.keras`` files in Keras' safe mode (code a file holds, like a Lambda layer, is refused);
            ``False`` only for files you trust.
        **fit_kwargs: further ``fit`` arguments (callbacks, ...).

    Returns:
        A :class:`PruneResult`. Trials that failed are listed in each result's ``failed_trials`` (not a normal
        result when any).

    Raises:
        keras_grs.inputs.SettingError: a setting refused (the message names it); so is a run directory that is not
            empty without ``resume``, or holds a run started with other settings (the message lists them).
        keras_grs.inputs.DataError: a split that is empty, holds NaN or infinite values, or does not fit a model
            (the message names the split); a model file that is damaged.
        keras_grs.runlock.RunLocked: another process holds the run directory (one run, one owner).
        keras_grs.failures.SearchFailed: the trials kept failing; names the last failed trial and its error.
    """
    from keras_grs import run

    run.check_settings(method=method, tolerance=tolerance, epochs=epochs, initial_epochs=initial_epochs,
                       batch_size=batch_size, selection=selection, seed=seed, phases=phases, max_trials=max_trials,
                       backend=backend, evaluator=evaluator, storage=storage, objective=objective,
                       guard_fraction=guard_fraction, export_c=export_c, out=out, cost=cost)
    epoch_score = epoch_score_for(acceptance, epoch_score)
    frozen = [frozen] if isinstance(frozen, str) else list(frozen or [])
    check_splits(x, y, validation_data, test_data)  # an empty split is named before any label is read
    if guard_data is not None:
        check_guard_data(guard_data, acceptance)
    if seed is not None:  # before the built-in models are built: their initial weights follow the seed too
        keras.utils.set_random_seed(seed)
    given = {"training data": (x, y), "validation data": validation_data, "test data": test_data,
             "guard data": guard_data}
    labels = {name: None if split is None else split[1] for name, split in given.items()}
    models, names, labels = run.resolve_models(models, x, labels, safe_mode)  # one-hot turned into ids if need be
    splits = {name: (split[0], labels[name]) for name, split in given.items() if split is not None}
    for model in models:
        for name, split in splits.items():
            check_fits_model(name, model, *split)
        check_objective(model, objective, splits["validation data"], batch_size)  # before the run is written
        count_flops(model)  # what every trial measures: an input of open size is refused here, naming the layer
    (x, y), validation_data = splits["training data"], splits["validation data"]
    test_data, guard_data = splits.get("test data"), splits.get("guard data")
    for setting, frozen_names in (("width_multiple", []), ("frozen", frozen)):  # the multiple alone first
        try:
            frozen_by_model = check_constraints(models, frozen_names, width_multiple)
        except UnsupportedLayerError:
            raise
        except ValueError as error:
            raise SettingError("{" + setting + "}: " + str(error), setting) from None
    if isinstance(selection, str) and selection in ("maxtestacc", "besttest") and test_data is None:
        raise SettingError(f"{{selection}} {selection!r} needs test_data (x_test and y_test)", "selection")
    regressions = [m.name for m in models if loss_reads_classes(m) is False]
    if isinstance(selection, str) and selection in ("maxvalacc", "maxtestacc") and regressions:
        instead = {"maxvalacc": "bestval", "maxtestacc": "besttest"}[selection]
        raise SettingError(f"{{selection}} {selection!r} needs accuracies, and model {regressions[0]!r} is a "
                           f"regression (its loss reads values, not classes): use {instead!r}", "selection")
    digest = run.data_digest(x, y, *validation_data, *(test_data or (None, None)), *(guard_data or (None, None)))
    searched = validation_data
    if guard_data is None and acceptance == "guard":  # a class too small to split is refused, naming it
        searched, guard_data = split_guard(validation_data, guard_fraction, seed=seed,
                                           classes=loss_reads_classes(models[0]))
    root = Path(out if out is not None else directory if directory is not None else DEFAULT_DIRECTORY)
    if directory is None:
        directory = root / run.TUNER_DIR if out is not None else root
    settings = run.run_settings(
        names, digest, method=method, tolerance=tolerance, epochs=epochs, initial_epochs=initial_epochs,
        batch_size=batch_size, eup=eup, selection=selection, seed=seed, phases=phases, max_trials=max_trials,
        backend=backend, storage=storage, objective=objective, acceptance=acceptance, guard_fraction=guard_fraction,
        epoch_score=epoch_score, frozen=frozen, width_multiple=width_multiple, cost=cost)
    with run.owned(root, directory, settings, resume=resume, overwrite=overwrite,
                   root_name="out" if out is not None else "directory"):
        result = _prune_models(models, x, y, searched, guard_data, test_data, method=method, tolerance=tolerance,
                               eup=eup, selection=selection, epochs=epochs, initial_epochs=initial_epochs,
                               batch_size=batch_size, directory=directory, seed=seed, phases=phases,
                               max_trials=max_trials, overwrite=overwrite, verbose=verbose, eup_options=eup_options,
                               backend=backend, storage=storage, evaluator=evaluator, objective=objective,
                               acceptance=acceptance, guard_fraction=guard_fraction, epoch_score=epoch_score,
                               frozen_by_model=frozen_by_model, width_multiple=width_multiple, cost=cost,
                               fit_kwargs=fit_kwargs)
        if out is not None:
            result.save(out)
            if export_c:
                result.export_c(Path(out) / "c", validation_data)
                result.save_report(out)
    return result


DEFAULT_DIRECTORY = "keras_grs_runs"


def _prune_models(models, x, y, validation_data, guard_data, test_data, *, method, tolerance, eup, selection, epochs,
                  initial_epochs, batch_size, directory, seed, phases, max_trials, overwrite, verbose, eup_options,
                  backend, storage, evaluator, objective, acceptance, guard_fraction, epoch_score, frozen_by_model,
                  width_multiple, cost, fit_kwargs) -> PruneResult:
    """The searches, EUP and the selection, on checked settings and data, in a run directory already owned."""
    direction = check_direction(objective_direction(objective))
    if backend == "optuna":
        from keras_grs.optuna.study import open_storage

        storage = open_storage(storage, directory)
    results = []
    for index, model in enumerate(models):
        if verbose:
            print(f"== model {index + 1}/{len(models)}: {model.name} {analyze(model)} ({method.upper()}, {backend})",
                  flush=True)
        project = _project_name(index, model)
        fit = dict(epochs=epochs, batch_size=batch_size, **fit_kwargs)
        options = dict(method=method, tolerance=tolerance, seed=seed, phases=phases, initial_epochs=initial_epochs,
                       max_trials=max_trials, directory=str(directory), project=project, verbose=verbose,
                       evaluator=evaluator, objective=objective, acceptance=acceptance, epoch_score=epoch_score,
                       frozen=frozen_by_model[index], width_multiple=width_multiple, cost=cost)
        started = time.perf_counter()
        if seed is not None:  # each model's search starts from the same random state, whatever ran before it
            keras.utils.set_random_seed(seed)
        if backend == "optuna":
            run = _OptunaRun(model, x, y, validation_data, guard_data, storage, fit, **options)
        else:
            run = _TunerRun(model, x, y, validation_data, guard_data, storage, overwrite, fit, **options)
        search_seconds = _timing(run.project, add=time.perf_counter() - started)
        splits = _Splits(validation_data, guard_data, test_data, getattr(objective, "name", objective), direction,
                         tolerance)  # scored by the name; its direction was read above
        results.append(_model_result(run, model.name, method, acceptance, splits, eup, eup_options, search_seconds))
        if verbose:
            r = results[-1]
            stop = "" if r.finished else f" (stopped at max_trials={max_trials}: the search had not finished)"
            back = f"; the guard walked back {r.walked_back} accepted step(s)" if r.walked_back else ""
            if r.failed_trials:
                stop += f"; {len(r.failed_trials)} trials FAILED ({failure_summary(r.failed_trials)})"
            print(f"   {r.initial_structure} -> {r.structure}: params {r.initial_params:,} -> {r.params:,}, "
                  f"{splits.describe(r)}{back}{stop}", flush=True)
            for warning in r.warnings:
                print(f"   WARNING: {warning}", flush=True)
    chosen = select(results, selection)
    selected = next(i for i, r in enumerate(results) if r is chosen)
    report = {
        "keras_grs_version": _version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "method": method,
            "tolerance": tolerance,
            "eup": bool(eup),
            "eup_options": eup_options or {},
            "selection": selection if isinstance(selection, str) else getattr(selection, "__name__", "function"),
            "epochs": epochs,
            "initial_epochs": initial_epochs if initial_epochs is not None else epochs,
            "batch_size": batch_size,
            "seed": seed,
            "phases": phases,
            "max_trials": max_trials,
            "directory": str(directory),
            "backend": backend,
            "objective": objective if isinstance(objective, str) else objective.name,
            "direction": direction,
            "acceptance": acceptance,
            "guard_fraction": guard_fraction if acceptance == "guard" else None,
            "epoch_score": epoch_score,
            "frozen": sorted({name for names in frozen_by_model for name in names}),
            "width_multiple": width_multiple,
            "cost": cost,
        },
        "data": {
            "train": list(np.shape(x)),
            "validation": list(np.shape(validation_data[0])),
            "guard": list(np.shape(guard_data[0])) if guard_data is not None else None,
            "test": list(np.shape(test_data[0])) if test_data is not None else None,
        },
        "selection": {"criterion": selection if isinstance(selection, str) else "function", "index": selected,
                      "name": results[selected].name},
        "models": [r.as_dict() for r in results],
    }
    return PruneResult(results[selected].model, results[selected].eup_model, results, selected, report)


def check_constraints(models, frozen=None, width_multiple=1) -> list[list[str]]:
    """Check ``frozen`` and ``width_multiple`` against the models' width groups; return each model's frozen names.

    A frozen name must be a group of at least one model (a pinned group is accepted: it is never pruned anyway);
    each model freezes the prunable groups it has. Raises UnsupportedLayerError for a model keras-grs cannot
    prune, ValueError for an unknown name (listing every model's groups), a bad ``width_multiple`` or one larger
    than a group's width, or a model with every group frozen.
    """
    frozen = [frozen] if isinstance(frozen, str) else list(frozen or [])
    structures = [analyze(model) for model in models]
    known = {g.name for s in structures for g in s.all_groups}
    unknown = [name for name in frozen if name not in known]
    if unknown:
        groups = "; ".join(f"{model.name}: {list(s.names)}" for model, s in zip(models, structures))
        raise ValueError(f"frozen names unknown width groups {unknown}; the groups are {groups}")
    result = []
    for model, structure in zip(models, structures):
        mine = [name for name in frozen if name in structure.names]
        try:
            constrain(structure.search_groups(), mine, width_multiple)
        except ValueError as error:
            raise ValueError(f"model {model.name!r}: {error}") from None
        result.append(mine)
    return result


def _version():
    from keras_grs import __version__

    return __version__


@dataclass
class _Splits:
    """The data a run's models are scored on, and the objective they are scored with."""

    validation: tuple
    guard: tuple | None
    test: tuple | None
    objective: str
    direction: str
    tolerance: float

    def scores(self, model) -> tuple[float, float | None, float | None]:
        """The objective on validation, guard and test data (None for a split the run has not got)."""
        return tuple(None if data is None else score(model, *data, self.objective)
                     for data in (self.validation, self.guard, self.test))

    def describe(self, result) -> str:
        name = self.objective.removeprefix("val_")
        parts = [f"val {name} {result.initial_val_score:.4f} -> {result.val_score:.4f}"]
        if result.guard_score is not None:
            parts.append(f"guard {result.initial_guard_score:.4f} -> {result.guard_score:.4f}")
        if result.test_score is not None:
            parts.append(f"test {result.initial_test_score:.4f} -> {result.test_score:.4f}")
        return ", ".join(parts)


def _model_result(run, name, method, acceptance, splits, eup, eup_options, search_seconds) -> ModelResult:
    path = run.path
    initial_model = run.initial_model()
    compact = run.compact_model()
    validation_data, test_data = splits.validation, splits.test

    classes = loss_reads_classes(initial_model) is not False  # a regression's targets give no accuracy

    def val_accuracy(m):
        return accuracy(m, *validation_data) if classes else None

    def test_accuracy(m):
        return accuracy(m, *test_data) if classes and test_data is not None else None

    def accuracy_loss(before, after):
        return None if before is None or after is None else round(100.0 * (before - after), 4)

    initial_val, final_val = val_accuracy(initial_model), val_accuracy(compact)
    initial_test, final_test = test_accuracy(initial_model), test_accuracy(compact)
    al_on = "test" if test_data is not None else "validation"
    before, after = (initial_test, final_test) if test_data is not None else (initial_val, final_val)
    initial_scores, scores = splits.scores(initial_model), splits.scores(compact)
    final_index = next(i for i, row in enumerate(path) if row["final"])
    result = ModelResult(
        name=name,
        project=run.project,
        method=method,
        initial_structure=str(analyze(initial_model)),
        structure=str(analyze(compact)),
        initial_params=count_params(initial_model),
        initial_flops=count_flops(initial_model),
        params=count_params(compact),
        flops=count_flops(compact),
        initial_val_accuracy=initial_val,
        val_accuracy=final_val,
        initial_test_accuracy=initial_test,
        test_accuracy=final_test,
        al=accuracy_loss(before, after),
        al_on=al_on,
        fci=_percent_improvement(count_flops(initial_model), count_flops(compact)),
        pci=_percent_improvement(count_params(initial_model), count_params(compact)),
        search_seconds=round(search_seconds, 3),
        trials=run.trials,
        finished=run.finished,
        path=path,
        phase_ends=run.phase_ends,
        failed_trials=run.failed_trials,
        objective=splits.objective,
        direction=splits.direction,
        acceptance=acceptance,
        initial_val_score=initial_scores[0],
        val_score=scores[0],
        initial_guard_score=initial_scores[1],
        guard_score=scores[1],
        initial_test_score=initial_scores[2],
        test_score=scores[2],
        walked_back=len(path) - 1 - final_index,
        initial_latency_ms=latency_ms(initial_model),
        latency_ms=latency_ms(compact),
        model=compact,
    )
    result.warnings += resolution_warnings(splits.objective, splits.tolerance, validation=validation_data[1],
                                           guard=splits.guard[1] if splits.guard is not None else None)
    _warn_outside_tolerance(result, splits, "compact", scores[2])
    if eup:
        # the guard holds EUP to the job's tolerance from the initial model, not only EUP's own from the compact one:
        # otherwise the two tolerances compound
        baseline = dict(guard_baseline=initial_model, guard_tolerance=splits.tolerance) if splits.guard else {}
        eup_model, info = eup_module.tq(compact, validation_data, reference=scores[0], objective=splits.objective,
                                        guard_data=splits.guard, **{**baseline, **(eup_options or {})})
        eup_test = test_accuracy(eup_model)
        eup_scores = splits.scores(eup_model)
        result.eup = info.as_dict()
        result.eup_model = eup_model
        result.eup_nonzero_params = count_params(eup_model, nonzero=True)
        result.eup_nonzero_flops = count_flops(eup_model, nonzero=True)
        result.eup_val_accuracy = val_accuracy(eup_model)
        result.eup_test_accuracy = eup_test
        result.eup_val_score, result.eup_guard_score, result.eup_test_score = eup_scores
        result.eup_al = accuracy_loss(before, eup_test if test_data is not None else result.eup_val_accuracy)
        result.eup_pci = _percent_improvement(result.initial_params, result.eup_nonzero_params)
        result.eup_fci = _percent_improvement(result.initial_flops, result.eup_nonzero_flops)
        _warn_outside_tolerance(result, splits, "EUP", eup_scores[2])
    return result


def _warn_outside_tolerance(result, splits, which, test_score) -> None:
    """Say so when the model's test score is outside tolerance of the initial model's: the promise did not hold."""
    if test_score is None or result.initial_test_score is None:
        return
    if not within_tolerance(test_score, result.initial_test_score, splits.tolerance, splits.direction):
        result.warnings.append(
            f"{result.name}: the {which} model's test {splits.objective.removeprefix('val_')} {test_score:.4f} is "
            f"outside tolerance {splits.tolerance} of the initial model's {result.initial_test_score:.4f}"
        )
