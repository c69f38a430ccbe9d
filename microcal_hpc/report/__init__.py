"""The final report of a run directory: collect every job's outputs, recompute the tables from the
stored predictions, draw the figures and render report.html / report.md / metrics.json.

- :mod:`microcal_hpc.report.collect`     reads a (possibly partial) run directory
- :mod:`microcal_hpc.report.tables`      the model summaries and the CNN/wavelet tables, every number recomputed
  with microcal_hpc.metrics
- :mod:`microcal_hpc.report.data`        the data section (partition, folds, integrity, source letters)
- :mod:`microcal_hpc.report.sources`     source letters and the Test images that overlap Train
- :mod:`microcal_hpc.report.comparison`  CNN versus the reference pipeline and the best wavelet model, and the
  conclusion generated from the CIs
- :mod:`microcal_hpc.report.shortcut`    baselines, within-source AUCs, Test AUC without the overlap
- :mod:`microcal_hpc.report.saliency`    the official CNN's saliency maps and their share on the brightest pixels
- :mod:`microcal_hpc.report.reference`   the reference study's figures beside this run, the settings table
- :mod:`microcal_hpc.report.figures`     matplotlib (Agg) figures
- :mod:`microcal_hpc.report.export`      metrics.csv
- :mod:`microcal_hpc.report.render`      HTML, Markdown and metrics.json
- :mod:`microcal_hpc.report.build`       lays out the sections; :mod:`microcal_hpc.report.aggregate` writes them
"""
