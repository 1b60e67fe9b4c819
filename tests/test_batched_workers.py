"""A batch cut into groups of a fixed number of slots, the groups trained side by side on the cores: each candidate
trains exactly as it would alone, whichever group and whichever thread it lands in."""

import os
import threading

import keras
import numpy as np
import pytest
from keras_tuner import Objective

import keras_grs
from keras_grs import models
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator, _in_threads
from keras_grs.inputs import SettingError

OBJECTIVE = Objective("val_accuracy", "max")
FIT = {"epochs": 2, "batch_size": 16, "verbose": 0}
# a GRS step of cnn1: one candidate per layer the search shrinks
STEP = [{"conv1": [0]}, {"conv2": [1]}, {"dense1": [2, 3]}, {"dense2": [0]}, {"dense3": [1]}]


@pytest.fixture(scope="module")
def cnn():
    rng = np.random.default_rng(8)
    x, y = rng.normal(size=(80, 9, 9, 1)).astype("float32"), rng.integers(0, 3, 80)
    keras.utils.set_random_seed(4)
    start = models.build("cnn1", (9, 9, 1), num_classes=3).get_weights()
    return x, y, dict(FIT, validation_data=(x[:24], y[:24])), start


def initial(start):
    model = models.build("cnn1", (9, 9, 1), num_classes=3)
    model.set_weights(start)
    return model


def train(tmp_path, cnn, batches, workers, tag):
    """Train ``batches`` (lists of indices into STEP) with one evaluator; per index, the weights and the result."""
    x, y, fit, start = cnn
    evaluator = BatchedEvaluator(OBJECTIVE, seed=3, workers=workers)
    evaluator.pad_to(initial(start))
    trained = {}
    for batch in batches:
        jobs = [Job(keras_grs.shrink(initial(start), STEP[i]), True, str(tmp_path / f"{tag}{i}.weights.h5"),
                    key=f"c{i}") for i in batch]
        for i, job, result in zip(batch, jobs, evaluator.evaluate(jobs, (x, y), fit)):
            trained[i] = (job.model.get_weights(), result)
    return evaluator, trained


def test_a_step_split_over_two_workers_trains_each_candidate_as_it_trains_alone(tmp_path, cnn, monkeypatch):
    # both groups must be inside their fit at once, or the barrier breaks: the groups really run side by side
    barrier = threading.Barrier(2, timeout=120)
    threads = set()
    fit_group = BatchedEvaluator._fit_group

    def side_by_side(self, jobs, *args):
        threads.add(threading.current_thread().name)
        barrier.wait()
        return fit_group(self, jobs, *args)

    monkeypatch.setattr(BatchedEvaluator, "_fit_group", side_by_side)
    evaluator, together = train(tmp_path, cnn, [range(5)], workers=2, tag="step")
    assert evaluator._slots == 3  # five candidates a step over two workers: groups of 3 and 2
    assert len(threads) == 2 and all(name.startswith("keras-grs-fit") for name in threads)
    monkeypatch.setattr(BatchedEvaluator, "_fit_group", fit_group)
    # each alone, as after a resume that trains only what was left: a group of one in its 3 slots
    _, alone = train(tmp_path, cnn, [[i] for i in range(5)], workers=2, tag="alone")
    for i in range(5):
        for got, want in zip(together[i][0], alone[i][0]):
            np.testing.assert_array_equal(got, want)
        assert together[i][1] == alone[i][1]
    assert not np.array_equal(together[0][0][0], keras_grs.shrink(initial(cnn[3]), STEP[0]).get_weights()[0])


def test_the_slots_are_fixed_once_by_the_initial_model_and_the_workers():
    nn1 = models.build("nn1", (12,))  # three layers the search shrinks, then the output
    for workers, slots in [(1, 3), (2, 2), (3, 1), (16, 1)]:
        evaluator = BatchedEvaluator(OBJECTIVE, workers=workers)
        evaluator.pad_to(nn1)
        assert evaluator._slots == slots, workers
    evaluator = BatchedEvaluator(OBJECTIVE, workers=2)
    evaluator.pad_to(models.build("cnn1", (9, 9, 1)))
    evaluator.pad_to(nn1)  # a later, smaller model widens nothing and keeps the slots
    assert evaluator._slots == 3
    unpadded = BatchedEvaluator(OBJECTIVE, workers=2)
    unpadded._widen([Job(nn1, True, "")] * 5)  # without pad_to the first batch fixes them
    unpadded._widen([Job(nn1, True, "")])
    assert unpadded._slots == 3


@pytest.mark.parametrize("workers", [0, -2, 1.5, True, "2"])
def test_workers_must_be_a_positive_int(workers):
    with pytest.raises(ValueError, match="workers must be a positive int"):
        BatchedEvaluator(OBJECTIVE, workers=workers)


def test_the_environment_sets_the_default_workers_and_is_checked(monkeypatch):
    monkeypatch.setenv("KERAS_GRS_WORKERS", "3")
    assert BatchedEvaluator(OBJECTIVE).workers == 3
    assert BatchedEvaluator(OBJECTIVE, workers=1).workers == 1  # an argument wins
    monkeypatch.setenv("KERAS_GRS_WORKERS", "²")  # a digit, not a decimal: int() would fail on it
    with pytest.raises(ValueError, match="KERAS_GRS_WORKERS must be a positive integer"):
        BatchedEvaluator(OBJECTIVE)
    monkeypatch.setenv("KERAS_GRS_WORKERS", "two")
    with pytest.raises(ValueError, match="KERAS_GRS_WORKERS must be a positive integer.*'two'"):
        BatchedEvaluator(OBJECTIVE)
    monkeypatch.delenv("KERAS_GRS_WORKERS")
    assert BatchedEvaluator(OBJECTIVE).workers == min(2, len(os.sched_getaffinity(0)))  # two, or one on one core


def test_a_run_with_a_bad_environment_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 6)).astype("float32"), rng.integers(0, 2, 40)
    monkeypatch.setenv("KERAS_GRS_WORKERS", "0")
    with pytest.raises(SettingError, match="KERAS_GRS_WORKERS must be a positive integer.*'0'"):
        keras_grs.prune(["nn1"], x, y, (x[:10], y[:10]), out=str(tmp_path / "run"), epochs=1, initial_epochs=1)
    assert not (tmp_path / "run").exists()


def test_a_failing_group_stops_the_others_and_no_thread_outlives_the_batch():
    seen = []

    def fails(halt):
        raise RuntimeError("out of memory in group 1")

    def waits(halt):
        seen.append(halt.wait(timeout=60))  # a group between two calls of its fit
        return "stopped"

    with pytest.raises(RuntimeError, match="group 1"):
        _in_threads([waits, fails], 2)
    assert seen == [True]  # told to stop, and finished before the error reached the caller
    assert _in_threads([lambda halt: 1, lambda halt: 2, lambda halt: 3], 2) == [1, 2, 3]
    assert _in_threads([lambda halt: threading.current_thread().name] * 2, 1) == ["MainThread"] * 2
    assert not [t for t in threading.enumerate() if t.name.startswith("keras-grs-fit")]


def test_an_interrupted_caller_stops_the_groups_and_raises_once_they_have_returned(monkeypatch):
    """Ctrl-C (or the command line's SIGTERM) reaches the caller while it waits for the groups."""
    returned = []

    def group(halt):
        returned.append(halt.wait(timeout=60))
        return "stopped"

    join = threading.Thread.join
    calls = []

    def interrupted_join(self, *args):
        calls.append(self.name)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return join(self, *args)

    monkeypatch.setattr(threading.Thread, "join", interrupted_join)
    with pytest.raises(KeyboardInterrupt):
        _in_threads([group, group], 2)
    monkeypatch.setattr(threading.Thread, "join", join)
    assert returned == [True, True]
    assert not [t for t in threading.enumerate() if t.name.startswith("keras-grs-fit")]
