"""The Pi Zero latency estimate: its shape, its error against the ARMv6 meter, and ``cost="pi-zero"`` in the search,
the trials, the selection and the run's settings."""

import json

import keras
import keras_tuner
import numpy as np
import pytest
from keras_tuner.src.engine import trial as trial_module

import c_backend
import keras_grs
from c_backend import armv6
from keras_grs import GRSOracle, estimate_latency, models, select, shrink
from keras_grs.cli import main
from keras_grs.inputs import SettingError
from keras_grs.latency import coefficients
from keras_grs.layers import UnsupportedLayerError
from keras_grs.search import GroupSpec, Outcome, make_search, run

Status = trial_module.TrialStatus
# The meter's measured error bound for compact models (docs/c_backend.md, benchmarks/results/latency_model.md).
STATED_ERROR = 0.15


def mlp(units, inputs=40, classes=3):
    return keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(units, activation="relu"),
                             keras.layers.Dense(classes, activation="softmax")])


@pytest.mark.parametrize("dtype", ["float32", "int8"])
def test_the_estimate_grows_with_width(dtype):
    times = [estimate_latency(mlp(units), dtype=dtype).ms for units in (1, 4, 8, 9, 16, 32, 64)]
    assert all(a < b for a, b in zip(times, times[1:])), times
    cnn = models.build("cnn1", (12, 12, 1))
    smaller = shrink(cnn, {"conv1": list(range(10)), "dense1": list(range(8))})
    assert estimate_latency(smaller, dtype=dtype).ms < estimate_latency(cnn, dtype=dtype).ms


def test_the_estimate_breaks_down_by_layer_and_skips_layers_without_actors():
    estimate = estimate_latency(models.build("nn1", (140,)))
    assert [a.layer for a in estimate.layers] == ["dense1", "dense2", "dense3", "output", "output"]
    assert [a.kind for a in estimate.layers][-1] == "exp"  # the softmax's expf calls
    assert set(estimate.by_layer()) == {"dense1", "dense2", "dense3", "output"}  # no Dropout
    fixed = (estimate.graph_cycles + estimate.memory_cycles) / 1e6  # nn1's 21 KB of weights miss the 16 KB cache
    assert estimate.memory_cycles > 0
    assert estimate.ms == pytest.approx(sum(estimate.by_layer().values()) + fixed)
    assert estimate.layers[0].features["macs"] == 140 * 32


def test_a_graph_with_merge_layers_is_priced_layer_by_layer():
    """Add and Concatenate take several inputs: each is one elementwise actor over its output."""
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(4, 1, name="b")(inputs)
    added = keras.layers.Add(name="add")([a, b])
    joined = keras.layers.Concatenate(name="join")([added, a])
    outputs = keras.layers.Dense(2, activation="softmax", name="out")(keras.layers.Flatten()(joined))
    latency = estimate_latency(keras.Model(inputs, outputs))
    merges = {actor.layer: actor for actor in latency.layers if actor.layer in ("add", "join")}
    assert merges["add"].features["elements"] == 6 * 6 * 4
    assert merges["join"].features["elements"] == 6 * 6 * 8
    assert latency.ms > sum(a.ms for a in latency.layers if a.layer in ("a", "b"))


def test_each_int8_kernel_variant_is_priced_with_its_own_features(tmp_path):
    # one layer per variant the C backend picks; the estimate must name the same variant as the exported ops
    L = keras.layers
    model = keras.Sequential([
        keras.Input((9, 15, 1)),
        # patch of 4 values: the two-position kernel (strides 2 along a row: not its column-word form)
        L.Conv2D(8, 2, strides=(1, 2), activation="relu", name="pairs"),
        L.Conv2D(8, 2, activation="relu", name="walk"),  # inside, rows of 16 bytes: read in place
        L.MaxPooling2D(2, name="words"),  # 8 channels: 4 at a time
        L.Conv2D(3, 2, padding="same", activation="relu", name="gather"),  # padded: patches gathered
        L.AveragePooling2D(2, name="average"),
        L.Flatten(),
        L.Dense(5, activation="relu", name="fast"),  # a ReLU: SMMLAR + SSAT
        L.Dense(3, activation="softmax", name="exact"),  # linear before the softmax: exact requantization
    ])
    rng = np.random.default_rng(0)
    exported = c_backend.export(model, tmp_path, name="v", target="pi-zero", precision="int8",
                                calibration=rng.normal(size=(32, 9, 15, 1)).astype("float32"))
    ops = {op.layer: op for op in exported.ops if op.kind in ("conv_int8", "dense_int8", "pool_int8")}
    estimate = estimate_latency(model, dtype="int8")
    actors = {a.layer: a for a in estimate.layers if a.kind in ("conv", "dense", "pool")}
    for name in ("pairs", "walk", "gather", "fast", "exact"):
        f, op = actors[name].features, ops[name]
        fast = f["fast_outputs"] > 0 or f.get("pairs", 0) > 0  # the two-position kernel requantizes the fast way
        assert (fast, f["exact_outputs"] > 0) == (op.fast_requantize, not op.fast_requantize), name
        if op.kind == "conv_int8":
            assert (f["pairs"] > 0, f["window_rows"] > 0, f["gathered"] > 0) == \
                (op.small_patch, op.row_walk, not op.small_patch and not op.row_walk), name
    assert [ops[n].small_patch for n in ("pairs", "walk", "gather")] == [True, False, False]
    assert not ops["pairs"].columns and actors["pairs"].features["column_runs"] == 0
    assert ops["walk"].row_walk and ops["fast"].fast_requantize and not ops["exact"].fast_requantize
    assert actors["pairs"].features["groups"] == 0 and actors["pairs"].features["pair_filters"] == 8 * (8 * 7 // 2)
    assert ops["words"].words and actors["words"].features["word_reads"] == 3 * 3 * 8 and not \
        actors["words"].features["reads"]
    assert actors["average"].features["avg_outputs"] == 3 and actors["average"].features["word_reads"] == 0
    # each actor is priced with the coefficients of its kind at int8, feature by feature
    table = coefficients()["int8"]
    for actor in actors.values():
        names = keras_grs.latency.features("int8")[actor.kind]
        assert actor.cycles == pytest.approx(sum(c * actor.features[n] for c, n in zip(table[actor.kind], names)))
    assert keras_grs.latency.features("int8")["dense"] != keras_grs.latency.features("float32")["dense"]


def test_the_int8_column_word_kernel_is_priced_with_its_own_features(tmp_path):
    model = keras.Sequential([keras.Input((9, 8, 1)), keras.layers.Conv2D(8, 2, activation="relu", name="columns"),
                              keras.layers.Flatten(), keras.layers.Dense(2, name="out")])
    exported = c_backend.export(model, tmp_path, name="c", target="pi-zero", precision="int8",
                                calibration=np.random.default_rng(0).normal(size=(32, 9, 8, 1)).astype("float32"))
    op = next(op for op in exported.ops if op.layer == "columns")
    features = next(a for a in estimate_latency(model, dtype="int8").layers if a.layer == "columns").features
    assert op.small_patch and op.columns
    # rows of 7 positions: runs of 4 and 3; 8 rows; 8 column words per row
    assert (features["column_runs"], features["column_filters"], features["column_outputs"],
            features["column_cells"]) == (16, 16 * 8, 8 * 7 * 8, 8 * 8)
    assert features["pairs"] == features["groups"] == features["gathered"] == 0


def int8_pooling(pool, side, padding, channels=4):
    return keras.Sequential([keras.Input((side, side, channels)),
                             pool(3, strides=1, padding=padding, name="pool"), keras.layers.Flatten(),
                             keras.layers.Dense(2, name="out")])


def test_an_int8_pooling_whose_windows_cross_the_padding_prices_its_checked_loop_and_divisions(tmp_path):
    # 9x9 outputs of 3x3 windows either way: 'same' on 9x9 (32 windows cross the padding), 'valid' on 11x11 (none)
    rng = np.random.default_rng(0)
    found = {}
    for padding, side in (("same", 9), ("valid", 11)):
        model = int8_pooling(keras.layers.AveragePooling2D, side, padding)
        exported = c_backend.export(model, tmp_path / padding, name="p", target="pi-zero", precision="int8",
                                    calibration=rng.normal(size=(16, side, side, 4)).astype("float32"))
        op = next(op for op in exported.ops if op.kind == "pool_int8")
        estimate = estimate_latency(model, dtype="int8")
        found[padding] = op, next(a for a in estimate.layers if a.layer == "pool"), estimate.cycles
    (same_op, same, same_cycles), (valid_op, valid, valid_cycles) = found["same"], found["valid"]
    assert not same_op.inside and valid_op.inside
    f = same.features
    # the C loop over 81 outputs x 4 channels: corner windows read 4 cells, other edge windows 6, inner ones 9
    assert f["checked_reads"] == 4 * (25 * 25) and f["reads"] == 0
    assert f["skipped_rows"] == 4 * (2 * 9) and f["skipped_cells"] == 4 * (25 * 2)
    assert f["checked_reads"] + 3 * f["skipped_rows"] + f["skipped_cells"] == 4 * 81 * 9
    assert f["divisions"] == f["avg_outputs"] == 4 * 81  # the count varies: a library division per output
    g = valid.features
    assert g["reads"] == 4 * 81 * 9 and g["checked_reads"] == g["skipped_rows"] == g["skipped_cells"] == 0
    assert g["divisions"] == 0 and g["avg_outputs"] == 4 * 81  # a constant count: divided by multiplying
    # as many outputs, fewer cells read, yet dearer: the checked loop and the divisions (the meter: 1.7x)
    assert same.cycles > 1.3 * valid.cycles and same_cycles > valid_cycles
    # a max pooling over 4 channels compares words; crossing the padding checks every cell of every window
    words = {a.layer: a.features for a in estimate_latency(
        int8_pooling(keras.layers.MaxPooling2D, 9, "same"), dtype="int8").layers}["pool"]
    assert words["word_reads"] == 25 * 25 and words["word_checks"] == 81 * 9 and words["reads"] == 0


@pytest.mark.parametrize("layer", [keras.layers.DepthwiseConv2D(3), keras.layers.SeparableConv2D(4, 3),
                                   keras.layers.Conv2D(6, 3, groups=3)])
def test_an_int8_estimate_refuses_the_convolutions_int8_export_refuses(tmp_path, layer):
    # c_backend has no int8 depthwise kernel: the export refuses these layers, and so does the estimate, naming them
    model = keras.Sequential([keras.Input((6, 6, 3)), layer, keras.layers.Flatten(), keras.layers.Dense(2)])
    calibration = np.zeros((4, 6, 6, 3), "float32")
    with pytest.raises(UnsupportedLayerError):
        c_backend.export(model, tmp_path, name="d", target="pi-zero", precision="int8", calibration=calibration)
    with pytest.raises(ValueError, match=f"layer '{layer.name}'.*no int8 kernel.*dtype='float32'"):
        estimate_latency(model, dtype="int8")
    assert estimate_latency(model).cycles > 0


def test_a_small_patch_float_convolution_is_priced_as_the_grouped_kernel(tmp_path):
    L = keras.layers
    model = keras.Sequential([
        keras.Input((11, 11, 1)),
        L.Conv2D(8, 2, activation="relu", name="windows"),  # 10x10 outputs, patch of 4: the grouped kernel
        L.MaxPooling2D(3, name="fused"),  # 3x3 windows inside the output: a group of 9 positions
        L.Conv2D(5, 1, name="rows"),  # 1x1 over 8 channels: groups of 4 positions in a row
        L.Flatten(),
        L.Dense(3, activation="softmax", name="out"),
    ])
    exported = c_backend.export(model, tmp_path, name="g", target="pi-zero")
    ops = {op.layer: op for op in exported.ops}
    assert (ops["windows"].group, ops["rows"].group) == (9, 4)
    layers = {a.layer: a.features for a in estimate_latency(model).layers}
    windows, rows = layers["windows"], layers["rows"]
    assert (windows["group_macs"], windows["group_weights"], windows["group_outputs"], windows["group_cells"]) == \
        (9 * 9 * 4 * 8, 9 * 8 * 5, 9 * 9 * 8, 9 * 9 * 4)
    assert rows["group_macs"] == 12 * 8 * 5 and rows["group_cells"] == 12 * 8  # 9 positions: 3 groups of 4
    # one filter per pass where the group's registers are too many for two (c_backend.ir.filters_together)
    assert (ops["windows"].together, windows["group_passes"], rows["group_passes"]) == (1, 9 * 8, 3 * 5)
    assert ops["windows"].together == c_backend.ir.filters_together(9, 4, 8)
    assert c_backend.ir.filters_together(4, 4, 10) == 2  # compact cnn1's conv1: 8 accumulators
    assert windows["macs"] == windows["gathered"] == rows["macs"] == 0


def test_a_float_pooling_the_export_fuses_is_priced_inside_its_convolution(tmp_path, monkeypatch):
    L = keras.layers
    model = keras.Sequential([
        keras.Input((11, 11, 4)),  # a patch of 16 values: the patch kernel
        L.Conv2D(8, 2, activation="relu", name="conv"),  # 10x10 outputs
        L.MaxPooling2D(3, name="fused"),  # 3x3 windows that do not overlap: row and column 9 are never computed
        L.Conv2D(4, 2, activation="relu", name="conv2"),
        L.MaxPooling2D(2, strides=1, name="overlap"),  # overlapping windows: a pooling actor of its own
        L.Flatten(),
        L.Dense(3, activation="softmax", name="out"),
    ])
    exported = c_backend.export(model, tmp_path, name="f", target="pi-zero")
    estimate = estimate_latency(model)
    # the estimate makes the actors the export makes, layer by layer
    assert [(op.layer, op.kind) for op in exported.ops] == [(a.layer, a.kind) for a in estimate.layers
                                                              if a.kind != "exp"]
    assert [a.layer for a in estimate.layers if a.kind == "pool"] == ["overlap"]
    conv = estimate.layers[0].features
    assert conv["macs"] == 9 * 9 * 16 * 8 and conv["outputs"] == 9 * 9 * 8  # covered outputs only
    assert conv["max_folds"] == (81 - 9) * 8 and conv["pooled_outputs"] == 9 * 8  # the ReLU after the max
    assert estimate.layers[1].features["max_folds"] == 0
    # priced as before the fusion (a pooling actor, every convolution output), the estimate is higher, as the
    # meter measured (cnn1: 122,036 -> 109,867 ARMv6 instructions)
    fused = {m.name: estimate_latency(m).cycles for m in (model, models.build("cnn1", (12, 12, 1)))}
    monkeypatch.setattr(c_backend.ir, "fused_convolutions", lambda model: {})
    unfused = estimate_latency(model)
    assert [a.layer for a in unfused.layers if a.kind == "pool"] == ["fused", "overlap"]
    assert fused[model.name] < unfused.cycles
    assert fused["cnn1"] < estimate_latency(models.build("cnn1", (12, 12, 1))).cycles


def test_bad_target_and_dtype_are_named():
    model = mlp(4)
    with pytest.raises(ValueError, match="choose one of pi-zero"):
        estimate_latency(model, target="esp32")
    with pytest.raises(ValueError, match="choose one of float32, int8"):
        estimate_latency(model, dtype="float16")
    assert coefficients()["meta"]["target"] == "pi-zero"


@pytest.mark.skipif(bool(armv6.missing_tools()), reason="make c-toolchains installs the ARM tools")
@pytest.mark.parametrize("name, shape, remove", [
    ("nn1", (140,), {"dense1": 24, "dense2": 12, "dense3": 6}),
    ("cnn1", (12, 12, 1), {"conv1": 22, "conv2": 10, "dense1": 24, "dense2": 13, "dense3": 6}),  # pooling fused
])
def test_the_estimate_is_within_its_stated_error_of_the_meter(tmp_path, name, shape, remove):
    # the compact models of benchmarks/c_armv6.py, random weights, one inference metered under qemu
    model = shrink(models.build(name, shape), {g: list(range(n)) for g, n in remove.items()})
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(scale=0.3, size=w.shape).astype("float32") for w in model.get_weights()])
    c_backend.export(model, tmp_path, name=name, target="pi-zero")
    executable = armv6.build_dir(tmp_path)
    rng.normal(size=(1, *shape)).astype("<f4").tofile(tmp_path / "in.bin")
    metered = armv6.measure(executable, [tmp_path / "in.bin", tmp_path / "out.bin"],
                            window=(f"{name}_context_infer", "main"))
    cycles = armv6.estimate_cycles(metered)["cycles"]
    assert abs(estimate_latency(model).cycles / cycles - 1) < STATED_ERROR


def tied_search(cost):
    """Every candidate scores the same: the cost alone decides which group the greedy step shrinks. FLOPs favour
    shrinking ``a``, the Pi Zero estimate ``b``."""
    search = make_search("grs", [GroupSpec("a", 4), GroupSpec("b", 4)], tolerance=0.9, seed=0, cost=cost)

    def evaluate(candidate):
        a, b = candidate.widths
        return Outcome(score=1.0, flops=10 * a + b, latency_ms=0.001 * (a + 10 * b))

    return run(search, evaluate).path[1].widths


def test_cost_pi_zero_changes_which_tie_the_engine_takes():
    assert tied_search("flops") == (3, 4)
    assert tied_search("pi-zero") == (4, 3)
    with pytest.raises(ValueError, match="cost must be one of flops, pi-zero"):
        make_search("grs", [GroupSpec("a", 4)], cost="watts")


def test_the_oracle_reads_latency_from_the_trials_and_records_its_cost(tmp_path):
    paths = {}
    for cost in ("flops", "pi-zero"):
        oracle = GRSOracle(objective="val_accuracy", seed=7, cost=cost)
        oracle._set_project_dir(str(tmp_path / cost), "project")
        hp = keras_tuner.HyperParameters()
        hp.Int("a", 1, 4)
        hp.Int("b", 1, 4)
        oracle.update_space(hp)
        for _ in range(3):  # the initial trial, then the step's two candidates
            trial = oracle.create_trial("tuner0")
            a, b = trial.hyperparameters.values["a"], trial.hyperparameters.values["b"]
            oracle.update_trial(trial.trial_id, {"val_accuracy": 1.0, "flops": 10 * a + b,
                                                 "latency_ms": 0.001 * (a + 10 * b)})
            trial.status = Status.COMPLETED
            oracle.end_trial(trial)
        plan = oracle.plan()
        paths[cost] = plan.path[1].widths
        assert plan.path[1].latency_ms == pytest.approx(0.001 * (sum(paths[cost]) + 9 * paths[cost][1]))
        assert oracle.get_state()["pruning"]["cost"] == cost  # a resume with another cost is refused
    assert paths == {"flops": (3, 4), "pi-zero": (4, 3)}
    with pytest.raises(ValueError, match="cost must be one of"):
        GRSOracle(cost="latency")


def test_the_optuna_sampler_reads_latency_from_user_attributes():
    sampler = keras_grs.optuna.GRSSampler(cost="pi-zero")
    assert sampler.config()["cost"] == "pi-zero"
    assert sampler.outcome(0, [0.9], {"flops": 10, "latency_ms": 0.25}).latency_ms == 0.25


def test_minlatency_picks_the_lower_estimate():
    results = [
        {"name": "few_flops", "params": 100, "flops": 400, "latency_ms": 0.09, "val_accuracy": 0.9,
         "test_accuracy": 0.9},
        {"name": "fast", "params": 120, "flops": 500, "latency_ms": 0.05, "val_accuracy": 0.9, "test_accuracy": 0.9},
    ]
    assert select(results, "minflops")["name"] == "few_flops"
    assert select(results, "minlatency")["name"] == "fast"
    with pytest.raises(ValueError, match="needs each result's latency_ms"):
        select([{**results[0], "latency_ms": None}, results[1]], "minlatency")


def tiny_data():
    x, y = keras_grs.datasets.calcium(n_neurons=20, n_frames=300, seed=0, difficulty="easy")
    return keras_grs.datasets.split(x, y, val=0.25, test=0.15)


def test_a_bad_cost_is_refused_before_anything_is_written(tmp_path, capsys):
    (xt, yt), (xv, yv), _ = tiny_data()
    with pytest.raises(SettingError, match="cost must be one of flops, pi-zero"):
        keras_grs.prune("nn2", xt, yt, (xv, yv), cost="gpu", out=tmp_path / "api", verbose=0)
    assert not (tmp_path / "api").exists()
    path = tmp_path / "data.npz"
    np.savez(path, x_train=xt, y_train=yt, x_val=xv, y_val=yv)
    assert main(["prune", "nn2", "--data", str(path), "--out", str(tmp_path / "cli"), "--cost", "gpu"]) == 2
    assert "--cost" in capsys.readouterr().err and not (tmp_path / "cli").exists()


def test_prune_with_cost_pi_zero_records_and_reports_the_estimate(tmp_path, capsys):
    (xt, yt), (xv, yv), (xs, ys) = tiny_data()
    path = tmp_path / "data.npz"
    np.savez(path, x_train=xt, y_train=yt, x_val=xv, y_val=yv, x_test=xs, y_test=ys)
    out = tmp_path / "run"
    command = ["prune", "nn2", "--data", str(path), "--out", str(out), "--method", "rrs", "--epochs", "1",
               "--initial-epochs", "3", "--seed", "1", "--tolerance", "0.95", "--max-trials", "3", "--no-eup",
               "--selection", "minlatency", "--quiet"]
    assert main([*command, "--cost", "pi-zero"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["cost"] == "pi-zero" and report["selection"]["criterion"] == "minlatency"
    result = report["models"][0]
    assert result["latency_ms"] <= result["initial_latency_ms"]
    assert all(step["latency_ms"] > 0 for step in result["path"])  # every trial recorded its estimate
    assert json.loads((out / "run.json").read_text())["cost"] == "pi-zero"
    assert "est. Pi Zero ms" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main([*command, "--resume"]) == 2  # the default cost is another search: not continued
    assert "cost was 'pi-zero'" in capsys.readouterr().err
