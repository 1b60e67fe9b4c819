"""A candidate's training is a function of (seed, its key) alone: the same in any batch, any slot, any process.

This is what lets a run killed and resumed take its uninterrupted twin's decisions (``tests/test_faults_kill.py``
kills real runs): after a resume, a candidate may be trained with other batch-mates, in another slot, or first in a
fresh process instead of late in a long one.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_tuner import Objective

import keras_grs
from keras_grs import datasets, models
from keras_grs.evaluate import Job
from keras_grs.evaluate.batched import BatchedEvaluator, _forward_function

FIT = {"epochs": 2, "batch_size": 32, "verbose": 0}


@pytest.fixture(scope="module")
def data():
    x, y = datasets.calcium(n_neurons=20, n_frames=300, seed=3, difficulty="easy")
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.3, test=0.0)
    return xt, yt, dict(FIT, validation_data=(xv, yv))


@pytest.fixture(scope="module")
def initial():
    keras.utils.set_random_seed(5)
    return models.build("nn1", (20,)).get_weights()  # with dropout: its masks must follow the key too


def candidate(weights, removed):
    model = models.build("nn1", (20,))
    model.set_weights(weights)
    return keras_grs.shrink(model, removed)


def train(tmp_path, data, initial, batches):
    """Train ``batches`` (lists of (key, removal)) one after the other with one evaluator; the models by key."""
    x, y, fit = data
    tmp_path.mkdir(exist_ok=True)
    evaluator = BatchedEvaluator(Objective("val_accuracy", "max"), seed=11)
    evaluator.pad_to(candidate(initial, {}))
    trained, results = {}, {}
    for batch in batches:
        jobs = [Job(candidate(initial, removed), True, str(tmp_path / f"{key}.weights.h5"), key=key)
                for key, removed in batch]
        for job, result in zip(jobs, evaluator.evaluate(jobs, (x, y), fit)):
            trained[job.key], results[job.key] = job.model, result
    return trained, results


def test_a_candidate_trains_bit_for_bit_alike_alone_beside_others_and_late_in_a_process(tmp_path, data, initial):
    mine = ("near.a0.c2", {"dense1": [0, 5, 9], "dense2": [3]})
    wider = ("near.a0.c1", {"dense3": [1]})
    narrower = ("near.a0.c3", {"dense1": list(range(12)), "dense2": [0, 1]})
    alone, alone_results = train(tmp_path / "alone", data, initial, [[mine]])
    late, late_results = train(tmp_path / "late", data, initial, [[("init", {})], [wider, narrower, mine]])
    for got, want in zip(late[mine[0]].get_weights(), alone[mine[0]].get_weights()):
        np.testing.assert_array_equal(got, want)
    assert late_results[mine[0]] == alone_results[mine[0]]
    assert late[mine[0]].layers[0].units == 29  # it was trained, at its own width
    assert not np.array_equal(late[mine[0]].get_weights()[0], candidate(initial, mine[1]).get_weights()[0])


def test_the_key_not_the_slot_chooses_a_candidates_draws(tmp_path, data, initial):
    same = {"dense2": [2]}
    trained, _ = train(tmp_path, data, initial, [[("a", same), ("b", same)], [("a2", same)]])
    one, other = trained["a"].get_weights()[0], trained["b"].get_weights()[0]
    assert not np.array_equal(one, other)  # two keys: two batch orders and dropout draws, though the models match
    again, _ = train(tmp_path / "again", data, initial, [[("b", same)]])
    np.testing.assert_array_equal(again["b"].get_weights()[0], other)


def test_a_candidates_validation_outputs_do_not_depend_on_how_many_candidates_share_the_batch(data, initial):
    """Validation feeds the same samples to every candidate: multiplied once by the kernels side by side, a
    candidate's columns were rounded differently with 3 or 5 slots than with 2 or 4 (up to 4e-7 here)."""
    _, _, fit = data
    x_val = tf.constant(fit["validation_data"][0].astype("float32"))
    mine = {"dense1": [4], "dense3": [0, 2]}
    outputs = []
    for n in range(5):  # 0..4 batch-mates: 2..5 slots
        evaluator = BatchedEvaluator(Objective("val_accuracy", "max"))
        evaluator.pad_to(candidate(initial, {}))
        evaluator._slots = max(2, n + 1)  # all of them in one stack
        jobs = [Job(candidate(initial, removed), True, "") for removed in [{"dense2": [i]} for i in range(n)] + [mine]]
        plan, *_ = evaluator._check(jobs, fit)
        params, masks = evaluator._pack(evaluator._widen(jobs), plan, 20)
        forward = _forward_function(plan.ops, evaluator._slots)
        logits = tf.function(lambda p, m, x: forward(p, m, x, None), jit_compile=True)(params, masks, x_val)
        outputs.append(logits.numpy()[n])
    for other in outputs[1:]:
        np.testing.assert_array_equal(other, outputs[0])
