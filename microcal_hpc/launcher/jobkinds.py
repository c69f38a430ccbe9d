"""The kinds of job a campaign runs, declared once.

Everything that needs to know the campaign's jobs reads this module: the plan
(:func:`microcal_hpc.launcher.plan.build_plan`), the report's expected jobs
(:func:`microcal_hpc.report.collect.expected_jobs`), the run config, the dry run and the plain sbatch
scripts (:mod:`microcal_hpc.launcher.sbatch`). A :class:`JobKind` says

- where a job sits (``stage``) and which ``campaign.resources`` section it uses (``resources``);
- what runs it: the library function (``function``, called as ``function(config, *args)`` by
  :func:`microcal_hpc.launcher.worker.run_spec`) and the ``microcal-hpc`` subcommand that runs the same job
  by hand (``command``; ``flags`` name the subcommand's flag for each positional argument);
- what it waits for (``after``: kinds; ``"*"`` = every other job, whatever its outcome);
- which settings its outputs depend on (``settings``: config keys, a section name standing for all of its
  keys except :data:`SPEED_ONLY`) and where the job records the values it ran with (``recorded``: the
  config.yaml of each of its folders, the packed file's or the features file's attributes, or the run's
  config.yaml); a job whose recorded settings differ from the campaign's is stale
  (:mod:`microcal_hpc.launcher.stale`);
- where it reads and writes (``paths``: its arguments, its outputs, i.e. the files whose existence marks
  it complete, the paths it owns and its log file);
- which report arm its model folders belong to (``arm``);
- which modules it spends its start-up importing (``preload``): the local executor's fork server
  imports them once and forks the kind's single-process jobs from it (:mod:`microcal_hpc.launcher.forkserver`).

:func:`campaign_jobs` lists the jobs a config asks for (which kinds, names, arrays, per-job settings).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from microcal_hpc.baseline import BASELINES


@dataclass(frozen=True)
class JobPaths:
    """Where one job reads and writes: its positional arguments (in ``kind.flags`` order), its outputs
    (files whose existence marks it complete, written last), the paths it owns (glob patterns; moved
    aside when it is stale: every model folder of the arm, also those of models no longer asked for)
    and its own log file."""

    args: tuple[str, ...]
    outputs: tuple[str, ...]
    owned: tuple[str, ...]
    log: str


# the paths of each kind of job: (job name, campaign config, run directory, packed file) -> JobPaths


def _pack_paths(name: str, cfg, run: Path, data: str) -> JobPaths:
    log = str(Path(data).with_name(Path(data).stem + ".pack.log"))
    return JobPaths((data,), (data,), (data, log), log)


def _train_paths(name: str, cfg, run: Path, data: str) -> JobPaths:
    folder = run / "cnn" / name
    return JobPaths((data, str(run / "cnn"), name), (str(folder / "metrics.json"),), (str(folder),),
                    str(folder / "train.log"))


def _features_paths(name: str, cfg, run: Path, data: str) -> JobPaths:
    features, log = run / "wavelet" / "features.h5", str(run / "wavelet" / "features.log")
    return JobPaths((data, str(features)), (str(features),), (str(features), log), log)


def _classify_paths(name: str, cfg, run: Path, data: str) -> JobPaths:
    wdir = run / "wavelet"
    folders = [wdir / fs / clf for fs in cfg.classify.feature_sets for clf in cfg.classify.classifiers]
    return JobPaths((str(wdir / "features.h5"), str(wdir)), tuple(str(f / "metrics.json") for f in folders),
                    (str(wdir / "*" / "*"), str(wdir / "classify.log")), str(wdir / "classify.log"))


def _baseline_paths(name: str, cfg, run: Path, data: str) -> JobPaths:
    bdir = run / "baseline"
    folders = [bdir / folder for folder in baseline_folders()]
    return JobPaths((data, str(bdir)), tuple(str(f / "metrics.json") for f in folders), (str(bdir / "*"),),
                    str(bdir / "baseline.log"))


def _aggregate_paths(name: str, cfg, run: Path, data: str) -> JobPaths:
    rdir = run / "report"
    return JobPaths((str(run),), (str(rdir / "report.html"),), (str(rdir),), str(rdir / "aggregate.log"))


def baseline_folders() -> list[str]:
    """The model folders the baseline job writes under RUN/baseline/ (declared in microcal_hpc.baseline)."""
    return list(BASELINES)


@dataclass(frozen=True)
class JobKind:
    """One kind of job (see the module docstring)."""

    name: str
    stage: str
    function: str
    resources: str
    command: str
    flags: tuple[str, ...]
    settings: tuple[str, ...]
    recorded: str  # config.yaml | packed file | features file | run config
    paths: Callable[..., JobPaths]
    after: tuple[str, ...] = ()
    arm: Optional[str] = None
    checkpointable: bool = False  # resumable (CNN training): requeued on preemption/time-out
    preload: tuple[str, ...] = ()  # modules a local fork server imports for this kind's jobs


# what the jobs of a kind spend their start-up importing (a fresh process: TensorFlow 2-3 s, matplotlib and
# scikit-learn 0.5-1 s); the local executor's fork server imports it once (see JobKind.preload). Not for
# the jobs that run joblib worker processes (classifiers, baselines): a forked job's exit waits for
# those until their idle time-out (300 s), where a fresh process stops them at once
CNN_PRELOAD = ("tensorflow", "sklearn.metrics", "sklearn.model_selection", "microcal_hpc.cnn.train")
REPORT_PRELOAD = ("matplotlib.pyplot", "sklearn.metrics", "microcal_hpc.report.aggregate", "microcal_hpc.report.build")

KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("pack", stage="pack", function="data_prep.pack:pack_job", resources="pack",
            command="pack", flags=("--out",),
            settings=("data.root", "data.group_pattern", "data.case_pattern"), recorded="packed file",
            paths=_pack_paths),
    JobKind("train", stage="cnn", function="microcal_hpc.cnn.train:train_cnn", resources="train",
            command="train", flags=("--data", "--run-dir", "--name"),
            settings=("train", "data.packed"), recorded="config.yaml", paths=_train_paths,
            after=("pack",), arm="cnn", checkpointable=True, preload=CNN_PRELOAD),
    JobKind("wavelet-features", stage="wavelet", function="microcal_hpc.wavelet.features_job:features_job",
            resources="wavelet_features", command="wavelet-features", flags=("--data", "--out"),
            settings=("wavelet",), recorded="features file", paths=_features_paths,
            after=("pack",)),
    JobKind("wavelet-classify", stage="wavelet", function="microcal_hpc.wavelet.classify:classify_job",
            resources="wavelet_classify", command="wavelet-classify", flags=("--features", "--run-dir"),
            settings=("classify",), recorded="config.yaml", paths=_classify_paths,
            after=("wavelet-features",), arm="wavelet"),
    JobKind("baseline", stage="baseline", function="microcal_hpc.baseline:baseline_job", resources="wavelet_classify",
            command="baseline", flags=("--data", "--run-dir"),
            settings=("classify.folds", "classify.group_by", "classify.seed", "data.packed"), recorded="config.yaml",
            paths=_baseline_paths, after=("pack",), arm="baseline"),
    JobKind("aggregate", stage="report", function="microcal_hpc.report.aggregate:aggregate_job", resources="aggregate",
            command="aggregate", flags=("--run-dir",),
            settings=("report",), recorded="run config", paths=_aggregate_paths,
            after=("*",), preload=REPORT_PRELOAD),
)}

# Settings that change how fast a job runs, never what it computes: a change does not make a job stale.
SPEED_ONLY = ("data.chunk_size", "train.steps_per_execution", "train.input", "train.jit_compile",
              "wavelet.chunk_size", "classify.n_jobs")


@dataclass(frozen=True)
class PlannedJob:
    """One job a config asks for, before paths are known: its kind, key, name, array and the settings in
    which it differs from the campaign's config (``section.key=value``, applied on top of it)."""

    kind: JobKind
    key: str
    name: str
    array: Optional[str] = None
    overrides: tuple[str, ...] = ()
    resources_as: Optional[str] = None  # the job whose campaign.job_resources entry applies when it has none

    @property
    def label(self) -> str:
        """``stage/name`` as tables and ``campaign.job_resources`` name the job (e.g. ``cnn/fold-2``)."""
        return f"{self.kind.stage}/{self.name}"

    def resource_label(self, job_resources: dict) -> str:
        """The job name whose ``campaign.job_resources`` entry this job takes: its own, else ``resources_as``."""
        return self.label if self.label in job_resources or not self.resources_as else self.resources_as

    def paths(self, cfg, run: Path, data: str) -> JobPaths:
        """Where this job reads and writes in the run directory ``run`` (``data``: the packed file)."""
        return self.kind.paths(self.name, cfg, run, data)


def campaign_jobs(cfg) -> list[PlannedJob]:
    """The jobs ``cfg`` asks for, in submission order (what each waits for comes first).

    pack (when ``data.root`` is set); the CNN on the official split, its repeats with other training seeds
    (one array), the k CV folds (one array), the augmentation presets (one array); wavelet features then
    classifiers; the grey-level baseline; the report.
    """
    camp, k = cfg.campaign, KINDS
    jobs: list[PlannedJob] = []
    if cfg.data.root:
        jobs.append(PlannedJob(k["pack"], "pack", "pack"))
    no_fold = () if cfg.train.fold is None else ("train.fold=null",)
    official = PlannedJob(k["train"], "cnn-official", "official", overrides=no_fold)
    if camp.official:
        jobs.append(official)
    for seed in camp.official_seeds:  # the official run again: its name and settings but the seed
        name = official_seed_name(seed)
        jobs.append(PlannedJob(k["train"], f"cnn-{name}", name, "cnn-seeds", no_fold + (f"train.seed={seed}",),
                               resources_as=official.label))
    for fold in range(camp.cv_folds):
        jobs.append(PlannedJob(k["train"], f"cnn-fold-{fold}", f"fold-{fold}", "cnn-folds", (f"train.fold={fold}",)))
    for preset in camp.augment_presets:
        augment = () if cfg.train.augment == preset else (f"train.augment={preset}",)
        jobs.append(PlannedJob(k["train"], f"cnn-augment-{preset}", f"augment-{preset}", "cnn-augment",
                               no_fold + augment))
    if camp.wavelet:
        jobs.append(PlannedJob(k["wavelet-features"], "wavelet-features", "features"))
        jobs.append(PlannedJob(k["wavelet-classify"], "wavelet-classify", "classify"))
    if camp.baseline:
        jobs.append(PlannedJob(k["baseline"], "baseline", "baseline"))
    jobs.append(PlannedJob(k["aggregate"], "aggregate", "aggregate"))
    return jobs


OFFICIAL_SEED_PREFIX = "official-seed-"


def official_seed_name(seed: int) -> str:
    """The job name of the official CNN run repeated with training seed ``seed``: ``official-seed-<seed>``."""
    return f"{OFFICIAL_SEED_PREFIX}{int(seed)}"


def official_seed_of(name: str) -> Optional[int]:
    """The training seed of an ``official-seed-<seed>`` job name; None for any other name."""
    tail = name[len(OFFICIAL_SEED_PREFIX):] if name.startswith(OFFICIAL_SEED_PREFIX) else ""
    return int(tail) if tail.isdigit() else None


def expected_model_folders(cfg) -> dict[str, list[str]]:
    """{arm: model folder names under RUN/<arm>/} of every model job ``cfg`` asks for, plus "cnn_folds"
    (the CNN's CV fold jobs). Reads nothing: the names follow from the config alone."""
    out: dict[str, list[str]] = {"cnn": [], "cnn_folds": [], "wavelet": [], "baseline": []}
    run = Path("RUN")
    for job in campaign_jobs(cfg):
        arm = job.kind.arm
        if not arm:
            continue
        for output in job.paths(cfg, run, "RUN/data/packed.h5").outputs:
            out[arm].append(Path(output).parent.relative_to(run / arm).as_posix())
        if job.array == "cnn-folds":
            out["cnn_folds"].append(job.name)
    return out
