"""Assemble the report of a run directory: collect, recompute the tables, draw the figures, lay out the
sections. :func:`build_report` returns the :class:`Report`, the dict written as metrics.json and the text
of metrics.csv; :mod:`microcal_hpc.report.aggregate` writes them.
"""
from __future__ import annotations

import datetime as _dt
import logging
import platform
from pathlib import Path
from typing import Any, Optional

import yaml

from microcal_hpc import __version__
from microcal_hpc.config import Config
from microcal_hpc.launcher.plan import packed_path
from microcal_hpc.provenance import git_info, library_versions
from microcal_hpc.report import figures as F
from microcal_hpc.report import shortcut as SC
from microcal_hpc.report import tables as T
from microcal_hpc.report.collect import RunCollection, collect_run
from microcal_hpc.report.comparison import (PairedComparison, compare_all, comparison_tables, comparison_values,
                                            conclusion)
from microcal_hpc.report.data import DataSummary, data_summary
from microcal_hpc.report.export import metrics_csv, metrics_rows
from microcal_hpc.report.reference import reference_table, settings_table
from microcal_hpc.report.render import Box, Figure, Paragraph, Pre, Report, Section, figure_list
from microcal_hpc.report.saliency import read_saliency, share_summary, share_text
from microcal_hpc.report.seeds import SeedCheck, one_seed_note, seed_check

log = logging.getLogger("microcal.aggregate")

def git_commit() -> Optional[str]:
    """Commit of the checkout this package runs from, marked if it has uncommitted changes (None outside
    a git checkout)."""
    info = git_info()
    if not info:
        return None
    return info["commit"] + (" (with uncommitted changes)" if info["dirty"] else "")


def _flatten(d: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(d, dict):
        out = []
        for k, v in d.items():
            out += _flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(d, list) and all(not isinstance(x, (dict, list)) for x in d):
        return [(prefix, ", ".join(str(x) for x in d))]
    if isinstance(d, list):
        return [(prefix, yaml.safe_dump(d, default_flow_style=True).strip())]
    return [(prefix, "" if d is None else str(d))]


def provenance_table(coll: RunCollection, packed_sha: Optional[str]) -> T.Table:
    """Versions, git commit, host, times (from the launcher's manifest.json) and the data file checksum."""
    rows = []
    m = dict(coll.manifest or {})
    m.pop("config", None)  # shown in full below the table
    m.pop("schema", None)
    subs = m.pop("submissions", None)
    for k, v in _flatten(m):
        rows.append({"item": k, "value": v, "source": "manifest.json"})
    if isinstance(subs, list) and subs:
        last = subs[-1] if isinstance(subs[-1], dict) else {}
        rows.append({"item": "submissions", "value": f"{len(subs)} (last: {last.get('time', '?')}, executor "
                     f"{last.get('executor', '?')}, {len(last.get('jobs') or [])} jobs)", "source": "manifest.json"})
    if not any(w in r["item"].lower() for r in rows for w in ("librar", "version")):
        versions = dict(python=platform.python_version(), **library_versions())
        rows += [{"item": k, "value": v, "source": "report environment"} for k, v in versions.items() if v]
    rows.append({"item": "report built with", "value": f"microcal-hpc {__version__}, commit {git_commit() or 'unknown'}",
                 "source": "report environment"})
    rows.append({"item": "packed data sha256", "value": packed_sha or "packed data file not found",
                 "source": str(coll.packed) if coll.packed else "data/packed.h5"})
    basis = "manifest.json written by the launcher" if coll.manifest else \
        "manifest.json is absent: versions are those of the environment building the report"
    return T.Table("provenance", "Versions, commit and data checksum", basis,
                   [T.Column("item", "Item"), T.Column("value", "Value"), T.Column("source", "Source")], rows)


def _status_box(coll: RunCollection) -> Box:
    lines = coll.status_lines()
    if lines:
        return Box("Partial run: missing or failed jobs", lines + [f"reading problem: {p}" for p in coll.problems])
    if coll.problems:
        return Box("All expected jobs are present, but some outputs do not follow docs/outputs.md",
                   [f"reading problem: {p}" for p in coll.problems])
    return Box("Complete run: every expected job finished", [], kind="ok")


def _data_section(coll: RunCollection, cfg: Config, run_dir: Path, fig) -> tuple[Section, Optional[DataSummary]]:
    data = Section("data", "2. Data")
    if not coll.packed:
        data.blocks.append(Box("Packed data not found", [f"{packed_path(cfg, run_dir)} is absent: no data tables, "
                                                         "patch grid, gallery or shortcut analysis"]))
        return data, None
    D = data_summary(coll.packed, cfg)
    partition, folds, integ, codes = D.tables
    data.blocks.append(partition)
    p = fig("data_partition", F.data_partition, D)
    data.blocks.append(Figure("data_partition.png", p, "Left: patches per split and label. Right: distribution "
                              "of each patch's mean grey level by split (solid Train, dashed Test) and label."))
    p = fig("patch_grid", F.patch_grid, D.train.images, D.train.labels, cfg.report.gallery_size, cfg.report.seed)
    if p:
        data.blocks.append(Figure("patch_grid.png", p, f"Random Train patches (seed {cfg.report.seed}): "
                                  f"{2 * cfg.report.gallery_size} of each class, frame colour = class."))
    data.blocks += [integ, codes, folds]
    return data, D


def _curves(S: T.Summaries) -> tuple[list, list, list]:
    """The models of the confusion-matrix and ROC figures: CNN runs, the ensemble, the key wavelet models, baselines."""
    cm = list(S.cnn_single) + ([S.ensemble] if S.ensemble else [])
    test = [(s.label, s.run.test, F.CNN_SHADES[i % len(F.CNN_SHADES)], "-") for i, s in enumerate(cm)]
    cv = [("CNN", {k: s.run.val for k, s in S.cnn_folds.items()}, F.ARM_COLOURS["cnn"], "-")] if S.cnn_folds else []
    for key, role in ((S.reference_wavelet, "Reference pipeline"), (S.best_wavelet, "Best wavelet by CV")):
        if key and not any(m.run.name == key for m in cm):
            w = S.wavelet[key]
            label = f"{role}: {T.wavelet_label(w.run)}"
            cm.append(T.ModelSummary(w.run, label, w.threshold, test=w.test))
            test.append((label, w.run.test, F.wavelet_colour(w), "--"))
            cv.append((label, w.cv_preds, F.wavelet_colour(w), "--"))
    for name, b in S.baseline.items():
        colour, style = F.baseline_style(name)
        cm.append(T.ModelSummary(b.run, f"Baseline: {name}", b.threshold, test=b.test))
        test.append((f"Baseline: {name}", b.run.test, colour, style))
        if b.cv_preds:
            cv.append((f"Baseline: {name}", b.cv_preds, colour, style))
    return cm, test, cv


def _cnn_section(S: T.Summaries, cfg: Config, fig) -> Section:
    cnn = Section("cnn", "3. CNN")
    cnn.blocks += [T.cnn_study_table(S, cfg), T.cnn_loss_table(S)]
    p = fig("learning_curves", F.learning_curves, S)
    if p:
        cnn.blocks.append(Figure("learning_curves.png", p, "Loss and accuracy per epoch: training (solid; Keras' "
                                 "running mean over the epoch) and, for fold models, validation on the held-out fold "
                                 "(dashed)."))
    cm, test, cv = _curves(S)
    p = fig("confusion_matrices", F.confusion_matrices, cm)
    if p:
        cnn.blocks.append(Figure("confusion_matrices.png", p, "Confusion matrices on the official Test set "
                                 "(counts and percentage of the true class)."))
    p = fig("roc_test", F.roc_single, test)
    if p:
        cnn.blocks.append(Figure("roc_test.png", p, "ROC curves on the official Test set; inset: the top-left corner "
                                 "enlarged.", half=True))
    p = fig("roc_cv", F.roc_cv, cv, expected_folds=S.expected_folds)
    if p:
        cnn.blocks.append(Figure("roc_cv.png", p, "Mean cross-validation ROC (true positive rate interpolated on a "
                                 "common false-positive-rate grid, averaged over folds) with a ±1 std band; inset: the "
                                 "top-left corner enlarged.", half=True))
    return cnn


def _level_note(S: T.Summaries) -> str:
    w = next((s.run.metrics.get("wavelet") for s in S.wavelet.values() if s.run.metrics.get("wavelet")), None) or {}
    level, free, shape = w.get("effective_level"), w.get("boundary_free_max_level"), w.get("image_shape")
    if level is None or free is None or level <= free:
        return ""
    size = f"{shape[0]}×{shape[1]} " if shape else ""
    span = f"{free + 1}" if level == free + 1 else f"{free + 1}-{level}"
    return (f" Level {level} exceeds PyWavelets' boundary-free maximum for {size}patches ({free}): the coefficients "
            f"of level(s) {span} are all affected by the signal extension at the borders ({w.get('mode', '?')} mode).")


def _wavelet_section(S: T.Summaries, cfg: Config, fig) -> Section:
    from microcal_hpc.wavelet.transform import FEATURE_SETS

    wav = Section("wavelet", "4. Wavelet classifiers")
    wts = T.wavelet_tables(S)
    if wts:
        w = cfg.wavelet
        sets = "; ".join(f"'{fs}': {FEATURE_SETS.get(fs, '?')}" for fs in sorted({s.run.feature_set for s in S.wavelet.values()}))
        wav.blocks.append(Paragraph(f"Features: {w.wavelet} wavelet, level {w.level}, detail levels {w.keep_levels} "
                                    f"kept. Feature sets: {sets}.{_level_note(S)} The best classifier by CV AUC "
                                    "(the choice never looks at Test) is in bold."))
    wav.blocks += wts or [Box("No wavelet classifier outputs", ["wavelet/<feature_set>/<classifier>/ absent"])]
    p = fig("wavelet_bars", F.wavelet_bars, S)
    if p:
        wav.blocks.append(Figure("wavelet_bars.png", p, "Wavelet classifiers: CV AUC mean ± std (bars) and official-"
                                 "Test AUC (diamonds); black frame: best by CV AUC; dashed: CNN CV AUC; dotted and "
                                 "dash-dotted: the baselines' CV AUC. The y-axis starts where the values are."))
    return wav


def _shortcut_section(S: T.Summaries, D: Optional[DataSummary], cfg: Config) -> tuple[Section, dict]:
    short = Section("shortcut", "6. Shortcut analysis: baselines, sources, overlap with Train")
    models = T.key_models(S)
    table, text, margin = SC.baselines_table(S, models, cfg)
    short.blocks += [Paragraph(text), table]
    values: dict[str, Any] = {"cnn_minus_brightness": margin}
    if D is None:
        short.blocks.append(Box("No source or overlap analysis", ["needs the packed data"]))
        return short, values
    ws = SC.within_source(S, models, D, cfg)
    short.blocks += [Paragraph(ws.text), ws.table]
    every = [(f"cnn/{s.run.name}", s) for s in S.cnn_single] + ([("cnn/ensemble", S.ensemble)] if S.ensemble else [])
    every += [(f"wavelet/{k}", s) for k, s in S.wavelet.items()] + [(f"baseline/{k}", s) for k, s in S.baseline.items()]
    otable, otext, ovalues = SC.without_overlap(every, D)
    short.blocks += [Paragraph(otext), otable]
    values.update(within_source=ws.values, test_without_overlap=ovalues)
    return short, values


def _gallery_section(S: T.Summaries, D: Optional[DataSummary], cfg: Config, fig) -> tuple[Section, Optional[dict]]:
    gal = Section("gallery", "7. Where the CNN looks: classified Test patches and saliency")
    off = S.official
    if D is None or off is None or off.run.test is None:
        gal.blocks.append(Box("No gallery", ["needs the official CNN run and the packed data"]))
        return gal, None
    images = F.images_by_id(D.test.ids, D.test.images)
    sal, problem = read_saliency(off.run.path, tuple(D.test.images.shape[1:]))
    summary = None
    if sal is None:
        gal.blocks.append(Box("No saliency maps", [problem]))
    else:
        summary = share_summary(sal, images, dict(zip(D.test.ids.tolist(), D.test.labels.tolist())))
        gal.blocks.append(Paragraph(share_text(summary)))
    p = fig("gallery", F.gallery, images, off.run.test, off.threshold, cfg.report.gallery_size, cfg.report.seed,
            model_label="CNN (official run)", saliency=sal.by_id() if sal else None)
    if p:
        gal.blocks.append(Figure("gallery.png", p, "Correctly and incorrectly classified Test patches of the official "
                                 "CNN run with their ids and scores P(cluster)"
                                 + (", each with its saliency map below it." if sal else ".")))
    return gal, summary


def _reference_section(S: T.Summaries, cfg: Config) -> Section:
    from microcal_hpc.cnn.augment import PRESETS
    from microcal_hpc.wavelet.transform import FEATURE_SETS

    ref = Section("reference", "8. The reference study, and the settings of this one")
    ref.blocks += [reference_table(S, cfg, PRESETS), settings_table(S, cfg, PRESETS, FEATURE_SETS)]
    return ref


def _summary_section(coll: RunCollection, cfg: Config, run_dir: Path, packed_sha: Optional[str]) -> Section:
    """1. What ran, what is missing, provenance and the configuration as used."""
    summary = Section("summary", "1. Run summary")
    summary.blocks.append(_status_box(coll))
    summary.blocks.append(Paragraph(
        f"Run directory {run_dir.resolve()}; report built {_dt.datetime.now().isoformat(timespec='seconds')}. "
        "Every number in the tables is recomputed from the stored predictions (predictions.npz) with "
        "microcal_hpc.metrics; each table states the images, runs or folds it rests on. All metrics are also in "
        "metrics.csv (one row per model, evaluation and metric)."))
    summary.blocks += [T.model_output_table(coll), T.job_table(coll), provenance_table(coll, packed_sha)]
    cfg_text = coll.config_text if coll.config_text is not None else yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    summary.blocks.append(Pre("Configuration as used (config.yaml of the run)" if coll.config_text is not None
                              else "Configuration (the run has no config.yaml: the configuration given to aggregate)",
                              cfg_text))
    return summary


def _comparison_section(S: T.Summaries, cfg: Config) -> tuple[Section, list[PairedComparison], Optional[SeedCheck]]:
    """5. CNN versus wavelet: the conclusion, the training-seed check and the paired tables; also returns
    the comparisons and the seed check (None without seed repeats) for metrics.json."""
    comps = compare_all(S, cfg)
    comp = Section("comparison", "5. CNN versus wavelet")
    comp.blocks += [Paragraph(conclusion(comps) + " The best wavelet model is chosen by CV AUC, never by Test AUC.")]
    seeds = seed_check(S, comps, cfg)  # how far the official run's Test verdicts hold over training seeds
    note = seeds.text if seeds is not None else one_seed_note(S, cfg)
    comp.blocks += ([Paragraph(note)] if note else []) + comparison_tables(S, comps, cfg)
    if seeds is not None:
        comp.blocks.append(seeds.table)
    return comp, comps, seeds


def _metrics_json(report: Report, coll: RunCollection, S: T.Summaries, run_dir: Path, packed_sha: Optional[str],
                  D: Optional[DataSummary], comps: list[PairedComparison], seeds: Optional[SeedCheck],
                  shortcut_values: dict, saliency: Optional[dict]) -> dict[str, Any]:
    """The dict written as metrics.json (docs/outputs.md)."""
    return {
        "schema": 1,
        "run_dir": str(run_dir.resolve()),
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "complete": coll.complete,
        "status": {"missing": coll.missing, "incomplete": coll.incomplete,
                   "failed_jobs": [j.name for j in coll.failed_jobs],
                   "unfinished_jobs": [j.name for j in coll.unfinished_jobs], "problems": coll.problems},
        "cnn_folds": {"expected": S.expected_folds, "present": sorted(S.cnn_folds)},
        "best_wavelet": S.best_wavelet,
        "best_wavelet_rule": "highest mean cross-validation AUC (never Test AUC)",
        "reference_pipeline": S.reference_wavelet,
        "comparisons": comparison_values(comps),
        "seed_check": seeds.values if seeds is not None else None,
        "shortcut": shortcut_values,
        "saliency": saliency,
        "packed_sha256": packed_sha,
        "data_integrity": D.integrity if D else None,
        "tables": T.table_values(report.tables()),
        "figures": figure_list(report),
    }


def build_report(cfg: Config, run_dir: str | Path, out_dir: str | Path) -> tuple[Report, dict[str, Any], RunCollection, str]:
    """Collect the run, recompute the tables, write the figures into ``out_dir/figures``, lay out the report.

    Returns the report, the dict written as metrics.json, the collected run and the text of metrics.csv.
    """
    from microcal_hpc.dataset import file_sha256

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    coll = collect_run(run_dir, cfg)
    log.info("collected %d CNN, %d wavelet, %d baseline runs and %d job records from %s", len(coll.cnn),
             len(coll.wavelet), len(coll.baseline), len(coll.jobs), run_dir)
    S = T.summarise_run(coll, cfg)
    produced: list[str] = []

    def fig(name: str, fn, *args, **kw) -> Optional[Path]:
        p = fn(*args, path=F.figure_path(fig_dir, name), **kw)
        if p:
            produced.append(Path(p).name)
        return Path(p) if p else None

    packed_sha = file_sha256(coll.packed) if coll.packed else None
    summary = _summary_section(coll, cfg, run_dir, packed_sha)
    data, D = _data_section(coll, cfg, run_dir, fig)
    comp, comps, seeds = _comparison_section(S, cfg)
    short, shortcut_values = _shortcut_section(S, D, cfg)
    gal, saliency = _gallery_section(S, D, cfg, fig)
    sections = [summary, data, _cnn_section(S, cfg, fig), _wavelet_section(S, cfg, fig), comp, short, gal,
                _reference_section(S, cfg)]
    for f in fig_dir.glob("*.png"):
        if f.name not in produced:
            f.unlink()
    report = Report("Microcalcification clusters: CNN versus wavelet classifiers",
                    f"Run directory '{run_dir.name}': " + ("complete run" if coll.complete
                                                           else "PARTIAL run (see the box below)"),
                    sections)
    metrics = _metrics_json(report, coll, S, run_dir, packed_sha, D, comps, seeds, shortcut_values, saliency)
    csv_text = metrics_csv(metrics_rows(S, shortcut_values.get("test_without_overlap"),
                                        shortcut_values.get("within_source")))
    return report, metrics, coll, csv_text
