"""EUP, the unstructured stage: weight thresholding (T), then quantization (Q), without retraining.

Applied to the compact model of a structured search:

* :func:`threshold` zeroes every kernel and bias value of the Dense/Conv layers whose magnitude is below a threshold,
  raising the threshold step by step while ``accuracy >= tolerance x reference`` (default 0.995); the last passing
  model is kept. In the default ``relative`` mode the threshold of a layer is ``t x std(layer's weights)``, with
  ``t = init, init + step, ...`` (0.3, 0.4, ...): scale-free, so one setting suits every layer and model. The
  ``absolute`` mode uses ``t`` itself as the threshold (the research code's 0.001, 0.002, ...).
* :func:`quantize` rounds the same weights to ``d`` decimal digits, ``d = start_digits, start_digits - 1, ..., 0``,
  while ``accuracy >= tolerance x reference`` (default 0.990, reference: the thresholded model's accuracy); the last
  passing model is kept. It reports the number of distinct weight values.
* :func:`tq` does both, in that order.

"Accuracy" above is the search's objective (``objective=``, default ``val_accuracy``): a minimized one such as
``val_loss`` passes while ``loss <= reference / tolerance``. The records' ``val_accuracy`` fields hold that score.

Inputs are never changed: every function returns a new model and a record of what it did. BatchNormalization
parameters are left alone (they fold into the preceding layer for inference).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import keras
import numpy as np

from keras_grs.costs import count_flops, count_params
from keras_grs.scoring import correct, is_accuracy, objective_direction, score
from keras_grs.search.engine import beyond_paired_noise, check_tolerance, guard_holds, within_tolerance
from keras_grs.layers import kind_of
from keras_grs.structure import leaf_layers
from keras_grs.surgery import resized

MAX_STEPS = 1000


@dataclass(frozen=True)
class ThresholdResult:
    """What :func:`threshold` did. ``threshold`` is the last passing ``t`` (None: no step passed); ``val_accuracy``
    is the objective's validation score."""

    mode: str
    threshold: float | None
    steps: int
    reference: float
    val_accuracy: float
    params: int
    nonzero_params: int
    flops: int
    nonzero_flops: int
    objective: str = "val_accuracy"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QuantizeResult:
    """What :func:`quantize` did. ``digits`` is the fewest passing decimal digits (None: none passed)."""

    digits: int | None
    reference: float
    val_accuracy: float
    distinct_values: int
    nonzero_params: int
    nonzero_flops: int
    objective: str = "val_accuracy"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TQResult:
    threshold: ThresholdResult
    quantize: QuantizeResult

    def as_dict(self) -> dict:
        return {"threshold": self.threshold.as_dict(), "quantize": self.quantize.as_dict()}


def _copy(model: keras.Model) -> keras.Model:
    """An independent copy, compiled like the original when it was compiled."""
    copy = resized(model, {})
    copy.set_weights(model.get_weights())
    return copy


def _prunable_layers(model):
    """The layers whose kernels (and biases) EUP thresholds and quantizes: every weighted producer of the graph
    (Dense, Conv, depthwise and separable convolutions), the output layer included."""
    return [layer for layer in leaf_layers(model) if kind_of(layer).role == "producer"]


def _check_validation(validation_data):
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("validation_data must be a tuple (x_val, y_val)")
    x, y = validation_data
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"validation_data has {len(x)} samples and {len(y)} labels; they must match and be non-empty")
    return np.asarray(x), np.asarray(y)


def _thresholded(originals, layers, t, mode):
    for layer, weights in zip(layers, originals):
        if mode == "relative":
            flat = np.concatenate([w.ravel() for w in weights])
            limit = t * float(np.std(flat))
        else:
            limit = t
        layer.set_weights([np.where(np.abs(w) < limit, np.zeros_like(w), w) for w in weights])


def threshold(model, validation_data, reference=None, tolerance=0.995, mode="relative", init=None, step=None,
              objective="val_accuracy", guard_data=None, guard_baseline=None, guard_tolerance=None):
    """Zero small weights while validation accuracy stays within ``tolerance`` of ``reference``.

    Args:
        model: a Keras model of supported layers (usually the compact model of a search).
        validation_data: ``(x_val, y_val)``.
        reference: the accuracy to compare with; default: ``model``'s own validation accuracy.
        tolerance: a step passes when ``accuracy >= tolerance x reference`` (default 0.995).
        mode: ``relative`` (threshold = t x the layer's weight standard deviation) or ``absolute``.
        init, step: the first ``t`` and its increment; defaults 0.3 / 0.1 (relative), 0.001 / 0.001 (absolute).
        objective: the score checked (default ``val_accuracy``; ``val_loss`` or a compiled metric, see
            :func:`keras_grs.scoring.score`), in its direction.
        guard_data: ``(x, y)`` held back from the search (see :mod:`keras_grs.guard`): a step must also keep the
            guard score within tolerance of ``model``'s, up to the guard's sampling noise. Optional.
        guard_baseline, guard_tolerance: the model the whole job's promise is measured from (the search's initial
            model) and the search's tolerance: every step must also stay within ``guard_tolerance`` of it on the
            guard, up to noise, so EUP's own tolerance adds to the search's loss only as far as the search left
            room. Optional (both or neither); needs ``guard_data``.

    Returns:
        ``(new_model, ThresholdResult)``.

    Example:
        >>> import numpy as np, keras
        >>> from keras_grs import eup, models
        >>> model = models.build("nn2", (4,))
        >>> x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
        >>> y = (x[:, 0] > 0).astype("int32")
        >>> _ = model.fit(x, y, epochs=20, verbose=0)
        >>> sparse, info = eup.threshold(model, (x, y))
        >>> info.nonzero_params <= info.params and info.val_accuracy >= 0.995 * info.reference
        True
    """
    x, y = _check_validation(validation_data)
    check_tolerance(tolerance)
    if mode not in ("relative", "absolute"):
        raise ValueError(f"mode must be 'relative' or 'absolute', got {mode!r}")
    default_init, default_step = (0.3, 0.1) if mode == "relative" else (0.001, 0.001)
    init = default_init if init is None else float(init)
    step = default_step if step is None else float(step)
    if init < 0 or step <= 0:
        raise ValueError(f"init must be >= 0 and step > 0, got init={init}, step={step}")
    direction = objective_direction(objective)
    reference = score(model, x, y, objective) if reference is None else float(reference)

    guard_ok = _guard_veto(model, guard_data, tolerance, objective, guard_baseline, guard_tolerance)
    work = _copy(model)
    layers = _prunable_layers(work)
    originals = [layer.get_weights() for layer in layers]
    best_t, best_weights, best_accuracy, steps = None, None, None, 0
    for i in range(MAX_STEPS):
        t = init + i * step
        _thresholded(originals, layers, t, mode)
        value = score(work, x, y, objective)
        steps += 1
        if not within_tolerance(value, reference, tolerance, direction) or not guard_ok(work):
            break
        best_t, best_accuracy = t, value
        best_weights = [layer.get_weights() for layer in layers]
        if not any(np.any(w) for weights in best_weights for w in weights):
            break
    for layer, weights in zip(layers, best_weights or originals):
        layer.set_weights(weights)
    if best_weights is None:
        best_accuracy = score(work, x, y, objective)
    result = ThresholdResult(
        mode=mode,
        threshold=None if best_t is None else round(best_t, 10),
        steps=steps,
        reference=reference,
        val_accuracy=best_accuracy,
        params=count_params(work),
        nonzero_params=count_params(work, nonzero=True),
        flops=count_flops(work),
        nonzero_flops=count_flops(work, nonzero=True),
        objective=objective,
    )
    return work, result


def _guard_veto(model, guard_data, tolerance, objective, baseline=None, baseline_tolerance=None):
    """A check each EUP step must pass on the guard: within ``tolerance`` of ``model`` (the stage's input) and, with
    a ``baseline``, within ``baseline_tolerance`` of it (the job's promise), each up to the guard's noise: the
    guard vetoes on evidence, as in the search's walk back. For accuracy the comparison is paired, sample by
    sample (:func:`keras_grs.search.engine.beyond_paired_noise`): a thresholded model errs mostly where its input
    did, so a few lost samples are evidence here that two unrelated scores could not give. Always true without a
    guard."""
    if (baseline is None) != (baseline_tolerance is None):
        raise ValueError("guard_baseline and guard_tolerance go together: give both or neither")
    if guard_data is None:
        if baseline is not None:
            raise ValueError("guard_baseline needs guard_data: the baseline is compared with each step on the guard")
        return lambda candidate: True
    x, y = _check_validation(guard_data)
    references = [(model, tolerance)]
    if baseline is not None:
        check_tolerance(baseline_tolerance, "guard_tolerance")
        references.append((baseline, float(baseline_tolerance)))
    if is_accuracy(objective):
        rights = [(correct(m, x, y), t) for m, t in references]

        def paired(candidate):
            right = correct(candidate, x, y)
            return not any(beyond_paired_noise(reference, right, t) for reference, t in rights)

        return paired
    direction = objective_direction(objective)
    scores = [(score(m, x, y, objective), t) for m, t in references]
    return lambda candidate: all(guard_holds(score(candidate, x, y, objective), reference, t, direction, len(y))
                                 for reference, t in scores)


def distinct_values(model) -> int:
    """Number of distinct kernel and bias values of the Dense/Conv layers."""
    values = [w.ravel() for layer in _prunable_layers(model) for w in layer.get_weights()]
    return int(np.unique(np.concatenate(values)).size) if values else 0


def quantize(model, validation_data, reference=None, tolerance=0.990, start_digits=4, objective="val_accuracy",
             guard_data=None, guard_baseline=None, guard_tolerance=None):
    """Round weights to fewer and fewer decimal digits while validation accuracy stays within tolerance.

    Args:
        model: a Keras model of supported layers (usually the thresholded model).
        validation_data: ``(x_val, y_val)``.
        reference: the accuracy to compare with; default: ``model``'s own validation accuracy.
        tolerance: a step passes when ``accuracy >= tolerance x reference`` (default 0.990).
        start_digits: the first number of decimal digits tried (then one fewer each step, down to 0).
        objective: the score checked, in its direction (as for :func:`threshold`).
        guard_data, guard_baseline, guard_tolerance: the guard every step must also hold (as for
            :func:`threshold`). Optional.

    Returns:
        ``(new_model, QuantizeResult)``.
    """
    x, y = _check_validation(validation_data)
    check_tolerance(tolerance)
    if isinstance(start_digits, bool) or not isinstance(start_digits, (int, np.integer)) or start_digits < 0:
        raise ValueError(f"start_digits must be a non-negative integer, got {start_digits!r}")
    direction = objective_direction(objective)
    reference = score(model, x, y, objective) if reference is None else float(reference)
    guard_ok = _guard_veto(model, guard_data, tolerance, objective, guard_baseline, guard_tolerance)
    work = _copy(model)
    layers = _prunable_layers(work)
    originals = [layer.get_weights() for layer in layers]
    best_digits, best_weights, best_accuracy = None, None, None
    for digits in range(int(start_digits), -1, -1):
        for layer, weights in zip(layers, originals):
            layer.set_weights([np.round(w, digits).astype(w.dtype) for w in weights])
        value = score(work, x, y, objective)
        if not within_tolerance(value, reference, tolerance, direction) or not guard_ok(work):
            break
        best_digits, best_accuracy = digits, value
        best_weights = [layer.get_weights() for layer in layers]
    for layer, weights in zip(layers, best_weights or originals):
        layer.set_weights(weights)
    if best_weights is None:
        best_accuracy = score(work, x, y, objective)
    result = QuantizeResult(
        digits=best_digits,
        reference=reference,
        val_accuracy=best_accuracy,
        distinct_values=distinct_values(work),
        nonzero_params=count_params(work, nonzero=True),
        nonzero_flops=count_flops(work, nonzero=True),
        objective=objective,
    )
    return work, result


def tq(
    model,
    validation_data,
    reference=None,
    threshold_tolerance=0.995,
    quantize_tolerance=0.990,
    mode="relative",
    init=None,
    step=None,
    start_digits=4,
    objective="val_accuracy",
    guard_data=None,
    guard_baseline=None,
    guard_tolerance=None,
):
    """Thresholding, then quantization (the seed's TQ). Quantization's reference is the thresholded score.

    With ``guard_data``, every step of both must also hold the guard (see :func:`threshold`); with
    ``guard_baseline`` and ``guard_tolerance`` too, both stay within the job's tolerance of the baseline there.

    Returns:
        ``(new_model, TQResult)``.
    """
    thresholded, t_result = threshold(
        model, validation_data, reference=reference, tolerance=threshold_tolerance, mode=mode, init=init, step=step,
        objective=objective, guard_data=guard_data, guard_baseline=guard_baseline, guard_tolerance=guard_tolerance,
    )
    quantized, q_result = quantize(
        thresholded, validation_data, reference=t_result.val_accuracy, tolerance=quantize_tolerance,
        start_digits=start_digits, objective=objective, guard_data=guard_data, guard_baseline=guard_baseline,
        guard_tolerance=guard_tolerance,
    )
    return quantized, TQResult(t_result, q_result)
