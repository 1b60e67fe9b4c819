import numpy as np
import pytest

from keras_grs import count_params, datasets, eup, models
from keras_grs.scoring import accuracy


@pytest.fixture(scope="module")
def trained():
    x, y = datasets.calcium(n_neurons=60, n_frames=1000, seed=4, difficulty="easy")
    (xt, yt), validation, _ = datasets.split(x, y, val=0.3, test=0.0)
    model = models.build("nn2", (60,))
    model.fit(xt, yt, epochs=20, batch_size=32, verbose=0)
    assert accuracy(model, *validation) > 0.75  # a model that learned something, so thresholds matter
    return model, validation


def thresholded_copy(model, t, mode):
    """Apply one thresholding step by hand, to check where threshold() stopped."""
    from keras_grs.eup import _copy, _prunable_layers, _thresholded

    copy = _copy(model)
    layers = _prunable_layers(copy)
    _thresholded([layer.get_weights() for layer in layers], layers, t, mode)
    return copy


def test_threshold_stops_at_the_last_passing_step_and_never_below_tolerance(trained):
    model, validation = trained
    before = [w.copy() for w in model.get_weights()]
    reference = accuracy(model, *validation)
    # small steps, so that at least the first one passes whatever the training gave
    sparse, info = eup.threshold(model, validation, tolerance=0.99, init=0.02, step=0.05)
    assert info.reference == reference
    assert info.val_accuracy >= 0.99 * reference
    assert accuracy(sparse, *validation) == info.val_accuracy
    assert info.threshold is not None and info.nonzero_params < info.params
    assert info.nonzero_params == count_params(sparse, nonzero=True)
    # the next step fails, unless every weight is already zero
    if info.nonzero_params:
        following = thresholded_copy(model, info.threshold + 0.05, "relative")
        assert accuracy(following, *validation) < 0.99 * reference
        np.testing.assert_allclose(accuracy(thresholded_copy(model, info.threshold, "relative"), *validation),
                                   info.val_accuracy)
    # the input is never changed
    assert all((a == b).all() for a, b in zip(before, model.get_weights()))


def test_absolute_threshold_leaves_no_small_weight(trained):
    model, validation = trained
    sparse, info = eup.threshold(model, validation, tolerance=0.98, mode="absolute", init=0.001, step=0.005)
    assert info.mode == "absolute" and info.threshold is not None
    for layer in sparse.layers:
        for w in layer.get_weights():
            nonzero = np.abs(w[w != 0])
            assert nonzero.size == 0 or nonzero.min() >= info.threshold - 1e-12


def test_threshold_with_a_reference_out_of_reach_changes_nothing(trained):
    model, validation = trained
    same, info = eup.threshold(model, validation, reference=2.0)
    assert info.threshold is None
    for a, b in zip(same.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_quantize_rounds_to_the_fewest_passing_digits(trained):
    model, validation = trained
    quantized, info = eup.quantize(model, validation, tolerance=0.99, start_digits=4)
    reference = accuracy(model, *validation)
    assert info.digits is not None and info.val_accuracy >= 0.99 * reference
    kernel = quantized.get_layer("dense1").get_weights()[0].astype(np.float64)
    np.testing.assert_allclose(kernel * 10**info.digits, np.round(kernel * 10**info.digits), atol=1e-3)
    if info.digits > 0:  # one digit fewer fails
        coarse = eup._copy(model)
        for layer in eup._prunable_layers(coarse):
            layer.set_weights([np.round(w, info.digits - 1) for w in layer.get_weights()])
        assert accuracy(coarse, *validation) < 0.99 * reference
    values = np.concatenate([w.ravel() for layer in eup._prunable_layers(quantized) for w in layer.get_weights()])
    assert info.distinct_values == np.unique(values).size


def test_tq_quantizes_the_thresholded_model_against_its_accuracy(trained):
    model, validation = trained
    final, info = eup.tq(model, validation)
    assert info.quantize.reference == info.threshold.val_accuracy
    assert accuracy(final, *validation) == info.quantize.val_accuracy
    assert info.quantize.nonzero_params <= info.threshold.nonzero_params
    assert set(info.as_dict()) == {"threshold", "quantize"}


def test_bad_arguments(trained):
    model, validation = trained
    with pytest.raises(ValueError, match="tolerance"):
        eup.threshold(model, validation, tolerance=1.5)
    with pytest.raises(ValueError, match="mode"):
        eup.threshold(model, validation, mode="median")
    with pytest.raises(ValueError, match="validation_data"):
        eup.quantize(model, validation[0])
    with pytest.raises(ValueError, match="must match"):
        eup.quantize(model, (validation[0], validation[1][:5]))
    with pytest.raises(ValueError, match="start_digits"):
        eup.quantize(model, validation, start_digits=-1)


def test_a_guard_split_can_only_stop_thresholding_earlier_and_the_kept_model_holds_it(trained):
    """The guard is the original model's own predictions (guard accuracy 1.0 at the start), repeated so that its
    sampling noise is small: every kept step must agree with the original on all but ~0.5% of it."""
    from keras_grs.scoring import predict
    from keras_grs.search.engine import beyond_guard_noise

    model, validation = trained
    x = np.tile(validation[0], (10, 1))
    guard = (x, predict(model, x).argmax(axis=1))
    free, free_info = eup.threshold(model, validation, tolerance=0.995)
    held, held_info = eup.threshold(model, validation, tolerance=0.995, guard_data=guard)
    if free_info.threshold is None:
        assert held_info.threshold is None
    else:
        assert held_info.threshold is None or held_info.threshold <= free_info.threshold
    assert not beyond_guard_noise(accuracy(held, *guard), 1.0, 0.995, len(guard[1]))
    # quantization holds the guard against the thresholded model it starts from, at its own tolerance (0.99)
    quantized, _ = eup.quantize(held, validation, guard_data=guard)
    assert not beyond_guard_noise(accuracy(quantized, *guard), accuracy(held, *guard), 0.99, len(guard[1]))


def test_a_guard_baseline_keeps_eup_within_the_jobs_tolerance_of_the_initial_model(trained):
    """EUP's own tolerance is relative to its input; the baseline holds every step to the search's tolerance from
    the initial model too. Made visible with a lenient EUP tolerance (0.5), under which thresholding alone goes far."""
    from keras_grs.scoring import correct
    from keras_grs.search.engine import beyond_paired_noise

    model, validation = trained
    guard = validation  # the check reads the guard only; here it is the same data, to make the effect large
    free, _ = eup.threshold(model, validation, tolerance=0.5, guard_data=guard)
    held, info = eup.threshold(model, validation, tolerance=0.5, guard_data=guard, guard_baseline=model,
                               guard_tolerance=0.98)
    baseline_right = correct(model, *guard)
    assert beyond_paired_noise(baseline_right, correct(free, *guard), 0.98)  # the lenient stage alone loses it
    assert not beyond_paired_noise(baseline_right, correct(held, *guard), 0.98)
    assert info.nonzero_params > count_params(free, nonzero=True)
    quantized, _ = eup.quantize(held, validation, tolerance=0.5, guard_data=guard, guard_baseline=model,
                                guard_tolerance=0.98)
    assert not beyond_paired_noise(baseline_right, correct(quantized, *guard), 0.98)


def test_a_guard_baseline_is_refused_without_its_tolerance_or_a_guard(trained):
    model, validation = trained
    with pytest.raises(ValueError, match="give both or neither"):
        eup.tq(model, validation, guard_data=validation, guard_baseline=model)
    with pytest.raises(ValueError, match="needs guard_data"):
        eup.threshold(model, validation, guard_baseline=model, guard_tolerance=0.98)
    with pytest.raises(ValueError, match="guard_tolerance must be"):
        eup.quantize(model, validation, guard_data=validation, guard_baseline=model, guard_tolerance=1.5)
