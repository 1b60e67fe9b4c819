"""What the batched evaluator reproduces of a compiled model: its loss, accuracy, optimizer and regularizers.

Each rule is read from the model's own compile configuration (Keras' public objects) and written as the update
Keras 3 applies, so that one candidate trained by the batched evaluator ends with the weights ``model.fit`` gives it
(same initial weights, same batches; ``tests/test_batched_parity.py``). What a rule cannot reproduce raises
:class:`UnsupportedForBatching` with a reason naming it; the evaluator then falls back to one fit per trial and the
tuner records the reason in the trial's ``evaluation.json``.

Supported: sparse or categorical cross-entropy and the Kullback-Leibler divergence on a softmax output, binary
cross-entropy on a sigmoid output, their focal variants (alpha, gamma, class balancing; the cross-entropies
``from_logits`` on a linear output; label smoothing included), mean squared or absolute error, the Huber, log-cosh
and Poisson losses, mean squared logarithmic and mean absolute percentage error on any output activation
(regression, an autoencoder's reconstruction); SGD (momentum, Nesterov), RMSprop (momentum, centered), Adam and
AdamW (betas, epsilon, AMSGrad), Adagrad, Adamax, Nadam and Lion; weight decay, gradient clipping (``clipnorm``,
``global_clipnorm``, ``clipvalue``) and Keras' learning-rate schedules, for all of them; L1/L2/L1L2 kernel and bias
regularizers; ``val_accuracy``, ``val_loss``, or an AUC, accuracy, precision, recall, F-score or error metric's
validation score as the objective (:class:`Score`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf


class UnsupportedForBatching(ValueError):
    pass


# ---------------------------------------------------------------------------------------------------- losses
LOSS_CLASSES = {
    "SparseCategoricalCrossentropy": "sparse_categorical_crossentropy",
    "CategoricalCrossentropy": "categorical_crossentropy",
    "BinaryCrossentropy": "binary_crossentropy",
    "BinaryFocalCrossentropy": "binary_focal_crossentropy",
    "CategoricalFocalCrossentropy": "categorical_focal_crossentropy",
    "KLDivergence": "kl_divergence",
    "MeanSquaredError": "mean_squared_error",
    "MeanAbsoluteError": "mean_absolute_error",
    "Huber": "huber",
    "LogCosh": "log_cosh",
    "MeanSquaredLogarithmicError": "mean_squared_logarithmic_error",
    "MeanAbsolutePercentageError": "mean_absolute_percentage_error",
    "Poisson": "poisson",
    "Hinge": "hinge",
    "SquaredHinge": "squared_hinge",
    "CategoricalHinge": "categorical_hinge",
}
OUTPUT_OF_LOSS = {  # the output activation whose logits each loss reads
    "sparse_categorical_crossentropy": "softmax",
    "categorical_crossentropy": "softmax",
    "binary_crossentropy": "sigmoid",
    "binary_focal_crossentropy": "sigmoid",
    "categorical_focal_crossentropy": "softmax",
    "kl_divergence": "softmax",  # soft labels, a teacher's outputs when distilling
}
# margin losses on the outputs (any element-wise activation): classes, with one output per class or a binary one
HINGE_LOSSES = ("hinge", "squared_hinge", "categorical_hinge")
REGRESSION_LOSSES = ("mean_squared_error", "mean_absolute_error", "huber", "log_cosh", "mean_squared_logarithmic_error",
                     "mean_absolute_percentage_error", "poisson")  # on the outputs, any activation
# read below, or without effect here
FREE_LOSS_OPTIONS = ("name", "dtype", "from_logits", "label_smoothing", "delta", "alpha", "gamma",
                     "apply_class_balancing")
NEUTRAL_LOSS_OPTIONS = {"reduction": "sum_over_batch_size", "axis": -1, "ignore_class": None}


@dataclass(frozen=True)
class Loss:
    """A cross-entropy on the model's logits, or a regression or hinge loss (one of ``REGRESSION_LOSSES``,
    ``HINGE_LOSSES``) on its outputs, and the accuracy Keras' ``"accuracy"`` metric computes for a classification.

    ``output``: the model's output activation (``softmax``, ``sigmoid`` or ``linear`` for logits; for a regression
    or hinge loss any element-wise one of ``keras.activations``); ``label_smoothing`` as Keras applies it;
    ``delta``: the Huber loss' threshold; ``alpha``, ``gamma`` and ``balanced`` (``apply_class_balancing``): a
    focal loss'.
    """

    name: str
    output: str
    label_smoothing: float = 0.0
    delta: float = 1.0
    alpha: float = 0.25
    gamma: float = 2.0
    balanced: bool = False

    @property
    def sparse(self):
        return self.name == "sparse_categorical_crossentropy"

    @property
    def regression(self):
        """A loss on targets rather than classes: no accuracy to compute or record."""
        return self.name in REGRESSION_LOSSES

    @property
    def on_outputs(self):
        """A loss of the model's outputs (a regression or a hinge loss: any element-wise output activation) rather
        than of its logits (a cross-entropy)."""
        return self.name in REGRESSION_LOSSES or self.name in HINGE_LOSSES

    def per_sample(self, labels, logits):
        """(k, batch) losses of logits (k, batch, units) against labels: (batch,) ids or (batch, units) targets,
        shared by the k candidates, or the same with a leading candidate axis."""
        if len(labels.shape) < len(logits.shape) - self.sparse:  # shared: the same labels for every candidate
            labels = tf.broadcast_to(labels[None], (logits.shape[0], *labels.shape))
        if self.regression:
            return self._regression_loss(labels, self.outputs(logits))
        if self.name in HINGE_LOSSES:
            return self._hinge_loss(labels, self.outputs(logits))
        if self.sparse:
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        if self.name == "kl_divergence":  # Keras' formula, on the clipped probabilities
            eps = keras.config.epsilon()
            truth = tf.clip_by_value(labels, eps, 1.0)
            return tf.reduce_sum(truth * tf.math.log(truth / tf.clip_by_value(tf.nn.softmax(logits), eps, 1.0)), -1)
        if self.name == "categorical_focal_crossentropy":  # Keras' formula, on the (clipped) probabilities
            if self.label_smoothing:
                labels = labels * (1.0 - self.label_smoothing) + self.label_smoothing / logits.shape[-1]
            probabilities = tf.nn.softmax(logits)
            eps = keras.config.epsilon()
            output = tf.clip_by_value(probabilities / tf.reduce_sum(probabilities, -1, keepdims=True), eps, 1.0 - eps)
            focal = tf.pow(1.0 - output, self.gamma) * self.alpha * (-labels * tf.math.log(output))
            return tf.reduce_sum(focal, axis=-1)
        if self.name == "binary_focal_crossentropy":  # the cross-entropy of the logits, as Keras reads a sigmoid's
            if self.label_smoothing:
                labels = labels * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
            probabilities = tf.sigmoid(logits)
            p_t = labels * probabilities + (1 - labels) * (1 - probabilities)
            focal = tf.pow(1.0 - p_t, self.gamma) * tf.nn.sigmoid_cross_entropy_with_logits(labels, logits)
            if self.balanced:
                focal = (labels * self.alpha + (1 - labels) * (1 - self.alpha)) * focal
            return tf.reduce_mean(focal, axis=-1)
        if self.name == "categorical_crossentropy":
            if self.label_smoothing:
                labels = labels * (1.0 - self.label_smoothing) + self.label_smoothing / logits.shape[-1]
            return tf.nn.softmax_cross_entropy_with_logits(labels, logits)
        if self.label_smoothing:
            labels = labels * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits), axis=-1)

    def _hinge_loss(self, labels, outputs):
        """Keras' hinge, squared hinge or categorical hinge. The first two read labels of -1 and 1, and turn a batch
        whose labels are all 0 or 1 into -1 and 1 first, per candidate's batch as Keras does per batch (the labels
        are one kind or the other, :meth:`labels`: the same for every batch)."""
        if self.name == "categorical_hinge":
            positive = tf.reduce_sum(labels * outputs, axis=-1)
            negative = tf.reduce_max((1.0 - labels) * outputs, axis=-1)
            return tf.maximum(negative - positive + 1.0, 0.0)
        binary = tf.reduce_all((labels == 0.0) | (labels == 1.0), axis=list(range(1, len(labels.shape))),
                               keepdims=True)
        margins = tf.maximum(1.0 - tf.where(binary, 2.0 * labels - 1.0, labels) * outputs, 0.0)
        return tf.reduce_mean(tf.square(margins) if self.name == "squared_hinge" else margins, axis=-1)

    def _regression_loss(self, labels, outputs):
        """Keras' formula of the regression loss, a mean over the last axis (``epsilon``: Keras' fuzz factor)."""
        eps = keras.config.epsilon()
        error = outputs - labels
        if self.name == "mean_squared_error":
            per_value = tf.square(error)
        elif self.name == "mean_absolute_error":
            per_value = tf.abs(error)
        elif self.name == "huber":
            size = tf.abs(error)
            per_value = tf.where(size <= self.delta, 0.5 * tf.square(error), self.delta * size - 0.5 * self.delta ** 2)
        elif self.name == "log_cosh":
            per_value = error + tf.nn.softplus(error * -2.0) - math.log(2.0)
        elif self.name == "mean_squared_logarithmic_error":
            logs = [tf.math.log(tf.maximum(values, eps) + 1.0) for values in (outputs, labels)]
            per_value = tf.square(logs[0] - logs[1])
        elif self.name == "mean_absolute_percentage_error":
            return 100.0 * tf.reduce_mean(tf.abs((labels - outputs) / tf.maximum(tf.abs(labels), eps)), axis=-1)
        else:  # poisson
            per_value = outputs - labels * tf.math.log(outputs + eps)
        return tf.reduce_mean(per_value, axis=-1)

    def outputs(self, logits):
        """The model's outputs: its output activation of the logits."""
        known = {"softmax": tf.nn.softmax, "sigmoid": tf.sigmoid, "linear": tf.identity}
        return (known.get(self.output) or keras.activations.get(self.output))(logits)

    def accuracy(self, labels, logits):
        """(k, samples) 0/1: Keras' ``"accuracy"``, which it resolves from the shapes: binary for one output
        unit (output > 0.5), sparse for id labels, categorical (argmax against argmax) otherwise; zeros for a
        regression loss (recorded nowhere)."""
        if self.regression:
            return tf.zeros(logits.shape[:-1])
        outputs = self.outputs(logits)
        if outputs.shape[-1] == 1:
            predicted = tf.cast(outputs > 0.5, tf.float32)
            return tf.reduce_mean(tf.cast(tf.equal(labels[None], predicted), tf.float32), axis=-1)
        predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
        truth = labels if self.sparse else tf.argmax(labels, axis=-1, output_type=tf.int32)
        return tf.cast(tf.equal(predicted, truth[None]), tf.float32)

    def labels(self, y, units):
        """The training labels as the loss reads them: int ids (samples,) or float targets (samples, units)."""
        y = np.asarray(y)
        if self.sparse:
            return y.reshape(len(y)).astype("int32")
        y = y.reshape(len(y), -1).astype("float32")
        if y.shape[1] != units:
            raise UnsupportedForBatching(f"{self.name} with labels of shape {y.shape[1:]} for {units} outputs")
        if self.name in ("hinge", "squared_hinge"):
            values = set(np.unique(y))
            if not (values <= {0.0, 1.0} or values <= {-1.0, 1.0}):
                # Keras turns a batch of 0/1 labels into -1/1: with other values, whether it does depends on the batch
                raise UnsupportedForBatching(f"{self.name} with labels other than 0/1 or -1/1")
        return y


def read_loss(model, output_activation) -> Loss:
    """The model's loss as a :class:`Loss`, given the activation of its output layer."""
    config = model.get_compile_config()
    if config.get("loss_weights") is not None:
        raise UnsupportedForBatching("loss_weights")
    loss = config.get("loss")
    options = {}
    if isinstance(loss, dict) and loss.get("class_name") == "function":
        loss = loss.get("config")
    elif isinstance(loss, dict):
        options = dict(loss.get("config") or {})
        loss = LOSS_CLASSES.get(loss.get("class_name"), loss.get("class_name"))
    if isinstance(loss, str):
        try:
            loss = keras.losses.get(loss).__name__
        except (ValueError, AttributeError):
            pass
    if loss not in OUTPUT_OF_LOSS and loss not in REGRESSION_LOSSES and loss not in HINGE_LOSSES:
        raise UnsupportedForBatching(f"loss {loss!r}")
    extra = sorted(k for k, v in options.items()
                   if k not in FREE_LOSS_OPTIONS and (k not in NEUTRAL_LOSS_OPTIONS or v != NEUTRAL_LOSS_OPTIONS[k]))
    if extra:
        raise UnsupportedForBatching(f"loss {loss} with {', '.join(extra)}")
    if loss in HINGE_LOSSES:  # on the outputs too
        return Loss(loss, output_activation)
    if loss in REGRESSION_LOSSES:  # on the outputs: whatever the output activation (_plan checked it is one)
        delta = options.get("delta", 1.0)
        if isinstance(model.loss, keras.losses.Huber):  # its configuration leaves out delta; its base class' has it
            delta = super(keras.losses.Huber, model.loss).get_config().get("delta", delta)
        return Loss(loss, output_activation, delta=float(delta))
    # Keras reads the logits under a softmax/sigmoid output whatever from_logits says; a linear output must be logits
    expected = OUTPUT_OF_LOSS[loss]
    if loss == "kl_divergence" and output_activation != expected:  # it reads probabilities, has no from_logits
        raise UnsupportedForBatching(f"loss {loss} on a {output_activation} output (needs {expected})")
    if output_activation == "linear" and not options.get("from_logits"):
        raise UnsupportedForBatching(f"loss {loss} on a linear output without from_logits=True")
    if output_activation not in (expected, "linear"):
        raise UnsupportedForBatching(f"loss {loss} on a {output_activation} output (needs {expected})")
    focal = {"alpha": float(options.get("alpha", 0.25)), "gamma": float(options.get("gamma", 2.0)),
             "balanced": bool(options.get("apply_class_balancing", False))}
    return Loss(loss, output_activation, float(options.get("label_smoothing") or 0.0), **focal)


# ---------------------------------------------------------------------------------------------------- objectives
@dataclass(frozen=True)
class Score:
    """The validation score a search keeps within its tolerance, as the compiled fit computes it per candidate:
    Keras' ``"accuracy"``, the loss, a ``keras.metrics.AUC`` the model is compiled with, an accuracy metric (sparse
    categorical, categorical or binary, at its ``threshold``), precision or recall (at its ``threshold``), an F-score
    (``average``, ``beta``) or an error metric it is compiled with (mean absolute, mean squared or root mean squared
    error; ``metric`` "accuracy", "loss", "auc", "fbeta" or one of ``ACCURACY_METRICS``', ``COUNTED_METRICS``' or
    ``ERROR_METRICS``' values; ``name``: the metric's name in Keras' logs, so the objective is ``val_<name>``;
    ``minimize``: a lower score is better).

    An AUC counts true and false positives at its thresholds over the whole validation split and reads the curve
    from the counts as Keras' metric does (``curve``, ``summation``, ``multi_label``, ``label_weights``,
    ``from_logits``); counts add up over batches, so one pass over the split gives what ``evaluate``'s batches do.
    ``evenly``: the thresholds are evenly spaced, and a prediction's bucket is worked out as Keras works it out
    then (the same float arithmetic, so the same bucket at a threshold's edge).
    """

    metric: str
    name: str
    minimize: bool = False
    thresholds: tuple = ()
    evenly: bool = True
    curve: str = "ROC"
    summation: str = "interpolation"
    multi_label: bool = False
    label_weights: tuple | None = None
    from_logits: bool = False
    threshold: float | None = 0.5
    average: str | None = None  # an F-score's: micro, macro or weighted
    beta: float = 1.0

    def value(self, labels, outputs):
        """(k,) this score (an AUC, an accuracy, precision, recall, F-score or error metric; not ``"accuracy"``
        or the loss, which the fit computes itself) of outputs (k, samples, units), the model's outputs, against
        labels shared by the k candidates: (samples,) class ids for the sparse categorical accuracy, else (samples,
        units). An accuracy metric or an error metric is Keras': the mean over the validation split (what its
        running mean over ``evaluate``'s batches comes to), the square root of it for the root mean squared
        error."""
        if self.metric == "auc":
            return self.auc(labels, outputs)
        if self.metric == "fbeta":
            return self.f_score(labels, outputs)
        if self.metric in ("precision", "recall"):  # counts over every value, at the one threshold (unclipped)
            predicted = outputs > self.threshold
            truth = tf.not_equal(tf.reshape(labels, (-1, outputs.shape[-1])), 0.0)[None]

            def count(a, b):
                return tf.reduce_sum(tf.cast(a & b, tf.float32), axis=(1, 2))

            hits = count(predicted, truth)
            missed = count(predicted, ~truth) if self.metric == "precision" else count(~predicted, truth)
            return tf.math.divide_no_nan(hits, hits + missed)
        if self.metric in ACCURACY_METRICS.values():
            if self.metric == "binary_accuracy":  # per value: above the threshold, against a 0/1 label
                labels = tf.reshape(labels, (-1, outputs.shape[-1]))[None]
                right = tf.equal(tf.cast(outputs > self.threshold, labels.dtype), labels)
                return tf.reduce_mean(tf.cast(right, tf.float32), axis=(1, 2))
            predicted = tf.argmax(outputs, axis=-1, output_type=tf.int32)
            truth = tf.cast(tf.reshape(labels, (-1,)), tf.int32) if self.metric == "sparse_categorical_accuracy" \
                else tf.argmax(labels, axis=-1, output_type=tf.int32)
            return tf.reduce_mean(tf.cast(tf.equal(predicted, truth[None]), tf.float32), axis=1)
        error = outputs - tf.reshape(labels, (-1, outputs.shape[-1]))[None]
        if self.metric == "mean_absolute_error":
            return tf.reduce_mean(tf.abs(error), axis=(1, 2))
        squared = tf.reduce_mean(tf.square(error), axis=(1, 2))
        return tf.sqrt(squared) if self.metric == "root_mean_squared_error" else squared

    def f_score(self, labels, outputs):
        """(k,) Keras' F-beta score (``keras.metrics.FBetaScore``, ``F1Score``) of outputs (k, samples, units)
        against labels (samples, units): a value is predicted positive above the threshold, or without one when it
        is its sample's largest (and not zero); precision and recall per class (over every value for ``micro``),
        their F-score, averaged as ``average`` says."""
        eps = keras.config.epsilon()
        truth = tf.cast(tf.reshape(labels, (-1, outputs.shape[-1])), tf.float32)[None]
        if self.threshold is None:
            top = tf.reduce_max(outputs, axis=-1, keepdims=True)
            predicted = tf.cast((outputs >= top) & (tf.abs(outputs) > 1e-9), tf.float32)
        else:
            predicted = tf.cast(outputs > self.threshold, tf.float32)
        axes = [1, 2] if self.average == "micro" else [1]

        def total(values):
            return tf.reduce_sum(tf.broadcast_to(values, predicted.shape), axis=axes)

        hits = total(predicted * truth)
        precision = hits / (hits + total(predicted * (1 - truth)) + eps)
        recall = hits / (hits + total((1 - predicted) * truth) + eps)
        score = (precision * recall) / ((self.beta ** 2) * precision + recall + eps) * (1 + self.beta ** 2)
        if self.average == "weighted":
            support = total(truth)
            return tf.reduce_sum(score * (support / (tf.reduce_sum(support, -1, keepdims=True) + eps)), axis=-1)
        return score if self.average == "micro" else tf.reduce_mean(score, axis=-1)

    def auc(self, labels, outputs):
        """(k,) AUCs of outputs (k, samples, units), the model's outputs, against labels (samples, units) shared by
        the k candidates."""
        k, units = outputs.shape[0], outputs.shape[-1]
        predictions = tf.reshape(tf.sigmoid(outputs) if self.from_logits else outputs, (k, -1, units))
        truth = tf.cast(tf.not_equal(tf.reshape(labels, (-1, units)), 0.0), tf.float32)
        weights = 1.0 if self.label_weights is None or self.multi_label else tf.constant(self.label_weights)
        positive, negative = truth * weights, (1.0 - truth) * weights  # (samples, units)
        n = len(self.thresholds)
        if self.evenly:  # Keras' bucket of a prediction: the last threshold it is above, as Keras works it out
            bucket = tf.nn.relu(tf.math.ceil(tf.clip_by_value(predictions, 0.0, 1.0) * float(n - 1)) - 1.0)
        else:  # (Keras compares unclipped predictions with these; one below them all is in no bucket: -1)
            bucket = tf.reduce_sum(tf.cast(predictions[..., None] > tf.constant(self.thresholds), tf.float32), -1) - 1
        bucket = tf.cast(bucket, tf.int32)  # (k, samples, units)
        labels_axis = units if self.multi_label else 1
        label = tf.range(units) if self.multi_label else tf.zeros((units,), tf.int32)
        # one segment per (candidate, label, bucket); the counts at threshold i: the buckets from i on
        segments = (tf.range(k)[:, None, None] * labels_axis + label) * n + tf.maximum(bucket, 0)
        counted = bucket >= 0

        def counts(values):
            values = tf.broadcast_to(values, bucket.shape)
            per_bucket = tf.math.unsorted_segment_sum(tf.where(counted, values, 0.0), segments, k * labels_axis * n)
            above = tf.cumsum(tf.reshape(per_bucket, (k, labels_axis, n)), axis=-1, reverse=True)
            total = tf.reduce_sum(values, axis=1)  # (k, units): every prediction, in a bucket or below them all
            if not self.multi_label:
                total = tf.reduce_sum(total, axis=-1, keepdims=True)
            return above, total[..., None]

        tp, all_true = counts(positive)
        fp, all_false = counts(negative)
        per_label = self._area(tp, fp, all_false - fp, all_true - tp)  # (k, labels)
        if not self.multi_label:
            return per_label[:, 0]
        if self.label_weights is None:
            return tf.reduce_mean(per_label, axis=-1)
        label_weights = tf.constant(self.label_weights)
        return tf.math.divide_no_nan(tf.reduce_sum(per_label * label_weights, -1), tf.reduce_sum(label_weights))

    def _area(self, tp, fp, tn, fn):
        """Keras' ``AUC.result`` for counts (..., thresholds): the area under the chosen curve, per leading index."""
        divide = tf.math.divide_no_nan
        if self.curve == "PR" and self.summation == "interpolation":
            dtp = tp[..., :-1] - tp[..., 1:]
            p = tp + fp
            dp = p[..., :-1] - p[..., 1:]
            slope = divide(dtp, tf.maximum(dp, 0.0))
            intercept = tp[..., 1:] - slope * p[..., 1:]
            ratio = tf.where((p[..., :-1] > 0) & (p[..., 1:] > 0), divide(p[..., :-1], tf.maximum(p[..., 1:], 0.0)),
                             tf.ones_like(p[..., 1:]))
            increments = divide(slope * (dtp + intercept * tf.math.log(ratio)),
                                tf.maximum(tp[..., 1:] + fn[..., 1:], 0.0))
            return tf.reduce_sum(increments, axis=-1)
        recall = divide(tp, tp + fn)
        if self.curve == "ROC":
            x, y = divide(fp, fp + tn), recall
        elif self.curve == "PR":
            x, y = recall, divide(tp, tp + fp)
        else:  # PRGAIN
            scale = divide(tp + fn, tn + fp)
            x = tf.maximum(tf.where(tp == 0.0, 0.0, 1.0 - scale * divide(fn, tp)), 0.0)
            y = tf.where(tp == 0.0, 1.0, 1.0 - scale * divide(fp, tp))
        if self.summation == "interpolation":
            heights = (y[..., :-1] + y[..., 1:]) / 2.0
        elif self.summation == "minoring":
            heights = tf.minimum(y[..., :-1], y[..., 1:])
        else:
            heights = tf.maximum(y[..., :-1], y[..., 1:])
        return tf.reduce_sum((x[..., :-1] - x[..., 1:]) * heights, axis=-1)


def read_scores(model, objective, loss: Loss, units: int) -> tuple[Score, tuple[Score, ...]]:
    """The :class:`Score` a keras-tuner ``objective`` names for this model, ``val_accuracy`` (maximized),
    ``val_loss`` (minimized), ``val_<name>`` of a ``keras.metrics.AUC``, an accuracy metric, precision, recall or an
    F-score the model is compiled with (maximized) or of an error metric it is compiled with (minimized), or
    UnsupportedForBatching naming anything else; and the Scores of the other such metrics it is compiled with,
    which the compiled fit computes beside it so that a trial records the ``val_<name>`` the keras evaluator would
    (one it cannot compute, on labels the metric cannot read, is left out)."""
    metrics = _compiled_metrics(model)
    score = _objective_score(metrics, objective, loss, units)
    reported = []
    for label, metric in metrics.items():
        if label == score.name:
            continue
        try:
            if type(metric) is keras.metrics.AUC:
                reported.append(_auc_score(label, metric, loss, units, f"metric {label}"))
            elif _is_class_metric(metric):
                reported.append(_class_metric_score(label, metric, loss, units, f"metric {label}"))
            elif _is_error_metric(metric):
                reported.append(_error_score(label, metric, loss, f"metric {label}"))
        except UnsupportedForBatching:
            continue
    return score, tuple(reported)


def _objective_score(metrics, objective, loss: Loss, units: int) -> Score:
    """The objective's :class:`Score` (:func:`read_scores`), given the model's compiled ``metrics``."""
    name, direction = objective.name, objective.direction
    fixed = {"val_accuracy": ("accuracy", "max"), "val_loss": ("loss", "min")}
    if name in fixed:
        if fixed[name][1] != direction:
            raise UnsupportedForBatching(f"objective {name} ({direction})")
        if name == "val_accuracy" and loss.regression:
            raise UnsupportedForBatching(f"objective val_accuracy with the regression loss {loss.name}")
        return Score(fixed[name][0], fixed[name][0], minimize=direction == "min")
    label = name[len("val_"):] if name.startswith("val_") else None
    metric = metrics.get(label)
    if metric is None:
        raise UnsupportedForBatching(f"objective {name} ({direction})")
    if _is_error_metric(metric):
        if direction != "min":
            raise UnsupportedForBatching(f"objective {name} ({direction}; an error is minimized)")
        return _error_score(label, metric, loss, f"objective {name}")
    if _is_class_metric(metric):
        if direction != "max":
            raise UnsupportedForBatching(f"objective {name} ({direction}; it is maximized)")
        return _class_metric_score(label, metric, loss, units, f"objective {name}")
    if type(metric) is not keras.metrics.AUC:
        raise UnsupportedForBatching(f"objective {name}: metric {type(metric).__name__} (the batched path computes "
                                     "accuracy (sparse categorical, categorical, binary), precision, recall, "
                                     "F-scores, the loss, AUC and mean absolute, mean squared and root mean "
                                     "squared errors)")
    if direction != "max":
        raise UnsupportedForBatching(f"objective {name} ({direction}; an AUC is maximized)")
    return _auc_score(label, metric, loss, units, f"objective {name}")


def _auc_score(label, metric, loss: Loss, units: int, what: str) -> Score:
    """The :class:`Score` of a ``keras.metrics.AUC`` logged as ``label``."""
    if loss.sparse:
        raise UnsupportedForBatching(f"{what} with integer class labels (Keras' AUC reads labels of the outputs' "
                                     "shape: one-hot, or 0/1 for sigmoid outputs)")
    config = metric.get_config()
    weights = config.get("label_weights")
    if weights is not None:
        weights = tuple(float(w) for w in np.asarray(weights, "float32").reshape(-1))
        if len(weights) != units:
            raise UnsupportedForBatching(f"{what}: {len(weights)} label weights for {units} outputs")
    return Score("auc", label, thresholds=tuple(float(t) for t in np.asarray(metric.thresholds, "float32")),
                 evenly=bool(metric._thresholds_distributed_evenly), curve=metric.curve.value,
                 summation=metric.summation_method.value, multi_label=bool(metric.multi_label), label_weights=weights,
                 from_logits=bool(config.get("from_logits")))


# the accuracy metrics the compiled fit computes, by the Keras metric class a model is compiled with (also by
# name: "sparse_categorical_accuracy", ...); "accuracy" is Keras' own choice among them (Loss.accuracy)
ACCURACY_METRICS = {
    keras.metrics.SparseCategoricalAccuracy: "sparse_categorical_accuracy",
    keras.metrics.CategoricalAccuracy: "categorical_accuracy",
    keras.metrics.BinaryAccuracy: "binary_accuracy",
}


# precision and recall at one threshold (Keras' default 0.5), counted over every output value
COUNTED_METRICS = {keras.metrics.Precision: "precision", keras.metrics.Recall: "recall"}


def _class_metric_score(label, metric, loss: Loss, units: int, what: str) -> Score:
    """The :class:`Score` of an accuracy metric (``ACCURACY_METRICS``), of precision or recall
    (``COUNTED_METRICS``) or of an F-score logged as ``label``: the sparse accuracy reads class ids, the others
    labels of the outputs' shape."""
    if loss.regression:
        raise UnsupportedForBatching(f"{what} with the regression loss {loss.name}")
    if isinstance(metric, keras.metrics.FBetaScore):
        if loss.sparse or metric.average not in ("micro", "macro", "weighted"):
            raise UnsupportedForBatching(f"{what}: {type(metric).__name__} with " + (
                "integer class labels" if loss.sparse else f"average={metric.average!r} (one score per class)"))
        threshold = None if metric.threshold is None else float(metric.threshold)
        return Score("fbeta", label, threshold=threshold, average=metric.average, beta=float(metric.beta))
    if type(metric) in COUNTED_METRICS:
        config = metric.get_config()
        thresholds = np.asarray(metric.thresholds, "float32").reshape(-1)
        if loss.sparse or len(thresholds) != 1 or config.get("top_k") is not None or \
                config.get("class_id") is not None:
            raise UnsupportedForBatching(f"{what}: {type(metric).__name__} with "
                                         + ("integer class labels" if loss.sparse else "other than one threshold"))
        return Score(COUNTED_METRICS[type(metric)], label, threshold=float(thresholds[0]))
    kind = ACCURACY_METRICS[type(metric)]
    if loss.sparse != (kind == "sparse_categorical_accuracy"):
        raise UnsupportedForBatching(f"{what} with {'integer class' if loss.sparse else 'one-hot or 0/1'} labels")
    threshold = float(metric.get_config().get("threshold", 0.5))
    return Score(kind, label, threshold=threshold)


# the error metrics the compiled fit computes, by the Keras metric class or function a model is compiled with
ERROR_METRICS = {
    keras.metrics.MeanAbsoluteError: "mean_absolute_error",
    keras.metrics.MeanSquaredError: "mean_squared_error",
    keras.metrics.RootMeanSquaredError: "root_mean_squared_error",
    keras.metrics.mean_absolute_error: "mean_absolute_error",
    keras.metrics.mean_squared_error: "mean_squared_error",
}


def _error_score(label, metric, loss: Loss, what: str) -> Score:
    """The :class:`Score` of an error metric (``ERROR_METRICS``) logged as ``label``."""
    if loss.sparse:
        raise UnsupportedForBatching(f"{what} with integer class labels (an error metric reads labels of the "
                                     "outputs' shape)")
    kind = ERROR_METRICS.get(metric if callable(metric) and not isinstance(metric, keras.metrics.Metric)
                             else type(metric))
    return Score(kind, label, minimize=True)


def _compiled_metrics(model) -> dict:
    """{the name Keras logs a metric under: the metric} of the metrics the model is compiled with (one output's),
    read from its compile configuration. A metric given by name is logged under that name, whatever name the object
    made from it takes (Keras numbers a second ``AUC()`` of a process ``auc_1``)."""
    metrics = model.get_compile_config().get("metrics")
    if isinstance(metrics, (list, tuple)) and len(metrics) == 1 and isinstance(metrics[0], (list, tuple)):
        metrics = metrics[0]  # one output's list
    found = {}
    for entry in metrics if isinstance(metrics, (list, tuple)) else ():
        weights = entry.get("config", {}).get("label_weights") if isinstance(entry, dict) else None
        if isinstance(weights, dict) and weights.get("class_name") == "__tensor__":  # Keras writes, cannot read back
            entry = {**entry, "config": {**entry["config"], "label_weights": weights["config"]["value"]}}
        try:
            metric = keras.metrics.get(entry) if isinstance(entry, str) else keras.metrics.deserialize(entry)
        except (ValueError, TypeError):
            continue
        if isinstance(metric, keras.metrics.Metric) or (isinstance(entry, str) and metric in ERROR_METRICS):
            found[entry if isinstance(entry, str) else metric.name] = metric  # "mae": a function, logged as "mae"
    return found


def _is_f_score(metric) -> bool:
    """Keras' F-beta scores (``FBetaScore`` and its ``F1Score``)."""
    return isinstance(metric, keras.metrics.FBetaScore)


def _is_class_metric(metric) -> bool:
    """A metric of predicted classes :func:`_class_metric_score` reads: an accuracy, precision, recall or F-score."""
    return type(metric) in ACCURACY_METRICS or type(metric) in COUNTED_METRICS or _is_f_score(metric)


def _is_error_metric(metric) -> bool:
    return (type(metric) in ERROR_METRICS) if isinstance(metric, keras.metrics.Metric) else metric in ERROR_METRICS


def check_weighting(fit_kwargs):
    if fit_kwargs.get("class_weight") is not None and fit_kwargs.get("sample_weight") is not None:
        raise UnsupportedForBatching("class_weight together with sample_weight")  # Keras refuses it too


def sample_weights(y, fit_kwargs) -> np.ndarray | None:
    """Per-sample loss weights from ``class_weight`` (Keras' rule: the class is the label, the argmax of a one-hot
    label, or the rounded value of a single 0/1 output) or ``sample_weight``; None when neither is given."""
    check_weighting(fit_kwargs)
    class_weight, weights = fit_kwargs.get("class_weight"), fit_kwargs.get("sample_weight")
    if weights is not None:
        weights = np.asarray(weights, dtype="float32")
        if weights.shape != (len(y),):
            raise UnsupportedForBatching(f"sample_weight of shape {weights.shape}")
        return weights
    if not class_weight:
        return None
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] != 1:
        classes = np.argmax(y, axis=-1)
    else:
        classes = np.round(y.reshape(len(y))).astype("int64")
    return np.array([class_weight.get(int(c), 1.0) for c in classes], dtype="float32")


# ---------------------------------------------------------------------------------------------------- regularizers
def read_regularizer(regularizer, what) -> tuple[float, float]:
    """(l1, l2) of a Keras L1, L2 or L1L2 regularizer, (0, 0) for none."""
    if regularizer is None:
        return 0.0, 0.0
    if type(regularizer) not in (keras.regularizers.L1, keras.regularizers.L2, keras.regularizers.L1L2):
        raise UnsupportedForBatching(f"{what} {type(regularizer).__name__}")
    config = regularizer.get_config()
    return float(config.get("l1", 0.0)), float(config.get("l2", 0.0))


def penalty(tensor, l1, l2):
    """Per candidate (leading axis): Keras' ``l1 * sum|w| + l2 * sum w^2``. Padded (zero) entries add nothing."""
    axes = list(range(1, len(tensor.shape)))
    total = 0.0
    if l1:
        total += l1 * tf.reduce_sum(tf.abs(tensor), axis=axes)
    if l2:
        total += l2 * tf.reduce_sum(tf.square(tensor), axis=axes)
    return total


# ---------------------------------------------------------------------------------------------------- optimizers
OPTIMIZERS = {  # class -> the options its update reads
    keras.optimizers.SGD: ("momentum", "nesterov"),
    keras.optimizers.RMSprop: ("rho", "momentum", "epsilon", "centered"),
    keras.optimizers.Adam: ("beta_1", "beta_2", "epsilon", "amsgrad"),
    keras.optimizers.AdamW: ("beta_1", "beta_2", "epsilon", "amsgrad"),
    keras.optimizers.Adagrad: ("initial_accumulator_value", "epsilon"),
    keras.optimizers.Adamax: ("beta_1", "beta_2", "epsilon"),
    keras.optimizers.Nadam: ("beta_1", "beta_2", "epsilon"),
    keras.optimizers.Lion: ("beta_1", "beta_2"),
    keras.optimizers.Ftrl: ("learning_rate_power", "initial_accumulator_value", "l1_regularization_strength",
                            "l2_regularization_strength", "l2_shrinkage_regularization_strength", "beta"),
}
NADAM_DECAY = 0.96  # Keras' Nadam: the momentum schedule's decay
UNSUPPORTED_OPTIONS = ("gradient_accumulation_steps", "loss_scale_factor")
CLIPPING = ("clipnorm", "global_clipnorm", "clipvalue")  # the first one set applies, as in Keras' _clip_gradients
SCHEDULES = ("CosineDecay", "CosineDecayRestarts", "ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay",
             "PolynomialDecay")


@dataclass(frozen=True)
class Optimizer:
    """A Keras optimizer's update, applied to stacked weights: ``kind`` (SGD, RMSprop, Adam, Adagrad, Adamax,
    Nadam, Lion, Ftrl), its options as sorted pairs, the weight decay, and the learning rate (a float or a serialized
    Keras schedule). Each update is Keras' ``update_step``, operation for operation (the same float rounding)."""

    kind: str
    options: tuple
    weight_decay: float
    learning_rate: float | str
    clipping: tuple = ()  # (one of CLIPPING, its limit), or none
    # use_ema: Keras keeps a moving average of the weights beside them, which changes nothing until fit's end, when
    # it overwrites the weights with it: what the epoch kept as best never sees it (the last epoch's weights would)
    ema: bool = False

    def option(self, name):
        return dict(self.options)[name]

    def slots(self) -> int:
        """How many state tensors each weight has."""
        if self.kind == "SGD":
            return 1 if self.option("momentum") else 0
        if self.kind == "RMSprop":
            return 1 + bool(self.option("momentum")) + bool(self.option("centered"))
        if self.kind in ("Adagrad", "Lion"):
            return 1
        if self.kind == "Ftrl":
            return 2  # its accumulators and linear terms
        if self.kind == "Nadam":
            return 3  # its momentum schedule's running product, kept as a scalar beside each weight
        return 3 if self.kind == "Adam" and self.option("amsgrad") else 2

    def initial_state(self, params) -> list:
        """The state before the first update, slot after slot (each slot for each of ``params``): zeros, but
        Adagrad's and Ftrl's accumulators start at their ``initial_accumulator_value`` and Nadam's product at 1."""
        state = [tf.zeros_like(p) for _ in range(self.slots()) for p in params]
        if self.kind in ("Adagrad", "Ftrl"):
            state[: len(params)] = [tf.fill(p.shape, tf.constant(self.option("initial_accumulator_value"), p.dtype))
                                    for p in params]
        elif self.kind == "Nadam":
            state[2 * len(params):] = [tf.ones(()) for _ in params]
        return state

    def schedule(self):
        """A function of the iteration count (before the update, as Keras calls its schedule) -> learning rate."""
        if isinstance(self.learning_rate, float):
            rate = self.learning_rate
            return lambda iteration: tf.constant(rate, tf.float32)
        schedule = keras.optimizers.schedules.deserialize(json.loads(self.learning_rate))
        return lambda iteration: tf.cast(schedule(iteration), tf.float32)

    def update(self, params, grads, state, step, lr):
        """One step of Keras' ``apply_gradients``: decoupled weight decay first, then the optimizer's own update.
        ``state``: per slot, a tuple with one tensor per weight; ``step``: this update's number, from 1."""
        if self.clipping:
            grads = self._clipped(grads)
        if self.weight_decay:
            params = tuple(p - p * self.weight_decay * lr for p in params)
        return getattr(self, "_" + self.kind.lower())(params, grads, state, step, lr)

    def _clipped(self, grads):
        """Keras' gradient clipping, per candidate (the leading axis; the padding's gradients are zero):
        ``clipnorm`` scales each weight's gradient to that norm at most, ``global_clipnorm`` all of a candidate's
        gradients together, ``clipvalue`` clips each value."""
        kind, limit = self.clipping

        def per_candidate(g, values):
            return tf.reshape(values, (-1,) + (1,) * (len(g.shape) - 1))

        if kind == "clipvalue":
            return [tf.clip_by_value(g, -limit, limit) for g in grads]
        sums = [tf.reduce_sum(tf.square(g), axis=list(range(1, len(g.shape)))) for g in grads]
        if kind == "global_clipnorm":
            norm = tf.sqrt(tf.reduce_sum(tf.stack(sums), axis=0))
            scale = limit * tf.minimum(1.0 / norm, 1.0 / limit)
            scale = scale + (norm - norm)  # NaN for a gradient that is not finite, as Keras makes it
            return [g * per_candidate(g, scale) for g in grads]
        clipped = []
        for g, total in zip(grads, sums):
            positive = total > 0  # Keras' two-sided where: no NaN from the root of zero
            norm = tf.where(positive, tf.sqrt(tf.where(positive, total, tf.ones_like(total))), total)
            clipped.append((g * limit) / per_candidate(g, tf.maximum(norm, limit)))
        return clipped

    def _sgd(self, params, grads, state, step, lr):
        momentum = self.option("momentum")
        if not momentum:
            return tuple(p - g * lr for p, g in zip(params, grads)), state
        m = tuple(mj * momentum - g * lr for mj, g in zip(state[0], grads))
        if self.option("nesterov"):
            params = tuple(p + mj * momentum - g * lr for p, mj, g in zip(params, m, grads))
        else:
            params = tuple(p + mj for p, mj in zip(params, m))
        return params, (m,)

    def _rmsprop(self, params, grads, state, step, lr):
        rho, momentum, eps = self.option("rho"), self.option("momentum"), self.option("epsilon")
        slots = list(state)
        velocity = tuple(rho * v + (1 - rho) * tf.square(g) for v, g in zip(slots.pop(0), grads))
        new = [velocity]
        if self.option("centered"):
            average = tuple(rho * a + (1 - rho) * g for a, g in zip(slots.pop(-1), grads))
            denominators = [v - tf.square(a) + eps for v, a in zip(velocity, average)]
        else:
            denominators = [v + eps for v in velocity]
        increments = [lr * g / tf.sqrt(d) for g, d in zip(grads, denominators)]
        if momentum:
            moments = tuple(momentum * mj + i for mj, i in zip(slots.pop(0), increments))
            new.append(moments)
            increments = moments
        if self.option("centered"):
            new.append(average)
        return tuple(p - i for p, i in zip(params, increments)), tuple(new)

    def _adam(self, params, grads, state, step, lr):
        beta_1, beta_2, eps = self.option("beta_1"), self.option("beta_2"), self.option("epsilon")
        alpha = lr * tf.sqrt(1 - beta_2**step) / (1 - beta_1**step)
        m = tuple(mj + (g - mj) * (1 - beta_1) for mj, g in zip(state[0], grads))
        v = tuple(vj + (tf.square(g) - vj) * (1 - beta_2) for vj, g in zip(state[1], grads))
        new = (m, v)
        if self.option("amsgrad"):
            v = tuple(tf.maximum(h, vj) for h, vj in zip(state[2], v))
            new = (m, new[1], v)
        return tuple(p - alpha * mj / (tf.sqrt(vj) + eps) for p, mj, vj in zip(params, m, v)), new

    def _adagrad(self, params, grads, state, step, lr):
        eps = self.option("epsilon")
        accumulators = tuple(a + tf.square(g) for a, g in zip(state[0], grads))
        return tuple(p - (lr * g) / tf.sqrt(a + eps) for p, g, a in zip(params, grads, accumulators)), (accumulators,)

    def _adamax(self, params, grads, state, step, lr):
        beta_1, beta_2, eps = self.option("beta_1"), self.option("beta_2"), self.option("epsilon")
        m = tuple(mj + (g - mj) * (1 - beta_1) for mj, g in zip(state[0], grads))
        u = tuple(tf.maximum(beta_2 * uj, tf.abs(g)) for uj, g in zip(state[1], grads))
        correction = 1 - tf.pow(tf.constant(beta_1, tf.float32), step)
        return tuple(p - (lr * mj) / (correction * (uj + eps)) for p, mj, uj in zip(params, m, u)), (m, u)

    def _nadam(self, params, grads, state, step, lr):
        beta_1, beta_2, eps = self.option("beta_1"), self.option("beta_2"), self.option("epsilon")
        decay = tf.constant(NADAM_DECAY, tf.float32)
        u_t = beta_1 * (1.0 - 0.5 * tf.pow(decay, step))
        u_next = beta_1 * (1.0 - 0.5 * tf.pow(decay, step + 1.0))
        product = state[2][0] * beta_1 * (1.0 - 0.5 * tf.pow(decay, step))  # updated before the step, as Keras does
        product_next = product * u_next
        beta_2_power = tf.pow(tf.constant(beta_2, tf.float32), step)
        m = tuple(mj + (g - mj) * (1 - beta_1) for mj, g in zip(state[0], grads))
        v = tuple(vj + (tf.square(g) - vj) * (1 - beta_2) for vj, g in zip(state[1], grads))
        updated = []
        for p, g, mj, vj in zip(params, grads, m, v):
            m_hat = (u_next * mj) / (1 - product_next) + ((1 - u_t) * g) / (1 - product)
            updated.append(p - (m_hat * lr) / (tf.sqrt(vj / (1 - beta_2_power)) + eps))
        return tuple(updated), (m, v, tuple(product for _ in params))

    def _lion(self, params, grads, state, step, lr):
        beta_1, beta_2 = self.option("beta_1"), self.option("beta_2")
        params = tuple(p - lr * tf.sign(mj * beta_1 + g * (1.0 - beta_1)) for p, mj, g in zip(params, state[0], grads))
        return params, (tuple(mj * beta_2 + g * (1.0 - beta_2) for mj, g in zip(state[0], grads)),)


    def _ftrl(self, params, grads, state, step, lr):
        power, l1 = self.option("learning_rate_power"), self.option("l1_regularization_strength")
        l2 = self.option("l2_regularization_strength") + self.option("beta") / (2.0 * lr)
        shrinkage = self.option("l2_shrinkage_regularization_strength")
        updated, accumulators, linears = [], [], []
        for p, g, accumulator, linear in zip(params, grads, *state):
            new = accumulator + tf.square(g)
            linear = linear + ((g + 2 * shrinkage * p) - ((tf.pow(new, -power) - tf.pow(accumulator, -power)) / lr) * p)
            quadratic = tf.pow(new, -power) / lr + 2 * l2
            updated.append((tf.clip_by_value(linear, -l1, l1) - linear) / quadratic)
            accumulators.append(new)
            linears.append(linear)
        return tuple(updated), (tuple(accumulators), tuple(linears))


def read_optimizer(optimizer) -> Optimizer:
    """The model's optimizer as an :class:`Optimizer`, or UnsupportedForBatching naming what is not reproduced."""
    name = type(optimizer).__name__
    if type(optimizer) not in OPTIMIZERS:
        raise UnsupportedForBatching(f"optimizer {name}")
    try:
        config = optimizer.get_config()
    except NotImplementedError as error:  # a custom learning-rate schedule without get_config
        raise UnsupportedForBatching(f"learning-rate schedule: {error}") from None
    extras = [k for k in UNSUPPORTED_OPTIONS if config.get(k)]
    if config.get("use_ema") and config.get("ema_overwrite_frequency"):
        extras.append("use_ema and ema_overwrite_frequency")
    if getattr(optimizer, "_exclude_from_weight_decay", None) or getattr(
            optimizer, "_exclude_from_weight_decay_pattern", None):  # set only by exclude_from_weight_decay()
        extras.append("exclude_from_weight_decay")
    if extras:
        raise UnsupportedForBatching(f"{name} with {', '.join(extras)}")
    rate = config["learning_rate"]
    if isinstance(rate, dict):
        # Keras' own schedules are written with keras.ops and compile into the loop; a user's may not
        if rate.get("module") != "keras.optimizers.schedules" or rate.get("class_name") not in SCHEDULES:
            raise UnsupportedForBatching(f"learning-rate schedule {rate.get('class_name')}")
        rate = json.dumps(rate, sort_keys=True)
    else:
        rate = float(rate)
    kind = "Adam" if isinstance(optimizer, keras.optimizers.Adam) else name
    options = tuple(sorted((k, config[k]) for k in OPTIMIZERS[type(optimizer)]))
    clipping = next(((k, float(config[k])) for k in CLIPPING if config.get(k) and config[k] > 0), ())
    return Optimizer(kind, options, float(config.get("weight_decay") or 0.0), rate, clipping,
                     bool(config.get("use_ema")))
