"""The pruning search engine: pure Python, no Keras, no training.

A search is a *policy* (which width groups to shrink, in what order, and when to stop) combined with a *unit
selection* (which units of a group go) and an *acceptance rule* (``score >= tolerance x OriValAcc`` for a score to
maximize, ``score <= OriValLoss / tolerance`` for one to minimize). It never
evaluates anything itself: :meth:`Search.plan` takes the outcomes known so far and answers which candidates must be
evaluated next, or that the search is over. The plan is a pure function of (configuration, seed, outcomes), so any
backend can stop at any moment and continue later, or in another process, from its stored results alone:
keras-tuner Oracles keep them as trials, Optuna samplers as study trials, tests as a dict.

Policies are written as generators that ``yield`` a batch of candidates and receive their outcomes. ``plan``
replays the generator over the recorded outcomes until it asks for a candidate that has none yet. All randomness
comes from generators seeded by (seed, scope), so a replay takes the same decisions as the original run.
"""

from __future__ import annotations

import math
import threading
import zlib
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

INITIAL_KEY = "init"


def keyed_rng(seed: int, name: str) -> np.random.Generator:
    """A random generator that is a function of (``seed``, ``name``) alone, never of what ran before it: how every
    random draw of a run is seeded, so that a resumed or replayed run draws the same numbers."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode())])


@dataclass(frozen=True)
class GroupSpec:
    """A prunable width, as the engine sees it: a name, the starting width and the smallest allowed width.

    ``frozen``: the user pinned the group; the search never removes one of its units (it keeps its full width in
    every candidate). ``multiple``: every width the search proposes for the group is a multiple of it (what SIMD
    kernels want). A starting width that is not a multiple loses the remainder at the group's first removal (10
    with multiple 4: 10 -> 8 -> 4), and the group never goes below ``floor``: ``min_width`` rounded up to a
    multiple, at least ``multiple`` itself.
    """

    name: str
    width: int
    min_width: int = 1
    multiple: int = 1
    frozen: bool = False

    def __post_init__(self):
        if not 1 <= self.min_width <= self.width:
            raise ValueError(f"group {self.name!r}: min_width {self.min_width} must be in 1..width ({self.width})")
        check_width_multiple(self.multiple)
        if self.frozen or self.multiple == 1:
            return
        if self.multiple > self.width:
            raise ValueError(f"width_multiple {self.multiple} is larger than the width {self.width} of group "
                             f"{self.name!r}; no width of it can be a multiple")
        if self.floor > self.width:
            raise ValueError(f"group {self.name!r}: its min_width {self.min_width} rounds up to {self.floor} (a "
                             f"multiple of width_multiple {self.multiple}), above its width {self.width}")

    @property
    def floor(self) -> int:
        """The smallest width the search may reach: the full width when frozen, else ``min_width`` rounded up to
        a multiple of ``multiple`` (and at least ``multiple``)."""
        if self.frozen:
            return self.width
        return max(self.multiple, -(-self.min_width // self.multiple) * self.multiple)

    def step(self, width: int) -> int:
        """Units one step removes at ``width``: down to the next lower multiple (one unit when ``multiple`` is 1)."""
        return width - ((width - 1) // self.multiple) * self.multiple

    def jump(self, width: int, rate: float) -> int:
        """Units a jump removes at ``width``: ``rate`` of it, rounded up, then down to a multiple, never below
        ``floor``."""
        target = (width - math.ceil(rate * width)) // self.multiple * self.multiple
        return max(0, width - max(target, self.floor))


# The constraints' values when none is given: a run recorded before they existed is read as having these.
UNCONSTRAINED = {"frozen": [], "width_multiple": 1, "cost": "flops"}
# What the search minimizes among equally good candidates (greedy ties, the JGRS attempt kept): FLOPs, or the
# estimated inference time on the Raspberry Pi Zero (keras_grs.latency, recorded by the evaluators as latency_ms).
COSTS = ("flops", "pi-zero")


def check_cost(value) -> str:
    """Refuse a cost that is not one of :data:`COSTS`, naming the accepted values."""
    if value not in COSTS:
        raise ValueError(f"cost must be one of {', '.join(COSTS)}, got {value!r}")
    return value


def check_width_multiple(value) -> int:
    """Refuse anything but a positive integer (booleans included), naming the argument."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"width_multiple must be a positive integer, got {value!r}")
    return int(value)


def constrain(groups: Sequence[GroupSpec], frozen: Sequence[str] = (),
              width_multiple: int = 1) -> tuple[GroupSpec, ...]:
    """The groups with the user's constraints applied: the groups named in ``frozen`` are never pruned, and every
    width is kept a multiple of ``width_multiple``.

    Raises ValueError for a frozen name that is not a group (listing the groups), a bad ``width_multiple``, one
    larger than a group's width, or every group frozen (nothing left to search).
    """
    frozen = [frozen] if isinstance(frozen, str) else list(frozen or ())
    width_multiple = check_width_multiple(width_multiple)
    names = [g.name for g in groups]
    unknown = [name for name in frozen if name not in names]
    if unknown:
        raise ValueError(f"frozen names unknown width groups {unknown}; the groups are {names}")
    result = tuple(
        GroupSpec(g.name, g.width, g.min_width, width_multiple if width_multiple != 1 else g.multiple,
                  g.frozen or g.name in frozen)
        for g in groups
    )
    if result and all(g.frozen for g in result):
        raise ValueError(f"every width group is frozen ({names}): nothing is left to prune")
    return result


@dataclass(frozen=True)
class Candidate:
    """A structure to evaluate.

    Attributes:
        key: unique, deterministic identifier within the search (``init``, ``c12``, ``far1.a0.c3``, ...).
        parent: key of the evaluated structure whose trained weights it inherits (None for the initial one).
        units: for each group, the original indices of the units that survive (sorted).
        removed: for each group changed, the indices *relative to the parent's units* of the units removed,
            which is exactly what :func:`keras_grs.shrink` takes when applied to the parent's model.
        phase: the part of the method that issued it (``initial``, ``grs``, ``rrs``, ``nwm``, ``far1``, ``near``).
    """

    key: str
    parent: str | None
    units: tuple[tuple[int, ...], ...]
    removed: tuple[tuple[str, tuple[int, ...]], ...]
    phase: str

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(len(u) for u in self.units)

    @property
    def removed_dict(self) -> dict[str, list[int]]:
        return {name: list(indices) for name, indices in self.removed}


@dataclass(frozen=True)
class Outcome:
    """What evaluating a candidate gave.

    Attributes:
        score: the objective (validation accuracy); None when the evaluation failed (counts as not valid).
        params, flops: cost of the evaluated model, when the evaluator reports them.
        latency_ms: the model's estimated Pi Zero inference time (:func:`keras_grs.estimate_latency`), when the
            evaluator reports it.
        guard: the objective on the guard split, data the search never trains or decides on (None without a
            guard). Only the final walk back along the accepted path reads it (see :attr:`Plan.final`).
        guard_samples: how many samples the guard score was measured on (its sampling noise).
        guard_right: for accuracy, which guard samples the model gets right, packed
            (:func:`keras_grs.guard.pack_outcomes`), kept with the path for sample-by-sample comparisons.
        unit_norms: per group name, the L1 norm of each unit's incoming weights in the trained model (needed by
            magnitude unit selection only).
        samples: how many validation samples the score was measured on, when the evaluator knows (the sampling
            noise an acceptance margin reads, see :class:`Search`).
    """

    score: float | None
    params: int | None = None
    flops: int | None = None
    unit_norms: Mapping[str, Sequence[float]] | None = None
    guard: float | None = None
    guard_samples: int | None = None
    guard_right: str | None = None
    latency_ms: float | None = None
    samples: int | None = None


@dataclass(frozen=True)
class Node:
    """An evaluated candidate."""

    candidate: Candidate
    outcome: Outcome

    @property
    def key(self) -> str:
        return self.candidate.key

    @property
    def score(self) -> float:
        return self.outcome.score if self.outcome.score is not None else float("-inf")


@dataclass(frozen=True)
class Step:
    """One accepted structure on the pruning path."""

    key: str
    phase: str
    widths: tuple[int, ...]
    score: float
    params: int | None
    flops: int | None
    guard: float | None = None
    guard_samples: int | None = None
    guard_right: str | None = None
    latency_ms: float | None = None


@dataclass
class Plan:
    """The answer of :meth:`Search.plan`.

    Attributes:
        pending: candidates that must be evaluated now (all of them may run in parallel). Empty when finished.
        finished: the method has stopped; ``final`` is its result.
        final: key of the compact structure: the last accepted (smallest valid) one; with guard scores, the last
            accepted one whose guard score is also within tolerance of the initial structure's guard score (the
            *walk back*: structures accepted on a lucky validation score are dropped). While the search runs, the
            same rule over what is accepted so far.
        path: the accepted structures, initial first, in order (the walk back does not shorten it).
        reference: OriValAcc, the initial structure's score (None until it is known).
        guard_reference: the initial structure's guard score (None without a guard).
        candidates: every candidate issued so far, by key.
        verdicts: per evaluated key: ``initial``, ``accepted`` (taken as the new structure), ``valid`` (within
            tolerance but not taken) or ``failed``.
        phase_ends: for methods with phases, the key of the structure each phase ended on.
    """

    pending: list[Candidate]
    finished: bool
    final: str | None
    path: list[Step]
    reference: float | None
    candidates: dict[str, Candidate]
    verdicts: dict[str, str]
    phase_ends: dict[str, str] = field(default_factory=dict)
    guard_reference: float | None = None

    @property
    def final_index(self) -> int | None:
        """Position of ``final`` in ``path``."""
        keys = [step.key for step in self.path]
        return keys.index(self.final) if self.final in keys else None

    def path_rows(self, names: Sequence[str], trial_id: Callable[[str], str]) -> list[dict]:
        """The accepted path as plain dicts: trial id (by ``trial_id(key)``), phase, widths by group name,
        structure, params, FLOPs, objective."""
        return [
            {
                "trial_id": trial_id(step.key),
                "phase": step.phase,
                "widths": dict(zip(names, step.widths)),
                "structure": "x".join(map(str, step.widths)),
                "params": step.params,
                "flops": step.flops,
                "latency_ms": step.latency_ms,
                "objective": float(step.score),
                "guard": None if step.guard is None else float(step.guard),
                "final": step.key == self.final,
            }
            for step in self.path
        ]


class SearchError(RuntimeError):
    """The search cannot go on (for example, the initial model failed to train)."""


Request = list[Candidate]
PolicyGen = Generator[Request, list[Outcome], "Branch"]


@dataclass
class Branch:
    """Where a policy ended: its last accepted node, and the nodes it accepted on the way."""

    node: Node
    path: list[Node]


class Context:
    """What a policy may use: the groups, acceptance, unit selection, fresh candidates, seeded randomness."""

    def __init__(self, search: Search):
        self.search = search
        self.groups = search.groups
        self.reference: float | None = None
        self.candidates: dict[str, Candidate] = {}
        self.verdicts: dict[str, str] = {}
        self.phase_ends: dict[str, str] = {}
        self._counters: dict[str, int] = {}

    def rng(self, scope: str) -> np.random.Generator:
        return keyed_rng(self.search.seed, scope)

    def valid(self, outcome: Outcome) -> bool:
        return self.search.accepts(outcome.score, self.reference, outcome.samples)

    def better(self, node: Node) -> float:
        """A node's score oriented so that larger is better (failed evaluations last)."""
        return self.search.oriented(node.outcome.score)

    def judge(self, nodes: Sequence[Node], accepted: Node | None) -> None:
        for node in nodes:
            if accepted is not None and node.key == accepted.key:
                self.verdicts[node.key] = "accepted"
            else:
                self.verdicts[node.key] = "valid" if self.valid(node.outcome) else "failed"

    def prunable(self, node: Node) -> list[int]:
        """Indices of the groups of ``node`` still above their floor (frozen groups never)."""
        return [i for i, g in enumerate(self.groups) if len(node.candidate.units[i]) > g.floor]

    def step(self, node: Node, group: int, rng: np.random.Generator) -> tuple[int, ...]:
        """The unit positions one step removes from ``group`` of ``node``: one unit, or with a width multiple
        down to the next lower multiple; chosen by the search's unit selection."""
        return self.select(node, group, self.groups[group].step(len(node.candidate.units[group])), rng)

    def cost(self, node: Node) -> float:
        """The search's cost of ``node``: with ``cost="pi-zero"`` its estimated Pi Zero milliseconds when the
        evaluator reports them; else FLOPs when reported; else the total width (a proxy that orders structures
        alike)."""
        if self.search.cost == "pi-zero" and node.outcome.latency_ms is not None:
            return node.outcome.latency_ms
        if node.outcome.flops is not None:
            return node.outcome.flops
        return sum(node.candidate.widths)

    def select(self, node: Node, group: int, count: int, rng: np.random.Generator) -> tuple[int, ...]:
        """``count`` unit positions of ``group`` in ``node`` to remove, by the search's unit selection."""
        return self.search.select_units(self, node, group, count, rng)

    def child(self, parent: Node, removal: Mapping[int, Sequence[int]], phase: str, scope: str) -> Candidate:
        """A candidate derived from ``parent`` by removing units (positions relative to the parent, per group)."""
        units, removed = [], []
        for i, group in enumerate(self.groups):
            current = parent.candidate.units[i]
            positions = sorted(int(p) for p in removal.get(i, ()))
            if positions:
                removed.append((group.name, tuple(positions)))
                drop = set(positions)
                current = tuple(u for p, u in enumerate(current) if p not in drop)
            units.append(current)
        return self._issue(scope, parent.key, tuple(units), tuple(removed), phase)

    def initial(self) -> Candidate:
        units = tuple(tuple(range(g.width)) for g in self.groups)
        candidate = Candidate(INITIAL_KEY, None, units, (), "initial")
        self.candidates[candidate.key] = candidate
        return candidate

    def _issue(self, scope, parent, units, removed, phase) -> Candidate:
        n = self._counters.get(scope, 0) + 1
        self._counters[scope] = n
        candidate = Candidate(f"{scope}c{n}", parent, units, removed, phase)
        self.candidates[candidate.key] = candidate
        return candidate


def parallel(branches: Sequence[PolicyGen]) -> Generator[Request, list[Outcome], list[Branch]]:
    """Run several policies in lockstep: their requests are merged into one batch, so they evaluate together."""
    results: list[Branch | None] = [None] * len(branches)
    requests: dict[int, Request] = {}
    for i, branch in enumerate(branches):
        try:
            requests[i] = next(branch)
        except StopIteration as stop:
            results[i] = stop.value
    while requests:
        order = sorted(requests)
        outcomes = yield [c for i in order for c in requests[i]]
        position, following = 0, {}
        for i in order:
            part = outcomes[position : position + len(requests[i])]
            position += len(requests[i])
            try:
                following[i] = branches[i].send(part)
            except StopIteration as stop:
                results[i] = stop.value
        requests = following
    return results


# A policy: (context, start node, rng scope, phase name) -> generator returning a Branch.
Policy = Callable[[Context, Node, str, str], PolicyGen]


class Search:
    """A configured pruning search.

    Args:
        groups: the prunable widths, in model order.
        policy: the inter-layer order, a function ``(ctx, start, scope, phase) -> generator`` (see
            :mod:`keras_grs.search.order`), or a callable building the whole method (see ``root``).
        select_units: the intra-layer unit selection (see :mod:`keras_grs.search.units`).
        tolerance: a candidate is valid when its score >= tolerance x the initial structure's score (``max``
            direction), or <= the initial score / tolerance (``min`` direction, for a loss).
        seed: all random decisions derive from it.
        direction: ``max`` (accuracy, AUC, ...) or ``min`` (a loss, an error).
        root: a generator function ``(ctx, start) -> Branch`` run after the initial evaluation; defaults to
            running ``policy`` once.
        cost: what ties and the JGRS attempt choice minimize: ``flops`` or ``pi-zero`` (estimated Pi Zero
            milliseconds, :attr:`Outcome.latency_ms`).
        margin: an acceptance margin in standard errors (default 0: the seed's rule). For a score that is a
            fraction of samples (accuracy) measured on a known number of samples (:attr:`Outcome.samples`), a
            candidate must clear the tolerance by ``margin`` binomial standard errors of the reference score:
            ``score >= tolerance x reference + margin x sqrt(reference (1 - reference) / samples)``, the margin
            at most ``(1 - tolerance) x reference`` (see :func:`acceptance_margin`). Each step
            takes the best of several candidates on the same validation samples and the path goes on until none
            passes, so the accepted scores are optimistic by about that much; a margin takes it back at every
            step (measured: docs/concepts.md). Ignored for a minimized score and when the samples are unknown.
    """

    def __init__(self, groups, policy, select_units, tolerance=0.985, seed=0, root=None, name="search",
                 direction="max", cost="flops", margin=0.0):
        groups = tuple(groups)
        if not groups:
            raise ValueError("the model has no prunable width: nothing to search")
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ValueError(f"group names must be unique, got {names}")
        check_tolerance(tolerance)
        self.direction = check_direction(direction)
        self.cost = check_cost(cost)
        self.margin = check_margin(margin)
        self.groups = groups
        self.policy = policy
        self.select_units = select_units
        self.tolerance = float(tolerance)
        self.seed = int(seed)
        self.root = root
        self.name = name
        self._replay: _Replay | None = None  # the last plan's replay, continued by the next (see plan)
        self._lock = threading.Lock()  # a distributed oracle plans from its server's threads

    def __getstate__(self):  # a copy (pickled for another process) starts its own replay
        return {**self.__dict__, "_replay": None, "_lock": None}

    def __setstate__(self, state):
        self.__dict__.update(state, _lock=threading.Lock())

    def accepts(self, score: float | None, reference: float | None, samples: int | None = None) -> bool:
        """The acceptance rule: is ``score`` within tolerance of ``reference`` (both in the objective's units), by
        the search's margin when it has one and ``samples`` is known?"""
        margin = acceptance_margin(reference, samples, self.margin, self.tolerance, self.direction)
        if not within_tolerance(score, reference, self.tolerance, self.direction):
            return False
        return not margin or score >= self.tolerance * reference + margin - 1e-12  # at the cap: score == reference

    def oriented(self, score: float | None) -> float:
        """``score`` as a number where larger is better, whatever the direction (-inf for a failed evaluation)."""
        if score is None or math.isnan(score):
            return float("-inf")
        return -score if self.direction == "min" else score

    def _run(self, ctx: Context) -> PolicyGen:
        start = ctx.initial()
        (outcome,) = yield [start]
        if outcome.score is None:
            raise SearchError("the initial structure could not be evaluated; its trial failed")
        ctx.reference = outcome.score
        ctx.verdicts[start.key] = "initial"
        node = Node(start, outcome)
        if self.root is not None:
            branch = yield from self.root(ctx, node)
        else:
            branch = yield from self.policy(ctx, node, f"{self.name}.", self.name)
        return Branch(branch.node, [node, *branch.path])

    def plan(self, outcomes: Mapping[str, Outcome]) -> Plan:
        """Replay the method over the known outcomes; return what to evaluate next, or the final result.

        The replay is kept between calls: when every outcome it has consumed is still in ``outcomes``, unchanged,
        it continues from where it stopped instead of starting again (what a running search asks after each trial:
        one step more, not the whole search again). Anything else (an outcome changed or gone) replays from the
        start. Either way the answer is the same pure function of the outcomes."""
        with self._lock:
            replay = self._replay
            if replay is None or not replay.agrees_with(outcomes):
                replay = self._replay = _Replay(self)
            try:
                replay.advance(outcomes)
            except BaseException:
                self._replay = None
                raise
            ctx, branch = replay.ctx, replay.branch
            path = branch.path if branch else _accepted_so_far(ctx, outcomes)
            steps = [_step(node) for node in path]
            guard_reference = steps[0].guard if steps else None
            return Plan(
                pending=list(replay.pending),
                finished=replay.finished,
                final=self._walk_back(steps, guard_reference),
                path=steps,
                reference=ctx.reference,
                guard_reference=guard_reference,
                candidates=dict(ctx.candidates),
                verdicts=dict(ctx.verdicts),
                phase_ends=dict(ctx.phase_ends),
            )

    def _walk_back(self, steps: Sequence[Step], guard_reference: float | None) -> str | None:
        """The last accepted structure the guard does not reject (the last one without a guard); see
        :func:`walk_back_index`."""
        if not steps:
            return None
        if guard_reference is None:
            return steps[-1].key
        index = walk_back_index([step.guard for step in steps], self.tolerance, self.direction,
                                steps[0].guard_samples)
        return steps[index].key


class _Replay:
    """One replay of a search's method, paused where it asked for a candidate without an outcome."""

    def __init__(self, search: Search):
        self.ctx = Context(search)
        self.run = search._run(self.ctx)
        self.consumed: dict[str, Outcome] = {}  # what the method has been told, by key
        self.request: Request | None = None
        self.pending: list[Candidate] = []
        self.finished, self.branch = False, None

    def agrees_with(self, outcomes: Mapping[str, Outcome]) -> bool:
        """Does every outcome this replay consumed hold, unchanged, in ``outcomes``?"""
        missing = object()
        for key, outcome in self.consumed.items():
            now = outcomes.get(key, missing)
            if now is not outcome and now != outcome:
                return False
        return True

    def advance(self, outcomes: Mapping[str, Outcome]) -> None:
        """Feed the method the outcomes it asks for until it asks for one that ``outcomes`` lacks, or stops."""
        if self.finished:
            return
        try:
            request = next(self.run) if self.request is None else self.request
            while True:
                self.request = request
                missing = [c for c in request if c.key not in outcomes]
                if missing:
                    self.pending = missing
                    return
                answers = [outcomes[c.key] for c in request]
                self.consumed.update((c.key, o) for c, o in zip(request, answers))
                request = self.run.send(answers)
        except StopIteration as stop:
            self.finished, self.branch, self.pending = True, stop.value, []


def _accepted_so_far(ctx: Context, outcomes: Mapping[str, Outcome]) -> list[Node]:
    """While a search runs: the chain of accepted candidates ending at the latest one (initial first)."""
    accepted = [k for k, v in ctx.verdicts.items() if v in ("initial", "accepted")]
    if not accepted:
        return []
    chain, key = [], accepted[-1]
    while key is not None:
        candidate = ctx.candidates[key]
        chain.append(Node(candidate, outcomes[key]))
        key = candidate.parent
    return chain[::-1]


def _step(node: Node) -> Step:
    c, o = node.candidate, node.outcome
    return Step(c.key, c.phase, c.widths, node.score, o.params, o.flops, o.guard, o.guard_samples, o.guard_right,
                o.latency_ms)


def check_tolerance(tolerance, name="tolerance") -> None:
    """Refuse anything but a number in (0, 1] (NaN and booleans included), naming the argument."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance <= 1:
        raise ValueError(f"{name} must be a number in (0, 1], got {tolerance!r}")


DIRECTIONS = ("max", "min")


def monotone_decreasing(values: Sequence[float]) -> list[float]:
    """The closest non-increasing sequence in least squares (pool-adjacent-violators): every run that rises is
    replaced by its mean. A missing value (-inf) pools everything after it down to -inf.

    Example:
        >>> monotone_decreasing([1.0, 1.0, 0.5, 1.0, 0.5])
        [1.0, 1.0, 0.75, 0.75, 0.5]
    """
    blocks: list[list[float]] = []  # [sum, count] of pooled runs
    for value in values:
        blocks.append([float(value), 1])
        while len(blocks) > 1 and blocks[-1][0] / blocks[-1][1] > blocks[-2][0] / blocks[-2][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return [total / count for total, count in blocks for _ in range(count)]


GUARD_CONFIDENCE_Z = 1.0  # one standard error: the evidence the guard needs to reject a structure (see concepts)


def walk_back_index(guards: Sequence[float | None], tolerance: float, direction: str = "max",
                    samples: int | None = None) -> int:
    """Where the guard walks an accepted path back to: the position of the last structure it does not reject.

    ``guards`` are the guard scores along the path, the initial structure first. A structure is rejected only when
    the guard shows a loss beyond the tolerance larger than the guard's own sampling noise: a small guard cannot
    tell a lost sample from bad luck, and walking back on every such sample gives up most of the pruning for
    nothing. The scores are read through a monotone fit first (the path only removes units, so its objective is
    taken to worsen step by step; a guard score that rises again after failing ones is pooled with its
    neighbours instead of passing on its own luck), then :func:`beyond_guard_noise` judges the fitted score, its
    standard error taken at its smallest (``samples`` is the guard's size): the walk back tries the steps from the
    end until one passes, so a lenient test lets one of many near-boundary steps through by noise (a paired test on
    which samples each step gets right was measured lenient in exactly that way: docs/concepts.md).

    Example:
        >>> walk_back_index([0.97, 0.97, 0.96, 0.90, 0.88], 0.98, samples=1000)  # 0.90 is 5 points short
        2
    """
    oriented = [(-1.0 if direction == "min" else 1.0) * (g if g is not None else math.nan) for g in guards]
    fitted = monotone_decreasing([-math.inf if math.isnan(v) else v for v in oriented])
    reference = guards[0]
    for index in range(len(guards) - 1, 0, -1):
        if guard_holds(-fitted[index] if direction == "min" else fitted[index], reference, tolerance, direction,
                       samples):
            return index
    return 0


def beyond_paired_noise(reference_right, right, tolerance, z=GUARD_CONFIDENCE_Z) -> bool:
    """Does a structure lose more accuracy than the tolerance allows, beyond the noise of a paired comparison?

    ``reference_right`` and ``right`` say which of the same guard samples the initial structure and the step
    classify right. Per sample, the difference ``d = reference - step`` is 1 (a sample lost), -1 (gained) or 0;
    the shortfall is its mean, and the tolerance allows ``(1 - tolerance) x`` the reference's accuracy of it. The
    excess counts as evidence only beyond ``z`` standard errors of the mean difference (McNemar's view: only the
    samples the two disagree on carry noise).

    Example:
        >>> import numpy as np
        >>> reference = np.ones(100, bool)
        >>> beyond_paired_noise(reference, np.arange(100) >= 3, 0.98)   # 3 lost of 100: within noise
        False
        >>> beyond_paired_noise(reference, np.arange(100) >= 10, 0.98)  # 10 lost: beyond it
        True
    """
    d = np.asarray(reference_right, float) - np.asarray(right, float)
    excess = d.mean() - (1 - tolerance) * float(np.mean(reference_right))
    if excess <= 0:
        return False
    error = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    return bool(excess > z * error)


def guard_holds(score, reference, tolerance, direction="max", samples=None) -> bool:
    """The guard's verdict on one score: within tolerance of ``reference``, or (a maximized score measured on
    ``samples``) short of it by no more than the guard's sampling noise (:func:`beyond_guard_noise`)."""
    if within_tolerance(score, reference, tolerance, direction):
        return True
    return direction == "max" and not beyond_guard_noise(score, reference, tolerance, samples)


def beyond_guard_noise(score, reference, tolerance, samples, z=GUARD_CONFIDENCE_Z) -> bool:
    """Does a guard score fall short of the tolerance by more than its sampling noise?

    For a score that is a fraction of ``samples`` (accuracy and its kin, in [0, 1]): the structure loses
    ``shortfall = reference - score`` on the guard, ``(1 - tolerance) x reference`` of which the tolerance allows.
    The excess counts as evidence only beyond ``z`` standard errors of a paired difference of that size, taken at
    its smallest (the structure's errors include the reference's: ``sqrt(shortfall (1 - shortfall) / samples)``),
    so the test errs towards walking back. Without a sample count, or for scores outside [0, 1], any excess counts.

    Example:
        >>> beyond_guard_noise(45 / 46, 1.0, 0.98, 46)  # one sample of 46 lost: within the guard's noise
        False
        >>> beyond_guard_noise(130 / 144, 0.97, 0.98, 144)  # 6.7 points lost on 144 samples: evidence
        True
    """
    if score is None or reference is None or math.isnan(score):
        return True
    excess = (reference - score) - (1 - tolerance) * reference
    if excess <= 0:
        return False
    if not samples or not (0 <= score <= 1 and 0 <= reference <= 1):
        return True
    shortfall = reference - score
    return excess > z * math.sqrt(shortfall * (1 - shortfall) / samples)


def check_margin(margin) -> float:
    """An acceptance margin: a finite number of standard errors >= 0."""
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < math.inf:
        raise ValueError(f"the acceptance margin is a number of standard errors >= 0, got {margin!r}")
    return float(margin)


def acceptance_margin(reference, samples, z, tolerance, direction="max") -> float:
    """How far above ``tolerance x reference`` a score must be (see :class:`Search`'s ``margin``): ``z`` binomial
    standard errors of ``reference`` on ``samples`` samples, at most the tolerance's own ``(1 - tolerance) x
    reference`` (a margin never asks a candidate to beat the reference: on a split too small to see the tolerance,
    20 of 21 samples right, half a standard error is 2.3 points); 0 without a margin, without the sample count,
    for a minimized score or one that is not a fraction.

    Example:
        >>> round(acceptance_margin(0.96, 216, 0.5, 0.98), 4)  # half a standard error of 96% on 216 samples
        0.0067
        >>> round(acceptance_margin(20 / 21, 21, 0.5, 0.98), 4)  # capped: the candidate must equal the reference
        0.019
        >>> acceptance_margin(1.0, 21, 0.5, 0.98)  # a perfect reference has no binomial noise to take back
        0.0
    """
    if not z or not samples or direction != "max" or reference is None or not 0 <= reference <= 1:
        return 0.0
    return min(z * math.sqrt(reference * (1 - reference) / samples), (1 - tolerance) * reference)


def within_tolerance(score, reference, tolerance, direction="max") -> bool:
    """The acceptance rule, the one place it is written: ``score >= tolerance x reference`` for a score to
    maximize, ``score <= reference / tolerance`` for one to minimize. A missing or NaN score is never within."""
    if score is None or reference is None or math.isnan(score):
        return False
    if direction == "min":
        return score <= reference / tolerance
    return score >= tolerance * reference


def check_direction(direction) -> str:
    """``max`` or ``min`` (keras-tuner's spelling); Optuna's ``maximize``/``minimize`` are accepted too."""
    aliases = {"max": "max", "maximize": "max", "min": "min", "minimize": "min"}
    name = getattr(direction, "name", direction)  # optuna.study.StudyDirection
    key = str(name).lower() if name is not None else ""
    if key not in aliases:
        raise ValueError(f"direction must be 'max' or 'min' (or 'maximize'/'minimize'), got {direction!r}")
    return aliases[key]


def run(search: Search, evaluate: Callable[[Candidate], Outcome], max_evaluations: int | None = None) -> Plan:
    """Drive a search synchronously: evaluate every pending candidate until the method stops.

    ``evaluate`` receives a :class:`Candidate` and returns its :class:`Outcome`. Useful for tests and for
    evaluators that do not need a tuning framework.
    """
    outcomes: dict[str, Outcome] = {}
    while True:
        plan = search.plan(outcomes)
        if plan.finished or (max_evaluations is not None and len(outcomes) >= max_evaluations):
            return plan
        for candidate in plan.pending:
            outcomes[candidate.key] = evaluate(candidate)


def jump_size(width: int, min_width: int, rate: float, multiple: int = 1) -> int:
    """Units a jump removes from a group: ``rate`` of its width, rounded up (then down to a multiple of
    ``multiple``), never below its minimum width (see :meth:`GroupSpec.jump`)."""
    return GroupSpec("jump", width, min_width, multiple).jump(width, rate)
