"""The report's plots: validation accuracy against parameters along each pruning path, and layer widths by step."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from keras_grs.files import atomic_path  # noqa: E402

PHASE_COLOURS = {"initial": "black", "far1": "tab:red", "far2": "tab:orange", "far3": "tab:brown", "near": "tab:blue"}


def _save(figure, path: Path) -> Path:
    try:
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=110, bbox_inches="tight")
    finally:
        plt.close(figure)
    return path


def plot_report(report: dict, directory) -> list[Path]:
    """Write ``accuracy_vs_params.png`` and one ``widths_<i>_<model>.png`` per model; return their paths."""
    directory = Path(directory)
    plot_dir = directory / "plots"
    plot_dir.mkdir(exist_ok=True)
    tolerance = report["config"]["tolerance"]
    paths = []

    objective = report["config"].get("objective", "val_accuracy")
    minimize = report["config"].get("direction", "max") == "min"
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for model in report["models"]:
        path = model["path"]
        params = [step["params"] for step in path]
        scores = [step["objective"] for step in path]
        (line,) = axis.plot(params, scores, "-", alpha=0.6, label=f"{model['name']} ({model['method'].upper()})")
        colours = [PHASE_COLOURS.get(step["phase"], line.get_color()) for step in path]
        axis.scatter(params, scores, c=colours, s=18, zorder=3)
        bound = path[0]["objective"] / tolerance if minimize else tolerance * path[0]["objective"]
        axis.axhline(bound, color=line.get_color(), linestyle=":", linewidth=1)
        guarded = [(p, step["guard"]) for p, step in zip(params, path) if step.get("guard") is not None]
        if guarded:
            axis.plot(*zip(*guarded), "--", color=line.get_color(), alpha=0.8, linewidth=1,
                      label=f"{model['name']} on the guard")
        final = next((p, step) for p, step in zip(params, path) if step.get("final", step is path[-1]))
        axis.scatter([final[0]], [final[1]["objective"]], marker="*", s=160, color=line.get_color(),
                     edgecolors="black", zorder=4, label=f"{model['name']} final")
    phases = sorted({step["phase"] for model in report["models"] for step in model["path"]},
                    key=list(PHASE_COLOURS).index if all(
                        step["phase"] in PHASE_COLOURS for m in report["models"] for step in m["path"]) else str)
    for phase in phases:
        if phase in PHASE_COLOURS:
            axis.scatter([], [], c=PHASE_COLOURS[phase], s=18, label=f"phase {phase}")
    axis.set_xscale("log")
    axis.invert_xaxis()
    axis.set_xlabel("parameters (log scale, pruning goes right)")
    axis.set_ylabel(objective.replace("_", " "))
    axis.set_title("Pruning path: accepted structures (dotted: the tolerance bound; dashed: guard)")
    axis.legend(loc="lower left", fontsize="small")
    axis.grid(alpha=0.3)
    paths.append(_save(figure, plot_dir / "accuracy_vs_params.png"))

    for index, model in enumerate(report["models"]):
        path = model["path"]
        figure, axis = plt.subplots(figsize=(7, 4))
        for name in path[0]["widths"]:
            axis.step(range(len(path)), [step["widths"][name] for step in path], where="post", label=name)
        ends = {}
        for phase, trial_id in model.get("phase_ends", {}).items():
            position = next((i for i, step in enumerate(path) if step["trial_id"] == trial_id), None)
            if position is not None:
                ends.setdefault(position, []).append(phase)
        for position, phases in ends.items():
            axis.axvline(position, color="grey", linestyle="--", linewidth=0.8)
            axis.annotate(f"end of {', '.join(phases)}", (position, axis.get_ylim()[1]), fontsize="x-small",
                          rotation=90, va="top", ha="right")
        axis.set_yscale("log", base=2)
        axis.set_xlabel("accepted step")
        axis.set_ylabel("width (units or filters)")
        axis.set_title(f"{model['name']}: {model['initial_structure']} -> {model['structure']}")
        axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in model["name"])
        paths.append(_save(figure, plot_dir / f"widths_{index}_{safe}.png"))
    return paths
