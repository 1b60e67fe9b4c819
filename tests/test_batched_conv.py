"""The batched evaluator's fast convolution path computes what the plain path computes.

A model that starts with a convolution trains on its first layer's patches, taken once per fit and ordered window by
window when a max pooling follows; a max pooling after a Dense/Conv layer runs before its bias, activation and mask.
Dropout masks are drawn per candidate from (its seed, the layer, the mini-batch)."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_tuner import Objective

import keras_grs
from keras_grs import models
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator, _dropout_keep, _forward_function, _input_patches, _plan

from helpers import randomize


def packed_cnn(shape=(9, 9, 1)):
    """Three cnn1 candidates of different widths, stacked as the evaluator trains them, and its plan."""
    base = models.build("cnn1", shape)
    randomize(base, np.random.default_rng(4))
    removals = [{"conv1": [0, 3]}, {"conv2": [1], "dense1": [2, 5]}, {}]
    jobs = [Job(keras_grs.shrink(base, r), True, "") for r in removals]
    evaluator = BatchedEvaluator(Objective("val_accuracy", "max"), workers=1)  # one group: all in one stack
    plan = _plan(jobs[0].model)
    params, masks = evaluator._pack(evaluator._widen(jobs), plan, shape[-1])
    return plan, params, masks, evaluator._slots


@pytest.mark.parametrize("shared", [True, False])
def test_precomputed_first_layer_patches_give_the_plain_paths_outputs_and_gradients(shared):
    plan, params, masks, k = packed_cnn()
    forward = _forward_function(plan.ops, k)
    x = np.random.default_rng(0).normal(size=(7, 9, 9, 1)).astype("float32")
    patches = _input_patches(plan.ops, x)
    assert patches.shape == (7, 4, 4, 4, 4)  # samples, 2x2 pooling windows, the 4x4 pooled positions, 2x2 pixels
    if not shared:  # each candidate its own batch, as in shuffled training
        x, patches = np.stack([np.roll(x, j, axis=0) for j in range(k)]), tf.stack(
            [tf.roll(patches, j, axis=0) for j in range(k)])
    seed = (tf.constant([3, 5, 8][:k]), tf.constant(2))
    results = []
    for inputs, patched in ((tf.constant(x), False), (patches, True)):
        with tf.GradientTape() as tape:
            tape.watch(params)
            logits = forward(params, masks, inputs, seed, shared, patched)
            loss = tf.reduce_sum(tf.nn.log_softmax(logits)[..., 0])
        results.append((logits.numpy(), [g.numpy() for g in tape.gradient(loss, params)]))
    (plain, plain_gradients), (fast, fast_gradients) = results
    np.testing.assert_allclose(fast, plain, rtol=1e-5, atol=1e-5)
    for got, want in zip(fast_gradients, plain_gradients):
        assert np.abs(want).max() > 0  # every weight learns something here
        # float32 sums of terms as large as the largest gradient: their rounding is absolute, about 1e-7 of it
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


def test_a_model_without_a_leading_convolution_trains_on_its_samples():
    plan = _plan(models.build("nn1", (10,)))
    assert _input_patches(plan.ops, np.zeros((3, 10), "float32")) is None


def test_pooling_before_the_bias_matches_keras_max_pooling_after_the_activation():
    model = keras.Sequential([keras.Input((7, 7, 2)), keras.layers.Conv2D(3, 2, activation="tanh", name="c"),
                              keras.layers.MaxPooling2D(3), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    randomize(model, np.random.default_rng(1))
    plan = _plan(model)
    evaluator = BatchedEvaluator(Objective("val_accuracy", "max"))
    jobs = [Job(model, True, "")]
    params, masks = evaluator._pack(evaluator._widen(jobs), plan, 2)
    x = np.random.default_rng(2).normal(size=(5, 7, 7, 2)).astype("float32")
    forward = _forward_function(plan.ops, evaluator._slots)
    np.testing.assert_allclose(forward(params, masks, tf.constant(x), None)[0].numpy(), model.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(forward(params, masks, _input_patches(plan.ops, x), None, patched=True)[0].numpy(),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dropout, whole", [
    (keras.layers.SpatialDropout2D, "channel"), (keras.layers.Dropout, "value"),
    (lambda rate: keras.layers.Dropout(rate, noise_shape=(None, 1, 1, 8)), "channel"),  # a SpatialDropout written out
    (lambda rate: keras.layers.Dropout(rate, noise_shape=(None, 3, 3, 8)), "value"),  # the whole mask, stated
    (lambda rate: keras.layers.Dropout(rate, noise_shape=(None, 1, 1, 1)), "sample"),  # stochastic depth
], ids=["spatial", "dropout", "noise-shape-per-channel", "noise-shape-whole", "noise-shape-per-sample"])
def test_spatial_dropout_drops_a_samples_channel_at_every_position(dropout, whole):
    # the Dense reads the dropout's output as it is (identity kernel, no bias): the logits are that output
    L = keras.layers
    model = keras.Sequential([keras.Input((3, 3, 1)), L.Conv2D(8, 2, padding="same", name="c"), dropout(0.5),
                              L.Flatten(), L.Dense(72, use_bias=False, name="d")])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    randomize(model, np.random.default_rng(1))
    model.get_layer("d").set_weights([np.eye(72, dtype="float32")])
    plan = _plan(model)
    evaluator = BatchedEvaluator(Objective("val_accuracy", "max"), workers=1)  # both in one stack
    jobs = [Job(model, True, ""), Job(keras_grs.shrink(model, {}), True, "")]
    params, masks = evaluator._pack(evaluator._widen(jobs), plan, 1)
    forward = _forward_function(plan.ops, evaluator._slots)
    x = tf.constant(np.random.default_rng(2).normal(size=(64, 3, 3, 1)).astype("float32"))
    plain = forward(params, masks, x, None).numpy().reshape(-1, 64, 3, 3, 8)[:2]
    dropped = forward(params, masks, x, (tf.constant([3, 4]), tf.constant(0))).numpy().reshape(-1, 64, 3, 3, 8)[:2]
    kept = np.isclose(dropped, plain * 2, rtol=1e-5, atol=1e-6)
    assert (kept | (dropped == 0)).all()
    # per candidate and sample (and channel, unless a sample is dropped whole): the share of its values kept
    share = kept.mean(axis=(2, 3, 4) if whole == "sample" else (2, 3))
    if whole != "value":
        assert set(np.unique(share)) == {0.0, 1.0} and abs(share.mean() - 0.5) < (0.2 if whole == "sample" else 0.08)
        assert (share[0] != share[1]).mean() > 0.3  # each candidate its own draw
    else:
        assert ((share > 0) & (share < 1)).mean() > 0.5


def test_a_dropout_noise_shape_the_batched_path_cannot_draw_is_named():
    L = keras.layers
    model = keras.Sequential([keras.Input((6, 2)), L.Conv1D(4, 2), L.Dropout(0.2, noise_shape=(None, 5, 1)),
                              L.Flatten(), L.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    reason = BatchedEvaluator(Objective("val_accuracy", "max")).supports([Job(model, True, "")], {"epochs": 1})
    assert reason is not None and "noise_shape=(None, 5, 1)" in reason, reason


@pytest.mark.parametrize("noise", ["additive", "multiplicative"])
def test_gaussian_noise_layers_draw_as_keras_describes_and_keep_padded_units_zero(noise):
    # the Dense after the noise reads it as it is (identity kernel, no bias): the logits are the noisy units
    L = keras.layers
    layer = L.GaussianNoise(0.5) if noise == "additive" else L.GaussianDropout(0.3)
    model = keras.Sequential([keras.Input((6,)), L.Dense(40, name="h"), layer, L.Dense(40, use_bias=False, name="d")])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    randomize(model, np.random.default_rng(1))
    model.get_layer("d").set_weights([np.eye(40, dtype="float32")])
    plan = _plan(model)
    evaluator = BatchedEvaluator(Objective("val_accuracy", "max"), workers=1)  # both in one stack
    narrower = keras_grs.shrink(model, {"h": list(range(10))})  # 30 units, padded to 40
    jobs = [Job(model, True, ""), Job(narrower, True, "")]
    params, masks = evaluator._pack(evaluator._widen(jobs), plan, 6)
    forward = _forward_function(plan.ops, evaluator._slots)
    x = tf.constant(np.random.default_rng(2).normal(size=(500, 6)).astype("float32"))
    seed = (tf.constant([3, 4]), tf.constant(0))
    plain = forward(params, masks, x, None).numpy()[:2]
    with tf.GradientTape() as tape:
        tape.watch(params)
        logits = forward(params, masks, x, seed)
        total = tf.reduce_sum(logits[:2])
    noisy = logits.numpy()[:2]
    # the narrower candidate's padded units (rows 30-39 of the next kernel) take no gradient: they stayed zero
    assert not tf.reduce_any(tape.gradient(total, params)[2][1, 30:] != 0)
    units = [(noisy[0] - plain[0], noisy[0] / plain[0]), (noisy[1, :, 10:] - plain[1, :, 10:],
                                                          noisy[1, :, 10:] / plain[1, :, 10:])]
    drawn = np.concatenate([u[0 if noise == "additive" else 1].ravel() for u in units])
    if noise == "additive":
        assert abs(drawn.mean()) < 0.02 and abs(drawn.std() - 0.5) < 0.02
    else:
        assert abs(drawn.mean() - 1) < 0.02 and abs(drawn.std() - np.sqrt(0.3 / 0.7)) < 0.02
    assert np.corrcoef(units[0][0][:, 10:].ravel(), units[1][0].ravel())[0, 1] < 0.1  # each its own draw


def test_dropout_masks_keep_the_share_asked_and_differ_by_candidate_batch_and_layer():
    seeds = tf.constant([11, 12, 13])
    keep = _dropout_keep((3, 32, 4, 4, 16), seeds, tf.constant(0), 3, 0.25).numpy()
    assert abs(keep.mean() - 0.75) < 0.01
    assert abs(keep[..., 0].mean() - keep[..., 15].mean()) < 0.05  # every unit alike
    assert (keep[0] != keep[1]).mean() > 0.3  # candidates draw their own masks
    assert (keep != _dropout_keep((3, 32, 4, 4, 16), seeds, tf.constant(1), 3, 0.25).numpy()).mean() > 0.3
    assert (keep != _dropout_keep((3, 32, 4, 4, 16), seeds, tf.constant(0), 4, 0.25).numpy()).mean() > 0.3
    wider = _dropout_keep((3, 32, 4, 4, 20), seeds, tf.constant(0), 3, 0.25).numpy()
    np.testing.assert_array_equal(wider[..., :16], keep)  # padding only adds units: the real units' masks stay


def test_patches_too_large_to_keep_are_taken_per_batch_and_train_alike(tmp_path, monkeypatch):
    from keras_grs.evaluate import batched

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(40, 9, 9, 1)).astype("float32"), rng.integers(0, 2, 40)
    keras.utils.set_random_seed(2)
    start = models.build("cnn1", (9, 9, 1)).get_weights()
    fit = {"epochs": 2, "batch_size": 16, "validation_data": (x[:10], y[:10])}
    trained = []
    for limit in (batched.PATCH_BYTES, 0):
        monkeypatch.setattr(batched, "PATCH_BYTES", limit)
        model = models.build("cnn1", (9, 9, 1))
        model.set_weights(start)
        evaluator = BatchedEvaluator(Objective("val_accuracy", "max"), epoch_score="last")
        evaluator.evaluate([Job(model, True, str(tmp_path / f"{limit}.weights.h5"), key="a")], (x, y), fit)
        assert evaluator._calls == 1 and (_input_patches(_plan(model).ops, x) is None) == (limit == 0)
        trained.append(model.get_weights())
    for patched, plain, initial in zip(*trained, start):
        assert np.abs(plain - initial).max() > 1e-4  # trained
        np.testing.assert_allclose(patched, plain, rtol=1e-3, atol=1e-5)
