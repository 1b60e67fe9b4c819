"""Candidate evaluators: fine-tune built candidates (weights already inherited) and validate them.

The search engine never trains; backends hand candidates to an evaluator. ``KerasEvaluator`` runs one
``model.fit`` per candidate and is the reference implementation.
"""

from keras_grs.evaluate.base import Evaluator, Job
from keras_grs.evaluate.keras import KerasEvaluator, unit_norms

__all__ = ["Evaluator", "Job", "KerasEvaluator", "unit_norms"]
