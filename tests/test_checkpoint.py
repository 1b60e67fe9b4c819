"""Checkpoints written from arrays: the file Keras' save_weights writes, without walking the model."""

import h5py
import keras
import numpy as np
import pytest
from keras_tuner import Objective

import keras_grs
from keras_grs import GRSTuner, datasets, models
from keras_grs.checkpoint import CheckpointLayout
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator
from keras_grs.structure import leaf_layers

from helpers import randomize


def batch_normalized():
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(12, activation="relu", name="dense1"),
                              keras.layers.BatchNormalization(name="norm"), keras.layers.Dropout(0.5, name="drop"),
                              keras.layers.Dense(2, activation="softmax", name="output")], name="bn")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


BUILDERS = {"nn1": lambda: models.build("nn1", (30,)), "cnn1": lambda: models.build("cnn1", (12, 12, 1)),
            "batch_normalized": batch_normalized}


def contents(path):
    """Every group's attributes and every dataset's dtype and values, by path."""
    found = {}
    with h5py.File(path, "r") as file:
        def visit(name, item):
            if isinstance(item, h5py.Group):
                found[name] = dict(item.attrs)
            else:
                found[name] = (item.dtype, item[()])
        file.visititems(visit)
    return found


def assert_same_file(ours, theirs):
    mine, keras_file = contents(ours), contents(theirs)
    assert sorted(mine) == sorted(keras_file)
    for name, value in keras_file.items():
        if isinstance(value, dict):
            assert mine[name] == value, name
        else:
            assert mine[name][0] == value[0], name
            np.testing.assert_array_equal(mine[name][1], value[1], err_msg=name)


def arrays(model):
    return {layer.name: layer.get_weights() for layer in leaf_layers(model)}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_a_checkpoint_written_from_arrays_is_the_file_keras_writes_and_loads(tmp_path, name):
    model = BUILDERS[name]()
    randomize(model, np.random.default_rng(1))  # BatchNormalization's statistics too, so their order shows
    model.save_weights(tmp_path / "keras.weights.h5")
    CheckpointLayout.of(model).write(tmp_path / "arrays.weights.h5", arrays(model))
    assert_same_file(tmp_path / "arrays.weights.h5", tmp_path / "keras.weights.h5")
    twin = BUILDERS[name]()
    twin.load_weights(tmp_path / "arrays.weights.h5")
    for ours, theirs in zip(twin.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_one_layout_writes_every_narrower_candidate_of_the_topology(tmp_path, name):
    template = BUILDERS[name]()
    layout = CheckpointLayout.of(template)
    groups = [g.name for g in keras_grs.analyze(template).groups]
    child = keras_grs.shrink(template, {groups[0]: [0, 3, 4]})
    randomize(child, np.random.default_rng(2))
    child.save_weights(tmp_path / "keras.weights.h5")
    layout.write(tmp_path / "template.weights.h5", arrays(template))  # files of one layout share its skeleton
    layout.write(tmp_path / "arrays.weights.h5", arrays(child))
    assert_same_file(tmp_path / "arrays.weights.h5", tmp_path / "keras.weights.h5")
    template.save_weights(tmp_path / "keras_template.weights.h5")
    assert_same_file(tmp_path / "template.weights.h5", tmp_path / "keras_template.weights.h5")


def test_missing_or_miscounted_arrays_are_named(tmp_path):
    model = BUILDERS["nn1"]()
    layout = CheckpointLayout.of(model)
    weights = arrays(model)
    with pytest.raises(ValueError, match="no weights given for layers \\['dense2'\\]"):
        layout.write(tmp_path / "a.weights.h5", {k: v for k, v in weights.items() if k != "dense2"})
    with pytest.raises(ValueError, match="layer 'dense3' has 2 weights, 1 arrays"):
        layout.write(tmp_path / "a.weights.h5", {**weights, "dense3": weights["dense3"][:1]})
    assert not (tmp_path / "a.weights.h5").exists()  # refused before anything is written


@pytest.fixture(scope="module")
def data():
    x, y = datasets.calcium(n_neurons=30, n_frames=600, seed=5, difficulty="easy")
    return datasets.split(x, y, val=0.3, test=0.0)


def test_the_batched_evaluator_writes_the_checkpoints_keras_would(tmp_path, data):
    (x, y), validation, _ = data
    base = models.build("nn1", (30,))
    randomize(base, np.random.default_rng(3))
    jobs = [Job(keras_grs.shrink(base, {"dense1": list(range(i + 1))}), True, str(tmp_path / f"{i}.weights.h5"),
                key=f"c{i}") for i in range(3)]
    BatchedEvaluator(Objective("val_accuracy", "max"), seed=1).evaluate(
        jobs, (x, y), {"epochs": 2, "batch_size": 32, "validation_data": validation, "verbose": 0})
    for i, job in enumerate(jobs):
        assert keras_grs.files.verify(job.checkpoint)  # atomic, its digest recorded
        job.model.save_weights(tmp_path / f"keras{i}.weights.h5")  # the trained model, as Keras saves it
        assert_same_file(job.checkpoint, tmp_path / f"keras{i}.weights.h5")


def test_a_search_scores_the_same_with_checkpoints_from_arrays(tmp_path, data):
    (x, y), validation, _ = data
    scores = {}
    for from_arrays in (True, False):
        keras.utils.set_random_seed(0)  # the same initial model
        tuner = GRSTuner.from_model(models.build("nn1", (30,)), tolerance=0.9, seed=2, max_trials=9,
                                    evaluator="batched", directory=tmp_path, project_name=str(from_arrays))
        tuner.evaluator.arrays_checkpoints = from_arrays
        runner, run = tuner._runner, tuner._runner.run

        def forgetting(*args, **kwargs):
            # every parent is then loaded from its checkpoint, not taken from memory
            records = run(*args, **kwargs)
            runner._recent, runner._parents = {}, {}
            return records

        runner.run = forgetting
        tuner.search(x, y, validation_data=validation, epochs=2, verbose=0)
        trials = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
        scores[from_arrays] = [(t.hyperparameters.values, t.score) for t in trials]
        assert len(trials) == 9
    assert scores[True] == scores[False]
