"""Candidates as arrays: what a batched search asks of a candidate is answered without building its Keras model,
and a search gives the same trials whether its candidates are held as arrays or built."""

import numpy as np
import pytest

import keras_grs
from keras_grs import GRSTuner, datasets
from keras_grs.evaluate.candidate import Candidate, measure, norms_of
from keras_grs.importance import unit_norms
from keras_grs.structure import analyze
from keras_grs.surgery import kept_units, resized
from keras_grs.tuner.oracles import KEY

from helpers import concat_mlp, recurrent_stack, residual_cnn, separable_cnn, tiny_classifier


def child_of(parent, remove, root=None):
    """A candidate of ``parent`` (a model or a candidate) without the ``remove`` units; ``root``: the model it is
    built from."""
    root = root if root is not None else parent
    structure = parent.structure if isinstance(parent, Candidate) else analyze(parent)
    widths = {g.name: g.width - len(remove.get(g.name, ())) for g in structure.groups}
    return Candidate(parent, structure, kept_units(structure, remove), build=lambda: resized(root, widths))


@pytest.mark.parametrize("name, shape, remove", [
    ("nn1", (140,), {"dense1": [0, 7, 31], "dense3": [2]}),
    ("cnn1", (12, 12, 1), {"conv1": [1, 4], "conv2": [0], "dense2": [5]}),  # a convolution fused with its pooling
])
def test_a_candidate_measures_and_weighs_its_units_as_its_built_model_does(name, shape, remove):
    parent = keras_grs.models.build(name, shape)
    child = child_of(parent, remove)
    lazy, norms = measure(child), norms_of(child)
    assert not child.materialized
    model = child.materialize()
    assert lazy == measure(model)
    assert norms == unit_norms(model)
    for layer in model.layers:
        assert child.shapes()[layer.name][:2] == (tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:]))
    # the built model holds the parent's surviving weights, and later assignments reach it
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(),
                                                    [v for layer in model.layers for v in child.arrays[layer.name]]))
    kernel, bias = child.arrays["dense1"]
    child.assign("dense1", [kernel + 1, bias])
    np.testing.assert_array_equal(model.get_layer("dense1").kernel.numpy(), kernel + 1)
    with pytest.raises(ValueError, match="dense1.*shapes"):
        child.assign("dense1", [kernel[:, :3], bias])


@pytest.mark.parametrize("build, first, second", [
    (residual_cnn, {"stem": [0, 4]}, {"head": [1], "stem": [3]}),
    (concat_mlp, {"left": [1, 2], "right": [0]}, {"right": [3], "joined": [0]}),
    (separable_cnn, {"first": [0], "sep": [1, 3]}, {"first": [2], "sep": [0]}),
    (recurrent_stack, {"gru": [0, 4], "lstm": [2]}, {"lstm": [0], "simple": [1, 3], "gru": [3]}),
], ids=["residual", "concatenated", "separable", "recurrent"])
def test_a_graph_candidate_of_a_candidate_measures_as_shrinking_twice_does(build, first, second):
    # merges and concatenations: a residual Add's group cut in both of its layers, a Concatenate's rows of the Dense
    # after it cut at their offsets
    root = build()
    assert Candidate.possible(root)
    child = child_of(root, first)
    grandchild = child_of(child, second, root)
    twice = keras_grs.shrink(keras_grs.shrink(root, first), second)
    assert grandchild.structure.groups == analyze(twice).groups  # (a rebuilt graph's input has another name)
    assert measure(grandchild) == measure(twice)
    assert norms_of(grandchild) == unit_norms(twice)
    assert not child.materialized and not grandchild.materialized
    for a, b in zip(grandchild.materialize().get_weights(), twice.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name, shape, first, second", [
    ("nn1", (140,), {"dense1": [1, 2, 5]}, {"dense2": [0], "dense1": [28]}),
    ("cnn1", (12, 12, 1), {"conv1": [0, 4], "conv2": [3], "dense1": [2]}, {"conv2": [0, 14], "conv1": [29]}),
])
def test_a_candidate_of_a_candidate_is_what_shrinking_twice_gives(name, shape, first, second):
    root = keras_grs.models.build(name, shape)
    child = child_of(root, first)
    grandchild = child_of(child, second, root)
    twice = keras_grs.shrink(keras_grs.shrink(root, first), second)
    assert grandchild.structure == analyze(twice)
    assert measure(grandchild) == measure(twice)
    assert norms_of(grandchild) == unit_norms(twice)
    assert not child.materialized and not grandchild.materialized  # neither was built to make or measure it
    for a, b in zip(grandchild.materialize().get_weights(), twice.get_weights()):
        np.testing.assert_array_equal(a, b)
    steps = {step.name: step for step in analyze(twice).steps}
    for step in grandchild.structure.steps:  # the channel layouts too, which cut the next child's weights
        for ours, theirs in zip((*step.inputs, step.output), (*steps[step.name].inputs, steps[step.name].output)):
            assert (ours is None) == (theirs is None)
            if ours is not None:
                np.testing.assert_array_equal(ours.group, theirs.group)
                np.testing.assert_array_equal(ours.unit, theirs.unit)


def test_anything_else_is_asked_of_the_built_model():
    parent = keras_grs.models.build("nn2", (140,))
    child = child_of(parent, {"dense1": [3]})
    assert child.count_params() == measure(child)["params"]  # Keras' own method: builds the model
    assert child.materialized and "materialized" in repr(child)


def search(directory, arrays, monkeypatch, method, acceptance):
    """A small batched search; its trials by key: (widths, score, params, FLOPs, latency, checkpoint weights),
    and how many candidates were built as Keras models."""
    x, y = datasets.calcium(n_neurons=12, n_frames=200, seed=1, difficulty="easy")
    (xt, yt), validation, _ = datasets.split(x, y, val=0.3, test=0.0)
    built, materialize = [], Candidate.materialize

    def counted(self):
        if not self.materialized:
            built.append(self)
        return materialize(self)

    monkeypatch.setattr(Candidate, "materialize", counted)
    tuner = GRSTuner.from_model(tiny_classifier(second=5), method=method, tolerance=0.7, seed=3, max_trials=9,
                                directory=directory, evaluator="batched", train_first=False, acceptance=acceptance)
    tuner._runner.arrays = arrays  # private: the same search with every candidate built
    tuner.search(xt, yt, validation_data=validation, epochs=2, batch_size=16, verbose=0, progress=False)
    trials = {}
    for trial in tuner.oracle.trials.values():
        model = tuner.load_model(trial)
        trials[tuner.oracle.bookkeeping(trial.trial_id)[KEY]] = (
            trial.hyperparameters.values, trial.status, trial.score,
            *(trial.metrics.get_last_value(name) for name in ("params", "flops", "latency_ms")),
            [w.tolist() for w in model.get_weights()])
    return trials, len(built)


# NWM reads the candidates' unit norms; the guard's predictions are made by each candidate's built model
@pytest.mark.parametrize("method, acceptance", [("grs", "seed"), ("nwm", "guard")])
def test_a_search_gives_the_same_trials_with_candidates_as_arrays_or_built(tmp_path, monkeypatch, method, acceptance):
    lazy, built_lazy = search(tmp_path / "arrays", True, monkeypatch, method, acceptance)
    eager, built_eager = search(tmp_path / "built", False, monkeypatch, method, acceptance)
    assert len(lazy) == 9
    assert lazy == eager  # same widths, scores, sizes, latencies and checkpoints, trial by trial
    assert built_eager == 0  # no candidate was held as arrays
    children = len(lazy) - 1  # the root is built
    assert built_lazy == (0 if acceptance == "seed" else children)  # the guard's predictions need the model


def test_a_separable_layers_unit_norms_are_those_of_its_pointwise_kernel():
    # the weight-magnitude criterion (NWM) reads the kernel whose last axis is the units
    model = separable_cnn()
    pointwise = model.get_layer("sep").pointwise_kernel.numpy()
    norms = unit_norms(model)
    assert set(norms) == {"first", "sep"}
    np.testing.assert_allclose(norms["sep"], np.abs(pointwise).reshape(-1, 5).sum(axis=0), rtol=1e-6)
