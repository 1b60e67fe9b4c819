import os
import re
import subprocess
import sys

from keras_grs.cli import main


def test_analyze_prints_groups_params_and_flops(capsys):
    assert main(["analyze", "cnn2"]) == 0
    out = capsys.readouterr().out
    assert "structure 32x16x32" in out
    assert "conv2   16" in out and "flatten, dense1" in out
    assert "params 10,514" in out


def test_analyze_a_saved_model(tmp_path, capsys):
    from keras_grs import models

    path = tmp_path / "m.keras"
    models.build("nn1", (50,)).save(path)
    assert main(["analyze", str(path)]) == 0
    assert "structure 32x16x8" in capsys.readouterr().out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["analyze", "no_such_model"]) == 2
    err = capsys.readouterr().err
    assert "no_such_model" in err and "nn1" in err


def test_module_entry_point_runs_a_short_demo(tmp_path, capsys):
    demo = ["demo", "--initial-epochs", "2", "--epochs", "1", "--max-trials", "4", "--out", str(tmp_path)]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # the command's own default
    result = subprocess.run([sys.executable, "-m", "keras_grs", *demo], capture_output=True, text=True, timeout=600,
                            env=env)
    assert result.returncode == 0, result.stderr
    # TensorFlow's C++ error lines (no CUDA driver; a program loaded from the cache read as text first) are off
    assert not re.search(r"^E\d{4} ", result.stderr, re.MULTILINE), result.stderr
    assert "3000 frames of 140 neurons as 12x12 images" in result.stdout
    assert "== model 1/2: nn1 32x16x8 (JGRS, keras-tuner)" in result.stdout and "== model 2/2: cnn1" in result.stdout
    assert "selected:" in result.stdout
    for name in ("compact.keras", "eup.keras", "report.md", "plots/accuracy_vs_params.png"):
        assert (tmp_path / "run" / name).exists()
    # running the demo again resumes the finished run: no new trial, same report (in this process: the entry
    # point is tested above, and a second interpreter would only import TensorFlow again)
    capsys.readouterr()
    assert main(demo) == 0
    again = capsys.readouterr().out
    assert "selected:" in again and "Trial" not in again
