"""The batched evaluator: several candidates trained together in one compiled computation.

Small models spend almost all of ``model.fit``'s time on per-step Python dispatch, not arithmetic. This evaluator
trains every job of a batch (the candidates of a GRS step, the attempts of a JGRS phase) at once: their weights are
stacked along a leading candidate axis at the batch's largest widths, units a candidate does not have are masked to
zero, and each epoch runs as one XLA-compiled loop over the mini-batches. Each candidate keeps its own weights,
dropout masks and Adam state; loss, optimizer settings, epochs, batch size, per-epoch shuffling and the best-epoch
rule are those of the keras path. The best epoch's weights are copied back into each job's (physically smaller)
model and saved to its checkpoint, so trials look exactly like the keras evaluator's.

Supported for now: chains of Dense layers (with Dropout, Activation/ReLU and a leading Flatten), softmax output,
sparse categorical cross-entropy, Adam. Anything else falls back to :class:`KerasEvaluator`, said once.
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_grs.costs import count_flops, count_params
from keras_grs.evaluate.keras import KerasEvaluator
from keras_grs.structure import layer_chain

ACTIVATIONS = {"relu": tf.nn.relu, "linear": tf.identity, "tanh": tf.tanh, "sigmoid": tf.sigmoid}


class UnsupportedForBatching(ValueError):
    pass


def _plan(model):
    """The model as a list of steps: ("dense", layer, activation) and ("dropout", rate), or raise."""
    config = model.get_compile_config() if model.compiled else {}
    loss = config.get("loss")
    if loss not in ("sparse_categorical_crossentropy",):
        raise UnsupportedForBatching(f"loss {loss!r}")
    optimizer = model.optimizer
    if type(optimizer) is not keras.optimizers.Adam or optimizer.amsgrad:
        raise UnsupportedForBatching(f"optimizer {type(optimizer).__name__}")
    steps = []
    for i, layer in enumerate(layer_chain(model)):
        if isinstance(layer, keras.layers.Dense):
            if len(layer.input.shape) != 2:
                raise UnsupportedForBatching("Dense on a sequence")
            steps.append(["dense", layer, layer.activation.__name__])
        elif isinstance(layer, keras.layers.Dropout):
            steps.append(["dropout", float(layer.rate)])
        elif isinstance(layer, (keras.layers.Activation, keras.layers.ReLU)) and steps and steps[-1][0] == "dense" \
                and steps[-1][2] == "linear":
            steps[-1][2] = "relu" if isinstance(layer, keras.layers.ReLU) else layer.activation.__name__
        elif isinstance(layer, keras.layers.Flatten) and i == 0:
            continue
        else:
            raise UnsupportedForBatching(f"layer {type(layer).__name__}")
    dense = [s for s in steps if s[0] == "dense"]
    if dense[-1][2] != "softmax" or any(s[2] not in ACTIVATIONS for s in dense[:-1]):
        raise UnsupportedForBatching("activations")
    return steps


def _signature(steps, model):
    optimizer = model.optimizer.get_config()
    return (
        tuple((s[0], s[2]) if s[0] == "dense" else tuple(s) for s in steps),
        int(np.prod(model.input_shape[1:])),
        tuple(sorted((k, str(v)) for k, v in optimizer.items() if k in ("learning_rate", "beta_1", "beta_2", "epsilon"))),
    )


class BatchedEvaluator:
    """Train all jobs of a batch together (see the module docstring); fall back to the keras evaluator otherwise.

    Args:
        objective: a keras-tuner Objective (``val_accuracy``).
        seed: seed of shuffling and dropout.
    """

    def __init__(self, objective, hypermodel=None, executions_per_trial=1, seed=0):
        self.objective = objective
        self.fallback = KerasEvaluator(objective, hypermodel, executions_per_trial)
        self.seed = seed
        self._warned = False
        self._calls = 0
        self._capacity = None  # the widths the stacked weights are padded to
        self._slots = 0  # the number of candidates they are padded to
        self._compiled = {}

    batches = True  # the tuner hands it every pending trial at once

    def evaluate(self, jobs, fit_args, fit_kwargs):
        if not all(job.train for job in jobs):
            return self.fallback.evaluate(jobs, fit_args, fit_kwargs)
        try:
            if self.objective.name != "val_accuracy":
                raise UnsupportedForBatching(f"objective {self.objective.name}")
            plans = [_plan(job.model) for job in jobs]
            signatures = {_signature(p, j.model) for p, j in zip(plans, jobs)}
            if len(signatures) != 1:
                raise UnsupportedForBatching("jobs differ")
            float(jobs[0].model.optimizer.get_config()["learning_rate"])
            if set(fit_kwargs) - {"epochs", "batch_size", "validation_data", "verbose", "callbacks", "shuffle"}:
                raise UnsupportedForBatching(f"fit arguments {sorted(fit_kwargs)}")
            if fit_kwargs.get("callbacks"):
                raise UnsupportedForBatching("callbacks")
        except (UnsupportedForBatching, TypeError) as reason:
            if not self._warned:
                warnings.warn(f"batched evaluation does not support this model ({reason}); using one fit per trial",
                              stacklevel=2)
                self._warned = True
            return self.fallback.evaluate(jobs, fit_args, fit_kwargs)
        self._calls += 1
        return self._train(jobs, plans[0], fit_args, fit_kwargs)

    # -------------------------------------------------------------------------------------------------------
    def _train(self, jobs, plan, fit_args, fit_kwargs):
        x, y = (np.asarray(a) for a in fit_args[:2])
        x = x.reshape(len(x), -1).astype("float32")
        y = y.reshape(-1).astype("int32")
        x_val, y_val = fit_kwargs["validation_data"][:2]
        x_val = np.asarray(x_val).reshape(len(x_val), -1).astype("float32")
        y_val = np.asarray(y_val).reshape(-1).astype("int32")
        epochs = int(fit_kwargs.get("epochs", 1))
        batch = int(fit_kwargs.get("batch_size") or 32)
        shuffle = fit_kwargs.get("shuffle", True)
        per_job = [[layer for layer in layer_chain(job.model) if isinstance(layer, keras.layers.Dense)] for job in jobs]
        # Pad to the largest widths and candidate count seen so far, so later batches reuse the compiled program.
        widths = [max(layers[i].units for layers in per_job) for i in range(len(per_job[0]))]
        self._capacity = [max(a, b) for a, b in zip(widths, self._capacity or widths)]
        self._slots = max(self._slots, len(jobs))
        widths, k = self._capacity, self._slots
        inputs = [x.shape[1]] + widths[:-1]
        params, masks = [], []
        for i, (n_in, n_out) in enumerate(zip(inputs, widths)):
            kernel = np.zeros((k, n_in, n_out), "float32")
            bias = np.zeros((k, n_out), "float32")
            mask = np.zeros((k, n_out), "float32")
            for j, layers in enumerate(per_job):
                w, b = layers[i].get_weights()
                kernel[j, : w.shape[0], : w.shape[1]] = w
                bias[j, : b.shape[0]] = b
                mask[j, : b.shape[0]] = 1.0
            params += [tf.constant(kernel), tf.constant(bias)]
            masks.append(tf.constant(mask))
        active = tf.constant((np.arange(k) < len(jobs)).astype("float32"))
        config = jobs[0].model.optimizer.get_config()
        hyper = tuple(float(config[n]) for n in ("learning_rate", "beta_1", "beta_2", "epsilon"))
        activations = tuple(s[2] for s in plan if s[0] == "dense")
        dropouts = []  # the dropout rate after each dense layer
        for step in plan:
            if step[0] == "dense":
                dropouts.append(0.0)
            elif dropouts:
                dropouts[-1] = 1 - (1 - dropouts[-1]) * (1 - step[1])
        n_batches = math.ceil(len(x) / batch)
        epoch_fn, validate_fn = self._programs(k, tuple(widths), x.shape[1], n_batches, batch, hyper, activations,
                                               tuple(dropouts))
        moments = [tf.zeros_like(p) for p in params] + [tf.zeros_like(p) for p in params]
        step = tf.constant(0.0)
        rng = np.random.default_rng([self.seed, self._calls])
        best = np.full(k, -np.inf)
        best_params = [p.numpy() for p in params]
        best_loss = np.zeros(k)
        padded = n_batches * batch
        x_val_t, y_val_t = tf.constant(x_val), tf.constant(y_val)
        for _ in range(epochs):
            order = rng.permutation(len(x)) if shuffle else np.arange(len(x))
            index = np.concatenate([order, np.zeros(padded - len(x), dtype=int)])
            weights = np.concatenate([np.ones(len(x)), np.zeros(padded - len(x))]).astype("float32")
            params, moments, step, losses = epoch_fn(
                params, moments, step, masks, active,
                tf.constant(x[index].reshape(n_batches, batch, -1)),
                tf.constant(y[index].reshape(n_batches, batch)),
                tf.constant(weights.reshape(n_batches, batch)),
                tf.constant(int(rng.integers(1 << 30)), tf.int32),
            )
            accuracy = validate_fn(params, masks, x_val_t, y_val_t).numpy()
            improved = accuracy > best
            if improved.any():
                for store, p in zip(best_params, params):
                    store[improved] = p.numpy()[improved]
                best[improved] = accuracy[improved]
                best_loss[improved] = losses.numpy()[improved]
        results = []
        for j, (job, layers) in enumerate(zip(jobs, per_job)):
            for i, layer in enumerate(layers):
                w_in, w_out = layer.kernel.shape
                layer.set_weights([best_params[2 * i][j, :w_in, :w_out], best_params[2 * i + 1][j, :w_out]])
            job.model.save_weights(job.checkpoint)
            results.append({
                "val_accuracy": float(best[j]),
                "loss": float(best_loss[j]),
                "params": count_params(job.model),
                "flops": count_flops(job.model),
            })
        return results

    def _programs(self, k, widths, n_inputs, n_batches, batch, hyper, activations, dropouts):
        """The compiled epoch and validation functions for one shape of problem, built once and reused."""
        key = (k, widths, n_inputs, n_batches, batch, hyper, activations, dropouts)
        if key in self._compiled:
            return self._compiled[key]
        lr, beta_1, beta_2, eps = hyper
        layers = len(widths)

        def forward(params, masks, xb, training, seed):
            h = tf.broadcast_to(xb[None], (k, *xb.shape))
            for i in range(layers):
                z = tf.einsum("kbi,kio->kbo", h, params[2 * i]) + params[2 * i + 1][:, None, :]
                if i == layers - 1:
                    return tf.nn.softmax(z, axis=-1)
                h = ACTIVATIONS[activations[i]](z) * masks[i][:, None, :]
                if training and dropouts[i] > 0:
                    keep = tf.random.stateless_uniform(h.shape, seed=seed + i, alg="threefry") >= dropouts[i]
                    h = tf.where(keep, h / (1 - dropouts[i]), 0.0)
            return h

        @tf.function(jit_compile=True, reduce_retracing=True)
        def epoch(params, moments, step, masks, active, xs, ys, ws, seed):
            # tuples reassigned whole, so that AutoGraph carries them through the loop
            params, m, v = tuple(params), tuple(moments[: len(params)]), tuple(moments[len(params):])
            total = tf.zeros((k,))
            for i in tf.range(n_batches):
                with tf.GradientTape() as tape:
                    tape.watch(list(params))
                    probs = tf.clip_by_value(forward(params, masks, xs[i], True, tf.stack([seed, i])), 1e-7, 1 - 1e-7)
                    picked = tf.reduce_sum(probs * tf.one_hot(ys[i], probs.shape[-1])[None], axis=-1)  # (k, batch)
                    losses = -tf.reduce_sum(tf.math.log(picked) * ws[i], axis=1) / tf.reduce_sum(ws[i])
                    loss = tf.reduce_sum(losses * active)
                grads = tape.gradient(loss, list(params))
                step = step + 1.0
                alpha = lr * tf.sqrt(1 - beta_2**step) / (1 - beta_1**step)
                m = tuple(mj + (g - mj) * (1 - beta_1) for mj, g in zip(m, grads))
                v = tuple(vj + (tf.square(g) - vj) * (1 - beta_2) for vj, g in zip(v, grads))
                params = tuple(p - alpha * mj / (tf.sqrt(vj) + eps) for p, mj, vj in zip(params, m, v))
                total += losses
            return list(params), list(m + v), step, total / tf.cast(n_batches, tf.float32)

        @tf.function(jit_compile=True, reduce_retracing=True)
        def validate(params, masks, xv, yv):
            probs = forward(params, masks, xv, False, tf.constant([0, 0]))
            correct = tf.cast(tf.equal(tf.argmax(probs, axis=-1, output_type=tf.int32), yv[None]), tf.float32)
            return tf.reduce_mean(correct, axis=1)

        self._compiled[key] = (epoch, validate)
        return epoch, validate
