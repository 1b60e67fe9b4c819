"""Inter-layer order policies: which group is pruned next, and when a method stops.

Each policy is a generator function ``(ctx, start, scope, phase)`` that yields batches of candidates, receives
their outcomes, and returns a :class:`~keras_grs.search.engine.Branch` (its last accepted node and its path).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keras_grs.search.engine import Branch, Context, Node, PolicyGen, parallel


def _evaluate_one(ctx: Context, candidate) -> PolicyGen:
    """Evaluate one candidate; return its node when it is valid (and so accepted), else None."""
    (outcome,) = yield [candidate]
    node = Node(candidate, outcome)
    accepted = ctx.valid(outcome)
    ctx.judge([node], node if accepted else None)
    return node if accepted else None


def greedy(ctx: Context, start: Node, scope: str, phase: str = "grs") -> PolicyGen:
    """GRS: every group above its minimum width offers one candidate with one unit removed; the best valid one
    (best score in the objective's direction, then lowest cost: FLOPs, or with ``cost="pi-zero"`` estimated Pi Zero
    milliseconds) becomes the new structure. Stop when none is valid or nothing is left.
    A group whose candidate failed stays in play: it may be chosen at a later step (only the groups the user
    froze, ``frozen=[...]``, are never chosen)."""
    rng = ctx.rng(scope)
    current, path = start, []
    while groups := ctx.prunable(current):
        batch = [ctx.child(current, {g: ctx.step(current, g, rng)}, phase, scope) for g in groups]
        outcomes = yield batch
        nodes = [Node(c, o) for c, o in zip(batch, outcomes)]
        valid = [n for n in nodes if ctx.valid(n.outcome)]
        best = max(valid, key=lambda n: (ctx.better(n), -ctx.cost(n))) if valid else None
        ctx.judge(nodes, best)
        if best is None:
            break
        current = best
        path.append(best)
    return Branch(current, path)


def random_order(ctx: Context, start: Node, scope: str, phase: str = "rrs") -> PolicyGen:
    """RRS: a random group (among those above minimum width) loses one unit; stop at the first failure."""
    rng = ctx.rng(scope)
    current, path = start, []
    while groups := ctx.prunable(current):
        group = int(rng.choice(groups))
        candidate = ctx.child(current, {group: ctx.step(current, group, rng)}, phase, scope)
        node = yield from _evaluate_one(ctx, candidate)
        if node is None:
            break
        current = node
        path.append(node)
    return Branch(current, path)


def natural(ctx: Context, start: Node, scope: str, phase: str = "nwm") -> PolicyGen:
    """NWM: groups in model order (input to output); a group loses one unit at a time until a candidate fails
    (the last valid model is kept) or it reaches its minimum width; then the next group. Stop after the last."""
    rng = ctx.rng(scope)
    current, path = start, []
    for group in range(len(ctx.groups)):
        while group in ctx.prunable(current):
            candidate = ctx.child(current, {group: ctx.step(current, group, rng)}, phase, scope)
            node = yield from _evaluate_one(ctx, candidate)
            if node is None:
                break
            current = node
            path.append(node)
    return Branch(current, path)


def jump_attempt(ctx: Context, start: Node, scope: str, phase: str, rate: float) -> PolicyGen:
    """One JGRS attempt: every group loses ``rate`` of its units at once (rounded up, never below its minimum),
    then the structure is fine-tuned once; jumps repeat while valid and the attempt ends at its first failure."""
    rng = ctx.rng(scope)
    current, path = start, []
    while True:
        removal = {}
        for g in ctx.prunable(current):
            count = ctx.groups[g].jump(len(current.candidate.units[g]), rate)
            removal[g] = ctx.select(current, g, count, rng)
        if not removal:
            break
        candidate = ctx.child(current, removal, phase, scope)
        node = yield from _evaluate_one(ctx, candidate)
        if node is None:
            break
        current = node
        path.append(node)
    return Branch(current, path)


@dataclass(frozen=True)
class Phase:
    """One JGRS phase: a far sub-phase of jumps (``rate`` set) or the near phase (GRS, ``rate=None``).

    ``attempts`` independent attempts start from the same structure and run together; the valid result with the
    lowest cost (FLOPs, or estimated Pi Zero milliseconds with ``cost="pi-zero"``; then the highest score) is kept
    and starts the next phase.
    """

    rate: float | None
    attempts: int = 3

    @property
    def kind(self) -> str:
        return "near" if self.rate is None else "far"


DEFAULT_PHASES = (Phase(0.5, 3), Phase(0.2, 3), Phase(None, 3))


def check_phases(phases) -> tuple[Phase, ...]:
    """Normalize and check JGRS phases: Phase objects, (rate, attempts) pairs or dicts."""
    result = []
    for item in phases:
        if isinstance(item, Phase):
            phase = item
        elif isinstance(item, dict):
            phase = Phase(item.get("rate"), int(item.get("attempts", 3)))
        else:
            rate, attempts = item
            phase = Phase(rate, int(attempts))
        if phase.rate is not None and not 0 < phase.rate < 1:
            raise ValueError(f"a jump rate must be in (0, 1), got {phase.rate}")
        if phase.attempts < 1:
            raise ValueError(f"a phase needs at least one attempt, got {phase.attempts}")
        result.append(phase)
    if not result:
        raise ValueError("JGRS needs at least one phase")
    rates = [p.rate for p in result if p.rate is not None]
    if any(b >= a for a, b in zip(rates, rates[1:])):
        raise ValueError(f"jump rates must decrease phase by phase, got {rates}")
    if any(p.rate is None for p in result[:-1]):
        raise ValueError("the near phase (rate None) can only be the last phase")
    return tuple(result)


def phased(phases: Sequence[Phase]):
    """JGRS: far sub-phases of jumps with decreasing rates, then the near phase (GRS), each with attempts."""

    def root(ctx: Context, start: Node) -> PolicyGen:
        current, path, far = start, [], 0
        for phase in phases:
            if phase.rate is None:
                name = "near"
                attempts = [greedy(ctx, current, f"near.a{i}.", name) for i in range(phase.attempts)]
            else:
                far += 1
                name = f"far{far}"
                attempts = [
                    jump_attempt(ctx, current, f"{name}.a{i}.", name, phase.rate) for i in range(phase.attempts)
                ]
            branches = yield from parallel(attempts)
            best = min(branches, key=lambda b: (ctx.cost(b.node), -ctx.better(b.node)))
            current = best.node
            path += best.path
            ctx.phase_ends[name] = current.key
        return Branch(current, path)

    return root
