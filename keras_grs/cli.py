"""The ``keras-grs`` command line (also ``python -m keras_grs``).

Commands: ``prune`` (the whole job), ``export-c`` (a model as C), ``report`` (re-render a run's report),
``analyze`` (a model's width groups), ``dashboard`` (optuna-dashboard), ``demo`` (what ``make demo`` runs).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path


UNSAFE_HELP = "load the model file with Keras' safe mode off (runs code it holds, e.g. Lambda layers): trusted only"


class CommandError(ValueError):
    """A problem with the user's input: printed as ``keras-grs: error: ...``, exit status 2."""


def format_table(rows) -> str:
    sizes = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).rjust(n) for c, n in zip(r, sizes)).rstrip() for r in rows)


def format_analysis(model) -> str:
    """A readable table of a model's width groups, parameters and FLOPs."""
    from keras_grs import analyze, count_flops, count_params, flops_by_layer

    structure = analyze(model)
    flops = flops_by_layer(model)
    rows = [("group", "width", "min", "dependents", "FLOPs")]
    for g in structure.groups:
        rows.append((g.name, str(g.width), str(g.min_width), ", ".join(g.dependents), f"{flops[g.layer]:,}"))
    sizes = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [f"model {model.name}: structure {structure}"]
    for r in rows:
        lines.append("  " + "  ".join(cell.ljust(size) for cell, size in zip(r, sizes)).rstrip())
    lines.append(f"  params {count_params(model):,}   FLOPs {count_flops(model):,} (2 per multiply-accumulate)")
    return "\n".join(lines)


def format_summary(result) -> str:
    """Initial vs compact (vs EUP) per model, scored by the search's objective on validation, guard and test data,
    and which one was selected."""
    first = result.results[0]
    name = first.objective.removeprefix("val_")
    rows = [("model", "", "structure", "params", "nonzero", "FLOPs", "est. Pi Zero ms", f"val {name}",
             f"guard {name}", f"test {name}")]

    def num(value):
        return "-" if value is None else f"{value:.4f}"

    for i, r in enumerate(result.results):
        mark = "*" if i == result.selected else " "
        rows.append((f"{mark}{r.name}", "initial", r.initial_structure, f"{r.initial_params:,}", f"{r.initial_params:,}",
                     f"{r.initial_flops:,}", num(r.initial_latency_ms), num(r.initial_val_score), num(r.initial_guard_score),
                     num(r.initial_test_score)))
        rows.append(("", "compact", r.structure, f"{r.params:,}", f"{r.params:,}", f"{r.flops:,}",
                     num(r.latency_ms), num(r.val_score), num(r.guard_score), num(r.test_score)))
        if r.eup is not None:
            rows.append(("", "EUP", r.structure, f"{r.params:,}", f"{r.eup_nonzero_params:,}",
                         f"{r.eup_nonzero_flops:,}", num(r.latency_ms), num(r.eup_val_score), num(r.eup_guard_score),
                         num(r.eup_test_score)))
    note = (f"\n(* selected: {result.results[result.selected].name}; acceptance {first.acceptance}; Pi Zero ms: an "
            "estimate of the float32 C, dense storage)")
    return format_table(rows) + note


# -- prune ------------------------------------------------------------------------------------------------------
def parse_phases(text: str | None):
    """``0.5:3,0.2:3,near:3`` -> [(0.5, 3), (0.2, 3), (None, 3)]."""
    if text is None:
        return None
    phases = []
    for part in text.split(","):
        rate, _, attempts = part.partition(":")
        try:
            phases.append((None if rate.strip() == "near" else float(rate), int(attempts or 3)))
        except ValueError:
            raise CommandError(f"--phases: cannot read {part!r}; write RATE:ATTEMPTS or near:ATTEMPTS") from None
    return phases


def parse_frozen(values: list[str] | None) -> list[str]:
    """``--frozen a,b --frozen c`` -> ["a", "b", "c"]."""
    names = [name.strip() for value in values or [] for name in value.split(",")]
    if any(not name for name in names):
        raise CommandError(f"--frozen: an empty group name in {','.join(values)!r}; write NAME[,NAME...]")
    return names


def parse_width_multiple(text: str | None) -> int:
    """``--width-multiple K``: a positive integer (1 when not given)."""
    if text is None:
        return 1
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < 1:
        raise CommandError(f"--width-multiple must be a positive integer, got {text!r}")
    return value


def spell(setting: str) -> str:
    """How the command line spells a keyword of :func:`keras_grs.prune` in a message: its flag."""
    return {"models": "MODEL", "safe_mode": "--unsafe-model"}.get(setting, "--" + setting.replace("_", "-"))


def cmd_prune(args) -> int:
    """Map the arguments to :func:`keras_grs.prune`, which owns the run (checks, lock, resume, searches, EUP,
    selection, report, C export), then print its result."""
    from keras_grs import prune
    from keras_grs.guard import DEFAULT_GUARD_FRACTION
    from keras_grs.inputs import load_npz

    phases, frozen = parse_phases(args.phases), parse_frozen(args.frozen)
    width_multiple = parse_width_multiple(args.width_multiple)
    data = load_npz(args.data)
    test = (data["x_test"], data["y_test"]) if "x_test" in data else None
    previous = signal.signal(signal.SIGTERM, _stop)  # a polite kill stops like Ctrl-C: lock released, no traceback
    try:
        result = prune(
            args.models, data["x_train"], data["y_train"], (data["x_val"], data["y_val"]), test_data=test,
            method=args.method, tolerance=args.tolerance, eup=not args.no_eup, selection=args.selection,
            epochs=args.epochs, initial_epochs=args.initial_epochs, batch_size=args.batch_size, seed=args.seed,
            phases=phases, max_trials=args.max_trials, verbose=0 if args.quiet else 1, backend=args.backend,
            storage=args.storage, evaluator=args.evaluator, objective=args.objective, acceptance=args.acceptance,
            guard_fraction=DEFAULT_GUARD_FRACTION if args.guard_fraction is None else args.guard_fraction,
            epoch_score=args.epoch_score, frozen=frozen, width_multiple=width_multiple, cost=args.cost, out=args.out,
            resume=args.resume, export_c=True, safe_mode=not args.unsafe_model,
        )
    except KeyboardInterrupt:
        again = "the same command" + ("" if args.resume else " plus --resume")
        print(f"keras-grs: stopped; finished trials are kept: run {again} to continue", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    out = Path(args.out)
    print(format_c_export(result.report["c_export"]))
    print(format_summary(result))
    for model_result in result.results:
        for warning in model_result.warnings:
            print(f"WARNING: {warning}")
    print(f"report: {out / 'report.md'}; models: {out / 'compact.keras'}" + ("" if args.no_eup else f", {out / 'eup.keras'}"))
    return _failed_trials_status(result)


def _stop(signum, frame):
    raise KeyboardInterrupt


def _failed_trials_status(result) -> int:
    """0, or 3 with a warning when trials failed: the result is written but is not a normal one."""
    from keras_grs.failures import failure_summary

    failed = [(r.name, r.failed_trials) for r in result.results if r.failed_trials]
    for name, trials in failed:
        print(f"keras-grs: warning: model {name!r}: {len(trials)} trial(s) FAILED ({failure_summary(trials)}); they "
              "counted as rejected candidates, so this is not a normal result", file=sys.stderr)
    return 3 if failed else 0


def format_c_export(record: dict) -> str:
    """The line saying where the run's C code is and how it compared with Keras (or why it was not written)."""
    if "skipped" in record:
        return f"C code: not written, the C backend does not support this model yet: {record['skipped']}"
    agreement = "" if record.get("agreement") is None else f", same class for {record['agreement']:.2%} of samples"
    return (f"C code: {record['directory']} ({len(record['actors'])} actors); compiled and run on the validation "
            f"data: max |C - Keras| {record['max_abs_diff']:.2e}{agreement}")


def cmd_export_c(args) -> int:
    import c_backend

    from keras_grs.inputs import load_model, load_npz

    model = load_model(args.model, safe_mode=not args.unsafe_model)
    data = None
    if args.verify or args.int8:
        if not args.verify:
            raise CommandError("--int8 needs --verify DATA.npz: its samples calibrate the quantization")
        data = load_npz(args.verify)  # every split checked, the validation data included
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CommandError(f"{str(out)!r} exists and is not a directory")
    exported = c_backend.export(
        model, out, name=args.name, target=args.target, precision="int8" if args.int8 else "float32",
        sparse=args.sparse, calibration=data["x_train"][:512] if args.int8 else None,
    )
    print(f"wrote {len(exported.files)} files to {out}: {', '.join(op.actor for op in exported.ops)}")
    if data is not None:
        check = c_backend.verify(model, out, data["x_val"], data["y_val"], target=args.target)
        classes = "" if check.agreement is None else (
            f", same class {check.agreement:.2%}, accuracy Keras {check.keras_accuracy:.4f} / C {check.c_accuracy:.4f}")
        print(f"verified on {check.samples} validation samples: max |C - Keras| {check.max_abs_diff:.3e}{classes}")
    return 0


def cmd_report(args) -> int:
    from keras_grs.report import read_report, write_report

    try:
        report = read_report(args.directory)
    except FileNotFoundError as error:
        raise CommandError(str(error)) from None
    for path in write_report(report, args.directory):
        print(path)
    return 0


def find_storage(target: str) -> str:
    """A storage URL from a URL, an SQLite file, or a run directory holding one (DIR/optuna.db, DIR/tuner/optuna.db)."""
    from keras_grs.inputs import SettingError
    from keras_grs.optuna.study import DB_FILE
    from keras_grs.run import TUNER_DIR, check_storage_url

    if "://" in target:
        try:
            return check_storage_url(target)
        except SettingError as error:
            raise CommandError(error.render(lambda _: "DIR_OR_URL")) from None
    path = Path(target)
    for candidate in (path, path / DB_FILE, path / TUNER_DIR / DB_FILE):
        if candidate.is_file():
            return f"sqlite:///{candidate.resolve()}"
    raise CommandError(f"no Optuna storage at {target!r}: give a storage URL, an SQLite file or a run directory")


def cmd_dashboard(args) -> int:
    storage = find_storage(args.target)
    from optuna_dashboard import run_server

    from keras_grs.optuna.study import open_storage

    print(f"optuna-dashboard for {storage} at http://{args.host}:{args.port}/ (Ctrl-C stops it)", flush=True)
    # opened here, not by the dashboard: it reads any file as SQLite and knows no journal:/// URL
    run_server(open_storage(storage), host=args.host, port=args.port)
    return 0


def cmd_analyze(args) -> int:
    from keras_grs.inputs import load_model

    shape = tuple(args.input_shape) if args.input_shape else None
    print(format_analysis(load_model(args.model, shape, args.num_classes, safe_mode=not args.unsafe_model)))
    return 0


def cmd_demo(args) -> int:
    """JGRS + EUP on nn1 and cnn1 with the simulated calcium data, selection, report with plots."""
    import numpy as np

    from keras_grs import datasets

    out = Path(args.out)
    x, y = datasets.calcium(n_neurons=140, n_frames=3000, seed=args.seed, image=True)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = datasets.split(x, y, val=0.2, test=0.1, seed=args.seed)
    print(f"simulated calcium data: {len(x)} frames of 140 neurons as {x.shape[1]}x{x.shape[2]} images; "
          f"train {len(x_train)}, validation {len(x_val)}, test {len(x_test)}")
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "calcium.npz"
    if not data_path.exists():
        np.savez(data_path, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test)
    traces = out / "calcium_traces.png"
    if not traces.exists():
        import matplotlib.pyplot as plt

        plt.close(datasets.plot_traces(traces, seed=args.seed))
    print(f"example traces of the simulated neurons: {traces}")
    run_dir = out / "run"
    argv = ["prune", "nn1", "cnn1", "--data", str(data_path), "--method", "jgrs", "--out", str(run_dir),
            "--epochs", str(args.epochs), "--initial-epochs", str(args.initial_epochs), "--seed", str(args.seed),
            "--tolerance", str(args.tolerance), "--phases", args.phases, "--resume"]
    if args.max_trials:
        argv += ["--max-trials", str(args.max_trials)]
    print("keras-grs " + " ".join(argv), flush=True)
    return main(argv)


def build_parser() -> argparse.ArgumentParser:
    from c_backend.targets import TARGETS
    from keras_grs.search.methods import METHODS

    parser = argparse.ArgumentParser(prog="keras-grs", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("prune", help="prune models, apply EUP, select one, write models and a report")
    p.add_argument("models", nargs="+", metavar="MODEL", help="a .keras file or a built-in name (nn1, cnn1, ...)")
    p.add_argument("--data", required=True, help="an .npz with x_train, y_train, x_val, y_val [, x_test, y_test]")
    p.add_argument("--out", required=True, help="the run directory (must be empty unless --resume)")
    p.add_argument("--method", choices=list(METHODS), default="grs",
                   help="; ".join(f"{m.name}: {m.description}" for m in METHODS.values()))
    p.add_argument("--tolerance", type=float, default=0.985,
                   help="valid when score >= T x the initial score (a loss: <= the initial loss / T); default 0.985")
    p.add_argument("--objective", default="val_accuracy",
                   help="the score kept within tolerance through search, EUP and selection: val_accuracy (default), "
                        "val_loss, or a metric the models are compiled with (val_auc, ...)")
    p.add_argument("--acceptance", choices=["guard", "seed"], default="guard",
                   help="guard (default): a candidate clears the tolerance by half a standard error of the "
                        "validation accuracy, and a guard split held back from the search confirms the final "
                        "structure; seed: the seed's rule (the last accepted structure)")
    p.add_argument("--epoch-score", choices=["last", "best", "best_latest"],
                   help="a candidate's score and weights: last (default with the guard: its last epoch), best "
                        "(default with the seed's rule: its first best epoch) or best_latest (its last best epoch)")
    p.add_argument("--guard-fraction", type=float,
                   help="share of the validation data held back as the guard, in (0, 0.9) (default 0.4)")
    p.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per candidate (10)")
    p.add_argument("--initial-epochs", type=int, help="epochs to train each initial model (default: --epochs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-eup", action="store_true", help="skip thresholding and quantization")
    p.add_argument("--selection", default="minflops",
                   help="minparams, minflops (default), minlatency (estimated Pi Zero ms), maxvalacc, maxtestacc, "
                        "bestval, besttest (best objective)")
    p.add_argument("--seed", type=int)
    p.add_argument("--phases", help="JGRS phases, e.g. 0.5:3,0.2:3,near:3 (the default)")
    p.add_argument("--max-trials", type=int, help="cap on trials per model")
    p.add_argument("--frozen", action="append", metavar="NAME[,NAME]",
                   help="width groups the search never prunes (names as `keras-grs analyze` lists them); "
                        "repeatable")
    p.add_argument("--width-multiple", metavar="K",
                   help="keep every width a multiple of K (SIMD kernels like 4 or 8); a width that is not one "
                        "loses its remainder at its first removal; default 1")
    p.add_argument("--cost", default="flops",
                   help="what the search minimizes among equally good candidates (greedy ties, the JGRS attempt "
                        "kept): flops (default) or pi-zero (the estimated Raspberry Pi Zero milliseconds)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--quiet", action="store_true", help="no per-trial progress lines")
    p.add_argument("--unsafe-model", action="store_true", help=UNSAFE_HELP)
    p.add_argument("--evaluator", choices=["batched", "keras"], default="batched",
                   help="batched (default): a step's candidates trained together in one compiled computation; "
                        "keras: one model.fit per candidate")
    p.add_argument("--backend", choices=["keras-tuner", "optuna"], default="keras-tuner",
                   help="keras-tuner (GRSTuner projects) or optuna (studies driven by the method's sampler)")
    p.add_argument("--storage", help="Optuna storage URL: the optuna backend's studies (default: DIR/tuner/optuna.db), "
                   "or where keras-tuner trials are mirrored")
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("dashboard", help="start optuna-dashboard on a run directory or storage URL")
    p.add_argument("target", metavar="DIR_OR_URL")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("export-c", help="write a model as LIDE-style dataflow C (and check it against Keras)")
    p.add_argument("model", help="a .keras file or a built-in model name")
    p.add_argument("out", help="the directory to write")
    p.add_argument("--name", help="C name of the model (default: the model's name)")
    p.add_argument("--target", choices=list(TARGETS), default="host",
                   help="the machine the C is for: kernels and the Makefile's flags; --verify checks it there "
                        "(the Pi Zero under qemu-arm)")
    p.add_argument("--int8", action="store_true", help="every layer in int8 (TFLite's scheme), calibrated on x_train")
    p.add_argument("--sparse", choices=["auto", "never", "always"], default="auto")
    p.add_argument("--verify", metavar="DATA.npz", help="compile, run on x_val and compare with Keras")
    p.add_argument("--unsafe-model", action="store_true", help=UNSAFE_HELP)
    p.set_defaults(func=cmd_export_c)

    p = sub.add_parser("report", help="re-render report.md and the plots of a run directory")
    p.add_argument("directory")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("analyze", help="print a model's width groups, params and FLOPs")
    p.add_argument("model", help="a .keras file or a built-in model name (nn1, nn2, cnn1, cnn2, *_scaled)")
    p.add_argument("--input-shape", type=int, nargs="+", help="input shape of a built-in model (default 140 or 12 12 1)")
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--unsafe-model", action="store_true", help=UNSAFE_HELP)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("demo", help="JGRS + EUP on nn1 and cnn1 with simulated calcium data (what `make demo` runs)")
    p.add_argument("--out", default="keras_grs_demo", help="where data and run go; an existing demo is resumed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.985)
    p.add_argument("--initial-epochs", type=int, default=30)
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per candidate")
    p.add_argument("--phases", default="0.5:2,0.25:2,0.1:2,near:1")
    p.add_argument("--max-trials", type=int, default=60, help="cap on trials per model (0: none)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from keras_grs.failures import SearchFailed
    from keras_grs.files import DiskFullError
    from keras_grs.inputs import SettingError
    from keras_grs.runlock import RunLocked

    try:
        return args.func(args)
    except (ValueError, RunLocked) as error:  # refusals: bad input or settings, a model it cannot prune, DIR in use
        message = error.render(spell) if isinstance(error, SettingError) else str(error)
        print(f"keras-grs: error: {' '.join(message.split())}", file=sys.stderr)  # one line
        return 2
    except DiskFullError as error:
        print(f"keras-grs: error: {error.strerror}", file=sys.stderr)
        return 1
    except SearchFailed as error:
        print(f"keras-grs: error: {error}; fix the cause and run again in a new --out (with --resume the failed "
              "candidates stay rejected)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
