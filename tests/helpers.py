"""Shared test helpers: random models of the supported layers, a reference for removals, a quicker long fit."""

import math

import keras
import numpy as np

import keras_grs


def randomize(model, rng):
    """Give every weight random values (BatchNormalization variances positive) so that copies are really tested."""
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if isinstance(layer, keras.layers.BatchNormalization):
            new = [rng.normal(size=w.shape).astype(w.dtype) for w in weights]
            new[-1] = rng.uniform(0.5, 2.0, size=weights[-1].shape).astype(weights[-1].dtype)
        else:
            new = [rng.normal(scale=0.5, size=w.shape).astype(w.dtype) for w in weights]
        layer.set_weights(new)


def silenced(model, remove):
    """A copy of ``model`` whose removed units output exactly zero: kernel slice and bias zeroed (and the
    following BatchNormalization's beta and moving mean, so that the normalized value is zero too)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    chain = keras_grs.structure.layer_chain(copy)
    for name, units in remove.items():
        units = list(units)
        position = next(i for i, layer in enumerate(chain) if layer.name == name)
        layer = chain[position]
        weights = layer.get_weights()
        weights[0][..., units] = 0.0
        for w in weights[1:]:
            w[units] = 0.0
        layer.set_weights(weights)
        for follower in chain[position + 1 :]:
            if isinstance(follower, keras_grs.structure.WIDTH_LAYERS):
                break
            if isinstance(follower, keras.layers.BatchNormalization):
                names = [v.path.split("/")[-1] for v in follower.weights]
                weights = follower.get_weights()
                for label, w in zip(names, weights):
                    if label in ("beta", "moving_mean"):
                        w[units] = 0.0
                follower.set_weights(weights)
    return copy


def tiny_npz(directory):
    """A small run data file (20 simulated neurons, 200 frames; train and validation) for CLI tests."""
    from keras_grs import datasets

    x, y = datasets.calcium(n_neurons=20, n_frames=200, seed=0)
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.25, test=0.0)
    path = directory / "data.npz"
    np.savez(path, x_train=xt, y_train=yt, x_val=xv, y_val=yv)
    return path


def fit_epochs_whole(model, x, y, batch_size=32, **fit):
    """``model.fit`` with each epoch's training steps run as one TensorFlow call (``steps_per_execution``).

    The same batches, updates and history as a plain fit (the weights are bitwise equal): only the round trip per
    step goes, a large part of a long fit of a small model over many batches. Over a few batches per epoch the
    extra tracing costs more than it saves.
    """
    config = model.get_compile_config()
    config["steps_per_execution"] = math.ceil(len(x) / batch_size)
    model.compile_from_config(config)
    return model.fit(x, y, batch_size=batch_size, **fit)


def tiny_classifier(second: int = 4):
    """A seeded, compiled 12-input MLP with two hidden width groups (6 and ``second`` units) and a Dropout: the
    smallest model a batched search prunes."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(6, activation="relu", name="hidden"),
                              keras.layers.Dropout(0.2), keras.layers.Dense(second, activation="relu", name="second"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def residual_cnn(shape=(5, 6, 1), classes=2):
    """Two Conv/BatchNormalization blocks joined by a residual Add (one width group), global pooling, the output."""
    L = keras.layers
    inputs = keras.Input(shape)
    stem = L.ReLU()(L.BatchNormalization()(L.Conv2D(6, 2, padding="same", use_bias=False, name="stem")(inputs)))
    h = L.BatchNormalization()(L.Conv2D(6, 3, padding="same", use_bias=False, name="inner")(stem))
    h = L.ReLU()(L.Add(name="residual")([stem, h]))
    h = L.Conv2D(4, 1, activation="relu", name="head")(h)
    model = keras.Model(inputs, L.Dense(classes, activation="softmax")(L.GlobalAveragePooling2D()(h)),
                        name="residual")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def concat_mlp(features=30, classes=2):
    """Two Dense branches side by side (Concatenate), one with BatchNormalization, then a Dense and the output."""
    L = keras.layers
    inputs = keras.Input((features,))
    a = L.ReLU()(L.BatchNormalization()(L.Dense(6, name="left")(inputs)))
    b = L.Dense(5, activation="relu", name="right")(inputs)
    h = L.Dropout(0.2)(L.Dense(4, activation="relu", name="joined")(L.Concatenate()([a, b])))
    model = keras.Model(inputs, L.Dense(classes, activation="softmax")(h), name="concatenated")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def separable_cnn(shape=(6, 6, 1), classes=2):
    """A Conv, a SeparableConv2D with BatchNormalization, global pooling, the output."""
    L = keras.layers
    model = keras.Sequential([keras.Input(shape), L.Conv2D(4, 2, activation="relu", name="first"),
                              L.SeparableConv2D(5, 3, padding="same", name="sep"), L.BatchNormalization(),
                              L.ReLU(), L.GlobalAveragePooling2D(), L.Dense(classes, activation="softmax")],
                             name="separable")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def batched_trials(tuner, *fit_args, trials, **fit_kwargs):
    """Run ``tuner.search`` with warnings as errors (so no fallback to one fit per trial), check the batched
    evaluator trained and ``trials`` trials completed; return them in the order they started."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        tuner.search(*fit_args, **fit_kwargs)
    assert tuner.evaluator._calls >= 1
    found = [tuner.oracle.get_trial(t) for t in tuner.oracle.start_order]
    assert len(found) == trials and all(t.status == "COMPLETED" for t in found)
    return found


def recurrent_stack():
    """A GRU returning every step's state, an LSTM reading it backwards, a SimpleRNN and the output: the three cells'
    gate layouts, one after another."""
    L = keras.layers
    model = keras.Sequential([keras.Input((6, 3)), L.GRU(6, return_sequences=True, name="gru"),
                              L.LSTM(5, return_sequences=True, go_backwards=True, name="lstm"),
                              L.SimpleRNN(4, name="simple"), L.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model
