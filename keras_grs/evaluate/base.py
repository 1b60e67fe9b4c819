"""The evaluator interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Job:
    """One candidate to evaluate.

    Attributes:
        model: the built, compiled candidate, its weights already inherited (or freshly initialized).
        train: fine-tune before validating (False: validate the weights as they are).
        checkpoint: where the weights that achieved the reported score are saved.
        hyperparameters: the trial's hyperparameters (for a HyperModel's own ``fit``), or None.
    """

    model: Any
    train: bool
    checkpoint: str
    hyperparameters: Any = None


class Evaluator(Protocol):
    """Fine-tunes and validates candidates; returns one metrics dict per job.

    Every dict holds the objective and the other metrics of the epoch that achieved it, plus ``params`` and
    ``flops`` of the model. After ``evaluate`` returns, each job's ``model`` holds the weights of its checkpoint.
    """

    def evaluate(self, jobs: list[Job], fit_args: tuple, fit_kwargs: dict) -> list[dict]: ...
