"""Which evaluator path the models users bring take: batched, or one fit per candidate and why.

The models embedded users typically train, written as their sources write them (the keyword-spotting DS-CNN,
ResNet-8 and anomaly-detection autoencoder of embedded benchmarks, keras.applications' MobileNet, MobileNetV2 and
EfficientNetB0, a human-activity 1-D CNN, LSTM and GRU sequence models, small models with PReLU and
LayerNormalization, a one-hot CNN with a precision metric, a 1-D CNN with a sigmoid output), each compiled as such a
model is. For each: its parameters, whether keras-grs can prune it (``analyze``), and what
``BatchedEvaluator.supports`` answers for a search on ``val_accuracy`` (``val_loss`` for the autoencoder): nothing
(trained batched) or the reason it falls back. No training: the answer is read from the model alone.

    python benchmarks/model_zoo.py

Writes benchmarks/results/model_zoo.md.
"""

from __future__ import annotations

import warnings

from common import machine, write

import keras
from keras_tuner import Objective

import keras_grs
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator

L = keras.layers


def compiled(model, loss="sparse_categorical_crossentropy", metrics=("accuracy",)):
    model.compile(optimizer="adam", loss=loss, metrics=list(metrics))
    return model


def ds_cnn():
    x = inputs = keras.Input((49, 10, 1))
    x = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, (10, 4), strides=(2, 2), padding="same")(x)))
    for _ in range(4):
        x = L.ReLU()(L.BatchNormalization()(L.DepthwiseConv2D(3, padding="same")(x)))
        x = L.ReLU()(L.BatchNormalization()(L.Conv2D(64, 1)(x)))
    x = L.Flatten()(L.AveragePooling2D((25, 5))(x))
    return compiled(keras.Model(inputs, L.Dense(12, activation="softmax")(x)))


def resnet8():
    x = inputs = keras.Input((32, 32, 3))
    x = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(16, 3, padding="same")(x)))
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        y = L.Activation("relu")(L.BatchNormalization()(L.Conv2D(filters, 3, strides=stride, padding="same")(x)))
        y = L.BatchNormalization()(L.Conv2D(filters, 3, padding="same")(y))
        if stride > 1:
            x = L.Conv2D(filters, 1, strides=stride)(x)
        x = L.Activation("relu")(L.Add()([x, y]))
    x = L.Flatten()(L.AveragePooling2D(8)(x))
    return compiled(keras.Model(inputs, L.Dense(10, activation="softmax")(x)))


def anomaly_autoencoder():
    x = inputs = keras.Input((640,))
    for units in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = L.Activation("relu")(L.BatchNormalization()(L.Dense(units)(x)))
    return compiled(keras.Model(inputs, L.Dense(640)(x)), "mse", ())


def sequential(shape, *layers, loss="sparse_categorical_crossentropy", metrics=("accuracy",)):
    return compiled(keras.Sequential([keras.Input(shape), *layers]), loss, metrics)


MODELS = {
    "DS-CNN (keyword spotting)": ds_cnn,
    "ResNet-8 (image classification)": resnet8,
    "dense autoencoder (anomaly detection, MSE)": anomaly_autoencoder,
    "keras.applications MobileNet 0.25 (visual wake words)":
        lambda: compiled(keras.applications.MobileNet((96, 96, 3), alpha=0.25, weights=None, classes=2)),
    "keras.applications MobileNetV2 0.35":
        lambda: compiled(keras.applications.MobileNetV2((96, 96, 3), alpha=0.35, weights=None, classes=2)),
    "keras.applications EfficientNetB0":
        lambda: compiled(keras.applications.EfficientNetB0(input_shape=(64, 64, 3), weights=None, classes=3)),
    "1-D CNN (activity recognition)": lambda: sequential(
        (128, 9), L.Conv1D(64, 3, activation="relu"), L.Conv1D(64, 3, activation="relu"), L.Dropout(0.5),
        L.MaxPooling1D(2), L.Flatten(), L.Dense(100, activation="relu"), L.Dense(6, activation="softmax")),
    "1-D CNN, sigmoid output": lambda: sequential(
        (100, 3), L.Conv1D(16, 5, activation="relu", padding="same"), L.BatchNormalization(), L.MaxPooling1D(2),
        L.Conv1D(32, 5, activation="relu"), L.GlobalAveragePooling1D(), L.Dense(1, activation="sigmoid"),
        loss="binary_crossentropy"),
    "CNN, one-hot labels, precision metric": lambda: sequential(
        (28, 28, 1), L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(), L.Conv2D(16, 3, activation="relu"),
        L.GlobalMaxPooling2D(), L.Dense(10, activation="softmax"), loss="categorical_crossentropy",
        metrics=("accuracy", keras.metrics.Precision())),
    "CNN with PReLU": lambda: sequential(
        (12, 12, 1), L.Conv2D(16, 3), L.PReLU(shared_axes=[1, 2]), L.MaxPooling2D(), L.Conv2D(32, 3),
        L.PReLU(shared_axes=[1, 2]), L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")),
    "MLP with LayerNormalization and GELU": lambda: sequential(
        (64,), L.Dense(64), L.LayerNormalization(), L.Activation("gelu"), L.Dense(32, activation="gelu"),
        L.Dense(5, activation="softmax")),
    "LSTM (sequences)": lambda: sequential(
        (128, 9), L.LSTM(32), L.Dense(16, activation="relu"), L.Dense(6, activation="softmax")),
    "GRU (sequences)": lambda: sequential((50, 3), L.GRU(16), L.Dense(2, activation="softmax")),
}


def main():
    rows = []
    for name, build in MODELS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build()
        try:
            groups = len(keras_grs.analyze(model).groups)
            prunable = f"yes ({groups} width group{'s' * (groups != 1)})"
        except keras_grs.UnsupportedLayerError as error:
            prunable = f"no: {error}".split(" (")[0]
        objective = Objective("val_loss", "min") if model.loss == "mse" else Objective("val_accuracy", "max")
        reason = BatchedEvaluator(objective).supports([Job(model, True, "")], {"epochs": 1})
        path = "**batched**" if reason is None else f"one fit per candidate: {reason.split(' (this accepts')[0]}"
        rows.append(f"| {name} | {model.count_params():,} | {prunable} | {path} |")
        print(rows[-1], flush=True)
    write("model_zoo.md", [
        "# The models users bring: which evaluator path each takes", "",
        f"Machine: {machine()}.", "",
        "Each model built as its source writes it and compiled as such a model is; `keras_grs.analyze` says whether it "
        "can be pruned, `BatchedEvaluator.supports` which path its search trains on (`benchmarks/model_zoo.py`; no "
        "training).", "",
        "| model | params | prunable | search trains |",
        "|---|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
