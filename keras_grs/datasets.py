"""Built-in data: a calcium-imaging simulator shaped like the seed's recordings, and real handwritten digits.

The seed decodes a binary mouse behaviour from the fluorescence of striatal medium spiny neurons (MSNs), one frame
per sample. The recordings are not public, so :func:`calcium` simulates data of the same shape, at one of two
difficulties.

``difficulty="realistic"`` (the default) is calibrated to be about as hard as the seed's data (see
``docs/datasets.md`` for the calibration table): nn1 reaches roughly 0.85-0.93 validation accuracy after 100 epochs,
a linear decoder and a tiny 3x2x1 network clearly less. A *recording* (``dataset=k``) fixes the neurons: their
number, positions in a 512 x 512 pixel field of view, tuning and calcium kinetics. A *session* (``seed``) fixes the
behaviour, the spikes and the noise.

1. behaviour ``s`` is a two-state Markov chain over frames (bouts of about ``1 / switch`` frames); a hidden context
   ``c`` (e.g. a task rule the decoder never sees) alternates in slower blocks, independent of behaviour;
2. behaviour is encoded sparsely and mostly non-linearly: a minority of neurons is (weakly) tuned to ``s`` alone;
   mixed-selective neurons fire for a conjunction of ``s`` and ``c`` or for their XOR, which a linear read-out of
   ``s`` cannot use without knowing ``c``; context neurons fire for ``c`` alone; transition neurons fire a burst
   after the onset of their preferred state (the offset of the other); the rest fire at their base rate only; a
   neuron responds in only some bouts, at a varying strength (MSNs are unreliable);
3. spike counts per frame are Poisson; calcium is the spike train filtered by a GCaMP-like kernel (rise of about a
   frame, decay of several frames, per neuron);
4. fluorescence = baseline x slow drift (bleaching and a few slow shared components) x (1 + calcium + neuropil),
   where neuropil is the calcium of the neighbouring cells weighted by distance, mixed into each neuron with its
   own contamination ratio; measurement noise is partly shared between nearby neurons (correlation decays with
   distance); then dF/F against the 10th percentile.

``difficulty="easy"`` is the first simulator, kept unchanged: a subset of neurons fires faster in a preferred
state, calcium is an exponential decay, fluorescence has independent Gaussian noise. A 3x2x1 network decodes it
almost as well as nn1.

Both finish the same way: classes are balanced by subsampling frames, and each neuron is standardized.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

FIELD_OF_VIEW = 512.0
DIFFICULTIES = ("realistic", "easy")
#: Neurons of the recordings ``dataset=0, 1, 2`` (the seed's recordings had 140, 114 and 273); later recordings draw
#: their count between 100 and 300.
RECORDING_NEURONS = (140, 114, 273)

# The defaults of tuned, switch and noise per difficulty ("easy" keeps the first simulator's values).
_DEFAULTS = {
    "easy": {"tuned": 0.25, "switch": 0.02, "noise": 0.35},
    "realistic": {"tuned": None, "switch": 0.02, "noise": 0.15},
}
# Realistic default of ``tuned``: a behaviour-related ensemble of about this many cells whatever the recording's size
# (a larger field of view adds cells outside the ensemble), at most 60% of the neurons. 63 of 140 = 0.45.
_ENSEMBLE = 63
_MAX_TUNED = 0.6

# How the behaviour-related neurons (the fraction ``tuned``) divide among response types, before a recording's
# jitter. Calibrated against the difficulty figures of issue 16 (see docs/datasets.md), not against any method.
_ROLE_SHARES = {"state": 0.03, "conjunction": 0.02, "xor": 0.9, "transition": 0.05}
# The hidden context alternates in blocks of 100-300 frames (slower than behaviour, independent of it, and balanced,
# so that it carries no information about behaviour on its own).
_CONTEXT_BLOCKS = (100, 300)
_CONTEXT_PER_TUNED = 0.45  # context-only neurons per behaviour-related neuron
_WEAK_SHARE = 0.8  # of the state-tuned neurons: weakly tuned
_RELIABILITY = (0.15, 0.6)  # per neuron: the chance of responding in a given bout
_AMPLITUDE = 0.35  # median extra spikes per frame of a responding neuron
_BURST = 1.5  # how much stronger a transition burst is
_DRIFT_FRAMES = 1000.0  # time constant of the slow baseline drift
_DRIFT_COMPONENTS = 3


def calcium(
    n_neurons: int | None = None,
    n_frames: int = 3000,
    seed: int = 0,
    image: bool = False,
    tuned: float | None = None,
    switch: float | None = None,
    noise: float | None = None,
    difficulty: str = "realistic",
    dataset: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Simulated calcium-imaging frames and a balanced binary behaviour label.

    Args:
        n_neurons: number of neurons. Default: the recording's (``RECORDING_NEURONS``) when ``dataset`` is given,
            else 140.
        n_frames: number of frames returned (even; half of each class).
        seed: the session: behaviour, spikes, noise and frame subsampling. Without ``dataset`` it also selects the
            recording (neurons, positions, tuning), so every seed is a different recording.
        image: return (n_frames, s, s, 1) images, s = ceil(sqrt(n_neurons)): neurons sorted by the sum of their
            centroid coordinates (x + y) and laid row by row, unused pixels zero. Otherwise (n_frames, n_neurons).
        tuned: the fraction of neurons whose firing depends on the behaviour. Default: easy 0.25; realistic an
            ensemble of about 63 cells whatever the recording's size (63 / n_neurons, at most 0.6).
        switch: the probability per frame that the behaviour changes state (default 0.02).
        noise: fluorescence noise, relative to the baseline (default 0.15 realistic, 0.35 easy).
        difficulty: ``"realistic"`` (as hard as the seed's data, calibrated) or ``"easy"`` (the first simulator,
            the same arrays as before for the same arguments).
        dataset: the recording, 0, 1, 2, ... (realistic only): its neuron count, positions, tuning and kinetics.

    Returns:
        ``(x, y)``: float32 features, int32 labels in {0, 1}, frames in time order.

    Example:
        >>> from keras_grs import datasets
        >>> x, y = datasets.calcium(dataset=1, n_frames=1000, image=True)
        >>> x.shape, int(y.sum())
        ((1000, 11, 11, 1), 500)
    """
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {difficulty!r}")
    if dataset is not None:
        if difficulty == "easy":
            raise ValueError("dataset selects a recording of the realistic simulator; the easy one has none")
        if int(dataset) != dataset or dataset < 0:
            raise ValueError(f"dataset must be a non-negative integer, got {dataset}")
    defaults = _DEFAULTS[difficulty]
    if n_neurons is None:
        n_neurons = _recording_neurons(dataset) if dataset is not None else 140
    if n_neurons < 1:
        raise ValueError(f"n_neurons must be positive, got {n_neurons}")
    if tuned is None:
        tuned = defaults["tuned"] if difficulty == "easy" else _default_tuned(n_neurons)
    switch = defaults["switch"] if switch is None else switch
    noise = defaults["noise"] if noise is None else noise
    if n_frames < 2 or n_frames % 2:
        raise ValueError(f"n_frames must be an even number of at least 2, got {n_frames}")
    if not 0 < tuned <= 1 or not 0 < switch < 1 or noise < 0:
        raise ValueError("tuned must be in (0, 1], switch in (0, 1) and noise non-negative")
    if difficulty == "easy":
        return _easy(n_neurons, n_frames, seed, image, tuned, switch, noise)
    recording = seed if dataset is None else int(dataset)
    return _realistic(n_neurons, n_frames, seed, recording, image, tuned, switch, noise)


def _default_tuned(n_neurons: int) -> float:
    return min(_MAX_TUNED, _ENSEMBLE / n_neurons)


def _recording_neurons(dataset: int) -> int:
    if dataset < len(RECORDING_NEURONS):
        return RECORDING_NEURONS[dataset]
    return int(np.random.default_rng([dataset, 7]).integers(100, 301))


def _easy(n_neurons, n_frames, seed, image, tuned, switch, noise):
    rng = np.random.default_rng(seed)
    positions = rng.uniform(0, FIELD_OF_VIEW, size=(n_neurons, 2))

    half = n_frames // 2
    state = _behaviour(rng, n_frames, switch)

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
    dff = _dff(fluorescence)
    frames = _balanced_frames(state, half, rng)
    return _finish(dff, state, frames, positions, image)


def _finish(dff, state, frames, positions, image):
    x = dff[frames]
    x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-8)
    y = state[frames].astype(np.int32)
    x = x.astype(np.float32)
    if image:
        x = to_image(x, positions)
    return x, y


class _Recording:
    """The fixed part of a recording: where the neurons are, what they respond to, how their calcium behaves."""

    def __init__(self, n_neurons: int, recording: int, tuned: float):
        rng = np.random.default_rng([recording, 1])
        n = n_neurons
        self.positions = rng.uniform(0, FIELD_OF_VIEW, size=(n, 2))
        # Response types: every recording jitters the shares, so recordings differ in tuning as well as in cells.
        shares = np.array(list(_ROLE_SHARES.values())) * rng.uniform(0.75, 1.25, size=len(_ROLE_SHARES))
        shares = tuned * shares / shares.sum()
        context = min(tuned * _CONTEXT_PER_TUNED * rng.uniform(0.75, 1.25), 1.0 - shares.sum())
        probabilities = np.concatenate([shares, [context], [max(0.0, 1.0 - shares.sum() - context)]])
        roles = np.array(list(_ROLE_SHARES) + ["context", "none"])
        self.role = roles[rng.choice(len(roles), size=n, p=probabilities / probabilities.sum())]
        # MSNs fire rarely at rest (about 0.2-1 Hz at 10 frames/s) and in bursts when engaged.
        self.base_rate = rng.uniform(0.02, 0.1, size=n)
        self.amplitude = rng.lognormal(math.log(_AMPLITUDE), 0.5, size=n)
        weak = (self.role == "state") & (rng.random(n) < _WEAK_SHARE)
        self.amplitude[weak] *= rng.uniform(0.1, 0.3, size=np.count_nonzero(weak))
        self.amplitude[self.role == "transition"] *= _BURST  # brief, strong bursts
        self.amplitude[self.role == "none"] = 0.0
        self.preferred_state = rng.integers(0, 2, size=n)  # the state (or the state entered) a neuron prefers
        self.preferred_context = rng.integers(0, 2, size=n)
        self.burst_frames = rng.uniform(3.0, 10.0, size=n)  # decay of a transition neuron's burst
        # MSNs respond unreliably: in a given bout a neuron responds with this probability, at a varying strength
        self.reliability = rng.uniform(_RELIABILITY[0], _RELIABILITY[1], size=n)
        # GCaMP6-like kernel at about 10 frames/s: rise ~0.5-1.5 frames, decay ~4-15 frames.
        self.rise = rng.uniform(0.5, 1.5, size=n)
        self.decay = rng.uniform(4.0, 15.0, size=n)
        self.baseline = rng.uniform(50.0, 150.0, size=n)
        self.gain = rng.uniform(0.5, 1.5, size=n)
        self.neuropil_ratio = rng.uniform(0.3, 0.8, size=n)
        distance2 = ((self.positions[:, None, :] - self.positions[None, :, :]) ** 2).sum(-1)
        # the neuropil a cell's ROI sees: the neighbouring cells' calcium, weighted by distance (not itself)
        weights = np.exp(-distance2 / (2 * 60.0**2))
        np.fill_diagonal(weights, 0.0)
        self.neuropil_weights = weights / np.maximum(weights.sum(axis=1, keepdims=True), 1e-12)
        # noise shared between nearby neurons: a correlation that decays with distance
        self.noise_mixing = np.linalg.cholesky(np.exp(-distance2 / (2 * 40.0**2)) + 1e-6 * np.eye(n))

    def drive(self, state: np.ndarray, context: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Each neuron's extra firing rate per frame, (frames, neurons)."""
        s, c = state[:, None], context[:, None]
        s_pref, c_pref = self.preferred_state[None, :], self.preferred_context[None, :]
        since = _frames_since_entering(state)
        entered = state[:, None] == s_pref  # the state a transition neuron's burst follows the entry of
        by_role = {
            "state": s == s_pref,
            "conjunction": (s == s_pref) & (c == c_pref),
            "xor": (s ^ c) == s_pref,
            "transition": entered * np.exp(-since[:, None] / self.burst_frames[None, :]),
            "context": c == c_pref,
            "none": np.zeros_like(s, dtype=bool),
        }
        result = np.zeros((len(state), len(self.role)))
        for role, response in by_role.items():
            columns = self.role == role
            result[:, columns] = np.broadcast_to(response, result.shape)[:, columns]
        bout = np.concatenate([[0], np.cumsum(np.diff(state) != 0)])
        responds = rng.random((bout[-1] + 1, len(self.role))) < self.reliability[None, :]
        strength = responds * rng.lognormal(0.0, 0.5, size=responds.shape)
        return result * self.amplitude[None, :] * strength[bout]


def _frames_since_entering(state: np.ndarray) -> np.ndarray:
    """For every frame, the frames elapsed since the current state began (large for the first bout)."""
    starts = np.flatnonzero(np.diff(state)) + 1
    last_start = np.zeros(len(state), dtype=np.int64)
    last_start[starts] = starts
    last_start = np.maximum.accumulate(last_start)
    since = np.arange(len(state)) - last_start
    since[: starts[0] if len(starts) else len(state)] = 10**6  # the recording did not see the first onset
    return since.astype(np.float64)


def _realistic(n_neurons, n_frames, seed, recording, image, tuned, switch, noise):
    session = _session(n_neurons, n_frames, seed, recording, tuned, switch, noise)
    return _finish(session.dff, session.state, session.frames, session.cells.positions, image)


class _Session:
    """One simulated recording session, every frame in time order (before the balanced subsampling)."""

    def __init__(self, cells, state, context, dff, frames):
        self.cells, self.state, self.context, self.dff, self.frames = cells, state, context, dff, frames


def _session(n_neurons, n_frames, seed, recording, tuned, switch, noise) -> _Session:
    cells = _Recording(n_neurons, recording, tuned)
    rng = np.random.default_rng([seed, recording, 2])
    half = n_frames // 2
    state = _behaviour(rng, n_frames, switch)
    total = len(state)
    context = _blocks(rng, total, _CONTEXT_BLOCKS)

    spikes = rng.poisson(cells.base_rate[None, :] + cells.drive(state, context, rng)).astype(np.float64)
    calcium_trace = np.empty_like(spikes)
    for i in range(n_neurons):
        calcium_trace[:, i] = _gcamp(spikes[:, i], cells.rise[i], cells.decay[i])
    calcium_trace *= cells.gain[None, :]
    neuropil = calcium_trace @ cells.neuropil_weights.T

    t = np.arange(total)[:, None]
    bleaching = np.exp(-t / (rng.uniform(2.0, 4.0) * total))
    # Slow drift is shared (focus, brain motion): a few slow components that every neuron loads on differently.
    # Independent per-neuron walks would hand a linear decoder a basis of functions of time, and with it the local
    # frequency of each behaviour state (frames of one time window fall in both training and validation sets).
    walks = lfilter([1.0], [1.0, -math.exp(-1.0 / _DRIFT_FRAMES)], rng.normal(size=(total, _DRIFT_COMPONENTS)), axis=0)
    walks /= walks.std(axis=0, keepdims=True) + 1e-12
    loadings = rng.normal(0.0, 0.08 / math.sqrt(_DRIFT_COMPONENTS), size=(_DRIFT_COMPONENTS, n_neurons))
    drift = bleaching * (1.0 + walks @ loadings)
    shared = rng.normal(size=spikes.shape) @ cells.noise_mixing.T
    measurement = noise * (0.6 * shared + 0.8 * rng.normal(size=spikes.shape))
    fluorescence = cells.baseline * (drift * (1.0 + calcium_trace + cells.neuropil_ratio * neuropil) + measurement)
    dff = _dff(fluorescence)
    frames = _balanced_frames(state, half, rng)
    return _Session(cells, state, context, dff, frames)


def _gcamp(spikes: np.ndarray, rise: float, decay: float) -> np.ndarray:
    """Spikes filtered by a difference of exponentials (rise, decay in frames), peak response to one spike 1."""
    slow, fast = math.exp(-1.0 / decay), math.exp(-1.0 / rise)
    response = lfilter([1.0], [1.0, -slow], spikes) - lfilter([1.0], [1.0, -fast], spikes)
    steps = np.arange(int(10 * decay) + 2)
    return response / (slow**steps - fast**steps).max()


def _blocks(rng: np.random.Generator, length: int, block: tuple[int, int]) -> np.ndarray:
    """Alternating 0/1 blocks of random lengths in ``block``: a context that spends equal time in each value."""
    lengths = rng.integers(block[0], block[1] + 1, size=length // block[0] + 1)
    values = (rng.integers(0, 2) + np.arange(len(lengths))) % 2
    return np.repeat(values, lengths)[:length]


def _markov_chain(rng: np.random.Generator, length: int, switch: float) -> np.ndarray:
    flips = rng.random(length) < switch
    flips[0] = False
    start = rng.integers(0, 2)
    return (start + np.cumsum(flips)) % 2


_ROLE_LABELS = {
    "xor": "mixed (state XOR context)",
    "conjunction": "mixed (state AND context)",
    "context": "context only",
    "state": "state",
    "transition": "state onset",
    "none": "untuned",
}


def _behaviour(rng, n_frames, switch):
    """A two-state chain long enough to hold ``n_frames // 2`` frames of each state (3 x n_frames frames, doubled
    as needed)."""
    half, total = n_frames // 2, 3 * n_frames
    while True:
        state = _markov_chain(rng, total, switch)
        if min(np.count_nonzero(state), np.count_nonzero(state == 0)) >= half:
            return state
        total *= 2


def _dff(fluorescence):
    """dF/F against each neuron's 10th percentile."""
    f0 = np.percentile(fluorescence, 10, axis=0)
    return (fluorescence - f0) / f0


def _balanced_frames(state, half, rng):
    """``half`` random frames of each behaviour state, in time order."""
    return np.sort(
        np.concatenate([rng.choice(np.flatnonzero(state == label), size=half, replace=False) for label in (0, 1)])
    )


def plot_traces(path=None, dataset: int = 0, seed: int = 0, frames: int = 600, start: int = 0):
    """Draw example dF/F traces of the realistic simulator, one neuron per response type, behaviour shaded.

    Frames are shown in time order, before the balanced subsampling. Grey bands mark behaviour state 1; the strip
    at the bottom is the hidden context (dark = 1), which the decoder never sees.

    Args:
        path: where to save a PNG; nothing is saved when None.
        dataset, seed: the recording and the session, as in :func:`calcium`.
        frames, start: the window of frames drawn.

    Returns:
        the matplotlib ``Figure``.

    Example:
        >>> from keras_grs import datasets
        >>> figure = datasets.plot_traces(frames=300)
        >>> len(figure.axes) > 1
        True
    """
    from matplotlib.figure import Figure

    if frames < 2 or start < 0:
        raise ValueError(f"frames must be at least 2 and start non-negative, got frames={frames}, start={start}")
    n_neurons = _recording_neurons(dataset)
    defaults = _DEFAULTS["realistic"]
    session = _session(n_neurons, 3000, seed, dataset, _default_tuned(n_neurons), defaults["switch"], defaults["noise"])
    if start + frames > len(session.state):
        raise ValueError(f"the session has {len(session.state)} frames; start + frames = {start + frames}")
    window = slice(start, start + frames)
    shown = [(role, int(np.flatnonzero(session.cells.role == role)[0]))
             for role in _ROLE_LABELS if np.any(session.cells.role == role)]
    figure = Figure(figsize=(9, 1.1 * len(shown) + 0.8))
    axes = figure.subplots(len(shown) + 1, 1, sharex=True,
                           gridspec_kw={"height_ratios": [1.0] * len(shown) + [0.25]})
    time = np.arange(start, start + frames)
    state, context = session.state[window], session.context[window]
    for axis, (role, neuron) in zip(axes, shown):
        axis.fill_between(time, 0, 1, where=state == 1, step="mid", color="0.85", transform=axis.get_xaxis_transform())
        axis.plot(time, session.dff[window, neuron], color="tab:green", linewidth=0.8)
        axis.set_ylabel("dF/F", fontsize=8)
        axis.set_title(f"neuron {neuron}: {_ROLE_LABELS[role]}", fontsize=9, loc="left")
        axis.tick_params(labelsize=8)
    axes[-1].imshow(context[None, :], aspect="auto", cmap="Greys", vmin=-0.5, vmax=1.5,
                    extent=(start, start + frames, 0, 1))
    axes[-1].set_yticks([])
    axes[-1].set_ylabel("context", fontsize=8, rotation=0, ha="right", va="center")
    axes[-1].set_xlabel("frame (grey: behaviour state 1)", fontsize=9)
    figure.suptitle(f"Simulated calcium traces, recording {dataset} ({n_neurons} neurons), session {seed}",
                    fontsize=10)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110, bbox_inches="tight")
    return figure


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
