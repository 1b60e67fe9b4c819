"""Fuzzing the CLI's argument parsing and the .npz reader: never a traceback, always exit 0 or 2 with a message."""

import io
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_grs.cli import main
from keras_grs.inputs import DataError, load_npz

OPTIONS = ["--method", "--tolerance", "--epochs", "--initial-epochs", "--batch-size", "--selection", "--seed",
           "--phases", "--max-trials", "--evaluator", "--backend", "--storage", "--no-eup", "--resume", "--quiet",
           "--unsafe-model", "--out", "--data", "--bogus", "-h"]
VALUES = st.one_of(
    st.sampled_from(["grs", "jgrs", "rrs", "nwm", "0", "-1", "1e9", "nan", "inf", "0.5:3,near:2", "near", ":",
                     "minflops", "maxtestacc", "optuna", "keras", "sqlite:///x.db", "x://y", "", " ", "--", "é"]),
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=12),
)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def unusable_data(tmp_path_factory):
    """A data file that is refused, so that no fuzzed command line ever reaches training."""
    path = tmp_path_factory.mktemp("fuzz") / "no_val.npz"
    np.savez(path, x_train=np.zeros((4, 3)), y_train=np.zeros(4))
    return path


def run(argv, capsys):
    try:
        status = main(argv)
    except SystemExit as exit_:  # argparse: usage errors exit 2, --help exits 0
        status = exit_.code
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    return status, captured


@FUZZ
@given(tokens=st.lists(st.one_of(st.sampled_from(OPTIONS), VALUES), max_size=8))
def test_fuzzed_prune_command_lines_are_refused_cleanly(tokens, unusable_data, tmp_path, capsys):
    out = tmp_path / "fuzz_out"
    argv = ["prune", "nn2", *tokens, "--data", str(unusable_data), "--out", str(out)]
    status, captured = run(argv, capsys)
    if status == 0:  # only --help succeeds here
        assert "usage:" in captured.out
    else:
        assert status == 2 and ("error:" in captured.err), captured
    assert not out.exists()


@FUZZ
@given(tokens=st.lists(st.one_of(st.sampled_from(["prune", "report", "export-c", "analyze", "demo", "dashboard"]),
                                 st.sampled_from(OPTIONS), VALUES), min_size=1, max_size=5))
def test_fuzzed_command_lines_without_a_command_that_runs_are_refused(tokens, tmp_path, capsys):
    # A command whose arguments all parse would run; keep only lines that cannot (a missing required argument or
    # an unknown option placed first), so the parser alone answers.
    argv = ["--bogus-option", *tokens]
    status, captured = run(argv, capsys)
    if status == 0:  # a -h among them: help, then exit 0
        assert "-h" in tokens and "usage:" in captured.out
    else:
        assert status == 2 and "error:" in captured.err


def npz_bytes(arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


ARRAYS = st.dictionaries(
    st.sampled_from(["x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "other", ""]),
    st.one_of(
        st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6).map(np.array),
        st.lists(st.integers(-5, 5), max_size=6).map(lambda v: np.array(v, dtype="int64")),
        st.lists(st.text(max_size=3), max_size=4).map(np.array),
        st.integers(0, 3).map(lambda n: np.zeros((n, 2, 2))),
        st.floats().map(np.array),  # a single value, not one per sample
        st.just(np.array([{"a": 1}], dtype=object)),
    ),
    max_size=7,
)


@FUZZ
@given(arrays=ARRAYS, cut=st.one_of(st.none(), st.integers(0, 400)), noise=st.binary(max_size=64))
def test_the_npz_reader_returns_data_or_refuses_with_a_data_error(arrays, cut, noise, tmp_path):
    raw = npz_bytes(arrays)
    if cut is not None:
        raw = raw[:cut] + noise
    path = tmp_path / "fuzz.npz"
    path.write_bytes(raw)
    try:
        data = load_npz(path)
    except DataError as error:
        assert str(error) and "\n" not in str(error).strip()
        return
    for key in ("x_train", "y_train", "x_val", "y_val"):
        assert len(data[key]) > 0 and data[key].dtype != object


def test_a_zip_that_is_not_an_npz_is_refused(tmp_path):
    path = tmp_path / "archive.npz"
    with zipfile.ZipFile(path, "w") as archive:
        for key in ("x_train", "y_train", "x_val", "y_val"):
            archive.writestr(f"{key}.npy", b"not an array")
    with pytest.raises(DataError, match="'x_train' is not a NumPy array"):
        load_npz(path)
