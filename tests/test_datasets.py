import keras
import numpy as np
import pytest

from keras_grs import datasets, models


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


def test_nn1_learns_the_simulated_behaviour():
    x, y = datasets.calcium(n_neurons=140, n_frames=3000, seed=0)
    (xt, yt), (xv, yv), _ = datasets.split(x, y)
    model = models.build("nn1", (140,))
    history = model.fit(xt, yt, epochs=10, batch_size=32, validation_data=(xv, yv), verbose=0)
    assert history.history["val_accuracy"][-1] >= 0.85
    keras.backend.clear_session()
