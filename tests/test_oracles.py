"""The keras-tuner Oracles, driven directly as a distributed chief would be: no training."""

import json

import keras_tuner
import pytest
from keras_tuner.src.engine import trial as trial_module

from keras_grs import GRSOracle, JGRSOracle, NWMOracle, RRSOracle
from keras_grs.tuner.oracles import CANDIDATE_FILE, GROUP, KEY, PARENT, PHASE, REMOVED

Status = trial_module.TrialStatus


def make_oracle(cls, tmp_path, space=(("a", 4), ("b", 3)), **kwargs):
    oracle = cls(objective="val_accuracy", seed=7, **kwargs)
    oracle._set_project_dir(str(tmp_path), "project")
    hp = keras_tuner.HyperParameters()
    for name, width in space:
        hp.Int(name, 1, width)
    hp.Choice("learning_rate", [1e-3, 1e-2])
    oracle.update_space(hp)
    return oracle


def finish(oracle, trial, score, flops=None):
    metrics = {"val_accuracy": score}
    if flops is not None:
        metrics["flops"] = flops
    oracle.update_trial(trial.trial_id, metrics)
    trial.status = Status.COMPLETED
    oracle.end_trial(trial)


def score_of(values):
    return 1.0 - 0.001 * (4 - values["a"]) - 0.01 * (3 - values["b"])


def drive(oracle, score=score_of):
    """Run trials one by one until the oracle stops; return them in order."""
    trials = []
    while True:
        trial = oracle.create_trial("tuner0")
        if trial.status == Status.STOPPED:
            return trials
        assert trial.status == Status.RUNNING
        finish(oracle, trial, score(trial.hyperparameters.values))
        trials.append(trial)


def test_trial_zero_is_the_initial_structure_at_max_width(tmp_path):
    oracle = make_oracle(GRSOracle, tmp_path)
    trial = oracle.create_trial("tuner0")
    values = trial.hyperparameters.values
    assert values == {"a": 4, "b": 3, "learning_rate": 1e-3}  # other hyperparameters keep their default
    record = oracle.bookkeeping(trial.trial_id)
    assert record[KEY] == "init" and record[PARENT] == "" and record[PHASE] == "initial"


def test_grs_oracle_runs_the_greedy_search(tmp_path):
    oracle = make_oracle(GRSOracle, tmp_path, tolerance=0.985)
    trials = drive(oracle)
    best = oracle.get_best_trials(1)[0]
    assert (best.hyperparameters.values["a"], best.hyperparameters.values["b"]) == (1, 2)
    values = oracle.bookkeeping(trials[1].trial_id)
    assert values[PARENT] == trials[0].trial_id
    removed = json.loads(values[REMOVED])
    assert list(removed) == [values[GROUP]] and len(removed[values[GROUP]]) == 1
    # best trials: the compact structure first, then the earlier accepted ones back to the initial one
    widths = [(t.hyperparameters.values["a"], t.hyperparameters.values["b"]) for t in oracle.get_best_trials(10)]
    assert widths == [(1, 2), (1, 3), (2, 3), (3, 3), (4, 3)]
    # after the end, the oracle keeps answering STOPPED
    assert oracle.create_trial("tuner0").status == Status.STOPPED


def test_grs_step_candidates_run_in_parallel_and_the_oracle_waits_idle(tmp_path):
    oracle = make_oracle(GRSOracle, tmp_path)
    finish(oracle, oracle.create_trial("w0"), 1.0)
    first, second = oracle.create_trial("w0"), oracle.create_trial("w1")
    assert {first.status, second.status} == {Status.RUNNING}
    assert {oracle.bookkeeping(first.trial_id)[GROUP], oracle.bookkeeping(second.trial_id)[GROUP]} == {"a", "b"}
    waiting = oracle.create_trial("w2")
    assert waiting.status == Status.IDLE  # the step's candidates are still running
    finish(oracle, first, 0.999)
    assert oracle.create_trial("w2").status == Status.IDLE
    finish(oracle, second, 0.99)
    nxt = oracle.create_trial("w2")
    assert nxt.status == Status.RUNNING and oracle.bookkeeping(nxt.trial_id)[PARENT] == first.trial_id


def test_rrs_and_nwm_oracles_issue_one_candidate_per_step(tmp_path):
    rrs_oracle = make_oracle(RRSOracle, tmp_path / "rrs", tolerance=0.985)
    records = [rrs_oracle.bookkeeping(t.trial_id) for t in drive(rrs_oracle)]
    assert all(len(json.loads(r[REMOVED]).get(r[GROUP], [])) == 1 for r in records[1:])
    nwm_oracle = make_oracle(NWMOracle, tmp_path / "nwm", tolerance=0.985)
    # NWM needs the trained models' unit norms: a trial without them is a clear error
    with pytest.raises(ValueError, match="L1 norms"):
        finish(nwm_oracle, nwm_oracle.create_trial("t"), 1.0)
        nwm_oracle.create_trial("t")


def test_jgrs_oracle_records_phases(tmp_path):
    oracle = make_oracle(JGRSOracle, tmp_path, space=(("a", 16), ("b", 8)), tolerance=0.98,
                         phases=[(0.5, 2), (None, 2)])
    trials = drive(oracle, lambda v: 1.0 if v["a"] >= 4 and v["b"] >= 2 else 0.5)
    phases = [oracle.bookkeeping(t.trial_id)[PHASE] for t in trials]
    assert phases[0] == "initial" and phases[1:3] == ["far1", "far1"] and phases[-1] == "near"
    assert set(oracle.plan().phase_ends) == {"far1", "near"}
    best = oracle.get_best_trials(1)[0].hyperparameters.values
    assert (best["a"], best["b"]) == (4, 2)


def test_trial_values_pass_the_grpc_protos(tmp_path):
    oracle = make_oracle(GRSOracle, tmp_path)
    finish(oracle, oracle.create_trial("t"), 1.0)
    trial = oracle.create_trial("t")
    proto = trial.to_proto()
    again = trial_module.Trial.from_proto(proto)
    assert again.hyperparameters.values == trial.hyperparameters.values
    assert all(isinstance(v, (int, float, str, bool)) for v in trial.hyperparameters.values.values())


def test_oracle_resumes_from_its_project_without_repeating_trials(tmp_path):
    oracle = make_oracle(GRSOracle, tmp_path)
    for _ in range(4):
        trial = oracle.create_trial("tuner0")
        finish(oracle, trial, score_of(trial.hyperparameters.values))
    interrupted = oracle.create_trial("tuner0")  # running when the process dies
    oracle.save()

    resumed = make_oracle(GRSOracle, tmp_path)
    resumed.reload()
    assert len(resumed.trials) == 5
    retry = resumed.create_trial("tuner0")
    assert retry.trial_id == interrupted.trial_id  # the unfinished trial runs again, nothing else repeats
    finish(resumed, retry, score_of(retry.hyperparameters.values))
    rest = drive(resumed)
    keys = [resumed.bookkeeping(t)[KEY] for t in resumed.trials]
    assert len(keys) == len(set(keys)) == 5 + len(rest)

    fresh = make_oracle(GRSOracle, tmp_path / "fresh")
    drive(fresh)
    final = lambda o: o.bookkeeping(o.get_best_trials(1)[0].trial_id)[KEY]  # noqa: E731
    assert final(resumed) == final(fresh)


def test_bookkeeping_is_the_oracles_own_and_survives_a_restart(tmp_path):
    oracle = make_oracle(GRSOracle, tmp_path)
    first = oracle.create_trial("t")
    finish(oracle, first, 1.0)
    child = oracle.create_trial("t")
    assert set(child.hyperparameters.values) == {"a", "b", "learning_rate"}
    assert [hp.name for hp in oracle.get_space().space] == ["a", "b", "learning_rate"]
    with open(tmp_path / "project" / f"trial_{child.trial_id}" / CANDIDATE_FILE) as f:  # what workers read
        assert json.load(f) == oracle.bookkeeping(child.trial_id)
    oracle.save()
    resumed = make_oracle(GRSOracle, tmp_path)
    resumed.reload()
    assert resumed.bookkeeping(child.trial_id) == oracle.bookkeeping(child.trial_id)
    assert resumed.bookkeeping(child.trial_id)[PARENT] == first.trial_id


def test_resuming_with_other_settings_is_refused(tmp_path):
    oracle = make_oracle(GRSOracle, tmp_path, tolerance=0.985)
    finish(oracle, oracle.create_trial("t"), 1.0)
    other = make_oracle(GRSOracle, tmp_path, tolerance=0.9)
    with pytest.raises(ValueError, match="same settings"):
        other.reload()


def test_widths_must_name_int_hyperparameters(tmp_path):
    oracle = make_oracle(GRSOracle, tmp_path, widths=["a", "c"])
    with pytest.raises(ValueError, match=r"widths \['c'\]"):
        oracle.create_trial("t")
