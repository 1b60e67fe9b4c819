"""Intra-layer unit selection: which units of a group a step removes."""

from __future__ import annotations

import numpy as np

from keras_grs.search.engine import Context, Node


def random_units(ctx: Context, node: Node, group: int, count: int, rng: np.random.Generator) -> tuple[int, ...]:
    """``count`` units chosen uniformly at random (positions relative to ``node``'s units)."""
    width = len(node.candidate.units[group])
    return tuple(sorted(int(i) for i in rng.choice(width, size=count, replace=False)))


def magnitude_units(ctx: Context, node: Node, group: int, count: int, rng: np.random.Generator) -> tuple[int, ...]:
    """The ``count`` units with the smallest L1 norm of their incoming weights (bias excluded) in the trained
    model of ``node``; ties go to the lower index."""
    name = ctx.groups[group].name
    norms = (node.outcome.unit_norms or {}).get(name)
    width = len(node.candidate.units[group])
    if norms is None or len(norms) != width:
        raise ValueError(
            f"weight-magnitude selection needs the L1 norms of the {width} units of group {name!r} in the trained "
            f"model of {node.key!r}; the evaluator reported {None if norms is None else len(norms)}"
        )
    return tuple(sorted(int(i) for i in np.argsort(np.asarray(norms, dtype=float), kind="stable")[:count]))


UNIT_SELECTIONS = {"random": random_units, "magnitude": magnitude_units}
NEEDS_NORMS = frozenset({"magnitude"})  # selections that read the trained units' L1 norms (Outcome.unit_norms)
