"""The whole job on a residual model: search, EUP, report and C (a dataflow graph with a merge actor) on graphs."""

import json

import keras
import numpy as np

from keras_grs import cli, count_params


def residual_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    y = keras.layers.Conv2D(8, 3, padding="same", name="branch")(x)
    y = keras.layers.BatchNormalization(name="bn")(y)
    x = keras.layers.Activation("relu")(keras.layers.Add(name="add")([x, y]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, activation="relu", name="head")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(x)
    model = keras.Model(inputs, outputs, name="resnetlet")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def test_the_cli_prunes_a_residual_model_and_writes_c_that_matches_keras(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 8, 8, 1)).astype("float32")
    y = (x[:, :4].mean(axis=(1, 2, 3)) > 0).astype("int32")
    np.savez(tmp_path / "d.npz", x_train=x[:160], y_train=y[:160], x_val=x[160:210], y_val=y[160:210],
             x_test=x[210:], y_test=y[210:])
    residual_model().save(tmp_path / "m.keras")
    out = tmp_path / "run"
    code = cli.main(["prune", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"), "--out", str(out),
                     "--method", "rrs", "--epochs", "1", "--initial-epochs", "2", "--max-trials", "4", "--seed", "0",
                     "--quiet", "--tolerance", "0.5"])
    printed = capsys.readouterr().out
    assert code in (0, 3), printed
    report = json.loads((out / "report.json").read_text())
    record = report["c_export"]
    assert "skipped" not in record, record
    assert "merge" in record["actors"]  # the shortcut's Add is an actor with two input FIFOs
    assert record["max_abs_diff"] <= 1e-4 and record["agreement"] == 1.0
    assert (out / "c" / f"{record['name']}.c").exists()
    compact = keras.models.load_model(out / "compact.keras")
    sparse = keras.models.load_model(out / "eup.keras")
    assert count_params(compact) <= count_params(residual_model())
    assert report["models"][0]["eup_nonzero_params"] <= count_params(sparse)
    assert "## C code" in (out / "report.md").read_text()
