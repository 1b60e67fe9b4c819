"""GRSTuner end to end on tiny data: real training, few epochs."""

import gc
import json
import os
import subprocess
import sys

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

import keras_grs
from keras_grs import GRSTuner, UnsupportedLayerError, datasets, shrink
from keras_grs.evaluate import KerasEvaluator
from keras_grs.guard import split_guard
from keras_grs.tuner.oracles import KEY, NORMS_FILE, PARENT, REMOVED
from keras_grs.tuner.fit_arguments import normalise
from keras_grs.tuner.tuner import PARENT_CACHE_SIZE

FIT = {"epochs": 2, "batch_size": 32, "verbose": 0}


@pytest.fixture(scope="module")
def data():
    x, y = datasets.calcium(n_neurons=24, n_frames=400, seed=2, difficulty="easy")
    return datasets.split(x, y, val=0.25, test=0.0)


def build(hp):
    """A hypermodel as a keras-tuner user writes it: widths with steps, and a learning-rate choice."""
    model = keras.Sequential(
        [
            keras.Input((24,)),
            keras.layers.Dense(hp.Int("units_1", min_value=2, max_value=8, step=2), activation="relu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(hp.Int("units_2", min_value=1, max_value=4), activation="relu"),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(hp.Choice("learning_rate", [1e-2, 1e-3])),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def widths_of(model):
    return keras_grs.analyze(model).widths


def test_a_keras_tuner_workflow_with_grs_in_place_of_random_search(tmp_path, data, capsys):
    (x, y), validation, _ = data
    tuner = GRSTuner(build, objective="val_accuracy", tolerance=0.95, seed=3, max_trials=12,
                     directory=tmp_path, project_name="grs", overwrite=True)
    tuner.search(x, y, validation_data=validation, **FIT)
    trials = len(tuner.oracle.trials)
    assert 2 <= trials <= 12

    best_model = tuner.get_best_models(1)[0]
    path = tuner.pruning_path()
    initial = path[0]
    (final,) = [row for row in path if row["final"]]
    assert initial["widths"] == {"units_1": 8, "units_2": 4}
    assert widths_of(best_model) == tuple(final["widths"].values())
    assert final["params"] == best_model.count_params() <= initial["params"]
    # by default (acceptance="guard") 40% of the validation data is the guard, the rest is what the search saw:
    # the saved weights are the ones that achieved the trial's score, within tolerance of the initial one, on both
    searched, guard = split_guard(validation, 0.4, seed=3)
    _, accuracy = best_model.evaluate(*searched, verbose=0)
    assert accuracy == pytest.approx(final["objective"], abs=1e-6)
    assert final["objective"] >= 0.95 * initial["objective"]
    _, accuracy = best_model.evaluate(*guard, verbose=0)
    assert accuracy == pytest.approx(final["guard"], abs=1e-6)
    assert final["guard"] >= 0.95 * initial["guard"]
    best_hp = tuner.get_best_hyperparameters(1)[0]
    assert (best_hp["units_1"], best_hp["units_2"]) == widths_of(best_model)
    assert best_hp["learning_rate"] == 1e-2
    assert set(best_hp.values) == {"units_1", "units_2", "learning_rate"}  # the user's hyperparameters only
    tuner.search_space_summary()
    assert "grs_" not in capsys.readouterr().out

    tuner.results_summary()
    out = capsys.readouterr().out
    assert "Compact structure" in out and "initial" in out and "8x4" in out

    # searching again on the same project runs no new trial
    again = GRSTuner(build, objective="val_accuracy", tolerance=0.95, seed=3, max_trials=12,
                     directory=tmp_path, project_name="grs")
    again.search(x, y, validation_data=validation, **FIT)
    assert len(again.oracle.trials) == trials
    assert again.pruning_path() == path


def test_candidates_inherit_the_parent_weights_minus_the_removed_units(tmp_path, data):
    (x, y), validation, _ = data
    seen = {}

    class Recording(KerasEvaluator):
        def evaluate(self, jobs, fit_args, fit_kwargs):
            for job in jobs:
                seen[job.checkpoint] = [w.copy() for w in job.model.get_weights()]
            return super().evaluate(jobs, fit_args, fit_kwargs)

    tuner = GRSTuner(build, tolerance=0.5, seed=1, max_trials=3, directory=tmp_path, project_name="inherit")
    tuner.evaluator = Recording(tuner.oracle.objective)
    tuner.search(x, y, validation_data=validation, **FIT)
    second = tuner.oracle.start_order[1]
    values = tuner.oracle.bookkeeping(second)
    parent = tuner.load_model(tuner.oracle.get_trial(values[PARENT]))
    removed = json.loads(values[REMOVED])
    layer_of = {"units_1": keras_grs.analyze(parent).groups[0].name, "units_2": keras_grs.analyze(parent).groups[1].name}
    expected = shrink(parent, {layer_of[k]: v for k, v in removed.items()}).get_weights()
    start = seen[tuner._get_checkpoint_fname(second)]
    assert len(start) == len(expected)
    for a, b in zip(start, expected):
        np.testing.assert_array_equal(a, b)


def test_inherit_weights_false_trains_candidates_from_scratch(tmp_path, data):
    (x, y), validation, _ = data
    tuner = GRSTuner(build, tolerance=0.5, seed=1, max_trials=2, inherit_weights=False, directory=tmp_path)
    first = []

    class Recording(KerasEvaluator):
        def evaluate(self, jobs, fit_args, fit_kwargs):
            first.append(jobs[0].model.get_weights()[1].copy())  # dense bias: zero when freshly initialized
            return super().evaluate(jobs, fit_args, fit_kwargs)

    tuner.evaluator = Recording(tuner.oracle.objective)
    tuner.search(x, y, validation_data=validation, **FIT)
    assert len(first) == 2 and not first[1].any()


def test_from_model_prunes_a_pretrained_model_without_training_it_first(tmp_path, data):
    (x, y), validation, _ = data
    model = keras_grs.models.build("nn2", (24,))
    model.fit(x, y, epochs=5, verbose=0)
    _, pretrained_accuracy = model.evaluate(*validation, verbose=0)
    tuner = GRSTuner.from_model(model, train_first=False, tolerance=0.9, seed=0, max_trials=3,
                                directory=tmp_path, project_name="pre", acceptance="seed")
    assert [g.name for g in tuner.oracle.search.groups] == ["dense1"]
    tuner.search(x, y, validation_data=validation, **FIT)
    initial = tuner.oracle.get_trial(tuner.oracle.start_order[0])
    assert initial.score == pytest.approx(pretrained_accuracy, abs=1e-6)
    assert len(tuner.oracle.trials) == 3
    assert widths_of(tuner.get_best_models(1)[0])[0] <= 32


@pytest.mark.parametrize("oracle", [keras_grs.GRSOracle, keras_grs.JGRSOracle, keras_grs.RRSOracle])
def test_seed_zero_is_a_seed_not_a_request_for_a_random_one(oracle):
    """keras-tuner's Oracle replaces a falsy seed by a random one; 0 must give the same decisions every run."""
    assert [oracle(seed=0).seed for _ in range(3)] == [0, 0, 0]
    assert oracle(seed=7).seed == 7


def test_two_searches_with_seed_zero_remove_the_same_units(tmp_path, data):
    (x, y), validation, _ = data
    model = keras_grs.models.build("nn2", (24,))
    model.fit(x, y, epochs=2, verbose=0)
    removed = []
    for run in ("a", "b"):
        tuner = GRSTuner.from_model(model, train_first=False, seed=0, max_trials=4, directory=tmp_path / run,
                                    project_name="p", acceptance="seed")
        tuner.search(x, y, validation_data=validation, **FIT)
        removed.append([tuner.oracle.bookkeeping(t)[REMOVED] for t in sorted(tuner.oracle.trials)])
    assert removed[0] == removed[1]
    assert len(set(removed[0])) == 4  # the initial model and three different removals


def test_nwm_removes_the_unit_with_the_smallest_l1_norm(tmp_path, data):
    (x, y), validation, _ = data
    tuner = GRSTuner(build, method="nwm", tolerance=0.5, seed=0, max_trials=3, directory=tmp_path)
    tuner.search(x, y, validation_data=validation, **FIT)
    child = tuner.oracle.bookkeeping(tuner.oracle.start_order[1])
    with open(os.path.join(tuner.get_trial_dir(child[PARENT]), NORMS_FILE)) as f:
        norms = json.load(f)
    assert json.loads(child[REMOVED]) == {"units_1": [int(np.argmin(norms["units_1"]))]}


def test_jgrs_through_the_tuner_records_each_phase(tmp_path, data):
    (x, y), validation, _ = data
    tuner = GRSTuner(build, method="jgrs", phases=[(0.5, 2), (None, 1)], tolerance=0.9, seed=0, max_trials=10,
                     directory=tmp_path)
    tuner.search(x, y, validation_data=validation, **FIT)
    phases = [tuner.oracle.bookkeeping(t)["grs_phase"] for t in tuner.oracle.trials]
    assert phases[:3] == ["initial", "far1", "far1"]
    assert tuner.oracle.get_trial(tuner.oracle.start_order[1]).hyperparameters.values["units_1"] == 4


@pytest.mark.parametrize("tolerance", [0, 1.5, -0.1])
def test_bad_tolerances_are_refused_before_anything_is_written(tmp_path, tolerance):
    with pytest.raises(ValueError, match="tolerance"):
        GRSTuner(build, tolerance=tolerance, directory=tmp_path / "t")
    assert not (tmp_path / "t").exists()


def test_hypermodel_errors_are_clear(tmp_path):
    def no_width(hp):
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])

    with pytest.raises(ValueError, match="declares no width"):
        GRSTuner(no_width, directory=tmp_path, project_name="a")

    def idle_width(hp):
        hp.Int("batch", 1, 64)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])

    with pytest.raises(ValueError, match="'batch' controls no layer"):
        GRSTuner(idle_width, directory=tmp_path, project_name="b")

    def bidirectional(hp):
        recurrent = keras.layers.LSTM(hp.Int("u", 1, 4))
        return keras.Sequential([keras.Input((5, 3)), keras.layers.Bidirectional(recurrent), keras.layers.Dense(2)])

    with pytest.raises(UnsupportedLayerError, match="Bidirectional"):
        GRSTuner(bidirectional, directory=tmp_path, project_name="c")
    with pytest.raises(ValueError, match="unknown method"):
        GRSTuner(build, method="magic", directory=tmp_path, project_name="d")


def test_search_arguments_are_checked_before_any_trial(tmp_path, data):
    (x, y), validation, _ = data
    tuner = GRSTuner(build, directory=tmp_path, project_name="v")
    with pytest.raises(ValueError, match="validation_data"):
        tuner.search(x, y, **FIT)
    auc = GRSTuner(build, objective=keras_tuner.Objective("val_auc", "max"), directory=tmp_path, project_name="w")
    with pytest.raises(ValueError, match="does not produce the objective 'val_auc'"):
        auc.search(x, y, validation_data=validation, **FIT)
    assert not tuner.oracle.trials and not auc.oracle.trials


class GraphOnlyStep(keras.Sequential):
    """A model whose test step runs only compiled (as some custom steps do): the eager check must fall back."""

    def test_step(self, data):
        if tf.executing_eagerly():
            raise RuntimeError("this step runs only inside a compiled function")
        return super().test_step(data)


def test_the_objective_check_names_what_evaluate_reports_and_leaves_no_metric_state(data):
    from keras_grs.evaluate.keras import reported_metrics, validate

    (x, _), (x_val, y_val), _ = data
    sample = (x_val[:64], y_val[:64])
    auc = build(keras_tuner.HyperParameters())
    auc.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1")])
    names = reported_metrics(auc, sample)
    assert names == set(validate(auc, (), {"validation_data": sample})) == {"val_loss", "val_accuracy", "val_top1"}
    auc.test_step(sample)  # some state, then the check again: reset afterwards
    reported_metrics(auc, sample)
    assert all(float(v) == 0 for metric in auc.metrics for v in metric.variables)

    graph_only = GraphOnlyStep([keras.Input((24,)), keras.layers.Dense(2, activation="softmax")])
    graph_only.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with pytest.raises(RuntimeError, match="only inside a compiled"):
        graph_only.test_step(sample)
    assert reported_metrics(graph_only, sample) == {"val_loss", "val_accuracy"}


def test_validating_once_gives_evaluates_metrics_without_tracing_it_and_falls_back_beyond_a_few_batches(
        data, monkeypatch):
    from keras_grs.evaluate import keras as keras_evaluation

    (x, _), (x_val, y_val), _ = data
    model = build(keras_tuner.HyperParameters())
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", keras.metrics.SparseCategoricalCrossentropy(name="xent")])
    weights = np.random.default_rng(0).uniform(0.5, 2.0, len(y_val))
    # float64 features, per-sample weights and a last batch shorter than the others, as evaluate takes them
    validation = (x_val.astype("float64"), y_val, weights)
    expected = model.evaluate(validation[0], y_val, sample_weight=weights, batch_size=7, verbose=0, return_dict=True)
    calls = []
    evaluate = model.evaluate
    monkeypatch.setattr(model, "evaluate", lambda *a, **k: calls.append(1) or evaluate(*a, **k))
    eager = keras_evaluation.validate(model, (), {"validation_data": validation, "batch_size": 7})
    assert not calls  # no compiled function traced
    assert eager.keys() == {f"val_{name}" for name in expected}
    for name, value in expected.items():
        assert eager[f"val_{name}"] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    monkeypatch.setattr(keras_evaluation, "EAGER_STEPS", 3)  # more steps than that: compiled, as before
    monkeypatch.setattr(keras_evaluation, "EAGER_CHUNK", 7)
    compiled = keras_evaluation.validate(model, (), {"validation_data": validation, "batch_size": 7})
    assert calls == [1]
    assert compiled == pytest.approx(eager, rel=1e-5, abs=1e-6)


def test_validating_once_takes_big_steps_only_when_the_scores_add_up_per_sample(data, monkeypatch):
    from keras_grs.evaluate import keras as keras_evaluation

    _, (x_val, y_val), _ = data
    weights = np.random.default_rng(1).uniform(0.5, 2.0, len(y_val))
    validation = (x_val, y_val, weights)

    def batch_mean(y_true, y_pred):  # one value per batch: evaluate averages it over batches, not samples
        return keras.ops.mean(keras.ops.max(y_pred, axis=-1))

    cases = {  # how the model is compiled -> whether its validation may take a few big steps
        "built-in": (dict(loss="sparse_categorical_crossentropy",
                          metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=1, name="top1")]), True),
        "sum loss": (dict(loss=keras.losses.SparseCategoricalCrossentropy(reduction="sum"),
                          metrics=["accuracy"]), False),
        "user metric": (dict(loss="sparse_categorical_crossentropy", metrics=[batch_mean]), False),
    }
    for label, (compiled, big) in cases.items():
        model = build(keras_tuner.HyperParameters())
        model.compile(optimizer="adam", **compiled)
        expected = model.evaluate(x_val, y_val, sample_weight=weights, batch_size=7, verbose=0, return_dict=True)
        steps = []
        step = model.test_step
        monkeypatch.setattr(model, "test_step", lambda batch, step=step: steps.append(len(batch[0])) or step(batch))
        eager = keras_evaluation.validate(model, (), {"validation_data": validation, "batch_size": 7})
        assert keras_evaluation._per_sample_scores(model) is big, label
        n = len(y_val)
        assert steps == ([n] if big else [min(7, n - start) for start in range(0, n, 7)]), label
        for name, value in expected.items():
            assert eager[f"val_{name}"] == pytest.approx(value, rel=1e-5, abs=1e-6), (label, name)


def test_many_trials_do_not_keep_models_alive(tmp_path, data):
    (x, y), validation, _ = data
    tuner = GRSTuner(build, tolerance=0.3, seed=0, max_trials=8, directory=tmp_path)
    tuner.search(x, y, validation_data=validation, epochs=1, verbose=0)
    gc.collect()
    models = [o for o in gc.get_objects() if isinstance(o, keras.Model)]
    inner = {id(getattr(m, "_functional", None)) for m in models}  # a Sequential wraps a Functional model
    alive = [m for m in models if id(m) not in inner]
    assert len(alive) <= PARENT_CACHE_SIZE + 1, f"{len(alive)} models still alive after 8 trials"


def test_a_trial_writes_the_oracle_state_and_its_own_file_twice_and_the_tuner_state_once(tmp_path, data,
                                                                                          monkeypatch):
    """Where a batched search spent its bookkeeping: per trial, keras-tuner wrote its trial file three times and the
    oracle's state three times (the last two identical in content or nearly), the tuner's (constant) state once.
    Each state is now written when it begins and when it ends, and the project still holds every trial's final
    state."""
    import keras_grs.files as files

    written = []
    commit = files._commit
    monkeypatch.setattr(files, "_commit", lambda temporary, path: (written.append(os.path.basename(path)),
                                                                    commit(temporary, path)))
    (x, y), validation, _ = data
    freeze_count = gc.get_freeze_count()
    tuner = GRSTuner(build, tolerance=0.9, seed=0, max_trials=6, directory=tmp_path, project_name="w",
                     evaluator="batched")
    tuner.search(x, y, validation_data=validation, **FIT)
    trials = len(tuner.oracle.trials)
    assert trials == 6
    assert written.count("trial.json") == 2 * trials
    assert written.count("oracle.json") == 2 * trials
    assert written.count(os.path.basename(tuner._get_tuner_fname())) == 1
    assert gc.get_freeze_count() == freeze_count  # the objects frozen for the search's collections are thawed
    project = tmp_path / "w"
    for trial in tuner.oracle.trials.values():
        stored = json.loads((project / f"trial_{trial.trial_id}" / "trial.json").read_text())
        assert stored["status"] == "COMPLETED" and stored["score"] == pytest.approx(trial.score)
        assert stored["metrics"]["metrics"]["params"]["observations"]
    state = json.loads((project / "oracle.json").read_text())
    assert state["ongoing_trials"] == {} and len(state["end_order"]) == trials
    again = GRSTuner(build, tolerance=0.9, seed=0, max_trials=6, directory=tmp_path, project_name="w",
                     evaluator="batched")
    assert again.oracle.get_best_trials(1)[0].trial_id == tuner.oracle.get_best_trials(1)[0].trial_id


def search_that_crashes(directory, crash_at):
    """The search of the kill test: the process exits with status 3 at the end of an epoch once the project holds
    ``crash_at`` entries (0: never); returns the tuner when the search finishes."""

    class Crash(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if crash_at and len(os.listdir(os.path.join(directory, "p"))) >= crash_at:
                os._exit(3)

    x, y = datasets.calcium(n_neurons=24, n_frames=400, seed=2, difficulty="easy")
    (x, y), val, _ = datasets.split(x, y, val=0.25, test=0.0)
    tuner = GRSTuner(build, tolerance=0.95, seed=5, max_trials=9, directory=directory, project_name="p")
    tuner.search(x, y, validation_data=val, epochs=1, verbose=0, callbacks=[Crash()])
    return tuner


def test_a_search_killed_mid_way_resumes_without_losing_or_repeating_trials(tmp_path):
    project = str(tmp_path / "p")
    # dies inside a trial, once the project holds a few trial folders
    script = (f"import sys; sys.path.insert(0, {os.path.dirname(__file__)!r}); import test_tuner; "
              f"test_tuner.search_that_crashes({str(tmp_path)!r}, 6)")
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert killed.returncode == 3, killed.stderr[-2000:]
    before = {}
    for name in os.listdir(project):
        path = os.path.join(project, name, "trial.json")
        if name.startswith("trial_") and os.path.exists(path):
            with open(path) as f:
                trial = json.load(f)
            if trial["status"] == "COMPLETED":
                before[trial["trial_id"]] = trial
    assert before

    # resumed in this process (only the kill needs a process of its own); it returns once the search is finished
    search_that_crashes(str(tmp_path), 0)
    tuner = GRSTuner(build, tolerance=0.95, seed=5, max_trials=9, directory=str(tmp_path), project_name="p")
    trials = tuner.oracle.trials
    for trial_id, old in before.items():  # nothing lost, nothing rerun
        assert trials[trial_id].score == old["score"]
    keys = [tuner.oracle.bookkeeping(i)[KEY] for i, t in trials.items() if t.status == "COMPLETED"]
    assert len(keys) == len(set(keys))


def evaluation_of(tuner, trial_id):
    with open(os.path.join(tuner.get_trial_dir(trial_id), "evaluation.json")) as f:
        return json.load(f)


def test_search_takes_datasets_like_keras_tuners(tmp_path, data):
    import tensorflow as tf

    (x, y), (x_val, y_val), _ = data
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    validation = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(64)
    tuner = GRSTuner(build, tolerance=0.5, seed=3, max_trials=3, directory=tmp_path, project_name="datasets")
    tuner.search(train, validation_data=validation, epochs=1, verbose=0)
    trials = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
    assert [t.status for t in trials] == ["COMPLETED"] * 3
    assert all(t.metrics.exists("guard_accuracy") for t in trials)  # the guard was carved from the dataset
    # read into memory once: the candidates were trained together, not one fit each
    assert evaluation_of(tuner, trials[1].trial_id) == {"evaluator": "BatchedEvaluator", "one_fit_per_trial": None}

    args, kwargs, reason = normalise((train,), {"validation_data": validation}, batches=True)
    assert reason is None and kwargs["batch_size"] == 16
    np.testing.assert_array_equal(args[0], x)
    np.testing.assert_array_equal(kwargs["validation_data"][1], y_val)
    args, kwargs, reason = normalise((train.repeat(),), {"validation_data": validation}, batches=True)
    assert args[0] is not None and reason == "x: an infinite (repeated) tf.data.Dataset"  # streamed to fit
    with pytest.raises(ValueError, match="validation_data is an infinite"):
        normalise((x, y), {"validation_data": validation.repeat()}, batches=True)


def test_search_takes_keywords_validation_split_callbacks_and_class_weight(tmp_path, data):
    (x, y), _, _ = data
    logs = tmp_path / "logs"

    class Board(keras.callbacks.TensorBoard):  # where it would log (TensorBoard itself is not installed here)
        seen = []

        def set_model(self, model):
            self._model = model

        def on_train_begin(self, logs=None):
            Board.seen.append(self.log_dir)

        def _silent(self, *args, **kwargs):
            pass

        on_train_end = on_epoch_begin = on_epoch_end = on_train_batch_begin = on_train_batch_end = _silent
        on_test_begin = on_test_end = on_test_batch_begin = on_test_batch_end = _silent

    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=0), Board(log_dir=str(logs))]
    tuner = GRSTuner(build, tolerance=0.5, seed=3, max_trials=3, directory=tmp_path, project_name="kwargs")
    with pytest.warns(UserWarning, match=r"one fit per trial.*callbacks \['Board'\]"):  # class_weight is batched
        tuner.search(x=x, y=y, validation_split=0.25, callbacks=callbacks, class_weight={0: 1.0, 1: 2.0},
                     epochs=3, verbose=0)
    ids = list(tuner.oracle.start_order)
    assert [tuner.oracle.get_trial(t).status for t in ids] == ["COMPLETED"] * 3
    reason = evaluation_of(tuner, ids[1])["one_fit_per_trial"]
    assert "Board" in reason
    # keras-tuner's layout: one TensorBoard directory per trial
    assert Board.seen == [str(logs / trial_id / "execution0") for trial_id in ids]
    with pytest.raises(TypeError, match="twice"):
        tuner.search(x, x=x, y=y, validation_split=0.25)
    with pytest.raises(ValueError, match="validation_split"):
        tuner.search(x, y, validation_split=1.5)
