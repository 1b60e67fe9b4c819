"""The reference evaluator: one ``model.fit`` per candidate."""

from __future__ import annotations

import copy
import os

import keras
import numpy as np
from keras_tuner.src.engine import tuner_utils

from keras_grs.costs import count_flops, count_params
from keras_grs.evaluate.base import Job
from keras_grs.structure import WIDTH_LAYERS, analyze


class KerasEvaluator:
    """Fine-tune each candidate with ``model.fit`` (or a HyperModel's own ``fit``) and keep its best epoch.

    The score of a candidate is the best value of the objective over its epochs, and the weights of that epoch
    are the ones saved, inherited by its children and returned by ``get_best_models``: keras-tuner's own
    convention. With ``executions_per_trial > 1``, each execution starts again from the inherited weights with a
    fresh optimizer; the metrics are averaged and the best epoch of all executions is saved.

    Args:
        objective: a keras-tuner Objective.
        hypermodel: the HyperModel whose ``fit`` trains (its default is ``model.fit``).
        executions_per_trial: how many times each candidate is fine-tuned.
    """

    def __init__(self, objective, hypermodel=None, executions_per_trial=1):
        self.objective = objective
        self.hypermodel = hypermodel
        self.executions_per_trial = executions_per_trial

    def evaluate(self, jobs: list[Job], fit_args: tuple, fit_kwargs: dict) -> list[dict]:
        return [self._evaluate_one(job, fit_args, fit_kwargs) for job in jobs]

    def _evaluate_one(self, job: Job, fit_args: tuple, fit_kwargs: dict) -> dict:
        model = job.model
        if job.train:
            results = self._fit(job, fit_args, fit_kwargs)
            model.load_weights(job.checkpoint)
        else:
            results = validate(model, fit_args, fit_kwargs)
            model.save_weights(job.checkpoint)
        metrics = tuner_utils.convert_to_metrics_dict(results, self.objective)
        metrics = {name: float(value) for name, value in metrics.items()}
        history = results[-1] if isinstance(results, list) else results
        if job.train and hasattr(history, "epoch"):  # the last execution's: fewer than asked after EarlyStopping
            metrics["epochs"] = len(history.epoch)
        metrics["params"] = count_params(model)
        metrics["flops"] = count_flops(model)
        return metrics

    def _fit(self, job, fit_args, fit_kwargs):
        model = job.model
        start = model.get_weights()
        compile_config = model.get_compile_config()
        saver = tuner_utils.SaveBestEpoch(objective=self.objective, filepath=job.checkpoint)
        user_callbacks = fit_kwargs.get("callbacks", [])
        histories = []
        for execution in range(self.executions_per_trial):
            if execution:
                model.set_weights(start)
                model.compile_from_config(compile_config)  # a fresh optimizer state
            callbacks = copy.deepcopy(user_callbacks)
            _per_trial_tensorboard(callbacks, job.checkpoint, execution)
            kwargs = dict(fit_kwargs, callbacks=[*callbacks, saver])
            if self.hypermodel is not None and job.hyperparameters is not None:
                history = self.hypermodel.fit(job.hyperparameters, model, *fit_args, **kwargs)
            else:
                history = model.fit(*fit_args, **kwargs)
            histories.append(history)
        return histories if len(histories) > 1 else histories[0]


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
    batch_size = fit_kwargs.get("batch_size")
    values = model.evaluate(x_val, y_val, batch_size=batch_size, verbose=0, return_dict=True)
    return {f"val_{name}": float(value) for name, value in values.items()}


def unit_norms(model: keras.Model) -> dict[str, list[float]]:
    """For every width group of ``model`` (by layer name): the L1 norm of each unit's incoming weights."""
    norms = {}
    for group in analyze(model).groups:
        layer = model.get_layer(group.layer)
        assert isinstance(layer, WIDTH_LAYERS)
        kernel = keras.ops.convert_to_numpy(layer.kernel)
        norms[group.name] = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(axis=0).tolist()
    return norms
