"""The method registry: every front end offers exactly the registered methods, and a new one is one entry."""

import argparse

import optuna
import pytest
from optuna_fake import objective_for

from keras_grs import cli
from keras_grs.inputs import SettingError
from keras_grs.optuna import pruning_path
from keras_grs.optuna.samplers import SAMPLERS, GRSSampler, JGRSSampler, NWMSampler, PruningSampler, RRSSampler
from keras_grs.run import check_settings
from keras_grs.search import GroupSpec, Outcome, make_search, run
from keras_grs.search.methods import METHODS, Method, method_named, register, unregister
from keras_grs.search.order import natural
from keras_grs.tuner.oracles import ORACLES, GRSOracle, JGRSOracle, NWMOracle, RRSOracle

optuna.logging.set_verbosity(optuna.logging.WARNING)

SETTINGS = dict(tolerance=0.985, epochs=1, initial_epochs=None, batch_size=32, selection="minflops", seed=0,
                max_trials=None, backend="keras-tuner", evaluator="batched", storage=None, objective="val_accuracy",
                guard_fraction=0.4, export_c=False, out=None)


def method_choices():
    parser = cli.build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    (action,) = [a for a in commands.choices["prune"]._actions if a.dest == "method"]
    return list(action.choices), action.help


@pytest.fixture
def fake_method():
    """``last``, a method no front end has heard of: NWM's natural order with random units."""
    method = register(Method("last", "natural order, random units", "random", order=natural))
    yield method
    unregister("last")


def test_the_four_methods_are_offered_by_every_front_end():
    names = ["grs", "rrs", "nwm", "jgrs"]
    assert list(METHODS) == names
    assert method_choices()[0] == names
    assert list(ORACLES) == names and list(SAMPLERS) == names
    assert [ORACLES[n] for n in names] == [GRSOracle, RRSOracle, NWMOracle, JGRSOracle]
    assert [SAMPLERS[n] for n in names] == [GRSSampler, RRSSampler, NWMSampler, JGRSSampler]
    assert [METHODS[n].needs_norms() for n in names] == [False, False, True, False]
    assert METHODS["grs"].needs_norms(units="magnitude")


def test_an_option_is_refused_by_a_method_that_does_not_take_it():
    with pytest.raises(ValueError, match="phases only apply to method 'jgrs', not 'rrs'"):
        RRSOracle(phases=[(0.5, 2)])
    with pytest.raises(ValueError, match="phases only apply to method 'jgrs', not 'nwm'"):
        NWMSampler(phases=[(0.5, 2)])
    assert JGRSSampler(0, [(0.5, 2), (None, 1)]).method_options == {"phases": [[0.5, 2], [None, 1]]}
    assert JGRSOracle().method_options == {"phases": [[0.5, 3], [0.2, 3], [None, 3]]}
    with pytest.raises(ValueError, match="unknown method 'magic'; choose one of grs, rrs, nwm, jgrs"):
        method_named("magic")


def test_a_registered_method_shows_up_everywhere_and_goes_away(fake_method):
    choices, help_text = method_choices()
    assert choices[-1] == "last" and "last: natural order, random units" in help_text
    assert ORACLES["last"].method == "last" and ORACLES["last"].__name__ == "LASTOracle"
    assert SAMPLERS["last"].method == "last" and issubclass(SAMPLERS["last"], PruningSampler)
    check_settings(method="last", phases=None, **SETTINGS)
    with pytest.raises(SettingError, match="phases only applies to method jgrs"):
        check_settings(method="last", phases=[(0.5, 2)], **SETTINGS)
    unregister("last")
    assert "last" not in method_choices()[0] and "last" not in ORACLES and "last" not in SAMPLERS
    with pytest.raises(SettingError, match="method"):
        check_settings(method="last", phases=None, **SETTINGS)


def test_a_registered_method_runs_a_search_in_the_engine_and_in_optuna(fake_method):
    search = make_search("last", [GroupSpec("a", 4), GroupSpec("b", 3)], tolerance=0.9, seed=0)
    plan = run(search, lambda c: Outcome(score=1.0 if sum(c.widths) >= 5 else 0.5))
    assert plan.finished and plan.path[-1].widths == (2, 3)  # natural order: a shrinks first, b's step fails

    study = optuna.create_study(sampler=SAMPLERS["last"](seed=0, tolerance=0.99),
                                directions=["maximize", "minimize"])
    study.optimize(objective_for(), n_trials=40)
    path = [row["structure"] for row in pruning_path(study)]
    # natural order: a (cheap) goes down to its minimum, then b until the score leaves the tolerance
    assert path[:6] == ["6x5x4", "5x5x4", "4x5x4", "3x5x4", "2x5x4", "1x5x4"]
    assert study.user_attrs["keras_grs_config"]["sampler"]["method"] == "last"


def test_a_registered_method_runs_a_tiny_keras_tuner_search(fake_method, tmp_path):
    import keras

    from keras_grs import GRSTuner, datasets

    x, y = datasets.calcium(n_neurons=12, n_frames=120, seed=0, difficulty="easy")
    (xt, yt), validation, _ = datasets.split(x, y, val=0.25, test=0.0)
    model = keras.Sequential([keras.Input((12,)), keras.layers.Dense(4, activation="relu", name="hidden"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    tuner = GRSTuner.from_model(model, method="last", tolerance=0.5, seed=0, max_trials=3, directory=tmp_path,
                                acceptance="seed")
    assert type(tuner.oracle).__name__ == "LASTOracle"
    tuner.search(xt, yt, validation_data=validation, epochs=1, verbose=0)
    widths = [t.hyperparameters.values["hidden"] for t in tuner.oracle.trials.values()]
    assert widths == [4, 3, 2]
    assert all(t.status == "COMPLETED" for t in tuner.oracle.trials.values())
