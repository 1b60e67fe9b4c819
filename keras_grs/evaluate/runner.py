"""One candidate runner for every backend: build a candidate from its parent, train it, record what it gave.

A backend (the keras-tuner :class:`~keras_grs.GRSTuner`, the Optuna objective of :func:`keras_grs.optuna.optimize`)
turns what its search handed out into :class:`Request` objects, calls :meth:`CandidateRunner.run`, and only maps
each :class:`Record` to its own storage (trial metrics and side files, or user attributes). How a candidate starts
(the parent's surviving trained weights, or the base weights for the root), how it trains (through an evaluator,
its randomness keyed by the candidate's key) and what is measured of it (score, params, FLOPs, estimated Pi Zero
milliseconds, unit norms, guard record) is decided here, once.

Example:
    >>> import tempfile, keras, keras_tuner, numpy as np
    >>> from keras_grs.evaluate import KerasEvaluator
    >>> from keras_grs.evaluate.runner import CandidateRunner, Request
    >>> from keras_grs.surgery import resized
    >>> base = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu", name="hidden"),
    ...                          keras.layers.Dense(2, activation="softmax")])
    >>> base.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    >>> x, y = np.random.default_rng(0).normal(size=(32, 4)), np.arange(32) % 2
    >>> evaluator = KerasEvaluator(keras_tuner.Objective("val_accuracy", "max"))
    >>> runner = CandidateRunner(build=lambda widths: resized(base, widths), load_parent=None,
    ...                          objective="val_accuracy", evaluator=evaluator, base_weights=base.get_weights(),
    ...                          train_first=False)
    >>> folder = tempfile.mkdtemp()
    >>> fit = {"validation_data": (x, y), "epochs": 1, "verbose": 0}
    >>> (root,) = runner.run([Request(0, {}, f"{folder}/0.weights.h5", key="init")], (x, y), fit)
    >>> (child,) = runner.run([Request(1, {"hidden": 5}, f"{folder}/1.weights.h5", key="c1", parent=0,
    ...                                removed={"hidden": [2]})], (x, y), fit)
    >>> root.params, child.params, child.flops < root.flops
    (44, 37, True)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from keras_grs.evaluate.base import Job, tidy
from keras_grs.evaluate.candidate import Candidate, norms_of, realized, structure_of
from keras_grs.guard import guard_record
from keras_grs.structure import analyze
from keras_grs.surgery import kept_units, set_chain_weights, surviving_weights

PARENT_CACHE_SIZE = 3


@dataclass
class Request:
    """One candidate to run.

    Attributes:
        id: the backend's name for it (trial id, trial number); a child names its parent by it.
        build: what the runner's ``build`` function takes (hyperparameters, or widths by group name).
        checkpoint: where its trained weights go.
        key: its key in the search: the batched evaluator draws its batch order and dropout from (seed, key), so a
            resumed run trains it as its uninterrupted twin did.
        parent: the id of the candidate whose trained weights it inherits; None for the root.
        removed: the units removed from the parent, by width name (see ``CandidateRunner``'s ``names``).
        hyperparameters: for a HyperModel's own ``fit``.
    """

    id: Any
    build: Any
    checkpoint: str
    key: str | None = None
    parent: Any = None
    removed: Mapping[str, Sequence[int]] = field(default_factory=dict)
    hyperparameters: Any = None


@dataclass
class Record:
    """What running one candidate gave.

    Attributes:
        request: the candidate.
        model: the trained model (its checkpoint's weights): a Keras model, or a
            :class:`~keras_grs.evaluate.candidate.Candidate` that builds one on first use.
        metrics: every metric the evaluator reported (the objective, ``params``, ``flops``, ``latency_ms``, ...).
        score: the objective's value.
        params, flops, latency_ms: its size, FLOPs and estimated Pi Zero milliseconds.
        (Each None when the evaluator did not report it.)
        unit_norms: by width name, the L1 norm of each unit's incoming weights (when the runner records them).
        guard: :func:`keras_grs.guard.guard_record` on the guard split (when guard data are given); never used to
            train or to accept.
    """

    request: Request
    model: Any
    metrics: dict
    score: float | None
    params: int | None
    flops: int | None
    latency_ms: float | None
    unit_norms: dict | None = None
    guard: dict | None = None


class CandidateRunner:
    """Builds candidates from their parents, trains them through an evaluator, and records each outcome.

    Args:
        build: ``build(request.build) -> model``, compiled, freshly initialized.
        load_parent: ``load_parent(id) -> model`` with the trained weights of that candidate's checkpoint (called
            for a parent that is neither among the last run's models nor in the small cache).
        objective: the objective's name or keras-tuner Objective (the score, and the guard's metric).
        evaluator: trains the candidates (or pass ``choose`` to :meth:`run`).
        base_weights: the root's starting weights (None: as built).
        train_first: train the root (False: validate it as it is).
        initial_epochs: the root's epochs, when they differ from the fit arguments'.
        inherit: children start from their parent's surviving weights (False: as built).
        norms: record each candidate's unit norms (the weight-magnitude selection reads them).
        names: width name -> group index in the model's structure, when the backend names widths otherwise than
            the model's groups (keras-tuner's ``hp.Int`` names); None: widths are named as the groups are.
        cache_size: how many parents stay loaded: a GRS step's candidates (and a JGRS attempt's) share their
            parent, so it is loaded once, not once per candidate.
        arrays: a child with inherited weights starts as a :class:`~keras_grs.evaluate.candidate.Candidate`
            (its weight arrays; its Keras model is built only when something needs it: an evaluator without
            ``takes_candidates``, the guard). Only for a ``build`` whose models differ from
            their parent's in their widths alone (the candidate's layers are read from its parent).
    """

    def __init__(self, build: Callable, load_parent: Callable | None, objective, evaluator=None, base_weights=None,
                 train_first=True, initial_epochs=None, inherit=True, norms=False, names=None,
                 cache_size=PARENT_CACHE_SIZE, arrays=False):
        self.build, self.load_parent, self.objective, self.evaluator = build, load_parent, objective, evaluator
        self.base_weights, self.train_first, self.initial_epochs = base_weights, train_first, initial_epochs
        self.inherit, self.norms, self.names, self.cache_size = inherit, norms, names, cache_size
        self.arrays = arrays
        self._recent = {}  # id -> model of the last run: the next step's parent is among them
        self._parents = {}  # id -> model, least recently used first

    @property
    def objective_name(self) -> str:
        return getattr(self.objective, "name", self.objective)

    def prepare(self, request: Request, fit_kwargs: dict) -> tuple[Job, dict]:
        """The candidate built with its starting weights; the fit arguments it trains with."""
        parent = self.parent_model(request.parent) if request.parent is not None and self.inherit else None
        if parent is not None:
            arrays = self.arrays and Candidate.possible(parent)
            parent = parent if arrays else realized(parent)
            structure = structure_of(parent)
            removed = {name if self.names is None else structure.groups[self.names[name]].name: indices
                       for name, indices in request.removed.items()}
            if arrays:
                model = Candidate(parent, structure, kept_units(structure, removed),
                                  build=lambda: self.build(request.build))
            else:
                model = self.build(request.build)
                inherit_from(parent, model, removed, structure)
        else:
            model = self.build(request.build)
            if request.parent is None and self.base_weights is not None:
                model.set_weights(self.base_weights)
        if request.parent is None and self.initial_epochs is not None:
            fit_kwargs = dict(fit_kwargs, epochs=self.initial_epochs)
        train = request.parent is not None or self.train_first
        return Job(model, train, request.checkpoint, request.hyperparameters, key=request.key), fit_kwargs

    def run(self, requests: Sequence[Request], fit_args: tuple, fit_kwargs: dict, choose=None,
            guard=None) -> list[Record]:
        """Prepare, train and record the candidates, in order.

        Candidates that train with the same epochs are evaluated together (the root may have its own);
        ``choose(requests, jobs, fit_kwargs) -> evaluator`` picks the evaluator of each such group (default: the
        runner's). ``guard``: ``(x_guard, y_guard)``, scored into each record's ``guard`` after training. Errors
        propagate: the backend decides what a failed candidate becomes."""
        tidy()
        prepared = [self.prepare(request, fit_kwargs) for request in requests]
        together = {}
        for index, (job, kwargs) in enumerate(prepared):
            together.setdefault(repr(kwargs.get("epochs")), []).append(index)
        self._recent = {}
        records = [None] * len(requests)
        for members in together.values():
            jobs, kwargs = [prepared[i][0] for i in members], prepared[members[0]][1]
            evaluator = choose([requests[i] for i in members], jobs, kwargs) if choose else self.evaluator
            if not getattr(evaluator, "takes_candidates", False):
                for job in jobs:
                    job.model = realized(job.model)
            for i, job, metrics in zip(members, jobs, evaluator.evaluate(jobs, fit_args, kwargs)):
                records[i] = self._record(requests[i], job.model, metrics, guard)
                self._recent[requests[i].id] = job.model  # holds its checkpoint's weights
        return records

    def release(self) -> None:
        """Forget the models of the last run (the search has ended)."""
        self._recent = {}

    def _record(self, request, model, metrics, guard) -> Record:
        norms = None
        if self.norms:
            norms = norms_of(model)
            if self.names is not None:
                groups = structure_of(model).groups
                norms = {name: norms[groups[index].name] for name, index in self.names.items()}
        return Record(
            request, model, metrics, score=_value(metrics, self.objective_name, float),
            params=_value(metrics, "params", int), flops=_value(metrics, "flops", int),
            latency_ms=_value(metrics, "latency_ms", float), unit_norms=norms,
            # read only by the final walk back, never by training or the search's decisions
            guard=guard_record(realized(model), guard, self.objective) if guard is not None else None,
        )

    def parent_model(self, id):
        """A candidate's trained model (or :class:`~keras_grs.evaluate.candidate.Candidate`): from the last run,
        the cache, or ``load_parent``."""
        cache = self._parents
        if id in cache:
            model = cache[id] = cache.pop(id)  # most recently used last
        else:
            model = self._recent.get(id)
            model = cache[id] = model if model is not None else self.load_parent(id)
            while len(cache) > self.cache_size:  # cache_size=0 keeps nothing: the model is still returned
                cache.pop(next(iter(cache)))
        return model


def _value(metrics, name, kind):
    """A metric as a plain number; None when the evaluator did not report it (an evaluator object of the user's
    may report less than the built-in ones; keras-tuner then judges the trial by what it has)."""
    return None if metrics.get(name) is None else kind(metrics[name])


def inherit_from(parent, model, removed: Mapping[str, Sequence[int]], structure=None) -> None:
    """Give ``model`` the trained weights of ``parent`` minus the ``removed`` units (group name -> indices in the
    parent, as :func:`keras_grs.analyze` names the groups; ``structure``: the parent's analysis, when at hand)."""
    structure = structure if structure is not None else analyze(parent)
    set_chain_weights(model, surviving_weights(parent, kept_units(structure, removed)))
