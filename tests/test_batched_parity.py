"""One candidate trained by the batched evaluator ends where ``model.fit`` ends: same initial weights, same batches
(no shuffling), no dropout; final weights within 1e-4 (relative), and the epoch's loss, val_loss and val_accuracy
as Keras reports them. One case per loss, optimizer, schedule, regularizer and weighting the fast path reproduces."""

import keras
import numpy as np
import pytest
from keras_tuner import Objective

from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator

SAMPLES, FEATURES, CLASSES = 50, 16, 3  # 50 samples in batches of 16: the last batch is partial (2 samples)
schedules = keras.optimizers.schedules


def data(labels, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, FEATURES)).astype("float32")
    ids = ((x[:, 0] + x[:, 1] > 0).astype("int32") + (x[:, 2] > 0.8)).astype("int32")
    if labels == "binary":
        return x, (x[:, 0] > 0).astype("float32")[:, None]
    if labels == "signs":  # a hinge loss' -1 and 1
        return x, np.where(x[:, 0] > 0, 1.0, -1.0).astype("float32")[:, None]
    if labels == "onehot":
        return x, np.eye(CLASSES, dtype="float32")[ids]
    if labels == "soft":  # a teacher's outputs: distributions over the classes, none exactly one-hot
        return x, (0.7 * np.eye(CLASSES)[ids] + 0.3 * np.random.default_rng(seed + 1).dirichlet(
            np.ones(CLASSES), SAMPLES)).astype("float32")
    if labels == "targets":  # a regression's: two values per sample, within (-1, 1)
        return x, np.stack([np.tanh(x[:, 0] - x[:, 1]), np.tanh(0.5 * x[:, 2] * x[:, 3])], axis=1).astype("float32")
    if labels == "counts":  # a regression's non-negative whole numbers: two counts per sample, zeros among them
        return x, np.round(np.exp(0.6 * x[:, :2] - 0.3)).astype("float32")
    return x, ids


def mlp(optimizer="adam", loss="sparse_categorical_crossentropy", output="softmax", units=CLASSES,
        metrics=("accuracy",), **hidden):
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(8, activation="relu", **hidden),
                              keras.layers.Dense(units, activation=output)])
    model.compile(optimizer=optimizer, loss=loss, metrics=list(metrics))
    return model


def small_cnn(optimizer="adam"):
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(3, 2, activation="relu"),
                              keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                              keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def mlp_norm(optimizer="adam", **norm):
    """Dense (no bias), BatchNormalization, ReLU: the usual block of a normalised MLP."""
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(8, use_bias=False, name="hidden"),
                              keras.layers.BatchNormalization(**norm), keras.layers.ReLU(),
                              keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def cnn_norm():
    """Conv, max pooling, then BatchNormalization, then a Dense with its own BatchNormalization."""
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(3, 2, activation="relu", padding="same"),
                              keras.layers.MaxPooling2D(), keras.layers.BatchNormalization(momentum=0.9),
                              keras.layers.Flatten(), keras.layers.Dense(5, activation="relu"),
                              keras.layers.BatchNormalization(epsilon=0.01), keras.layers.Dropout(0.0),
                              keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def separable_cnn(regularizer=None, optimizer="adam"):
    """A Conv, then a depthwise-separable block (DepthwiseConv2D, BatchNormalization, ReLU, pointwise Conv)."""
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(3, 2, activation="relu", padding="same"),
                              keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False,
                                                           depthwise_regularizer=regularizer),
                              keras.layers.BatchNormalization(), keras.layers.ReLU(),
                              keras.layers.Conv2D(4, 1, activation="relu"),
                              keras.layers.DepthwiseConv2D(2, strides=2, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def depthwise_1d():
    model = keras.Sequential([keras.Input((8, 2)), keras.layers.Conv1D(3, 2, activation="relu"),
                              keras.layers.DepthwiseConv1D(3, activation="tanh"),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def assert_trains_like_fit(build, labels="ids", epochs=3, tmp_path=None, shape=(FEATURES,), atol=1e-6, scale=1.0,
                           **fit_options):
    x, y = data(labels)
    x_val, y_val = data(labels, seed=1)
    x, x_val = x.reshape(-1, *shape) * scale, x_val.reshape(-1, *shape) * scale
    keras.utils.set_random_seed(0)
    reference = build()
    start = reference.get_weights()
    candidate = build()
    candidate.set_weights(start)
    fit = {"epochs": epochs, "batch_size": 16, "validation_data": (x_val, y_val), "verbose": 0, "shuffle": False,
           **fit_options}
    history = reference.fit(x, y, **fit).history
    evaluator = BatchedEvaluator(Objective("val_loss", "min"), epoch_score="last")
    job = Job(candidate, True, str(tmp_path / "candidate.weights.h5"))
    assert evaluator.supports([job], fit) is None
    result = evaluator.evaluate([job], (x, y), fit)[0]
    assert evaluator._calls == 1  # trained by the batched path, not by the fallback
    fixed = [not v.trainable and "moving" not in v.path for v in reference.weights]  # a Normalization's statistics
    for got, want, initial, still in zip(candidate.get_weights(), reference.get_weights(), start, fixed):
        assert np.abs(want - initial).max() > 1e-3 or not initial.any() or still  # training moved it
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol)
    assert ("val_accuracy" in result) == (labels not in ("targets", "counts"))  # a regression records none
    for name in ("loss", "val_loss", "val_accuracy")[: 2 + ("val_accuracy" in result)]:
        assert result[name] == pytest.approx(history[name][-1], rel=1e-4, abs=1e-6), name
    return candidate


def assert_widths_train_like_fit(base, remove, tmp_path, shape=(FEATURES,)):
    """``base`` and its candidate without the ``remove`` units, trained together by the batched evaluator (the
    narrower one padded and masked), each end as its own ``model.fit`` from the same weights on the same batches;
    returns (candidates, references)."""
    from keras_grs import shrink

    x, y = data("ids")
    x_val, y_val = data("ids", seed=1)
    x, validation = x.reshape(-1, *shape), (x_val.reshape(-1, *shape), y_val)
    candidates = [shrink(base, {}), shrink(base, remove)]
    references = [shrink(base, {}), shrink(base, remove)]
    fit = {"epochs": 3, "batch_size": 16, "validation_data": validation, "verbose": 0, "shuffle": False}
    for reference in references:
        reference.fit(x, y, **fit)
    jobs = [Job(model, True, str(tmp_path / f"c{i}.weights.h5")) for i, model in enumerate(candidates)]
    evaluator = BatchedEvaluator(Objective("val_loss", "min"), epoch_score="last")
    assert evaluator.supports(jobs, fit) is None
    evaluator.evaluate(jobs, (x, y), fit)
    assert evaluator._calls == 1  # trained by the batched path, not by the fallback
    for candidate, reference in zip(candidates, references):
        for got, want in zip(candidate.get_weights(), reference.get_weights()):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    return candidates, references


def test_one_candidate_trained_batched_ends_with_the_weights_model_fit_gives(tmp_path):
    assert_trains_like_fit(mlp, epochs=5, tmp_path=tmp_path)


def test_a_convolution_trained_batched_ends_with_the_weights_model_fit_gives(tmp_path):
    assert_trains_like_fit(small_cnn, shape=(4, 4, 1), tmp_path=tmp_path)


def dilated_causal_cnn():
    """Dilated Conv1D layers, the first with causal padding (a temporal convolution's block), an UpSampling between."""
    model = keras.Sequential([keras.Input((8, 2)),
                              keras.layers.Conv1D(3, 3, dilation_rate=2, padding="causal", activation="relu"),
                              keras.layers.UpSampling1D(2),
                              keras.layers.Conv1D(3, 2, dilation_rate=2, padding="same", activation="tanh"),
                              keras.layers.Flatten(), keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_dilated_causal_convolutions_and_upsampling_trained_batched_end_with_the_weights_model_fit_gives(tmp_path):
    assert_trains_like_fit(dilated_causal_cnn, shape=(8, 2), tmp_path=tmp_path)


@pytest.mark.parametrize("build, shape", [
    (mlp_norm, (FEATURES,)),
    (lambda: mlp_norm(keras.optimizers.AdamW(0.01, weight_decay=0.05), momentum=0.5, epsilon=1e-5), (FEATURES,)),
    (cnn_norm, (4, 4, 1)),
], ids=["dense", "dense-adamw-options", "conv-and-dense"])
def test_batch_normalization_trains_like_fit_moving_statistics_included(build, shape, tmp_path):
    # 50 samples in batches of 16: the last batch's moments are those of its 2 real samples, not of its padding
    assert_trains_like_fit(build, shape=shape, epochs=4, tmp_path=tmp_path)


@pytest.mark.parametrize("build, shape", [
    (separable_cnn, (4, 4, 1)),
    (lambda: separable_cnn(keras.regularizers.L2(0.05), keras.optimizers.SGD(0.1, momentum=0.9)), (4, 4, 1)),
    (depthwise_1d, (8, 2)),
], ids=["conv2d", "conv2d-regularized", "conv1d"])
def test_depthwise_convolutions_train_like_fit(build, shape, tmp_path):
    # five layers deep with Adam, a near-zero weight of the first kernel may end 3e-6 from fit's: the depthwise sums
    # are added in another order than Keras' kernel adds them, and Adam scales each update by its own gradient's
    # size, so a rounding in a gradient near zero moves a weight by a step (with SGD the same model, regularized,
    # ends within 3e-8 of fit's)
    adam = build().optimizer.name == "adam"
    assert_trains_like_fit(build, shape=shape, epochs=4, tmp_path=tmp_path, atol=1e-5 if adam else 1e-6)


@pytest.mark.parametrize("build, labels", [
    (lambda: mlp(loss="categorical_crossentropy"), "onehot"),
    (lambda: mlp(loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1)), "onehot"),
    (lambda: mlp(loss="binary_crossentropy", output="sigmoid", units=1), "binary"),
    (lambda: mlp(loss=keras.losses.BinaryCrossentropy(label_smoothing=0.2), output="sigmoid", units=1), "binary"),
    (lambda: mlp(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), output="linear"), "ids"),
    (lambda: mlp(loss=keras.losses.BinaryCrossentropy(from_logits=True), output="linear", units=1), "binary"),
    (lambda: mlp(loss="mse", output="linear", units=2, metrics=()), "targets"),
    (lambda: mlp(loss=keras.losses.MeanAbsoluteError(), output="tanh", units=2, metrics=["mae"]), "targets"),
    (lambda: mlp(loss=keras.losses.Huber(delta=0.3), output="linear", units=2, metrics=()), "targets"),
    (lambda: mlp(loss="categorical_focal_crossentropy"), "onehot"),
    (lambda: mlp(loss=keras.losses.CategoricalFocalCrossentropy(alpha=0.5, gamma=1.5, label_smoothing=0.1,
                                                                from_logits=True), output="linear"), "onehot"),
    (lambda: mlp(loss="binary_focal_crossentropy", output="sigmoid", units=1), "binary"),
    (lambda: mlp(loss=keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.7, gamma=3.0,
                                                           label_smoothing=0.2), output="sigmoid", units=1), "binary"),
    (lambda: mlp(loss=keras.losses.BinaryFocalCrossentropy(from_logits=True), output="linear", units=1), "binary"),
    (lambda: mlp(loss="kl_divergence"), "soft"),
    (lambda: mlp(loss="log_cosh", output="linear", units=2, metrics=()), "targets"),
    (lambda: mlp(loss="msle", output="softplus", units=2, metrics=()), "counts"),
    (lambda: mlp(loss=keras.losses.MeanAbsolutePercentageError(), output="softplus", units=2, metrics=()), "counts"),
    (lambda: mlp(loss="poisson", output="exponential", units=2, metrics=()), "counts"),
    (lambda: mlp(loss="hinge", output="tanh", units=1), "binary"),  # 0/1 labels, which Keras turns into -1/1
    (lambda: mlp(loss=keras.losses.SquaredHinge(), output="linear", units=1), "signs"),
    (lambda: mlp(loss="categorical_hinge", output="linear"), "onehot"),
], ids=["categorical", "categorical-smoothed", "binary", "binary-smoothed", "sparse-logits", "binary-logits",
        "mean-squared", "mean-absolute-tanh", "huber", "categorical-focal", "categorical-focal-options-logits",
        "binary-focal", "binary-focal-balanced-smoothed", "binary-focal-logits", "kl-divergence-soft-labels",
        "log-cosh", "msle", "mape-of-counts", "poisson", "hinge-of-0-1-labels", "squared-hinge", "categorical-hinge"])
def test_losses(build, labels, tmp_path):
    assert_trains_like_fit(build, labels, tmp_path=tmp_path)


@pytest.mark.parametrize("optimizer", [
    lambda: keras.optimizers.SGD(0.1),
    lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    lambda: keras.optimizers.SGD(0.1, momentum=0.8, nesterov=True),
    lambda: keras.optimizers.RMSprop(0.01),
    lambda: keras.optimizers.RMSprop(0.01, rho=0.8, momentum=0.5, centered=True, epsilon=1e-5),
    lambda: keras.optimizers.Adam(0.01, beta_1=0.8, beta_2=0.99, epsilon=1e-4, amsgrad=True),
    lambda: keras.optimizers.AdamW(0.01, weight_decay=0.05),
    lambda: keras.optimizers.SGD(0.1, momentum=0.5, weight_decay=0.1),
    lambda: keras.optimizers.Adam(schedules.ExponentialDecay(0.02, decay_steps=3, decay_rate=0.5)),
    lambda: keras.optimizers.SGD(schedules.PiecewiseConstantDecay([4, 7], [0.2, 0.1, 0.05])),
    lambda: keras.optimizers.AdamW(schedules.CosineDecay(0.01, decay_steps=10, warmup_target=0.02, warmup_steps=3)),
    lambda: keras.optimizers.SGD(schedules.CosineDecayRestarts(0.2, first_decay_steps=3, t_mul=1.5, m_mul=0.8)),
    lambda: keras.optimizers.RMSprop(schedules.PolynomialDecay(0.02, decay_steps=6, end_learning_rate=0.002,
                                                               power=2.0, cycle=True)),
    lambda: keras.optimizers.Adam(schedules.InverseTimeDecay(0.02, decay_steps=2, decay_rate=0.5, staircase=True)),
    lambda: keras.optimizers.Adagrad(0.1),
    lambda: keras.optimizers.Adagrad(0.05, initial_accumulator_value=0.5, epsilon=1e-4, weight_decay=0.05),
    lambda: keras.optimizers.Adamax(0.02, beta_1=0.8, beta_2=0.95),
    lambda: keras.optimizers.Nadam(0.01),
    lambda: keras.optimizers.Nadam(schedules.ExponentialDecay(0.02, decay_steps=3, decay_rate=0.5), beta_1=0.7,
                                   epsilon=1e-4),
    lambda: keras.optimizers.Lion(0.002, beta_1=0.8, beta_2=0.95, weight_decay=0.1),
    lambda: keras.optimizers.Adam(0.05, clipnorm=0.05),
    lambda: keras.optimizers.SGD(0.5, momentum=0.5, global_clipnorm=0.1),
    lambda: keras.optimizers.RMSprop(0.01, clipvalue=0.01),
    lambda: keras.optimizers.Ftrl(0.1),
    lambda: keras.optimizers.Ftrl(0.1, learning_rate_power=-0.7, initial_accumulator_value=0.2,
                                  l1_regularization_strength=0.01, l2_regularization_strength=0.02,
                                  l2_shrinkage_regularization_strength=0.01, beta=0.1),
], ids=["sgd", "sgd-momentum", "sgd-nesterov", "rmsprop", "rmsprop-centered-momentum", "adam-options-amsgrad",
        "adamw", "sgd-weight-decay", "adam-exponential-decay", "sgd-piecewise", "adamw-cosine-warmup",
        "sgd-cosine-restarts", "rmsprop-polynomial-cycle", "adam-inverse-time-staircase", "adagrad",
        "adagrad-options-weight-decay", "adamax", "nadam", "nadam-schedule", "lion-weight-decay", "adam-clipnorm",
        "sgd-global-clipnorm", "rmsprop-clipvalue", "ftrl", "ftrl-options"])
def test_optimizers_and_schedules(optimizer, tmp_path):
    assert_trains_like_fit(lambda: mlp(optimizer=optimizer()), tmp_path=tmp_path)


@pytest.mark.parametrize("hidden", [
    {"kernel_regularizer": keras.regularizers.L2(0.01)},
    {"kernel_regularizer": keras.regularizers.L1(0.01), "bias_regularizer": keras.regularizers.L1L2(0.01, 0.02)},
    {"use_bias": False},
], ids=["l2", "l1-and-bias-l1l2", "no-bias"])
def test_layer_options(hidden, tmp_path):
    assert_trains_like_fit(lambda: mlp(**hidden), tmp_path=tmp_path)


def test_class_weights_with_id_one_hot_and_binary_labels(tmp_path):
    assert_trains_like_fit(mlp, class_weight={0: 0.5, 2: 3.0}, tmp_path=tmp_path)
    assert_trains_like_fit(lambda: mlp(loss="categorical_crossentropy"), "onehot", class_weight={1: 2.0},
                           tmp_path=tmp_path)
    assert_trains_like_fit(lambda: mlp(loss="binary_crossentropy", output="sigmoid", units=1), "binary",
                           class_weight={0: 1.0, 1: 4.0}, tmp_path=tmp_path)


def test_sample_weights(tmp_path):
    weights = np.linspace(0.1, 2.0, SAMPLES).astype("float32")
    assert_trains_like_fit(mlp, sample_weight=weights, tmp_path=tmp_path)


def prelu_models(kind):
    """PReLU after a Dense (one alpha per unit), after a Conv with its alpha shared over positions (shared_axes
    [1, 2], the usual form), and after a Conv with one alpha per position and channel (Keras' default)."""
    L = keras.layers
    if kind == "dense":
        layers = [keras.Input((FEATURES,)), L.Dense(8, name="hidden"), L.PReLU(alpha_initializer="glorot_uniform")]
    else:
        shared = [1, 2] if kind == "conv-shared" else None
        layers = [keras.Input((FEATURES,)), L.Reshape((4, 4, 1)), L.Conv2D(8, 2, name="hidden"),
                  L.PReLU(alpha_initializer="glorot_uniform", shared_axes=shared), L.Flatten()]
    model = keras.Sequential([*layers, L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("kind", ["dense", "conv-shared", "conv-per-position"])
def test_prelu_trains_like_fit(kind, tmp_path):
    assert_trains_like_fit(lambda: prelu_models(kind), tmp_path=tmp_path)


def layer_normalized(kind):
    """LayerNormalization after a Dense (then a GELU: a transformer's MLP block), after a Conv (over each position's
    channels), and on the model's input features."""
    L = keras.layers
    norm = L.LayerNormalization(epsilon=0.01, beta_initializer="glorot_uniform", gamma_initializer="glorot_uniform")
    if kind == "dense":
        layers = [keras.Input((FEATURES,)), L.Dense(8, name="hidden"), norm, L.Activation("gelu")]
    elif kind == "conv":
        layers = [keras.Input((FEATURES,)), L.Reshape((4, 4, 1)), L.Conv2D(8, 2, activation="relu", name="hidden"),
                  norm, L.Flatten()]
    else:
        layers = [keras.Input((FEATURES,)), norm, L.Dense(8, activation="relu", name="hidden")]
    model = keras.Sequential([*layers, L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("kind", ["dense", "conv", "input"])
def test_layer_normalization_trains_like_fit(kind, tmp_path):
    assert_trains_like_fit(lambda: layer_normalized(kind), tmp_path=tmp_path, atol=1e-5)


def mobilenet_head():
    """keras.applications' MobileNet head: global pooling keeping its axes, a 1x1 Conv to the classes, Reshape to
    (classes,), then the softmax as a layer of its own."""
    L = keras.layers
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(5, 2, activation="relu"),
                              L.GlobalAveragePooling2D(keepdims=True), L.Dropout(0.0), L.Conv2D(CLASSES, 1),
                              L.Reshape((CLASSES,)), L.Activation("softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def squeeze_excite_reshaped():
    """A squeeze-and-excitation block as EfficientNet writes it (on flat features read as a 4x4 image): global
    pooling to (channels,), Reshape to (1, 1, channels), two 1x1 Convs, the channels scaled by a Multiply."""
    L = keras.layers
    inputs = keras.Input((FEATURES,))
    x = L.Conv2D(8, 2, activation="relu", name="hidden")(L.Reshape((4, 4, 1))(inputs))
    s = L.Reshape((1, 1, 8))(L.GlobalAveragePooling2D()(x))
    s = L.Conv2D(8, 1, activation="sigmoid")(L.Conv2D(3, 1, activation="relu")(s))
    outputs = L.Dense(CLASSES, activation="softmax")(L.Flatten()(L.Multiply()([x, s])))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("build, shape", [(mobilenet_head, (4, 4, 1)), (squeeze_excite_reshaped, (FEATURES,))],
                         ids=["mobilenet-head", "squeeze-excite"])
def test_reshapes_of_size_one_positions_train_like_fit(build, shape, tmp_path):
    assert_trains_like_fit(build, shape=shape, tmp_path=tmp_path)


def test_an_output_with_positions_is_named():
    L = keras.layers
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(5, 2, activation="relu"),
                              L.Conv2D(CLASSES, 1, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    reason = BatchedEvaluator(Objective("val_loss", "min")).supports([Job(model, True, "")], {"epochs": 1})
    assert reason is not None and "output of shape (3, 3, 3)" in reason, reason


def dense_per_pixel():
    """A Dense applied to every pixel of a convolution's output (a 1x1 convolution), then flattened."""
    L = keras.layers
    model = keras.Sequential([keras.Input((FEATURES,)), L.Reshape((4, 4, 1)), L.Conv2D(3, 2, activation="relu"),
                              L.Dense(8, activation="relu", name="hidden"), L.Flatten(),
                              L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def reshaped_conv():
    """Flat features read as a sequence (Reshape at the input), a Conv1D, its output flattened by a Reshape."""
    L = keras.layers
    model = keras.Sequential([keras.Input((FEATURES,)), L.Reshape((8, 2)), L.Conv1D(8, 3, activation="relu",
                                                                                    name="hidden"),
                              L.Reshape((-1,)), L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


@pytest.mark.parametrize("build", [
    lambda: mlp(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), name="hidden"),
    lambda: mlp_norm(optimizer=keras.optimizers.SGD(0.1, momentum=0.9)),
    reshaped_conv, squeeze_excite_reshaped, lambda: prelu_models("conv-shared"), lambda: prelu_models("dense"),
    lambda: layer_normalized("input"), dense_per_pixel,
], ids=["dense", "batch-normalized", "reshaped-conv", "squeeze-excite", "prelu-conv", "prelu-dense",
        "layer-normalized-input", "dense-per-pixel"])
def test_candidates_of_different_widths_trained_together_each_end_as_their_own_fit(build, tmp_path):
    # the stacked path pads the narrower candidate and masks its missing units: that must change nothing
    keras.utils.set_random_seed(0)
    candidates, _ = assert_widths_train_like_fit(build(), {"hidden": [1, 4, 6]}, tmp_path)
    assert candidates[1].get_layer("hidden").get_weights()[0].shape[-1] == 5


def residual_mlp(optimizer="adam"):
    """Two Dense layers whose units a residual Add joins (one width group), then the output."""
    inputs = keras.Input((FEATURES,))
    stem = keras.layers.Dense(8, activation="relu", name="stem")(inputs)
    h = keras.layers.Dense(8, name="inner")(stem)
    h = keras.layers.ReLU()(keras.layers.Add()([stem, h]))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(h))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def residual_cnn():
    """A residual block of convolutions with BatchNormalization on the branch and a skip from the model's input."""
    inputs = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(1, 1, activation="relu", name="widen")(inputs)
    skip = keras.layers.Add(name="skip")([inputs, a])  # onto the input: pinned with it
    b = keras.layers.Conv2D(3, 2, padding="same", activation="relu", name="stem")(skip)
    c = keras.layers.Conv2D(3, 2, padding="same", use_bias=False)(b)
    c = keras.layers.BatchNormalization()(c)
    h = keras.layers.Activation("relu")(keras.layers.Add()([b, c]))
    h = keras.layers.MaxPooling2D()(h)
    h = keras.layers.Flatten()(h)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def concat_mlp(optimizer="adam"):
    """Two Dense layers averaged (one width group), side by side (Concatenate) with a third, normalised together."""
    inputs = keras.Input((FEATURES,))
    a = keras.layers.Dense(4, activation="relu", name="a")(inputs)
    c = keras.layers.Dense(4, activation="tanh", name="c")(inputs)
    b = keras.layers.Dense(5, activation="relu", name="b")(inputs)
    h = keras.layers.Concatenate()([keras.layers.Average()([a, c]), b])
    h = keras.layers.BatchNormalization(name="joined")(h)
    h = keras.layers.Dense(6, activation="relu", name="d")(h)
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(h))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def separable_conv(regularized=False):
    """A Conv, a strided SeparableConv2D with bias, BatchNormalization, global pooling, the output."""
    L = keras.layers
    options = {"depthwise_regularizer": keras.regularizers.L2(0.05),
               "pointwise_regularizer": keras.regularizers.L1(0.01)} if regularized else {}
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(3, 2, padding="same", activation="relu", name="first"),
                              L.SeparableConv2D(4, 2, strides=2, name="separable", activation="relu", **options),
                              L.BatchNormalization(), L.GlobalAveragePooling2D(),
                              L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def concat_cnn():
    """Two convolutions of the input side by side, then a depthwise convolution of both, flattened into a Dense."""
    inputs = keras.Input((4, 4, 1))
    a = keras.layers.Conv2D(2, 2, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(3, 1, activation="relu", name="b")(inputs)
    h = keras.layers.Concatenate()([a, b])
    h = keras.layers.DepthwiseConv2D(2, activation="relu")(h)
    h = keras.layers.Flatten()(keras.layers.Dropout(0.0)(h))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES, activation="softmax")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("build, shape", [
    (residual_mlp, (FEATURES,)),
    (residual_cnn, (4, 4, 1)),
    (concat_mlp, (FEATURES,)),
    (concat_cnn, (4, 4, 1)),
], ids=["residual-dense", "residual-conv-norm-input-skip", "concat-norm-average", "concat-conv-depthwise"])
def test_graphs_with_merges_and_concatenations_train_like_fit(build, shape, tmp_path):
    assert_trains_like_fit(build, shape=shape, epochs=3, tmp_path=tmp_path, atol=1e-5)


@pytest.mark.parametrize("build, remove", [
    (lambda: residual_mlp(keras.optimizers.SGD(0.1, momentum=0.9)), {"stem": [1, 4, 6]}),
    (lambda: concat_mlp(keras.optimizers.SGD(0.1, momentum=0.9)), {"a": [0, 2], "b": [3]}),
    (lambda: separable_conv(), {"first": [1], "separable": [0, 2]}),
], ids=["residual", "concatenated", "separable"])
def test_graph_candidates_of_different_widths_trained_together_each_end_as_their_own_fit(build, remove, tmp_path):
    # a concatenation's channels sit side by side, each branch padded to its own width: the narrower candidate's
    # channels of the second branch move in the padded layout, not in its own
    keras.utils.set_random_seed(0)
    base = build()
    candidates, _ = assert_widths_train_like_fit(base, remove, tmp_path, shape=base.input_shape[1:])
    assert candidates[1].count_params() < candidates[0].count_params()


def activated(hidden, *layers, shape=(FEATURES,), **options):
    """A Dense or Conv layer with the ``hidden`` activation (and ``options``), then ``layers`` (made here), then the
    output."""
    first = keras.layers.Dense(8, activation=hidden, **options) if len(shape) == 1 else \
        keras.layers.Conv2D(3, 2, activation=hidden, **options)
    model = keras.Sequential([keras.Input(shape), first, *[make() for make in layers], keras.layers.Flatten(),
                              keras.layers.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("build, shape", [
    (lambda: activated("relu6"), (FEATURES,)),
    (lambda: activated("gelu"), (FEATURES,)),
    (lambda: activated("swish"), (FEATURES,)),
    (lambda: activated("selu"), (FEATURES,)),
    (lambda: activated("softplus"), (FEATURES,)),  # not zero at zero: the padded units are masked after it
    (lambda: activated("linear", lambda: keras.layers.LeakyReLU(0.1)), (FEATURES,)),
    (lambda: activated("linear", lambda: keras.layers.ELU(0.5)), (FEATURES,)),
    (lambda: activated("linear", lambda: keras.layers.ReLU(max_value=6.0, negative_slope=0.1)), (FEATURES,)),
    (lambda: activated("tanh", lambda: keras.layers.Dropout(0.0), lambda: keras.layers.Activation("mish")),
     (FEATURES,)),
    # a max pooling comes before a monotone activation (the same values, cheaper), never before gelu, which falls
    # below -0.75 (the bias puts most windows there, where the largest input is not the largest output)
    (lambda: activated("gelu", lambda: keras.layers.MaxPooling2D(), shape=(4, 4, 1),
                       bias_initializer=keras.initializers.Constant(-2.0)), (4, 4, 1)),
    (lambda: activated("elu", lambda: keras.layers.MaxPooling2D(), shape=(4, 4, 1)), (4, 4, 1)),
], ids=["relu6", "gelu", "swish", "selu", "softplus", "leaky-relu-layer", "elu-layer", "relu-layer-options",
        "mish-layer-after-dropout", "gelu-then-max-pooling", "elu-then-max-pooling"])
def test_activations_train_like_fit(build, shape, tmp_path):
    assert_trains_like_fit(build, shape=shape, tmp_path=tmp_path)


@pytest.mark.parametrize("build, reason", [
    (lambda: activated("softmax"), "mixes channels"),
    (lambda: activated("linear", lambda: keras.layers.Dropout(0.0), lambda: keras.layers.Activation("sigmoid")),
     "not zero at zero"),
], ids=["hidden-softmax", "standalone-sigmoid"])
def test_activations_the_batched_path_cannot_reproduce_are_named(build, reason):
    reason_given = BatchedEvaluator(Objective("val_loss", "min")).supports([Job(build(), True, "")], {"epochs": 1})
    assert reason_given is not None and reason in reason_given, reason_given


def squeeze_excite_cnn():
    """ZeroPadding, a Conv, a squeeze-and-excitation block (global pooling kept as 1x1, two 1x1 Convs, Multiply),
    Cropping, then the output."""
    L = keras.layers
    inputs = keras.Input((4, 4, 1))
    h = L.Conv2D(4, 3, activation="relu", name="conv")(L.ZeroPadding2D(1)(inputs))
    se = L.GlobalAveragePooling2D(keepdims=True)(h)
    se = L.Conv2D(2, 1, activation="relu")(se)
    se = L.Conv2D(4, 1, activation="sigmoid")(se)
    h = L.Cropping2D(((1, 0), (0, 1)))(L.Multiply()([h, se]))
    model = keras.Model(inputs, L.Dense(CLASSES, activation="softmax")(L.Flatten()(h)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def padded_1d():
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 2)), L.ZeroPadding1D((1, 2)), L.Conv1D(3, 3, activation="relu"),
                              L.Cropping1D(2), L.GlobalMaxPooling1D(keepdims=True), L.Flatten(),
                              L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("build, shape", [(squeeze_excite_cnn, (4, 4, 1)), (padded_1d, (8, 2))],
                         ids=["squeeze-excite-2d", "padded-1d"])
def test_padding_cropping_and_squeeze_excitation_train_like_fit(build, shape, tmp_path):
    assert_trains_like_fit(build, shape=shape, tmp_path=tmp_path, atol=1e-5)


def with_keras_ops():
    """Keras ops written in the graph: a hard-swish (``x * relu6(x + 3) / 6``), a residual ``x + y``,
    ``keras.ops.maximum`` and a ``+ 0.5``, which would make padded units 0.5."""
    L, ops = keras.layers, keras.ops
    inputs = keras.Input((FEATURES,))
    x = L.Dense(8, name="first")(inputs / 2.0)
    x = x * ops.relu6(x + 3.0) * (1.0 / 6.0)
    y = L.Dense(8, activation="tanh")(x)
    h = ops.maximum(x + y, 0.0) + 0.5
    model = keras.Model(inputs, L.Dense(CLASSES, activation="softmax")(h))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def scaled_cnn():
    """Ops on the model's input (shared by every candidate, never padded): ``(x - 0.5) * 2`` before a Conv."""
    L = keras.layers
    inputs = keras.Input((4, 4, 1))
    h = L.Conv2D(3, 2, activation="relu")((inputs - 0.5) * 2.0)
    model = keras.Model(inputs, L.Dense(CLASSES, activation="softmax")(L.Flatten()(h)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("build, shape", [(with_keras_ops, (FEATURES,)), (scaled_cnn, (4, 4, 1))],
                         ids=["dense", "conv-of-scaled-input"])
def test_element_wise_keras_ops_in_the_graph_train_like_fit(build, shape, tmp_path):
    assert_trains_like_fit(build, shape=shape, tmp_path=tmp_path, atol=1e-5)


def test_candidates_with_keras_ops_keep_their_padded_units_at_zero(tmp_path):
    # the narrower candidate's padded units would be 0.5 after "+ 0.5" and train the output layer's padded rows,
    # which would then add to its logits: each op's output is masked again
    from keras_grs import shrink

    x, y = data("ids")
    validation = data("ids", seed=1)
    keras.utils.set_random_seed(0)
    base = with_keras_ops()
    candidates = [shrink(base, {}), shrink(base, {"first": [0, 5]})]
    references = [shrink(base, {}), shrink(base, {"first": [0, 5]})]
    fit = {"epochs": 3, "batch_size": 16, "validation_data": validation, "verbose": 0, "shuffle": False}
    for reference in references:
        reference.fit(x, y, **fit)
    jobs = [Job(model, True, str(tmp_path / f"c{i}.weights.h5")) for i, model in enumerate(candidates)]
    evaluator = BatchedEvaluator(Objective("val_loss", "min"), epoch_score="last")
    evaluator.evaluate(jobs, (x, y), fit)
    assert evaluator._calls == 1
    for candidate, reference in zip(candidates, references):
        for got, want in zip(candidate.get_weights(), reference.get_weights()):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def separable_1d():
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 2)), L.Conv1D(3, 2, activation="relu"),
                              L.SeparableConv1D(4, 3, padding="same", use_bias=False), L.ReLU(), L.Flatten(),
                              L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("build, shape", [
    (separable_conv, (4, 4, 1)), (lambda: separable_conv(regularized=True), (4, 4, 1)), (separable_1d, (8, 2)),
], ids=["2d", "2d-regularized", "1d"])
def test_separable_convolutions_train_like_fit(build, shape, tmp_path):
    assert_trains_like_fit(build, shape=shape, tmp_path=tmp_path, atol=1e-5)


def normalized_input_mlp():
    """A Normalization adapted to data far from zero mean and unit variance, then a Rescaling, at the input."""
    L = keras.layers
    norm = L.Normalization()
    norm.adapt(np.random.default_rng(5).normal(2.0, 3.0, (64, FEATURES)).astype("float32"))
    model = keras.Sequential([keras.Input((FEATURES,)), norm, L.Rescaling(0.5, offset=0.25),
                              L.Dense(8, activation="relu"), L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def rescaled_cnn():
    """Images scaled to [0, 1] first (Rescaling(1/255)), as image models usually start, then a Conv block."""
    L = keras.layers
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Rescaling(1 / 255), L.Conv2D(3, 2, activation="relu"),
                              L.MaxPooling2D(), L.Flatten(), L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def reshaped_sequence_cnn():
    """Flat features read as a sequence of 8 steps of 2 channels (Reshape), scaled first, then a Conv1D block."""
    L = keras.layers
    model = keras.Sequential([keras.Input((FEATURES,)), L.Rescaling(0.5), L.Reshape((8, 2)),
                              L.Conv1D(3, 3, activation="relu"), L.MaxPooling1D(2), L.Conv1D(4, 2, activation="tanh"),
                              L.Flatten(), L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def reshaped_image_cnn():
    """Flat pixels read as a 4x4 image (Reshape to (4, 4, 1)), as flat image datasets are given, then a Conv2D."""
    L = keras.layers
    model = keras.Sequential([keras.Input((FEATURES,)), L.Reshape((4, 4, 1)), L.Conv2D(3, 2, activation="relu"),
                              L.Flatten(), L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("build, shape, scale", [(normalized_input_mlp, (FEATURES,), 1.0),
                                                 (rescaled_cnn, (4, 4, 1), 255.0),
                                                 (reshaped_sequence_cnn, (FEATURES,), 1.0),
                                                 (reshaped_image_cnn, (FEATURES,), 1.0)],
                         ids=["normalization", "rescaling", "reshape-sequence", "reshape-image"])
def test_preprocessing_layers_at_the_input_train_like_fit(build, shape, scale, tmp_path):
    # the Rescaling case's images as values of the size it divides by 255
    assert_trains_like_fit(build, shape=shape, tmp_path=tmp_path, atol=1e-5, scale=scale)


def test_a_normalization_inside_the_model_is_named():
    L = keras.layers
    model = keras.Sequential([keras.Input((FEATURES,)), L.Dense(8, activation="relu"), L.Rescaling(2.0),
                              L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    reason = BatchedEvaluator(Objective("val_loss", "min")).supports([Job(model, True, "")], {"epochs": 1})
    assert reason is not None and "other than at the model's input" in reason, reason


def test_a_reshape_between_layers_is_named():
    L = keras.layers
    model = keras.Sequential([keras.Input((FEATURES,)), L.Dense(8, activation="relu"), L.Reshape((4, 2)),
                              L.Conv1D(3, 2, activation="relu"), L.Flatten(), L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    reason = BatchedEvaluator(Objective("val_loss", "min")).supports([Job(model, True, "")], {"epochs": 1})
    assert reason is not None and "Reshape" in reason and "other than at the model's input" in reason, reason


def test_a_prelu_shared_over_channels_is_named():
    L = keras.layers
    model = keras.Sequential([keras.Input((4, 4, 1)), L.Conv2D(5, 2), L.PReLU(shared_axes=[3]), L.Flatten(),
                              L.Dense(CLASSES, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    reason = BatchedEvaluator(Objective("val_loss", "min")).supports([Job(model, True, "")], {"epochs": 1})
    assert reason is not None and "shared by every channel" in reason, reason


def test_a_layer_normalization_beside_an_empty_slot_trains_like_fit(tmp_path):
    """Three candidates in groups of two slots: the last group's empty slot has no channels to normalise over (its
    mask is all zero); every candidate ends with the weights model.fit gives it."""
    x, y = data("ids")
    validation = data("ids", seed=1)
    keras.utils.set_random_seed(0)
    base = layer_normalized("dense")
    reference = keras.models.clone_model(base)
    reference.set_weights(base.get_weights())
    reference.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    fit = {"epochs": 2, "batch_size": 16, "validation_data": validation, "verbose": 0, "shuffle": False}
    reference.fit(x, y, **fit)
    candidates = [keras.models.clone_model(base) for _ in range(3)]
    jobs = []
    for i, candidate in enumerate(candidates):
        candidate.set_weights(base.get_weights())
        candidate.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        jobs.append(Job(candidate, True, str(tmp_path / f"c{i}.weights.h5")))
    evaluator = BatchedEvaluator(Objective("val_loss", "min"), epoch_score="last", workers=2)
    results = evaluator.evaluate(jobs, (x, y), fit)
    assert evaluator._calls == 1 and evaluator._slots == 2
    for candidate, result in zip(candidates, results):
        assert np.isfinite(result["val_loss"])
        for got, want in zip(candidate.get_weights(), reference.get_weights()):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("epoch_score", ["best", "best_latest"])
def test_an_optimizer_with_ema_trains_batched_as_the_keras_evaluator_keeps_its_epoch(epoch_score, tmp_path):
    # Keras overwrites the weights with their moving average only when fit ends: the epoch kept, saved at its end,
    # never sees it, so the batched path trains as without it
    from keras_grs.evaluate import KerasEvaluator

    x, y = data("ids")
    validation = data("ids", seed=1)
    keras.utils.set_random_seed(0)
    reference = mlp(optimizer=keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.5))
    candidate = mlp(optimizer=keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.5))
    candidate.set_weights(reference.get_weights())
    averaged = mlp(optimizer=keras.optimizers.Adam(0.01, use_ema=True, ema_momentum=0.5))
    averaged.set_weights(reference.get_weights())
    fit = {"epochs": 4, "batch_size": 16, "validation_data": validation, "verbose": 0, "shuffle": False}
    averaged.fit(x, y, **fit)  # ends with the moving average: not the weights of any epoch
    objective = Objective("val_loss", "min")
    want = KerasEvaluator(objective, epoch_score=epoch_score).evaluate(
        [Job(reference, True, str(tmp_path / "keras.weights.h5"))], (x, y), fit)[0]
    evaluator = BatchedEvaluator(objective, epoch_score=epoch_score)
    got = evaluator.evaluate([Job(candidate, True, str(tmp_path / "batched.weights.h5"))], (x, y), fit)[0]
    assert evaluator._calls == 1
    for a, b in zip(candidate.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-4)
    assert max(np.abs(a - b).max() for a, b in zip(averaged.get_weights(), reference.get_weights())) > 1e-3
    # the last epoch's weights would be the moving average: named, trained one fit per candidate
    reason = BatchedEvaluator(objective, epoch_score="last").supports([Job(candidate, True, "")], fit)
    assert "use_ema and epoch_score='last'" in reason
