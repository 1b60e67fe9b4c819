"""Classification accuracy computed straight from a model's outputs (no compile needed)."""

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
    out = predict(model, x)
    y = np.asarray(y)
    if out.ndim == 2 and out.shape[1] == 1:
        predicted = (out[:, 0] > 0.5).astype(int)
    else:
        predicted = out.reshape(len(out), -1).argmax(axis=1)
    labels = y.argmax(axis=1) if y.ndim == 2 and y.shape[1] > 1 else y.reshape(len(y))
    return float(np.mean(predicted == labels)) if len(labels) else float("nan")
