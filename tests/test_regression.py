"""Regression models (a dense autoencoder, a sensor value): mean squared or absolute error and the Huber loss,
searched on ``val_loss``. They train batched, their trials record what Keras would (no accuracy), the guard split
does not take their targets for classes, and a Huber's ``delta`` reaches every candidate."""

import keras
import numpy as np
import pytest
from keras_tuner import Objective

from helpers import batched_trials
from keras_grs import GRSTuner, shrink
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator
from keras_grs.guard import loss_reads_classes, split_guard
from keras_grs.inputs import DataError

L = keras.layers


def reconstruction_data(n, seed):
    """Points near a 3-dimensional surface in 16 dimensions, a little noise on each: what an autoencoder learns."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(99).normal(size=(3, 16))
    x = np.tanh(rng.normal(size=(n, 3)) @ mixing) + 0.05 * rng.normal(size=(n, 16))
    return x.astype("float32")


def autoencoder(loss="mse", output=None):
    model = keras.Sequential([keras.Input((16,)), L.Dense(12, activation="relu", name="encode"),
                              L.Dense(6, activation="relu", name="code"), L.Dense(12, activation="relu", name="decode"),
                              L.Dense(16, activation=output, name="reconstruct")])
    model.compile(optimizer="adam", loss=loss)
    return model


def test_an_autoencoder_searched_on_val_loss_trains_batched_and_records_keras_val_loss(tmp_path):
    x, x_val = reconstruction_data(300, 0), reconstruction_data(160, 1)
    keras.utils.set_random_seed(0)
    model = autoencoder()
    model.fit(x, x, epochs=30, verbose=0)
    tuner = GRSTuner.from_model(model, objective=Objective("val_loss", "min"), tolerance=0.9, seed=0, max_trials=5,
                                evaluator="batched", directory=tmp_path, project_name="autoencoder")
    trials = batched_trials(tuner, x, x, validation_data=(x_val, x_val), epochs=3, verbose=0, trials=5)
    # the guard holds part of the validation data back (acceptance "guard"): the search validates on the rest
    (search_x, _), _ = split_guard((x_val, x_val), tuner.oracle.guard_fraction, seed=tuner.oracle.seed)
    for trial in trials[1:]:
        recorded = trial.metrics.metrics
        assert "val_accuracy" not in recorded and "guard_loss" in recorded
        assert trial.score == pytest.approx(trial.metrics.get_last_value("val_loss"))
        # the val_loss recorded is the one Keras computes for the trial's checkpoint
        checkpoint = tuner.load_model(trial)
        assert checkpoint.evaluate(search_x, search_x, verbose=0) == pytest.approx(trial.score, rel=1e-4)
    assert tuner.get_best_models(1)[0].count_params() < model.count_params()


def test_reconstruction_targets_are_not_split_as_classes():
    """An autoencoder's targets are rows of values, not one-hot rows: the guard takes a plain random share."""
    x = reconstruction_data(50, 2)
    (kept, _), (guard, _) = split_guard((x, x), 0.4, seed=0)
    assert len(guard) == 20 and len(kept) == 30
    ids = np.eye(4, dtype="float32")[np.arange(50) % 4]  # one-hot rows are still classes: each class gives 40%
    (_, _), (_, guard_ids) = split_guard((x, ids), 0.4, seed=0)
    assert np.bincount(guard_ids.argmax(axis=1)).tolist() == [5, 5, 5, 5]  # round(0.4 x 13), round(0.4 x 12)


@pytest.mark.parametrize("loss, expected", [
    ("mse", False), ("mean_absolute_error", False), (keras.losses.Huber(0.5), False), (keras.losses.log_cosh, False),
    ("poisson", False), (keras.losses.MeanSquaredLogarithmicError(), False), ("sparse_categorical_crossentropy", True),
    (keras.losses.BinaryFocalCrossentropy(), True), ("categorical_hinge", True), ("kl_divergence", None),
    (lambda y, p: keras.ops.mean(p - y), None),
])
def test_a_loss_says_whether_its_labels_are_classes(loss, expected):
    model = keras.Sequential([keras.Input((3,)), L.Dense(2)])
    assert loss_reads_classes(model) is None  # not compiled: the labels decide
    model.compile(loss=loss)
    assert loss_reads_classes(model) is expected


def counts_data(n, seed):
    """Whole-number targets (events counted in a window): a regression whose targets look like class ids, a few
    counts seen once."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    return x, np.round(np.exp(1.2 + 0.5 * x[:, 0] + 0.3 * x[:, 1])).astype("int64")


def counts_model():
    model = keras.Sequential([keras.Input((8,)), L.Dense(12, activation="relu", name="hidden"),
                              L.Dense(6, activation="relu", name="narrow"), L.Dense(1, name="count")])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    return model


def test_whole_number_targets_of_a_regression_are_split_at_random():
    x, y = counts_data(120, 5)
    assert np.bincount(y).min() <= 1  # a count seen once: as a class, it could not be split
    with pytest.raises(DataError, match="too small or too large for class"):
        split_guard((x, y), 0.4, seed=0)
    (kept, _), (guard, _) = split_guard((x, y), 0.4, seed=0, classes=False)
    assert len(guard) == 48 and len(kept) == 72


@pytest.mark.parametrize("entry", ["tuner", "prune", "optuna"])
def test_a_regression_on_counts_is_searched_with_the_guard(tmp_path, entry):
    """Each way in splits a regression's validation data at random, whatever its targets look like."""
    (x, y), validation = counts_data(240, 6), counts_data(90, 7)
    keras.utils.set_random_seed(0)
    model = counts_model()
    model.fit(x, y, epochs=5, verbose=0)
    if entry == "tuner":
        tuner = GRSTuner.from_model(model, objective=Objective("val_loss", "min"), tolerance=0.8, seed=0,
                                    max_trials=3, directory=tmp_path, project_name="counts")
        tuner.search(x, y, validation_data=validation, epochs=1, verbose=0)
        trials = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
        assert len(trials) == 3 and all("guard_loss" in t.metrics.metrics for t in trials)
    elif entry == "prune":
        import keras_grs

        objective = Objective("val_loss", "min")  # a keras-tuner Objective, as prune() also takes
        result = keras_grs.prune(model, x, y, validation, test_data=counts_data(60, 8), objective=objective,
                                 tolerance=0.8, epochs=1, max_trials=3, seed=0, directory=tmp_path, verbose=0)
        found = result.results[0]
        assert result.model.count_params() <= model.count_params() and found.trials == 3
        # no accuracy made up from the counts: the objective on every split instead
        assert found.val_accuracy is found.test_accuracy is found.al is found.eup_al is None
        assert None not in (found.val_score, found.guard_score, found.test_score, found.eup_test_score)
        report = result.save(tmp_path / "out").joinpath("report.md").read_text()
        assert "| val loss | guard loss | test loss |" in report and "val acc" not in report
    else:
        from keras_grs import optuna as kgo

        study = kgo.create_study(kgo.GRSSampler(seed=0), directory=tmp_path, study_name="counts",
                                 direction="minimize")
        kgo.optimize(study, model, x, y, validation, tolerance=0.8, epochs=1, n_trials=3, objective="val_loss",
                     directory=tmp_path, train_first=False)
        assert len(study.trials) == 3


def test_a_huber_loss_keeps_its_delta_in_every_candidate():
    """Keras' Huber writes no delta into its configuration; a candidate compiled from it would train with 1.0."""
    model = autoencoder(loss=keras.losses.Huber(delta=0.1))
    child = shrink(model, {"code": [0, 1]})
    truth, guess = np.zeros((4, 16), "float32"), np.full((4, 16), 0.5, "float32")
    assert float(child.loss(truth, guess)) == pytest.approx(float(model.loss(truth, guess)))
    assert float(model.loss(truth, guess)) == pytest.approx(0.1 * 0.5 - 0.5 * 0.1 ** 2)


@pytest.mark.parametrize("output, reason", [(L.Activation("softmax"), None), (L.LeakyReLU(0.3), "with options")])
def test_regression_outputs_the_batched_path_reads_or_names(output, reason):
    model = keras.Sequential([keras.Input((16,)), L.Dense(8, activation="relu"), L.Dense(16), output])
    model.compile(optimizer="adam", loss="mse")
    found = BatchedEvaluator(Objective("val_loss", "min")).supports([Job(model, True, "")], {"epochs": 1})
    if reason is None:
        assert found is None
    else:
        assert found is not None and reason in found, found


def test_val_accuracy_of_a_regression_is_named():
    found = BatchedEvaluator(Objective("val_accuracy", "max")).supports([Job(autoencoder(), True, "")],
                                                                       {"epochs": 1})
    assert found is not None and "regression loss mean_squared_error" in found, found


@pytest.mark.parametrize("objective", ["val_loss", "val_mae", "val_root_mean_squared_error"])
def test_error_metrics_are_recorded_and_may_be_the_objective(tmp_path, objective):
    """An autoencoder compiled with "mae" and RootMeanSquaredError: each trial records both as Keras computes them
    for its checkpoint, and either may be the objective (minimized), or an EarlyStopping's monitor."""
    x, x_val = reconstruction_data(300, 3), reconstruction_data(120, 4)
    keras.utils.set_random_seed(0)
    model = autoencoder()
    model.compile(optimizer="adam", loss="mse", metrics=["mae", keras.metrics.RootMeanSquaredError()])
    model.fit(x, x, epochs=20, verbose=0)
    stop = keras.callbacks.EarlyStopping(monitor="val_mae", patience=1)
    tuner = GRSTuner.from_model(model, objective=Objective(objective, "min"), tolerance=0.8, seed=0, max_trials=4,
                                evaluator="batched", acceptance="seed", directory=tmp_path, project_name="errors")
    trials = batched_trials(tuner, x, x, validation_data=(x_val, x_val), epochs=4, callbacks=[stop], verbose=0,
                            trials=4)
    for trial in trials[1:]:
        assert trial.score == pytest.approx(trial.metrics.get_last_value(objective))
        outputs = tuner.load_model(trial).predict(x_val, verbose=0)
        expected = {"val_loss": np.mean((outputs - x_val) ** 2), "val_mae": np.mean(np.abs(outputs - x_val)),
                    "val_root_mean_squared_error": np.sqrt(np.mean((outputs - x_val) ** 2))}
        for name, value in expected.items():
            assert trial.metrics.get_last_value(name) == pytest.approx(value, rel=1e-4), name


def test_an_error_metric_maximized_is_named():
    model = autoencoder()
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    found = BatchedEvaluator(Objective("val_mae", "max")).supports([Job(model, True, "")], {"epochs": 1})
    assert found is not None and "an error is minimized" in found, found
