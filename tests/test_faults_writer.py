"""Checkpoints finished off the training path: whole under their name once joined, absent if their write failed, and
a trial whose checkpoint failed is never recorded complete."""

import errno
import threading

import numpy as np
import pytest

import keras_grs
from keras_grs import files, models
from keras_grs.cli import main

from helpers import tiny_npz


def partials(directory):
    return sorted(directory.rglob(f"{files.PARTIAL_PREFIX}*"))


def test_a_checkpoint_written_behind_is_whole_and_verified_once_joined(tmp_path):
    model = models.build("nn2", (20,))
    path = tmp_path / "checkpoint.weights.h5"
    writer = files.BackgroundWriter()
    files.save_weights(model, path, writer)
    writer.join()
    assert files.verify(path) is True and partials(tmp_path) == []
    copy = models.build("nn2", (20,))
    copy.load_weights(path)
    for a, b in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_write_failing_behind_raises_at_join_and_leaves_nothing(tmp_path, monkeypatch):
    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", disk_full)
    path = tmp_path / "checkpoint.weights.h5"
    writer = files.BackgroundWriter()
    files.save_weights(models.build("nn2", (20,)), path, writer)
    with pytest.raises(files.DiskFullError, match="checkpoint.weights.h5"):
        writer.join()
    assert not path.exists() and not files.digest_path(path).exists() and partials(tmp_path) == []
    writer.join()  # the error is reported once; the writer goes on serving


def test_checkpoints_handed_over_after_a_failed_write_are_skipped_and_leave_nothing(tmp_path):
    """After a failed write the writer skips the ones queued behind it (files land in order or not at all): a
    skipped checkpoint's temporary file, already written by Keras, is removed, not left half-done."""
    writer, gate = files.BackgroundWriter(), threading.Event()

    def failing():
        gate.wait(30)  # until the checkpoints below are queued behind it
        raise OSError(errno.EIO, "injected write failure")

    writer.submit(failing)
    paths = [tmp_path / f"c{i}.weights.h5" for i in range(2)]
    for path in paths:
        files.save_weights(models.build("nn2", (20,)), path, writer)
    gate.set()
    with pytest.raises(OSError, match="injected write failure"):
        writer.join()
    assert not any(p.exists() or files.digest_path(p).exists() for p in paths) and partials(tmp_path) == []
    files.save_weights(models.build("nn2", (20,)), paths[0], writer)  # joined: the writer serves again
    writer.join()
    assert files.verify(paths[0])


def test_a_checkpoint_failing_behind_stops_the_search_before_its_trial_is_recorded_complete(tmp_path, monkeypatch):
    """Checkpoints and trial files are written behind, in order: when a fine-tuned candidate's checkpoint fails
    after Keras' part, the search stops with the error, no file says that trial completed, nothing is half-written,
    and the search resumes from the disk once writes work again."""
    def fail_behind(path):
        if threading.current_thread().name.startswith("keras-grs-writer") and path.name.endswith(".weights.h5"):
            raise OSError(errno.EIO, f"injected write failure for {path.name}")

    with np.load(tiny_npz(tmp_path)) as data:
        x, y, xv, yv = data["x_train"], data["y_train"], data["x_val"], data["y_val"]

    def tuner():
        return keras_grs.GRSTuner.from_model(models.build("nn2", (20,)), train_first=False, seed=1, tolerance=0.9,
                                             acceptance="seed", max_trials=6, directory=str(tmp_path / "runs"))

    monkeypatch.setattr(files, "_fault_point", fail_behind)
    with pytest.raises(OSError, match="injected write failure"):
        tuner().search(x, y, validation_data=(xv, yv), epochs=1, verbose=0, progress=False)
    assert partials(tmp_path / "runs") == []

    monkeypatch.undo()
    resumed = tuner()  # what the disk says
    completed = [t for t in resumed.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(completed) == 1  # the initial model, only validated: its checkpoint was not written behind
    assert files.verify(resumed._get_checkpoint_fname(completed[0].trial_id))
    resumed.search(x, y, validation_data=(xv, yv), epochs=1, verbose=0, progress=False)
    completed = [t for t in resumed.oracle.trials.values() if t.status == "COMPLETED"]
    assert len(completed) == 6
    assert all(files.verify(resumed._get_checkpoint_fname(t.trial_id)) for t in completed)
    assert partials(tmp_path / "runs") == []


def test_every_checkpoint_of_a_cli_run_is_whole_and_verified(tmp_path):
    npz = tiny_npz(tmp_path)
    argv = ["prune", "nn2", "--data", str(npz), "--method", "grs", "--epochs", "1", "--initial-epochs", "1",
            "--seed", "1", "--tolerance", "0.9", "--max-trials", "4", "--no-eup", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    checkpoints = list((tmp_path / "a").rglob("checkpoint.weights.h5"))
    assert len(checkpoints) >= 4 and all(files.verify(path) for path in checkpoints)
    assert partials(tmp_path / "a") == []
