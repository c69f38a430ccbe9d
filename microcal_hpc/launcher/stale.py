"""Stale results: outputs computed with other settings than the campaign's.

Every job records the settings it ran with (:attr:`JobKind.recorded`): the CNN, classifier and baseline
folders hold ``config.yaml``, the features file and the packed file hold theirs as HDF5 attributes, the
report is built from the run's ``config.yaml``. A job whose recorded values differ from its spec's Config,
for the keys its kind depends on (:attr:`JobKind.settings`), is stale; so is a job whose upstream job is
stale (it read that job's old outputs). :func:`changes` lists the differences as ``train.epochs 25 -> 50``.

A stale job is run again. ``submit`` first moves everything the job owns to
``RUN/superseded/<date-time>/`` (same relative paths), so nothing is overwritten or lost and the report
only shows results of the current settings (:func:`supersede`).
"""
from __future__ import annotations

import datetime as _dt
import glob
import shutil
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from microcal_hpc.launcher.jobkinds import KINDS, SPEED_ONLY
from microcal_hpc.launcher.plan import JobSpec

SUPERSEDED = "superseded"

_FEATURES_ATTRS = ("wavelet", "level", "keep_levels", "mode", "features", "dtype", "engine")


def owned_paths(spec: JobSpec) -> list[Path]:
    """The existing files and folders ``spec`` owns (its ``owned`` patterns expanded)."""
    out: list[Path] = []
    for pattern in spec.owned:
        out += [Path(p) for p in sorted(glob.glob(pattern))] if "*" in pattern else [Path(pattern)]
    return [p for p in dict.fromkeys(out) if p.exists()]


def _flatten(config: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in config.items() if isinstance(values, dict)
            for key, value in values.items()}


def _read_yaml(path: Path) -> Optional[dict[str, Any]]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return _flatten(data) if isinstance(data, dict) else None


def _read_attrs(path: Path) -> Optional[dict[str, Any]]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in f.attrs.items()}
    except (OSError, ValueError):
        return None


def recorded_settings(spec: JobSpec) -> list[tuple[Path, dict[str, Any]]]:
    """(where, {dotted key: value}) of every record of the settings ``spec``'s existing outputs ran with."""
    how = KINDS[spec.kind].recorded
    found: list[tuple[Path, Optional[dict[str, Any]]]] = []
    if how == "config.yaml":
        found = [(p / "config.yaml", _read_yaml(p / "config.yaml")) for p in owned_paths(spec) if p.is_dir()]
    elif how == "run config":
        found = [(Path(spec.run_dir) / "config.yaml", _read_yaml(Path(spec.run_dir) / "config.yaml"))]
    elif how == "packed file":
        attrs = _read_attrs(Path(spec.outputs[0])) if Path(spec.outputs[0]).is_file() else None
        if attrs is not None:
            names = {"data.root": "source_root", "data.group_pattern": "group_pattern",
                     "data.case_pattern": "case_pattern"}
            found = [(Path(spec.outputs[0]), {k: attrs[a] for k, a in names.items() if a in attrs})]
    elif how == "features file":
        attrs = _read_attrs(Path(spec.outputs[0])) if Path(spec.outputs[0]).is_file() else None
        if attrs is not None:
            found = [(Path(spec.outputs[0]), {f"wavelet.{a}": attrs[a] for a in _FEATURES_ATTRS if a in attrs}
                      | ({"input_digest": attrs["input_digest"]} if "input_digest" in attrs else {}))]
    return [(where, values) for where, values in found if values is not None]


def _keys(spec: JobSpec, current: dict[str, Any]) -> list[str]:
    keys: list[str] = []
    for setting in KINDS[spec.kind].settings:
        keys += [k for k in current if k.startswith(setting + ".")] if "." not in setting else [setting]
    return [k for k in dict.fromkeys(keys) if k not in SPEED_ONLY]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return sorted(map(str, a)) == sorted(map(str, b))  # order does not change what is computed
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return "null" if value is None else repr(value) if value == "" else str(value)


def changes(spec: JobSpec) -> list[str]:
    """``key old -> new`` for every setting ``spec``'s outputs were computed with that differs from its Config."""
    current = _flatten(spec.config.to_dict())
    keys = _keys(spec, current)
    out: list[str] = []
    for _where, recorded in recorded_settings(spec):
        if "input_digest" in recorded:
            current_digest = _input_digest(spec.args[0])
            if current_digest and recorded["input_digest"] != current_digest:
                out.append(f"packed data {str(recorded['input_digest'])[:12]} -> {current_digest[:12]} (input_digest)")
        for key in keys:
            if key in recorded and not _same(recorded[key], current[key]):
                out.append(f"{key} {_show(recorded[key])} -> {_show(current[key])}")
    return list(dict.fromkeys(out))


def _input_digest(packed: str) -> Optional[str]:
    """The features' view of a packed file's content (None when it cannot be read yet)."""
    from microcal_hpc.errors import MicrocalError
    from microcal_hpc.wavelet.features_file import input_digest

    if not Path(packed).is_file():
        return None
    try:
        return input_digest(packed)
    except (MicrocalError, OSError, KeyError, ValueError):
        return None


def stale_jobs(specs: Iterable[JobSpec]) -> dict[str, list[str]]:
    """{key: reasons} of the stale jobs among ``specs`` (a plan: dependencies first, so that staleness
    propagates along ``afterok`` dependencies to jobs that have outputs)."""
    stale: dict[str, list[str]] = {}
    for spec in specs:
        reasons = changes(spec)
        upstream = [k for k in spec.depends_on if k in stale] if spec.dependency == "afterok" else []
        if upstream and owned_paths(spec):
            reasons.append(f"{', '.join(upstream)} re-run{'s' if len(upstream) == 1 else ''}")
        if reasons:
            stale[spec.key] = reasons
    return stale


def supersede(specs: Iterable[JobSpec], run_dir: str) -> tuple[Path, list[tuple[Path, Path]]]:
    """Move what ``specs`` own to ``RUN/superseded/<date-time>/`` (same relative paths; files outside
    the run directory under ``external/``); return that folder and the (from, to) pairs."""
    run = Path(run_dir)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = run / SUPERSEDED / stamp
    n = 1
    while base.exists():
        n += 1
        base = run / SUPERSEDED / f"{stamp}-{n}"
    moved = []
    for spec in specs:
        for path in owned_paths(spec):
            try:
                rel = path.resolve().relative_to(run.resolve())
            except ValueError:
                rel = Path("external") / path.name
            dest = base / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(dest))
            moved.append((path, dest))
    return base, moved
