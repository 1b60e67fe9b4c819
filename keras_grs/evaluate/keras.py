"""The reference evaluator: one ``model.fit`` per candidate."""

from __future__ import annotations

import copy
import os

import keras
import numpy as np
from keras_tuner.src.engine import tuner_utils

from keras_grs.costs import count_flops, count_params
from keras_grs.latency import latency_ms
from keras_grs.evaluate.base import Job, check_epoch_score, validation_samples
from keras_grs.files import load_weights, record_digest, save_weights
from keras_grs.surgery import compile_arguments
from keras_grs.importance import unit_norms  # noqa: F401  (its old home: keras_grs.evaluate.keras.unit_norms)


class KerasEvaluator:
    """Fine-tune each candidate with ``model.fit`` (or a HyperModel's own ``fit``) and score it.

    With ``epoch_score="best"`` the score of a candidate is the best value of the objective over its epochs, and
    the weights of that epoch are the ones saved, inherited by its children and returned by ``get_best_models``:
    keras-tuner's own convention (and the seed's). With ``epoch_score="last"`` the weights and the score are those of
    the last epoch. With ``executions_per_trial > 1``, each
    execution starts again from the inherited weights with a fresh optimizer; the metrics are averaged and the best
    epoch of all executions ("best") or the last execution ("last") is saved.

    Args:
        objective: a keras-tuner Objective.
        hypermodel: the HyperModel whose ``fit`` trains (its default is ``model.fit``).
        executions_per_trial: how many times each candidate is fine-tuned.
        epoch_score: ``best`` or ``last`` (see above).
    """

    def __init__(self, objective, hypermodel=None, executions_per_trial=1, epoch_score="best"):
        self.objective = objective
        self.hypermodel = hypermodel
        self.executions_per_trial = executions_per_trial
        self.epoch_score = check_epoch_score(epoch_score)

    def evaluate(self, jobs: list[Job], fit_args: tuple, fit_kwargs: dict) -> list[dict]:
        return [self._evaluate_one(job, fit_args, fit_kwargs) for job in jobs]

    def _evaluate_one(self, job: Job, fit_args: tuple, fit_kwargs: dict) -> dict:
        model = job.model
        if job.train and self.epoch_score == "last":
            results = self._fit(job, fit_args, fit_kwargs)
            save_weights(model, job.checkpoint)  # the last epoch's weights
            metrics = _last_epoch_metrics(results if isinstance(results, list) else [results])
        elif job.train:
            results = self._fit(job, fit_args, fit_kwargs)
            record_digest(job.checkpoint)  # keras-tuner's callback wrote it; a later truncation is now detectable
            load_weights(model, job.checkpoint)
            metrics = tuner_utils.convert_to_metrics_dict(results, self.objective)
        else:
            results = validate(model, fit_args, fit_kwargs)
            save_weights(model, job.checkpoint)
            metrics = tuner_utils.convert_to_metrics_dict(results, self.objective)
        metrics = {name: float(value) for name, value in metrics.items()}
        history = results[-1] if isinstance(results, list) else results
        if job.train and hasattr(history, "epoch"):  # the last execution's: fewer than asked after EarlyStopping
            metrics["epochs"] = len(history.epoch)
        metrics["params"] = count_params(model)
        metrics["flops"] = count_flops(model)
        metrics["latency_ms"] = latency_ms(model)
        samples = validation_samples(fit_args, fit_kwargs)
        if samples:
            metrics["val_samples"] = samples
        return metrics

    def _fit(self, job, fit_args, fit_kwargs):
        model = job.model
        start = model.get_weights()
        saver_class = SaveLatestBestEpoch if self.epoch_score == "best_latest" else tuner_utils.SaveBestEpoch
        saver = saver_class(objective=self.objective, filepath=job.checkpoint)
        savers = [saver] if self.epoch_score != "last" else []
        user_callbacks = fit_kwargs.get("callbacks", [])
        histories = []
        for execution in range(self.executions_per_trial):
            if execution:
                model.set_weights(start)
                model.compile(**compile_arguments(model))  # a fresh optimizer state
            callbacks = copy.deepcopy(user_callbacks)
            _per_trial_tensorboard(callbacks, job.checkpoint, execution)
            kwargs = dict(fit_kwargs, callbacks=[*callbacks, *savers])
            if self.hypermodel is not None and job.hyperparameters is not None:
                history = self.hypermodel.fit(job.hyperparameters, model, *fit_args, **kwargs)
            else:
                history = model.fit(*fit_args, **kwargs)
            histories.append(history)
        return histories if len(histories) > 1 else histories[0]


class SaveLatestBestEpoch(tuner_utils.SaveBestEpoch):
    """keras-tuner's best-epoch saver, except that an epoch equal to the best so far is saved too: the weights are
    those of the last epoch reaching the best score."""

    def on_epoch_end(self, epoch, logs=None):
        if self.objective.has_value(logs) and self.objective.get_value(logs) == self.best_value:
            self._save_model()
            return
        super().on_epoch_end(epoch, logs)


def _last_epoch_metrics(histories) -> dict:
    """Every metric of the last epoch, averaged over executions."""
    names = histories[0].history.keys()
    return {name: float(np.mean([h.history[name][-1] for h in histories])) for name in names}


def _per_trial_tensorboard(callbacks, checkpoint, execution):
    """keras-tuner's layout: a TensorBoard callback logs to ``<log_dir>/<trial id>/execution<n>``."""
    trial_id = os.path.basename(os.path.dirname(checkpoint)).removeprefix("trial_")
    for callback in callbacks:
        if isinstance(callback, keras.callbacks.TensorBoard):
            callback.log_dir = os.path.join(str(callback.log_dir), trial_id, f"execution{execution}")


def validate(model: keras.Model, fit_args: tuple, fit_kwargs: dict) -> dict:
    """Metrics of ``model`` as it is, on the validation data of the fit arguments, named like fit's (``val_``)."""
    validation = fit_kwargs.get("validation_data")
    if validation is None:
        raise ValueError("validating without training needs validation_data=(x_val, y_val)")
    x_val, y_val = validation[0], validation[1]
    batch_size = fit_kwargs.get("batch_size") or 32  # evaluate's default
    values = _eager_evaluation(model, validation, batch_size)
    if values is None:
        weights = validation[2] if len(validation) > 2 else None  # as fit weighs its validation
        values = model.evaluate(x_val, y_val, batch_size=batch_size, sample_weight=weights, verbose=0,
                                return_dict=True)
    return {f"val_{name}": float(value) for name, value in values.items()}


EAGER_STEPS = 64  # validations of at most this many steps run eagerly (see _eager_evaluation)
EAGER_CHUNK = 2048  # samples a step takes when the model's scores add up per sample (see _per_sample_scores)


def _eager_evaluation(model, validation, batch_size: int) -> dict | None:
    """``evaluate``'s metrics from eager test steps, or None to leave it to ``evaluate``.

    ``evaluate`` traces a compiled test function for each new model, which for a small validation split costs
    several times the evaluation itself (0.3-0.4 s, against a few milliseconds per eager step of a small model);
    validating a model once, as the root of a search is, pays it for nothing. When the model's loss and metrics add
    up sample by sample (:func:`_per_sample_scores`), a step takes up to ``EAGER_CHUNK`` samples: the same values as
    batches of ``batch_size`` up to float rounding, and one step where a validation split of 600 samples took 19
    (nn1: 10 ms against 0.2 s); otherwise each step takes a batch as ``evaluate``'s would. Only for arrays of at
    most ``EAGER_STEPS`` steps (beyond that the compiled steps win); floats are cast to ``floatx`` as
    ``evaluate``'s adapter casts them. A step that fails eagerly (a model whose step runs only compiled) leaves it
    to ``evaluate``.
    """
    if validation[1] is None:
        return None
    arrays = [validation[i] for i in range(min(len(validation), 3)) if validation[i] is not None]
    if not all(isinstance(a, np.ndarray) for a in arrays) or len({len(a) for a in arrays}) != 1:
        return None
    n = len(arrays[0])
    step = max(batch_size, EAGER_CHUNK) if _per_sample_scores(model) else batch_size
    if n == 0 or -(-n // step) > EAGER_STEPS:
        return None
    floatx = keras.config.floatx()
    arrays = [a.astype(floatx) if a.dtype.kind == "f" and a.dtype != floatx else a for a in arrays]
    model.reset_metrics()
    try:
        for start in range(0, n, step):
            values = model.test_step(tuple(a[start: start + step] for a in arrays))
        return {name: float(value) for name, value in values.items()}
    except Exception:  # noqa: BLE001 - evaluate runs it compiled, and reports the model's own error, if any
        model.reset_metrics()
        return None


def _per_sample_scores(model) -> bool:
    """Whether ``model``'s compiled loss and metrics are sums over samples, so that ``evaluate`` gives the same
    values (up to float rounding) whatever its batch size: every loss a name, a function or a Keras loss reducing
    by the batch's size (a ``sum`` reduction counts each batch once), every metric a name or one of Keras' own (a
    function of the user's may return one value per batch, which ``evaluate`` averages over batches, not samples).
    """
    config = getattr(getattr(model, "_compile_config", None), "config", None)
    if not config:
        return False

    def flat(value):
        if isinstance(value, dict) and "class_name" in value:
            return [value]  # a serialized object: not read here
        if isinstance(value, dict):
            return [leaf for item in value.values() for leaf in flat(item)]
        if isinstance(value, (list, tuple)):
            return [leaf for item in value for leaf in flat(item)]
        return [] if value is None else [value]

    def own(function) -> bool:
        return getattr(function, "__module__", "").startswith("keras.")

    for loss in flat(config.get("loss")):
        if isinstance(loss, keras.losses.Loss):
            if loss.reduction not in ("sum_over_batch_size", "mean"):
                return False
        elif not isinstance(loss, str) and not callable(loss):
            return False
    for metric in flat(config.get("metrics")) + flat(config.get("weighted_metrics")):
        if isinstance(metric, str):
            continue
        if isinstance(metric, keras.metrics.Metric):
            if not own(type(metric)) or not own(getattr(metric, "_fn", type(metric))):
                return False
        elif not callable(metric) or not own(metric):
            return False
    return True


def check_objective(model: keras.Model, objective, validation, batch_size=None) -> None:
    """Refuse an ``objective`` (a name or a keras-tuner Objective) that ``model`` does not report on validation
    data (read from its first 64 samples), naming what it does report."""
    objective = getattr(objective, "name", objective)
    values = reported_metrics(model, (validation[0][:64], validation[1][:64]), batch_size)
    if objective not in values | {name.removeprefix("val_") for name in values}:
        raise ValueError(
            f"the model does not produce the objective {objective!r}; it reports {sorted(values)} "
            "(compile it with the metric, e.g. metrics=['accuracy'])"
        )


def reported_metrics(model: keras.Model, validation, batch_size=None) -> set[str]:
    """The names of what ``model`` reports on validation data (a small sample), as fit names them (``val_``): read
    from :func:`validate`, which steps eagerly through a small sample instead of tracing a compiled test function
    for this one-off check. The model's metrics are reset afterwards."""
    try:
        return set(validate(model, (), {"validation_data": validation, "batch_size": batch_size}))
    finally:
        model.reset_metrics()
