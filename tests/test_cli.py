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


def test_module_entry_point_runs_the_demo():
    result = subprocess.run([sys.executable, "-m", "keras_grs", "demo"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "structure 32x16x8" in result.stdout and "3000 frames x 140 neurons" in result.stdout
