"""Frozen width groups and width multiples, from the engine through GRSTuner, Optuna, prune() and the CLI; and the
bad input around them, refused with one clear error before anything is written."""

import json

import keras
import numpy as np
import optuna
import pytest

import keras_grs
from keras_grs import GRSTuner, analyze, datasets, shrink
from keras_grs.cli import main
from keras_grs.search import GroupSpec, Outcome, constrain, make_search, run

optuna.logging.set_verbosity(optuna.logging.WARNING)
METHODS = ["grs", "rrs", "nwm", "jgrs"]


# -- the engine (no training) ------------------------------------------------------------------------------------
def always_valid(candidate):
    """Every candidate keeps the score, so a search prunes as far as it may; norms for NWM's magnitude rule."""
    norms = {name: list(range(len(units))) for name, units in zip(always_valid.names, candidate.units)}
    return Outcome(score=1.0, unit_norms=norms)


def searched(method, specs, **constraints):
    search = make_search(method, specs, tolerance=0.9, seed=0, **constraints)
    always_valid.names = [g.name for g in specs]
    return search, run(search, always_valid)


@pytest.mark.parametrize("method", METHODS)
def test_no_method_removes_a_unit_of_a_frozen_group(method):
    search, plan = searched(method, [GroupSpec("a", 6), GroupSpec("b", 5), GroupSpec("c", 4)], frozen=["b"])
    assert plan.finished
    assert all(candidate.units[1] == tuple(range(5)) for candidate in plan.candidates.values())
    assert plan.path[-1].widths == (1, 5, 1)  # the others went all the way down


@pytest.mark.parametrize("method", METHODS)
def test_every_proposed_width_is_a_multiple_once_the_remainder_is_gone(method):
    initial = (10, 8, 13)
    search, plan = searched(method, [GroupSpec(f"g{i}", w) for i, w in enumerate(initial)], width_multiple=4)
    for candidate in plan.candidates.values():
        for width, start in zip(candidate.widths, initial):
            assert width == start or width % 4 == 0, candidate
    assert plan.finished and plan.path[-1].widths == (4, 4, 4)  # never below the multiple itself


def test_a_step_drops_the_remainder_first_then_whole_multiples():
    group = GroupSpec("g", 10, multiple=4)
    assert [group.step(w) for w in (10, 8)] == [2, 4]
    assert group.floor == 4
    assert GroupSpec("g", 24, min_width=5, multiple=4).floor == 8  # min_width rounded up to a multiple
    assert GroupSpec("g", 24, multiple=1).step(24) == 1
    # a jump removes rate x width rounded up, then down to a multiple, never below the floor
    assert GroupSpec("g", 32, multiple=4).jump(32, 0.5) == 16
    assert GroupSpec("g", 10, multiple=4).jump(10, 0.5) == 6
    assert GroupSpec("g", 30, multiple=8).jump(30, 0.2) == 6
    assert GroupSpec("g", 8, multiple=4).jump(8, 0.9) == 4
    assert GroupSpec("g", 6, frozen=True).jump(6, 0.5) == 0


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: constrain([GroupSpec("a", 4), GroupSpec("b", 4)], frozen=["nope"]),
         "frozen names unknown width groups \\['nope'\\]; the groups are \\['a', 'b'\\]"),
        (lambda: constrain([GroupSpec("a", 4)], frozen=["a"]), "every width group is frozen"),
        (lambda: constrain([GroupSpec("a", 4)], width_multiple=0), "width_multiple must be a positive integer"),
        (lambda: constrain([GroupSpec("a", 4)], width_multiple=2.0), "positive integer, got 2.0"),
        (lambda: constrain([GroupSpec("a", 4)], width_multiple=True), "positive integer, got True"),
        (lambda: constrain([GroupSpec("a", 4), GroupSpec("b", 16)], width_multiple=8),
         "width_multiple 8 is larger than the width 4 of group 'a'"),
        (lambda: GroupSpec("a", 6, min_width=5, multiple=4),
         "min_width 5 rounds up to 8 .* above its width 6"),
    ],
)
def test_bad_constraints_are_refused_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_frozen_group_may_be_narrower_than_the_multiple():
    specs = constrain([GroupSpec("a", 2), GroupSpec("b", 8)], frozen=["a"], width_multiple=4)
    assert [(g.frozen, g.floor) for g in specs] == [(True, 2), (False, 4)]


# -- analyze and shrink ------------------------------------------------------------------------------------------
def mlp(*widths, inputs=20):
    layers = [keras.Input((inputs,))]
    layers += [keras.layers.Dense(w, activation="relu", name=f"d{i + 1}") for i, w in enumerate(widths)]
    model = keras.Sequential(layers + [keras.layers.Dense(2, activation="softmax", name="out")], name="mlp")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_analyze_refuses_a_multiple_wider_than_a_prunable_group_and_shrink_refuses_a_frozen_one():
    model = mlp(8, 3)
    with pytest.raises(ValueError, match="width_multiple 4 is larger than the width 3 of group 'd2'"):
        analyze(model, width_multiple=4)
    assert analyze(model, frozen=["d2"], width_multiple=4).names == ("d1",)  # frozen: no multiple needed
    with pytest.raises(ValueError, match="'d2' is pinned \\(frozen\\)"):
        shrink(model, {"d2": [0]}, structure=analyze(model, frozen=["d2"]))


# -- GRSTuner ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data():
    x, y = datasets.calcium(n_neurons=20, n_frames=240, seed=0, difficulty="easy")
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.25, test=0.0)
    return (xt, yt), (xv, yv)


def tuner_for(model, directory, **kwargs):
    options = dict(method="grs", tolerance=0.01, seed=0, evaluator="keras", acceptance="seed", directory=directory,
                   project_name="p")
    return GRSTuner.from_model(model, **{**options, **kwargs})


def widths_tried(tuner):
    names = [g.name for g in tuner.oracle.search.groups]
    return [tuple(t.hyperparameters.values[n] for n in names) for t in tuner.oracle.trials.values()]


def test_a_grs_search_never_shrinks_a_frozen_group_and_a_resume_must_keep_it(tmp_path, data):
    (x, y), validation = data
    tuner = tuner_for(mlp(6, 4), tmp_path, frozen=["d1"])
    tuner.search(x, y, validation_data=validation, epochs=1, verbose=0)
    assert tuner.oracle.plan().finished  # everything valid: only the frozen group stopped the search
    assert widths_tried(tuner) == [(6, 4), (6, 3), (6, 2), (6, 1)]
    with pytest.raises(ValueError, match="'frozen': \\['d1'\\]"):
        tuner_for(mlp(6, 4), tmp_path, frozen=[])
    with pytest.raises(ValueError, match="'width_multiple': 1"):
        tuner_for(mlp(6, 4), tmp_path, frozen=["d1"], width_multiple=2)


def test_a_grs_search_with_width_multiple_4_ends_on_multiples_of_4(tmp_path, data):
    (x, y), validation = data
    tuner = tuner_for(mlp(10, 8), tmp_path, width_multiple=4)
    tuner.search(x, y, validation_data=validation, epochs=1, verbose=0)
    assert tuner.oracle.plan().finished
    assert all(w % 4 == 0 or w == start for widths in widths_tried(tuner) for w, start in zip(widths, (10, 8)))
    (best,) = tuner.get_best_models(1)
    assert analyze(best).widths == (4, 4)


def test_the_tuner_refuses_unknown_frozen_names_and_too_wide_multiples_before_any_trial(tmp_path):
    with pytest.raises(ValueError, match="frozen names unknown width groups \\['dense9'\\]; the groups are "
                                         "\\['d1', 'd2'\\]"):
        tuner_for(mlp(6, 4), tmp_path, frozen=["dense9"])
    with pytest.raises(ValueError, match="width_multiple 5 is larger than the width 4 of group 'd2'"):
        tuner_for(mlp(6, 4), tmp_path, width_multiple=5)
    assert not list(tmp_path.rglob("trial_*"))


# -- Optuna ------------------------------------------------------------------------------------------------------
def test_an_optuna_sampler_keeps_frozen_widths_and_multiples_and_its_study_refuses_other_ones():
    study = optuna.create_study(direction="maximize",
                                sampler=keras_grs.optuna.GRSSampler(seed=0, frozen=["a"], width_multiple=2))

    def objective(trial):
        return 1.0 + 0 * (trial.suggest_int("a", 1, 8) + trial.suggest_int("b", 1, 7))

    study.optimize(objective, n_trials=30)
    complete = [t.params for t in study.trials if t.params]
    assert {p["a"] for p in complete} == {8}
    assert [p["b"] for p in complete] == [7, 6, 4, 2]
    other = optuna.load_study(study_name=study.study_name, storage=study._storage,
                              sampler=keras_grs.optuna.GRSSampler(seed=0, width_multiple=2))
    with pytest.raises(ValueError, match="frozen"):
        other.sampler.settings(other)


def test_optimize_refuses_an_unknown_frozen_name_before_any_trial(data, tmp_path):
    (x, y), validation = data
    study = keras_grs.optuna.create_study(keras_grs.optuna.GRSSampler(frozen=["nope"]), directory=tmp_path)
    with pytest.raises(ValueError, match="unknown width groups \\['nope'\\]; the groups are \\['d1'\\]"):
        keras_grs.optuna.optimize(study, mlp(6), x, y, validation, epochs=1)
    assert study.trials == []


# -- prune() and the CLI -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def npz(tmp_path_factory, data):
    (xt, yt), (xv, yv) = data
    path = tmp_path_factory.mktemp("data") / "data.npz"
    np.savez(path, x_train=xt, y_train=yt, x_val=xv, y_val=yv)
    return path


TINY = ["--method", "grs", "--epochs", "1", "--initial-epochs", "1", "--seed", "1", "--tolerance", "0.5",
        "--max-trials", "5", "--no-eup", "--quiet", "--acceptance", "seed", "--evaluator", "keras"]


def prune_argv(model, npz, out, *extra):
    return ["prune", str(model), "--data", str(npz), "--out", str(out), *TINY, *extra]


@pytest.mark.parametrize("backend", ["keras-tuner", "optuna"])
def test_the_cli_flags_reach_the_search_and_a_resume_must_keep_them(npz, tmp_path, capsys, backend):
    out = tmp_path / "run"
    argv = prune_argv("nn1", npz, out, "--frozen", "dense1", "--width-multiple", "4", "--backend", backend)
    assert main(argv) in (0, 3)
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["frozen"] == ["dense1"] and report["config"]["width_multiple"] == 4
    path = report["models"][0]["path"]
    assert len(path) > 1  # something was pruned
    for row in path:
        widths = row["widths"]
        assert widths["dense1"] == 32 and widths["dense2"] % 4 == 0 and widths["dense3"] % 4 == 0, row
    capsys.readouterr()
    assert main(prune_argv("nn1", npz, out, "--frozen", "dense2", "--width-multiple", "4", "--backend", backend,
                           "--resume")) == 2
    assert "frozen was ['dense1'], now ['dense2']" in capsys.readouterr().err
    assert main(prune_argv("nn1", npz, out, "--frozen", "dense1", "--backend", backend, "--resume")) == 2
    assert "width_multiple was 4, now None" in capsys.readouterr().err


def refused(argv, capsys, out):
    """The CLI refuses with status 2 and one line, no traceback, and writes nothing."""
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-grs: error: ") and "Traceback" not in captured.err
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize(
    "options, message",
    [
        (["--frozen", "dense1,nope"], "--frozen: frozen names unknown width groups ['nope']; the groups are nn1: "
                                      "['dense1', 'dense2', 'dense3']"),
        (["--frozen", "dense1,"], "--frozen: an empty group name"),
        (["--frozen", "dense1,dense2", "--frozen", "dense3"], "--frozen: model 'nn1': every width group is frozen"),
        (["--width-multiple", "0"], "--width-multiple must be a positive integer, got '0'"),
        (["--width-multiple", "2.5"], "--width-multiple must be a positive integer, got '2.5'"),
        (["--width-multiple", "16"], "--width-multiple: model 'nn1': width_multiple 16 is larger than the width 8 "
                                     "of group 'dense3'"),
    ],
)
def test_bad_frozen_and_multiple_options_are_refused(npz, tmp_path, capsys, options, message):
    line = refused(prune_argv("nn1", npz, tmp_path / "out", *options), capsys, tmp_path / "out")
    assert message in line


@keras.saving.register_keras_serializable(package="test_frozen_multiple")
class Twist(keras.layers.Layer):
    """A layer keras-grs does not know: it reverses the channels."""

    def call(self, x):
        return keras.ops.flip(x, axis=-1)


def test_a_model_with_an_unknown_custom_layer_is_refused_naming_the_layer_and_its_class(npz, tmp_path, capsys):
    inputs = keras.Input((20,))
    hidden = Twist(name="twist")(keras.layers.Dense(8, name="d1")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(hidden))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(tmp_path / "twist.keras")
    line = refused(prune_argv(tmp_path / "twist.keras", npz, tmp_path / "out"), capsys, tmp_path / "out")
    assert "layer 'twist' of class Twist is not supported" in line
    with pytest.raises(keras_grs.UnsupportedLayerError, match="layer 'twist' of class Twist"):
        keras_grs.prune(model, *data_of(npz), directory=tmp_path / "api")
    assert nothing_in(tmp_path / "api")


def nothing_in(directory):
    return not directory.exists() or not any(directory.iterdir())


def data_of(npz):
    with np.load(npz) as arrays:
        return arrays["x_train"], arrays["y_train"], (arrays["x_val"], arrays["y_val"])


def test_prune_refuses_a_name_that_is_no_models_group_but_accepts_one_of_any_model(npz, tmp_path):
    x, y, validation = data_of(npz)
    with pytest.raises(ValueError, match="unknown width groups \\['conv9'\\]; the groups are mlp: \\['d1'\\]; "
                                         "mlp: \\['d1', 'd2'\\]"):
        keras_grs.prune([mlp(6), mlp(6, 4)], x, y, validation, frozen=["conv9"], directory=tmp_path / "run")
    assert nothing_in(tmp_path / "run")
    assert keras_grs.pipeline.check_constraints([mlp(6, 4), mlp(6)], ["d2"]) == [["d2"], []]
