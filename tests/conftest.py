import os
import shutil
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402

XLA_CACHE_FLAG = "--tf_xla_persistent_cache_directory"
_own_xla_cache = []


def pytest_configure(config):
    """Share compiled XLA programs among the tests of one run, the processes they start and pytest-xdist's workers.

    Compiling the batched evaluator's training loop is most of a small batched search's time, and many tests (and
    the resumed or distributed processes they start) compile the same program again. TensorFlow's persistent cache
    keeps each program under a fingerprint of its HLO and checks it on load, so a test runs the very program it
    would have compiled; it writes each entry under a temporary name and renames it, so the processes the kill
    tests SIGKILL leave no torn entry. The directory lives for one run: made by the first pytest process (pytest-xdist's
    controller), inherited through the environment by its workers and subprocesses, removed at its end, so no
    program outlives a TensorFlow upgrade. TensorFlow reads the flag at its first XLA compilation, after this hook.
    """
    flags = os.environ.get("TF_XLA_FLAGS", "")
    if XLA_CACHE_FLAG in flags:
        return  # a worker or a subprocess of this run (or a user's own cache): keep it
    directory = tempfile.mkdtemp(prefix="keras-grs-tests-xla-")
    _own_xla_cache.append(directory)
    os.environ["TF_XLA_FLAGS"] = f"{flags} {XLA_CACHE_FLAG}={directory}".strip()


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
