"""Candidate evaluators: fine-tune built candidates (weights already inherited) and validate them.

The search engine never trains; backends hand candidates to an evaluator. ``KerasEvaluator`` runs one
``model.fit`` per candidate and is the reference implementation; ``BatchedEvaluator`` (the default) trains a
batch of candidates together in one compiled computation and falls back to the reference where it cannot.
"""

from keras_grs.evaluate.base import EPOCH_SCORES, Evaluator, Job, check_epoch_score, tidy
from keras_grs.evaluate.keras import KerasEvaluator
from keras_grs.importance import unit_norms  # its old home, kept importable

EVALUATORS = ("batched", "keras")


def make_evaluator(evaluator, objective, hypermodel=None, executions_per_trial=1, seed=0, epoch_score="best"):
    """An evaluator from its name (``"batched"``, the default, or ``"keras"``); an evaluator object is returned
    as it is. ``epoch_score``: ``best`` (the best epoch's score and weights) or ``last`` (the last epoch's weights,
    the mean of the last epochs' scores)."""
    if evaluator is None or evaluator == "batched":
        from keras_grs.evaluate.batched import BatchedEvaluator

        return BatchedEvaluator(objective, hypermodel, executions_per_trial, seed=seed or 0, epoch_score=epoch_score)
    if evaluator == "keras":
        return KerasEvaluator(objective, hypermodel, executions_per_trial, epoch_score=epoch_score)
    if isinstance(evaluator, str) or not hasattr(evaluator, "evaluate"):
        raise ValueError(f"unknown evaluator {evaluator!r}; use 'batched', 'keras' or an evaluator object")
    return evaluator


__all__ = ["EPOCH_SCORES", "EVALUATORS", "check_epoch_score", "Evaluator", "Job", "KerasEvaluator", "make_evaluator", "tidy", "unit_norms"]
