"""Acceptance that survives validation noise (the guard), and objectives of either direction, through the job."""

import json
import warnings

import keras
import keras_tuner
import numpy as np
import pytest

import keras_grs
from keras_grs import GRSTuner, datasets, eup, models, select
from keras_grs.cli import main
from keras_grs.evaluate import Job, KerasEvaluator
from keras_grs.guard import GUARD_MARGIN, ResolutionWarning, search_margin, split_guard, unpack_outcomes
from keras_grs.search import GroupSpec, Outcome, make_search, run
from keras_grs.inputs import DataError
from keras_grs.scoring import correct, objective_direction, score

FIT = {"epochs": 2, "batch_size": 32, "verbose": 0}


@pytest.fixture(scope="module")
def data():
    x, y = datasets.calcium(n_neurons=20, n_frames=400, seed=4)
    return datasets.split(x, y, val=0.3, test=0.0)


def build(hp):
    model = keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(hp.Int("units", 1, 6), activation="relu"),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def rows(x):
    return {row.tobytes() for row in np.asarray(x, "float32")}


# -- directions -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("objective, direction", [
    ("val_accuracy", "max"), ("val_loss", "min"), ("val_output_loss", "min"), ("val_mse", "min"),
    ("val_mae", "min"), ("val_auc", "max"), (keras_tuner.Objective("val_custom", "min"), "min"),
])
def test_objective_directions_follow_keras_tuner_and_every_loss_is_minimized(objective, direction):
    assert objective_direction(objective) == direction


def test_an_objective_whose_direction_cannot_be_told_is_refused():
    with pytest.raises(ValueError, match="maximized or minimized"):
        objective_direction("val_my_score")


def test_a_val_loss_search_never_accepts_a_loss_beyond_reference_over_tolerance(tmp_path, data):
    (x, y), validation, _ = data
    tuner = GRSTuner(build, objective="val_loss", tolerance=0.9, seed=1, acceptance="seed", directory=tmp_path,
                     project_name="loss")
    assert tuner.oracle.search.direction == "min"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner.search(x, y, validation_data=validation, **FIT)
    # the batched evaluator trains a val_loss search itself: no fall back to one fit per trial
    assert not [w for w in caught if "batched evaluation" in str(w.message)]
    plan = tuner.oracle.plan()
    assert plan.finished
    for key, verdict in plan.verdicts.items():
        trial = tuner.oracle.get_trial(tuner.oracle.trial_id_of(key)) if verdict != "failed" else None
        if trial is not None and verdict in ("accepted", "valid"):
            assert trial.score <= plan.reference / 0.9 + 1e-9
    # every failed candidate is a worse loss than the bound: no worse loss was ever taken
    failed = [t for t in tuner.oracle.trials.values()
              if plan.verdicts.get(tuner.oracle.bookkeeping(t.trial_id)["grs_key"]) == "failed"]
    assert all(t.score > plan.reference / 0.9 for t in failed)
    compact = tuner.get_best_models(1)[0]
    assert compact.evaluate(*validation, verbose=0)[0] == pytest.approx(tuner.pruning_path()[-1]["objective"],
                                                                          rel=1e-4)


# -- the guard ------------------------------------------------------------------------------------------------
def test_the_guard_never_reaches_training_or_the_search(tmp_path, data):
    (x, y), validation, _ = data
    searched, guard = split_guard(validation, 0.4, seed=5)
    seen = []

    class Spy(KerasEvaluator):
        def evaluate(self, jobs, fit_args, fit_kwargs):
            seen.append(rows(fit_args[0]) | rows(fit_kwargs["validation_data"][0]))
            return super().evaluate(jobs, fit_args, fit_kwargs)

    tuner = GRSTuner(build, seed=5, max_trials=5, directory=tmp_path, project_name="spy")
    tuner.evaluator = Spy(tuner.oracle.objective)
    tuner.search(x, y, validation_data=validation, **FIT)
    assert seen and not any(r & rows(guard[0]) for r in seen)
    assert all(rows(searched[0]) <= r for r in seen)  # the rest of the validation data is what the search used
    trial = next(iter(tuner.oracle.trials.values()))
    assert trial.metrics.exists("guard_accuracy")
    model = tuner.load_model(trial)
    assert trial.metrics.get_last_value("guard_accuracy") == pytest.approx(score(model, *guard), abs=1e-6)
    assert trial.metrics.get_last_value("guard_samples") == len(guard[1])  # the walk back's noise margin reads it
    outcome = tuner.oracle._outcomes()[tuner.oracle.bookkeeping(trial.trial_id)["grs_key"]]
    assert outcome.guard_samples == len(guard[1])
    # how many samples scored it, which the search's acceptance margin reads
    assert trial.metrics.get_last_value("val_samples") == outcome.samples == len(searched[1])
    assert tuner.oracle.search.margin == GUARD_MARGIN
    # which guard samples it gets right, for the walk back's paired test: the same model's, sample by sample
    assert unpack_outcomes(outcome.guard_right, len(guard[1])).tolist() == correct(model, *guard).tolist()


# -- the search's margin -------------------------------------------------------------------------------------
def _one_point_per_two_units(candidate, samples=216):
    """A structure of width w scores 0.96 - 0.005 (10 - w) on ``samples`` validation samples."""
    return Outcome(score=0.96 - 0.005 * (10 - candidate.widths[0]), samples=samples)


def test_a_margin_stops_the_path_where_the_score_no_longer_clears_the_tolerance_by_its_noise():
    # T x 0.96 = 0.9408: without a margin width 7 (0.945) passes; half a standard error of 96% on 216 samples
    # (0.0067) asks 0.9475, which width 8 (0.950) clears and width 7 does not
    def final(margin, samples=216):
        search = make_search("grs", [GroupSpec("a", 10)], 0.98, seed=0, margin=margin)
        return run(search, lambda c: _one_point_per_two_units(c, samples)).path[-1].widths

    assert final(0.0) == (7,)
    assert final(0.5) == (8,)
    assert final(0.5, samples=None) == (7,)  # an evaluator that cannot tell how many samples: no margin


def test_the_margin_is_the_guards_and_only_for_accuracy():
    assert search_margin("guard", "val_accuracy") == GUARD_MARGIN > 0
    assert search_margin("seed", "val_accuracy") == 0.0  # the seed's tables stay reproducible
    assert search_margin("guard", "val_loss") == 0.0  # no binomial noise to read from a loss
    with pytest.raises(ValueError, match="margin"):
        make_search("grs", [GroupSpec("a", 4)], 0.98, margin=-1)


@pytest.mark.parametrize("tolerance, warned", [(0.985, ["guard"]), (0.9, [])])
def test_a_split_too_small_to_see_the_tolerance_is_named_in_a_warning(tmp_path, data, tolerance, warned):
    (x, y), validation, _ = data  # 120 validation samples: 72 searched (1.4 points each), 48 guard (2.1 points)
    tuner = GRSTuner(build, seed=0, max_trials=1, tolerance=tolerance, directory=tmp_path, project_name="few")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tuner.search(x, y, validation_data=validation, **FIT)
    texts = [str(w.message) for w in caught if w.category is ResolutionWarning]
    assert [t.split()[1] for t in texts] == warned
    assert all("48 samples: one sample is 2.1 points" in t for t in texts)


def test_an_explicit_guard_split_is_used_as_given(tmp_path, data):
    (x, y), validation, test = data
    guard = (x[:40], y[:40])
    tuner = GRSTuner(build, seed=2, max_trials=3, directory=tmp_path, project_name="explicit")
    tuner.search(x[40:], y[40:], validation_data=validation, guard_data=guard, **FIT)
    path = tuner.pruning_path()
    model = tuner.load_model(tuner.oracle.get_trial(path[0]["trial_id"]))
    assert path[0]["guard"] == pytest.approx(score(model, *guard), abs=1e-6)
    assert path[0]["objective"] == pytest.approx(score(model, *validation), abs=1e-6)


def test_a_resumed_guard_search_uses_the_same_guard_and_repeats_no_trial(tmp_path, data):
    (x, y), validation, _ = data
    first = GRSTuner(build, seed=3, max_trials=3, directory=tmp_path, project_name="resume")
    first.search(x, y, validation_data=validation, **FIT)
    guard_scores = {t.trial_id: t.metrics.get_last_value("guard_accuracy") for t in first.oracle.trials.values()}
    second = GRSTuner(build, seed=3, max_trials=8, directory=tmp_path, project_name="resume")
    second.search(x, y, validation_data=validation, **FIT)
    trials = second.oracle.trials.values()
    keys = [second.oracle.bookkeeping(t.trial_id)["grs_key"] for t in trials]
    assert len(keys) == len(set(keys)) and len(keys) > 3
    for trial_id, value in guard_scores.items():  # kept, and the same split scores the new trials
        assert second.oracle.trials[trial_id].metrics.get_last_value("guard_accuracy") == value
    plan = second.oracle.plan()
    assert plan.guard_reference == guard_scores[second.pruning_path()[0]["trial_id"]]
    with pytest.raises(ValueError, match="acceptance"):
        GRSTuner(build, seed=3, max_trials=8, directory=tmp_path, project_name="resume", acceptance="seed")


@pytest.mark.parametrize("fraction", [0, 0.9, 1.5, -0.1, "0.3", True])
def test_a_guard_fraction_outside_0_to_0_9_is_refused(fraction):
    with pytest.raises(ValueError, match=r"guard fraction must be a number in \(0, 0.9\)"):
        split_guard((np.zeros((20, 2)), np.arange(20) % 2), fraction)
    with pytest.raises(ValueError, match="guard fraction"):
        GRSTuner(build, guard_fraction=fraction, directory="/nonexistent/never-written")


def test_a_guard_too_small_to_hold_a_sample_of_every_class_is_refused(tmp_path):
    x, y = np.zeros((12, 20), "float32"), np.array([0] * 10 + [1] * 2)
    with pytest.raises(DataError, match="class 1 .2 validation samples"):
        split_guard((x, y), 0.2)
    model = models.build("nn2", (20,))
    with pytest.raises(DataError, match="too small"):
        keras_grs.prune(model, x, y, (x, y), directory=tmp_path / "run", guard_fraction=0.2)
    assert not (tmp_path / "run").exists()


def test_guard_data_with_the_seed_rule_is_refused(tmp_path, data):
    (x, y), validation, _ = data
    tuner = GRSTuner(build, acceptance="seed", directory=tmp_path, project_name="p")
    with pytest.raises(ValueError, match="guard_data only serves acceptance='guard'"):
        tuner.search(x, y, validation_data=validation, guard_data=validation, **FIT)


def test_the_cli_refuses_a_bad_guard_fraction_and_writes_nothing(tmp_path, capsys):
    x, y = datasets.calcium(n_neurons=16, n_frames=200, seed=0)
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.3, test=0.0)
    np.savez(tmp_path / "d.npz", x_train=xt, y_train=yt, x_val=xv, y_val=yv)
    out = tmp_path / "run"
    assert main(["prune", "nn2", "--data", str(tmp_path / "d.npz"), "--out", str(out), "--guard-fraction", "0.95"]) == 2
    stderr = capsys.readouterr().err
    assert "--guard-fraction: guard fraction must be a number in (0, 0.9)" in stderr
    assert "Traceback" not in stderr and not out.exists()


# -- one objective through the job ----------------------------------------------------------------------------
def test_eup_checks_a_minimized_loss_against_reference_over_tolerance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")
    model = models.build("nn2", (6,))
    model.fit(x, y, epochs=15, verbose=0)
    reference = score(model, x, y, "val_loss")
    sparse, info = eup.threshold(model, (x, y), objective="val_loss", tolerance=0.9, init=0.0, step=0.2)
    assert info.objective == "val_loss" and info.reference == pytest.approx(reference)
    assert score(sparse, x, y, "val_loss") <= reference / 0.9 + 1e-6
    assert info.nonzero_params < info.params  # it did threshold something


def test_selection_reads_the_objective_in_its_direction():
    results = [
        {"name": "a", "params": 10, "flops": 10, "val_accuracy": 0.9, "test_accuracy": 0.9, "val_score": 0.30,
         "test_score": 0.2, "direction": "min"},
        {"name": "b", "params": 10, "flops": 10, "val_accuracy": 0.8, "test_accuracy": 0.8, "val_score": 0.25,
         "test_score": 0.4, "direction": "min"},
    ]
    assert select(results, "bestval")["name"] == "b"  # the lower loss, though its accuracy is lower
    assert select(results, "besttest")["name"] == "a"
    assert select(results, "minflops")["name"] == "b"  # a tie on FLOPs goes to the better objective


def test_prune_reports_validation_guard_and_test_and_warns_when_test_leaves_tolerance(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = datasets.calcium(n_neurons=20, n_frames=500, seed=2)
    train, validation, test = datasets.split(x, y, val=0.3, test=0.2)
    result = keras_grs.prune(models.build("nn2", (20,)), *train, validation, test_data=test, method="rrs",
                             tolerance=0.95, epochs=1, initial_epochs=5, directory=tmp_path / "t", seed=1,
                             max_trials=5, verbose=0)
    r = result.results[0]
    assert r.acceptance == "guard" and r.objective == "val_accuracy"
    searched, guard = split_guard(validation, 0.4, seed=1)
    assert r.val_score == pytest.approx(score(r.model, *searched))
    assert r.guard_score == pytest.approx(score(r.model, *guard))
    assert r.test_score == pytest.approx(score(r.model, *test))
    assert r.eup_guard_score is not None and r.eup_test_score is not None
    final = [row for row in r.path if row["final"]]
    assert len(final) == 1 and final[0]["structure"] == r.structure
    assert r.walked_back == len(r.path) - 1 - r.path.index(final[0])
    out = result.save(tmp_path / "run")
    text = (out / "report.md").read_text()
    assert "## Generalisation" in text and "guard accuracy" in text
    assert json.loads((out / "report.json").read_text())["data"]["guard"][0] == len(guard[0])
    # the warning, when the compact model's test score leaves the tolerance: rendered at the top of the report
    report = json.loads((out / "report.json").read_text())
    report["models"][0]["warnings"] = ["nn2: the compact model's test accuracy 0.5 is outside tolerance"]
    from keras_grs.report.markdown import render_markdown

    assert "> **Warning: the tolerance did not hold on the test data.**" in render_markdown(report)


def test_a_test_score_outside_tolerance_produces_a_warning():
    from keras_grs.pipeline import ModelResult, _Splits, _warn_outside_tolerance

    result = ModelResult(**{f.name: None for f in ModelResult.__dataclass_fields__.values()
                            if f.name not in ("warnings", "model", "eup_model")})
    result.name, result.initial_test_score, result.warnings = "m", 0.90, []
    splits = _Splits(None, None, None, "val_accuracy", "max", 0.98)
    _warn_outside_tolerance(result, splits, "compact", 0.89)
    assert not result.warnings  # 0.89 >= 0.98 x 0.90 = 0.882
    _warn_outside_tolerance(result, splits, "compact", 0.85)
    assert result.warnings and "outside tolerance 0.98" in result.warnings[0]


def test_imbalanced_data_is_judged_by_balanced_accuracy_through_the_job(tmp_path):
    keras.utils.set_random_seed(1)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 8)).astype("float32")
    y = (x[:, 0] + 0.3 * rng.normal(size=600) > 1.0).astype("int32")  # about 16% positives
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="relu", name="hidden"),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", keras_grs.metrics.BalancedAccuracy(num_classes=2)])
    train, validation, test = (x[:360], y[:360]), (x[360:480], y[360:480]), (x[480:], y[480:])
    result = keras_grs.prune(model, *train, validation, test_data=test, method="rrs", tolerance=0.9, epochs=1,
                             initial_epochs=8, directory=tmp_path, seed=0, max_trials=3, verbose=0,
                             objective="val_balanced_accuracy")
    r = result.results[0]
    assert r.objective == "val_balanced_accuracy" and r.direction == "max"
    assert r.eup["threshold"]["objective"] == "val_balanced_accuracy"
    assert r.test_score == pytest.approx(score(r.model, *test, "val_balanced_accuracy"))
    assert r.test_score != pytest.approx(r.test_accuracy)  # a different judge than plain accuracy


# -- the epoch rule -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("evaluator_class", ["batched", "keras"])
def test_the_last_epoch_rule_keeps_the_final_weights_and_never_scores_above_the_best_epoch(tmp_path, data,
                                                                                         evaluator_class):
    from keras_grs.evaluate import make_evaluator

    (x, y), validation, _ = data
    objective = keras_tuner.Objective("val_accuracy", "max")
    scores = {}
    for rule in ("best", "last"):
        keras.utils.set_random_seed(7)
        model = models.build("nn2", (20,))
        evaluator = make_evaluator(evaluator_class, objective, seed=7, epoch_score=rule)
        job = Job(model, True, str(tmp_path / f"{rule}.weights.h5"))
        (metrics,) = evaluator.evaluate([job], (x, y), {"validation_data": validation, "epochs": 6,
                                                         "batch_size": 32, "verbose": 0})
        scores[rule] = metrics["val_accuracy"]
        assert metrics["val_accuracy"] == pytest.approx(score(job.model, *validation), abs=1e-6)
    assert scores["last"] <= scores["best"] + 1e-9  # the same training: the best epoch is at least the last


def test_the_epoch_rule_follows_the_acceptance_rule_and_a_resume_cannot_change_it(tmp_path, data):
    assert GRSTuner(build, directory=tmp_path, project_name="a").oracle.epoch_score == "last"
    assert GRSTuner(build, directory=tmp_path, project_name="b", acceptance="seed").oracle.epoch_score == "best"
    (x, y), validation, _ = data
    tuner = GRSTuner(build, seed=1, max_trials=1, directory=tmp_path, project_name="c")
    tuner.search(x, y, validation_data=validation, **FIT)
    with pytest.raises(ValueError, match="epoch_score"):
        GRSTuner(build, seed=1, directory=tmp_path, project_name="c", epoch_score="best")
    with pytest.raises(ValueError, match="epoch_score must be one of best, best_latest, last, got .mean."):
        GRSTuner(build, directory=tmp_path, project_name="d", epoch_score="mean")


@pytest.mark.parametrize("evaluator_class", ["batched", "keras"])
def test_best_latest_keeps_the_best_score_with_the_last_weights_that_reach_it(tmp_path, evaluator_class):
    from keras_grs.evaluate import make_evaluator

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 6)).astype("float32")
    x[:, 0] = np.sign(x[:, 0]) * (np.abs(x[:, 0]) + 2.0)
    y = (x[:, 0] > 0).astype("int32")  # separable with a margin: validation accuracy reaches 1.0 and stays there
    validation = (x[:20], y[:20])
    objective = keras_tuner.Objective("val_accuracy", "max")
    results = {}
    for rule in ("best", "best_latest"):
        keras.utils.set_random_seed(3)
        model = models.build("nn2", (6,))
        evaluator = make_evaluator(evaluator_class, objective, seed=3, epoch_score=rule)
        job = Job(model, True, str(tmp_path / f"{rule}.weights.h5"))
        (metrics,) = evaluator.evaluate([job], (x[20:], y[20:]), {"validation_data": validation, "epochs": 20,
                                                                   "batch_size": 32, "verbose": 0})
        results[rule] = (metrics["val_accuracy"], [w.copy() for w in job.model.get_weights()])
        assert score(job.model, *validation) == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    assert results["best"][0] == results["best_latest"][0] == 1.0
    assert any(not np.allclose(a, b) for a, b in zip(results["best"][1], results["best_latest"][1]))
