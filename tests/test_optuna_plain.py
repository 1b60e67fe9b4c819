"""The samplers in plain Optuna objectives: widths learnt from suggest_int, inherit/keep, directions, seeds, stopping,
several processes (SQLite and JournalStorage)."""

import json
import math
import subprocess

import keras
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from optuna_fake import drive, objective_for, start_worker, storage_of

from keras_grs import datasets
from keras_grs import optuna as kgo
from keras_grs.optuna.samplers import CONFIG_ATTR, KEY_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)
SINGLE_PROCESS_PATH = ["6x5x4", "5x5x4", "4x5x4", "3x5x4", "2x5x4", "1x5x4", "1x4x4", "1x3x4"]


def path_of(study):
    return [step["structure"] for step in kgo.pruning_path(study)]


def keys(study):
    return [t.system_attrs[KEY_ATTR] for t in study.trials if t.state == TrialState.COMPLETE]


# -- the decisions, with a fake objective (no training) ------------------------------------------------------------
def test_the_first_trial_runs_every_width_at_its_maximum_and_the_widths_are_learnt_in_suggestion_order():
    study = optuna.create_study(direction="maximize", sampler=kgo.GRSSampler(tolerance=0.9, seed=0))

    def objective(trial):
        b = trial.suggest_int("b", 2, 5)
        a = trial.suggest_int("a", 1, 7)
        rate = trial.suggest_float("rate", 1e-4, 1e-1, log=True)  # not a width: one value for the whole search
        trial.set_user_attr("rate", rate)
        return 1.0 - 0.03 * (7 - a) - 0.04 * (5 - b)

    study.optimize(objective, n_trials=100)
    assert study.trials[0].params["a"] == 7 and study.trials[0].params["b"] == 5
    groups = study.user_attrs[CONFIG_ATTR]["groups"]
    assert groups == [{"name": "b", "width": 5, "min_width": 2}, {"name": "a", "width": 7, "min_width": 1}]
    assert len({t.params["rate"] for t in study.trials}) == 1
    # 0.9 allows a loss of 0.1: greedy takes the cheaper width first (a: 3 units = 0.09), then b cannot go
    assert path_of(study)[-1] == "5x4"
    assert [t.user_attrs["valid"] for t in study.trials[1:]].count(False) >= 1


def test_single_objective_and_two_objective_studies_take_the_same_path():
    single = optuna.create_study(direction="maximize", sampler=kgo.GRSSampler(seed=3))
    drive(single, values="score")
    double = optuna.create_study(directions=["maximize", "minimize"], sampler=kgo.GRSSampler(seed=3))
    drive(double)
    assert path_of(single) == path_of(double) == SINGLE_PROCESS_PATH
    assert keys(single) == keys(double)


def test_a_loss_minimized_is_judged_in_its_direction():
    # 1/score <= reference/T exactly when score >= T x reference: minimizing 1/score takes maximizing score's path
    study = optuna.create_study(direction="minimize", sampler=kgo.GRSSampler(seed=3))
    drive(study, values="loss")
    assert path_of(study) == SINGLE_PROCESS_PATH
    final = kgo.pruning_path(study)[-1]
    assert final["objective"] > kgo.pruning_path(study)[0]["objective"]  # a larger loss, within tolerance
    rrs = optuna.create_study(direction="minimize", sampler=kgo.RRSSampler(seed=3))
    drive(rrs, values="loss")
    complete = [t for t in rrs.trials if t.state == TrialState.COMPLETE]
    assert complete[-1].values[0] > complete[0].values[0] / 0.985  # RRS stopped at its first failing candidate
    assert all(t.values[0] <= complete[0].values[0] / 0.985 for t in complete[:-1])


def test_jgrs_jumps_then_refines_in_a_plain_objective():
    study = optuna.create_study(direction="maximize", sampler=kgo.JGRSSampler(seed=3, phases=[[0.5, 2], [None, 2]]))
    drive(study, values="score")
    phases = [t.user_attrs["phase"] for t in study.trials]
    assert phases[0] == "initial" and set(phases[1:]) == {"far1", "near"}
    assert phases.index("near") > max(i for i, p in enumerate(phases) if p == "far1")
    path = kgo.pruning_path(study)
    assert path[-1]["objective"] >= 0.985 and path[-1]["structure"] != "6x5x4"
    assert all(t.state == TrialState.COMPLETE for t in study.trials)


def test_the_study_stops_itself_and_a_trial_started_after_the_end_is_pruned_before_the_objective_runs():
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=kgo.GRSSampler(seed=3))
    drive(study, n_trials=500)
    finished = len(study.trials)
    assert finished < 500 and all(t.state == TrialState.COMPLETE for t in study.trials)
    bodies = []

    def objective(trial):
        trial.suggest_int("a", 1, 6)
        bodies.append(trial.number)  # never reached: the first suggest_int prunes the trial
        return 1.0, 1.0

    study.optimize(objective, n_trials=5)
    assert len(study.trials) == finished + 1 and study.trials[-1].state == TrialState.PRUNED
    assert bodies == []


def test_the_study_keeps_its_seed_and_refuses_another_method_or_tolerance(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(study_name="s", storage=url, directions=["maximize", "minimize"],
                                sampler=kgo.GRSSampler(seed=3))
    drive(study, n_trials=4)
    other = optuna.load_study(study_name="s", storage=url, sampler=kgo.GRSSampler(seed=7))
    with pytest.warns(UserWarning, match="started with sampler seed 3; this worker's seed 7 is ignored"):
        drive(other)
    assert path_of(other) == SINGLE_PROCESS_PATH
    for sampler, message in ((kgo.RRSSampler(seed=3), "another pruning search"),
                             (kgo.GRSSampler(seed=3, tolerance=0.9), "tolerance 0.985")):
        again = optuna.load_study(study_name="s", storage=url, sampler=sampler)
        with pytest.raises(ValueError, match=message):
            drive(again, n_trials=1)


def test_widths_must_be_the_first_trials_integers_with_step_one():
    study = optuna.create_study(direction="maximize", sampler=kgo.GRSSampler(seed=0))
    with pytest.raises(ValueError, match="step 2"):
        study.optimize(lambda t: float(t.suggest_int("a", 2, 8, step=2)), n_trials=1)
    study = optuna.create_study(direction="maximize", sampler=kgo.GRSSampler(seed=0))
    study.optimize(lambda t: float(t.suggest_int("a", 1, 8)), n_trials=1)
    with pytest.raises(ValueError, match=r"suggest_int\('extra', 1, 4\) is not one of the study's widths \['a'\]"):
        study.optimize(lambda t: float(t.suggest_int("a", 1, 8) + t.suggest_int("extra", 1, 4)), n_trials=1)
    with pytest.raises(ValueError, match="directions"):
        optuna.create_study(directions=["maximize", "maximize"], sampler=kgo.GRSSampler()).optimize(
            objective_for(), n_trials=1)


def test_nwm_needs_the_unit_norms_keep_records():
    study = optuna.create_study(direction="maximize", sampler=kgo.NWMSampler())
    with pytest.raises(ValueError, match=r"trial 0 recorded no unit norms: NWMSampler .*optuna.keep\(trial, model\)"):
        study.optimize(lambda t: 1.0 - 0.001 * (8 - t.suggest_int("a", 1, 8)), n_trials=3)


def test_a_second_process_with_another_seed_joins_the_study_with_a_warning(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(storage=url, study_name="fake", directions=["maximize", "minimize"],
                                sampler=kgo.GRSSampler(seed=3))
    drive(study, n_trials=4)
    worker = start_worker(url, seed=7, stderr=subprocess.PIPE, text=True)
    _, errors = worker.communicate(timeout=300)
    assert worker.returncode == 0, errors
    assert "started with sampler seed 3; this worker's seed 7 is ignored" in errors
    assert path_of(study) == SINGLE_PROCESS_PATH
    done = keys(study)
    assert len(done) == len(set(done))


def test_two_workers_on_a_journal_file_share_one_study_without_repeating_candidates(tmp_path):
    spec = f"journal:{tmp_path / 'journal.log'}"
    workers = [start_worker(spec, delay=0.05, seed=3) for _ in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    study = optuna.load_study(study_name="fake", storage=storage_of(spec), sampler=kgo.GRSSampler(seed=3))
    done = keys(study)
    assert len(done) == len(set(done)), "a candidate was evaluated twice"
    reference = optuna.create_study(directions=["maximize", "minimize"], sampler=kgo.GRSSampler(seed=3))
    drive(reference)
    assert path_of(study) == path_of(reference) == SINGLE_PROCESS_PATH
    assert sorted(done) == sorted(keys(reference))


# -- a real Keras model --------------------------------------------------------------------------------------------
FEATURES = 20


@pytest.fixture(scope="module")
def data():
    x, y = datasets.calcium(n_neurons=FEATURES, n_frames=240, seed=0)
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.25, test=0.0)
    return xt, yt, xv, yv


def build(a, b):
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(a, activation="relu", name="hidden1"),
        keras.layers.Dense(b, activation="relu", name="hidden2"),
        keras.layers.Dense(2, activation="softmax", name="out"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_grs_with_inherit_and_keep_copies_the_parents_surviving_trained_weights(data, tmp_path):
    xt, yt, xv, yv = data
    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(directions=["maximize", "minimize"], storage=url,
                                sampler=kgo.GRSSampler(tolerance=0.5, seed=0))
    trained, checked = {}, []

    def objective(trial):
        model = build(a=trial.suggest_int("a", 1, 6), b=trial.suggest_int("b", 1, 4))
        parent = kgo.inherit(trial, model)
        if parent is not None:  # the parent's trained kernels minus the removed units, independent of surgery
            removed = json.loads(trial.study.get_trials(deepcopy=False)[trial.number].user_attrs["removed"])
            k1, k2 = trained[parent]
            k1 = np.delete(k1, removed.get("a", []), axis=1)
            k2 = np.delete(np.delete(k2, removed.get("a", []), axis=0), removed.get("b", []), axis=1)
            np.testing.assert_array_equal(model.get_layer("hidden1").kernel.numpy(), k1)
            np.testing.assert_array_equal(model.get_layer("hidden2").kernel.numpy(), k2)
            checked.append(trial.number)
        model.fit(xt, yt, epochs=2, batch_size=32, verbose=0)
        trained[trial.number] = (model.get_layer("hidden1").kernel.numpy(), model.get_layer("hidden2").kernel.numpy())
        kgo.keep(trial, model)
        return model.evaluate(xv, yv, verbose=0)[1], float(trial.user_attrs["flops"])

    study.optimize(objective, n_trials=5)
    assert checked == [1, 2, 3, 4]
    assert study.trials[0].params == {"a": 6, "b": 4}
    assert study.trials[0].user_attrs["flops"] == 2 * (20 * 6 + 6 * 4 + 4 * 2)
    artifacts = list((tmp_path / "o_artifacts").iterdir())  # the default store, next to the SQLite file
    assert len(artifacts) == 5
    assert {t.user_attrs["weights"] for t in study.trials} == {p.name for p in artifacts}


def test_nwm_with_keep_removes_the_unit_of_smallest_norm_and_rrs_runs_without_inherit_or_keep(data, tmp_path):
    xt, yt, xv, yv = data

    def objective(trial, store=None):
        model = build(a=trial.suggest_int("a", 2, 6), b=trial.suggest_int("b", 2, 4))
        if store is not None:
            kgo.inherit(trial, model, store=store)
        history = model.fit(xt, yt, epochs=2, batch_size=32, verbose=0, validation_data=(xv, yv))
        if store is not None:
            kgo.keep(trial, model, store=store)
        return history.history["val_loss"][-1]

    nwm = optuna.create_study(direction="minimize", sampler=kgo.NWMSampler(tolerance=0.5))
    store = tmp_path / "shared"
    nwm.optimize(lambda t: objective(t, store), n_trials=3)
    norms = json.loads(nwm.trials[0].user_attrs["unit_norms"])
    assert [len(norms["a"]), len(norms["b"])] == [6, 4]
    first = nwm.trials[1]
    assert first.params == {"a": 5, "b": 4}  # NWM starts with the first layer
    assert json.loads(first.user_attrs["removed"]) == {"a": [int(np.argmin(norms["a"]))]}
    assert len(list(store.iterdir())) == 3

    rrs = optuna.create_study(direction="minimize", sampler=kgo.RRSSampler(tolerance=0.5, seed=1))
    rrs.optimize(objective, n_trials=3)
    assert [t.state for t in rrs.trials] == [TrialState.COMPLETE] * 3
    assert [sum(t.params.values()) for t in rrs.trials] == [10, 9, 8]  # one unit fewer per accepted trial
    assert all(not math.isnan(t.values[0]) for t in rrs.trials)


def test_keep_checks_that_the_widths_set_the_models_layers_in_order(data):
    study = optuna.create_study(direction="maximize", sampler=kgo.GRSSampler())

    def objective(trial):
        b = trial.suggest_int("b", 1, 4)
        a = trial.suggest_int("a", 1, 6)
        kgo.keep(trial, build(a, b))
        return 1.0

    with pytest.raises(ValueError, match="width 'b' is 4 in trial 0, but layer 'hidden1' has 6 units"):
        study.optimize(objective, n_trials=1)

    def named(trial):
        b = trial.suggest_int("b", 1, 4)
        a = trial.suggest_int("a", 1, 6)
        kgo.keep(trial, build(a, b), layers={"a": "hidden1", "b": "hidden2"})
        return 1.0

    study = optuna.create_study(direction="maximize", sampler=kgo.GRSSampler())
    study.optimize(named, n_trials=1)
    assert "weights" in study.trials[0].user_attrs
    with pytest.raises(TypeError, match="keras-grs sampler"):
        optuna.create_study().optimize(lambda t: kgo.keep(t, build(2, 2)), n_trials=1)


def test_optimize_runs_a_single_objective_study_minimizing_the_validation_loss(data, tmp_path):
    from keras_grs import models

    xt, yt, xv, yv = data
    model = models.build("nn2", (FEATURES,))
    study = optuna.create_study(direction="minimize", sampler=kgo.GRSSampler(tolerance=0.5, seed=0))
    kgo.optimize(study, model, xt, yt, (xv, yv), objective="val_loss", evaluator="keras", epochs=1,
                 initial_epochs=2, n_trials=3, directory=tmp_path)
    assert [len(t.values) for t in study.trials] == [1, 1, 1]
    assert study.trials[1].params == {"dense1": 31}
    initial, first = study.trials[0].values[0], study.trials[1].values[0]
    assert study.trials[1].user_attrs["valid"] == (first <= initial / 0.5)
    maximized = optuna.create_study(direction="maximize", sampler=kgo.GRSSampler())
    with pytest.raises(ValueError, match="'val_loss' is to be minimized"):
        kgo.optimize(maximized, model, xt, yt, (xv, yv), objective="val_loss", directory=tmp_path)
