"""One candidate runner: the keras-tuner and Optuna backends record the same outcome for the same candidate."""

import optuna
import pytest

from keras_grs import GRSTuner, datasets
from keras_grs import optuna as kgo
from keras_grs.tuner.oracles import GUARD_SAMPLES, KEY, guard_metric

from helpers import tiny_classifier

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_tuner_and_optuna_record_the_same_outcome_for_the_same_candidates(tmp_path):
    """With the batched evaluator a candidate's training is drawn from (seed, its key) alone, so both backends must
    agree to the bit: same widths, score, params, FLOPs, estimated latency and guard record."""
    x, y = datasets.calcium(n_neurons=12, n_frames=160, seed=1, difficulty="easy")
    (xt, yt), validation, _ = datasets.split(x, y, val=0.3, test=0.0)
    fit = dict(epochs=1, batch_size=16, verbose=0)

    model = tiny_classifier()
    tuner = GRSTuner.from_model(model, tolerance=0.5, seed=4, max_trials=3, directory=tmp_path / "t",
                                evaluator="batched")
    tuner.search(xt, yt, validation_data=validation, **fit)
    by_key = {tuner.oracle.bookkeeping(t.trial_id)[KEY]: t for t in tuner.oracle.trials.values()}

    study = kgo.create_study(kgo.GRSSampler(seed=4), directory=tmp_path / "o", study_name="parity")
    kgo.optimize(study, model, xt, yt, validation, tolerance=0.5, n_trials=3, directory=tmp_path / "o",
                 evaluator="batched", **fit)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 3

    guard = guard_metric(tuner.oracle.objective)
    for trial in trials:
        twin = by_key[trial.system_attrs["keras_grs_key"]]  # the same candidate, from the same seed
        assert twin.hyperparameters.values == trial.params
        metrics = {name: twin.metrics.get_last_value(name) for name in
                   ("val_accuracy", "params", "flops", "latency_ms", guard, GUARD_SAMPLES)}
        attrs = trial.user_attrs
        assert (trial.values[0], attrs["params"], attrs["flops"]) == (
            metrics["val_accuracy"], metrics["params"], metrics["flops"])
        assert attrs["latency_ms"] == pytest.approx(metrics["latency_ms"], rel=1e-12)
        assert (attrs["guard"], attrs["guard_samples"]) == (metrics[guard], metrics[GUARD_SAMPLES])


def test_a_runner_without_a_parent_cache_still_hands_out_the_parent():
    from keras_grs.evaluate.runner import CandidateRunner

    loads = []
    runner = CandidateRunner(build=None, load_parent=lambda id: loads.append(id) or f"model {id}",
                             objective="val_accuracy", cache_size=0)
    assert runner.parent_model(3) == "model 3"
    assert runner.parent_model(3) == "model 3"
    assert loads == [3, 3]  # nothing kept: loaded again
