"""Running a pruning search as an Optuna study, and getting its compact model back."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import keras
import optuna

from keras_grs.evaluate import make_evaluator
from keras_grs.evaluate.keras import check_objective
from keras_grs.evaluate.runner import CandidateRunner, Request
from keras_grs.files import CorruptFileError, load_weights, verify
from keras_grs.guard import (DEFAULT_ACCEPTANCE, DEFAULT_GUARD_FRACTION, check_guard_data, epoch_score_for,
                             loss_reads_classes, search_margin, split_guard)
from keras_grs.failures import last_line
from keras_grs.optuna.samplers import (CONFIG_ATTR, DEFAULT_TOLERANCE, ERROR_ATTR, KEY_ATTR, PruningSampler, discard,
                                       discarded, trial_number_of)
from keras_grs.search import check_direction, check_tolerance, constrain
from keras_grs.structure import analyze
from keras_grs.surgery import resized

DIRECTIONS = ["maximize", "minimize"]
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "oracle", "mssql")
JOURNAL_SCHEME = "journal"
STORAGE_SCHEMES = DATABASE_SCHEMES + (JOURNAL_SCHEME,)
DB_FILE = "optuna.db"
CHECKPOINT_ATTR = "checkpoint"
# Several workers opening one new database at once race to create Optuna's tables (PostgreSQL's CREATE TABLE is
# not atomic against a concurrent one: the loser gets a unique violation); the tables exist when it tries again.
SCHEMA_ATTEMPTS = 5


def open_storage(storage=None, directory="keras_grs_runs"):
    """An Optuna storage: the default is an SQLite file ``DIRECTORY/optuna.db`` (embedded, no server).

    ``storage`` may be any Optuna storage object or a URL:

    - a database (``sqlite:///PATH``, ``postgresql://USER:PASSWORD@HOST:PORT/DATABASE``, ``mysql://...``); database
      storages get a heartbeat, so trials of a worker that died are marked failed and run again;
    - ``journal:///PATH``: an Optuna JournalStorage on the file PATH (relative, or absolute with a fourth slash, as
      in ``sqlite:///``), for several processes on one machine or on a shared disk; no server, no heartbeat.

    Other journal backends (Redis, ...) have no URL here: pass the storage object.

    >>> import tempfile
    >>> open_storage("journal:///" + tempfile.mkdtemp() + "/journal.log").__class__.__name__
    'JournalStorage'
    >>> open_storage("redis://localhost/0")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: unknown storage URL 'redis://localhost/0': use sqlite:///PATH, ..., journal:///PATH or pass ...
    """
    if storage is not None and not isinstance(storage, str):
        return storage
    if storage is None:
        Path(directory).mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{Path(directory).resolve() / DB_FILE}"
    scheme = storage.split(":", 1)[0].split("+", 1)[0]
    if "://" not in storage or scheme not in STORAGE_SCHEMES:
        raise ValueError(
            f"unknown storage URL {storage!r}: use sqlite:///PATH, postgresql://..., mysql://..., journal:///PATH or "
            "pass an Optuna storage object (for example JournalStorage(JournalRedisBackend(url)))"
        )
    if scheme == JOURNAL_SCHEME:
        return _journal(storage)
    import sqlalchemy

    try:
        shown = sqlalchemy.engine.make_url(storage).render_as_string(hide_password=True)  # for messages
    except (ValueError, sqlalchemy.exc.ArgumentError) as error:  # the URL's own text may hold a password
        raise ValueError(f"malformed {scheme} storage URL ({error}): write {scheme}://USER:PASSWORD@HOST:PORT/DATABASE"
                         ) from None
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(storage, heartbeat_interval=10, grace_period=30)
        except ImportError:
            extra = " (pip install 'keras-grs[postgres]')" if scheme == "postgresql" else ""
            raise ValueError(f"storage {shown!r}: the database driver is not installed{extra}") from None
        except sqlalchemy.exc.OperationalError as error:  # no server, no database, refused credentials
            raise ValueError(f"storage {shown!r} cannot be opened: {str(error.orig).strip()}") from None
        except sqlalchemy.exc.ArgumentError as error:
            raise ValueError(f"storage {shown!r}: {error}") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
            if attempt == SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _journal(url):
    from optuna.storages.journal import JournalFileBackend

    if not url.startswith(f"{JOURNAL_SCHEME}:///") or url == f"{JOURNAL_SCHEME}:///":
        raise ValueError(f"a journal storage URL is journal:///PATH (a file; absolute: journal:////PATH), got {url!r}")
    path = Path(url[len(f"{JOURNAL_SCHEME}:///"):])
    if path.is_dir():
        raise ValueError(f"journal storage {url!r}: {str(path)!r} is a directory; name the journal file in it")
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def create_study(sampler, storage=None, study_name="keras_grs", directory="keras_grs_runs", load_if_exists=True,
                 direction="maximize"):
    """An Optuna study for a pruning search: objectives (the score, FLOPs); the score is maximized (accuracy) or,
    with ``direction="minimize"``, minimized (a loss); FLOPs are minimized."""
    if not isinstance(sampler, PruningSampler):
        raise TypeError(f"a pruning study needs a keras-grs sampler (GRSSampler, ...), got {type(sampler).__name__}")
    study = optuna.create_study(
        storage=open_storage(storage, directory),
        sampler=sampler,
        study_name=study_name,
        directions=[f"{check_direction(direction)}imize", "minimize"],
        load_if_exists=load_if_exists,
    )
    discard_damaged_checkpoints(study, directory)
    return study


def discard_damaged_checkpoints(study, directory="keras_grs_runs") -> list[int]:
    """A resumed study's completed trial whose checkpoint (under ``directory``, as :func:`optimize` writes them) was
    truncated or altered since it was written is set aside and its candidate evaluated again by a new trial, with
    a warning naming the trial and the damage, instead of failing its children or passing on garbage weights.
    Returns the trials set aside now. :func:`create_study` and :func:`optimize` call it."""
    set_aside, found = discarded(study), []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if trial.number in set_aside or trial.system_attrs.get(KEY_ATTR) is None:
            continue
        try:
            verify(checkpoint_path(directory, study, trial.number))
        except CorruptFileError as error:
            warnings.warn(f"trial {trial.number} is evaluated again: {error}", stacklevel=3)
            discard(study, trial.number, f"checkpoint damaged: {error}")
            found.append(trial.number)
    return found


def _as_model(model_or_hypermodel):
    if isinstance(model_or_hypermodel, keras.Model):
        return model_or_hypermodel
    import keras_tuner
    from keras_tuner.src.engine.hyperparameters import hp_types

    hp = keras_tuner.HyperParameters()
    build = getattr(model_or_hypermodel, "build", model_or_hypermodel)
    build(hp)  # declare the hyperparameters
    for entry in hp.space:
        if isinstance(entry, hp_types.Int):
            hp.values[entry.name] = entry.max_value
    return build(hp)


def _config(sampler, structure, tolerance, model, seed, acceptance, epoch_score, objective) -> dict:
    return {
        "groups": [{"name": g.name, "width": g.width, "min_width": g.min_width} for g in structure.groups],
        "tolerance": float(tolerance),
        "acceptance": acceptance,
        "margin": search_margin(acceptance, objective),  # read by the sampler's search (every process alike)
        "epoch_score": epoch_score,
        "sampler": sampler.config(seed),
        "model": {"name": model.name, "layers": [type(layer).__name__ for layer in model.layers]},
    }


def checkpoint_path(directory, study, number) -> Path:
    return Path(directory) / "checkpoints" / study.study_name / f"trial_{number}.weights.h5"


def trial_checkpoint(study, number, directory) -> Path:
    """Where trial ``number``'s trained weights are: the file its worker recorded (user attribute ``checkpoint``),
    else the trial's file under ``directory``.

    The recorded file serves workers with directories of their own (``keras-grs prune --out`` per worker) on one
    machine, or on a disk every machine mounts at the same path; ``directory`` serves a shared directory mounted
    at different paths."""
    recorded = study.trials[number].user_attrs.get(CHECKPOINT_ATTR)
    candidates = [Path(recorded)] if recorded else []
    candidates.append(checkpoint_path(directory, study, number))
    return next((path for path in candidates if path.is_file()), candidates[0])


def optimize(
    study,
    model_or_hypermodel,
    x,
    y,
    validation_data,
    tolerance=None,
    epochs=10,
    n_trials=None,
    timeout=None,
    study_callbacks=None,
    directory="keras_grs_runs",
    batch_size=32,
    min_width=1,
    initial_epochs=None,
    train_first=True,
    objective="val_accuracy",
    evaluator="batched",
    acceptance=DEFAULT_ACCEPTANCE,
    guard_fraction=DEFAULT_GUARD_FRACTION,
    guard_data=None,
    epoch_score=None,
    **fit_kwargs,
):
    """Run a pruning search in an Optuna study (a new one, or one to continue from any process).

    The convenience over a plain objective (see :func:`keras_grs.optuna.inherit`): the model is built, inherits,
    is trained and checkpointed for you. Each trial's parameters are the widths (one integer distribution per
    width group, named after its layer); its values are the objective and, when the study has two directions,
    FLOPs; its user attributes hold ``params``, ``flops``, ``parent`` (trial number whose weights it inherited),
    ``removed`` (JSON), ``phase``, ``structure`` and ``valid`` (within tolerance). The study's user attribute
    ``keras_grs_path`` lists the accepted trials. Trained weights are saved under ``directory/checkpoints/STUDY/``
    (a shared directory when several machines work on one study).

    Args:
        study: from :func:`create_study` (or ``optuna.create_study`` with a keras-grs sampler and directions
            ``["maximize", "minimize"]``, or the objective's direction alone).
        model_or_hypermodel: a compiled Keras model, or a keras-tuner hypermodel / ``build(hp)`` function, built
            once with every ``hp.Int`` at its maximum.
        x, y, validation_data: the data.
        tolerance: valid when score >= tolerance x the initial score (a loss: <= the initial loss / tolerance);
            default: the sampler's ``tolerance``, else 0.985.
        epochs: fine-tuning epochs per candidate (``initial_epochs`` for the initial model).
        n_trials, timeout: as for ``study.optimize``; the study also stops when the method stops.
        study_callbacks: Optuna callbacks, ``study.optimize``'s ``callbacks`` (``callbacks`` is ``fit``'s).
        objective: the metric candidates are judged by, in the study's first direction (which must agree with
            the metric's, when keras-tuner knows it: ``val_loss`` is minimized, ``val_accuracy`` maximized).
        evaluator: ``batched`` (default: each trial trained by one compiled computation), ``keras`` (one
            ``model.fit`` per trial) or an evaluator object; see :class:`keras_grs.GRSTuner`.
        acceptance, guard_fraction, guard_data: as for :class:`keras_grs.GRSTuner`: with ``guard`` (default) a
            guard split is held back (carved from ``validation_data`` with the study's seed unless given); each
            trial's guard score is its user attribute ``guard``, and :func:`best_model` is the last accepted trial
            the guard confirms.
        epoch_score: ``last`` (default with the guard) or ``best``; see :class:`keras_grs.GRSTuner`.
        **fit_kwargs: further ``fit`` arguments.

    Returns:
        The study.
    """
    sampler = study.sampler
    if not isinstance(sampler, PruningSampler):
        raise TypeError(f"the study's sampler is {type(sampler).__name__}; use GRSSampler, RRSSampler, ...")
    direction = sampler.direction(study)
    from keras_tuner.engine.metrics_tracking import infer_metric_direction

    expected = infer_metric_direction(objective)  # None for a metric keras-tuner does not know: the study decides
    if expected is not None and direction != expected:
        raise ValueError(
            f"study {study.study_name!r} has directions {[d.name.lower() for d in study.directions]}, but objective "
            f"{objective!r} is to be {expected}imized"
        )
    if tolerance is None:
        tolerance = sampler.tolerance if sampler.tolerance is not None else DEFAULT_TOLERANCE
    check_tolerance(tolerance)
    if sampler.tolerance is not None and sampler.tolerance != tolerance:
        raise ValueError(f"optimize(tolerance={tolerance}) differs from the sampler's tolerance {sampler.tolerance}")
    if validation_data is None:
        raise ValueError("optimize() needs validation_data=(x_val, y_val)")
    epoch_score = epoch_score_for(acceptance, epoch_score)
    guard_data = check_guard_data(guard_data, acceptance)
    model = _as_model(model_or_hypermodel)
    structure = analyze(model, min_width)
    check_objective(model, objective, validation_data, batch_size)  # before a trial trains and fails on it
    # the sampler's frozen widths and width multiple, checked against the model's groups before any trial
    constrain(structure.search_groups(), sampler.frozen, sampler.width_multiple)
    existing = study.user_attrs.get(CONFIG_ATTR)
    config = _config(sampler, structure, tolerance, model, existing["sampler"]["seed"] if existing else None,
                     acceptance, epoch_score, objective)
    if existing is not None and existing != config:
        differing = sorted(k for k in config if existing.get(k) != config[k])
        raise ValueError(
            f"study {study.study_name!r} holds a pruning search with other settings ({', '.join(differing)}): "
            f"it was {({k: existing.get(k) for k in differing})}; use the same model, sampler and tolerance, or "
            "another study"
        )
    sampler.settings(study)  # a worker's other seed: the study's wins, with a warning
    discard_damaged_checkpoints(study, directory)
    if acceptance == "guard" and guard_data is None:  # the same samples in every process: the study's seed
        validation_data, guard_data = split_guard(validation_data, guard_fraction, seed=sampler.study_seed(study),
                                                  classes=loss_reads_classes(model))
    if existing is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([objective, "flops"][: len(study.directions)])
        study.set_user_attr(CONFIG_ATTR, config)
    run = _Objective(study, sampler, model, structure, x, y, validation_data, epochs, initial_epochs,
                     batch_size, directory, train_first, objective, direction, fit_kwargs, evaluator, guard_data,
                     epoch_score)
    if sampler.plan(study).finished:
        return study
    # The sampler records the accepted path after each trial and stops the study when the method stops.
    study.optimize(run, n_trials=n_trials, timeout=timeout, callbacks=study_callbacks)
    return study


class _Objective:
    def __init__(self, study, sampler, model, structure, x, y, validation_data, epochs, initial_epochs,
                 batch_size, directory, train_first, objective, direction, fit_kwargs, evaluator, guard_data,
                 epoch_score):
        self.study, self.sampler, self.model, self.structure = study, sampler, model, structure
        self.guard_data = guard_data
        self.fit_args = (x, y)
        self.fit_kwargs = dict(fit_kwargs, validation_data=validation_data, epochs=epochs, batch_size=batch_size)
        self.fit_kwargs.setdefault("verbose", 0)
        self.directory = directory
        evaluator = make_evaluator(evaluator, keras_tuner_objective(objective, direction),
                                   seed=sampler.study_seed(study), epoch_score=epoch_score)
        if hasattr(evaluator, "pad_to"):  # every trial padded alike, in any process (see BatchedEvaluator)
            evaluator.pad_to(model)
        self.runner = CandidateRunner(
            build=lambda widths: resized(model, widths), load_parent=self._trained, objective=objective,
            evaluator=evaluator, base_weights=model.get_weights(), train_first=train_first,
            initial_epochs=initial_epochs, norms=sampler.needs_norms, arrays=True,
        )

    def __call__(self, trial):
        try:
            return self._evaluate(trial)
        except optuna.TrialPruned:
            raise
        except Exception as error:  # Optuna keeps no reason with a failed trial: this tells it from a killed one
            trial.set_user_attr(ERROR_ATTR, f"{type(error).__name__}: {last_line(error)}")
            raise

    def _evaluate(self, trial):
        # The first suggest_int prunes a trial that started after the search ended (see the sampler).
        widths = {g.name: trial.suggest_int(g.name, g.min_width, g.width) for g in self.structure.groups}
        candidate = self.sampler.candidate(trial)
        if tuple(widths.values()) != candidate.widths:
            raise RuntimeError(f"trial {trial.number} sampled {widths}, the search asked for {candidate.widths}")
        path = checkpoint_path(self.directory, trial.study, trial.number)
        path.parent.mkdir(parents=True, exist_ok=True)
        parent = None if candidate.parent is None else trial_number_of(trial.study, candidate.parent)
        request = Request(trial.number, widths, str(path), key=candidate.key, parent=parent,
                          removed=candidate.removed_dict)
        (record,) = self.runner.run([request], self.fit_args, self.fit_kwargs, guard=self.guard_data)
        if record.score is None:
            raise ValueError(f"the evaluator reported no {self.runner.objective_name!r}, only {sorted(record.metrics)}")
        trial.set_user_attr(CHECKPOINT_ATTR, str(path.resolve()))
        trial.set_user_attr("params", record.params)
        trial.set_user_attr("flops", record.flops)
        if record.metrics.get("val_samples"):  # the sampling noise of the score, which the acceptance margin reads
            trial.set_user_attr("val_samples", int(record.metrics["val_samples"]))
        if record.latency_ms is not None:  # what a sampler with cost="pi-zero" minimizes
            trial.set_user_attr("latency_ms", record.latency_ms)
        if record.unit_norms is not None:
            trial.set_user_attr("unit_norms", json.dumps(record.unit_norms))
        for name, value in (record.guard or {}).items():  # read only by the final walk back
            if value is not None:
                trial.set_user_attr(name, value)
        return (record.score, record.flops) if len(trial.study.directions) == 2 else record.score

    def _trained(self, number):
        """Trial ``number``'s trained model, from its checkpoint."""
        return trial_model(self.study, self.model, number, self.directory)


def keras_tuner_objective(name, direction="max"):
    import keras_tuner

    return keras_tuner.Objective(name, direction)


def _checked(path):
    """A checkpoint that still matches the size and SHA-256 recorded when it was written (else CorruptFileError)."""
    verify(path)
    return path


def pruning_path(study) -> list[dict]:
    """The accepted trials, initial first (as in ``GRSTuner.pruning_path``)."""
    sampler = study.sampler
    names = [g.name for g in sampler.search(study).groups]
    return sampler.plan(study).path_rows(names, lambda key: str(trial_number_of(study, key)))


def trial_model(study, model, number, directory="keras_grs_runs"):
    """The trained model of one trial of a pruning study of ``model``."""
    config = study.user_attrs[CONFIG_ATTR]
    widths = {g["name"]: study.trials[number].params[g["name"]] for g in config["groups"]}
    result = resized(model, widths)
    load_weights(result, _checked(trial_checkpoint(study, number, directory)))
    return result


def best_model(study, model, directory="keras_grs_runs"):
    """The compact model: the final accepted trial (last accepted, smallest valid structure, confirmed by the
    guard when the study has one), with its weights.

    Args:
        study: a pruning study (its sampler attached: ``optuna.load_study(..., sampler=GRSSampler(seed))``).
        model: the initial model the study pruned (its architecture is reused).
        directory: where ``optimize`` saved the checkpoints.
    """
    path = pruning_path(study)
    if not path:
        raise ValueError(f"study {study.study_name!r} has no completed trial yet")
    final = next(row for row in path if row["final"])
    return trial_model(study, model, int(final["trial_id"]), directory)


__all__ = ["best_model", "create_study", "open_storage", "optimize", "pruning_path", "trial_model", "trial_number_of"]
