"""The job owns its run: keras_grs.prune() refuses what `keras-grs prune` refuses, with the same words, and leaves the
directory as it was; it saves, resumes and exports C on its own."""

import json
import os
import socket

import numpy as np
import pytest

import keras_grs
from keras_grs import datasets
from keras_grs.inputs import DataError, SettingError
from keras_grs.runlock import LOCK_FILE, RunLock, RunLocked

TINY = dict(method="rrs", epochs=1, initial_epochs=1, seed=1, tolerance=0.9, max_trials=2, verbose=0)


@pytest.fixture(scope="module")
def data():
    x, y = datasets.calcium(n_neurons=20, n_frames=200, seed=0)
    train, validation, test = datasets.split(x, y, val=0.25, test=0.15)
    return train, validation, test


def snapshot(directory):
    """Every file under ``directory`` with its bytes (None when the directory does not exist)."""
    if not directory.exists():
        return None
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(data, tmp_path_factory):
    """A finished run of prune(out=...) with C export: (its directory, its result)."""
    train, validation, test = data
    out = tmp_path_factory.mktemp("api") / "run"
    result = keras_grs.prune("nn2", *train, validation, test_data=test, out=out, export_c=True, **TINY)
    return out, result


def test_a_run_directory_holds_the_models_report_settings_and_checked_c(finished_run):
    out, result = finished_run
    for name in ("compact.keras", "eup.keras", "report.json", "report.md", "run.json", "c/nn2.h"):
        assert (out / name).is_file(), name
    assert (out / "tuner" / "0_nn2").is_dir() and not (out / LOCK_FILE).exists()
    report = json.loads((out / "report.json").read_text())
    assert report["c_export"] == result.report["c_export"]
    assert report["c_export"]["model"] == "eup" and report["c_export"]["max_abs_diff"] <= 1e-4
    settings = json.loads((out / "run.json").read_text())
    assert settings["models"] == ["nn2"] and settings["tolerance"] == 0.9 and len(settings["data_digest"]) == 64


def test_a_run_in_use_is_refused_naming_its_holder_and_left_as_it_was(finished_run, data):
    out, _ = finished_run
    train, validation, test = data
    before = snapshot(out)
    with RunLock(out, command="holder"):
        with pytest.raises(RunLocked) as refused:
            keras_grs.prune("nn2", *train, validation, test_data=test, out=out, **TINY)
        held = snapshot(out)
    assert f"in use by another keras-grs process: pid {os.getpid()} on host {socket.gethostname()}" in str(refused.value)
    assert "(holder)" in str(refused.value)
    assert {k: v for k, v in held.items() if k != LOCK_FILE} == before and snapshot(out) == before


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(tolerance=0.8), "tolerance was 0.9, now 0.8"),
        (dict(method="grs"), "method was 'rrs', now 'grs'"),
        (dict(models="nn1"), "models was ['nn2'], now ['nn1']"),
        (dict(shift=1.0), "data_digest was '"),
    ],
)
def test_a_resume_with_other_settings_is_refused_naming_them_and_nothing_changes(finished_run, data, change,
                                                                                 message):
    out, _ = finished_run
    (x, y), validation, test = data
    options = dict(TINY, **{k: v for k, v in change.items() if k not in ("models", "shift")})
    x = x + change.get("shift", 0.0)
    before = snapshot(out)
    with pytest.raises(SettingError) as refused:
        keras_grs.prune(change.get("models", "nn2"), x, y, validation, test_data=test, out=out, **options)
    assert str(refused.value).startswith(f"resume=True: the run in {str(out)!r} was started with other settings: ")
    assert message in str(refused.value)
    assert refused.value.render(lambda name: "--" + name).startswith("--resume: the run in")  # as the CLI says it
    assert snapshot(out) == before


def test_a_resume_with_the_same_settings_continues_the_finished_run(finished_run, data):
    out, result = finished_run
    train, validation, test = data
    trials = sorted((out / "tuner" / "0_nn2").glob("trial_*"))
    again = keras_grs.prune("nn2", *train, validation, test_data=test, out=out, export_c=True, **TINY)
    assert sorted((out / "tuner" / "0_nn2").glob("trial_*")) == trials  # no trial ran again
    assert again.results[0].structure == result.results[0].structure
    assert again.results[0].path == result.results[0].path


def test_a_directory_that_is_not_empty_is_refused_without_resume(data, tmp_path):
    train, validation, _ = data
    out = tmp_path / "used"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    for resume, message in ((False, "is not empty; pass resume=True to continue the run it holds, or choose another "
                                    "out"),
                            (True, "holds no run.json, so it is not a keras-grs run")):
        with pytest.raises(SettingError, match=message.replace("(", r"\(")):
            keras_grs.prune("nn2", *train, validation, out=out, resume=resume, **TINY)
        assert snapshot(out) == {"precious.txt": b"keep me"}


@pytest.mark.parametrize("split", ["training", "validation", "test"])
def test_an_empty_split_is_refused_naming_it_and_nothing_is_written(data, tmp_path, split):
    (x, y), (xv, yv), (xs, ys) = data
    if split == "training":
        x, y = x[:0], y[:0]
    elif split == "validation":
        xv, yv = xv[:0], yv[:0]
    else:
        xs, ys = xs[:0], ys[:0]
    out = tmp_path / "run"
    with pytest.raises(DataError) as refused:
        keras_grs.prune("nn2", x, y, (xv, yv), test_data=(xs, ys), out=out, **TINY)
    assert str(refused.value) == f"{split} data: no samples"
    assert not out.exists() and not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "options, api, cli",
    [
        (dict(epochs=0), "epochs must be at least 1", "--epochs must be at least 1"),
        (dict(max_trials=0), "max_trials must be at least 1", "--max-trials must be at least 1"),
        (dict(seed=-1), "seed must be in 0..4294967295", "--seed must be in 0..4294967295"),
        (dict(phases=[(0.5, 3)]), "phases only applies to method jgrs", "--phases only applies to --method jgrs"),
        (dict(export_c=True, out=None), "export_c needs out", "--export-c needs --out"),
        (dict(storage="ftp://host/db"), "storage: unknown storage URL 'ftp://host/db'",
         "--storage: unknown storage URL"),
    ],
)
def test_bad_settings_are_refused_by_the_api_in_its_own_words(data, tmp_path, options, api, cli):
    train, validation, _ = data
    options = {**TINY, "out": tmp_path / "run", **options}
    with pytest.raises(SettingError) as refused:
        keras_grs.prune("nn2", *train, validation, **options)
    assert str(refused.value).startswith(api)
    assert refused.value.render(lambda name: "--" + name.replace("_", "-")).startswith(cli)
    assert not any(tmp_path.iterdir())


def test_one_hot_labels_serve_built_in_models_and_a_model_file_is_read_in_safe_mode(data, tmp_path):
    import keras

    (x, y), (xv, yv), _ = data
    one_hot = np.eye(2, dtype="float32")
    model = keras.Sequential([keras.Input((20,)), keras.layers.Dense(4), keras.layers.Lambda(lambda t: t * 2),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.save(tmp_path / "lambda.keras")
    with pytest.raises(SettingError, match="holds code .* pass safe_mode=False only if you trust this file"):
        keras_grs.prune(str(tmp_path / "lambda.keras"), x, y, (xv, yv), out=tmp_path / "run", **TINY)
    with pytest.raises(DataError, match="one-hot labels cannot serve built-in models"):
        keras_grs.prune(["nn2", model], x, one_hot[y], (xv, one_hot[yv]), out=tmp_path / "run", **TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lambda.keras"]


def test_a_run_an_older_keras_grs_started_is_not_continued_and_the_message_says_why(data, tmp_path):
    train, validation, _ = data
    out = tmp_path / "old"
    out.mkdir()
    # what runs recorded before the data's arrays were digested: the file's path and hash
    (out / "run.json").write_text(json.dumps({"models": ["nn2"], "data": "/d.npz", "data_sha256": "ab" * 32}))
    before = snapshot(out)
    with pytest.raises(SettingError, match="data_digest was not recorded \\(an older keras-grs started the run\\)"):
        keras_grs.prune("nn2", *train, validation, out=out, **TINY)
    assert snapshot(out) == before
