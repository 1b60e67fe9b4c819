"""Design selection: choose the final model among the pruned results of several initial models."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

CRITERIA = ("minparams", "minflops", "minlatency", "maxvalacc", "maxtestacc", "bestval", "besttest")


def _get(result, name):
    value = result.get(name) if isinstance(result, Mapping) else getattr(result, name, None)
    return value


def _goodness(result, split):
    """The search objective's score on ``split`` (``val`` or ``test``), larger is better whatever its direction;
    plain accuracy for results that carry no objective score."""
    value = _get(result, f"{split}_score")
    if value is None:
        return _get(result, f"{split}_accuracy")
    return -value if _get(result, "direction") == "min" else value


def select(results: Sequence, criterion: str | Callable = "minflops"):
    """Pick one result.

    Args:
        results: per initial model, anything with ``params``, ``flops``, ``val_accuracy`` and ``test_accuracy``
            (attributes or mapping keys), such as :class:`keras_grs.pipeline.ModelResult`.
        criterion: ``minparams``, ``minflops``, ``minlatency`` (the lowest estimated Raspberry Pi Zero
            milliseconds, ``latency_ms``: see :func:`keras_grs.estimate_latency`), ``maxvalacc``, ``maxtestacc``,
            ``bestval``/``besttest`` (the best score of the search's objective, e.g. the lowest ``val_loss``, on
            validation / test data), or a callable that receives the list and returns one of its items (or its index). Ties on params/FLOPs go
            to the better validation score of the search's objective (accuracy when the results carry none); ties
            on a score to the fewer FLOPs; remaining ties to the earlier result.

    Returns:
        The chosen item of ``results``.

    Example:
        >>> select([{"name": "a", "params": 10, "flops": 30, "val_accuracy": 0.9, "test_accuracy": 0.8},
        ...         {"name": "b", "params": 20, "flops": 20, "val_accuracy": 0.95, "test_accuracy": 0.9}])["name"]
        'b'
    """
    results = list(results)
    if not results:
        raise ValueError("select() needs at least one result")
    if callable(criterion):
        chosen = criterion(results)
        if isinstance(chosen, int) and not isinstance(chosen, bool):
            if not 0 <= chosen < len(results):
                raise ValueError(f"the selection function returned index {chosen}, out of range")
            return results[chosen]
        if not any(chosen is r for r in results):
            raise ValueError("the selection function must return one of the results it was given, or its index")
        return chosen
    if criterion not in CRITERIA:
        raise ValueError(f"unknown selection criterion {criterion!r}; choose one of {', '.join(CRITERIA)} or a function")
    if criterion in ("maxtestacc", "besttest") and any(_goodness(r, "test") is None for r in results):
        raise ValueError(f"criterion {criterion!r} needs test data: some results have no test score")
    if criterion == "minlatency" and any(_get(r, "latency_ms") is None for r in results):
        raise ValueError("criterion 'minlatency' needs each result's latency_ms (estimated Pi Zero milliseconds); "
                         "some results have none")
    keys = {
        "minparams": lambda r: (_get(r, "params"), -_goodness(r, "val")),
        "minflops": lambda r: (_get(r, "flops"), -_goodness(r, "val")),
        "minlatency": lambda r: (_get(r, "latency_ms"), -_goodness(r, "val")),
        "maxvalacc": lambda r: (-_get(r, "val_accuracy"), _get(r, "flops")),
        "maxtestacc": lambda r: (-_get(r, "test_accuracy"), _get(r, "flops")),
        "bestval": lambda r: (-_goodness(r, "val"), _get(r, "flops")),
        "besttest": lambda r: (-_goodness(r, "test"), _get(r, "flops")),
    }
    return min(results, key=keys[criterion])
