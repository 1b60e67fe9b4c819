"""An AUC objective on the batched path: the compiled fit counts each candidate's true and false positives at the
metric's thresholds over the validation split and reads the area as ``keras.metrics.AUC`` does, so a search whose
objective is ``val_auc`` trains batched, keeps the epoch Keras would keep, and records the same ``val_auc``."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_tuner import Objective

from helpers import batched_trials
from keras_grs import GRSTuner
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator
from keras_grs.evaluate.training import Score, read_loss, read_scores

FEATURES = 6


def compiled(metric, units=1, output="sigmoid", loss="binary_crossentropy", optimizer="adam"):
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(5, activation="relu"),
                              keras.layers.Dense(units, activation=output)])
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy", metric])
    return model


def score_of(model, name="val_auc"):
    loss = read_loss(model, model.layers[-1].get_config()["activation"])
    return read_scores(model, Objective(name, "max"), loss, int(model.output_shape[-1]))[0]


def predictions(rng, k, samples, units, logits=False):
    """k candidates' outputs, with values on the thresholds' edges (0, 1, i/199) and outside [0, 1] for logits."""
    values = rng.uniform(size=(k, samples, units)).astype("float32")
    edges = np.array([0.0, 1.0, 0.5, 1 / 199, 198 / 199, 37 / 199, 0.25, 0.75], "float32")
    values.reshape(-1)[: len(edges) * 3: 3] = edges
    return (values - 0.5) * 8 if logits else values


AUCS = {
    "roc": dict(),
    "roc-minoring": dict(summation_method="minoring"),
    "roc-majoring": dict(summation_method="majoring", num_thresholds=17),
    "pr": dict(curve="PR"),
    "pr-minoring": dict(curve="PR", summation_method="minoring"),
    "prgain": dict(curve="PRGAIN"),
    "uneven-thresholds": dict(thresholds=[0.1, 0.15, 0.5, 0.52, 0.9]),
    "even-thresholds": dict(thresholds=[0.25, 0.5, 0.75]),
    "from-logits": dict(from_logits=True),
    # raw logits read as they are (a linear output, an AUC without from_logits): outside [0, 1], which Keras clips
    # for even thresholds and compares unclipped with explicit ones
    "raw-even": dict(raw=True),
    "raw-uneven-thresholds": dict(thresholds=[0.1, 0.15, 0.5, 0.52, 0.9], raw=True),
}


@pytest.mark.parametrize("options", AUCS.values(), ids=AUCS.keys())
@pytest.mark.parametrize("units", [1, 3])
def test_the_compiled_auc_is_the_keras_metric_of_each_candidates_outputs(options, units):
    rng = np.random.default_rng(units)
    options = dict(options)
    raw = options.pop("raw", False)
    labels = (rng.uniform(size=(120, units)) < 0.4).astype("float32")
    outputs = predictions(rng, 3, 120, units, logits=options.get("from_logits", False) or raw)
    score = score_of(compiled(keras.metrics.AUC(name="auc", **options), units))
    got = score.auc(tf.constant(labels), tf.constant(outputs)).numpy()
    for candidate in range(3):
        metric = keras.metrics.AUC(**options)
        for start in range(0, 120, 32):  # evaluate's batches: the counts add up
            metric.update_state(labels[start:start + 32], outputs[candidate, start:start + 32])
        assert got[candidate] == pytest.approx(float(metric.result()), abs=1e-6)
    assert len(set(np.round(got, 6))) == 3  # the candidates' outputs differ, and so do their areas


@pytest.mark.parametrize("options", [dict(multi_label=True), dict(multi_label=True, label_weights=[1.0, 0.0, 3.0]),
                                     dict(label_weights=[0.5, 2.0, 1.0]), dict(multi_label=True, curve="PR")],
                         ids=["multi-label", "multi-label-weighted", "flattened-weighted", "multi-label-pr"])
def test_multi_label_and_label_weights_are_read_as_keras_reads_them(options):
    rng = np.random.default_rng(7)
    labels = (rng.uniform(size=(90, 3)) < [[0.2, 0.5, 0.7]]).astype("float32")
    outputs = predictions(rng, 2, 90, 3)
    score = score_of(compiled(keras.metrics.AUC(name="auc", **options), 3))
    got = score.auc(tf.constant(labels), tf.constant(outputs)).numpy()
    for candidate in range(2):
        metric = keras.metrics.AUC(**options)
        metric.update_state(labels, outputs[candidate])
        assert got[candidate] == pytest.approx(float(metric.result()), abs=1e-6)


def test_the_metric_is_found_by_the_name_keras_logs_it_under():
    for _ in range(2):
        keras.metrics.AUC()  # another AUC() of the process is named auc_<n>; a metric given as "auc" logs as auc
    assert score_of(compiled("auc")).name == "auc"
    named = compiled(keras.metrics.AUC(name="pr_auc", curve="PR", num_thresholds=50))
    score = score_of(named, "val_pr_auc")
    assert (score.metric, score.name, score.curve, len(score.thresholds)) == ("auc", "pr_auc", "PR", 50)
    assert score_of(compiled("accuracy"), "val_accuracy") == Score("accuracy", "accuracy")


def binary_data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(80, FEATURES)).astype("float32")
    x_val = rng.normal(size=(40, FEATURES)).astype("float32")
    target = (lambda a: (a[:, 0] - 0.5 * a[:, 1] > 0).astype("float32")[:, None])
    return x, target(x), x_val, target(x_val)


def test_a_fit_with_an_auc_objective_keeps_the_epoch_keras_keeps_and_records_its_auc(tmp_path):
    """One candidate, the same batches both ways: the batched fit keeps the epoch of the best val_auc in
    ``model.fit``'s history (not the last), with that epoch's val_auc, val_loss and weights."""
    x, y, x_val, y_val = binary_data(seed=1)

    def build():  # a large step: the validation AUC peaks (1.0) at the third epoch, falls, and reaches 1.0 again
        return compiled(keras.metrics.AUC(name="auc", num_thresholds=50), optimizer=keras.optimizers.Adam(0.2))

    keras.utils.set_random_seed(0)
    reference = build()
    start = reference.get_weights()
    fit = {"epochs": 6, "batch_size": 16, "validation_data": (x_val, y_val), "verbose": 0, "shuffle": False}
    history = reference.fit(x, y, **fit).history
    best = int(np.argmax(history["val_auc"]))  # the first epoch of the best value, as keras-tuner's checkpoint
    assert 0 < best < 5 and min(history["val_auc"][best:]) < history["val_auc"][best]
    candidate = build()
    candidate.set_weights(start)
    evaluator = BatchedEvaluator(Objective("val_auc", "max"))
    job = Job(candidate, True, str(tmp_path / "candidate.weights.h5"))
    assert evaluator.supports([job], fit) is None
    result = evaluator.evaluate([job], (x, y), fit)[0]
    assert evaluator._calls == 1  # batched, not the fallback
    assert result["val_auc"] == pytest.approx(history["val_auc"][best], abs=1e-5)
    assert result["val_loss"] == pytest.approx(history["val_loss"][best], rel=1e-4)
    again = build()
    again.set_weights(start)
    again.fit(x, y, **dict(fit, epochs=best + 1))
    for got, want in zip(candidate.get_weights(), again.get_weights()):  # the best epoch's weights were kept
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("objective", ["val_auc", "val_accuracy"])
def test_a_search_with_an_auc_objective_runs_batched_and_records_val_auc(tmp_path, objective):
    """The objective's AUC, and an AUC compiled beside it (a PR curve), recorded per trial as Keras computes them for
    the trial's checkpoint."""
    x, y, x_val, y_val = binary_data(seed=3)
    keras.utils.set_random_seed(1)
    model = compiled(keras.metrics.AUC(name="auc"))
    model.compile(optimizer="adam", loss="binary_crossentropy",
                  metrics=["accuracy", keras.metrics.AUC(name="auc"), keras.metrics.AUC(name="pr", curve="PR")])
    model.fit(x, y, epochs=20, verbose=0)
    stop = keras.callbacks.EarlyStopping(monitor="val_auc", patience=2)
    tuner = GRSTuner.from_model(model, objective=Objective(objective, "max"), tolerance=0.5, seed=0, max_trials=3,
                                evaluator="batched", acceptance="seed", directory=tmp_path, project_name="auc")
    trials = batched_trials(tuner, x, y, validation_data=(x_val, y_val), epochs=3, callbacks=[stop], verbose=0,
                            trials=3)
    for trial in trials[1:]:  # the AUCs recorded are those of the checkpoint's model
        assert trial.score == pytest.approx(trial.metrics.get_last_value(objective))
        outputs = tuner.load_model(trial).predict(x_val, verbose=0)
        for name, curve in (("val_auc", "ROC"), ("val_pr", "PR")):
            metric = keras.metrics.AUC(curve=curve)
            metric.update_state(y_val, outputs)
            assert float(metric.result()) == pytest.approx(trial.metrics.get_last_value(name), abs=1e-5), name


@pytest.mark.parametrize("metric, objective, loss, reason", [
    (keras.metrics.AUC(name="auc"), Objective("val_auc", "min"), "binary", "an AUC is maximized"),
    (keras.metrics.TruePositives(name="tp"), Objective("val_tp", "max"), "binary", "metric TruePositives"),
    ("auc", Objective("val_auc", "max"), "sparse", "integer class labels"),
    (keras.metrics.AUC(name="auc", label_weights=[1.0, 2.0]), Objective("val_auc", "max"), "binary",
     "2 label weights for 1 outputs"),
], ids=["min", "true-positives", "sparse", "label-weights"])
def test_objectives_the_batched_path_cannot_compute_are_named(metric, objective, loss, reason):
    if loss == "sparse":
        model = compiled(metric, 3, "softmax", "sparse_categorical_crossentropy")
    else:
        model = compiled(metric)
    job = Job(model, True, "")
    found = BatchedEvaluator(objective).supports([job], {"epochs": 1})
    assert found is not None and reason in found, found
