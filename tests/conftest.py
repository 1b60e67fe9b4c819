import os
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

_own_xla_cache = []


def pytest_configure(config):
    """Share compiled XLA programs among the tests of one run, the processes they start and pytest-xdist's workers,
    and with nothing else.

    Compiling the batched evaluator's training loop is most of a small batched search's time, and many tests (and
    the resumed or distributed processes they start) compile the same program again. ``import keras_grs`` keeps
    compiled programs on disk (keras_grs/xla_cache.py); here the cache is a directory of this run's own: made by
    the first pytest process (pytest-xdist's controller) before any test imports keras_grs, inherited through
    ``KERAS_GRS_XLA_CACHE`` by its workers and subprocesses, removed at its end, so no test loads a program an
    earlier run or the user's own work left. A value the caller set (``0``: no cache) is kept.
    """
    if "KERAS_GRS_XLA_CACHE" in os.environ:
        return  # a worker or a subprocess of this run, or the caller's choice
    directory = tempfile.mkdtemp(prefix="keras-grs-tests-xla-")
    _own_xla_cache.append(directory)
    os.environ["KERAS_GRS_XLA_CACHE"] = directory


# The test files that take longest, longest first (from the durations `make test` prints). pytest-xdist hands whole
# files to its workers in collection order, so a long file collected last keeps one worker busy while the other
# idles; started first, the short files fill in around it. Only the order depends on this list, never a result.
LONGEST_FILES = ["test_batched.py", "test_distributed.py", "test_acceptance.py", "test_frozen_multiple.py",
                 "test_faults_kill.py", "test_tuner.py", "test_cli.py", "test_surgery_graphs.py", "test_datasets.py",
                 "test_cli_prune.py", "test_pipeline.py", "test_optuna.py", "test_batched_parity.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: a file's own order is kept


def pytest_unconfigure(config):
    for directory in _own_xla_cache:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(autouse=True)
def _fresh_keras_session():
    """Each test starts from a cleared Keras session with fixed seeds, so results do not depend on test order."""
    keras.backend.clear_session()
    keras.utils.set_random_seed(1234)
    yield
