"""The batched evaluator: same semantics as one fit per trial, trials recorded as usual, fallback when unsupported."""

import warnings

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

import keras_grs
from keras_grs import GRSTuner, datasets, models
from keras_grs.evaluate import Job, KerasEvaluator
from keras_grs.evaluate.batched import BatchedEvaluator, _ProgramCache, _forward_function, _plan
from keras_tuner import Objective

from helpers import concat_mlp, randomize, residual_cnn

OBJECTIVE = Objective("val_accuracy", "max")


@pytest.fixture(scope="module")
def data():
    x, y = datasets.calcium(n_neurons=30, n_frames=800, seed=5, difficulty="easy")
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
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 2),
                              keras.layers.BatchNormalization(center=False),  # no beta: not reproduced batched
                              keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    evaluator = BatchedEvaluator(OBJECTIVE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(2):
            evaluator.evaluate([Job(model, True, str(tmp_path / f"c{i}.weights.h5"))], (x, y),
                               {"epochs": 1, "validation_data": (x, y), "verbose": 0})
    messages = [str(w.message) for w in caught if "batched evaluation" in str(w.message)]
    assert len(messages) == 1 and "BatchNormalization" in messages[0]
    assert evaluator._calls == 0


def conv1d_model():
    model = keras.Sequential([
        keras.Input((20, 3)),
        keras.layers.Conv1D(6, 3, strides=2, padding="same", activation="tanh", name="c1"),
        keras.layers.AveragePooling1D(2, padding="same"),
        keras.layers.Conv1D(5, 2, name="c2"),
        keras.layers.ReLU(),
        keras.layers.MaxPooling1D(3, strides=1),
        keras.layers.Dropout(0.2),
        keras.layers.GlobalMaxPooling1D(),
        keras.layers.Dense(4, name="d"),
        keras.layers.Activation("softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def dilated_model(rank):
    """Dilated convolutions: a Conv1D chain with causal padding, or a Conv2D one with 'same' padding; each with an
    UpSampling between them."""
    if rank == 1:
        layers = [keras.Input((20, 3)), L.Conv1D(6, 3, dilation_rate=2, padding="causal", activation="relu", name="c1"),
                  L.UpSampling1D(2), L.Conv1D(5, 2, dilation_rate=3, padding="same", name="c2"), L.ReLU(),
                  L.MaxPooling1D(2)]
    else:
        layers = [keras.Input((9, 9, 2)), L.Conv2D(6, 3, dilation_rate=2, padding="same", activation="tanh", name="c1"),
                  L.UpSampling2D((2, 1)), L.Conv2D(5, 2, dilation_rate=(1, 2), activation="relu", name="c2")]
    model = keras.Sequential([*layers, L.Flatten(), L.Dense(4, activation="softmax", name="d")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("case", ["cnn1", "conv1d", "dilated1d", "dilated2d"])
def test_stacked_masked_candidates_compute_what_each_smaller_model_computes(case):
    if case == "cnn1":
        base, shape = models.build("cnn1", (9, 9, 1)), (9, 9, 1)
        removals = [{"conv1": [0, 3]}, {"conv2": [1], "dense1": [2, 5]}, {"dense3": [0]}]
    elif case.startswith("dilated"):
        base = dilated_model(int(case[-2]))
        shape = tuple(base.input_shape[1:])
        removals = [{}, {"c1": [1, 2]}, {"c2": [0, 4]}]
    else:
        base, shape = conv1d_model(), (20, 3)
        removals = [{}, {"c1": [1, 2]}, {"c2": [0, 4]}]
    randomize(base, np.random.default_rng(3))
    jobs = [Job(keras_grs.shrink(base, r), True, "") for r in removals]
    evaluator = BatchedEvaluator(OBJECTIVE, workers=1)  # one group: every candidate in one stack
    plan = _plan(jobs[0].model)
    per_job = evaluator._widen(jobs)
    params, masks = evaluator._pack(per_job, plan, shape[-1])
    x = np.random.default_rng(0).normal(size=(6, *shape)).astype("float32")
    forward = _forward_function(plan.ops, evaluator._slots)
    probabilities = tf.nn.softmax(forward(params, masks, tf.constant(x), None))
    # each candidate its own input (the shuffled training batches): here the same input, the same outputs
    own = tf.nn.softmax(forward(params, masks, tf.constant(np.stack([x] * evaluator._slots)), None, shared=False))
    outputs = [job.model.predict(x, verbose=0) for job in jobs]
    for j, expected in enumerate(outputs):
        np.testing.assert_allclose(probabilities[j].numpy(), expected, atol=1e-5)
        np.testing.assert_allclose(own[j].numpy(), expected, atol=1e-5)
    assert np.abs(outputs[0] - outputs[1]).max() > 1e-4  # the candidates really differ
    evaluator._unpack(per_job, plan, [p.numpy() for p in params], shape[-1])
    for job, removal in zip(jobs, removals):
        for got, want in zip(job.model.get_weights(), keras_grs.shrink(base, removal).get_weights()):
            np.testing.assert_array_equal(got, want)


def test_a_cnn_trained_batched_learns_like_one_fit_per_candidate(tmp_path):
    x, y = datasets.calcium(n_neurons=36, n_frames=900, seed=2, image=True, difficulty="easy")
    (x, y), validation, _ = datasets.split(x, y, val=0.3, test=0.0)
    keras.utils.set_random_seed(1)
    base = models.build("cnn2", x.shape[1:])
    fit = {"epochs": 15, "batch_size": 32, "validation_data": validation}
    scores = {}
    for name, evaluator in (("batched", BatchedEvaluator(OBJECTIVE)), ("keras", KerasEvaluator(OBJECTIVE))):
        jobs = [Job(keras_grs.shrink(base, {"conv1": [i]}), True, str(tmp_path / f"{name}{i}.weights.h5"))
                for i in range(2)]
        scores[name] = [r["val_accuracy"] for r in evaluator.evaluate(jobs, (x, y), fit)]
    assert abs(np.mean(scores["batched"]) - np.mean(scores["keras"])) < 0.05, scores
    assert min(scores["batched"]) > 0.7, scores


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


def batch_normalized_mlp():
    model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(12, use_bias=False), keras.layers.BatchNormalization(),
                              keras.layers.ReLU(), keras.layers.Dense(6), keras.layers.BatchNormalization(),
                              keras.layers.Activation("relu"), keras.layers.Dense(2, activation="softmax")],
                             name="normalized")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def batch_normalized_cnn():
    """The usual convolution block: Conv without bias, BatchNormalization, ReLU (30 features as 5x6x1 images)."""
    model = keras.Sequential([keras.Input((5, 6, 1))], name="normalized_cnn")
    for filters in (6, 4):
        model.add(keras.layers.Conv2D(filters, 2, padding="same", use_bias=False))
        model.add(keras.layers.BatchNormalization())
        model.add(keras.layers.ReLU())
    model.add(keras.layers.GlobalAveragePooling2D())
    model.add(keras.layers.Dense(2, activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def separable_cnn():
    """A depthwise-separable block: pointwise Conv, DepthwiseConv2D, BatchNormalization, ReLU, pointwise Conv."""
    model = keras.Sequential([keras.Input((5, 6, 1)), keras.layers.Conv2D(6, 1, activation="relu"),
                              keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False),
                              keras.layers.BatchNormalization(), keras.layers.ReLU(),
                              keras.layers.Conv2D(4, 1, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(2, activation="softmax")], name="separable")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def preprocessed_mlp():
    """A Normalization adapted to the calcium features (its statistics are weights) and a Rescaling at the input,
    then a batch-normalised MLP."""
    norm = keras.layers.Normalization(name="standardize")
    x, _ = datasets.calcium(n_neurons=30, n_frames=200, seed=9, difficulty="easy")
    norm.adapt(x)
    L = keras.layers
    model = keras.Sequential([keras.Input((30,)), norm, L.Rescaling(0.5), L.Dense(12), L.BatchNormalization(),
                              L.ReLU(), L.Dense(6, activation="relu"), L.Dense(2, activation="softmax")],
                             name="preprocessed")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("build", [batch_normalized_mlp, batch_normalized_cnn, separable_cnn, residual_cnn, concat_mlp,
                                   preprocessed_mlp],
                         ids=["dense", "conv", "depthwise", "residual", "concatenated", "preprocessed"])
def test_normalized_and_separable_models_are_searched_batched_and_their_checkpoints_load_as_scored(
        build, tmp_path, data):
    from keras_grs.scoring import accuracy

    (x, y), (x_val, y_val), _ = data
    model = build()
    x, x_val = x.reshape(-1, *model.input_shape[1:]), x_val.reshape(-1, *model.input_shape[1:])
    validation = x_val, y_val
    keras.utils.set_random_seed(3)
    tuner = GRSTuner.from_model(model, tolerance=0.9, seed=0, max_trials=5, evaluator="batched",
                                acceptance="seed", directory=tmp_path, project_name="normalized")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback to one fit per trial
        tuner.search(x, y, validation_data=validation, epochs=3, verbose=0)
    assert tuner.evaluator._calls >= 2  # the initial model, then a step of two candidates
    trials = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
    assert len(trials) == 5 and all(t.status == "COMPLETED" for t in trials)
    standardize = [layer for layer in model.layers if isinstance(layer, keras.layers.Normalization)]
    for trial in trials[1:]:  # each candidate's checkpoint, loaded into its model, scores what the trial recorded
        model = tuner.load_model(trial)
        for layer in standardize:  # its statistics in every checkpoint, as adapted
            for got, want in zip(model.get_layer(layer.name).get_weights(), layer.get_weights()):
                np.testing.assert_array_equal(got, want)
        norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert norms and all(np.abs(layer.moving_variance.numpy() - 1).max() > 1e-3 for layer in norms)
        assert accuracy(model, *validation) == pytest.approx(trial.score, abs=1e-6)


def test_a_hypermodel_with_its_own_fit_is_trained_by_it(tmp_path, data):
    (x, y), validation, _ = data
    calls = []

    class OwnFit(keras_tuner.HyperModel):
        def build(self, hp):
            model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(hp.Int("units", 2, 6), activation="relu"),
                                      keras.layers.Dense(2, activation="softmax")])
            model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
            return model

        def fit(self, hp, model, *args, **kwargs):
            calls.append(hp.values["units"])
            return model.fit(*args, **kwargs)

    tuner = GRSTuner(OwnFit(), tolerance=0.5, max_trials=3, directory=tmp_path, seed=0)
    assert isinstance(tuner.evaluator, BatchedEvaluator)  # the default
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner.search(x, y, validation_data=validation, epochs=1, verbose=0)
    assert calls and calls[0] == 6
    assert any("its own fit" in str(w.message) for w in caught)


def test_prune_refuses_an_unknown_evaluator_before_any_work(tmp_path, data):
    (x, y), validation, _ = data
    with pytest.raises(ValueError, match="unknown evaluator 'fast'.*batched, keras"):
        keras_grs.prune(models.build("nn2", (30,)), x, y, validation, evaluator="fast", directory=tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, reason", [
    ({"activity_regularizer": "l2"}, "activity_regularizer"),
    ({"kernel_constraint": keras.constraints.NonNeg()}, "kernel_constraint"),
    ({"optimizer": keras.optimizers.Adafactor()}, "optimizer Adafactor"),
    ({"optimizer": keras.optimizers.Adam(use_ema=True, ema_overwrite_frequency=10)},
     "Adam with use_ema and ema_overwrite_frequency"),
    ({"optimizer": keras.optimizers.SGD(gradient_accumulation_steps=2)}, "SGD with gradient_accumulation_steps"),
    ({"loss": "cosine_similarity"}, "loss 'cosine_similarity'"),
    ({"loss": "kl_divergence", "output": "linear"}, "kl_divergence on a linear output (needs softmax)"),
    ({"loss": "binary_crossentropy"}, "binary_crossentropy on a softmax output"),
    ({"loss": keras.losses.SparseCategoricalCrossentropy(ignore_class=0)}, "with ignore_class"),
    ({"output": "linear"}, "linear output without from_logits"),
])
def test_what_the_batched_path_cannot_reproduce_is_named(change, reason):
    layer_options = {k: v for k, v in change.items() if k in ("activity_regularizer", "kernel_constraint")}
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu", **layer_options),
                              keras.layers.Dense(2, activation=change.get("output", "softmax"))])
    model.compile(optimizer=change.get("optimizer", "adam"), loss=change.get("loss", "sparse_categorical_crossentropy"),
                  metrics=["accuracy"])
    reason_given = BatchedEvaluator(OBJECTIVE).supports([Job(model, True, "")], {"epochs": 1})
    assert reason_given is not None and reason in reason_given, reason_given


def test_hinge_labels_keras_would_read_batch_by_batch_fall_back_naming_them(tmp_path):
    # Keras' hinge turns a batch of 0/1 labels into -1/1; labels of -1, 0 and 1 would be read one way or the other
    # depending on the batch: one fit per candidate, the labels named, the trial trained all the same
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype("float32")
    y = np.sign(np.round(x[:, :1], 1)).astype("float32")  # -1, 0 and 1
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(1, activation="tanh")])
    model.compile(optimizer="adam", loss="hinge", metrics=["accuracy"])
    evaluator = BatchedEvaluator(OBJECTIVE)
    fit = {"epochs": 1, "validation_data": (x, y), "verbose": 0}
    assert evaluator.supports([Job(model, True, "")], fit) is None  # the model itself is fine
    with pytest.warns(UserWarning, match="hinge with labels other than 0/1 or -1/1"):
        result = evaluator.evaluate([Job(model, True, str(tmp_path / "c.weights.h5"))], (x, y), fit)[0]
    assert evaluator._calls == 0 and "val_accuracy" in result


L = keras.layers


@pytest.mark.parametrize("layers, reason", [
    (lambda: [L.BatchNormalization(), L.Dense(4)], "not after a Dense or Conv layer"),
    (lambda: [L.Dense(4), L.BatchNormalization(center=False)], "with center=False (the batched path takes axis"),
    (lambda: [L.Dense(4), L.BatchNormalization(renorm=True)], "with renorm=True"),
    (lambda: [L.Dense(4), L.BatchNormalization(gamma_regularizer="l2")], "gamma_regularizer"),
    (lambda: [L.Conv2D(3, 1), L.Flatten(), L.BatchNormalization()], "not after a Dense or Conv layer"),
    (lambda: [L.DepthwiseConv2D(1), L.Conv2D(3, 1), L.Flatten()], "not after a Dense or Conv layer"),
    (lambda: [L.Conv2D(3, 1), L.DepthwiseConv2D(1, depth_multiplier=2), L.Flatten()], "with depth_multiplier=2 ("),
    (lambda: [L.Conv2D(3, 1), L.DepthwiseConv2D(1, depthwise_constraint="non_neg"), L.Flatten()],
     "depthwise_constraint"),
    (lambda: [L.Conv2D(3, 1), L.UpSampling2D(interpolation="bilinear"), L.Flatten()],
     "with interpolation='bilinear' (the batched path takes"),
], ids=["first", "no-center", "renorm", "regularized", "after-flatten", "depthwise-first", "depthwise-multiplier",
        "depthwise-constraint", "bilinear"])
def test_normalization_and_depthwise_options_the_batched_path_cannot_reproduce_are_named(layers, reason):
    layers = layers()  # made in the test's own Keras session: their names stay unique
    shape = (2, 2, 1) if isinstance(layers[0], (L.Conv2D, L.DepthwiseConv2D)) else (4,)
    model = keras.Sequential([keras.Input(shape), *layers, L.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    reason_given = BatchedEvaluator(OBJECTIVE).supports([Job(model, True, "")], {"epochs": 1})
    named = next((type(layer).__name__ for layer in layers
                  if isinstance(layer, (L.BatchNormalization, L.DepthwiseConv2D, L.UpSampling2D))), "Conv2D")
    assert reason_given is not None and reason in reason_given and named in reason_given, reason_given


def _joined_mlp(join):
    inputs = keras.Input((6,))
    a, b = L.Dense(4, activation="relu")(inputs), L.Dense(3, activation="relu")(inputs)
    model = keras.Model(inputs, L.Dense(2, activation="softmax")(join(inputs, a, b)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("join, reason", [
    (lambda x, a, b: L.Concatenate()([x, a]), "Concatenate"),
    (lambda x, a, b: L.Add()([L.Concatenate()([a, b]), L.Dense(7)(x)]), "different layouts"),
    (lambda x, a, b: L.Concatenate(axis=0)([a, a]), "axis 0"),
    (lambda x, a, b: L.Concatenate()([L.Flatten()(L.Reshape((2, 2))(a)), b]), "Reshape"),
    (lambda x, a, b: keras.ops.cumsum(a, axis=-1), "not supported"),
    (lambda x, a, b: a * np.arange(4, dtype="float32"), "non-scalar constant"),
    (lambda x, a, b: L.Flatten()(L.Reshape((4, 1))(a)) + 1.0, "Reshape"),
], ids=["concat-input", "merge-of-layouts", "concat-batch-axis", "reshape", "channel-mixing-op", "op-of-a-vector",
        "op-after-reshape"])
def test_graphs_the_batched_path_cannot_reproduce_are_named(join, reason):
    reason_given = BatchedEvaluator(OBJECTIVE).supports([Job(_joined_mlp(join), True, "")], {"epochs": 1})
    assert reason_given is not None and reason in reason_given, reason_given


def test_a_keras_op_on_flattened_units_is_named():
    inputs = keras.Input((3, 3, 1))
    h = L.Flatten()(L.Conv2D(2, 2, activation="relu")(inputs)) + 1.0
    model = keras.Model(inputs, L.Dense(2, activation="softmax")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    reason = BatchedEvaluator(OBJECTIVE).supports([Job(model, True, "")], {"epochs": 1})
    assert reason is not None and "on flattened units" in reason, reason


def test_a_custom_schedule_an_auc_objective_and_weighted_validation_are_named():
    class Halving(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            return 0.01 / (1 + step)

        def get_config(self):
            return {}

    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(Halving()), loss="sparse_categorical_crossentropy")
    job = Job(model, True, "")
    assert "learning-rate schedule Halving" in BatchedEvaluator(OBJECTIVE).supports([job], {"epochs": 1})
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    # an AUC objective of a model not compiled with an AUC metric (those are computed: tests/test_batched_auc.py)
    assert "objective val_auc" in BatchedEvaluator(Objective("val_auc", "max")).supports([job], {"epochs": 1})
    x, y = np.zeros((4, 5)), np.zeros(4)
    weighted = {"epochs": 1, "validation_data": (x, y, np.ones(4))}
    assert "validation sample weights" in BatchedEvaluator(OBJECTIVE).supports([job], weighted)
    both = {"epochs": 1, "class_weight": {0: 1.0}, "sample_weight": np.ones(4)}
    assert "class_weight together with sample_weight" in BatchedEvaluator(OBJECTIVE).supports([job], both)


def test_progress_accepts_once_per_step_after_the_whole_step(tmp_path, data, capsys):
    # the trials of a step end one by one; none may be seen as finished without its score
    (x, y), validation, _ = data
    tuner = GRSTuner.from_model(models.build("nn1", (30,)), tolerance=0.3, seed=0, max_trials=7,
                                directory=tmp_path)
    tuner.search(x, y, validation_data=validation, epochs=1, verbose=0, progress=True)
    lines = capsys.readouterr().out.splitlines()
    accepted = [line for line in lines if line.strip().startswith("accepted")]
    assert len(accepted) == 2, accepted
    last_score = [i for i, line in enumerate(lines) if "valid;" in line][-1]
    assert lines.index(accepted[-1]) > last_score  # after the step's last trial, not before


class Raising:
    """An evaluator that batches and raises ``error`` on the first candidate after trial 0."""

    batches = True

    def __init__(self, inner, error):
        self.inner, self.error = inner, error

    def evaluate(self, jobs, fit_args, fit_kwargs):
        if any(job.train and job.model.count_params() < 131 for job in jobs):
            raise self.error
        return self.inner.evaluate(jobs, fit_args, fit_kwargs)


def small_tuner(tmp_path, name, **kwargs):
    def build(hp):
        model = keras.Sequential([keras.Input((30,)), keras.layers.Dense(hp.Int("units", 2, 4), activation="relu"),
                                  keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    return GRSTuner(build, tolerance=0.5, seed=0, max_trials=4, directory=tmp_path, project_name=name,
                    acceptance="seed", **kwargs)


def test_the_batched_loop_keeps_keras_tuners_statuses_and_fatal_errors(tmp_path, data):
    (x, y), validation, _ = data
    tuner = small_tuner(tmp_path, "fatal")
    tuner.evaluator = Raising(tuner.evaluator, keras_tuner.errors.FatalError("stop everything"))
    with pytest.raises(keras_tuner.errors.FatalError, match="stop everything"):
        tuner.search(x, y, validation_data=validation, epochs=1, verbose=0)

    tuner = small_tuner(tmp_path, "retried", max_retries_per_trial=1)
    tuner.evaluator = Raising(tuner.evaluator, RuntimeError("flaky"))
    tuner.search(x, y, validation_data=validation, epochs=1, verbose=0)  # a failed candidate ends GRS
    trials = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
    assert trials[0].status == "COMPLETED"
    # an ordinary error makes the trial INVALID: retried once (max_retries_per_trial=1), then FAILED
    assert trials[1].status == "FAILED" and "flaky" in trials[1].message
    assert tuner.oracle._run_times[trials[1].trial_id] == 2


def test_early_stopping_is_applied_to_each_batched_candidate_as_keras_does(tmp_path, data):
    (x, y), validation, _ = data
    # min_delta=10: only the first monitored epoch is an improvement, so Keras stops after epoch patience + 1
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, min_delta=10)
    epochs = {}
    for name in ("batched", "keras"):
        tuner = small_tuner(tmp_path, name, evaluator=name)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no fallback to one fit per trial
            tuner.search(x, y, validation_data=validation, epochs=5, callbacks=[stop], verbose=0)
        epochs[name] = [tuner.oracle.get_trial(t).metrics.get_last_value("epochs") for t in tuner.oracle.start_order]
    assert epochs["batched"] == epochs["keras"] and set(epochs["batched"]) == {2}

    # the rule itself, candidate by candidate: improvement resets the wait, patience counts epochs without one
    rule = keras_grs.evaluate.batched._Stopping(keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=1), 2)
    stopped = np.zeros(2, dtype=bool)
    for epoch, values in enumerate([[0.5, 0.5], [0.6, 0.4], [0.6, 0.4], [0.7, 0.9]]):
        stopped |= rule.update(epoch, np.array(values), stopped)
        if epoch == 1:
            assert stopped.tolist() == [False, True]
    assert stopped.tolist() == [True, True] and rule.best.tolist() == [0.6, 0.5]


@pytest.mark.parametrize("epoch_score", ["best", "last"])
def test_epochs_compiled_in_one_call_or_in_several_train_alike(tmp_path, data, base_weights, monkeypatch, epoch_score):
    (x, y), validation, _ = data
    fit = {"epochs": 6, "batch_size": 32, "validation_data": validation, "verbose": 0}
    batched = keras_grs.evaluate.batched

    def run(tag):
        base = models.build("nn1", (30,))
        base.set_weights(base_weights)
        # a learning rate this large makes the validation score jump from epoch to epoch: the best epoch is
        # seldom the last of a call, so a choice not carried from call to call shows
        base.compile(optimizer=keras.optimizers.Adam(0.05), loss=base.loss, metrics=["accuracy"])
        jobs = [Job(keras_grs.shrink(base, {"dense1": list(range(i * 3)), "dense2": [i]}), True,
                    str(tmp_path / f"{tag}{i}.weights.h5")) for i in range(3)]
        evaluator = BatchedEvaluator(OBJECTIVE, epoch_score=epoch_score, workers=1)  # one group: one call sequence
        calls = []
        program = evaluator._program
        evaluator._program = lambda *a: (lambda epochs, *rest: calls.append(int(epochs)) or program(*a)(epochs, *rest))
        results = evaluator.evaluate(jobs, (x, y), fit)
        return results, [job.model.get_weights() for job in jobs], calls

    monkeypatch.setattr(batched, "CALL_SECONDS", 1e6)  # as many epochs a call as the program holds
    whole, whole_weights, calls = run("whole")
    assert calls == [1, 5]  # a fit's first call runs one epoch (its time tells how many the next can run)
    monkeypatch.setattr(batched, "CALL_SECONDS", 0.0)  # one epoch a call
    single, single_weights, calls = run("single")
    assert calls == [1] * 6
    # batch orders of at most two epochs per call: the program holds two
    monkeypatch.setattr(batched, "CALL_SECONDS", 1e6)
    per_epoch = -(-len(x) // 32) * 32 * 3 * 4  # the index of one epoch: its padded batches, per candidate
    monkeypatch.setattr(batched, "EPOCH_INDEX_BYTES", 2 * per_epoch)
    split, split_weights, calls = run("split")
    assert calls == [1, 2, 2, 1]
    for results, weights in ((single, single_weights), (split, split_weights)):
        assert [r["epochs"] for r in whole] == [r["epochs"] for r in results] == [6] * 3
        for a, b in zip(whole, results):
            assert a["val_accuracy"] == pytest.approx(b["val_accuracy"], abs=1e-6)
            assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        for a, b in zip(whole_weights, weights):
            for u, v in zip(a, b):
                np.testing.assert_allclose(u, v, atol=1e-5)


def test_one_compiled_fit_serves_any_number_of_epochs(tmp_path, data, base_weights):
    (x, y), validation, _ = data
    evaluator = BatchedEvaluator(OBJECTIVE)
    for epochs in (2, 5, 1):
        results = evaluator.evaluate(jobs_for(tmp_path, f"e{epochs}", base_weights), (x, y),
                                     {"epochs": epochs, "batch_size": 32, "validation_data": validation})
        assert [r["epochs"] for r in results] == [epochs] * 3
    assert len(evaluator._compiled) == 1


def test_the_shared_programs_keep_the_ones_used_last():
    built = []
    cache = _ProgramCache(2)

    def get(key):
        return cache.get(key, lambda: built.append(key) or f"program {key}")

    assert [get("a"), get("b"), get("a")] == ["program a", "program b", "program a"]
    get("c")  # drops b, the least recently used
    assert get("a") == "program a" and built == ["a", "b", "c"]
    get("b")
    assert built == ["a", "b", "c", "b"]


def test_a_later_evaluator_reuses_the_compiled_fit(tmp_path, data, base_weights):
    (x, y), validation, _ = data
    fit_kwargs = {"epochs": 2, "batch_size": 32, "validation_data": validation}
    first, second = BatchedEvaluator(OBJECTIVE, workers=1), BatchedEvaluator(OBJECTIVE, workers=1)
    results = [evaluator.evaluate(jobs_for(tmp_path, name, base_weights), (x, y), fit_kwargs)
               for name, evaluator in (("first", first), ("second", second))]
    (program,) = first._compiled.values()
    assert list(second._compiled.values()) == [program]
    assert program.experimental_get_tracing_count() == 1
    assert [r["val_accuracy"] for r in results[0]] == [r["val_accuracy"] for r in results[1]]
    # another problem (here: the number of candidate slots) gets a program of its own
    third = BatchedEvaluator(OBJECTIVE, workers=1)
    third.evaluate(jobs_for(tmp_path, "third", base_weights)[:2], (x, y), fit_kwargs)
    assert list(third._compiled.values()) != [program]


def test_a_layer_normalization_leaves_each_candidates_padded_channels_out():
    """Two candidates of 5 and 3 channels stacked at 5: each is normalised over its own channels, as Keras'
    LayerNormalization normalises the smaller model's, and its padded channels stay zero."""
    from keras_grs.evaluate.batched import _layer_normalize, _Op

    rng = np.random.default_rng(4)
    widths = (5, 3)
    h = np.zeros((2, 4, 2, 5), "float32")  # (candidates, batch, positions, channels)
    gamma, beta, mask = np.zeros((2, 5), "float32"), np.zeros((2, 5), "float32"), np.zeros((2, 5), "float32")
    expected = []
    for j, width in enumerate(widths):
        h[j, ..., :width] = rng.normal(size=(4, 2, width))
        gamma[j, :width], beta[j, :width], mask[j, :width] = rng.normal(size=width), rng.normal(size=width), 1.0
        layer = L.LayerNormalization(epsilon=0.01)
        layer.build((None, 2, width))
        layer.set_weights([gamma[j, :width], beta[j, :width]])
        expected.append(np.asarray(layer(h[j, ..., :width])))
    got = _layer_normalize(tf.constant(h), _Op("layernorm", epsilon=0.01), (tf.constant(gamma), tf.constant(beta)),
                           tf.constant(mask)).numpy()
    for j, width in enumerate(widths):
        np.testing.assert_allclose(got[j, ..., :width], expected[j], rtol=1e-5, atol=1e-5)
        assert not got[j, ..., width:].any()
