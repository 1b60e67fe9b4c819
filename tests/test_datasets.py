import hashlib

import keras
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from keras_grs import datasets, models, surgery

from helpers import fit_epochs_whole

EPOCHS = 40  # of the calibration test (nn1 is near 0.85 at 20); the full calibration is benchmarks/calibration.py


def test_calcium_is_deterministic_balanced_and_standardized():
    x, y = datasets.calcium(n_neurons=60, n_frames=800, seed=3)
    x2, y2 = datasets.calcium(n_neurons=60, n_frames=800, seed=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert x.shape == (800, 60) and x.dtype == np.float32 and y.dtype == np.int32
    assert np.count_nonzero(y == 0) == np.count_nonzero(y == 1) == 400
    np.testing.assert_allclose(x.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=0), 1, atol=1e-3)
    other, _ = datasets.calcium(n_neurons=60, n_frames=800, seed=4)
    assert not np.allclose(x, other)


def test_calcium_labels_come_in_bouts_like_behaviour():
    _, y = datasets.calcium(n_frames=2000)
    switches = np.count_nonzero(np.diff(y))
    assert switches < 200  # a two-state chain with long bouts, not independent coin flips (about 1000 switches)


def test_calcium_image_layout_sorts_neurons_into_a_square():
    x, y = datasets.calcium(n_neurons=140, n_frames=200, seed=1)
    image, y_image = datasets.calcium(n_neurons=140, n_frames=200, seed=1, image=True)
    assert image.shape == (200, 12, 12, 1)
    np.testing.assert_array_equal(y, y_image)
    flat = image.reshape(200, 144)
    assert np.all(flat[:, 140:] == 0)
    # the same neurons, permuted: every column of x appears once among the image's pixels
    assert sorted(map(tuple, np.round(flat[:, :140].T, 5))) == sorted(map(tuple, np.round(x.T, 5)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="even"):
        datasets.calcium(n_frames=101)
    with pytest.raises(ValueError, match="n_neurons"):
        datasets.calcium(n_neurons=0)
    with pytest.raises(ValueError, match="difficulty"):
        datasets.calcium(difficulty="hard")
    with pytest.raises(ValueError, match="dataset"):
        datasets.calcium(dataset=-1)
    with pytest.raises(ValueError, match="easy one has none"):
        datasets.calcium(dataset=0, difficulty="easy")


@pytest.mark.parametrize(
    "arguments, digest",
    [
        # digests of the first simulator's arrays, taken before the realistic one became the default
        (dict(n_neurons=30, n_frames=400, seed=2), "77e343f5dd2e8f78f4510dad1c4408d483fe1d223262038170e8a4bb196d24da"),
        (dict(n_neurons=36, n_frames=200, seed=1, image=True),
         "8dfdd51f5b8833565dc56be9b70a9f1f90ae496283d49d4e5ff3bd2a18cf122d"),
    ],
)
def test_easy_difficulty_gives_the_first_simulators_arrays(arguments, digest):
    x, y = datasets.calcium(difficulty="easy", **arguments)
    assert hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest() == digest


def test_recordings_differ_in_neurons_and_a_session_keeps_its_recording():
    shapes = [datasets.calcium(dataset=k, n_frames=200)[0].shape for k in range(3)]
    assert shapes == [(200, n) for n in datasets.RECORDING_NEURONS]
    assert 100 <= datasets.calcium(dataset=5, n_frames=200)[0].shape[1] <= 300
    assert datasets.calcium(dataset=1, n_frames=200, n_neurons=50)[0].shape == (200, 50)
    # one recording, two sessions: the same cells (same tuning) in different behaviour
    first, second = (datasets.calcium(dataset=0, seed=s, n_frames=200)[0] for s in (0, 1))
    assert first.shape == second.shape and not np.allclose(first, second)
    # without dataset, the seed picks the recording as well
    np.testing.assert_array_equal(datasets.calcium(seed=0, n_frames=200)[0], first)


def test_mixed_selective_neurons_encode_state_only_together_with_context():
    session = datasets._session(140, 3000, 0, 0, 0.45, 0.02, 0.15)
    cells, state, context = session.cells, session.state, session.context
    xor = np.flatnonzero(cells.role == "xor")
    assert len(xor) >= 20
    preferred = (state[:, None] ^ context[:, None]) == cells.preferred_state[xor]
    activity = session.dff[:, xor]
    by_conjunction = activity[preferred].mean() - activity[~preferred].mean()
    by_state = np.abs([np.corrcoef(activity[:, i], state)[0, 1] for i in range(len(xor))]).mean()
    assert by_conjunction > 0.5  # a strong response to (state XOR context) ...
    assert by_state < 0.2  # ... while state alone explains little of any one neuron


def test_plot_traces_draws_one_row_per_response_type(tmp_path):
    figure = datasets.plot_traces(tmp_path / "traces.png", frames=200)
    assert (tmp_path / "traces.png").stat().st_size > 10_000
    titles = [axis.get_title(loc="left") for axis in figure.axes]
    assert any("XOR" in title for title in titles) and any("untuned" in title for title in titles)
    with pytest.raises(ValueError, match="frames"):
        datasets.plot_traces(frames=10**6)


def test_digits_are_real_images():
    x, y = datasets.digits()
    assert x.shape == (1797, 8, 8, 1) and 0 <= x.min() and x.max() <= 1
    assert set(np.unique(y)) == set(range(10))


def test_split_is_stratified_disjoint_and_complete():
    x = np.arange(1000, dtype="float32")[:, None]
    y = np.repeat([0, 1], 500)
    (xt, yt), (xv, yv), (xs, ys) = datasets.split(x, y, val=0.2, test=0.1, seed=5)
    assert (len(xt), len(xv), len(xs)) == (700, 200, 100)
    assert np.count_nonzero(yv) == 100 and np.count_nonzero(ys) == 50
    together = np.concatenate([xt, xv, xs])[:, 0]
    assert sorted(together) == list(range(1000))
    with pytest.raises(ValueError, match="sum to less than 1"):
        datasets.split(x, y, val=0.6, test=0.5)
    with pytest.raises(ValueError, match="samples"):
        datasets.split(x, y[:10])


def test_nn1_learns_the_easy_simulator_quickly():
    x, y = datasets.calcium(n_neurons=140, n_frames=3000, seed=0, difficulty="easy")
    (xt, yt), (xv, yv), _ = datasets.split(x, y)
    model = models.build("nn1", (140,))
    history = fit_epochs_whole(model, xt, yt, epochs=10, batch_size=32, validation_data=(xv, yv), verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.85
    keras.backend.clear_session()


def test_realistic_data_needs_a_non_linear_and_wide_enough_decoder():
    """The calibration of docs/datasets.md in miniature: few epochs, best of two 3x2x1 initialisations, loose bounds."""
    (xt, yt), (xv, yv), _ = datasets.split(*datasets.calcium(dataset=0), val=0.2, test=0.1, seed=0)

    def trained(model):
        history = fit_epochs_whole(model, xt, yt, epochs=EPOCHS, batch_size=32, validation_data=(xv, yv), verbose=0)
        keras.backend.clear_session()
        return history.history["val_accuracy"][-1]

    keras.utils.set_random_seed(0)
    nn1 = trained(models.build("nn1", (140,)))
    logistic = LogisticRegression(C=0.1, max_iter=2000).fit(xt, yt).score(xv, yv)
    tiny = 0.0
    for seed in range(2):
        keras.utils.set_random_seed(seed)
        tiny = max(tiny, trained(surgery.resized(models.build("nn1", (140,)), {"dense1": 3, "dense2": 2, "dense3": 1})))
    assert 0.80 <= nn1 <= 0.95
    assert nn1 - logistic >= 0.03, (nn1, logistic)
    assert nn1 - tiny >= 0.03, (nn1, tiny)

