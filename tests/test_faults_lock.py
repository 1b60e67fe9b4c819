"""One run, one owner: a run directory held by one process refuses every other, and a dead holder's lock is taken."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import keras_grs
from keras_grs import models
from keras_grs import runlock
from keras_grs.cli import main
from keras_grs.runlock import LOCK_FILE, RunLock, RunLocked, check_not_locked, holder_of

from helpers import tiny_npz

TINY = ["--method", "rrs", "--epochs", "1", "--initial-epochs", "1", "--seed", "1", "--tolerance", "0.9",
        "--max-trials", "2", "--no-eup", "--quiet"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return tiny_npz(tmp_path_factory.mktemp("data"))


def hold_in_other_process(directory):
    """A child process that takes the lock, says so, and keeps it until killed."""
    # runlock.py is loaded on its own, without the package (and TensorFlow): the child is ready in a moment
    code = textwrap.dedent(f"""
        import importlib.util, time
        spec = importlib.util.spec_from_file_location("runlock", {str(runlock.__file__)!r})
        runlock = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(runlock)
        runlock.RunLock({str(directory)!r}, command="holder").acquire()
        print("held", flush=True)
        time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def test_a_second_owner_is_refused_with_pid_and_host(tmp_path):
    with RunLock(tmp_path, command="first"):
        with pytest.raises(RunLocked) as refused:
            RunLock(tmp_path).acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message and "(first)" in message
        with pytest.raises(RunLocked):
            check_not_locked(tmp_path)
    # released: the lock file is gone and the directory can be owned again
    assert not (tmp_path / LOCK_FILE).exists()
    check_not_locked(tmp_path)
    with RunLock(tmp_path):
        pass


def test_a_lock_on_a_new_directory_leaves_no_trace(tmp_path):
    directory = tmp_path / "new" / "run"
    with RunLock(directory):
        assert directory.is_dir()
    assert not directory.exists()


def test_of_two_that_both_found_the_directory_missing_the_one_that_created_it_holds_it(tmp_path, monkeypatch):
    # the interleaving a race can give: the second looks before the first has created the directory, and creates
    # it too; the creator must be the holder, or the directory outlives both (nobody thinks they made it)
    directory = tmp_path / "run"
    first, second = RunLock(directory), RunLock(directory)
    monkeypatch.setattr(type(directory), "is_dir", lambda self: False if self == directory else os.path.isdir(self))
    first.acquire()
    with pytest.raises(RunLocked):
        second.acquire()
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no private name left behind by the refused one
    assert [p.name for p in directory.iterdir()] == [LOCK_FILE]
    first.release()
    assert not directory.exists() and not list(tmp_path.iterdir())


def test_a_dead_holders_lock_is_taken_over(tmp_path):
    process = hold_in_other_process(tmp_path)
    with pytest.raises(RunLocked, match=f"pid {process.pid} "):
        RunLock(tmp_path).acquire()
    process.kill()
    process.wait()
    assert holder_of(tmp_path)["pid"] == process.pid  # its description is still there: a stale lock file
    check_not_locked(tmp_path)
    with RunLock(tmp_path, command="second"):
        assert holder_of(tmp_path)["pid"] == os.getpid() and holder_of(tmp_path)["command"] == "second"


def test_the_cli_refuses_a_directory_in_use_and_writes_nothing(npz, tmp_path, capsys):
    out = tmp_path / "run"
    process = hold_in_other_process(out)
    try:
        for extra in ([], ["--resume"]):
            assert main(["prune", "nn2", "--data", str(npz), "--out", str(out), *TINY, *extra]) == 2
            err = capsys.readouterr().err
            assert f"in use by another keras-grs process: pid {process.pid} on host {socket.gethostname()}" in err
            assert err.count("\n") == 1
        assert [p.name for p in out.iterdir()] == [LOCK_FILE]
    finally:
        process.kill()
        process.wait()


def test_prune_and_grstuner_refuse_a_directory_in_use(npz, tmp_path):
    with np.load(npz) as data:
        x, y, xv, yv = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    model = models.build("nn2", (20,))
    with RunLock(tmp_path / "runs"):
        with pytest.raises(RunLocked, match="in use"):
            keras_grs.prune(model, x, y, (xv, yv), directory=str(tmp_path / "runs"), epochs=1, verbose=0)
    tuner = keras_grs.GRSTuner.from_model(model, directory=str(tmp_path / "t"), project_name="p", max_trials=2)
    with RunLock(tuner.project_dir):
        with pytest.raises(RunLocked, match="in use"):
            tuner.search(x, y, validation_data=(xv, yv), epochs=1, verbose=0)
    assert not tuner.oracle.trials  # refused before any trial


def test_two_runs_started_at_once_on_a_new_directory_one_proceeds(npz, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "keras_grs", "prune", "nn2", "--data", str(npz), "--out", str(out), *TINY]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    started = time.time()
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for _ in range(2)]
    outputs = [p.communicate(timeout=180) for p in processes]
    codes = sorted(p.returncode for p in processes)
    assert codes == [0, 2], outputs
    winner, loser = (outputs[0], outputs[1]) if processes[0].returncode == 0 else (outputs[1], outputs[0])
    refusal = loser[1].strip().splitlines()[-1]
    # Usually the loser meets the lock; if the winner was already done it finds a non-empty directory instead.
    assert "in use by another keras-grs process" in refusal or "is not empty" in refusal
    assert "Traceback" not in loser[1]
    report = json.loads((out / "report.json").read_text())
    structure = report["models"][0]["structure"]
    compact_row = next(line.split() for line in winner[0].splitlines() if line.split()[:1] == ["compact"])
    assert compact_row[1] == structure  # the result the winner printed is the one left in the directory
    assert not (out / LOCK_FILE).exists()
    assert time.time() - started < 120


RACER = """
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("runlock", sys.argv[1])
runlock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runlock)
time.sleep(max(0.0, float(sys.argv[3]) - time.time()))  # all racers try at the same instant
try:
    lock = runlock.RunLock(sys.argv[2]).acquire()
except runlock.RunLocked:
    print("lost", flush=True)
else:
    print("won", flush=True)
    time.sleep(3)  # held until every other racer has tried
    lock.release()
"""


def test_racers_on_a_new_directory_exactly_one_wins_each_round(tmp_path):
    for round_ in range(3):
        directory = tmp_path / f"round{round_}" / "run"
        start = time.time() + 1.5
        racers = [subprocess.Popen([sys.executable, "-c", RACER, runlock.__file__, str(directory), str(start)],
                                   stdout=subprocess.PIPE, text=True) for _ in range(6)]
        results = sorted(r.communicate(timeout=60)[0].strip() for r in racers)
        assert results == ["lost"] * 5 + ["won"], results
        assert not directory.exists()  # created by the lock, removed with it: no trace
