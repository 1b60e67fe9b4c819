"""keras-grs prune / report end to end on tiny data, and every bad input refused with nothing written."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_grs import datasets, models
from keras_grs.cli import main

TINY = ["--method", "rrs", "--epochs", "1", "--initial-epochs", "3", "--seed", "1", "--tolerance", "0.95",
        "--max-trials", "5"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    x, y = datasets.calcium(n_neurons=20, n_frames=300, seed=0, difficulty="easy")
    (xt, yt), (xv, yv), (xs, ys) = datasets.split(x, y, val=0.25, test=0.15)
    path = tmp_path_factory.mktemp("data") / "data.npz"
    np.savez(path, x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys)
    return path


def arrays(npz):
    with np.load(npz) as data:
        return {k: data[k] for k in data.files}


def test_prune_writes_models_report_and_plots_then_report_rerenders(npz, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["prune", "nn2", "--data", str(npz), "--out", str(out), *TINY]) == 0
    printed = capsys.readouterr().out
    assert "Trial" in printed and "*nn2" in printed  # progress lines, then the summary
    for name in ("compact.keras", "eup.keras", "report.json", "report.md", "run.json", "plots/accuracy_vs_params.png"):
        assert (out / name).exists(), name
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["method"] == "rrs" and report["models"][0]["name"] == "nn2"
    # the selected model's C is written and checked against Keras
    assert report["c_export"]["max_abs_diff"] <= 1e-4 and report["c_export"]["model"] == "eup"
    assert (out / "c" / "nn2.h").exists() and "## C code" in (out / "report.md").read_text()

    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").read_text().startswith("# keras-grs pruning report")


def test_a_saved_model_file_is_accepted(npz, tmp_path):
    path = tmp_path / "mine.keras"
    models.build("nn2", (20,)).save(path)
    assert main(["prune", str(path), "--data", str(npz), "--out", str(tmp_path / "run"), "--no-eup", *TINY]) == 0
    assert not (tmp_path / "run" / "eup.keras").exists()


def write(tmp_path, **arrays_):
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays_)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("y_val"), "lacks y_val"),
        (lambda a: a.update(y_train=a["y_train"][:-3]), "training data: x has"),
        (lambda a: a["x_val"].__setitem__((0, 0), np.nan), "validation data: x holds 1 NaN"),
        (lambda a: a["x_train"].__setitem__((1, 1), np.inf), "training data: x holds 1 NaN or infinite"),
        (lambda a: a.update(y_test=a["y_test"] - 1), "test data: labels range over -1"),
        (lambda a: a.update(x_val=a["x_val"][:, :19]), "do not fit"),
        (lambda a: a.pop("y_test"), "only one of x_test and y_test"),
    ],
)
def test_bad_data_is_refused_and_nothing_is_written(npz, tmp_path, capsys, change, message):
    data = arrays(npz)
    change(data)
    path = write(tmp_path, **data)
    out = tmp_path / "out"
    assert main(["prune", "nn2", "--data", str(path), "--out", str(out), *TINY]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_one_hot_labels_serve_builtin_models(npz, tmp_path):
    data = arrays(npz)
    for key in ("y_train", "y_val", "y_test"):
        data[key] = np.eye(2, dtype="float32")[data[key]]
    path = write(tmp_path, **data)
    assert main(["prune", "nn2", "--data", str(path), "--out", str(tmp_path / "run"), "--no-eup", *TINY]) == 0
    assert (tmp_path / "run" / "report.json").exists()


def test_labels_that_do_not_fit_a_model_file(npz, tmp_path, capsys):
    path = tmp_path / "three.keras"
    models.build("nn2", (20,), num_classes=3).save(path)
    data = arrays(npz)
    data["y_train"][0] = 5
    bad = write(tmp_path, **data)
    assert main(["prune", str(path), "--data", str(bad), "--out", str(tmp_path / "o"), *TINY]) == 2
    assert "labels range over 0..5" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_unreadable_model_file_and_bad_options(npz, tmp_path, capsys):
    broken = tmp_path / "broken.keras"
    broken.write_text("not a model")
    out = tmp_path / "o"
    assert main(["prune", str(broken), "--data", str(npz), "--out", str(out), *TINY]) == 2
    assert "cannot read model file" in capsys.readouterr().err
    assert main(["prune", "nn2", "--data", str(tmp_path / "none.npz"), "--out", str(out), *TINY]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["prune", "nn2", "--data", str(npz), "--out", str(out), *TINY, "--tolerance", "1.2"]) == 2
    assert "tolerance" in capsys.readouterr().err
    assert main(["prune", "nn2", "--data", str(npz), "--out", str(out), *TINY, "--phases", "0.5:3"]) == 2
    assert "only applies to --method jgrs" in capsys.readouterr().err
    assert not out.exists()


def test_a_non_empty_directory_needs_resume(npz, tmp_path, capsys):
    out = tmp_path / "used"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert main(["prune", "nn2", "--data", str(npz), "--out", str(out), *TINY]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["prune", "nn2", "--data", str(npz), "--out", str(out), *TINY, "--resume"]) == 2
    assert "not a keras-grs run" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["precious.txt"]


def test_a_killed_run_resumes_with_the_same_settings_only(npz, tmp_path, capsys):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "keras_grs", "prune", "nn1", "--data", str(npz), "--out", str(out),
               "--method", "grs", "--epochs", "1", "--initial-epochs", "2", "--seed", "2", "--tolerance", "0.9",
               "--no-eup", "--max-trials", "12", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    project = out / "tuner" / "0_nn1"
    deadline = time.time() + 300
    while time.time() < deadline:
        done = [p for p in project.glob("trial_*/trial.json") if json.loads(p.read_text())["status"] == "COMPLETED"]
        if len(done) >= 4:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = {json.loads(p.read_text())["trial_id"]: json.loads(p.read_text())["score"]
              for p in project.glob("trial_*/trial.json") if json.loads(p.read_text())["status"] == "COMPLETED"}
    assert len(before) >= 4 and not (out / "report.json").exists()

    # other settings are refused, naming what changed
    changed = [c if c != "0.9" else "0.8" for c in command[3:]]
    assert main(changed[:changed.index("--quiet")] + ["--quiet", "--resume"]) == 2
    assert "tolerance was 0.9, now 0.8" in capsys.readouterr().err

    assert main(command[3:] + ["--resume"]) == 0
    trials = [json.loads(p.read_text()) for p in project.glob("trial_*/trial.json")]
    for trial in trials:
        if trial["trial_id"] in before:
            assert trial["score"] == before[trial["trial_id"]]
    keys = [json.loads((project / f"trial_{t['trial_id']}" / "candidate.json").read_text())["grs_key"]
            for t in trials if t["status"] == "COMPLETED"]
    assert len(keys) == len(set(keys))
    assert (out / "report.json").exists()


def test_a_models_search_does_not_depend_on_the_searches_run_before_it(tmp_path):
    """Each model's search starts from the same random state: the second model's initial training is the same
    whether the first model's search ran 2 trials or 5 (they consume different amounts of the global state)."""
    x, y = datasets.calcium(n_neurons=64, n_frames=300, seed=2, image=True, difficulty="easy")
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.3, test=0.0)
    data = tmp_path / "images.npz"
    np.savez(data, x_train=xt, y_train=yt, x_val=xv, y_val=yv)

    def second_initial_score(max_trials):
        out = tmp_path / f"run{max_trials}"
        assert main(["prune", "nn1", "cnn1", "--data", str(data), "--out", str(out), "--method", "jgrs", "--epochs",
                     "1", "--initial-epochs", "3", "--seed", "0", "--no-eup", "--max-trials",
                     str(max_trials), "--quiet"]) == 0
        return json.loads((out / "report.json").read_text())["models"][1]["path"][0]["objective"]

    assert second_initial_score(2) == second_initial_score(5)
