"""Accuracy metrics named explicitly (``"sparse_categorical_accuracy"``, ``CategoricalAccuracy(name="acc")``,
``BinaryAccuracy(threshold=...)``), precision, recall and F-scores: the batched path computes them as Keras does,
so a search whose objective is one of them trains batched and records the value Keras computes for each trial's
checkpoint."""

import keras
import numpy as np
import pytest
from keras_tuner import Objective

from helpers import batched_trials
from keras_grs import GRSTuner
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator
from keras_grs.evaluate.training import read_loss, read_scores

L = keras.layers
FEATURES = 6


def compiled(units, output, loss, metric):
    model = keras.Sequential([keras.Input((FEATURES,)), L.Dense(8, activation="relu", name="hidden"),
                              L.Dense(5, activation="relu", name="narrow"), L.Dense(units, activation=output)])
    model.compile(optimizer="adam", loss=loss, metrics=[metric])
    return model


def score_of(model, name):
    loss = read_loss(model, model.layers[-1].get_config()["activation"])
    return read_scores(model, Objective(name, "max"), loss, int(model.output_shape[-1]))[0]


def data(seed, n, task):
    """Features with a learnable rule: 3 classes (ids or one-hot), or 3 independent 0/1 labels (multi-label)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, FEATURES)).astype("float32")
    mixing = np.random.default_rng(42).normal(size=(FEATURES, 3))
    scores = x @ mixing + 0.5 * rng.normal(size=(n, 3))
    if task == "multi-label":
        return x, (scores > 0).astype("float32")
    ids = scores.argmax(axis=1)
    return x, (ids if task == "ids" else np.eye(3, dtype="float32")[ids])


CASES = {  # task, output, loss, metric, the name Keras logs it under
    "sparse": ("ids", "softmax", "sparse_categorical_crossentropy", "sparse_categorical_accuracy",
               "sparse_categorical_accuracy"),
    "categorical": ("one-hot", "softmax", "categorical_crossentropy", keras.metrics.CategoricalAccuracy(name="acc"),
                    "acc"),
    "binary": ("multi-label", "sigmoid", "binary_crossentropy", keras.metrics.BinaryAccuracy(threshold=0.4),
               "binary_accuracy"),
    "precision": ("multi-label", "sigmoid", "binary_crossentropy", keras.metrics.Precision(name="precision"),
                  "precision"),
    "recall-threshold": ("multi-label", "sigmoid", "binary_crossentropy",
                         keras.metrics.Recall(thresholds=0.4, name="recall"), "recall"),
    "f1-macro": ("one-hot", "softmax", "categorical_crossentropy", keras.metrics.F1Score(average="macro", name="f1"),
                 "f1"),
    "f1-weighted-threshold": ("multi-label", "sigmoid", "binary_crossentropy",
                              keras.metrics.F1Score(average="weighted", threshold=0.4, name="f1"), "f1"),
    "f2-micro": ("one-hot", "softmax", "categorical_crossentropy",
                 keras.metrics.FBetaScore(average="micro", beta=2.0, name="f2"), "f2"),
}


def keras_metric(metric):
    return keras.metrics.get(metric) if isinstance(metric, str) else metric.__class__.from_config(metric.get_config())


@pytest.mark.parametrize("case", CASES, ids=CASES.keys())
def test_each_candidates_accuracy_is_the_keras_metric_of_its_outputs(case):
    """Outputs exactly on the binary threshold and ties between classes included."""
    task, output, loss, metric, name = CASES[case]
    model = compiled(3, output, loss, metric)
    score = score_of(model, f"val_{name}")
    rng = np.random.default_rng(0)
    _, labels = data(1, 40, task)
    outputs = rng.uniform(size=(4, 40, 3)).astype("float32")
    outputs[:, :5] = 0.4  # on the threshold, and three classes tied
    got = score.value(labels, outputs).numpy()
    for k in range(4):
        reference = keras_metric(metric)
        reference.update_state(labels, outputs[k])
        assert got[k] == pytest.approx(float(reference.result()), abs=1e-7), k


@pytest.mark.parametrize("case", CASES, ids=CASES.keys())
def test_a_search_on_an_accuracy_metric_runs_batched_and_records_it_as_keras_computes_it(tmp_path, case):
    task, output, loss, metric, name = CASES[case]
    (x, y), (x_val, y_val) = data(2, 300, task), data(3, 120, task)
    keras.utils.set_random_seed(0)
    model = compiled(3, output, loss, metric)
    model.fit(x, y, epochs=15, verbose=0)
    objective = f"val_{name}"
    tuner = GRSTuner.from_model(model, objective=Objective(objective, "max"), tolerance=0.8, seed=0, max_trials=3,
                                evaluator="batched", acceptance="seed", directory=tmp_path, project_name=case)
    trials = batched_trials(tuner, x, y, validation_data=(x_val, y_val), epochs=2, verbose=0, trials=3)
    for trial in trials[1:]:
        assert trial.score == pytest.approx(trial.metrics.get_last_value(objective))
        reference = keras_metric(metric)
        reference.update_state(y_val, tuner.load_model(trial).predict(x_val, verbose=0))
        assert trial.score == pytest.approx(float(reference.result()), abs=1e-6)


@pytest.mark.parametrize("loss, metric, objective, reason", [
    ("categorical_crossentropy", "sparse_categorical_accuracy", Objective("val_sparse_categorical_accuracy", "max"),
     "with one-hot or 0/1 labels"),
    ("sparse_categorical_crossentropy", "categorical_accuracy", Objective("val_categorical_accuracy", "max"),
     "with integer class labels"),
    ("categorical_crossentropy", "categorical_accuracy", Objective("val_categorical_accuracy", "min"),
     "it is maximized"),
    ("mse", "binary_accuracy", Objective("val_binary_accuracy", "max"), "with the regression loss"),
    ("sparse_categorical_crossentropy", keras.metrics.Recall(name="recall"), Objective("val_recall", "max"),
     "Recall with integer class labels"),
    ("categorical_crossentropy", keras.metrics.Precision(thresholds=[0.3, 0.6], name="precision"),
     Objective("val_precision", "max"), "Precision with other than one threshold"),
    ("categorical_crossentropy", keras.metrics.F1Score(name="f1"), Objective("val_f1", "max"),
     "average=None (one score per class)"),
], ids=["sparse-of-one-hot", "categorical-of-ids", "min", "regression", "recall-of-ids", "two-thresholds",
        "f1-per-class"])
def test_accuracy_metrics_the_labels_cannot_serve_are_named(loss, metric, objective, reason):
    model = compiled(3, "softmax", loss, metric)
    found = BatchedEvaluator(objective).supports([Job(model, True, "")], {"epochs": 1})
    assert found is not None and reason in found, found
