"""The campaign as a DAG of job specs, built from the Config alone (no cluster, no TensorFlow).

::

    pack ──┬── cnn/official
           ├── cnn/official-seed-<S> ...        one job array (campaign.official_seeds)
           ├── cnn/fold-0 .. fold-(k-1)         one job array
           ├── cnn/augment-<preset> ...         one job array
           ├── wavelet/features (MPI) ── wavelet/classify
           └── baseline/greylevel-rf
                                       └── all of them ──(afterany)── report/aggregate

Which jobs exist, what runs them and what they write is declared once, in
:mod:`microcal_hpc.launcher.jobkinds`; this module turns that into :class:`JobSpec` objects with paths,
resources and the job's own Config. Specs are plain picklable data;
:func:`microcal_hpc.launcher.worker.run_spec` runs one, and ``spec.command`` is the ``microcal-hpc`` line
that runs the same job by hand (with the run's config.yaml, written at submission).
"""
from __future__ import annotations

import copy
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional

from microcal_hpc.config import Config, ResourceConfig, apply_overrides, config_from_dict
from microcal_hpc.errors import ConfigError
from microcal_hpc.launcher.jobkinds import KINDS, PlannedJob, campaign_jobs

# stages in campaign order (status tables sort by this)
STAGES = tuple(dict.fromkeys(k.stage for k in KINDS.values()))
# the command that runs one job by hand (the console script of this package)
PROGRAM = "microcal-hpc"


@dataclass
class JobSpec:
    """One job of the campaign.

    ``key`` is unique in the campaign and names the record ``RUN/jobs/<key>.json``. ``function`` is
    ``"module:function"``, called as ``function(config, *args)``; ``command`` is the ``microcal-hpc``
    command line doing the same (``config`` = the run's config.yaml with ``overrides`` applied).
    ``array`` names the job array the spec belongs to (specs with the same array are submitted together,
    as one SLURM array). ``outputs`` are the files whose existence means the job is complete (written
    last, atomically); ``owned`` the files and folders it writes (moved aside when it is stale).
    """

    key: str
    stage: str
    name: str
    kind: str  # a key of jobkinds.KINDS
    job_type: str  # resource section: pack | train | wavelet_features | wavelet_classify | aggregate
    function: str
    config: Config
    args: tuple[str, ...]
    outputs: tuple[str, ...]
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    overrides: tuple[str, ...] = ()
    command: tuple[str, ...] = ()
    owned: tuple[str, ...] = ()
    depends_on: tuple[str, ...] = ()
    dependency: str = "afterok"  # afterok | afterany (aggregate: runs whatever happened before)
    array: Optional[str] = None
    tasks: int = 1  # processes: MPI ranks (wavelet features), Horovod ranks (data-parallel training)
    checkpointable: bool = False  # resumable: requeued on preemption/time-out
    job_log: str = ""  # the job's own log file (besides the launcher's stdout/stderr)
    run_dir: str = ""

    @property
    def label(self) -> str:
        """``stage/name``, as tables and ``campaign.job_resources`` name the job."""
        return f"{self.stage}/{self.name}"

    def command_line(self) -> str:
        """``command`` as one shell line."""
        return shlex.join(self.command)

    def is_complete(self) -> bool:
        """True when every output exists."""
        return bool(self.outputs) and all(Path(p).exists() for p in self.outputs)


@dataclass
class Plan:
    """The ordered job specs of one campaign (dependencies always come first)."""

    run_dir: str
    config: Config = field(default_factory=Config)  # the campaign's config (paths absolute, folds aligned)
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


def unit_name(unit: list[JobSpec]) -> str:
    """The name of a submission unit: its array, or its one job's key."""
    return unit[0].array if len(unit) > 1 and unit[0].array else unit[0].key


def job_config(cfg: Config, overrides: Iterable[str], source: str) -> Config:
    """``cfg`` with ``section.key=value`` overrides applied, validated (a job's own Config)."""
    overrides = list(overrides)
    if not overrides:
        return copy.deepcopy(cfg)
    return config_from_dict(apply_overrides(cfg.to_dict(), overrides), source)


def build_plan(cfg: Config, run_dir: str | os.PathLike | None = None) -> Plan:
    """The campaign's job specs, in submission order. Pure: reads nothing but ``cfg`` (and, to decide
    whether a pack job is needed without a data root, whether the packed file exists)."""
    cfg = resolve_paths(cfg)
    run = Path(_abs(str(run_dir)) if run_dir else cfg.campaign.run_dir)
    cfg.campaign.run_dir = str(run)
    align_folds(cfg)
    data = packed_path(cfg, run)
    if not cfg.data.root and not Path(data).exists():
        raise ConfigError(f"data.root is empty and {data} does not exist: set data.root (the image tree) "
                          "or data.packed (an existing packed file)")
    if cfg.train.seed in cfg.campaign.official_seeds:
        raise ConfigError(f"campaign.official_seeds: {cfg.train.seed} is train.seed, the seed cnn/official already "
                          f"trains with; list other seeds (got {cfg.campaign.official_seeds})")
    jobs = campaign_jobs(cfg)
    labels = {j.label for j in jobs}
    unknown = sorted(set(cfg.campaign.job_resources) - labels)
    if unknown:
        raise ConfigError(f"campaign.job_resources: no job {', '.join(unknown)} in this campaign; "
                          f"its jobs: {', '.join(j.label for j in jobs)}")
    plan = Plan(run_dir=str(run), config=cfg)
    config_file = str(run / "config.yaml")
    for job in jobs:
        plan.specs.append(_spec(job, cfg, run, data, config_file, list(plan.specs)))
    return plan


def _spec(job: PlannedJob, cfg: Config, run: Path, data: str, config_file: str, before: list[JobSpec]) -> JobSpec:
    kind = job.kind
    paths = job.paths(cfg, run, data)
    if "*" in kind.after:
        depends_on, dependency = tuple(s.key for s in before), "afterany"
    else:
        depends_on, dependency = tuple(s.key for s in before if s.kind in kind.after), "afterok"
    resource_label = job.resource_label(cfg.campaign.job_resources)
    resources = cfg.resources(kind.resources, resource_label)
    own_resources = resource_label in cfg.campaign.job_resources  # submitted alone: an array shares one request
    command = [PROGRAM, kind.command, "--config", config_file]
    for flag, arg in zip(kind.flags, paths.args):
        command += [flag, arg]
    for item in job.overrides:
        command += ["--set", item]
    return JobSpec(key=job.key, stage=kind.stage, name=job.name, kind=kind.name, job_type=kind.resources,
                   function=kind.function, config=job_config(cfg, job.overrides, f"job {job.label}"),
                   args=paths.args, outputs=paths.outputs, resources=resources, overrides=job.overrides,
                   command=tuple(command), owned=paths.owned, depends_on=depends_on, dependency=dependency,
                   array=None if own_resources else job.array, tasks=resources.tasks,
                   checkpointable=kind.checkpointable, job_log=paths.log, run_dir=str(run))


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
