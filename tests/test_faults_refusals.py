"""Broken, hostile and absurd input: refused with one line naming the problem, exit status 2, nothing written."""

import zipfile

import keras
import numpy as np
import pytest

from keras_grs import datasets, models
from keras_grs.cli import main
from keras_grs.files import save_model

TINY = ["--method", "rrs", "--epochs", "1", "--initial-epochs", "1", "--seed", "1", "--tolerance", "0.9",
        "--max-trials", "2", "--no-eup", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    x, y = datasets.calcium(n_neurons=20, n_frames=200, seed=0)
    (xt, yt), (xv, yv), (xs, ys) = datasets.split(x, y, val=0.25, test=0.15)
    arrays = dict(x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys)
    path = tmp_path_factory.mktemp("data") / "data.npz"
    np.savez(path, **arrays)
    return path, arrays


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "nn2.keras"
    save_model(models.build("nn2", (20,)), path)  # with its size and SHA-256 recorded
    return path


def refused(argv, capsys, out):
    """Run the CLI; it must refuse with status 2 and one line, and leave ``out`` as it was. Returns the line."""
    before = sorted(p.relative_to(out) for p in out.rglob("*")) if out.exists() else None
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("keras-grs: error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    after = sorted(p.relative_to(out) for p in out.rglob("*")) if out.exists() else None
    assert after == before
    return lines[0]


def prune(model, data_path, out, *extra):
    return ["prune", str(model), "--data", str(data_path), "--out", str(out), *TINY, *extra]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_an_empty_split_is_named(data, tmp_path, capsys, split):
    _, arrays = data
    arrays = dict(arrays, **{f"x_{split}": arrays[f"x_{split}"][:0], f"y_{split}": arrays[f"y_{split}"][:0]})
    path = tmp_path / "empty.npz"
    np.savez(path, **arrays)
    name = {"train": "training", "val": "validation", "test": "test"}[split]
    line = refused(prune("nn2", path, tmp_path / "out"), capsys, tmp_path / "out")
    assert f"{name} data: no samples" in line and "zero-size" not in line


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "flipped byte", "empty"])
def test_a_broken_keras_file_is_named_as_such(saved_model, tmp_path, data, capsys, damage):
    raw = saved_model.read_bytes()
    broken = tmp_path / "broken.keras"
    if damage == "truncated":
        broken.write_bytes(raw[: len(raw) // 2])
    elif damage == "random bytes":
        broken.write_bytes(np.random.default_rng(0).bytes(len(raw)))
    elif damage == "flipped byte":  # a valid zip whose member no longer matches its checksum
        with zipfile.ZipFile(saved_model) as archive:
            info = archive.getinfo("config.json")
        raw = bytearray(raw)
        raw[info.header_offset + 30 + len(info.filename) + 5] ^= 0xFF
        broken.write_bytes(bytes(raw))
    else:
        broken.write_bytes(b"")
    line = refused(prune(broken, data[0], tmp_path / "out"), capsys, tmp_path / "out")
    assert "not a valid or complete .keras file" in line and "File not found" not in line


def test_a_model_file_changed_after_keras_grs_wrote_it_is_detected(saved_model, tmp_path, data, capsys):
    copy = tmp_path / saved_model.name
    copy.write_bytes(saved_model.read_bytes()[:-10])
    (tmp_path / (saved_model.name + ".sha256.json")).write_bytes(
        (saved_model.parent / (saved_model.name + ".sha256.json")).read_bytes())
    line = refused(prune(copy, data[0], tmp_path / "out"), capsys, tmp_path / "out")
    assert "were written: it is truncated or was changed" in line


def test_code_in_a_model_file_is_refused_unless_unsafe_model(tmp_path, data, capsys):
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    path = tmp_path / "lambda.keras"
    model.save(path)
    line = refused(prune(path, data[0], tmp_path / "out"), capsys, tmp_path / "out")
    assert "holds code" in line and "--unsafe-model" in line
    # trusted explicitly: the file loads (and is then judged as a model: a Lambda layer cannot be pruned)
    line = refused(prune(path, data[0], tmp_path / "out", "--unsafe-model"), capsys, tmp_path / "out")
    assert "holds code" not in line and "lambda" in line.lower()


class _Trap:
    """Unpickling this creates a file: proof that an object array was (or was not) unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_an_object_array_is_refused_without_unpickling(data, tmp_path, capsys):
    _, arrays = data
    marker = tmp_path / "unpickled"
    hostile = tmp_path / "hostile.npz"
    y = np.empty(len(arrays["y_train"]), dtype=object)
    y[:] = [_Trap(marker)] * len(y)
    np.savez(hostile, **dict(arrays, y_train=y))
    line = refused(prune("nn2", hostile, tmp_path / "out"), capsys, tmp_path / "out")
    assert "allow_pickle=False" in line and not marker.exists()


@pytest.mark.parametrize(
    "options, message",
    [
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--epochs", "-3"], "--epochs must be at least 1"),
        (["--initial-epochs", "0"], "--initial-epochs must be at least 1"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--max-trials", "0"], "--max-trials must be at least 1"),
        (["--tolerance", "1e9"], "tolerance must be a number in (0, 1]"),
        (["--tolerance", "nan"], "tolerance must be a number in (0, 1]"),
        (["--tolerance", "-0.5"], "tolerance must be a number in (0, 1]"),
        (["--seed", "-1"], "--seed must be in 0..4294967295"),
        (["--seed", str(2**40)], "--seed must be in 0..4294967295"),
        (["--selection", "biggest"], "--selection must be one of"),
        (["--method", "jgrs", "--phases", "2:3"], "--phases: a jump rate must be in (0, 1)"),
        (["--method", "jgrs", "--phases", "x:y"], "--phases: cannot read 'x:y'"),
        (["--storage", "ftp://host/db"], "unknown storage URL"),
    ],
)
def test_absurd_option_values_are_refused(data, tmp_path, capsys, options, message):
    line = refused(prune("nn2", data[0], tmp_path / "out", *options), capsys, tmp_path / "out")
    assert message in line


def test_labels_wrong_shapes_and_non_finite_values(data, tmp_path, capsys, saved_model):
    _, arrays = data
    cases = [
        (dict(y_val=arrays["y_val"] + 2), saved_model, "validation data: labels range over 2..3"),
        (dict(x_train=arrays["x_train"][:, :, None]), saved_model, "training data: samples of shape (20, 1)"),
        (dict(x_test=np.full_like(arrays["x_test"], np.inf)), "nn2", "test data: x holds"),
        (dict(y_train=arrays["y_train"].astype("U3")), "nn2", "training data: y has dtype <U3, not numbers"),
    ]
    for change, model, message in cases:
        path = tmp_path / "changed.npz"
        np.savez(path, **dict(arrays, **change))
        assert message in refused(prune(model, path, tmp_path / "out"), capsys, tmp_path / "out")


def test_a_damaged_run_file_is_refused_on_resume(data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text('{"models": [')
    line = refused(prune("nn2", data[0], out, "--resume"), capsys, out)
    assert "run.json" in line and "not valid JSON" in line


def test_a_regression_given_what_only_a_classifier_has_is_refused(data, tmp_path, capsys):
    """A model compiled with a regression loss: the default objective (accuracy it does not report), targets of
    another size than its output, and a selection by accuracy are each named before anything is written."""
    _, arrays = data
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(1)],
                             name="sensor")
    model.compile(optimizer="adam", loss="mse")
    path = tmp_path / "regression.keras"
    save_model(model, path)
    values = {f"y_{split}": arrays[f"y_{split}"] * 2.5 for split in ("train", "val", "test")}
    np.savez(tmp_path / "values.npz", **dict(arrays, **values))
    np.savez(tmp_path / "pairs.npz", **dict(arrays, y_val=np.stack([values["y_val"]] * 2, axis=1)))
    cases = [
        ("values.npz", [], "does not produce the objective 'val_accuracy'; it reports ['val_loss']"),
        ("pairs.npz", ["--objective", "val_loss"], "validation data: targets of shape (2,) do not fit model"),
        ("values.npz", ["--objective", "val_loss", "--selection", "maxtestacc"],
         "needs accuracies, and model 'sensor' is a regression"),
    ]
    for data_file, options, message in cases:
        line = refused(prune(path, tmp_path / data_file, tmp_path / "out", *options), capsys, tmp_path / "out")
        assert message in line, line


def test_a_sequence_model_of_open_length_is_refused_naming_the_layer(tmp_path, capsys):
    """A recurrent model built for sequences of any length (``keras.Input((None, channels))``) trains on the data,
    but every trial's FLOPs, latency and C need one length: named before anything is written, not mid-search."""
    rng = np.random.default_rng(0)
    arrays = {f"{a}_{split}": (rng.normal(size=(40, 6, 3)).astype("float32") if a == "x" else rng.integers(0, 2, 40))
              for split in ("train", "val") for a in ("x", "y")}
    np.savez(tmp_path / "sequences.npz", **arrays)
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4),
                              keras.layers.Dense(2, activation="softmax")], name="open")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    path = tmp_path / "open.keras"
    save_model(model, path)
    line = refused(prune(path, tmp_path / "sequences.npz", tmp_path / "out"), capsys, tmp_path / "out")
    assert "layer 'lstm' (LSTM) reads inputs of shape (None, 3), whose size None is left open" in line, line
