"""keras-tuner's distributed mode with real processes: a chief and two workers on loopback.

Each process runs this file as a script (as a user runs one script on every machine, told its role by
``KERASTUNER_TUNER_ID``). The candidates really train and inherit weights through the shared project directory,
but their objective is a function of their widths (``scripted_score``): the accepted path is then decided by the
search alone, and must equal a single process's, whichever worker trained which candidate.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = dict(tolerance=0.985, project_name="dist", max_retries_per_trial=1)
FIT = dict(epochs=2, batch_size=32, verbose=0)


def build(hp):
    import keras

    model = keras.Sequential([
        keras.Input((6,)),
        keras.layers.Dense(hp.Int("a", 1, 4), activation="relu"),
        keras.layers.Dense(hp.Int("b", 1, 3), activation="relu"),
        keras.layers.Dense(2, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def make_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(360, 6)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int32")
    return (x[:240], y[:240]), (x[240:], y[240:])


def scripted_score(values):
    return 1.0 - 0.001 * (4 - values["a"]) - 0.01 * (3 - values["b"])


class Scripted:
    """A real evaluator whose objective is replaced by ``scripted_score``; logs who evaluated which trial.

    ``die``: the process exits as it is handed its first candidate after trial 0 (before reporting it)."""

    def __init__(self, inner, log, die=False):
        self.inner, self.log, self.die = inner, log, die
        self.batches = getattr(inner, "batches", False)

    def evaluate(self, jobs, fit_args, fit_kwargs):
        if self.die and any(job.hyperparameters.values != {"a": 4, "b": 3} for job in jobs):
            os._exit(3)  # a crash in the middle of a trial: nothing reported to the chief
        results = self.inner.evaluate(jobs, fit_args, fit_kwargs)
        for job, metrics in zip(jobs, results):
            metrics["val_accuracy"] = scripted_score(job.hyperparameters.values)
            self._write({"trial": os.path.basename(os.path.dirname(job.checkpoint)), "pid": os.getpid(),
                         "tuner": os.environ.get("KERASTUNER_TUNER_ID", "single")})
        return results

    def _write(self, record):
        with open(self.log, "a") as f:
            f.write(json.dumps(record) + "\n")


def make_tuner(directory, evaluator, log, seed=None, die=False):
    from keras_grs import GRSTuner
    from keras_grs.evaluate import make_evaluator

    class LoggingTuner(GRSTuner):
        def _hold_back_guard(self, guard_data, fit_kwargs, initial):
            fit_kwargs = super()._hold_back_guard(guard_data, fit_kwargs, initial)
            digest = hashlib.sha256(self._guard[0].tobytes()).hexdigest()
            self.evaluator._write({"guard": digest, "tuner": os.environ.get("KERASTUNER_TUNER_ID", "single")})
            return fit_kwargs

    tuner = LoggingTuner(build, seed=seed, directory=directory, evaluator=evaluator, **SETTINGS)
    inner = make_evaluator(evaluator, tuner.oracle.objective, tuner.hypermodel, seed=tuner.oracle.seed)
    tuner.evaluator = Scripted(inner, log, die)
    return tuner


def run(directory, evaluator, log, seed=None, die=False):
    train, validation = make_data()
    tuner = make_tuner(directory, evaluator, log, seed, die)
    tuner.search(*train, validation_data=validation, progress=False, **FIT)
    return tuner


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(role, port, directory, evaluator, log, die=False):
    env = dict(os.environ, KERASTUNER_TUNER_ID=role, KERASTUNER_ORACLE_IP="127.0.0.1",
               KERASTUNER_ORACLE_PORT=str(port), PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    args = [sys.executable, os.path.abspath(__file__), directory, evaluator, log] + (["die"] if die else [])
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, timeout):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out, err


def records(log):
    with open(log) as f:
        return [json.loads(line) for line in f]


def path_of(tuner):
    return [(row["structure"], row["phase"]) for row in tuner.pruning_path()]


@pytest.mark.parametrize("evaluator", ["batched", "keras"])
def test_a_chief_and_two_workers_search_as_one_process_does(tmp_path, evaluator):
    from keras_grs import GRSTuner

    port, log = free_port(), str(tmp_path / "evaluated.log")
    processes = {role: start(role, port, str(tmp_path), evaluator, log) for role in ("chief", "tuner0", "tuner1")}
    outcome = {role: finish(p, 240) for role, p in processes.items()}
    for role, (code, _, err) in outcome.items():
        assert code == 0, f"{role} exited with {code}:\n{err[-3000:]}"

    seen = records(log)
    trained = [r for r in seen if "trial" in r]
    assert all(r["tuner"] != "chief" for r in seen)  # the chief serves the oracle and trains nothing
    assert len({r["trial"] for r in trained}) == len(trained)  # no candidate evaluated twice
    guards = {r["tuner"]: r["guard"] for r in seen if "guard" in r}
    assert set(guards) == {"tuner0", "tuner1"} and len(set(guards.values())) == 1  # the chief's seed everywhere
    if evaluator == "keras":  # one trial at a time: both workers get the two candidates of a GRS step
        assert {r["tuner"] for r in trained} == {"tuner0", "tuner1"}

    distributed = GRSTuner(build, directory=str(tmp_path), **SETTINGS)  # the chief's project, read back
    single = run(str(tmp_path / "single"), evaluator, str(tmp_path / "single.log"), seed=distributed.oracle.seed)
    assert path_of(distributed) == path_of(single)
    assert path_of(single)[-1] == ("1x2", "grs")
    keys = [distributed.oracle.bookkeeping(t)["grs_key"] for t in distributed.oracle.trials]
    assert len(keys) == len(set(keys)) == len(trained)
    best = distributed.get_best_hyperparameters()[0].values
    assert set(best) == {"a", "b"}  # the pruning bookkeeping is not the user's hyperparameters


def test_a_worker_that_dies_has_its_trial_taken_over_when_it_comes_back(tmp_path):
    """keras-tuner keeps a dead worker's trial as its ongoing trial: a process started again with the same
    KERASTUNER_TUNER_ID gets it back (keras-tuner's own rule); the search then ends as usual."""
    from keras_grs import GRSTuner

    port, log = free_port(), str(tmp_path / "evaluated.log")
    chief = start("chief", port, str(tmp_path), "keras", log)
    dying = start("tuner0", port, str(tmp_path), "keras", log, die=True)
    code, _, err = finish(dying, 240)
    assert code == 3, err[-3000:]
    again = start("tuner0", port, str(tmp_path), "keras", log)
    for role, process in (("tuner0", again), ("chief", chief)):
        code, _, err = finish(process, 240)
        assert code == 0, f"{role} exited with {code}:\n{err[-3000:]}"
    trained = [r["trial"] for r in records(log) if "trial" in r]
    assert len(trained) == len(set(trained))
    tuner = GRSTuner(build, directory=str(tmp_path), **SETTINGS)
    assert path_of(tuner)[-1] == ("1x2", "grs")
    assert all(t.status == "COMPLETED" for t in tuner.oracle.trials.values())


if __name__ == "__main__":
    directory, evaluator, log = sys.argv[1:4]
    run(directory, evaluator, log, die=sys.argv[4:] == ["die"])
