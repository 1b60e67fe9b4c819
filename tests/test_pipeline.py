"""prune() end to end on tiny data, and the report's figures recomputed from the saved models."""

import json

import keras
import numpy as np
import pytest

import keras_grs
from keras_grs import count_flops, count_params, datasets, models
from keras_grs.guard import split_guard
from keras_grs.scoring import accuracy


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    keras.utils.set_random_seed(0)
    x, y = datasets.calcium(n_neurons=30, n_frames=500, seed=1, image=False, difficulty="easy")
    train, validation, test = datasets.split(x, y, val=0.25, test=0.15)
    candidates = [models.build("nn2", (30,)), models.build("nn1", (30,))]
    result = keras_grs.prune(candidates, *train, validation, test_data=test, method="rrs", tolerance=0.97,
                             epochs=1, initial_epochs=8, directory=tmp_path_factory.mktemp("tuner"), seed=3,
                             selection="minflops", max_trials=6, verbose=0)
    out = result.save(tmp_path_factory.mktemp("run"))
    searched, _ = split_guard(validation, 0.4, seed=3)  # the default acceptance holds 40% back as the guard
    return result, out, searched, test


def test_one_result_per_model_and_the_selection_follows_the_criterion(run):
    result, _, _, _ = run
    assert [r.name for r in result.results] == ["nn2", "nn1"]
    flops = [r.flops for r in result.results]
    assert result.selected == int(np.argmin(flops)) or flops[0] == flops[1]
    assert result.model is result.results[result.selected].model


def test_report_figures_match_the_saved_models(run):
    result, out, validation, test = run
    report = json.loads((out / "report.json").read_text())
    chosen = report["models"][report["selection"]["index"]]
    compact = keras.models.load_model(out / "compact.keras")
    sparse = keras.models.load_model(out / "eup.keras")
    assert chosen["params"] == count_params(compact) and chosen["flops"] == count_flops(compact)
    assert chosen["structure"] == str(keras_grs.analyze(compact))
    assert chosen["val_accuracy"] == pytest.approx(accuracy(compact, *validation))
    assert chosen["test_accuracy"] == pytest.approx(accuracy(compact, *test))
    assert chosen["eup_nonzero_params"] == count_params(sparse, nonzero=True)
    assert chosen["eup_nonzero_flops"] == count_flops(sparse, nonzero=True)
    assert chosen["eup_test_accuracy"] == pytest.approx(accuracy(sparse, *test))
    for m in report["models"]:
        assert m["pci"] == pytest.approx(100 * (1 - m["params"] / m["initial_params"]), abs=1e-3)
        assert m["fci"] == pytest.approx(100 * (1 - m["flops"] / m["initial_flops"]), abs=1e-3)
        assert m["al"] == pytest.approx(100 * (m["initial_test_accuracy"] - m["test_accuracy"]), abs=1e-3)
        assert m["al_on"] == "test"
        (final,) = [row for row in m["path"] if row["final"]]
        assert m["path"][0]["phase"] == "initial" and final["structure"] == m["structure"]
        assert m["trials"] >= len(m["path"])
        # the compact model is valid: within tolerance of the initial score on validation and on the guard
        assert final["objective"] >= 0.97 * m["path"][0]["objective"]
        assert final["guard"] >= 0.97 * m["path"][0]["guard"]


def test_report_files_and_plots(run):
    _, out, _, _ = run
    text = (out / "report.md").read_text()
    assert "Selected:" in text and "| nn2 |" in text and "plots/accuracy_vs_params.png" in text
    for name in ("accuracy_vs_params.png", "widths_0_nn2.png", "widths_1_nn1.png"):
        data = (out / "plots" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert not list(out.rglob(".*partial*"))


def test_bad_input_is_refused_before_training(tmp_path):
    model = models.build("nn2", (10,))
    x = np.zeros((20, 10), "float32")
    y = np.zeros(20, "int32")
    with pytest.raises(ValueError, match="labels range over 5..5"):
        keras_grs.prune(model, x, y + 5, (x, y), directory=tmp_path / "a")
    with pytest.raises(ValueError, match="do not fit"):
        keras_grs.prune(model, np.zeros((20, 11), "float32"), y, (x, y), directory=tmp_path / "b")
    with pytest.raises(ValueError, match="needs test_data"):
        keras_grs.prune(model, x, y, (x, y), selection="maxtestacc", directory=tmp_path / "c")
    assert not any(tmp_path.iterdir())

