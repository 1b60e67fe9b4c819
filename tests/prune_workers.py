"""Several `keras-grs prune --backend optuna` workers on one study, as on several machines (used by the storage tests).

The workers' candidates really train and inherit weights from each other's checkpoints. Training is made
deterministic so that the accepted path is decided by the search alone, whichever worker trained which candidate:
a model without dropout, its initial weights from one .keras file, and one batch per epoch (the batched evaluator's
random stream, which depends on a process's history, then only orders the samples of that batch).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from keras_grs import optuna as kgo
from keras_grs.optuna.samplers import KEY_ATTR
from keras_grs.optuna.study import CHECKPOINT_ATTR, open_storage

ROOT = Path(__file__).resolve().parent.parent
FEATURES = 8
STUDY = "0_tiny"  # keras-grs prune names a model's study INDEX_NAME
LEAVING_AFTER = 5  # trials: the initial structure, the first step's three candidates and one of the second's


def write_inputs(directory):
    """A data file and a .keras model without dropout (widths 4x3x3: three candidates per GRS step, ties in
    validation accuracy that the cost breaks); returns their paths."""
    import keras

    directory = Path(directory)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, FEATURES)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype("int32")
    np.savez(directory / "data.npz", x_train=x[:200], y_train=y[:200], x_val=x[200:], y_val=y[200:])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(4, activation="relu"),
        keras.layers.Dense(3, activation="relu"),
        keras.layers.Dense(3, activation="relu"),
        keras.layers.Dense(2, activation="softmax"),
    ], name="tiny")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(directory / "tiny.keras")
    return directory / "tiny.keras", directory / "data.npz"


def prune_arguments(model, data, out, storage, *extra):
    """`keras-grs prune` as one worker (one machine) of the study in ``storage``."""
    return ["prune", str(model), "--data", str(data), "--out", str(out), "--backend", "optuna", "--storage", storage,
            "--method", "grs", "--tolerance", "0.97", "--epochs", "40", "--initial-epochs", "15", "--batch-size", "256",
            "--seed", "0", "--acceptance", "seed", "--no-eup", "--quiet", *extra]


def start_worker(*arguments):
    """`keras-grs prune` of this checkout in a process of its own (arguments as for :func:`prune_arguments`)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-m", "keras_grs", *prune_arguments(*arguments)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_workers(model, data, directory, storage, workers):
    """A study shared by several workers, as on several machines; returns the run directories of the workers that
    trained (the first one's is first) and of those that saw the search end.

    A worker leaves after the study's first trials (``--max-trials``: a machine taken back), then ``workers`` others
    run at once until the search ends. Candidates train in tens of milliseconds here, faster than a waiting worker
    looks again, so whether two workers running at once both get a candidate is up to the scheduler; the worker
    that leaves is what makes sure the others continue from weights trained elsewhere.
    """
    directory = Path(directory)
    first = directory / "leaving"
    finish(start_worker(model, data, first, storage, "--max-trials", str(LEAVING_AFTER)))
    runs = [directory / f"worker{i}" for i in range(workers)]
    for worker in [start_worker(model, data, run, storage) for run in runs]:
        finish(worker)
    return [first, *runs], runs


def finish(worker, timeout=400):
    output, _ = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, output
    return output


def study_on(storage):
    return optuna.load_study(study_name=STUDY, storage=open_storage(storage), sampler=kgo.GRSSampler(seed=0))


def evaluated(study):
    return [t for t in study.trials if t.state == TrialState.COMPLETE and t.system_attrs.get(KEY_ATTR)]


def check_shared_like_single(shared, single, runs, finishers):
    """The workers' study ``shared`` against the single process's ``single``; ``runs``: every worker's --out
    directory, ``finishers``: those of the workers that ran until the search ended (each holds the run's report)."""
    done = [t.system_attrs[KEY_ATTR] for t in evaluated(shared)]
    assert len(done) == len(set(done)), "a candidate was evaluated twice"
    assert sorted(done) == sorted(t.system_attrs[KEY_ATTR] for t in evaluated(single))
    path = [(row["structure"], row["final"]) for row in kgo.pruning_path(shared)]
    assert path == [(row["structure"], row["final"]) for row in kgo.pruning_path(single)]
    assert len(path) >= 3, f"too short a search to tell workers apart: {path}"
    # The work was shared: the checkpoints the trials recorded lie in more than one worker's run directory, and
    # children inherited weights that another worker trained.
    trainer = {t.number: next(i for i, run in enumerate(runs) if Path(run).resolve() in
                              Path(t.user_attrs[CHECKPOINT_ATTR]).parents) for t in evaluated(shared)}
    assert len(set(trainer.values())) >= 2, trainer
    assert any(trainer[t.number] != trainer[t.user_attrs["parent"]]
               for t in evaluated(shared) if t.user_attrs.get("parent") is not None), trainer
    final = next(row for row in kgo.pruning_path(shared) if row["final"])["structure"]
    for run in finishers:  # every worker that saw the end reports the study's compact model
        assert json.loads((Path(run) / "report.json").read_text())["models"][0]["structure"] == final
    return len(done)
