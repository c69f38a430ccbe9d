"""Assemble the report of a run directory: collect, recompute the tables, draw the figures, lay out the
sections. :func:`build_report` returns the :class:`Report` and the dict written as metrics.json;
:mod:`microcal_hpc.report.aggregate` writes them.
"""
from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import logging
import platform
import subprocess
from pathlib import Path
from typing import Any, Optional

import yaml

from microcal_hpc import __version__
from microcal_hpc.config import Config
from microcal_hpc.report import figures as F
from microcal_hpc.report import tables as T
from microcal_hpc.report.collect import RunCollection, collect_run, packed_path
from microcal_hpc.report.render import Box, Figure, Paragraph, Pre, Report, Section, figure_list

log = logging.getLogger("microcal.aggregate")

VERSION_PACKAGES = ("tensorflow-cpu", "tensorflow", "numpy", "scikit-learn", "h5py", "PyWavelets", "matplotlib",
                    "submitit", "mpi4py", "horovod")


def environment_versions() -> dict[str, str]:
    """Versions of Python and the main libraries installed where the report is built."""
    out = {"python": platform.python_version(), "microcal-hpc": __version__}
    for p in VERSION_PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            pass
    return out


def git_commit() -> Optional[str]:
    """Commit of the repository this package runs from (None outside a git checkout)."""
    here = Path(__file__).resolve().parents[2]
    try:
        r = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return r.stdout.strip() + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


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
        rows += [{"item": k, "value": v, "source": "report environment"} for k, v in environment_versions().items()]
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


def build_report(cfg: Config, run_dir: str | Path, out_dir: str | Path) -> tuple[Report, dict[str, Any], RunCollection]:
    """Collect the run, recompute the tables, write the figures into ``out_dir/figures``, lay out the report."""
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

    # ---------------- Run summary
    from microcal_hpc.dataset import file_sha256

    packed_sha = file_sha256(coll.packed) if coll.packed else None
    summary = Section("summary", "1. Run summary")
    summary.blocks.append(_status_box(coll))
    summary.blocks.append(Paragraph(
        f"Run directory {run_dir.resolve()}; report built {_dt.datetime.now().isoformat(timespec='seconds')}. "
        "Every number in the tables is recomputed from the stored predictions (predictions.npz) with "
        "microcal_hpc.metrics; each table states the images, runs or folds it rests on."))
    summary.blocks.append(T.model_output_table(coll))
    summary.blocks.append(T.job_table(coll))
    summary.blocks.append(provenance_table(coll, packed_sha))
    cfg_text = coll.config_text if coll.config_text is not None else yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    summary.blocks.append(Pre("Configuration as used (config.yaml of the run)" if coll.config_text is not None
                              else "Configuration (the run has no config.yaml: the configuration given to aggregate)",
                              cfg_text))

    # ---------------- Data
    data = Section("data", "2. Data")
    D = None
    if coll.packed:
        D = T.data_summary(coll.packed, cfg)
        partition, folds, integ, codes = D.tables
        data.blocks.append(partition)
        p = fig("data_partition", F.data_partition, D)
        data.blocks.append(Figure("data_partition.png", p, "Left: patches per split and label. Right: distribution "
                                  "of each patch's mean grey level by split (solid Train, dashed Test) and label."))
        p = fig("patch_grid", F.patch_grid, D.train_images, D.train_labels, cfg.report.gallery_size, cfg.report.seed)
        if p:
            data.blocks.append(Figure("patch_grid.png", p, f"Random Train patches (seed {cfg.report.seed}): "
                                      f"{2 * cfg.report.gallery_size} of each class, frame colour = class."))
        data.blocks += [integ, codes, folds]
    else:
        data.blocks.append(Box("Packed data not found", [f"{packed_path(cfg, run_dir)} is absent: no data tables, "
                                                         "patch grid or gallery"]))

    # ---------------- CNN
    cnn = Section("cnn", "3. CNN")
    cnn.blocks.append(T.cnn_study_table(S))
    cnn.blocks.append(T.cnn_loss_table(S))
    p = fig("learning_curves", F.learning_curves, S)
    if p:
        cnn.blocks.append(Figure("learning_curves.png", p, "Loss and accuracy per epoch: training (solid; Keras' "
                                 "running mean over the epoch) and validation (dashed; hold-out or held-out fold)."))
    cm_models = list(S.cnn_single)
    best_w = S.wavelet.get(S.best_wavelet) if S.best_wavelet else None
    if best_w:
        cm_models.append(T.ModelSummary(best_w.run, f"Best wavelet: {F._wavelet_label(best_w)}", best_w.threshold,
                                        test=best_w.test))
    for k, b in S.baseline.items():
        cm_models.append(T.ModelSummary(b.run, f"Baseline: {k}", b.threshold, test=b.test))
    p = fig("confusion_matrices", F.confusion_matrices, cm_models)
    if p:
        cnn.blocks.append(Figure("confusion_matrices.png", p, "Confusion matrices on the official Test set "
                                 "(counts and percentage of the true class)."))
    curves = [(s.label, s.run.test, F.CNN_SHADES[i % len(F.CNN_SHADES)], "-") for i, s in enumerate(S.cnn_single)]
    if best_w:
        curves.append((f"Best wavelet: {F._wavelet_label(best_w)}", best_w.run.test, F._wavelet_colour(best_w), "--"))
    for k, b in S.baseline.items():
        curves.append((f"Baseline: {k}", b.run.test, F.ARM_COLOURS["baseline"], ":"))
    p = fig("roc_test", F.roc_single, curves)
    if p:
        cnn.blocks.append(Figure("roc_test.png", p, "ROC curves of the single runs on the official Test set.",
                                 half=True))
    cv_groups = []
    if S.cnn_folds:
        cv_groups.append(("CNN", {k: s.run.val for k, s in S.cnn_folds.items()}, F.ARM_COLOURS["cnn"]))
    if best_w:
        cv_groups.append((f"Wavelet: {F._wavelet_label(best_w)}", best_w.cv_preds, F._wavelet_colour(best_w)))
    for k, b in S.baseline.items():
        if b.cv_preds:
            cv_groups.append((f"Baseline: {k}", b.cv_preds, F.ARM_COLOURS["baseline"]))
    p = fig("roc_cv", F.roc_cv, cv_groups, expected_folds=S.expected_folds)
    if p:
        cnn.blocks.append(Figure("roc_cv.png", p, "Mean cross-validation ROC (true positive rate interpolated on a "
                                 "common false-positive-rate grid, averaged over folds) with a ±1 std band.",
                                 half=True))

    # ---------------- Wavelet
    wav = Section("wavelet", "4. Wavelet classifiers")
    wts = T.wavelet_tables(S)
    if wts:
        wav.blocks.append(Paragraph(f"Features: {cfg.wavelet.wavelet} wavelet, level {cfg.wavelet.level}, detail levels "
                                    f"{cfg.wavelet.keep_levels} ('coeffs': the coefficients; 'stats': statistics of "
                                    "each sub-band). The best classifier by CV AUC is in bold."))
    wav.blocks += wts or [Box("No wavelet classifier outputs", ["wavelet/<feature_set>/<classifier>/ absent"])]
    p = fig("wavelet_bars", F.wavelet_bars, S)
    if p:
        wav.blocks.append(Figure("wavelet_bars.png", p, "Wavelet classifiers: CV AUC mean ± std (bars) and official-"
                                 "Test AUC (diamonds); black frame: best by CV AUC; dashed: CNN CV AUC; dotted: grey-level shortcut "
                                 "baseline CV AUC."))

    # ---------------- Comparison
    cmp = T.comparison(S, cfg)
    comp = Section("comparison", "5. CNN versus wavelet")
    comp.blocks += [Paragraph(cmp.text), cmp.folds, cmp.test]

    # ---------------- Shortcut baseline
    short_table, short_text = T.shortcut_table(S)
    short = Section("shortcut", "6. Shortcut baseline")
    short.blocks += [Paragraph(short_text), short_table]

    # ---------------- Gallery
    gal = Section("gallery", "7. Classified Test patches")
    off = S.official
    if D is not None and off is not None and off.run.test is not None:
        p = fig("gallery", F.gallery, F.images_by_id(D.test_ids, D.test_images), off.run.test, off.threshold,
                cfg.report.gallery_size, cfg.report.seed, model_label="CNN (official run)")
        if p:
            gal.blocks.append(Figure("gallery.png", p, "Correctly and incorrectly classified Test patches of the "
                                     "official CNN run with their scores P(cluster)."))
    if not gal.blocks:
        gal.blocks.append(Box("No gallery", ["needs the official CNN run and the packed data"]))

    for f in fig_dir.glob("*.png"):
        if f.name not in produced:
            f.unlink()
    sections = [summary, data, cnn, wav, comp, short, gal]
    report = Report("Microcalcification clusters: CNN versus wavelet classifiers",
                    f"Run directory '{run_dir.name}': " + ("complete run" if coll.complete
                                                           else "PARTIAL run (see the box below)"),
                    sections)
    metrics = {
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
        "paired_test": cmp.paired,
        "packed_sha256": packed_sha,
        "data_integrity": D.integrity if D else None,
        "tables": T.table_values(report.tables()),
        "figures": figure_list(report),
    }
    return report, metrics, coll
