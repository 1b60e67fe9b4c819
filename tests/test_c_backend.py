"""Generated C: compiled (warnings are errors) and compared with Keras, for every supported layer and option."""

import re
import shutil
import subprocess

import hypothesis.strategies as st
import keras
import numpy as np
import pytest
from helpers import randomize
from hypothesis import HealthCheck, given, settings
from test_surgery import random_model

import c_backend
from keras_grs import UnsupportedLayerError, eup, models, shrink
from keras_grs.cli import main

L = keras.layers


def check(model, tmp_path, x=None, seed=0, **export_options):
    rng = np.random.default_rng(seed)
    if x is None:
        x = rng.normal(size=(6, *model.input_shape[1:])).astype("float32")
    exported = c_backend.export(model, tmp_path, **export_options)
    result = c_backend.verify(model, tmp_path, x)
    assert result.max_abs_diff <= 1e-4, f"{[op.kind for op in exported.ops]}: {result.max_abs_diff}"
    return exported, result


def seq(shape, *layers):
    model = keras.Sequential([keras.Input(shape), *layers])
    randomize(model, np.random.default_rng(1))
    return model


LAYER_CASES = {
    "dense": lambda: seq((7,), L.Dense(5, activation="relu"), L.Dense(3, activation="softmax")),
    "dense_on_sequence": lambda: seq((4, 6), L.Dense(3, activation="tanh"), L.Flatten(), L.Dense(2)),
    "sigmoid_output": lambda: seq((5,), L.Dense(4), L.Dense(1, activation="sigmoid")),
    "conv2d_valid": lambda: seq((7, 7, 2), L.Conv2D(3, 2, activation="relu"), L.Flatten(), L.Dense(2)),
    "conv2d_same_strided": lambda: seq((8, 7, 3), L.Conv2D(4, 3, strides=2, padding="same"), L.Flatten(), L.Dense(2)),
    "conv1d_valid_and_same": lambda: seq((9, 2), L.Conv1D(3, 2, activation="relu"),
                                         L.Conv1D(2, 3, strides=2, padding="same"), L.Flatten(), L.Dense(2)),
    "pool2d": lambda: seq((9, 9, 2), L.MaxPooling2D(2), L.AveragePooling2D(2, padding="same"), L.Flatten(),
                          L.Dense(2)),
    "pool1d": lambda: seq((9, 3), L.AveragePooling1D(2), L.MaxPooling1D(3, strides=2, padding="same"), L.Flatten(),
                          L.Dense(2)),
    "global_pools": lambda: seq((5, 5, 3), L.Conv2D(4, 2), L.GlobalAveragePooling2D(), L.Dense(2)),
    "global_max_1d": lambda: seq((6, 3), L.Conv1D(4, 2), L.GlobalMaxPooling1D(), L.Dense(2)),
    "batchnorm_folded": lambda: seq((6, 6, 2), L.Conv2D(3, 2), L.BatchNormalization(), L.ReLU(), L.Flatten(),
                                    L.Dense(3), L.BatchNormalization(), L.Activation("relu"), L.Dense(2)),
    "batchnorm_after_activation": lambda: seq((5,), L.Dense(4, activation="relu"), L.BatchNormalization(),
                                              L.Dense(2)),
    "standalone_activations": lambda: seq((6, 6, 2), L.MaxPooling2D(2), L.Activation("tanh"), L.Flatten(),
                                          L.Activation("sigmoid"), L.Dense(3), L.Dropout(0.5),
                                          L.Activation("softmax")),
    "training_only_layers": lambda: seq((6,), L.GaussianNoise(0.3), L.Dense(4, activation="relu"),
                                        L.GaussianDropout(0.2), L.AlphaDropout(0.1), L.ActivityRegularization(0.01),
                                        L.Dense(2)),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_every_supported_layer_matches_keras(case, tmp_path):
    exported, result = check(LAYER_CASES[case](), tmp_path)
    assert result.agreement == 1.0


def test_a_sigmoid_classifiers_classes_are_its_output_above_one_half(tmp_path):
    """One sigmoid output: the class is output > 0.5 (an argmax over one column would call every sample class 0)."""
    model = seq((5,), L.Dense(4, activation="relu"), L.Dense(1, activation="sigmoid"))
    x = np.random.default_rng(3).normal(size=(64, 5)).astype("float32")
    c_backend.export(model, tmp_path)
    predicted = (model.predict(x, verbose=0)[:, 0] > 0.5).astype(int)
    assert 0 < predicted.mean() < 1  # both classes predicted
    labels = predicted.copy()
    labels[:16] = 1 - labels[:16]  # a quarter wrong
    result = c_backend.verify(model, tmp_path, x, labels)
    assert result.agreement == 1.0 and result.keras_accuracy == result.c_accuracy == 0.75


def test_a_regression_is_compared_without_classes(tmp_path):
    """Targets that are not classes (an autoencoder's): the outputs are compared, no class agreement or accuracy
    is made up from them."""
    model = seq((6,), L.Dense(4, activation="relu"), L.Dense(6))
    x = np.random.default_rng(4).normal(size=(16, 6)).astype("float32")
    c_backend.export(model, tmp_path)
    result = c_backend.verify(model, tmp_path, x, x)
    assert result.max_abs_diff <= 1e-4
    assert result.agreement is None and result.keras_accuracy is None and result.c_accuracy is None


def test_a_regression_on_whole_number_targets_is_compared_without_classes(tmp_path):
    """Counts or ages are whole numbers, but a model compiled with a regression loss predicts values: its C is not
    given class agreement or accuracies made up from the targets."""
    model = seq((6,), L.Dense(4, activation="relu"), L.Dense(1))
    model.compile(loss="mae")
    x = np.random.default_rng(4).normal(size=(16, 6)).astype("float32")
    c_backend.export(model, tmp_path)
    result = c_backend.verify(model, tmp_path, x, np.arange(16) % 3)
    assert result.max_abs_diff <= 1e-4
    assert result.agreement is None and result.keras_accuracy is None and result.c_accuracy is None


def test_batch_normalization_is_folded_when_it_directly_follows(tmp_path):
    exported, _ = check(LAYER_CASES["batchnorm_folded"](), tmp_path)
    assert [op.kind for op in exported.ops] == ["conv", "dense", "dense"]
    exported, _ = check(LAYER_CASES["batchnorm_after_activation"](), tmp_path / "b")
    assert [op.kind for op in exported.ops] == ["dense", "affine", "dense"]


@pytest.mark.parametrize("name, shape", [("nn1", (140,)), ("nn2", (140,)), ("cnn1", (12, 12, 1)),
                                         ("cnn2", (12, 12, 1))])
def test_seed_models_original_pruned_and_thresholded_with_gcc_and_clang(name, shape, tmp_path):
    model = models.build(name, shape)
    randomize(model, np.random.default_rng(2))
    x = np.random.default_rng(3).normal(size=(8, *shape)).astype("float32")
    check(model, tmp_path / "original", x)
    pruned = shrink(model, {group: [0, 1] for group in ("dense1", "conv1") if group in [l.name for l in model.layers]})
    check(pruned, tmp_path / "pruned", x)
    y = np.argmax(model.predict(x, verbose=0), axis=1)
    sparse, info = eup.threshold(pruned, (x, y), tolerance=0.5, mode="absolute", init=0.3, step=0.3)
    exported, _ = check(sparse, tmp_path / "thresholded", x)
    if info.threshold is not None and name.startswith("nn"):
        assert "dense_sparse" in [op.kind for op in exported.ops]
    if shutil.which("clang"):
        result = c_backend.verify(sparse, tmp_path / "thresholded", x, cc="clang")
        assert result.max_abs_diff <= 1e-4


def test_sparse_options_choose_the_storage(tmp_path):
    model = seq((8,), L.Dense(6, activation="relu"), L.Dense(2))
    kernel, bias = model.layers[0].get_weights()
    kernel[np.abs(kernel) < 0.6] = 0.0
    model.layers[0].set_weights([kernel, bias])
    for option, kinds in (("never", ["dense", "dense"]), ("always", ["dense_sparse", "dense_sparse"])):
        exported, _ = check(model, tmp_path / option, sparse=option)
        assert [op.kind for op in exported.ops] == kinds
    density = np.count_nonzero(kernel) / kernel.size
    exported, _ = check(model, tmp_path / "auto")
    assert (exported.ops[0].kind == "dense_sparse") == (density <= 0.5)


def test_int8_reports_its_accuracy_change(tmp_path):
    from keras_grs import datasets

    x, y = datasets.calcium(n_neurons=30, n_frames=400, seed=3, difficulty="easy")
    model = models.build("nn1", (30,))
    model.fit(x, y, epochs=10, verbose=0)
    c_backend.export(model, tmp_path, precision="int8", calibration=x[:200])
    result = c_backend.verify(model, tmp_path, x[200:], y[200:])
    assert result.keras_accuracy is not None and abs(result.accuracy_change) <= 0.05
    assert result.agreement >= 0.9
    assert result.max_abs_diff > 0  # int8 is not bit-exact
    with pytest.raises(ValueError, match="calibration"):
        c_backend.export(model, tmp_path / "no", precision="int8")


def test_names_become_safe_c_identifiers(tmp_path):
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="int"), L.Dense(3, name="a-b"),
                              L.Dense(2, name="a_b")], name="9 lives *\n#include <evil.h>")
    exported, _ = check(model, tmp_path)
    actors = [op.actor for op in exported.ops]
    assert len(set(actors)) == 3 and all(a.replace("_", "a").isalnum() for a in actors)
    assert exported.name[0].isalpha()
    for path in tmp_path.iterdir():
        if path.suffix in (".c", ".h"):
            assert "#include <evil.h>" not in path.read_text()


def test_unsupported_layers_and_activations_are_named(tmp_path):
    with pytest.raises(UnsupportedLayerError, match="'elu'"):
        c_backend.export(seq((4,), L.Dense(3, activation="elu"), L.Dense(2)), tmp_path)
    with pytest.raises(UnsupportedLayerError, match="LSTM"):
        c_backend.export(keras.Sequential([keras.Input((3, 2)), L.LSTM(2), L.Dense(2)]), tmp_path)
    with pytest.raises(UnsupportedLayerError, match="plain ReLU"):
        c_backend.export(seq((4,), L.Dense(3), L.ReLU(max_value=4.0), L.Dense(2)), tmp_path)


def test_the_header_declares_exactly_the_api(tmp_path):
    exported, _ = check(models.build("nn2", (10,)), tmp_path)
    header = (tmp_path / "nn2.h").read_text()
    assert "int nn2_init(void);" in header and "int nn2_infer(const float *input, float *output);" in header
    assert "void nn2_terminate(void);" in header
    assert "int nn2_context_init(nn2_context_type *context);" in header
    assert "int nn2_context_infer(nn2_context_type *context, const float *input, float *output);" in header
    assert "#define NN2_CONTEXT_SIZE sizeof(nn2_context_type)" in header
    assert len(re.findall(r"^\w[\w ]*\**\w+\(", header, flags=re.MULTILINE)) == 5  # nothing else is declared
    assert "static const float" in (tmp_path / "nn2_dense1.c").read_text()


@pytest.mark.parametrize("name, shape", [("nn1", (140,)), ("cnn1", (12, 12, 1))])
def test_pi_zero_build_runs_under_qemu(name, tmp_path, shape):
    model = models.build(name, shape)
    randomize(model, np.random.default_rng(4))
    x = np.random.default_rng(5).normal(size=(5, *shape)).astype("float32")
    c_backend.export(model, tmp_path, target="pi-zero")
    result = c_backend.verify(model, tmp_path, x, target="pi-zero")
    assert result.max_abs_diff <= 1e-4
    elf = subprocess.run(["file", str(tmp_path / name)], capture_output=True, text=True).stdout
    assert "ARM" in elf


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_random_models_match_keras(tmp_path_factory, data):
    model, remove, seed = random_model(data.draw)
    randomize(model, np.random.default_rng(seed))
    model = shrink(model, remove)
    check(model, tmp_path_factory.mktemp("random"), seed=seed)


def test_cli_export_c_with_verification(tmp_path, capsys):
    from keras_grs import datasets

    x, y = datasets.calcium(n_neurons=20, n_frames=200, seed=0, difficulty="easy")
    np.savez(tmp_path / "d.npz", x_train=x[:150], y_train=y[:150], x_val=x[150:], y_val=y[150:])
    path = tmp_path / "m.keras"
    models.build("nn1", (20,)).save(path)
    assert main(["export-c", str(path), str(tmp_path / "c"), "--verify", str(tmp_path / "d.npz")]) == 0
    assert "verified on 50 validation samples" in capsys.readouterr().out
    assert main(["export-c", str(path), str(tmp_path / "c8"), "--int8", "--verify", str(tmp_path / "d.npz")]) == 0
    assert main(["export-c", str(path), str(tmp_path / "c9"), "--int8"]) == 2
    assert "calibrate" in capsys.readouterr().err
