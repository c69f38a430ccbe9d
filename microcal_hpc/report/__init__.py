"""The final report of a run directory: collect every job's outputs, recompute the tables from the
stored predictions, draw the figures and render report.html / report.md / metrics.json.

- :mod:`microcal_hpc.report.collect`  reads a (possibly partial) run directory
- :mod:`microcal_hpc.report.tables`   the tables as data, every number recomputed with microcal_hpc.metrics
- :mod:`microcal_hpc.report.figures`  matplotlib (Agg) figures
- :mod:`microcal_hpc.report.render`   HTML, Markdown and metrics.json
"""
