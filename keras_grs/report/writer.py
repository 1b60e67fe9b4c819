"""Writing and reading a run's report files, atomically."""

from __future__ import annotations

import json
from pathlib import Path

from keras_grs.files import write_text

REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def write_report(report: dict, directory) -> list[Path]:
    """Write ``report.json``, the plots and ``report.md`` into ``directory``; return the paths written."""
    from keras_grs.report.markdown import render_markdown
    from keras_grs.report.plots import plot_report

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / REPORT_JSON
    write_text(json_path, json.dumps(report, indent=2, default=_plain))
    plots = plot_report(report, directory)
    md_path = directory / REPORT_MD
    write_text(md_path, render_markdown(report, [p.relative_to(directory) for p in plots]))
    return [json_path, md_path, *plots]


def read_report(directory) -> dict:
    path = Path(directory) / REPORT_JSON
    if not path.is_file():
        raise FileNotFoundError(f"{str(directory)!r} holds no {REPORT_JSON}: it is not a finished keras-grs run")
    return json.loads(path.read_text())


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
