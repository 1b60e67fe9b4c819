"""The batched evaluator: same semantics as one fit per trial, trials recorded as usual, fallback when unsupported."""

import warnings

import keras
import numpy as np
import pytest

import keras_grs
from keras_grs import GRSTuner, datasets, models
from keras_grs.evaluate import Job, KerasEvaluator
from keras_grs.evaluate.batched import BatchedEvaluator
from keras_tuner import Objective

OBJECTIVE = Objective("val_accuracy", "max")


@pytest.fixture(scope="module")
def data():
    x, y = datasets.calcium(n_neurons=30, n_frames=800, seed=5)
    return datasets.split(x, y, val=0.3, test=0.0)


@pytest.fixture(scope="module")
def base_weights(data):
    keras.utils.set_random_seed(7)
    base = models.build("nn1", (30,))
    base.fit(*data[0], epochs=30, batch_size=32, verbose=0)
    return base.get_weights()


def jobs_for(tmp_path, tag, weights, count=3):
    base = models.build("nn1", (30,))
    base.set_weights(weights)
    jobs = []
    for i in range(count):
        child = keras_grs.shrink(base, {"dense1": list(range(i * 3)), "dense2": [i]})
        jobs.append(Job(child, True, str(tmp_path / f"{tag}{i}.weights.h5")))
    return jobs


def test_batched_and_keras_training_reach_the_same_accuracy(tmp_path, data, base_weights):
    (x, y), validation, _ = data
    fit = {"epochs": 8, "batch_size": 32, "validation_data": validation, "verbose": 0}
    batched, plain = [], []
    for repeat in range(2):
        batched += [r["val_accuracy"] for r in BatchedEvaluator(OBJECTIVE, seed=repeat).evaluate(
            jobs_for(tmp_path, f"b{repeat}", base_weights), (x, y), fit)]
        plain += [r["val_accuracy"] for r in KerasEvaluator(OBJECTIVE).evaluate(
            jobs_for(tmp_path, f"k{repeat}", base_weights), (x, y), fit)]
    assert abs(np.mean(batched) - np.mean(plain)) < 0.03, (batched, plain)
    assert min(batched) > 0.7 and min(plain) > 0.7


def test_the_best_epoch_weights_are_saved_into_each_smaller_model(tmp_path, data, base_weights):
    (x, y), validation, _ = data
    jobs = jobs_for(tmp_path, "s", base_weights)
    results = BatchedEvaluator(OBJECTIVE).evaluate(jobs, (x, y), {"epochs": 5, "batch_size": 32,
                                                                 "validation_data": validation})
    from keras_grs.scoring import accuracy

    for job, result in zip(jobs, results):
        assert accuracy(job.model, *validation) == pytest.approx(result["val_accuracy"], abs=1e-6)
        reloaded = keras_grs.shrink(job.model, {})
        reloaded.load_weights(job.checkpoint)
        assert accuracy(reloaded, *validation) == pytest.approx(result["val_accuracy"], abs=1e-6)
        assert result["params"] == job.model.count_params()


def test_unsupported_models_fall_back_with_one_warning(tmp_path):
    x = np.random.default_rng(0).normal(size=(40, 6, 6, 1)).astype("float32")
    y = (x.mean(axis=(1, 2, 3)) > 0).astype("int32")
    model = models.build("cnn2", (6, 6, 1))
    evaluator = BatchedEvaluator(OBJECTIVE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(2):
            evaluator.evaluate([Job(model, True, str(tmp_path / f"c{i}.weights.h5"))], (x, y),
                               {"epochs": 1, "validation_data": (x, y), "verbose": 0})
    messages = [str(w.message) for w in caught if "batched evaluation" in str(w.message)]
    assert len(messages) == 1 and "Conv2D" in messages[0]


def test_a_batched_search_takes_the_same_decisions_on_a_deterministic_case(tmp_path, data):
    # RRS with a tolerance every candidate meets: the path depends only on the seed, whatever the training gives.
    (x, y), validation, _ = data
    paths = {}
    for evaluator in ("keras", "batched"):
        tuner = GRSTuner.from_model(models.build("nn1", (30,)), method="rrs", tolerance=0.01, seed=4, max_trials=4,
                                    evaluator=evaluator, directory=tmp_path, project_name=evaluator)
        tuner.search(x, y, validation_data=validation, epochs=1, verbose=0)
        paths[evaluator] = [step["structure"] for step in tuner.pruning_path()]
        assert len(tuner.oracle.trials) == 4
        compact = tuner.get_best_models(1)[0]
        assert str(keras_grs.analyze(compact)) == paths[evaluator][-1]
    assert paths["keras"] == paths["batched"]


def test_a_batched_grs_step_is_trained_together_and_recorded_as_trials(tmp_path, data):
    (x, y), validation, _ = data
    tuner = GRSTuner.from_model(models.build("nn1", (30,)), tolerance=0.9, seed=0, max_trials=7, evaluator="batched",
                                directory=tmp_path, project_name="grs")
    tuner.search(x, y, validation_data=validation, epochs=2, verbose=0)
    assert tuner.evaluator._calls >= 2  # two steps of three candidates, one computation each
    trials = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
    assert all(t.status == "COMPLETED" for t in trials) and len(trials) == 7
    assert all(t.metrics.exists("flops") for t in trials)
    again = GRSTuner.from_model(models.build("nn1", (30,)), tolerance=0.9, seed=0, max_trials=7, evaluator="batched",
                                directory=tmp_path, project_name="grs")
    again.search(x, y, validation_data=validation, epochs=2, verbose=0)
    assert len(again.oracle.trials) == 7
