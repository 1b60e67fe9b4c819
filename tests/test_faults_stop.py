"""SIGTERM (and Ctrl-C) stop a run cleanly: no traceback, the lock released, a line saying how to continue."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np

from keras_grs import datasets
from keras_grs.cli import main
from keras_grs.runlock import LOCK_FILE


def test_sigterm_stops_cleanly_and_the_run_resumes(tmp_path):
    x, y = datasets.calcium(n_neurons=20, n_frames=200, seed=0)
    (xt, yt), (xv, yv), _ = datasets.split(x, y, val=0.25, test=0.0)
    data = tmp_path / "data.npz"
    np.savez(data, x_train=xt, y_train=yt, x_val=xv, y_val=yv)
    out = tmp_path / "run"
    argv = ["prune", "nn1", "--data", str(data), "--out", str(out), "--method", "grs", "--epochs", "1",
            "--initial-epochs", "1", "--seed", "2", "--tolerance", "0.9", "--no-eup", "--max-trials", "8", "--quiet"]
    process = subprocess.Popen([sys.executable, "-m", "keras_grs", *argv], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    project = out / "tuner" / "0_nn1"
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        if any(json.loads(p.read_text())["status"] == "COMPLETED" for p in project.glob("trial_*/trial.json")):
            break
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == ("keras-grs: stopped; finished trials are kept: run the same command plus "
                                            "--resume to continue")
    assert not (out / LOCK_FILE).exists() and not (out / "report.json").exists()

    assert main([*argv, "--resume"]) == 0
    trials = [json.loads(p.read_text()) for p in project.glob("trial_*/trial.json")]
    keys = [json.loads((project / f"trial_{t['trial_id']}" / "candidate.json").read_text())["grs_key"]
            for t in trials if t["status"] == "COMPLETED"]
    assert len(keys) == len(set(keys)) and (out / "report.json").exists()
