"""Built-in data: a calcium-imaging simulator shaped like the seed's recordings, and real handwritten digits.

The seed decodes a binary mouse behaviour from the fluorescence of striatal neurons, one frame per sample. The
recordings are not public, so :func:`calcium` simulates data of the same shape and difficulty:

1. neurons get positions in a 512 x 512 pixel field of view;
2. the behaviour is a two-state Markov chain over frames (bouts of about ``1 / switch`` frames);
3. every neuron fires Poisson spikes at a base rate; a subset (``tuned``) fires faster in its preferred state;
4. calcium is the spike train convolved with an exponential decay (time constant ``tau`` frames, per neuron);
5. fluorescence = baseline x (1 + gain x calcium) + Gaussian noise, then dF/F against the 10th percentile;
6. classes are balanced by subsampling frames, and each neuron is standardized (zero mean, unit variance).

With the defaults, nn1 reaches roughly 0.9-0.95 validation accuracy, like the seed.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

FIELD_OF_VIEW = 512.0


def calcium(
    n_neurons: int = 140,
    n_frames: int = 3000,
    seed: int = 0,
    image: bool = False,
    tuned: float = 0.25,
    switch: float = 0.02,
    noise: float = 0.35,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulated calcium-imaging frames and a balanced binary behaviour label.

    Args:
        n_neurons: number of neurons (the seed had 114, 140 or 273).
        n_frames: number of frames returned (even; half of each class).
        seed: everything is deterministic given the seed.
        image: return (n_frames, s, s, 1) images, s = ceil(sqrt(n_neurons)): neurons sorted by the sum of their
            centroid coordinates (x + y) and laid row by row, unused pixels zero. Otherwise (n_frames, n_neurons).
        tuned: the fraction of neurons whose firing depends on the behaviour.
        switch: the probability per frame that the behaviour changes state.
        noise: fluorescence noise, relative to the baseline.

    Returns:
        ``(x, y)``: float32 features, int32 labels in {0, 1}, frames in time order.

    Example:
        >>> from keras_grs import datasets
        >>> x, y = datasets.calcium(n_neurons=140, n_frames=1000, image=True)
        >>> x.shape, int(y.sum())
        ((1000, 12, 12, 1), 500)
    """
    if n_neurons < 1:
        raise ValueError(f"n_neurons must be positive, got {n_neurons}")
    if n_frames < 2 or n_frames % 2:
        raise ValueError(f"n_frames must be an even number of at least 2, got {n_frames}")
    if not 0 < tuned <= 1 or not 0 < switch < 1 or noise < 0:
        raise ValueError("tuned must be in (0, 1], switch in (0, 1) and noise non-negative")
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0, FIELD_OF_VIEW, size=(n_neurons, 2))

    half = n_frames // 2
    total = 3 * n_frames
    while True:
        state = _markov_chain(rng, total, switch)
        if min(np.count_nonzero(state), np.count_nonzero(state == 0)) >= half:
            break
        total *= 2

    base_rate = rng.uniform(0.02, 0.08, size=n_neurons)
    is_tuned = rng.random(n_neurons) < tuned
    preferred = rng.integers(0, 2, size=n_neurons)
    boost = rng.uniform(1.0, 3.0, size=n_neurons) * is_tuned
    rates = base_rate * (1.0 + boost * (state[:, None] == preferred[None, :]))
    spikes = rng.poisson(rates).astype(np.float64)

    tau = rng.uniform(5.0, 15.0, size=n_neurons)
    calcium_trace = np.empty_like(spikes)
    for i in range(n_neurons):
        calcium_trace[:, i] = lfilter([1.0], [1.0, -math.exp(-1.0 / tau[i])], spikes[:, i])

    baseline = rng.uniform(50.0, 150.0, size=n_neurons)
    gain = rng.uniform(0.5, 1.5, size=n_neurons)
    fluorescence = baseline * (1.0 + gain * calcium_trace) + rng.normal(0.0, noise, size=spikes.shape) * baseline
    f0 = np.percentile(fluorescence, 10, axis=0)
    dff = (fluorescence - f0) / f0

    frames = np.sort(
        np.concatenate(
            [rng.choice(np.flatnonzero(state == label), size=half, replace=False) for label in (0, 1)]
        )
    )
    x = dff[frames]
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    y = state[frames].astype(np.int32)
    x = x.astype(np.float32)
    if image:
        x = to_image(x, positions)
    return x, y


def _markov_chain(rng: np.random.Generator, length: int, switch: float) -> np.ndarray:
    flips = rng.random(length) < switch
    flips[0] = False
    start = rng.integers(0, 2)
    return (start + np.cumsum(flips)) % 2


def to_image(x: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Lay per-neuron features into a square image, neurons sorted by the sum of their centroid coordinates."""
    n_frames, n_neurons = x.shape
    side = math.ceil(math.sqrt(n_neurons))
    order = np.argsort(positions[:, 0] + positions[:, 1], kind="stable")
    flat = np.zeros((n_frames, side * side), dtype=x.dtype)
    flat[:, :n_neurons] = x[:, order]
    return flat.reshape(n_frames, side, side, 1)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits (1,797 real samples, 10 classes), shipped with scikit-learn.

    Returns:
        ``(x, y)``: float32 images of shape (N, 8, 8, 1) scaled to [0, 1], int32 labels 0..9.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    return x, data.target.astype(np.int32)


def split(x: np.ndarray, y: np.ndarray, val: float = 0.2, test: float = 0.1, seed: int = 0):
    """Shuffle and split into train, validation and test sets, stratified by label.

    Returns:
        ``((x_train, y_train), (x_val, y_val), (x_test, y_test))``; the test set is empty when ``test=0``.

    Example:
        >>> from keras_grs import datasets
        >>> train, val, test = datasets.split(*datasets.calcium(n_frames=1000))
        >>> len(train[0]), len(val[0]), len(test[0])
        (700, 200, 100)
    """
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    if val < 0 or test < 0 or val + test >= 1:
        raise ValueError(f"val ({val}) and test ({test}) must be non-negative and sum to less than 1")
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        n_val, n_test = round(len(members) * val), round(len(members) * test)
        parts[1].append(members[:n_val])
        parts[2].append(members[n_val : n_val + n_test])
        parts[0].append(members[n_val + n_test :])
    result = []
    for chunks in parts:
        index = rng.permutation(np.concatenate(chunks)) if chunks else np.array([], dtype=int)
        result.append((x[index], y[index]))
    return tuple(result)
