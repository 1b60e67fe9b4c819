"""Candidate evaluators: fine-tune built candidates (weights already inherited) and validate them.

The search engine never trains; backends hand candidates to an evaluator. ``KerasEvaluator`` runs one
``model.fit`` per candidate and is the reference implementation; ``BatchedEvaluator`` (the default) trains a
batch of candidates together in one compiled computation and falls back to the reference where it cannot.
"""

from keras_grs.evaluate.base import Evaluator, Job, tidy
from keras_grs.evaluate.keras import KerasEvaluator, unit_norms

EVALUATORS = ("batched", "keras")


def make_evaluator(evaluator, objective, hypermodel=None, executions_per_trial=1, seed=0):
    """An evaluator from its name (``"batched"``, the default, or ``"keras"``); an evaluator object is returned
    as it is."""
    if evaluator is None or evaluator == "batched":
        from keras_grs.evaluate.batched import BatchedEvaluator

        return BatchedEvaluator(objective, hypermodel, executions_per_trial, seed=seed or 0)
    if evaluator == "keras":
        return KerasEvaluator(objective, hypermodel, executions_per_trial)
    if isinstance(evaluator, str) or not hasattr(evaluator, "evaluate"):
        raise ValueError(f"unknown evaluator {evaluator!r}; use 'batched', 'keras' or an evaluator object")
    return evaluator


__all__ = ["EVALUATORS", "Evaluator", "Job", "KerasEvaluator", "make_evaluator", "tidy", "unit_norms"]
