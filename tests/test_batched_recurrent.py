"""LSTM, GRU and SimpleRNN layers trained by the batched evaluator: one candidate ends where ``model.fit`` ends (the
cells' formulas, both GRU variants, stacked layers returning sequences, reading backwards, without bias, with
regularizers), candidates of different widths trained together each end as their own fit, the checkpoint holds the
weights, a search runs batched, and what the batched path cannot reproduce is named."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_tuner import Objective

from helpers import batched_trials, randomize
from keras_grs import GRSTuner, shrink
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator, _forward_function, _plan, _recurrent_dropout
from test_batched_parity import assert_trains_like_fit, assert_widths_train_like_fit, data

L = keras.layers
STEPS, CHANNELS = 4, 4  # the parity data's 16 features read as 4 steps of 4 channels


def sequence_model(*layers, optimizer="adam"):
    model = keras.Sequential([keras.Input((STEPS, CHANNELS)), *layers, L.Dense(3, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


RECURRENT = {  # GRU with reset_after (the default) and a plain LSTM: the widths test below compares them with fit
    "gru-reset-before": lambda: sequence_model(L.GRU(5, reset_after=False, name="hidden")),
    "stacked-backwards-no-bias": lambda: sequence_model(
        L.LSTM(5, return_sequences=True, go_backwards=True, name="hidden"), L.GRU(3, use_bias=False)),
    "sequences-pooled-relu-sgd": lambda: sequence_model(
        L.SimpleRNN(5, activation="relu", return_sequences=True, name="hidden"), L.GlobalAveragePooling1D(),
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9)),
    "dense-at-every-step": lambda: sequence_model(
        L.LSTM(5, return_sequences=True, name="hidden"), L.Dense(4, activation="relu"), L.Flatten()),
    "regularized-hard-sigmoid": lambda: sequence_model(
        L.LSTM(5, recurrent_activation="hard_sigmoid", kernel_regularizer=keras.regularizers.L2(0.01),
               recurrent_regularizer=keras.regularizers.L1(0.01), bias_regularizer=keras.regularizers.L2(0.1),
               name="hidden")),
}


@pytest.mark.parametrize("build", RECURRENT.values(), ids=RECURRENT.keys())
def test_recurrent_layers_train_like_fit(build, tmp_path):
    candidate = assert_trains_like_fit(build, shape=(STEPS, CHANNELS), tmp_path=tmp_path)
    # the checkpoint, written from the arrays in Keras' layout, holds the weights the model was given
    loaded = build()
    loaded.load_weights(tmp_path / "candidate.weights.h5")
    for got, want in zip(loaded.get_weights(), candidate.get_weights()):
        np.testing.assert_array_equal(got, want)


WIDENED = {  # a model, and the units its narrower candidate lacks
    "lstm": (lambda: sequence_model(L.LSTM(5, name="hidden")), {"hidden": [1, 3]}),
    "gru": (lambda: sequence_model(L.GRU(5, name="hidden")), {"hidden": [1, 3]}),
    # a CNN-LSTM (activity recognition): the convolution's units are the LSTM's input rows, cut from its kernel
    "conv-lstm": (lambda: sequence_model(L.Conv1D(6, 2, activation="relu", name="conv"), L.LSTM(5, name="hidden")),
                  {"conv": [0, 4], "hidden": [2]}),
    # a Dense at every step of the LSTM's sequence (a 1x1 convolution to the batched path)
    "lstm-dense-steps": (lambda: sequence_model(L.LSTM(5, return_sequences=True, name="hidden"),
                                                L.Dense(4, activation="relu", name="steps"), L.Flatten()),
                         {"hidden": [0], "steps": [1, 2]}),
}


@pytest.mark.parametrize("kind", WIDENED)
def test_recurrent_candidates_of_different_widths_trained_together_each_end_as_their_own_fit(kind, tmp_path):
    # the narrower candidate's gates are padded block by block and its missing units and inputs masked: that
    # changes nothing
    keras.utils.set_random_seed(0)
    build, removed = WIDENED[kind]
    base = build()
    candidates, references = assert_widths_train_like_fit(base, removed, tmp_path, shape=(STEPS, CHANNELS))
    assert candidates[1].get_layer("hidden").get_weights()[1].shape[0] == 5 - len(removed["hidden"])
    for i, reference in enumerate(references):
        loaded = shrink(base, {} if i == 0 else removed)
        loaded.load_weights(tmp_path / f"c{i}.weights.h5")  # the checkpoint holds the same weights
        for got, want in zip(loaded.get_weights(), reference.get_weights()):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def sequences(n, seed):
    """Three classes of 10-step sequences of 3 channels: which channel's running sum ends the largest."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10, 3)).astype("float32")
    x[:, :, 0] += 0.3 * rng.normal(size=(n, 1))
    return x, np.argmax(x.cumsum(axis=1)[:, -1], axis=1).astype("int32")


def test_a_search_of_a_recurrent_model_runs_batched_and_scores_each_trials_checkpoint(tmp_path):
    (x, y), (x_val, y_val) = sequences(300, 0), sequences(120, 1)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((10, 3)), L.GRU(12, return_sequences=True), L.LSTM(8),
                              L.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=20, verbose=0)
    tuner = GRSTuner.from_model(model, tolerance=0.8, seed=0, max_trials=4, evaluator="batched", acceptance="seed",
                                directory=tmp_path, project_name="rnn")
    trials = batched_trials(tuner, x, y, validation_data=(x_val, y_val), epochs=2, verbose=0, trials=4)
    widths = set()
    for trial in trials[1:]:
        candidate = tuner.load_model(trial)
        widths.add(tuple(int(layer.get_weights()[1].shape[0]) for layer in candidate.layers[:2]))
        accuracy = candidate.evaluate(x_val, y_val, verbose=0, return_dict=True)["accuracy"]
        assert trial.score == pytest.approx(accuracy, abs=1e-6)
    assert {(11, 8), (12, 7)} <= widths  # one unit fewer in either layer: both gate layouts were trained and saved


DROPPED = {  # Keras' implementation 2 draws one mask for every gate, implementation 1 (a recurrent dropout) one each
    "lstm-inputs": lambda: L.LSTM(5, dropout=0.3, name="hidden"),
    "lstm-state": lambda: L.LSTM(5, recurrent_dropout=0.4, name="hidden"),
    "lstm-both-backwards": lambda: L.LSTM(5, dropout=0.3, recurrent_dropout=0.4, go_backwards=True, name="hidden"),
    "gru-both": lambda: L.GRU(5, dropout=0.3, recurrent_dropout=0.4, name="hidden"),
    "gru-state-reset-before": lambda: L.GRU(5, recurrent_dropout=0.4, reset_after=False, name="hidden"),
    "simple-both-sequences": lambda: L.SimpleRNN(5, dropout=0.3, recurrent_dropout=0.4, return_sequences=True,
                                                 name="hidden"),
}


@pytest.mark.parametrize("layer", DROPPED.values(), ids=DROPPED.keys())
def test_recurrent_dropout_masks_are_applied_as_keras_cells_apply_them(layer):
    # the masks the batched path draws for two candidates (one narrower: its missing units padded), given to Keras'
    # cells in place of their own: each candidate's training output is Keras' with those masks
    recurrent = layer()
    model = sequence_model(recurrent, *([L.Flatten()] if recurrent.return_sequences else []))
    randomize(model, np.random.default_rng(1))
    narrower = shrink(model, {"hidden": [1, 3]})
    plan = _plan(model)
    evaluator = BatchedEvaluator(Objective("val_accuracy", "max"), workers=1)  # both in one stack
    params, masks = evaluator._pack(evaluator._widen([Job(model, True, ""), Job(narrower, True, "")]), plan, CHANNELS)
    forward = _forward_function(plan.ops, evaluator._slots)
    x = tf.constant(np.random.default_rng(2).normal(size=(32, STEPS, CHANNELS)).astype("float32"))
    seeds, batch_index, n = tf.constant([3, 4] + [5] * (evaluator._slots - 2)), tf.constant(7), 0
    probabilities = tf.nn.softmax(forward(params, masks, x, (seeds, batch_index))).numpy()
    op = plan.ops[n]
    kept_inputs, kept_state = _recurrent_dropout(op, x, 5, True, evaluator._slots,
                                                 (seeds, batch_index, n, len(plan.ops) + n))
    assert (kept_inputs is None) == (op.rate == 0) and (kept_state is None) == (op.recurrent_rate == 0)
    for j, candidate in enumerate([model, narrower]):
        cell = candidate.get_layer("hidden").cell
        units = np.flatnonzero(masks[0][j].numpy())  # where the candidate's units sit
        assert len(units) == cell.units

        def keras_masks(kept, columns):
            if kept is None:
                return None
            per_gate = [tf.constant(kept[j, :, g].numpy()[:, columns]) for g in range(kept.shape[2])]
            return per_gate if getattr(cell, "dropout_mask_count", None) else per_gate[0]

        cell._dropout_mask = keras_masks(kept_inputs, slice(None))
        cell._recurrent_dropout_mask = keras_masks(kept_state, units)
        want = candidate(x, training=True).numpy()
        assert cell._dropout_mask is None  # Keras read the masks given (and let them go after the call)
        np.testing.assert_allclose(probabilities[j], want, rtol=1e-5, atol=1e-6)
    # the masks drop about the share asked, and differently for the two candidates
    for kept, rate in ((kept_inputs, op.rate), (kept_state, op.recurrent_rate)):
        if kept is not None:
            values = kept.numpy()
            assert abs((values == 0).mean() - rate) < 0.05
            assert (values[0] != values[1]).mean() > 0.2


def test_a_recurrent_dropout_search_trains_batched_and_each_candidate_alike_in_any_batch(tmp_path):
    keras.utils.set_random_seed(0)
    model = sequence_model(L.LSTM(6, dropout=0.2, recurrent_dropout=0.2, name="hidden"))
    x, y = data("ids")
    x = x.reshape(-1, STEPS, CHANNELS)
    fit = {"epochs": 2, "batch_size": 16, "validation_data": (x[:40], y[:40]), "verbose": 0}
    evaluator = BatchedEvaluator(Objective("val_accuracy", "max"))
    assert evaluator.supports([Job(model, True, "")], fit) is None
    trained = {}
    for name, removals in (("together", [[0], [2], [4]]), ("alone", [[2]])):
        jobs = [Job(shrink(model, {"hidden": r}), True, str(tmp_path / f"{name}{r[0]}.weights.h5"), key=f"u{r[0]}")
                for r in removals]
        evaluator.evaluate(jobs, (x, y), fit)
        trained[name] = {job.key: job.model.get_weights() for job in jobs}
    for got, want in zip(trained["alone"]["u2"], trained["together"]["u2"]):
        np.testing.assert_array_equal(got, want)  # its masks are its own: the same beside others or alone
    start = shrink(model, {"hidden": [2]}).get_weights()
    assert max(np.abs(a - b).max() for a, b in zip(trained["alone"]["u2"], start)) > 1e-4  # it trained


@pytest.mark.parametrize("layer, reason", [
    (L.LSTM(5, dropout=1.0), "dropout=1.0"),
    (L.GRU(5, recurrent_dropout=1.0), "recurrent_dropout=1.0"),
    (L.SimpleRNN(5, kernel_constraint=keras.constraints.NonNeg()), "kernel_constraint"),
    (L.LSTM(5, recurrent_constraint=keras.constraints.NonNeg()), "recurrent_constraint"),
])
def test_what_the_batched_path_cannot_reproduce_in_a_recurrent_layer_is_named(layer, reason, tmp_path):
    model = sequence_model(layer)
    x, y = data("ids")
    fit = {"epochs": 1, "batch_size": 16, "validation_data": (x.reshape(-1, STEPS, CHANNELS), y), "verbose": 0}
    evaluator = BatchedEvaluator(Objective("val_accuracy", "max"))
    assert reason in evaluator.supports([Job(model, True, str(tmp_path / "c.weights.h5"))], fit)
