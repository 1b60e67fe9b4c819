"""A checkpoint damaged between two runs is found on resume and its trial evaluated again, never inherited."""

from pathlib import Path

import numpy as np
import pytest

import keras_grs
from keras_grs import datasets, files, models
from keras_grs.tuner.oracles import KEY


@pytest.fixture(scope="module")
def data():
    x, y = datasets.calcium(n_neurons=20, n_frames=200, seed=0, difficulty="easy")
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.25, test=0.0)
    return xt, yt, (xv, yv)


def tuner(directory, max_trials):
    return keras_grs.GRSTuner.from_model(models.build("nn2", (20,)), directory=str(directory), project_name="p",
                                         method="grs", tolerance=0.5, seed=1, max_trials=max_trials)


def damage(path, how):
    path = Path(path)
    if how == "truncated":
        with open(path, "r+b") as f:
            f.truncate(path.stat().st_size // 2)
    else:  # same size, one byte changed: only the SHA-256 tells
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("how, message", [("truncated", "truncated"), ("altered", "SHA-256 differs")])
def test_a_damaged_checkpoint_is_found_on_resume_and_its_trial_evaluated_again(data, tmp_path, how, message):
    x, y, validation = data
    first = tuner(tmp_path, 3)
    first.search(x, y, validation_data=validation, epochs=1, verbose=0)
    damaged = first.pruning_path()[1]["trial_id"]  # accepted, and the parent of the next step's candidate
    key = first.oracle.bookkeeping(damaged)[KEY]
    damage(first._get_checkpoint_fname(damaged), how)

    with pytest.warns(UserWarning, match=f"trial {damaged} is evaluated again: .*{message}"):
        resumed = tuner(tmp_path, 5)
    assert resumed.oracle.trials[damaged].status == "INVALID"
    assert "checkpoint damaged" in resumed.oracle.trials[damaged].message
    resumed.search(x, y, validation_data=validation, epochs=1, verbose=0)

    trials = resumed.oracle.trials
    again = [t for t in trials if resumed.oracle.bookkeeping(t)[KEY] == key and trials[t].status == "COMPLETED"]
    assert len(again) == 1 and again[0] != damaged
    assert files.verify(resumed._get_checkpoint_fname(again[0])) is True
    path = [row["trial_id"] for row in resumed.pruning_path()]
    assert damaged not in path and again[0] in path
    # every model on the path loads from a checkpoint that matches its record
    for trial_id in path:
        model = resumed.load_model(trials[trial_id])
        assert np.isfinite(model.predict(validation[0][:4], verbose=0)).all()


def test_optuna_a_damaged_checkpoint_is_found_on_resume_and_its_trial_evaluated_again(data, tmp_path):
    # the same verify() as above tells truncated from altered; one kind is enough here
    from keras_grs import optuna as kgo
    from keras_grs.optuna.samplers import KEY_ATTR, discarded
    from keras_grs.optuna.study import checkpoint_path

    x, y, validation = data
    model = models.build("nn2", (20,))

    def resume(n_trials):
        study = kgo.create_study(kgo.GRSSampler(seed=1, tolerance=0.5), study_name="p", directory=tmp_path)
        return kgo.optimize(study, model, x, y, validation, epochs=1, n_trials=n_trials, directory=tmp_path)

    first = resume(3)
    damaged = int(kgo.pruning_path(first)[1]["trial_id"])  # accepted, and the parent of the next step's candidate
    key = first.trials[damaged].system_attrs[KEY_ATTR]
    damage(checkpoint_path(tmp_path, first, damaged), "truncated")

    with pytest.warns(UserWarning, match=f"trial {damaged} is evaluated again: .*truncated"):
        study = resume(2)
    assert damaged in discarded(study) and "checkpoint damaged" in discarded(study)[damaged]
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    again = [t.number for t in complete if t.system_attrs[KEY_ATTR] == key and t.number != damaged]
    assert len(again) == 1
    assert files.verify(checkpoint_path(tmp_path, study, again[0])) is True
    path = [int(row["trial_id"]) for row in kgo.pruning_path(study)]
    assert damaged not in path and again[0] in path
    assert study.trials[-1].state.name == "COMPLETE" and study.trials[-1].number > again[0]  # the search went on
    for number in path:
        trained = kgo.trial_model(study, model, number, tmp_path)
        assert np.isfinite(trained.predict(validation[0][:4], verbose=0)).all()
