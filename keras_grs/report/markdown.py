"""The readable report (``report.md``)."""

from __future__ import annotations

from keras_grs.failures import failure_summary
from keras_grs.latency import format_ms


def _pct(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _num(value):
    return "-" if value is None else f"{value:,}"


def _score(value):
    return "-" if value is None else f"{value:.4f}"


def _pair(before, after):
    return "-" if before is None and after is None else f"{_score(before)} -> {_score(after)}"


def _table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(report: dict, plots=()) -> str:
    """The report as Markdown: configuration, selection, per-model figures, EUP, pruning paths, plots."""
    config, models = report["config"], report["models"]
    selected = report["selection"]
    objective = config.get("objective", "val_accuracy")
    name = objective.removeprefix("val_")
    rule = (f"at least {config['tolerance']} x the initial model's" if config.get("direction", "max") == "max"
            else f"at most the initial model's / {config['tolerance']}")
    acceptance = config.get("acceptance", "seed")
    guard_text = (
        f" Acceptance `guard`: {config.get('guard_fraction')} of the validation data was held back as a guard "
        "split the search never trained or decided on; the final structure is the last accepted one whose guard "
        "score is within tolerance too." if acceptance == "guard" else
        " Acceptance `seed`: the final structure is the last one the search accepted (no guard)."
    )
    out = [
        "# keras-grs pruning report",
        "",
        f"Created {report['created']} by keras-grs {report['keras_grs_version']}.",
        "",
        f"Method **{config['method'].upper()}**, objective `{objective}`, tolerance {config['tolerance']} (a candidate "
        f"is valid when its {objective} is {rule}), {config['epochs']} "
        f"fine-tuning epochs per candidate ({config['initial_epochs']} for the initial model), batch size "
        f"{config['batch_size']}, seed {config['seed']}.{guard_text} Data: train {report['data']['train']}, "
        f"validation {report['data']['validation']}, guard {report['data'].get('guard') or 'none'}, test "
        f"{report['data']['test'] or 'none'}.",
        "",
        f"**Selected: {selected['name']}** (criterion `{selected['criterion']}`), saved as `compact.keras`"
        + (" and, after EUP, `eup.keras`." if config["eup"] else "."),
        "",
        *[f"**Not a normal result: {len(m['failed_trials'])} trial(s) of {m['name']} FAILED** and counted as rejected "
          f"candidates: {failure_summary(m['failed_trials'])}.\n" for m in models if m.get("failed_trials")],
    ]
    warnings = [w for m in models for w in m.get("warnings", [])]
    if warnings:
        out += ["> **Warning: the tolerance did not hold on the test data.**", ">"]
        out += [f"> - {w}" for w in warnings]
        out.append("")
    out += [
        "## Generalisation: the objective on every split",
        "",
        f"`{objective}` of the initial -> compact (-> EUP) model on the validation data the search used, on the guard "
        "and on the test data. Only the validation column was used to choose; guard and test are the honest "
        "estimates.",
        "",
    ]
    rows = []
    for m in models:
        rows.append([m["name"], "compact", _pair(m.get("initial_val_score"), m.get("val_score")),
                     _pair(m.get("initial_guard_score"), m.get("guard_score")),
                     _pair(m.get("initial_test_score"), m.get("test_score"))])
        if m.get("eup") is not None:
            rows.append([m["name"], "EUP", _pair(m.get("initial_val_score"), m.get("eup_val_score")),
                         _pair(m.get("initial_guard_score"), m.get("eup_guard_score")),
                         _pair(m.get("initial_test_score"), m.get("eup_test_score"))])
    out.append(_table(["model", "model kind", f"val {name}", f"guard {name}", f"test {name}"], rows))
    # accuracy columns for classifiers; a regression's (None) is scored by the objective in the table above
    accuracies = any(m.get("val_accuracy") is not None for m in models)
    out += [
        "",
        "## Structured search",
        "",
        ("AL: accuracy loss (initial minus compact, percentage points, on the test data when given); " if accuracies
         else "") + "FCI and PCI: FLOP and parameter count improvement (percent). Pi Zero ms: an *estimate* of one "
        "inference of the float32 C on the Raspberry Pi Zero (`keras_grs.estimate_latency`, calibrated against the "
        "ARMv6 meter; see docs/c_backend.md), not a measurement on a board.",
        "",
    ]
    rows = []
    for m in models:
        rows.append([
            m["name"], f"{m['initial_structure']} -> {m['structure']}", f"{_num(m['initial_params'])} -> {_num(m['params'])}",
            f"{_num(m['initial_flops'])} -> {_num(m['flops'])}",
            f"{format_ms(m.get('initial_latency_ms'))} -> {format_ms(m.get('latency_ms'))}",
            *([f"{_pct(m['initial_val_accuracy'])} -> {_pct(m['val_accuracy'])}",
               f"{_pct(m['initial_test_accuracy'])} -> {_pct(m['test_accuracy'])}",
               "-" if m["al"] is None else f"{m['al']:.2f} ({m['al_on']})"] if accuracies else []),
            f"{m['fci']:.2f}", f"{m['pci']:.2f}",
            f"{m['trials']}" + ("" if m.get("finished", True) else " (capped)"), f"{m['search_seconds']:.1f}",
        ])
    out.append(_table(["model", "structure", "params", "FLOPs", "est. Pi Zero ms",
                       *(["val acc", "test acc", "AL"] if accuracies else []), "FCI", "PCI", "trials", "search s"],
                      rows))
    if config["eup"]:
        out += ["", "## Unstructured stage (EUP: thresholding, then quantization)", ""]
        rows = []
        for m in models:
            t, q = m["eup"]["threshold"], m["eup"]["quantize"]
            rows.append([
                m["name"], t["mode"], "-" if t["threshold"] is None else f"{t['threshold']:g}",
                "-" if q["digits"] is None else q["digits"], q["distinct_values"],
                f"{_num(m['eup_nonzero_params'])} ({100 * m['eup_nonzero_params'] / m['initial_params']:.2f}% of initial)",
                _num(m["eup_nonzero_flops"]),
                *([_pct(m["eup_val_accuracy"]), _pct(m["eup_test_accuracy"]),
                   "-" if m["eup_al"] is None else f"{m['eup_al']:.2f}"] if accuracies else []),
                f"{m['eup_pci']:.2f}",
            ])
        out.append(_table(["model", "mode", "threshold", "digits", "distinct values", "nonzero params",
                           "nonzero FLOPs", *(["val acc", "test acc", "AL"] if accuracies else []), "PCI"], rows))
    c_export = report.get("c_export")
    if c_export and "skipped" in c_export:
        out += ["", "## C code", "", f"Not written: {c_export['skipped']}."]
    elif c_export:
        out += ["", "## C code", "",
                f"The selected {c_export['model']} model as LIDE-style dataflow C in `{c_export['directory']}` "
                f"({len(c_export['actors'])} actors: {', '.join(c_export['actors'])}). Compiled with the host compiler "
                f"and run on {c_export['samples']} validation samples: largest difference from Keras "
                f"{c_export['max_abs_diff']:.2e}" + ("." if c_export.get("agreement") is None else
                                                     f", same predicted class for {100 * c_export['agreement']:.2f}% "
                                                     "of them.")]
    out += ["", "## Pruning paths", ""]
    for m in models:
        out += [f"### {m['name']}", ""]
        if m.get("phase_ends"):
            out.append("Phase ends: " + ", ".join(f"{p} at trial {t}" for p, t in m["phase_ends"].items()) + ".")
            out.append("")
        if m.get("walked_back"):
            out.append(f"The guard walked back {m['walked_back']} accepted structure(s): the final one is marked.")
            out.append("")
        out.append(_table(["trial", "phase", "structure", "params", "FLOPs", "est. Pi Zero ms", f"val {name}",
                           f"guard {name}", "final"], [
            [s["trial_id"], s["phase"], s["structure"], _num(s["params"]), _num(s["flops"]),
             format_ms(s.get("latency_ms")), f"{s['objective']:.4f}",
             _score(s.get("guard")), "**final**" if s.get("final") else ""]
            for s in m["path"]
        ]))
        out.append("")
    if plots:
        out += ["## Plots", ""]
        out += [f"![{p.stem}]({p.as_posix()})" for p in plots]
        out.append("")
    return "\n".join(out)
