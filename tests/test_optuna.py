"""The Optuna backend: samplers' decisions, continuation and concurrent workers, the dashboard, optimize()."""

import json

import keras
import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from optuna_fake import drive, start_worker

import keras_grs
from keras_grs import datasets, models
from keras_grs import optuna as kgo
from keras_grs.optuna.samplers import KEY_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)


def new_study(method, storage=None, name="fake", **kwargs):
    return optuna.create_study(storage=storage, study_name=name, sampler=kgo.samplers.SAMPLERS[method](seed=3, **kwargs),
                               directions=["maximize", "minimize"], load_if_exists=True)


def path_of(study):
    return [step["structure"] for step in kgo.pruning_path(study)]


def keys(study):
    return [t.system_attrs[KEY_ATTR] for t in study.trials if t.state == TrialState.COMPLETE]


def test_grs_sampler_is_greedy():
    study = new_study("grs")
    drive(study)
    path = path_of(study)
    # a (cheapest) goes first down to its minimum, then b; c never (one unit costs 0.01 > what is left)
    assert path[:6] == ["6x5x4", "5x5x4", "4x5x4", "3x5x4", "2x5x4", "1x5x4"]
    assert path[-1] == "1x3x4"
    assert len(keys(study)) == len(set(keys(study)))
    # the study stopped itself, when the last step failed: no trial was started after the end
    assert all(t.state == TrialState.COMPLETE for t in study.trials) and len(study.trials) < 500


def test_rrs_sampler_prunes_random_widths_and_stops_at_the_first_failure():
    study = new_study("rrs")
    drive(study)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert complete[-1].values[0] < 0.985  # the last evaluated candidate failed
    structures = [t.params for t in complete]
    changed = {name for before, after in zip(structures, structures[1:]) for name in before
               if before[name] != after[name]}
    assert len(changed) >= 2


def test_nwm_sampler_walks_widths_in_natural_order_removing_the_smallest_norm():
    study = new_study("nwm")
    drive(study)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    order = []
    for before, after in zip(complete, complete[1:]):
        changed = [g for g in ("a", "b", "c") if after.params[g] != before.params[g]]
        if changed:
            order.append(changed[0])
    assert order == sorted(order, key="abc".index)
    assert path_of(study)[-1] == "1x3x4"


def test_a_second_process_continues_the_same_search(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    assert start_worker(url, n_trials=5).wait(timeout=300) == 0
    study = optuna.load_study(study_name="fake", storage=url, sampler=kgo.GRSSampler(seed=3))
    assert len(study.trials) == 5
    drive(study)
    reference = new_study("grs", name="single")
    drive(reference)
    assert path_of(study) == path_of(reference)
    assert keys(study) == keys(reference)


def test_two_concurrent_workers_share_one_study_without_repeating_candidates(tmp_path):
    url = f"sqlite:///{tmp_path / 'o.db'}"
    new_study("grs", storage=url)  # a new study: the workers learn its widths from the first trial
    workers = [start_worker(url, delay=0.05) for _ in range(2)]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    study = optuna.load_study(study_name="fake", storage=url, sampler=kgo.GRSSampler(seed=3))
    done = keys(study)
    assert len(done) == len(set(done)), "a candidate was evaluated twice"
    reference = new_study("grs", name="single")
    drive(reference)
    assert path_of(study) == path_of(reference)
    assert sorted(done) == sorted(keys(reference))


def test_dashboard_api_lists_studies_trials_params_and_user_attributes(tmp_path):
    import io
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    url = f"sqlite:///{tmp_path / 'o.db'}"
    study = new_study("grs", storage=url, name="dash")
    drive(study, n_trials=4)
    app = wsgi(url)

    def get(path):
        captured = {}

        def start_response(status, headers, exc_info=None):
            captured["status"] = status

        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "wsgi.input": io.BytesIO()}
        setup_testing_defaults(environ)
        body = b"".join(app(environ, start_response))
        assert captured["status"].startswith("200"), captured["status"]
        return json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    (entry,) = [s for s in studies if s["study_name"] == "dash"]
    detail = get(f"/api/studies/{entry['study_id']}")
    assert len(detail["trials"]) == 4
    trial = detail["trials"][1]
    assert {p["name"] for p in trial["params"]} == {"a", "b", "c"}
    assert any(attr["key"] == "unit_norms" for attr in trial["user_attrs"])


def test_optimize_prunes_a_real_model_and_best_model_returns_it(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = datasets.calcium(n_neurons=20, n_frames=300, seed=0, difficulty="easy")
    (xt, yt), validation, _ = datasets.split(x, y, val=0.25, test=0.0)
    model = models.build("nn1", (20,))
    study = kgo.create_study(kgo.GRSSampler(seed=0), directory=tmp_path, study_name="nn1")
    kgo.optimize(study, model, xt, yt, validation, tolerance=0.9, epochs=1, initial_epochs=4, n_trials=7,
                 directory=tmp_path)
    assert (tmp_path / "optuna.db").exists()
    trial = study.trials[1]
    assert set(trial.params) == {"dense1", "dense2", "dense3"}
    assert trial.user_attrs["parent"] == 0 and trial.user_attrs["phase"] == "grs"
    assert set(trial.user_attrs) >= {"params", "removed", "structure", "valid"}
    assert study.metric_names == ["val_accuracy", "flops"]
    compact = kgo.best_model(study, model, directory=tmp_path)
    path = kgo.pruning_path(study)
    (final,) = [row for row in path if row["final"]]  # the last accepted structure the guard confirms
    assert keras_grs.analyze(compact).widths == tuple(final["widths"].values())
    from keras_grs.guard import split_guard
    from keras_grs.scoring import accuracy

    searched, guard = split_guard(validation, 0.4, seed=0)  # the default guard, seeded by the sampler's seed
    assert accuracy(compact, *searched) == pytest.approx(final["objective"], abs=1e-6)
    assert accuracy(compact, *guard) == pytest.approx(final["guard"], abs=1e-6)
    assert trial.user_attrs["guard"] == pytest.approx(study.trials[1].user_attrs["guard"])
    assert trial.user_attrs["guard_samples"] == len(guard[1])
    # the search's margin reads how many samples scored each trial, in every process alike (the study's config)
    from keras_grs.guard import GUARD_MARGIN

    assert trial.user_attrs["val_samples"] == len(searched[1])
    assert study.sampler.search(study).margin == GUARD_MARGIN
    from keras_grs.guard import unpack_outcomes
    from keras_grs.scoring import correct

    # which guard samples the compact model gets right: what the walk back's paired test reads
    right = unpack_outcomes(study.trials[int(final["trial_id"])].user_attrs["guard_right"], len(guard[1]))
    assert right.tolist() == correct(compact, *guard).tolist()
    assert study.user_attrs["keras_grs_path"][-1]["structure"] == path[-1]["structure"]

    # the same study with another model or tolerance is refused
    with pytest.raises(ValueError, match="other settings"):
        kgo.optimize(study, models.build("nn2", (20,)), xt, yt, validation, tolerance=0.9, directory=tmp_path)
    with pytest.raises(ValueError, match="tolerance"):
        kgo.optimize(study, model, xt, yt, validation, tolerance=0.8, directory=tmp_path)


def test_bad_storages_directions_and_samplers(tmp_path):
    with pytest.raises(ValueError, match="unknown storage URL 'redis://x'"):
        kgo.create_study(kgo.GRSSampler(), storage="redis://x", directory=tmp_path / "never")
    assert not (tmp_path / "never").exists()
    wrong = optuna.create_study(sampler=kgo.GRSSampler(), directions=["minimize", "minimize"])
    model = models.build("nn2", (4,))
    x, y = np.zeros((8, 4), "float32"), np.zeros(8, "int32")
    with pytest.raises(ValueError, match="directions"):
        kgo.optimize(wrong, model, x, y, (x, y), directory=tmp_path)
    with pytest.raises(TypeError, match="keras-grs sampler"):
        kgo.create_study(optuna.samplers.RandomSampler(), directory=tmp_path)


def test_keras_tuner_trials_are_mirrored_into_an_optuna_study(tmp_path):
    x, y = datasets.calcium(n_neurons=20, n_frames=300, seed=0, difficulty="easy")
    (xt, yt), validation, _ = datasets.split(x, y, val=0.25, test=0.0)
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    tuner = keras_grs.GRSTuner.from_model(models.build("nn1", (20,)), tolerance=0.9, seed=0, max_trials=4,
                                          directory=tmp_path, project_name="kt", optuna_storage=url)
    tuner.search(xt, yt, validation_data=validation, epochs=1, verbose=0)
    study = optuna.load_study(study_name="kt", storage=url)
    assert len(study.trials) == len(tuner.oracle.trials) == 4
    assert study.trials[0].params == {"dense1": 32, "dense2": 16, "dense3": 8}
    assert study.trials[1].user_attrs["parent"] == tuner.oracle.start_order[0]
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    first = tuner.oracle.get_trial(study.trials[0].user_attrs["keras_tuner_trial"])
    assert study.trials[0].user_attrs["guard"] == first.metrics.get_last_value("guard_accuracy")
    assert study.trials[0].user_attrs["guard_samples"] == first.metrics.get_last_value("guard_samples") > 0


def test_a_minimized_objective_is_mirrored_as_minimize(tmp_path):
    x, y = datasets.calcium(n_neurons=20, n_frames=300, seed=0, difficulty="easy")
    (xt, yt), validation, _ = datasets.split(x, y, val=0.25, test=0.0)
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    tuner = keras_grs.GRSTuner.from_model(models.build("nn1", (20,)), tolerance=0.9, seed=0, max_trials=2,
                                          directory=tmp_path, project_name="kt", optuna_storage=url,
                                          objective="val_loss")
    tuner.search(xt, yt, validation_data=validation, epochs=1, verbose=0)
    study = optuna.load_study(study_name="kt", storage=url)
    assert [d.name for d in study.directions] == ["MINIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_loss", "flops"]


def test_an_objective_the_model_does_not_report_is_refused_before_any_trial(tmp_path):
    x, y = datasets.calcium(n_neurons=20, n_frames=200, seed=0, difficulty="easy")
    (xt, yt), validation, _ = datasets.split(x, y, val=0.25, test=0.0)
    study = kgo.create_study(kgo.GRSSampler(seed=0), directory=tmp_path, study_name="plain")
    with pytest.raises(ValueError, match="does not produce the objective 'val_auc'"):
        kgo.optimize(study, models.build("nn2", (20,)), xt, yt, validation, tolerance=0.9, epochs=1, n_trials=2,
                     directory=tmp_path, objective="val_auc")
    assert study.trials == [] and not (tmp_path / "checkpoints").exists()


def test_cli_optuna_backend_and_dashboard_storage_lookup(tmp_path, capsys):
    from keras_grs.cli import CommandError, find_storage, main

    x, y = datasets.calcium(n_neurons=20, n_frames=300, seed=0, difficulty="easy")
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.25, test=0.0)
    np.savez(tmp_path / "d.npz", x_train=xt, y_train=yt, x_val=xv, y_val=yv)
    out = tmp_path / "run"
    assert main(["prune", "nn2", "--data", str(tmp_path / "d.npz"), "--out", str(out), "--backend", "optuna",
                 "--method", "nwm", "--epochs", "1", "--initial-epochs", "2", "--max-trials", "3", "--quiet"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["backend"] == "optuna" and report["models"][0]["trials"] == 3
    assert find_storage(str(out)) == f"sqlite:///{(out / 'tuner' / 'optuna.db').resolve()}"
    study = optuna.load_study(study_name="0_nn2", storage=find_storage(str(out)))
    assert len(study.trials) == 3
    with pytest.raises(CommandError, match="no Optuna storage"):
        find_storage(str(tmp_path / "nothing"))
    assert main(["prune", "nn2", "--data", str(tmp_path / "d.npz"), "--out", str(tmp_path / "o2"),
                 "--storage", "redis://host/0"]) == 2
    assert "unknown storage URL" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_max_trials_is_the_whole_studys_budget_not_each_workers():
    """Trials another worker finished count: a worker joining a study that has spent 3 of a 4-trial budget runs
    one trial and stops, whatever its own n_trials."""
    import optuna

    from keras_grs.optuna.samplers import stop_at_budget

    study = optuna.create_study()
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(value=1.0))
    ran = []
    study.optimize(lambda trial: ran.append(trial.number) or 1.0, n_trials=10, callbacks=[stop_at_budget(4)])
    assert ran == [3] and len(study.trials) == 4
