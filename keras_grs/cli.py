"""The ``keras-grs`` command line (also ``python -m keras_grs``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class CommandError(Exception):
    """A problem with the user's input: printed as ``keras-grs: error: ...``, exit status 2."""


def load_model(spec: str, input_shape: tuple[int, ...] | None = None, num_classes: int = 2):
    """A model from a ``.keras`` file or a built-in name (nn1, cnn1, ...)."""
    from keras_grs import models

    if spec in models.NAMES:
        if input_shape is None:
            input_shape = (12, 12, 1) if spec.startswith("cnn") else (140,)
        return models.build(spec, input_shape, num_classes=num_classes)
    path = Path(spec)
    if not path.exists():
        raise CommandError(f"model {spec!r} is neither a built-in model ({', '.join(models.NAMES)}) nor a file")
    import keras

    try:
        return keras.models.load_model(path)
    except Exception as error:  # keras raises many kinds for a bad file
        raise CommandError(f"cannot read model file {spec!r}: {error}") from None


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


def cmd_analyze(args) -> int:
    shape = tuple(args.input_shape) if args.input_shape else None
    print(format_analysis(load_model(args.model, shape, args.num_classes)))
    return 0


def cmd_demo(args) -> int:
    import tempfile

    import keras

    from keras_grs import GRSTuner, count_flops, count_params, datasets

    keras.utils.set_random_seed(args.seed)
    x, y = datasets.calcium(n_neurons=140, n_frames=3000, seed=args.seed)
    print(f"simulated calcium data: {x.shape[0]} frames x {x.shape[1]} neurons, labels {sorted(set(y.tolist()))}")
    (x_train, y_train), validation, test = datasets.split(x, y, val=0.2, test=0.1, seed=args.seed)
    model = load_model("nn1", x.shape[1:])
    print(format_analysis(model))
    print(f"training nn1 for {args.pretrain_epochs} epochs ...", flush=True)
    model.fit(x_train, y_train, epochs=args.pretrain_epochs, batch_size=32, verbose=0)
    directory = args.directory or tempfile.mkdtemp(prefix="keras_grs_demo_")
    tuner = GRSTuner.from_model(
        model,
        train_first=False,
        tolerance=args.tolerance,
        seed=args.seed,
        max_trials=args.max_trials,
        directory=directory,
        project_name="nn1",
    )
    print(f"GRS search, tolerance {args.tolerance}, {args.epochs} fine-tuning epochs per candidate; run in {directory}")
    tuner.search(x_train, y_train, validation_data=validation, epochs=args.epochs, batch_size=32, verbose=0)
    tuner.results_summary()
    compact = tuner.get_best_models(1)[0]
    rows = [("", "structure", "params", "FLOPs", "val acc", "test acc")]
    for label, m in (("initial", model), ("compact", compact)):
        rows.append(
            (
                label,
                str(analyze_structure(m)),
                f"{count_params(m):,}",
                f"{count_flops(m):,}",
                f"{m.evaluate(*validation, verbose=0)[1]:.4f}",
                f"{m.evaluate(*test, verbose=0)[1]:.4f}",
            )
        )
    print(format_table(rows))
    return 0


def analyze_structure(model):
    from keras_grs import analyze

    return analyze(model)


def format_table(rows) -> str:
    sizes = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).rjust(n) for c, n in zip(r, sizes)) for r in rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keras-grs", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("analyze", help="print a model's width groups, params and FLOPs")
    p.add_argument("model", help="a .keras file or a built-in model name (nn1, nn2, cnn1, cnn2, *_scaled)")
    p.add_argument("--input-shape", type=int, nargs="+", help="input shape of a built-in model (default 140 or 12 12 1)")
    p.add_argument("--num-classes", type=int, default=2)
    p.set_defaults(func=cmd_analyze)

    p = sub.add_parser("demo", help="the demo job on built-in data (what `make demo` runs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.985)
    p.add_argument("--pretrain-epochs", type=int, default=30)
    p.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs per candidate")
    p.add_argument("--max-trials", type=int, help="stop after this many trials (default: when the method stops)")
    p.add_argument("--directory", help="where the keras-tuner project goes (default: a new temporary folder)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CommandError, ValueError) as error:
        print(f"keras-grs: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
