"""Read a run directory (complete or partial) into plain data for the report.

Layout: docs/outputs.md. A model job (CNN, wavelet classifier, baseline) is complete when its
``metrics.json`` exists; its ``predictions.npz`` holds what the tables are recomputed from. Jobs the
config asks for but whose outputs are absent are listed as missing; launcher records whose state is
not a success are listed as failed or unfinished. Nothing here raises on a partial run: problems are
collected in :attr:`RunCollection.problems` for the report to show.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import yaml

from microcal_hpc.config import Config
from microcal_hpc.errors import InputError
from microcal_hpc.launcher import records
from microcal_hpc.launcher.plan import packed_path

PREDICTION_SPLITS = ("test", "val")
# launcher/SLURM states: success, still going, everything else is a failure. Still going: the launcher's
# own list (SUBMITTING, PENDING, RUNNING, REQUEUE_HOLD, ...) and spellings of records written by hand.
SUCCESS_STATES = {"COMPLETED", "DONE", "FINISHED", "SUCCESS", "SUCCEEDED", "CACHED"}  # SKIPPED: a dependency failed
ACTIVE_STATES = set(records.ACTIVE) | {"SUBMITTED", "QUEUED", "UNKNOWN", "READY"}


@dataclass
class Predictions:
    """One split of a model's stored predictions (rows in HDF5 order)."""

    ids: np.ndarray
    labels: np.ndarray
    prob: np.ndarray
    groups: np.ndarray
    fold: Optional[np.ndarray] = None  # validation rows only: fold of each row

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, mask: np.ndarray) -> "Predictions":
        return Predictions(self.ids[mask], self.labels[mask], self.prob[mask], self.groups[mask],
                           None if self.fold is None else self.fold[mask])


@dataclass
class ModelRun:
    """One model job's folder: its metrics.json, predictions and (CNN) training history."""

    arm: str  # cnn | wavelet | baseline
    name: str  # cnn: official | fold-k | augment-<preset>; wavelet: <feature_set>/<clf>; baseline: <name>
    path: Path
    metrics: dict[str, Any]
    test: Optional[Predictions] = None
    val: Optional[Predictions] = None
    history: Optional[dict[str, list[float]]] = None
    problems: list[str] = field(default_factory=list)  # e.g. predictions.npz missing a field

    @property
    def model(self) -> str:
        return str(self.metrics.get("model") or self.name.split("/")[-1])

    @property
    def feature_set(self) -> Optional[str]:
        return self.metrics.get("feature_set") or (self.name.split("/")[0] if self.arm == "wavelet" else None)

    @property
    def fold(self) -> Optional[int]:
        f = self.metrics.get("fold")
        if f is None and self.name.startswith("fold-"):
            try:
                return int(self.name.split("-", 1)[1])
            except ValueError:
                return None
        return None if f is None else int(f)

    def threshold(self, part: str = "test") -> float:
        """Decision threshold the job used (``metrics.json`` METRICS.threshold; 0.5 if absent)."""
        for key in (part, "test", "validation"):
            m = self.metrics.get(key)
            if isinstance(m, dict) and m.get("threshold") is not None:
                return float(m["threshold"])
        cv = self.metrics.get("cv") or {}
        for m in cv.get("per_fold") or []:
            if isinstance(m, dict) and m.get("threshold") is not None:
                return float(m["threshold"])
        return 0.5


@dataclass
class JobRecord:
    """One launcher record ``RUN/jobs/<job>.json``, normalised."""

    key: str  # RUN/jobs/<key>.json
    name: str
    stage: str
    state: str
    job_id: str
    elapsed_s: Optional[float]
    node: str
    log: str  # the job's own log file when recorded, else the launcher's stderr file
    error: str
    path: Path
    raw: dict[str, Any]

    @property
    def is_report(self) -> bool:
        """The aggregate job's own record (RUNNING while the report is built: not a problem of the run)."""
        return self.key == "aggregate" or self.stage == "report"

    @property
    def failed(self) -> bool:
        return not self.is_report and self.state.upper() not in SUCCESS_STATES | ACTIVE_STATES

    @property
    def unfinished(self) -> bool:
        return not self.is_report and self.state.upper() in ACTIVE_STATES


@dataclass
class RunCollection:
    """Everything the report reads from one run directory."""

    run_dir: Path
    config_text: Optional[str]  # RUN/config.yaml as written by the campaign (None: absent)
    config_dict: Optional[dict[str, Any]]
    manifest: Optional[dict[str, Any]]
    packed: Optional[Path]  # RUN/data/packed.h5 (or cfg.data.packed) when it exists
    cnn: dict[str, ModelRun]
    wavelet: dict[str, ModelRun]  # key "<feature_set>/<clf>"
    baseline: dict[str, ModelRun]
    jobs: list[JobRecord]
    expected: dict[str, list[str]]  # arm -> expected job names (from the config)
    missing: list[str]  # "cnn/fold-3": expected, no output folder at all
    incomplete: list[str]  # "cnn/augment-flips: no metrics.json" and the like
    problems: list[str]  # every other reading problem (unreadable JSON, contract mismatches ...)

    @property
    def failed_jobs(self) -> list[JobRecord]:
        return [j for j in self.jobs if j.failed]

    @property
    def unfinished_jobs(self) -> list[JobRecord]:
        return [j for j in self.jobs if j.unfinished]

    @property
    def complete(self) -> bool:
        return not (self.missing or self.incomplete or self.failed_jobs or self.unfinished_jobs)

    def cnn_folds(self) -> dict[int, ModelRun]:
        """Complete CNN fold jobs by 0-based fold index."""
        out = {}
        for run in self.cnn.values():
            if run.name.startswith("fold-") and run.fold is not None and run.val is not None:
                out[run.fold] = run
        return dict(sorted(out.items()))

    def expected_folds(self) -> int:
        """Number of CNN CV folds the campaign asked for (0: none)."""
        return len(self.expected.get("cnn_folds", []))

    def status_lines(self) -> list[str]:
        """One human-readable line per missing/failed/unfinished/incomplete item."""
        lines = [f"missing: {m} (expected by the config, no output)" for m in self.missing]
        lines += [f"incomplete: {m}" for m in self.incomplete]
        lines += [f"failed job: {j.stage + '/' if j.stage else ''}{j.name} (state {j.state}"
                  + (f": {j.error}" if j.error else "") + f"; log {j.log or 'n/a'})" for j in self.failed_jobs]
        lines += [f"not finished: {j.name} (state {j.state})" for j in self.unfinished_jobs]
        return lines


# ----------------------------------------------------------------------------------------------
# Readers


def _read_json(path: Path, problems: list[str]) -> Optional[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        problems.append(f"{path}: unreadable JSON ({e})")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path}: expected a JSON object")
        return None
    return data


def _strs(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(str)


def read_predictions(path: Path, problems: list[str]) -> Optional[dict[str, Optional[Predictions]]]:
    """``predictions.npz`` -> {"test": Predictions | None, "val": Predictions | None}; None when the file
    cannot be read (truncated or damaged: the job's outputs are incomplete), with the reason in ``problems``."""
    try:
        return _read_predictions(path, problems)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
        problems.append(f"{path}: unreadable predictions ({type(e).__name__}: {e})")
        return None


def _read_predictions(path: Path, problems: list[str]) -> dict[str, Optional[Predictions]]:
    out: dict[str, Optional[Predictions]] = {"test": None, "val": None}
    with np.load(path, allow_pickle=False) as z:
        keys = set(z.files)
        for part in PREDICTION_SPLITS:
            need = [f"{part}_{f}" for f in ("ids", "labels", "prob")]
            present = [k for k in need if k in keys]
            if not present:
                continue
            if len(present) < len(need):
                problems.append(f"{path}: {part} predictions lack {sorted(set(need) - keys)}")
                continue
            ids, labels, prob = _strs(z[f"{part}_ids"]), np.asarray(z[f"{part}_labels"]).astype(int), \
                np.asarray(z[f"{part}_prob"], dtype=float).ravel()
            if f"{part}_groups" in keys:
                groups = _strs(z[f"{part}_groups"])
            else:
                problems.append(f"{path}: {part}_groups missing (contract: docs/outputs.md); using one group per image")
                groups = ids.copy()
            fold = None
            if part == "val":
                if "val_fold" in keys:
                    fold = np.asarray(z["val_fold"]).astype(int)
                else:
                    problems.append(f"{path}: val_fold missing (contract: docs/outputs.md)")
            lens = {len(ids), len(labels), len(prob), len(groups)} | ({len(fold)} if fold is not None else set())
            if len(lens) != 1:
                problems.append(f"{path}: {part} arrays differ in length {sorted(lens)}")
                continue
            out[part] = Predictions(ids, labels, prob, groups, fold)
    return out


def normalise_history(raw: Any) -> Optional[dict[str, list[float]]]:
    """Keras-style history as {"epoch": [...], "loss": [...], "accuracy": [...], "val_loss": ..., ...}.

    Accepts a dict of per-epoch lists (``History.history``), a dict holding such a dict under
    ``history``, or a list of per-epoch dicts (``{"epoch": 3, "loss": ...}``).
    """
    if isinstance(raw, dict) and isinstance(raw.get("history"), (dict, list)):
        raw = raw["history"]
    if isinstance(raw, dict) and isinstance(raw.get("epochs"), list) and raw["epochs"] and isinstance(raw["epochs"][0], dict):
        raw = raw["epochs"]
    series: dict[str, list[float]] = {}
    if isinstance(raw, list):
        rows = [r for r in raw if isinstance(r, dict)]
        keys = sorted({k for r in rows for k in r})
        for k in keys:
            series[k] = [r.get(k, float("nan")) for r in rows]
    elif isinstance(raw, dict):
        for k, v in raw.items():
            if isinstance(v, list) and all(isinstance(x, (int, float)) or x is None for x in v):
                series[k] = v
    else:
        return None
    for old, new in (("acc", "accuracy"), ("val_acc", "val_accuracy")):
        if old in series and new not in series:
            series[new] = series.pop(old)
    n = max((len(v) for v in series.values()), default=0)
    if n == 0:
        return None
    out = {k: [float("nan") if x is None else float(x) for x in v] for k, v in series.items() if len(v) == n}
    if "epoch" in out:
        out["epoch"] = [e + 1 for e in out["epoch"]] if min(out["epoch"]) == 0 else out["epoch"]
    else:
        out["epoch"] = [float(i + 1) for i in range(n)]
    return out


def read_model_run(folder: Path, arm: str, name: str, problems: list[str]) -> tuple[Optional[ModelRun], Optional[str]]:
    """(ModelRun, None) for a complete job folder; (None, reason) otherwise."""
    mpath = folder / "metrics.json"
    if not mpath.is_file():
        return None, "no metrics.json (job not finished or failed)"
    local: list[str] = []
    metrics = _read_json(mpath, local)
    if metrics is None:
        return None, "; ".join(local)
    if metrics.get("schema") != 1:
        local.append(f"{mpath}: schema {metrics.get('schema')!r}, this report reads schema 1")
    if metrics.get("arm") not in (None, arm):
        local.append(f"{mpath}: arm {metrics.get('arm')!r} in the folder of arm {arm!r}")
    ppath = folder / "predictions.npz"
    if not ppath.is_file():
        return None, "metrics.json present but predictions.npz missing"
    preds = read_predictions(ppath, local)
    if preds is None:
        return None, "; ".join(local)
    run = ModelRun(arm=arm, name=name, path=folder, metrics=metrics, test=preds["test"], val=preds["val"])
    if run.test is None:
        local.append(f"{ppath}: no test predictions")
    hpath = folder / "history.json"
    if arm == "cnn":
        if hpath.is_file():
            raw = _read_json(hpath, local)
            run.history = normalise_history(raw) if raw is not None else None
            if raw is not None and run.history is None:
                local.append(f"{hpath}: no per-epoch series found")
        else:
            local.append(f"{hpath}: missing (contract: CNN folders hold history.json)")
    run.problems = local
    problems.extend(local)
    return run, None


def _elapsed(raw: dict[str, Any]) -> Optional[float]:
    for k in ("elapsed_s", "elapsed", "duration_s", "runtime_s"):
        v = raw.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    times = raw.get("times") if isinstance(raw.get("times"), dict) else raw
    start = times.get("start") or times.get("started") or times.get("start_time")
    end = times.get("end") or times.get("ended") or times.get("end_time")
    if start is None or end is None:
        return None

    def ts(v: Any) -> Optional[float]:
        if isinstance(v, (int, float)):
            return float(v)
        try:
            return _dt.datetime.fromisoformat(str(v)).timestamp()
        except ValueError:
            return None

    s, e = ts(start), ts(end)
    return None if s is None or e is None else e - s


def read_job_records(jobs_dir: Path, problems: list[str]) -> list[JobRecord]:
    """Every ``RUN/jobs/*.json`` launcher record, normalised (sorted by stage then name)."""
    out = []
    if not jobs_dir.is_dir():
        return out
    for p in sorted(jobs_dir.glob("*.json")):
        raw = _read_json(p, problems)
        if raw is None:
            continue
        state = raw.get("state") or raw.get("status")
        if state is None:
            problems.append(f"{p}: no 'state' (contract: launcher records hold stage, name, state, job id, times, log)")
            state = "UNKNOWN"
        log = raw.get("job_log") or raw.get("log") or raw.get("log_err") or raw.get("log_path") or ""
        out.append(JobRecord(
            key=str(raw.get("key") or p.stem), name=str(raw.get("name") or p.stem), stage=str(raw.get("stage") or ""),
            state=str(state).upper(), job_id=str(raw.get("job_id") or raw.get("jobid") or ""),
            elapsed_s=_elapsed(raw), node=str(raw.get("node") or raw.get("host") or raw.get("nodes") or ""),
            log=str(log), error=str(raw.get("error") or ""), path=p, raw=raw))
    return out


def expected_jobs(cfg: Config) -> dict[str, list[str]]:
    """Model jobs the config asks for, by arm (names as in docs/outputs.md), from the campaign's one
    declaration of its jobs (:mod:`microcal_hpc.launcher.jobkinds`); "cnn_folds": the CNN's CV fold jobs."""
    from microcal_hpc.launcher.jobkinds import expected_model_folders

    return expected_model_folders(cfg)


def _model_folders(arm_dir: Path, depth: int) -> list[tuple[str, Path]]:
    """(name, folder) of every job folder below an arm's directory (depth 1: cnn/x, 2: wavelet/fs/clf)."""
    if not arm_dir.is_dir():
        return []
    if depth == 1:
        return [(p.name, p) for p in sorted(arm_dir.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    out = []
    for fs in sorted(arm_dir.iterdir()):
        if fs.is_dir() and not fs.name.startswith("."):
            out += [(f"{fs.name}/{p.name}", p) for p in sorted(fs.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return out


def collect_run(run_dir: str | os.PathLike, cfg: Config) -> RunCollection:
    """Read every output of ``run_dir``; raise InputError only if the folder does not exist."""
    run = Path(run_dir)
    if not run.is_dir():
        raise InputError(f"{run}: run directory not found")
    problems: list[str] = []
    cfg_path = run / "config.yaml"
    config_text = cfg_path.read_text(encoding="utf-8") if cfg_path.is_file() else None
    config_dict = None
    if config_text is not None:
        try:
            config_dict = yaml.safe_load(config_text)
        except yaml.YAMLError as e:
            problems.append(f"{cfg_path}: invalid YAML ({str(e).splitlines()[0]})")
    manifest = _read_json(run / "manifest.json", problems) if (run / "manifest.json").is_file() else None
    packed = Path(packed_path(cfg, run))

    found: dict[str, dict[str, ModelRun]] = {"cnn": {}, "wavelet": {}, "baseline": {}}
    incomplete: list[str] = []
    seen: dict[str, set[str]] = {arm: set() for arm in found}
    for arm, depth in (("cnn", 1), ("wavelet", 2), ("baseline", 1)):
        for name, folder in _model_folders(run / arm, depth):
            seen[arm].add(name)
            model, reason = read_model_run(folder, arm, name, problems)
            if model is None:
                incomplete.append(f"{arm}/{name}: {reason}")
            else:
                found[arm][name] = model
    expected = expected_jobs(cfg)
    missing = [f"{arm}/{name}" for arm in ("cnn", "wavelet", "baseline") for name in expected[arm]
               if name not in seen[arm]]
    jobs = read_job_records(run / "jobs", problems)
    return RunCollection(run_dir=run, config_text=config_text, config_dict=config_dict, manifest=manifest,
                         packed=packed if packed.is_file() else None, cnn=found["cnn"], wavelet=found["wavelet"],
                         baseline=found["baseline"], jobs=jobs, expected=expected, missing=missing,
                         incomplete=incomplete, problems=problems)


def input_fingerprint(run_dir: str | os.PathLike, packed: str | os.PathLike | None = None) -> str:
    """A hash of the names, sizes and modification times of every input the report reads, and of the code
    that reads them (:func:`microcal_hpc.provenance.source_digest`: other code builds the report again).

    ``packed``: the packed data file the report reads (:func:`microcal_hpc.launcher.plan.packed_path`) when it may lie outside the
    run directory (``data.packed``); RUN/data/packed.h5 is always included. Left out: the aggregate job's own launcher record and manifest.json, which the launcher updates
    while and after the report is built (state, end time); a new submission adds other records anyway.
    """
    import hashlib

    from microcal_hpc.provenance import source_digest

    run = Path(run_dir)
    h = hashlib.sha256()
    h.update(f"code|{source_digest()}\n".encode())
    pats = ["config.yaml", "data/packed.h5", "jobs/*.json", "cnn/*/*.json", "cnn/*/predictions.npz", "cnn/*/saliency.npz",
            "wavelet/*/*/*.json", "wavelet/*/*/predictions.npz", "baseline/*/*.json", "baseline/*/predictions.npz"]
    for pat in pats:
        for p in sorted(run.glob(pat)):
            if p.parent.name == "jobs" and p.stem == "aggregate":
                continue
            st = p.stat()
            h.update(f"{p.relative_to(run)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    if packed is not None and Path(packed).is_file() and Path(packed).resolve() != (run / "data" / "packed.h5").resolve():
        st = Path(packed).stat()
        h.update(f"{Path(packed).resolve()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]
