"""A run's life cycle, owned by the job (:func:`keras_grs.prune`); front ends (the CLI) only parse and print.

Before any work, and before anything is written: the settings are checked (:func:`check_settings`), the data split
by split, the models resolved (:func:`resolve_models`: built-in names built for the data, files loaded in Keras'
safe mode) and checked against the data. Then the run directory is owned (:func:`owned`): locked against every
other process (:mod:`keras_grs.runlock`), checked (new or empty, or a run started with the same settings when
resuming), swept of what a killed run was writing, and the settings recorded in ``run.json``. Every refusal is a
:class:`keras_grs.inputs.SettingError` or :class:`keras_grs.inputs.DataError` naming the problem, so the Python API
and the CLI refuse the same things with the same words, each spelling the settings its own way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from keras_grs.inputs import DataError, SettingError, load_model

RUN_FILE = "run.json"
TUNER_DIR = "tuner"  # where the searches of a run directory live (prune(out=...), keras-grs prune --out)
LOCK_COMMAND = "keras_grs.prune()"  # how the holder of a run directory is described to a process it refuses
BACKENDS = ("keras-tuner", "optuna")


def check_settings(*, method, tolerance, epochs, initial_epochs, batch_size, selection, seed, phases, max_trials,
                   backend, evaluator, storage, objective, guard_fraction, export_c, out, cost="flops") -> None:
    """Every option of a run that could be refused, refused before any work with the option named."""
    from keras_grs.evaluate import EVALUATORS
    from keras_grs.guard import check_guard_fraction
    from keras_grs.scoring import objective_direction
    from keras_grs.search import COSTS, METHODS, check_phases, check_tolerance
    from keras_grs.selection import CRITERIA

    _one_of("method", method, METHODS)
    _one_of("backend", backend, BACKENDS)
    _one_of("cost", cost, COSTS)
    if isinstance(evaluator, str):
        _one_of("evaluator", evaluator, EVALUATORS)
    if evaluator is None or evaluator == "batched":
        from keras_grs.evaluate.batched import check_workers

        try:
            check_workers(None)  # the environment's KERAS_GRS_WORKERS, read by every tuner of the run
        except ValueError as error:
            raise SettingError(str(error)) from None
    if isinstance(selection, str):
        _one_of("selection", selection, CRITERIA)
    for name, value in (("epochs", epochs), ("batch_size", batch_size), ("initial_epochs", initial_epochs),
                        ("max_trials", max_trials)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
            raise SettingError("{" + name + "} must be at least 1", name)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))
                             or not 0 <= seed < 2**32):
        raise SettingError("{seed} must be in 0..4294967295", "seed")
    for name, check, value in (("tolerance", check_tolerance, tolerance),
                               ("guard_fraction", check_guard_fraction, guard_fraction),
                               ("objective", objective_direction, objective)):
        try:
            check(value)
        except ValueError as error:
            raise SettingError("{" + name + "}: " + str(error), name) from None
    if phases is not None:
        if "phases" not in METHODS[method].options:
            takers = " or ".join(name for name, entry in METHODS.items() if "phases" in entry.options)
            raise SettingError("{phases} only applies to {method} " + takers, "phases", "method")
        try:
            check_phases(phases)
        except (ValueError, TypeError) as error:
            raise SettingError("{phases}: " + str(error), "phases") from None
    if isinstance(storage, str):
        check_storage_url(storage)
    if export_c and out is None:
        raise SettingError("{export_c} needs {out}, the run directory the C code is written into", "export_c", "out")


def _one_of(name, value, choices) -> None:
    if value not in choices:
        spelled = "{" + name + "}"
        raise SettingError(f"unknown {spelled} {value!r}: {spelled} must be one of {', '.join(choices)}", name)


def check_storage_url(url: str) -> str:
    """An Optuna storage URL with a scheme keras-grs can open (sqlite, postgresql, ...)."""
    from keras_grs.optuna.study import STORAGE_SCHEMES

    if "://" not in url:
        raise SettingError("{storage} " + repr(url) + " is not a storage URL (sqlite:///PATH, postgresql://...)",
                           "storage")
    if url.split(":", 1)[0].split("+", 1)[0] not in STORAGE_SCHEMES:
        raise SettingError("{storage}: unknown storage URL " + repr(url), "storage")
    return url


def resolve_models(models, x, labels: dict, safe_mode: bool = True):
    """The run's models and labels: ``(models, names, labels)``.

    ``models`` may mix compiled Keras models, built-in names (nn1, cnn1, ...: built for the samples' shape and the
    labels' classes) and ``.keras`` files (loaded in safe mode unless ``safe_mode=False``). Built-in models train on
    class ids, so one-hot ``labels`` (a dict of label arrays, checked already) are turned into ids for them.
    ``names`` are what the run records: the name or file given, or the model's own name.
    """
    import keras

    from keras_grs import models as builtins

    given = list(models) if isinstance(models, (list, tuple)) else [models]
    if not given:
        raise SettingError("{models}: at least one model is needed", "models")
    for model in given:
        if not isinstance(model, (keras.Model, str, os.PathLike)):
            raise TypeError(f"expected Keras models, built-in model names or .keras files, got {type(model).__name__}")
    builtin = [isinstance(m, str) and m in builtins.NAMES for m in given]
    one_hot = [key for key, value in labels.items() if value is not None and _is_one_hot(value)]
    if one_hot and any(builtin):
        if not all(builtin):
            raise DataError("one-hot labels cannot serve built-in models (class ids) and other models together; "
                            "give class ids")
        labels = {key: np.argmax(value, axis=1).astype("int32") if key in one_hot else value
                  for key, value in labels.items()}
    classes = _num_classes(labels)
    resolved = [m if isinstance(m, keras.Model) else load_model(m, np.shape(x)[1:], classes, safe_mode) for m in given]
    for model in resolved:
        if not model.compiled:
            raise SettingError(f"model {model.name!r} is not compiled: compile it with its loss and an accuracy "
                               "metric (a file: save it after model.compile(...))")
    names = [m.name if isinstance(m, keras.Model) else str(m) for m in given]
    return resolved, names, labels


def _is_one_hot(y) -> bool:
    return np.ndim(y) == 2 and np.shape(y)[1] > 1


def _num_classes(labels: dict) -> int:
    present = [np.asarray(y) for y in labels.values() if y is not None]
    if _is_one_hot(present[0]):
        return int(present[0].shape[1])
    return max(2, int(max(y.max() for y in present)) + 1)


def data_digest(*arrays) -> str:
    """SHA-256 of the arrays (dtype, shape and bytes; None for an absent split): the data's identity in run.json."""
    digest = hashlib.sha256()
    for array in arrays:
        if array is None:
            digest.update(b"none;")
            continue
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape};".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def run_settings(models: list[str], data_digest: str, *, method, tolerance, epochs, initial_epochs, batch_size, eup,
                 selection, seed, phases, max_trials, backend, storage, objective, acceptance, guard_fraction,
                 epoch_score, frozen, width_multiple, cost="flops") -> dict:
    """What defines a run, as ``run.json`` records it: a resumed run must have the same."""
    return {
        "models": list(models),
        "data_digest": data_digest,
        "method": method,
        "tolerance": tolerance,
        "epochs": epochs,
        "initial_epochs": initial_epochs,
        "batch_size": batch_size,
        "eup": bool(eup),
        "selection": selection if isinstance(selection, str) else getattr(selection, "__name__", "function"),
        "seed": seed,
        "phases": format_phases(phases),
        "max_trials": max_trials,
        "backend": backend,
        "storage": storage if storage is None or isinstance(storage, str) else type(storage).__name__,
        "objective": objective if isinstance(objective, str) else objective.name,
        "acceptance": acceptance,
        "guard_fraction": guard_fraction,
        "epoch_score": epoch_score,
        # absent from runs started before the options existed: unset reads the same
        "frozen": sorted(frozen) or None,
        "width_multiple": None if width_multiple == 1 else width_multiple,
        "cost": None if cost == "flops" else cost,
    }


def format_phases(phases) -> str | None:
    """JGRS phases as the CLI writes them: ``0.5:3,0.2:3,near:3``."""
    from keras_grs.search import check_phases

    if phases is None:
        return None
    return ",".join(f"near:{p.attempts}" if p.rate is None else f"{p.rate!r}:{p.attempts}"
                    for p in check_phases(phases))


def check_run_directory(root: Path, resume: bool, settings: dict, root_name: str) -> None:
    """``root`` is new or empty, or with ``resume`` holds a run started with the same ``settings``.

    Checked while holding the directory's lock, when no other process can change it. ``root_name`` is the keyword
    that named the directory (``out`` or ``directory``).
    """
    from keras_grs.runlock import is_lock_file

    if not root.is_dir() or all(is_lock_file(p) for p in root.iterdir()):
        return
    if not resume:
        raise SettingError(f"output directory {str(root)!r} is not empty; pass {{resume}} to continue the run it "
                           f"holds, or choose another {{{root_name}}}", "resume", root_name)
    saved_path = root / RUN_FILE
    if not saved_path.is_file():
        raise SettingError(f"{{resume}}: {str(root)!r} holds no {RUN_FILE}, so it is not a keras-grs run", "resume")
    try:
        saved = json.loads(saved_path.read_text())
    except ValueError:
        raise SettingError(f"{{resume}}: {str(saved_path)!r} is not valid JSON; the run cannot be resumed",
                           "resume") from None
    changed = sorted(k for k in settings if saved.get(k) != settings[k])
    if changed:
        def was(key):  # a key an older keras-grs did not record cannot be compared, so such a run is not continued
            return f"{saved[key]!r}" if key in saved else "not recorded (an older keras-grs started the run)"

        raise SettingError(f"{{resume}}: the run in {str(root)!r} was started with other settings: "
                           + "; ".join(f"{k} was {was(k)}, now {settings[k]!r}" for k in changed), "resume")


@contextlib.contextmanager
def owned(root, searches, settings: dict, *, resume: bool, overwrite: bool, root_name: str):
    """Own a run for the duration of the block: ``root`` (and ``searches``, where the searches live) locked, the
    directory checked (skipped with ``overwrite``: the caller starts again), a killed run's temporary files swept,
    and ``settings`` recorded in ``root/run.json``.

    Raises :class:`keras_grs.runlock.RunLocked` naming the holder's pid and host, or SettingError; a refused run
    leaves the directory as it was.
    """
    from keras_grs.files import remove_partials, write_json
    from keras_grs.runlock import RunLock

    root, searches = Path(root), Path(searches)
    if root.exists() and not root.is_dir():
        raise SettingError(f"{{{root_name}}} {str(root)!r} exists and is not a directory", root_name)
    with contextlib.ExitStack() as stack:
        stack.enter_context(RunLock(root, command=LOCK_COMMAND))
        if not overwrite:
            check_run_directory(root, resume, settings, root_name)
        if searches.resolve() != root.resolve():
            stack.enter_context(RunLock(searches, command=LOCK_COMMAND))
        remove_partials(root)
        write_json(root / RUN_FILE, settings, indent=2)
        yield
