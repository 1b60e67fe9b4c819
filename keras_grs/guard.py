"""The guard split: validation data the search never trains on or decides with, read once at the end.

Every candidate of a search is compared with the same validation split, hundreds of times; a candidate whose score
passes by luck is accepted, and the next ones build on it. The guard is a second, smaller split held back from
all of that. When the search is over, the accepted path is walked back to the smallest structure whose guard score
is also within tolerance of the initial structure's (see :attr:`keras_grs.search.Plan.final`). Its score is an
honest estimate because nothing was chosen on it except that one cut along an ordered path.

``acceptance="guard"`` (the default) carves the guard from the validation data, stratified by class, unless a
``guard_data`` split is given; ``acceptance="seed"`` is the seed's rule (no guard: the last accepted structure).

For accuracy, a trial also records *which* guard samples it classifies right (:func:`guard_record`): EUP's checks
compare a thresholded or quantized model with its baseline sample by sample. The walk back judges the scores (see
:func:`keras_grs.search.engine.walk_back_index` for why not the paired test).

The search itself is also held less optimistic with the guard: a candidate must clear the tolerance on the validation
split by :data:`GUARD_MARGIN` binomial standard errors (for accuracy; :func:`search_margin`). Each step keeps the best
of several candidates compared on the same samples, and the path goes on until none passes: without a margin the
accepted structures sit just past what generalises, and the guard alone (a smaller split) cannot see every such step.

The guard comes with a less optimistic candidate score (``epoch_score="last"``): a candidate's last epoch (its
score and weights) instead of its best epoch. The best of many noisy epochs passes the
tolerance by luck, and on a small validation split its weights are often an early, under-trained checkpoint.
"""

from __future__ import annotations

import numpy as np

from keras_grs.inputs import DataError, check_split

ACCEPTANCE = ("guard", "seed")
DEFAULT_ACCEPTANCE = "guard"
DEFAULT_GUARD_FRACTION = 0.4
# how a candidate's epochs make its score, by acceptance rule: the seed's best epoch, or the last epochs' mean
EPOCH_SCORE_OF = {"guard": "last", "seed": "best"}
# the search's acceptance margin with the guard, in binomial standard errors of the reference's validation accuracy
# (see keras_grs.search.Search; measured: docs/concepts.md)
GUARD_MARGIN = 0.5


def search_margin(acceptance, objective) -> float:
    """The acceptance margin a search uses: :data:`GUARD_MARGIN` with the guard when the objective is accuracy
    (a fraction of samples, whose noise the sample count tells), none with the seed's rule or other objectives."""
    from keras_grs.scoring import is_accuracy

    return GUARD_MARGIN if check_acceptance(acceptance) == "guard" and is_accuracy(objective) else 0.0


def epoch_score_for(acceptance, epoch_score=None) -> str:
    """The epoch rule a search uses: the one given, else the acceptance rule's (``guard``: ``last``)."""
    from keras_grs.evaluate.base import check_epoch_score

    return check_epoch_score(epoch_score if epoch_score is not None else EPOCH_SCORE_OF[check_acceptance(acceptance)])


def check_acceptance(acceptance) -> str:
    if acceptance not in ACCEPTANCE:
        raise ValueError(f"unknown acceptance {acceptance!r}; choose one of {', '.join(ACCEPTANCE)}")
    return acceptance


def check_guard_fraction(fraction) -> float:
    """A fraction of the validation data in (0, 0.9)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 0.9:
        raise ValueError(f"guard fraction must be a number in (0, 0.9), got {fraction!r}")
    return float(fraction)


def class_ids(y) -> np.ndarray | None:
    """Class ids of labels (ids, one-hot or soft-label rows, or 0/1), or None for targets that are not classes
    (a regression's values: rows that are not a distribution over classes)."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        rows = y.astype("float64")
        if rows.min() >= 0 and np.allclose(rows.sum(axis=1), 1.0, atol=1e-3):
            return y.argmax(axis=1)
        return None
    flat = y.reshape(len(y))
    if np.issubdtype(flat.dtype, np.integer) or flat.dtype == bool:
        return flat.astype(int)
    if np.all(np.equal(np.mod(flat, 1), 0)) and len(np.unique(flat)) <= max(2, len(flat) // 2):
        return flat.astype(int)
    return None


# words of a loss' name (lower case, no underscores) that say what its labels are
CLASS_LOSS_WORDS = ("crossentropy", "hinge", "focal")
VALUE_LOSS_WORDS = ("squared", "absolute", "huber", "logcosh", "poisson", "cosine", "percentage", "tversky", "dice")
VALUE_LOSS_NAMES = ("mse", "mae", "mape", "msle")


def loss_reads_classes(model) -> bool | None:
    """Whether a compiled model's loss reads classes (a cross-entropy or hinge: True) or values (a regression's
    error, such as the mean squared error or Huber: False); None for a model not compiled, several losses, or a loss
    of neither kind, whose labels then decide (:func:`class_ids`).

    Example:
        >>> import keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> model.compile(loss="mse")
        >>> loss_reads_classes(model)
        False
    """
    loss = getattr(model, "loss", None)
    if isinstance(loss, dict):
        loss = list(loss.values())
    if isinstance(loss, (list, tuple)):
        if len(loss) != 1:
            return None
        loss = loss[0]
    if loss is None:
        return None
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", None) or type(loss).__name__
    name = name.lower().replace("_", "")
    if any(word in name for word in CLASS_LOSS_WORDS):
        return True
    if name in VALUE_LOSS_NAMES or any(word in name for word in VALUE_LOSS_WORDS):
        return False
    return None


def split_guard(validation_data, fraction=DEFAULT_GUARD_FRACTION, seed=0, classes=None):
    """Split ``(x_val, y_val)`` into the search's validation data and the guard, stratified by class.

    Each class gives ``round(fraction x its count)`` samples to the guard; a class too small to leave at least one
    sample on each side is refused (the guard could not judge it). ``classes`` says whether the labels are classes:
    False for a regression's targets (a random share, whatever their values: ages or counts are whole numbers too),
    None to decide from the labels (:func:`class_ids`); pass :func:`loss_reads_classes` of the model.

    Returns:
        ``((x_val, y_val), (x_guard, y_guard))``.

    Example:
        >>> import numpy as np
        >>> (xv, yv), (xg, yg) = split_guard((np.zeros((10, 2)), np.array([0, 1] * 5)), 0.4, seed=0)
        >>> len(xv), len(xg), np.bincount(yg).tolist()
        (6, 4, [2, 2])
    """
    fraction = check_guard_fraction(fraction)
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) < 2:
        raise DataError("validation_data must be a tuple (x_val, y_val)")
    x, y = np.asarray(validation_data[0]), np.asarray(validation_data[1])
    check_split("validation data", x, y)
    rng = np.random.default_rng([0 if seed is None else int(seed), 7919])
    classes = None if classes is False else class_ids(y)
    groups = {0: np.arange(len(y))} if classes is None else {c: np.flatnonzero(classes == c) for c in np.unique(classes)}
    guard = []
    for label, members in groups.items():
        take = int(round(fraction * len(members)))
        if take < 1 or take >= len(members):
            what = "the validation data" if classes is None else f"class {label} ({len(members)} validation samples)"
            raise DataError(
                f"a guard split of {fraction:g} is too small or too large for {what}: it would hold {take} of "
                f"{len(members)} samples, and both the guard and the search's validation data need at least one of "
                "each class; pass more validation data, another guard fraction, or guard_data explicitly"
            )
        guard.append(rng.choice(members, size=take, replace=False))
    chosen = np.zeros(len(y), bool)
    chosen[np.concatenate(guard)] = True
    return (x[~chosen], y[~chosen]), (x[chosen], y[chosen])


def check_guard_data(guard_data, acceptance):
    """An explicit guard split: only with ``acceptance="guard"``, a tuple ``(x, y)`` of non-empty, finite data."""
    if guard_data is None:
        return None
    if acceptance != "guard":
        raise ValueError(f"guard_data only serves acceptance='guard', not {acceptance!r}")
    if not isinstance(guard_data, (tuple, list)) or len(guard_data) != 2:
        raise DataError("guard_data must be a tuple (x_guard, y_guard)")
    check_split("guard data", *guard_data)
    return guard_data


class ResolutionWarning(UserWarning):
    """A split too small to see the tolerance (see :func:`resolution_warnings`)."""


def resolution_warnings(objective, tolerance, **splits) -> list[str]:
    """Splits too small to see the tolerance: one sample of an accuracy-like score is worth more than it allows.

    A split of ``n`` samples moves accuracy in steps of ``1 / n``; when that step exceeds ``1 - tolerance``, a
    candidate either keeps every sample or fails, and what it loses on unseen data below one sample is invisible.
    ``splits`` maps a split's name (``validation``, ``guard``) to its labels (or None).

    Example:
        >>> import numpy as np
        >>> resolution_warnings("val_accuracy", 0.98, validation=np.zeros(21), guard=np.zeros(500))[0][:40]
        'the validation split has 21 samples: one'
    """
    name = getattr(objective, "name", objective)
    if not isinstance(name, str) or "accuracy" not in name:
        return []
    out = []
    for split, labels in splits.items():
        if labels is None or len(labels) == 0:
            continue
        step = 100.0 / len(labels)
        if step > 100.0 * (1 - tolerance):
            out.append(
                f"the {split} split has {len(labels)} samples: one sample is {step:.1f} points of accuracy, more than "
                f"the tolerance's {100 * (1 - tolerance):g}, so losses below one sample cannot be seen; expect the "
                "test loss to exceed the tolerance, and pass more validation data (or guard_data) if you can"
            )
    return out


def pack_outcomes(right) -> str:
    """Per-sample right/wrong as a short text (hex of the packed bits) that trial records can carry.

    Example:
        >>> pack_outcomes([True, False, True])
        'a0'
        >>> unpack_outcomes('a0', 3).tolist()
        [True, False, True]
    """
    return np.packbits(np.asarray(right, bool)).tobytes().hex()


def unpack_outcomes(text, samples) -> np.ndarray | None:
    """The booleans :func:`pack_outcomes` packed (None when ``text`` is missing or does not hold ``samples``)."""
    if not text or not samples:
        return None
    try:
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(text), np.uint8))
    except (ValueError, TypeError):
        return None
    if len(bits) < samples or len(bits) - samples >= 8:
        return None
    return bits[: int(samples)].astype(bool)


def guard_record(model, guard_data, objective) -> dict:
    """A trial's guard record: ``guard`` (the objective on the guard split), ``guard_samples`` (its size) and, for
    accuracy, ``guard_right`` (which samples it gets right, packed; see :func:`pack_outcomes`)."""
    from keras_grs.scoring import correct, is_accuracy, score

    x, y = guard_data
    if is_accuracy(objective):
        right = correct(model, x, y)
        return {"guard": float(np.mean(right)), "guard_samples": len(right), "guard_right": pack_outcomes(right)}
    return {"guard": score(model, x, y, objective), "guard_samples": len(y), "guard_right": None}

