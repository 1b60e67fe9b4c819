"""The evaluator interface."""

from __future__ import annotations

import gc
import itertools
from dataclasses import dataclass
from typing import Any, Protocol

import keras

FULL_COLLECTION_EVERY = 20
EPOCH_SCORES = ("best", "best_latest", "last")


def check_epoch_score(epoch_score) -> str:
    """``best``: a candidate's best epoch, the first to reach its best score (its score and weights;
    keras-tuner's rule). ``best_latest``: the same score, the weights of the last epoch that reaches it. ``last``:
    its last epoch. On a small validation split the best score is reached early and often (100% of 22 samples),
    so the first such epoch is an under-trained checkpoint; the best of many noisy epochs is also an optimistic
    score, which only ``last`` avoids."""
    if epoch_score not in EPOCH_SCORES:
        raise ValueError(f"epoch_score must be one of {', '.join(EPOCH_SCORES)}, got {epoch_score!r}")
    return epoch_score


def validation_samples(fit_args, fit_kwargs) -> int | None:
    """How many validation samples score a candidate: the length of ``validation_data``'s labels, or the share of
    the training data ``validation_split`` sets aside as Keras does; None when unknown (a ``tf.data`` dataset)."""
    validation = fit_kwargs.get("validation_data")
    if isinstance(validation, (tuple, list)) and len(validation) >= 2 and hasattr(validation[1], "__len__"):
        return len(validation[1])
    split = fit_kwargs.get("validation_split")
    x = fit_args[0] if fit_args else fit_kwargs.get("x")
    if validation is None and split and hasattr(x, "__len__"):
        return len(x) - int(len(x) * (1 - split))
    return None


_tidy_calls = itertools.count(1)


def tidy() -> None:
    """Between trials: reset Keras' global state, and collect garbage fully only every FULL_COLLECTION_EVERY calls.

    A full collection walks every Python object of TensorFlow and Keras (about 0.2 s once a search is under way),
    which costs more than fine-tuning a small candidate with the batched evaluator; the young generations are
    collected as usual, and the periodic full collection keeps memory flat (``benchmarks/memory.py``).
    """
    keras.backend.clear_session(free_memory=False)
    if next(_tidy_calls) % FULL_COLLECTION_EVERY == 0:
        gc.collect()


@dataclass
class Job:
    """One candidate to evaluate.

    Attributes:
        model: the built, compiled candidate, its weights already inherited (or freshly initialized).
        train: fine-tune before validating (False: validate the weights as they are).
        checkpoint: where the weights that achieved the reported score are saved.
        hyperparameters: the trial's hyperparameters (for a HyperModel's own ``fit``), or None.
        key: the candidate's identity in its search (the engine's key, ``init``, ``grsc3``, ...). The batched
            evaluator seeds the candidate's batch order and dropout from (its seed, this key), so a candidate trains
            the same whatever else is in its batch and however often the process was restarted before; without a
            key they follow the order of evaluation.
    """

    model: Any
    train: bool
    checkpoint: str
    hyperparameters: Any = None
    key: str | None = None


class Evaluator(Protocol):
    """Fine-tunes and validates candidates; returns one metrics dict per job.

    Every dict holds the objective and the other metrics of the epoch that achieved it, plus ``params`` and
    ``flops`` of the model (and ``latency_ms``, its estimated Pi Zero milliseconds, which ``cost="pi-zero"``
    reads), and ``val_samples`` when the validation split's size is known (:func:`validation_samples`). After ``evaluate`` returns, each job's ``model`` holds the weights of its checkpoint, and the
    checkpoint is whole under its name; an evaluator given a ``writer`` (:class:`keras_grs.files.
    BackgroundWriter`, as the tuner gives the batched one) leaves that last part to the writer's ``join``.
    """

    def evaluate(self, jobs: list[Job], fit_args: tuple, fit_kwargs: dict) -> list[dict]: ...
