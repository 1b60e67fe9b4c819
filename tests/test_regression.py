"""Regression models (a dense autoencoder, a sensor value): mean squared or absolute error and the Huber loss,
searched on ``val_loss``. They train batched, their trials record what Keras would (no accuracy), the guard split
does not take their targets for classes, and a Huber's ``delta`` reaches every candidate."""

import warnings

import keras
import numpy as np
import pytest
from keras_tuner import Objective

from keras_grs import GRSTuner, shrink
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator
from keras_grs.guard import split_guard

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
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback to one fit per trial
        tuner.search(x, x, validation_data=(x_val, x_val), epochs=3, verbose=0)
    assert tuner.evaluator._calls >= 1
    trials = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
    assert len(trials) == 5 and all(t.status == "COMPLETED" for t in trials)
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
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback to one fit per trial
        tuner.search(x, x, validation_data=(x_val, x_val), epochs=4, callbacks=[stop], verbose=0)
    assert tuner.evaluator._calls >= 1
    trials = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
    assert len(trials) == 4 and all(t.status == "COMPLETED" for t in trials)
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
