"""The campaign as a DAG of job specs, built from the Config alone (no cluster, no TensorFlow).

::

    pack ──┬── cnn/official
           ├── cnn/fold-0 .. fold-(k-1)         one job array
           ├── cnn/augment-<preset> ...         one job array
           ├── wavelet/features (MPI) ── wavelet/classify
           └── baseline (baseline/<name> for each of baseline.BASELINES)
                                       └── all of them ──(afterany)── report/aggregate

Every job is a :class:`JobSpec`: where it sits (stage, name), which resources it needs (job type),
what to call (a ``module:function`` name, the job's own Config, positional arguments) and what it
waits for. Specs are plain picklable data; :func:`microcal_hpc.launcher.worker.run_spec` runs one.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from microcal_hpc.baseline import BASELINES
from microcal_hpc.config import Config
from microcal_hpc.errors import ConfigError

# stages in campaign order (status tables sort by this)
STAGES = ("pack", "cnn", "wavelet", "baseline", "report")


@dataclass
class JobSpec:
    """One job of the campaign.

    ``key`` is unique in the campaign and names the record ``RUN/jobs/<key>.json``. ``function`` is
    ``"module:function"``, called as ``function(config, *args)``. ``array`` names the job array the
    spec belongs to (specs with the same array are submitted together, as one SLURM array).
    ``outputs`` are the files whose existence means the job is complete (written last, atomically).
    """

    key: str
    stage: str
    name: str
    job_type: str  # resource section: pack | train | wavelet_features | wavelet_classify | aggregate
    function: str
    config: Config
    args: tuple[str, ...]
    outputs: tuple[str, ...]
    depends_on: tuple[str, ...] = ()
    dependency: str = "afterok"  # afterok | afterany (aggregate: runs whatever happened before)
    array: Optional[str] = None
    tasks: int = 1  # MPI ranks (wavelet features)
    checkpointable: bool = False  # resumable: requeued on preemption/time-out
    job_log: str = ""  # the job's own log file (besides the launcher's stdout/stderr)
    run_dir: str = ""

    def is_complete(self) -> bool:
        """True when every output exists."""
        return bool(self.outputs) and all(Path(p).exists() for p in self.outputs)


@dataclass
class Plan:
    """The ordered job specs of one campaign (dependencies always come first)."""

    run_dir: str
    specs: list[JobSpec] = field(default_factory=list)

    def __iter__(self):
        return iter(self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def keys(self) -> list[str]:
        return [s.key for s in self.specs]

    def get(self, key: str) -> JobSpec:
        for s in self.specs:
            if s.key == key:
                return s
        raise KeyError(key)

    def groups(self, specs: Optional[Iterable[JobSpec]] = None) -> list[list[JobSpec]]:
        """Submission units in order: each array's specs together, every other spec alone."""
        out: list[list[JobSpec]] = []
        index: dict[str, list[JobSpec]] = {}
        for s in self.specs if specs is None else specs:
            if s.array:
                if s.array not in index:
                    index[s.array] = []
                    out.append(index[s.array])
                index[s.array].append(s)
            else:
                out.append([s])
        return out


def _abs(path: str) -> str:
    return str(Path(path).expanduser().resolve()) if path else path


def packed_path(cfg: Config, run_dir: str | os.PathLike) -> str:
    """The packed HDF5 file of a campaign: ``data.packed`` or ``RUN/data/packed.h5``."""
    return _abs(cfg.data.packed) if cfg.data.packed else str(Path(run_dir) / "data" / "packed.h5")


def resolve_paths(cfg: Config) -> Config:
    """A copy of ``cfg`` with data.root, data.packed and campaign.run_dir absolute (jobs run elsewhere)."""
    cfg = copy.deepcopy(cfg)
    cfg.data.root = _abs(cfg.data.root)
    cfg.data.packed = _abs(cfg.data.packed)
    cfg.campaign.run_dir = _abs(cfg.campaign.run_dir)
    return cfg


def align_folds(cfg: Config) -> Config:
    """Make fold k the same images in every arm: one number of folds, one grouping, one seed.

    The campaign's ``cv_folds`` (when > 0) sets ``train.folds`` and ``classify.folds``; the wavelet
    classifiers and the baseline take ``train.group_by`` and ``train.seed`` for their splitter. A
    campaign whose ``classify.*`` said otherwise is corrected here, in place, and the change is logged.
    """
    import logging

    t, c = cfg.train, cfg.classify
    if cfg.campaign.cv_folds:
        t.folds = cfg.campaign.cv_folds
    changed = [f"classify.{k}: {getattr(c, k)!r} -> {getattr(t, k)!r}" for k in ("folds", "group_by", "seed")
               if getattr(c, k) != getattr(t, k)]
    if changed:
        logging.getLogger("microcal.launcher").warning(
            "so that both arms use the same folds: %s", "; ".join(changed))
    c.folds, c.group_by, c.seed = t.folds, t.group_by, t.seed
    return cfg


def build_plan(cfg: Config, run_dir: str | os.PathLike | None = None) -> Plan:
    """The campaign's job specs, in submission order. Pure: reads nothing but ``cfg`` (and, to decide
    whether a pack job is needed without a data root, whether the packed file exists)."""
    cfg = resolve_paths(cfg)
    run = Path(_abs(str(run_dir)) if run_dir else cfg.campaign.run_dir)
    cfg.campaign.run_dir = str(run)
    align_folds(cfg)
    camp = cfg.campaign
    data = packed_path(cfg, run)
    plan = Plan(run_dir=str(run))
    add = plan.specs.append

    def job(key, stage, name, job_type, function, job_cfg, args, outputs, **kw) -> JobSpec:
        spec = JobSpec(key=key, stage=stage, name=name, job_type=job_type, function=function,
                       config=job_cfg, args=tuple(str(a) for a in args),
                       outputs=tuple(str(o) for o in outputs), run_dir=str(run), **kw)
        add(spec)
        return spec

    # 1. pack (pack_job itself returns at once when the HDF5 is current)
    upstream: tuple[str, ...] = ()
    if cfg.data.root:
        job("pack", "pack", "pack", "pack", "data_prep.pack:pack_job", cfg, [data], [data],
            job_log=str(Path(data).with_name(Path(data).stem + ".pack.log")))
        upstream = ("pack",)
    elif not Path(data).exists():
        raise ConfigError(f"data.root is empty and {data} does not exist: set data.root (the image tree) "
                          "or data.packed (an existing packed file)")

    # 2. CNN: official split, the k CV folds (one array), the augmentation presets (one array)
    cnn_dir = run / "cnn"

    def cnn_job(name: str, job_cfg: Config, array: Optional[str]) -> None:
        folder = cnn_dir / name
        job(f"cnn-{name}", "cnn", name, "train", "microcal_hpc.cnn.train:train_cnn", job_cfg,
            [data, cnn_dir, name], [folder / "metrics.json"], depends_on=upstream, array=array,
            checkpointable=True, job_log=str(folder / "train.log"))

    if camp.official:
        c = copy.deepcopy(cfg)
        c.train.fold = None
        cnn_job("official", c, None)
    for k in range(camp.cv_folds):
        c = copy.deepcopy(cfg)
        c.train.fold, c.train.folds = k, camp.cv_folds
        cnn_job(f"fold-{k}", c.validate(), "cnn-folds")
    for preset in camp.augment_presets:
        c = copy.deepcopy(cfg)
        c.train.fold, c.train.augment = None, preset
        cnn_job(f"augment-{preset}", c, "cnn-augment")

    # 3. wavelet features (MPI) -> classifiers; the baselines beside them
    if camp.wavelet:
        wdir = run / "wavelet"
        features = wdir / "features.h5"
        job("wavelet-features", "wavelet", "features", "wavelet_features", "microcal_hpc.wavelet.features_job:features_job",
            cfg, [data, features], [features], depends_on=upstream,
            tasks=cfg.resources("wavelet_features").tasks_per_node * cfg.resources("wavelet_features").nodes,
            job_log=str(wdir / "features.log"))
        outputs = [wdir / fs / clf / "metrics.json" for fs in cfg.classify.feature_sets
                   for clf in cfg.classify.classifiers]
        job("wavelet-classify", "wavelet", "classify", "wavelet_classify", "microcal_hpc.wavelet.classify:classify_job",
            cfg, [features, wdir], outputs, depends_on=("wavelet-features",), job_log=str(wdir / "classify.log"))
    if camp.baseline:
        bdir = run / "baseline"
        job("baseline", "baseline", "baseline", "wavelet_classify", "microcal_hpc.baseline:baseline_job",
            cfg, [data, bdir], [bdir / name / "metrics.json" for name in BASELINES], depends_on=upstream,
            job_log=str(bdir / "baseline.log"))

    # 4. the report, after every other job whatever its outcome (it reports failures too)
    others = tuple(s.key for s in plan.specs)
    job("aggregate", "report", "aggregate", "aggregate", "microcal_hpc.report.aggregate:aggregate_job", cfg, [run],
        [run / "report" / "report.html"], depends_on=others, dependency="afterany",
        job_log=str(run / "report" / "aggregate.log"))
    return plan


def selection(plan: Plan, complete: set[str], active: set[str]) -> list[JobSpec]:
    """The specs to (re)submit: neither complete nor active; the report whenever anything else runs.

    ``complete``: keys whose outputs exist or whose record says COMPLETED with outputs present;
    ``active``: keys pending/running on the cluster from an earlier submission (they are waited for,
    not resubmitted).
    """
    todo = [s for s in plan.specs if s.key not in complete and s.key not in active and s.key != "aggregate"]
    if any(s.key == "aggregate" for s in plan.specs) and "aggregate" not in active:
        if todo or "aggregate" not in complete:
            todo.append(plan.get("aggregate"))
    return todo
