"""What the batched evaluator reproduces of a compiled model: its loss, accuracy, optimizer and regularizers.

Each rule is read from the model's own compile configuration (Keras' public objects) and written as the update
Keras 3 applies, so that one candidate trained by the batched evaluator ends with the weights ``model.fit`` gives it
(same initial weights, same batches; ``tests/test_batched_parity.py``). What a rule cannot reproduce raises
:class:`UnsupportedForBatching` with a reason naming it; the evaluator then falls back to one fit per trial and the
tuner records the reason in the trial's ``evaluation.json``.

Supported: sparse or categorical cross-entropy on a softmax output, binary cross-entropy on a sigmoid output (or
any of them ``from_logits`` on a linear output; label smoothing included); SGD (momentum, Nesterov), RMSprop
(momentum, centered), Adam and AdamW (betas, epsilon, AMSGrad); weight decay, and Keras' learning-rate schedules,
for all of them; L1/L2/L1L2 kernel and bias regularizers.
"""

from __future__ import annotations

import json
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
}
OUTPUT_OF_LOSS = {  # the output activation whose logits each loss reads
    "sparse_categorical_crossentropy": "softmax",
    "categorical_crossentropy": "softmax",
    "binary_crossentropy": "sigmoid",
}
FREE_LOSS_OPTIONS = ("name", "dtype", "from_logits", "label_smoothing")  # read below, or without effect here
NEUTRAL_LOSS_OPTIONS = {"reduction": "sum_over_batch_size", "axis": -1, "ignore_class": None}


@dataclass(frozen=True)
class Loss:
    """A cross-entropy on the model's logits, and the accuracy Keras' ``"accuracy"`` metric computes.

    ``output``: the model's output activation (``softmax``, ``sigmoid`` or ``linear`` for logits);
    ``label_smoothing`` as Keras applies it.
    """

    name: str
    output: str
    label_smoothing: float = 0.0

    @property
    def sparse(self):
        return self.name == "sparse_categorical_crossentropy"

    def per_sample(self, labels, logits):
        """(k, batch) losses of logits (k, batch, units) against labels: (batch,) ids or (batch, units) targets,
        shared by the k candidates, or the same with a leading candidate axis."""
        if len(labels.shape) < len(logits.shape) - self.sparse:  # shared: the same labels for every candidate
            labels = tf.broadcast_to(labels[None], (logits.shape[0], *labels.shape))
        if self.sparse:
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
        if self.name == "categorical_crossentropy":
            if self.label_smoothing:
                labels = labels * (1.0 - self.label_smoothing) + self.label_smoothing / logits.shape[-1]
            return tf.nn.softmax_cross_entropy_with_logits(labels, logits)
        if self.label_smoothing:
            labels = labels * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits), axis=-1)

    def accuracy(self, labels, logits):
        """(k, samples) 0/1: Keras' ``"accuracy"``, which it resolves from the shapes: binary for one output
        unit (output > 0.5), sparse for id labels, categorical (argmax against argmax) otherwise."""
        outputs = {"softmax": tf.nn.softmax, "sigmoid": tf.sigmoid, "linear": tf.identity}[self.output](logits)
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
    if loss not in OUTPUT_OF_LOSS:
        raise UnsupportedForBatching(f"loss {loss!r}")
    extra = sorted(k for k, v in options.items()
                   if k not in FREE_LOSS_OPTIONS and (k not in NEUTRAL_LOSS_OPTIONS or v != NEUTRAL_LOSS_OPTIONS[k]))
    if extra:
        raise UnsupportedForBatching(f"loss {loss} with {', '.join(extra)}")
    # Keras reads the logits under a softmax/sigmoid output whatever from_logits says; a linear output must be logits
    expected = OUTPUT_OF_LOSS[loss]
    if output_activation == "linear" and not options.get("from_logits"):
        raise UnsupportedForBatching(f"loss {loss} on a linear output without from_logits=True")
    if output_activation not in (expected, "linear"):
        raise UnsupportedForBatching(f"loss {loss} on a {output_activation} output (needs {expected})")
    return Loss(loss, output_activation, float(options.get("label_smoothing") or 0.0))


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
}
UNSUPPORTED_OPTIONS = ("clipnorm", "clipvalue", "global_clipnorm", "use_ema", "gradient_accumulation_steps",
                       "loss_scale_factor")
SCHEDULES = ("CosineDecay", "CosineDecayRestarts", "ExponentialDecay", "InverseTimeDecay", "PiecewiseConstantDecay",
             "PolynomialDecay")


@dataclass(frozen=True)
class Optimizer:
    """A Keras optimizer's update, applied to stacked weights: ``kind`` (SGD, RMSprop, Adam), its options as
    sorted pairs, the weight decay, and the learning rate (a float or a serialized Keras schedule)."""

    kind: str
    options: tuple
    weight_decay: float
    learning_rate: float | str

    def option(self, name):
        return dict(self.options)[name]

    def slots(self) -> int:
        """How many state tensors each weight has."""
        if self.kind == "SGD":
            return 1 if self.option("momentum") else 0
        if self.kind == "RMSprop":
            return 1 + bool(self.option("momentum")) + bool(self.option("centered"))
        return 3 if self.option("amsgrad") else 2

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
        if self.weight_decay:
            params = tuple(p - p * self.weight_decay * lr for p in params)
        return getattr(self, "_" + self.kind.lower())(params, grads, state, step, lr)

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
    return Optimizer(kind, options, float(config.get("weight_decay") or 0.0), rate)
