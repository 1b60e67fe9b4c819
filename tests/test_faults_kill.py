"""SIGKILL at the stages of ``keras-grs prune``, then ``--resume`` until it finishes: nothing lost, nothing corrupt.

The short form of ``benchmarks/faults.py`` (which injects kills at random stages and moments): a few kills, after
which the finished run must take exactly the decisions of its uninterrupted twin, scores included, because every
candidate's training is a function of (seed, its key) alone. Each attempt is a whole ``python -m keras_grs``
process, so the runs are as small as a JGRS search gets.
"""

import shutil

import numpy as np
import pytest

from keras_grs import datasets
from faults.harness import AFTER_SEARCH, CHECKPOINT_PATTERNS, Kill, check_run, decisions, prune_argv, run_with_kills

TIMEOUT = 300  # seconds per attempt; a hang fails the test instead of stalling the suite


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    x, y = datasets.calcium(n_neurons=20, n_frames=240, seed=0, difficulty="easy")
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.25, test=0.0)
    path = tmp_path_factory.mktemp("data") / "data.npz"
    np.savez(path, x_train=xt, y_train=yt, x_val=xv, y_val=yv)
    return path


def small(npz, out, backend="keras-tuner"):
    return prune_argv(npz, out, backend, model="nn2", max_trials=4)


def uninterrupted(npz, tmp_path_factory, backend):
    out = tmp_path_factory.mktemp(f"twin-{backend}") / "run"
    run = run_with_kills(small(npz, out, backend), out, backend, [], timeout=TIMEOUT)
    assert run.problems == [] and len(run.attempts) == 1
    return run


@pytest.fixture(scope="module")
def twin(npz, tmp_path_factory):
    return uninterrupted(npz, tmp_path_factory, "keras-tuner")


@pytest.fixture(scope="module")
def optuna_twin(npz, tmp_path_factory):
    return uninterrupted(npz, tmp_path_factory, "optuna")


@pytest.mark.parametrize("backend, twin_fixture", [("keras-tuner", "twin"), ("optuna", "optuna_twin")])
def test_killed_mid_search_and_resumed_it_ends_as_its_uninterrupted_twin(npz, tmp_path, request, backend,
                                                                         twin_fixture):
    # killed as the second jump's checkpoint is written: the resumed process starts from a finished jump, trains
    # the lost one first (not third, as its twin did), inherits from a checkpoint on disk, and (Optuna) finds a
    # trial failed by the kill in its study
    reference = request.getfixturevalue(twin_fixture)
    out = tmp_path / "run"
    run = run_with_kills(small(npz, out, backend), out, backend, [Kill(CHECKPOINT_PATTERNS[backend], 3)],
                         timeout=TIMEOUT)
    assert run.problems == [] and run.lost_trials == []
    assert [a.stage for a in run.kills] == ["JGRS jump"]
    assert [a.returncode for a in run.attempts] == [-9, 0]
    assert decisions(out) == decisions(reference.out)  # accepted path, final structure, EUP, every score


def test_killed_in_initial_training_and_c_export_it_ends_as_its_uninterrupted_twin(npz, twin, tmp_path):
    kills = [Kill(CHECKPOINT_PATTERNS["keras-tuner"], 1), Kill("*/c/*", 3)]
    run = run_with_kills(small(npz, tmp_path / "run"), tmp_path / "run", "keras-tuner", kills, timeout=TIMEOUT)
    assert run.problems == []
    assert [a.stage for a in run.kills] == ["initial training", "C export"]
    assert [a.returncode for a in run.attempts] == [-9, -9, 0]
    assert decisions(run.out) == decisions(twin.out)


def test_optuna_killed_after_eup_finishes_whole(npz, tmp_path):
    out = tmp_path / "run"
    run = run_with_kills(small(npz, out, "optuna"), out, "optuna", [Kill(*AFTER_SEARCH["EUP"])], timeout=TIMEOUT)
    assert run.problems == [] and run.lost_trials == []
    assert [a.stage for a in run.kills] == ["EUP"]
    assert decisions(out)[0]["path"][0] == ("initial", "32")


def test_the_checks_see_a_damaged_run(twin, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(twin.out, out)
    assert check_run(out, "keras-tuner") == []
    (out / "c" / "empty.h").write_bytes(b"")
    (out / "tuner" / "0_nn2" / ".partial-1-x.json").write_text("{")
    (out / "run.json").write_text("{")
    with open(out / "compact.keras", "r+b") as f:
        f.truncate(64)
    found = "\n".join(check_run(out, "keras-tuner"))
    for problem in ("zero-byte file: c/empty.h", "temporary file left behind", "run.json is not valid JSON",
                    "compact.keras does not load"):
        assert problem in found
