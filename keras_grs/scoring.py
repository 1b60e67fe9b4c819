"""Scores of a model on data: accuracy straight from the outputs (no compile needed), or any objective."""

from __future__ import annotations

import keras
import numpy as np


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """The model's outputs in inference mode, by large batches, without ``predict``'s per-call overhead."""
    outputs = [
        keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False)) for i in range(0, len(x), batch_size)
    ]
    return np.concatenate(outputs) if outputs else np.zeros((0,))


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of samples whose predicted class is the label.

    Labels may be integers, one-hot rows, or 0/1 for a single sigmoid output.

    Example:
        >>> import numpy as np, keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
        >>> model.set_weights([np.eye(2, dtype="float32")])
        >>> accuracy(model, np.array([[1.0, 0.0], [0.0, 1.0]], "float32"), np.array([0, 0]))
        0.5
    """
    right = correct(model, x, y)
    return float(np.mean(right)) if len(right) else float("nan")


def correct(model: keras.Model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which samples the model classifies right (booleans, one per sample): what :func:`accuracy` averages.

    Example:
        >>> import numpy as np, keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
        >>> model.set_weights([np.eye(2, dtype="float32")])
        >>> correct(model, np.array([[1.0, 0.0], [0.0, 1.0]], "float32"), np.array([0, 0])).tolist()
        [True, False]
    """
    out = predict(model, x)
    y = np.asarray(y)
    if out.ndim == 2 and out.shape[1] == 1:
        predicted = (out[:, 0] > 0.5).astype(int)
    else:
        predicted = out.reshape(len(out), -1).argmax(axis=1)
    labels = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y))
    return predicted == labels


def is_accuracy(objective) -> bool:
    """Is the objective plain accuracy (the one score computed per sample, straight from the outputs)?"""
    return objective_name(objective) in ("accuracy", "acc")


def objective_name(objective) -> str:
    """The metric an objective reads, without the ``val_`` prefix: ``val_accuracy`` -> ``accuracy``."""
    name = getattr(objective, "name", objective)
    if not isinstance(name, str) or not name:
        raise ValueError(f"an objective is a metric name such as 'val_accuracy', got {objective!r}")
    return name.removeprefix("val_")


def objective_direction(objective) -> str:
    """``max`` or ``min``: the direction an objective carries (a keras-tuner Objective), or the one keras-tuner
    infers from its name; any name ending in ``loss`` is minimized (``val_loss``, ``val_output_loss``), any
    ending in ``accuracy`` or ``auc`` maximized (``val_balanced_accuracy``)."""
    direction = getattr(objective, "direction", None)
    if direction in ("max", "min"):
        return direction
    name = getattr(objective, "name", objective)
    if str(name).endswith("loss"):
        return "min"
    if str(name).endswith(("accuracy", "auc")):  # balanced_accuracy and other scores keras-tuner cannot look up
        return "max"
    from keras_tuner.src.engine.metrics_tracking import infer_metric_direction

    inferred = infer_metric_direction(name)
    if inferred is None:
        raise ValueError(
            f"cannot tell whether objective {name!r} is maximized or minimized; pass "
            f"keras_tuner.Objective({name!r}, direction='max') (or 'min')"
        )
    return inferred


def score(model: keras.Model, x, y, objective="val_accuracy", batch_size: int | None = None) -> float:
    """The objective's metric of ``model`` on ``(x, y)``: the same number the search compared, on other data.

    Accuracy is computed straight from the outputs (no compile needed); any other objective (a loss, AUC, a
    metric of the user's own) is read from ``model.evaluate``, so the model must be compiled with it.

    Example:
        >>> import numpy as np, keras
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, use_bias=False)])
        >>> model.set_weights([np.eye(2, dtype="float32")])
        >>> score(model, np.array([[1.0, 0.0], [0.0, 1.0]], "float32"), np.array([0, 1]), "val_accuracy")
        1.0
    """
    name = objective_name(objective)
    if is_accuracy(name):
        return accuracy(model, x, y)
    if not model.compiled:
        raise ValueError(f"objective {name!r} needs a compiled model (only accuracy is computed without one)")
    values = model.evaluate(x, y, batch_size=batch_size or 4096, verbose=0, return_dict=True)
    if name not in values:
        raise ValueError(
            f"model {model.name!r} does not report {name!r}; it reports {sorted(values)} (compile it with the metric)"
        )
    return float(values[name])
