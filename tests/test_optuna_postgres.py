"""Several machines on one PostgreSQL study: three `keras-grs prune --backend optuna` workers on a throwaway cluster.

The cluster is a real PostgreSQL server (Debian's, installed by `make postgres-server`), started for this module
on a free port of 127.0.0.1 and removed afterwards, whatever the tests' outcome. The server refuses to run as root,
so as root (CI, this machine) it runs as the `postgres` user the Debian package creates.

The workers' candidates really train and inherit weights from each other's checkpoints. The evaluator is made
deterministic so that the accepted path is decided by the search alone, whichever worker trained which candidate:
a model without dropout, its initial weights from one .keras file, one batch per epoch (shuffling cannot change the
gradient; the batched evaluator's random stream, which depends on a process's history, only shuffles here).
"""

import contextlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from keras_grs import optuna as kgo
from keras_grs.cli import main
from keras_grs.optuna.samplers import KEY_ATTR
from keras_grs.optuna.study import CHECKPOINT_ATTR, open_storage

ROOT = Path(__file__).resolve().parent.parent
SERVER_USER = "postgres"  # created by Debian's postgresql package
WORKERS = 3
FEATURES = 8
STUDY = "0_tiny"  # keras-grs prune names a model's study INDEX_NAME


def server_binaries() -> Path:
    """The directory of initdb and pg_ctl: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin."""
    candidates = []
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True).stdout
        candidates.append(Path(bindir.strip()))
    versions = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(versions, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True)
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir
    pytest.fail("no PostgreSQL server binaries (initdb, pg_ctl) in `pg_config --bindir` or /usr/lib/postgresql/*/bin: "
                "run `make postgres-server`")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def throwaway_cluster(databases):
    """A PostgreSQL server on 127.0.0.1 with ``databases``; yields its URL prefix ``postgresql://USER@HOST:PORT/``.

    Stopped (immediately: nothing in it is kept) and its directory removed on exit, also when the body failed."""
    bindir = server_binaries()
    root = Path(tempfile.mkdtemp(prefix="keras-grs-pg-"))  # in /tmp: the server's user must reach it
    as_owner = []
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(SERVER_USER)
        except KeyError:
            shutil.rmtree(root)
            pytest.fail(f"PostgreSQL refuses to run as root and there is no {SERVER_USER!r} user to run it: "
                        "run `make postgres-server` (Debian's package creates it)")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        as_owner = ["runuser", "-u", SERVER_USER, "--"]

    def run(*command):
        done = subprocess.run(as_owner + [str(c) for c in command], cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            log = root / "server.log"
            pytest.fail(f"{' '.join(map(str, command))} failed ({done.returncode}): {done.stderr or done.stdout}"
                        + (f"\nserver log:\n{log.read_text()}" if log.is_file() else ""))

    data, user, started = root / "data", "keras_grs", False
    try:
        # trust: the server listens on 127.0.0.1 only and lives as long as this test module
        run(bindir / "initdb", "-D", data, "-U", user, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
        port = free_port()
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=50"
        run(bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-o", options, "-w", "-t", "60", "start")
        started = True
        for name in databases:
            run(bindir / "createdb", "-h", "127.0.0.1", "-p", port, "-U", user, name)
        yield f"postgresql://{user}@127.0.0.1:{port}/"
    finally:
        if started:
            subprocess.run(as_owner + [str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           cwd=root, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql:// URLs)
    except ImportError:
        pytest.fail("postgresql:// storage needs the postgres extra: pip install -c constraints.txt -e '.[postgres]'")
    with throwaway_cluster(["workers", "single"]) as url:
        yield url


@pytest.fixture(scope="module")
def run_inputs(tmp_path_factory):
    """A data file and a .keras model without dropout (widths 4x3x3: three candidates per GRS step)."""
    import keras

    directory = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, FEATURES)).astype("float32")
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype("int32")
    data = directory / "data.npz"
    np.savez(data, x_train=x[:200], y_train=y[:200], x_val=x[200:], y_val=y[200:])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(4, activation="relu"),
        keras.layers.Dense(3, activation="relu"),
        keras.layers.Dense(3, activation="relu"),
        keras.layers.Dense(2, activation="softmax"),
    ], name="tiny")
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(directory / "tiny.keras")
    return directory / "tiny.keras", data


def prune_arguments(model, data, out, storage):
    """`keras-grs prune` as one worker (one machine) of the study in ``storage``."""
    return ["prune", str(model), "--data", str(data), "--out", str(out), "--backend", "optuna", "--storage", storage,
            "--method", "grs", "--tolerance", "0.97", "--epochs", "3", "--initial-epochs", "15", "--batch-size", "256",
            "--seed", "0", "--acceptance", "seed", "--no-eup", "--quiet"]


def prune_worker(*arguments):
    """`keras-grs prune` of this checkout in a process of its own."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.Popen([sys.executable, "-m", "keras_grs", *prune_arguments(*arguments)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(worker, timeout=240):
    output, _ = worker.communicate(timeout=timeout)
    assert worker.returncode == 0, output
    return output


def study_on(url):
    return optuna.load_study(study_name=STUDY, storage=url, sampler=kgo.GRSSampler(seed=0))


def evaluated(study):
    return [t for t in study.trials if t.state == TrialState.COMPLETE and t.system_attrs.get(KEY_ATTR)]


def test_three_workers_on_one_postgresql_study_share_the_work_and_take_the_single_process_path(
        postgres, run_inputs, tmp_path):
    model, data = run_inputs
    started = time.perf_counter()
    workers = [prune_worker(model, data, tmp_path / f"worker{i}", postgres + "workers") for i in range(WORKERS)]
    outputs = [finish(worker) for worker in workers]
    seconds = time.perf_counter() - started
    # the reference: one process (this one, which has TensorFlow loaded already) on a database of its own
    assert main(prune_arguments(model, data, tmp_path / "single", postgres + "single")) == 0

    shared, single = study_on(postgres + "workers"), study_on(postgres + "single")
    done = [t.system_attrs[KEY_ATTR] for t in evaluated(shared)]
    assert len(done) == len(set(done)), "a candidate was evaluated twice"
    assert sorted(done) == sorted(t.system_attrs[KEY_ATTR] for t in evaluated(single))
    path = [(row["structure"], row["final"]) for row in kgo.pruning_path(shared)]
    assert path == [(row["structure"], row["final"]) for row in kgo.pruning_path(single)]
    assert len(path) >= 3, f"too short a search to tell workers apart: {path}"
    # The work was shared: the checkpoints each trial recorded lie in more than one worker's run directory, and
    # children inherited from parents another worker trained.
    trainers = {t.number: Path(t.user_attrs[CHECKPOINT_ATTR]).relative_to(tmp_path.resolve()).parts[0]
                for t in evaluated(shared)}
    assert len(set(trainers.values())) >= 2, trainers
    assert any(trainers[t.number] != trainers[t.user_attrs["parent"]]
               for t in evaluated(shared) if t.user_attrs.get("parent") is not None), trainers
    # every worker ends with the same compact model, the study's
    final = next(row for row in kgo.pruning_path(shared) if row["final"])["structure"]
    for i, output in enumerate(outputs):
        report = json.loads((tmp_path / f"worker{i}" / "report.json").read_text())
        assert report["models"][0]["structure"] == final, output
    print(f"{WORKERS} workers: {len(done)} trials in {seconds:.0f} s")


def test_workers_opening_a_new_database_at_once_all_get_the_storage(postgres):
    """Optuna creates its tables when a storage is opened; of several workers creating them at the same instant,
    PostgreSQL lets one win (plain RDBStorage: 15 of 20 opens failed here, in 5 rounds of 4 threads).
    open_storage tries again, so every worker of a new study starts. (Threads stand for the workers: the race is
    between the database's sessions.)"""
    start, results = threading.Barrier(4), []

    def worker():
        start.wait()
        try:
            results.append(len(open_storage(postgres + "race").get_all_studies()))
        except Exception as error:  # noqa: BLE001 -- reported by the assertion below
            results.append(error)

    with throwaway_database(postgres, "race"):
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert results == [0] * 4


@contextlib.contextmanager
def throwaway_database(url, name):
    import sqlalchemy

    engine = sqlalchemy.create_engine(url + "postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    try:
        yield
    finally:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(f"DROP DATABASE {name} WITH (FORCE)"))
        engine.dispose()


def test_an_unknown_postgresql_database_is_named_before_any_training(postgres, run_inputs, tmp_path, capsys):
    model, data = run_inputs
    assert main(prune_arguments(model, data, tmp_path / "run", postgres + "absent")) == 2
    error = capsys.readouterr().err
    assert 'cannot be opened' in error and 'database "absent" does not exist' in error, error
    assert not (tmp_path / "run" / "tuner" / "checkpoints").exists()
