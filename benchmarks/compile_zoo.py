"""Which evaluator path the ways users compile a model take: batched, or one fit per candidate and why.

One small classifier (or regressor) compiled in the ways Keras users write ``model.compile``: the optimizers Keras
ships (with clipping, a schedule), the classification and regression losses, accuracy metrics named explicitly, AUC,
precision and F1, each searched on the objective such a user would name. For each: what
``BatchedEvaluator.supports`` answers, nothing (trained batched) or the reason it falls back. No training.

    python benchmarks/compile_zoo.py

Writes benchmarks/results/compile_zoo.md.
"""

from __future__ import annotations

from common import machine, write

import keras
from keras_tuner import Objective

from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator

L = keras.layers
SPARSE = "sparse_categorical_crossentropy"


def setups():
    """(what, output units, output activation, compile arguments, objective) per way of compiling."""
    optimizers = keras.optimizers
    classify = [
        ("Adam, sparse cross-entropy, accuracy", 3, "softmax", {}, "val_accuracy"),
        ("objective val_loss", 3, "softmax", {}, "val_loss"),
        ("SGD, momentum, Nesterov", 3, "softmax", dict(optimizer=optimizers.SGD(0.1, 0.9, nesterov=True)), None),
        ("RMSprop", 3, "softmax", dict(optimizer="rmsprop"), None),
        ("AdamW", 3, "softmax", dict(optimizer="adamw"), None),
        ("Adam, cosine-decay schedule", 3, "softmax",
         dict(optimizer=optimizers.Adam(optimizers.schedules.CosineDecay(1e-3, 1000))), None),
        ("Adagrad", 3, "softmax", dict(optimizer="adagrad"), None),
        ("Adamax", 3, "softmax", dict(optimizer="adamax"), None),
        ("Nadam", 3, "softmax", dict(optimizer="nadam"), None),
        ("Lion", 3, "softmax", dict(optimizer="lion"), None),
        ("Adam with clipnorm", 3, "softmax", dict(optimizer=optimizers.Adam(clipnorm=1.0)), None),
        ("SGD with global_clipnorm", 3, "softmax", dict(optimizer=optimizers.SGD(global_clipnorm=1.0)), None),
        ("Ftrl", 3, "softmax", dict(optimizer="ftrl"), None),
        ("Adam with use_ema", 3, "softmax", dict(optimizer=optimizers.Adam(use_ema=True)), None),
        ("metric sparse_categorical_accuracy", 3, "softmax", dict(metrics=["sparse_categorical_accuracy"]),
         "val_sparse_categorical_accuracy"),
        ("one-hot, CategoricalAccuracy(name='acc')", 3, "softmax",
         dict(loss="categorical_crossentropy", metrics=[keras.metrics.CategoricalAccuracy(name="acc")]), "val_acc"),
        ("one-hot, label smoothing", 3, "softmax",
         dict(loss=keras.losses.CategoricalCrossentropy(label_smoothing=0.1)), None),
        ("sigmoid, binary cross-entropy", 1, "sigmoid", dict(loss="binary_crossentropy"), None),
        ("sigmoid, metric binary_accuracy", 1, "sigmoid",
         dict(loss="binary_crossentropy", metrics=["binary_accuracy"]), "val_binary_accuracy"),
        ("multi-label, BinaryAccuracy(threshold=0.4)", 3, "sigmoid",
         dict(loss="binary_crossentropy", metrics=[keras.metrics.BinaryAccuracy(threshold=0.4)]),
         "val_binary_accuracy"),
        ("sigmoid, AUC objective", 1, "sigmoid", dict(loss="binary_crossentropy", metrics=[keras.metrics.AUC()]),
         "val_auc"),
        ("binary focal cross-entropy", 1, "sigmoid",
         dict(loss=keras.losses.BinaryFocalCrossentropy(apply_class_balancing=True)), None),
        ("categorical focal cross-entropy", 3, "softmax", dict(loss="categorical_focal_crossentropy"), None),
        ("from_logits on a linear output", 3, None, dict(loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True)), None),
        ("Kullback-Leibler divergence", 3, "softmax", dict(loss="kl_divergence"), None),
        ("categorical hinge", 3, "softmax", dict(loss="categorical_hinge"), None),
        ("sigmoid, Precision objective", 1, "sigmoid",
         dict(loss="binary_crossentropy", metrics=[keras.metrics.Precision(name="precision")]), "val_precision"),
        ("F1 objective", 3, "softmax",
         dict(loss="categorical_crossentropy", metrics=[keras.metrics.F1Score(average="macro", name="f1")]),
         "val_f1"),
    ]
    regress = [(f"regression, {name}", 2, activation, dict(loss=loss, metrics=metrics), objective)
               for name, activation, loss, metrics, objective in [
                   ("mean squared error", None, "mse", [], "val_loss"),
                   ("mean absolute error, metric objective", None, "mse", ["mae"], "val_mae"),
                   ("Huber", None, keras.losses.Huber(0.5), [], "val_loss"),
                   ("log-cosh", None, "log_cosh", [], "val_loss"),
                   ("mean squared logarithmic error", "softplus", "msle", [], "val_loss"),
                   ("mean absolute percentage error", "softplus", "mape", [], "val_loss"),
                   ("Poisson (counts)", "exponential", "poisson", [], "val_loss"),
               ]]
    return classify + regress


def main():
    rows, batched = [], 0
    for what, units, activation, arguments, objective in setups():
        model = keras.Sequential([keras.Input((16,)), L.Dense(12, activation="relu"), L.Dense(6, activation="relu"),
                                  L.Dense(units, activation=activation)])
        arguments = {"optimizer": "adam", "loss": SPARSE, "metrics": ["accuracy"], **arguments}
        model.compile(**arguments)
        name = objective or "val_accuracy"
        evaluator = BatchedEvaluator(Objective(name, "min" if name in ("val_loss", "val_mae") else "max"))
        reason = evaluator.supports([Job(model, True, "")], {"epochs": 1})
        batched += reason is None
        rows.append(f"| {what} | `{name}` | " + ("**batched** |" if reason is None else
                                                 f"one fit per candidate: {reason} |"))
    write("compile_zoo.md", [
        "# The ways users compile a model: which evaluator path each takes",
        "",
        f"Machine: {machine()}.",
        "",
        "A 16-input MLP (12 and 6 ReLU units) compiled each way; `BatchedEvaluator.supports` for a search on the "
        "objective shown (`benchmarks/compile_zoo.py`; no training). Defaults: Adam, sparse categorical "
        "cross-entropy on a softmax output, `\"accuracy\"`.",
        "",
        f"**{batched} of {len(rows)} train batched.**",
        "",
        "| compiled with | objective | search trains |",
        "|---|---|---|",
        *rows,
    ])


if __name__ == "__main__":
    main()
