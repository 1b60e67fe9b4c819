"""The pruning search: one engine, four methods (declared in :mod:`keras_grs.search.methods`).

=======  ======================  ===================
method   inter-layer order        unit selection
=======  ======================  ===================
grs      greedy                   random
rrs      random                   random
nwm      natural (input first)    weight magnitude
jgrs     jumps, then greedy       random
=======  ======================  ===================

Example:
    >>> from keras_grs.search import GroupSpec, make_search, run, Outcome
    >>> search = make_search("grs", [GroupSpec("a", 4), GroupSpec("b", 3)], tolerance=0.9, seed=0)
    >>> plan = run(search, lambda c: Outcome(score=1.0 if sum(c.widths) >= 5 else 0.5))
    >>> plan.finished, sum(search.groups[i].width for i in range(2)) - sum(plan.path[-1].widths)
    (True, 2)
"""

from __future__ import annotations

from keras_grs.search.engine import (
    INITIAL_KEY,
    Candidate,
    GroupSpec,
    Outcome,
    Plan,
    Search,
    SearchError,
    Step,
    UNCONSTRAINED,
    COSTS,
    DIRECTIONS,
    check_cost,
    check_direction,
    check_tolerance,
    check_width_multiple,
    constrain,
    run,
    within_tolerance,
)
from keras_grs.search.methods import METHODS, Method, method_named
from keras_grs.search.order import DEFAULT_PHASES, Phase, check_phases
from keras_grs.search.units import UNIT_SELECTIONS


def make_search(method, groups, tolerance=0.985, seed=0, phases=None, units=None, direction="max", frozen=(),
                width_multiple=1, cost="flops", margin=0.0, **options) -> Search:
    """Build the :class:`Search` of a named method.

    Args:
        method: ``grs``, ``rrs``, ``nwm`` or ``jgrs``.
        groups: :class:`GroupSpec` list, in model order.
        tolerance: acceptance: score >= tolerance x the initial structure's score (direction ``max``), or
            score <= the initial structure's score / tolerance (direction ``min``).
        seed: the seed of every random decision.
        phases: JGRS phases (default: jumps at rate 0.5 and 0.2, then GRS, 3 attempts each).
        units: override the method's unit selection (``random`` or ``magnitude``).
        direction: ``max`` for a score to maximize (accuracy), ``min`` for one to minimize (a loss).
        frozen: names of groups the search never prunes.
        width_multiple: every proposed width is a multiple of it (see :class:`GroupSpec` for a starting width that
            is not).
        cost: ``flops`` (default) or ``pi-zero``: what ties and the JGRS attempt choice minimize (see
            :class:`Search`).
        margin: acceptance margin in binomial standard errors (default 0, the seed's rule; see :class:`Search`).
        **options: further options of a registered method (see :mod:`keras_grs.search.methods`).
    """
    entry = method_named(method)
    selection = units or entry.units
    if selection not in UNIT_SELECTIONS:
        raise ValueError(f"unknown unit selection {selection!r}; choose one of {', '.join(UNIT_SELECTIONS)}")
    policy, root = entry.policy({"phases": phases, **options})
    groups = constrain(groups, frozen, width_multiple)
    return Search(groups, policy, UNIT_SELECTIONS[selection], tolerance=tolerance, seed=seed, root=root, name=method,
                  direction=direction, cost=cost, margin=margin)


__all__ = [
    "DEFAULT_PHASES",
    "DIRECTIONS",
    "INITIAL_KEY",
    "METHODS",
    "Method",
    "COSTS",
    "Candidate",
    "GroupSpec",
    "Outcome",
    "Phase",
    "Plan",
    "Search",
    "SearchError",
    "Step",
    "UNCONSTRAINED",
    "check_cost",
    "check_direction",
    "check_phases",
    "check_tolerance",
    "check_width_multiple",
    "constrain",
    "make_search",
    "run",
    "within_tolerance",
]
