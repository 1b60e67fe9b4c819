"""Metrics to compile into a model so that a search judges it by more than plain accuracy.

Keras ships AUC, precision and recall; balanced accuracy (the mean recall over classes), the usual score for
imbalanced classes, it does not. Compile it and search on it::

    model.compile(..., metrics=["accuracy", keras_grs.metrics.BalancedAccuracy()])
    keras_grs.prune(model, ..., objective="val_balanced_accuracy")
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_grs")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean over classes of the fraction of that class's samples predicted correctly.

    Labels may be class ids or one-hot rows; predictions softmax rows, or one sigmoid column (threshold 0.5).
    A class with no sample so far does not count.

    Example:
        >>> import numpy as np
        >>> metric = BalancedAccuracy(num_classes=2)
        >>> metric.update_state(np.array([0, 0, 0, 1]), np.array([[0.9, 0.1]] * 3 + [[0.8, 0.2]]))
        >>> round(float(metric.result()), 3)   # class 0 all right, class 1 all wrong (plain accuracy: 0.75)
        0.5
    """

    def __init__(self, num_classes=None, name="balanced_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self._size = max(2, int(num_classes or 2))
        self.correct = self.add_variable((self._size,), initializer="zeros", name="correct")
        self.seen = self.add_variable((self._size,), initializer="zeros", name="seen")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_pred = ops.convert_to_tensor(y_pred)
        y_true = ops.convert_to_tensor(y_true)
        if y_pred.shape[-1] == 1:
            predicted = ops.cast(ops.reshape(y_pred, (-1,)) > 0.5, "int32")
        else:
            predicted = ops.argmax(ops.reshape(y_pred, (-1, y_pred.shape[-1])), axis=-1)
        if len(y_true.shape) >= 2 and y_true.shape[-1] and y_true.shape[-1] > 1:
            labels = ops.argmax(y_true, axis=-1)
        else:
            labels = ops.reshape(y_true, (-1,))
        labels = ops.cast(labels, "int32")
        predicted = ops.cast(predicted, "int32")
        weight = ops.ones_like(labels, dtype="float32") if sample_weight is None else ops.cast(
            ops.reshape(sample_weight, (-1,)), "float32")
        onehot = ops.one_hot(labels, self._size, dtype="float32") * weight[:, None]
        hit = ops.cast(ops.equal(labels, predicted), "float32")[:, None]
        self.seen.assign_add(ops.sum(onehot, axis=0))
        self.correct.assign_add(ops.sum(onehot * hit, axis=0))

    def result(self):
        present = ops.cast(self.seen > 0, "float32")
        recall = ops.divide_no_nan(self.correct, self.seen)
        return ops.divide_no_nan(ops.sum(recall * present), ops.sum(present))

    def reset_state(self):
        self.correct.assign(ops.zeros_like(self.correct))
        self.seen.assign(ops.zeros_like(self.seen))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
