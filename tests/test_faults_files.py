"""Files are whole or absent: atomic writes, a full disk, damaged files detected, failed trials never hidden."""

import errno
import json

import keras
import numpy as np
import pytest

import keras_grs
from keras_grs import files, models
from keras_grs.cli import main
from keras_grs.evaluate.batched import BatchedEvaluator
from keras_grs.evaluate.keras import KerasEvaluator
from keras_grs.failures import SearchFailed

from helpers import tiny_npz

TINY = ["--method", "grs", "--epochs", "1", "--initial-epochs", "1", "--seed", "1", "--tolerance", "0.9",
        "--max-trials", "3", "--no-eup", "--quiet"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    return tiny_npz(tmp_path_factory.mktemp("data"))


def partials(directory):
    return sorted(directory.rglob(f"{files.PARTIAL_PREFIX}*"))


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.json"
    files.write_json(path, {"old": True})
    with pytest.raises(RuntimeError):
        with files.atomic_path(path) as temporary:
            temporary.write_text('{"new": ')
            raise RuntimeError("killed mid-write")
    assert files.read_json(path) == {"old": True} and partials(tmp_path) == []


class _DiskFillingModel:
    """Writes part of a file, then meets a full disk, as model.save would."""

    def save(self, path):
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 half a model")
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_says_so_and_leaves_nothing_half_written(tmp_path):
    path = tmp_path / "compact.keras"
    path.write_bytes(b"the previous model")
    with pytest.raises(files.DiskFullError, match="no space left on the device while writing .*compact.keras"):
        files.save_model(_DiskFillingModel(), path)
    assert path.read_bytes() == b"the previous model" and partials(tmp_path) == []
    assert not files.digest_path(path).exists()


def test_recorded_digests_catch_truncated_and_altered_files(tmp_path):
    path = tmp_path / "m.weights.h5"
    files.write_bytes(path, b"0123456789" * 10)
    assert files.verify(path) is False  # nothing recorded: nothing to check
    files.record_digest(path)
    assert files.verify(path) is True
    path.write_bytes(b"0123456789" * 5)
    with pytest.raises(files.CorruptFileError, match="has 50 bytes but 100 were written"):
        files.verify(path)
    path.write_bytes(b"0123456789" * 9 + b"012345678X")
    with pytest.raises(files.CorruptFileError, match="SHA-256 differs"):
        files.verify(path)
    path.unlink()
    with pytest.raises(files.CorruptFileError, match="missing"):
        files.verify(path)


def test_temporaries_of_a_killed_writer_are_swept(tmp_path):
    (tmp_path / "sub").mkdir()
    left = tmp_path / "sub" / f"{files.PARTIAL_PREFIX}123-trial.weights.h5"
    left.write_bytes(b"half")
    (tmp_path / "kept.json").write_text("{}")
    assert files.remove_partials(tmp_path) == [left]
    assert [p.name for p in tmp_path.rglob("*") if p.is_file()] == ["kept.json"]


def test_a_full_disk_stops_the_run_which_resumes_once_space_is_back(npz, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["prune", "nn2", "--data", str(npz), "--out", str(out), *TINY]
    real_save = keras.Model.save

    def disk_full_for_the_final_model(self, path, *args, **kwargs):
        if str(path).endswith("compact.keras"):
            _DiskFillingModel().save(path)
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "save", disk_full_for_the_final_model)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("keras-grs: error: no space left on the device while writing")
    assert "compact.keras" in err[-1]
    assert not (out / "compact.keras").exists() and not (out / "report.json").exists() and partials(out) == []
    assert not (out / ".keras-grs.lock").exists()

    monkeypatch.setattr(keras.Model, "save", real_save)
    assert main(argv + ["--resume"]) == 0
    assert files.verify(out / "compact.keras") is True
    for path in out.rglob("*.json"):
        json.loads(path.read_text())
    assert not [p for p in out.rglob("*") if p.is_file() and p.stat().st_size == 0 and p.name != "__init__.py"]

    # a checkpoint damaged after the run is named when loaded, not read as weights
    tuner = keras_grs.GRSTuner.from_model(models.build("nn2", (20,)), directory=str(out / "tuner"),
                                          project_name="0_nn2", method="grs", tolerance=0.9)
    trial_id = tuner.pruning_path()[0]["trial_id"]
    trial = tuner.oracle.get_trial(trial_id)
    checkpoint = tuner._get_checkpoint_fname(trial_id)
    with open(checkpoint, "r+b") as f:
        f.truncate(100)
    with pytest.raises(files.CorruptFileError, match="truncated"):
        tuner.load_model(trial)


def fail_after(monkeypatch, evaluator, calls):
    real = evaluator.evaluate
    count = [0]

    def evaluate(self, jobs, *args, **kwargs):
        count[0] += 1
        if count[0] > calls:
            raise RuntimeError("injected failure")
        return real(self, jobs, *args, **kwargs)

    monkeypatch.setattr(evaluator, "evaluate", evaluate)


def test_trials_that_keep_failing_stop_the_search_naming_the_trial(npz, tmp_path, capsys, monkeypatch):
    fail_after(monkeypatch, KerasEvaluator, 1)
    out = tmp_path / "run"
    argv = ["prune", "nn1", "--data", str(npz), "--out", str(out), *TINY, "--method", "jgrs", "--evaluator", "keras",
            "--max-trials", "10"]
    assert main(argv) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "the search of model 'nn1' stopped: 3 trials failed in a row (max_consecutive_failed_trials=3)" in last
    assert "trial 03 failed with RuntimeError: injected failure" in last
    assert not (out / "report.json").exists() and not (out / "compact.keras").exists()


def test_an_optuna_trial_that_raises_stops_the_run_naming_it(npz, tmp_path, capsys, monkeypatch):
    fail_after(monkeypatch, KerasEvaluator, 1)
    argv = ["prune", "nn2", "--data", str(npz), "--out", str(tmp_path / "run"), *TINY, "--backend", "optuna",
            "--evaluator", "keras"]
    assert main(argv) == 1
    assert "trial 1 failed with RuntimeError: injected failure" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_run_with_failed_trials_is_not_a_normal_result(npz, tmp_path, capsys, monkeypatch):
    fail_after(monkeypatch, BatchedEvaluator, 1)
    out = tmp_path / "run"
    assert main(["prune", "nn2", "--data", str(npz), "--out", str(out), *TINY]) == 3
    err = capsys.readouterr().err
    assert "1 trial(s) FAILED (trial 1: RuntimeError: injected failure)" in err and "not a normal result" in err
    report = json.loads((out / "report.json").read_text())
    assert report["models"][0]["failed_trials"] == [{"trial_id": "1", "error": "RuntimeError: injected failure"}]
    assert "**Not a normal result: 1 trial(s) of nn2 FAILED**" in (out / "report.md").read_text()


def test_the_api_raises_search_failed(npz, tmp_path, monkeypatch):
    fail_after(monkeypatch, KerasEvaluator, 1)
    with np.load(npz) as data:
        x, y, xv, yv = data["x_train"], data["y_train"], data["x_val"], data["y_val"]
    with pytest.raises(SearchFailed, match="trial 3 failed with RuntimeError: injected failure") as failed:
        keras_grs.prune(models.build("nn1", (20,)), x, y, (xv, yv), method="jgrs", epochs=1, evaluator="keras",
                        directory=str(tmp_path / "runs"), verbose=0, max_trials=6)
    assert failed.value.trial_id == "3" and failed.value.model_name == "nn1"


def test_a_json_writer_skips_only_what_the_file_already_holds(tmp_path):
    from keras_grs.files import JsonWriter

    path, writer = tmp_path / "state.json", JsonWriter()
    assert writer.write(path, {"trials": [1]})
    assert not writer.write(path, {"trials": [1]})  # same content: no write
    assert writer.write(path, {"trials": [1, 2]}) and json.loads(path.read_text()) == {"trials": [1, 2]}
    path.unlink()  # gone (removed by hand): written again even though the content is the same
    assert writer.write(path, {"trials": [1, 2]}) and json.loads(path.read_text()) == {"trials": [1, 2]}
    assert not list(tmp_path.glob(".partial-*"))
