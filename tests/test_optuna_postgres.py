"""Several machines on one PostgreSQL study: three `keras-grs prune --backend optuna` workers on a throwaway cluster.

The cluster is a real PostgreSQL server (Debian's, installed by `make postgres-server`), started for this module
on a free port of 127.0.0.1 and removed afterwards, whatever the tests' outcome. The server refuses to run as root,
so as root (CI, this machine) it runs as the `postgres` user the Debian package creates.

How the workers run, and why their training is deterministic: tests/prune_workers.py.
"""

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from prune_workers import check_shared_like_single, prune_arguments, run_workers, study_on, write_inputs

from keras_grs.cli import main
from keras_grs.optuna.study import open_storage

SERVER_USER = "postgres"  # created by Debian's postgresql package
WORKERS = 2  # at once, after the one that leaves early: three workers in all


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
    return write_inputs(tmp_path_factory.mktemp("inputs"))


def test_three_workers_on_one_postgresql_study_share_the_work_and_take_the_single_process_path(
        postgres, run_inputs, tmp_path):
    model, data = run_inputs
    started = time.perf_counter()
    runs, finishers = run_workers(model, data, tmp_path, postgres + "workers", WORKERS)
    seconds = time.perf_counter() - started
    # the reference: one process (this one, which has TensorFlow loaded already) on a database of its own
    assert main(prune_arguments(model, data, tmp_path / "single", postgres + "single")) == 0

    trials = check_shared_like_single(study_on(postgres + "workers"), study_on(postgres + "single"), runs, finishers)
    print(f"one worker that left and {WORKERS} at once: {trials} trials in {seconds:.0f} s")


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
    with_password = postgres.replace("keras_grs@", "keras_grs:secret@")  # trust: the password is not checked
    assert main(prune_arguments(model, data, tmp_path / "run", with_password + "absent")) == 2
    error = capsys.readouterr().err
    assert 'cannot be opened' in error and 'database "absent" does not exist' in error, error
    assert "secret" not in error and "keras_grs:***@" in error
    assert not (tmp_path / "run" / "tuner" / "checkpoints").exists()


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:not-a-port", "malformed postgresql storage URL"),
    ("127.0.0.1:FREE", "cannot be opened: connection failed"),  # a port nothing listens on
])
def test_a_postgresql_url_that_cannot_be_used_is_refused_without_showing_its_password(address, message):
    # the port is found when the test runs: test ids must be the same in every pytest-xdist worker
    address = address.replace("FREE", str(free_port()))
    with pytest.raises(ValueError, match=message) as refused:
        open_storage(f"postgresql://keras_grs:secret@{address}/keras_grs")
    assert "secret" not in str(refused.value)
