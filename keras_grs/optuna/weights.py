"""Weight inheritance in a plain Optuna objective: :func:`keep` a trial's trained weights, :func:`inherit` them.

The weights go to an Optuna artifact store (``optuna.artifacts``), one ``.weights.h5`` artifact per trial, whose id
the trial records in its user attribute ``weights``. An artifact store because it is Optuna's public way to attach
files to trials: optuna-dashboard lists and serves them, and the same calls work with a directory
(``FileSystemArtifactStore``) or object storage (``Boto3ArtifactStore`` for S3, ``GCSArtifactStore``) when workers
on several machines share no disk.

Where, when not told: the sampler's ``store``, else a ``FileSystemArtifactStore`` next to the storage's file
(``DIR/optuna.db`` -> ``DIR/optuna_artifacts/``; a JournalStorage file ``DIR/journal.log`` ->
``DIR/journal_artifacts/``), else, for an in-memory study, a temporary directory removed when the process exits.
A study on a database server (PostgreSQL, MySQL) has no such place: pass ``store=``.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.trial import TrialState

from keras_grs.costs import count_flops, count_params
from keras_grs.latency import latency_ms
from keras_grs.importance import unit_norms
from keras_grs.evaluate.runner import inherit_from
from keras_grs.files import load_weights
from keras_grs.optuna.samplers import PruningSampler, trial_number_of
from keras_grs.structure import analyze
from keras_grs.surgery import resized

WEIGHTS_ATTR = "weights"
_TEMPORARY_STORES = {}  # in-memory studies: one temporary directory per process


def keep(trial, model, store=None, layers=None) -> str:
    """Store ``model``'s trained weights for the trial's children, with what the method reads from them.

    Call it in the objective after training. It records in the trial's user attributes the artifact id of the
    weights (``weights``), ``params``, ``flops`` (the cost when the study has no FLOPs value), ``latency_ms``
    (the estimated Pi Zero milliseconds a sampler with ``cost="pi-zero"`` minimizes) and, for NWM,
    ``unit_norms`` (the L1 norm of each unit's incoming weights, per width).

    Args:
        trial: the objective's ``optuna.Trial`` (of a study with a keras-grs sampler).
        model: the trained model, built from the trial's widths.
        store: a directory or an Optuna artifact store (for several machines: shared disk or object storage);
            default: the sampler's ``store``, else next to the study's storage (see :mod:`keras_grs.optuna.weights`).
        layers: which layer each width parameter sets (``{"a": "dense", ...}``); default: the widths in the order
            the trial suggested them are the model's prunable layers in model order.

    Returns:
        The artifact id of the weights.
    """
    sampler = _sampler(trial)
    layer_of = _layers(trial, model, layers)
    artifact_store = _store(trial.study, store if store is not None else sampler.store)
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, f"trial_{trial.number}.weights.h5")
        model.save_weights(path)
        artifact_id = upload_artifact(artifact_store=artifact_store, file_path=path, study_or_trial=trial)
    trial.set_user_attr(WEIGHTS_ATTR, artifact_id)
    trial.set_user_attr("params", count_params(model))
    trial.set_user_attr("flops", count_flops(model))
    trial.set_user_attr("latency_ms", latency_ms(model))
    if sampler.needs_norms:
        norms = unit_norms(model)
        trial.set_user_attr("unit_norms", json.dumps({name: norms[layer] for name, layer in layer_of.items()}))
    return artifact_id


def inherit(trial, model, store=None, layers=None) -> int | None:
    """Give ``model`` the surviving trained weights of the trial's parent (the structure it was derived from).

    The parent's weights (stored by :func:`keep`) lose the units the sampler removed (recorded in the trial's
    user attribute ``removed``) through :mod:`keras_grs.surgery`; the rest is copied exactly. Call it in the
    objective after building the model and before training. The first trial has no parent: nothing happens.

    Args:
        trial, store, layers: as for :func:`keep`.
        model: the model built from the trial's widths (compiled or not).

    Returns:
        The parent's trial number, or None for the first trial.

    Example::

        def objective(trial):
            model = build(a=trial.suggest_int("a", 1, 16), b=trial.suggest_int("b", 1, 8))
            kgo.inherit(trial, model)
            model.fit(x, y, epochs=5, verbose=0)
            kgo.keep(trial, model)
            return model.evaluate(x_val, y_val, verbose=0)[1]
    """
    sampler = _sampler(trial)
    candidate = sampler.candidate(trial)
    if candidate is None or candidate.parent is None:
        return None
    study = trial.study
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    number = trial_number_of(study, candidate.parent, trials)
    parent = next(t for t in trials if t.number == number)
    artifact_id = parent.user_attrs.get(WEIGHTS_ATTR)
    if artifact_id is None:
        raise ValueError(
            f"trial {number}, the parent of trial {trial.number}, stored no weights: call "
            "keras_grs.optuna.keep(trial, model) after training in every trial"
        )
    layer_of = _layers(trial, model, layers)
    parent_model = resized(model, {layer: parent.params[name] for name, layer in layer_of.items()})
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, f"trial_{number}.weights.h5")
        download_artifact(artifact_store=_store(study, store if store is not None else sampler.store),
                          file_path=path, artifact_id=artifact_id)
        load_weights(parent_model, path)
    removed = {layer_of[name]: indices for name, indices in candidate.removed_dict.items()}
    inherit_from(parent_model, model, removed)
    return number


def _sampler(trial) -> PruningSampler:
    sampler = trial.study.sampler
    if not isinstance(sampler, PruningSampler):
        raise TypeError(
            f"the study's sampler is {type(sampler).__name__}; keep and inherit need a keras-grs sampler "
            "(GRSSampler, RRSSampler, NWMSampler, JGRSSampler)"
        )
    return sampler


def _layers(trial, model, layers=None) -> dict[str, str]:
    """Width parameter -> the layer it sets, checked against the model's widths."""
    names = [name for name, d in trial.distributions.items() if isinstance(d, optuna.distributions.IntDistribution)]
    groups = analyze(model).groups
    if layers is None:
        if len(names) != len(groups):
            raise ValueError(
                f"trial {trial.number} suggested {len(names)} widths {names}, the model has {len(groups)} prunable "
                f"layers {[g.layer for g in groups]}: say which layer each width sets with layers={{name: layer}}"
            )
        layers = {name: group.layer for name, group in zip(names, groups)}
    widths = {g.layer: g.width for g in groups}
    for name in names:
        layer = layers.get(name)
        if layer not in widths:
            raise ValueError(f"width {name!r} sets no prunable layer of the model (layers={layers}); the prunable "
                             f"layers are {list(widths)}")
        if widths[layer] != trial.params[name]:
            raise ValueError(
                f"width {name!r} is {trial.params[name]} in trial {trial.number}, but layer {layer!r} has "
                f"{widths[layer]} units: suggest the widths in the order of the model's layers, or pass layers="
            )
    return {name: layers[name] for name in names}


def _store(study, store):
    if store is None:
        return FileSystemArtifactStore(str(_default_directory(study)))
    if isinstance(store, (str, os.PathLike)):
        Path(store).mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(str(store))
    if not (hasattr(store, "open_reader") and hasattr(store, "write")):
        raise TypeError(f"store must be a directory or an Optuna artifact store, got {type(store).__name__}")
    return store


def _default_directory(study) -> Path:
    """A directory next to the study's storage file (see the module's docstring)."""
    # Optuna 5.0 exposes neither a study's storage nor where a storage keeps its data: these are private.
    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # _CachedStorage wraps an RDBStorage; JournalStorage its backend
    path = None
    if isinstance(backend, optuna.storages.RDBStorage) and backend.url.startswith("sqlite:///"):
        name = backend.url[len("sqlite:///"):]
        path = None if name in ("", ":memory:") else Path(name)
    elif isinstance(backend, optuna.storages.journal.JournalFileBackend):
        path = Path(backend._file_path)
    elif isinstance(storage, optuna.storages.InMemoryStorage):
        if id(storage) not in _TEMPORARY_STORES:
            directory = tempfile.mkdtemp(prefix="keras_grs_weights_")
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            _TEMPORARY_STORES[id(storage)] = Path(directory)
        return _TEMPORARY_STORES[id(storage)]
    if path is None:
        raise ValueError(
            f"study {study.study_name!r} is on a storage without a local file ({type(backend).__name__}): pass "
            "store= to keep and inherit (or to the sampler), a directory on shared disk or an Optuna artifact store"
        )
    directory = path.parent / f"{path.stem}_artifacts"
    directory.mkdir(parents=True, exist_ok=True)
    return directory
