"""Run reports: ``report.json`` (the figures), ``report.md`` (readable), and PNG plots.

:func:`write_report` writes all three from the report dict of :func:`keras_grs.prune`; ``keras-grs report DIR``
re-renders the Markdown and plots from ``report.json``.
"""

from keras_grs.report.markdown import render_markdown
from keras_grs.report.plots import plot_report
from keras_grs.report.writer import read_report, write_report

__all__ = ["plot_report", "read_report", "render_markdown", "write_report"]
