"""The one configuration object of the project: dataclasses, loaded from YAML, overridden by CLI flags.

Every job takes a :class:`Config`. Sections hold the settings of one concern each. Loading is strict:
an unknown key, a value of the wrong type or an invalid value raises :class:`ConfigError` with a
one-line message that names the file and the key.

Use::

    cfg = load_config("campaign.yaml", overrides=["train.epochs=2", "data.root=/data/mammo"])
    cfg.train.epochs            # 2
    save_config(cfg, "run/config.yaml")
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import shlex
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import yaml

from microcal_hpc.errors import ConfigError


@dataclass
class DataConfig:
    """Where the images are and how file names map to groups (source mammograms) and cases."""

    root: str = ""  # image tree ROOT/{Train,Test}/{0,1}/*; empty: the packed file must exist
    packed: str = ""  # HDF5 file; empty: <run_dir>/data/packed.h5
    # Group = source mammogram: the part before ".pgm_K.pgm" (0033f1_4_0.pgm_2.pgm -> 0033f1_4_0).
    # A file name that does not match is its own group (its stem).
    group_pattern: str = r"^(?P<group>.+?)\.[A-Za-z0-9]+_\d+\.[A-Za-z0-9]+$"
    # Case = patient/case id, searched in the group id (0033f1_4_0 -> 0033). No match: case = group.
    case_pattern: str = r"^(?P<case>\d{4})"
    # Source = the tag right after the case id in the group id (0033f1_4_0 -> f); the report measures
    # performance within each source. No match: no source ("—").
    source_pattern: str = r"^\d{4}(?P<source>[A-Za-z])"
    chunk_size: int = 1024  # images per HDF5 chunk / write batch

    def validate(self) -> None:
        import re

        for key in ("group_pattern", "case_pattern", "source_pattern"):
            pat = getattr(self, key)
            try:
                rx = re.compile(pat)
            except re.error as e:
                raise ConfigError(f"data.{key}: invalid regular expression {pat!r}: {e}") from None
            want = key.split("_")[0]
            if want not in rx.groupindex:
                raise ConfigError(f"data.{key}: the pattern needs a named group (?P<{want}>...)")
        _positive("data.chunk_size", self.chunk_size)


@dataclass
class TrainConfig:
    """CNN training hyper-parameters and the validation scheme.

    A job with a ``fold`` validates on that fold of Train after every epoch; a job without one (the
    official and the augmentation jobs) trains on all of Train and has no validation part.
    """

    epochs: int = 25
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    fold: Optional[int] = None  # 0-based CV fold used as validation; None: train on all of Train
    folds: int = 5
    group_by: str = "case"  # case | group | none (folds; pixel-identical images always merged)
    augment: str = "none"  # a preset name from microcal_hpc.cnn.augment
    early_stopping_patience: int = 0  # 0: off; monitors the fold's validation loss (needs a fold)
    lr_schedule: str = "constant"  # constant | cosine | plateau (plateau needs a fold)
    jit_compile: bool = False  # XLA
    # none | bfloat16 | auto (bfloat16 where the hardware has native bf16: Ampere+ GPUs, CPUs with
    # AVX512_BF16/AMX; float32 elsewhere). bench/bench_train.py: 1.5x the float32 speed, same AUC.
    mixed_precision: str = "auto"
    deterministic: bool = True  # tf.config.experimental.enable_op_determinism
    # training steps per call into TensorFlow (Keras steps_per_execution): fewer Python round trips,
    # 1.08x with 16 on 2 CPU cores (bench/README.md); forced to 1 with Horovod ranks, whose callbacks
    # act per batch. Per-epoch callbacks (checkpoints, schedules, history) are unaffected.
    steps_per_execution: int = 16
    # Where training and evaluation images come from (microcal_hpc/cnn/source.py): memory (the split
    # is read once) | stream (chunks read from the packed file as needed) | auto (stream when the
    # Train images exceed input_memory_mb). Both give the same batches, so the same model.
    input: str = "auto"
    input_memory_mb: float = 1024.0
    # Images per shuffle window: every epoch visits the packed file's chunks in a shuffled order and
    # shuffles the images within windows of this many images (whole chunks; cnn/pipeline.py).
    shuffle_buffer: int = 16384

    def validate(self) -> None:
        _positive("train.epochs", self.epochs)
        _positive("train.batch_size", self.batch_size)
        _positive("train.steps_per_execution", self.steps_per_execution)
        _positive("train.shuffle_buffer", self.shuffle_buffer)
        if not self.learning_rate > 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if self.folds < 2:
            raise ConfigError(f"train.folds must be >= 2, got {self.folds}")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ConfigError(f"train.fold must be in [0, {self.folds - 1}], got {self.fold}")
        _choice("train.group_by", self.group_by, ("group", "case", "none"))
        _check_presets("train.augment", [self.augment])
        _choice("train.lr_schedule", self.lr_schedule, ("constant", "cosine", "plateau"))
        _choice("train.mixed_precision", self.mixed_precision, ("none", "bfloat16", "auto"))
        _choice("train.input", self.input, ("auto", "memory", "stream"))
        if self.early_stopping_patience < 0:
            raise ConfigError("train.early_stopping_patience must be >= 0")
        if self.fold is None and (self.early_stopping_patience or self.lr_schedule == "plateau"):
            raise ConfigError("train.early_stopping_patience and train.lr_schedule=plateau need a validation fold "
                              "(train.fold); jobs without one train on all of Train")
        if self.jit_compile and self.deterministic:
            raise ConfigError("train.jit_compile=true needs train.deterministic=false "
                              "(XLA has no deterministic max-pooling gradient)")
        if not self.input_memory_mb > 0:
            raise ConfigError(f"train.input_memory_mb must be > 0, got {self.input_memory_mb}")


@dataclass
class DistributedConfig:
    """Data-parallel training with Horovod."""

    mode: str = "auto"  # auto (Horovod when launched with >1 rank) | horovod | none
    lr_scaling: str = "linear"  # linear | sqrt | none: how the learning rate grows with the number of ranks
    warmup_epochs: int = 2  # ramp the scaled learning rate up over these epochs (0: off)

    def validate(self) -> None:
        _choice("distributed.mode", self.mode, ("auto", "horovod", "none"))
        _choice("distributed.lr_scaling", self.lr_scaling, ("linear", "sqrt", "none"))
        if self.warmup_epochs < 0:
            raise ConfigError("distributed.warmup_epochs must be >= 0")


@dataclass
class WaveletConfig:
    """2-D discrete wavelet decomposition of every patch."""

    wavelet: str = "db5"
    level: int = 4
    keep_levels: list[int] = field(default_factory=lambda: [2, 3, 4])  # detail levels kept (1 = finest)
    mode: str = "symmetric"  # PyWavelets signal extension mode
    # feature sets computed (microcal_hpc.wavelet.transform.FEATURE_SETS: coeffs, stats, approx_stats,
    # other_levels_stats); classify.feature_sets is a subset of these
    features: list[str] = field(default_factory=lambda: ["coeffs", "stats"])
    # images per read/transform batch on each rank; 256-512 run fastest (the arrays of larger batches
    # exceed malloc's reuse threshold: fresh pages every batch, 1.6x the CPU time at 2048; bench_wavelet.py)
    chunk_size: int = 256
    # float32 (default: 7 significant digits, far beyond 8-bit input; half the file and the I/O, which
    # bounds the 2-rank efficiency at 100k images) | float64 (PyWavelets' precision). The matrix engine
    # computes in float64 either way and rounds; the sub-band statistics are computed in this precision.
    dtype: str = "float32"
    # matrix: each level as dense matrix products over tiles of 32 images (about 2x PyWavelets' speed,
    # 1e-15 relative difference) | pywt: PyWavelets itself (microcal_hpc/wavelet/transform.py)
    engine: str = "matrix"

    def validate(self) -> None:
        _positive("wavelet.level", self.level)
        _choice("wavelet.dtype", self.dtype, ("float64", "float32"))
        _choice("wavelet.engine", self.engine, ("matrix", "pywt"))
        # wavelet name, mode and level vs image size: checked by the job (needs PyWavelets and the data)
        if not self.keep_levels:
            raise ConfigError("wavelet.keep_levels must not be empty")
        for lv in self.keep_levels:
            if not 1 <= lv <= self.level:
                raise ConfigError(f"wavelet.keep_levels: level {lv} is outside 1..{self.level}")
        _feature_sets("wavelet.features", self.features, self.level, self.keep_levels)
        _positive("wavelet.chunk_size", self.chunk_size)


@dataclass
class ClassifyConfig:
    """Cross-validated scikit-learn classifiers on wavelet features."""

    classifiers: list[str] = field(default_factory=lambda: ["rf", "svm", "lr", "knn", "nb", "dt", "mlp", "hgb"])
    feature_sets: list[str] = field(default_factory=lambda: ["coeffs", "stats"])
    folds: int = 5
    group_by: str = "case"
    seed: int = 0
    n_jobs: int = 0  # worker processes for the fits (folds and models side by side); 0: every core the job may use

    def validate(self) -> None:
        if self.n_jobs < 0:
            raise ConfigError(f"classify.n_jobs must be >= 0 (0: every core of the CPU affinity mask), "
                              f"got {self.n_jobs}")
        if self.folds < 2:
            raise ConfigError(f"classify.folds must be >= 2, got {self.folds}")
        _choice("classify.group_by", self.group_by, ("group", "case", "none"))
        from microcal_hpc.wavelet.classifiers import check_classifiers
        from microcal_hpc.wavelet.transform import FEATURE_SETS

        check_classifiers(self.classifiers)  # the zoo's own list of names
        for fs in self.feature_sets:
            _choice("classify.feature_sets", fs, tuple(FEATURE_SETS))


@dataclass
class ReportConfig:
    """The aggregate report."""

    bootstrap: int = 2000  # resamples for AUC confidence intervals and paired comparisons
    seed: int = 0
    gallery_size: int = 8  # patches per row in the correct/incorrect gallery

    def validate(self) -> None:
        _positive("report.bootstrap", self.bootstrap)


@dataclass
class ResourceConfig:
    """Cluster resources of one job type (used by the SLURM executor; ignored locally except tasks)."""

    partition: str = ""
    account: str = ""
    qos: str = ""
    time_min: int = 60
    nodes: int = 1
    tasks_per_node: int = 1
    cpus_per_task: int = 2
    mem_gb: float = 8.0
    gpus_per_node: int = 0
    array_parallelism: int = 8  # %P of job arrays
    extra: dict[str, Any] = field(default_factory=dict)  # further sbatch options (slurm_additional_parameters)

    def validate(self, name: str = "resources") -> None:
        for key in ("time_min", "nodes", "tasks_per_node", "cpus_per_task", "array_parallelism"):
            _positive(f"{name}.{key}", getattr(self, key))
        if self.gpus_per_node < 0:
            raise ConfigError(f"{name}.gpus_per_node must be >= 0")
        if not self.mem_gb > 0:
            raise ConfigError(f"{name}.mem_gb must be > 0, got {self.mem_gb}")

    @property
    def tasks(self) -> int:
        """Processes of one job: MPI ranks (wavelet features) or Horovod ranks (training), one per GPU."""
        return self.nodes * self.tasks_per_node

    def gpu_warning(self, name: str) -> Optional[str]:
        """A warning when a GPU job does not run one task per GPU (ranks would share a GPU or leave one idle)."""
        if self.gpus_per_node and self.tasks_per_node != self.gpus_per_node:
            return (f"{name}: {self.tasks_per_node} task(s) per node but {self.gpus_per_node} GPU(s) per node; "
                    "each training rank uses one GPU: set tasks_per_node = gpus_per_node")
        return None


def _default_resources() -> dict[str, ResourceConfig]:
    return {
        "pack": ResourceConfig(time_min=20, cpus_per_task=1, mem_gb=4),
        "train": ResourceConfig(time_min=120, cpus_per_task=1, mem_gb=8),
        "wavelet_features": ResourceConfig(time_min=30, tasks_per_node=2, cpus_per_task=1, mem_gb=4),
        "wavelet_classify": ResourceConfig(time_min=60, cpus_per_task=2, mem_gb=8),
        "aggregate": ResourceConfig(time_min=30, cpus_per_task=1, mem_gb=4),
    }


JOB_TYPES = ("pack", "train", "wavelet_features", "wavelet_classify", "aggregate")


@dataclass
class CampaignConfig:
    """Which jobs a study runs and how they are launched."""

    run_dir: str = "runs/main"
    executor: str = "local"  # slurm | local | debug
    # local executor: jobs are packed into the machine's cores (each takes cpus_per_task x tasks_per_node
    # x nodes of its resources); max_parallel caps the jobs at once (0: as many as the cores allow),
    # serial runs one at a time (debugging; microcal-hpc submit --serial)
    max_parallel: int = 0
    serial: bool = False
    official: bool = True  # CNN on all of Train (no validation part), Test predicted at the end
    # the official CNN trained again with these train.seed values (cnn/official-seed-<S>, one array;
    # resources as cnn/official's): the report's seed-to-seed spread of its Test AUC and of the
    # CNN - wavelet differences. Needs `official`; must not repeat train.seed (that is cnn/official: the
    # campaign's plan checks it, since each job's own config has its own train.seed)
    official_seeds: list[int] = field(default_factory=list)
    cv_folds: int = 5  # CNN cross-validation folds (0: none)
    augment_presets: list[str] = field(default_factory=lambda: ["flips", "reference"])
    wavelet: bool = True  # wavelet features + classifiers
    baseline: bool = True  # the grey-level baselines (microcal_hpc.baseline.BASELINES)
    poll_seconds: float = 2.0
    srun_mpi: str = "pmix"  # srun --mpi plugin of multi-task (MPI) jobs under SLURM; "": the cluster's default
    # The environment of every SLURM job (submitit and the scripts of `submit --write-sbatch` alike):
    # shell lines run first (e.g. "module load cuda/12.2", "source /path/venv/bin/activate"), and a
    # command prefix that wraps the job's command (e.g. "apptainer exec --nv /path/microcal.sif").
    # The local and debug executors run in the launcher's own environment.
    setup: list[str] = field(default_factory=list)
    container: str = ""
    resources: dict[str, ResourceConfig] = field(default_factory=_default_resources)
    # Resources of ONE job, over those of its job type: JOB (as `submit --dry-run` names it,
    # e.g. "cnn/official") -> resource keys. A training job with nodes x tasks_per_node > 1 is
    # data-parallel (one Horovod rank per task, one task per GPU); it is submitted alone, not in its array.
    job_resources: dict[str, dict[str, Any]] = field(default_factory=dict)

    def validate(self) -> None:
        _choice("campaign.executor", self.executor, ("slurm", "local", "debug"))
        if self.max_parallel < 0:
            raise ConfigError("campaign.max_parallel must be >= 0")
        if self.serial and self.max_parallel > 1:
            raise ConfigError(f"campaign.serial runs one job at a time, but campaign.max_parallel is "
                              f"{self.max_parallel}; set one of them")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ConfigError(f"campaign.cv_folds must be 0 or >= 2, got {self.cv_folds}")
        _check_presets("campaign.augment_presets", self.augment_presets)
        seeds = self.official_seeds
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in seeds) or len(set(seeds)) < len(seeds):
            raise ConfigError(f"campaign.official_seeds must be distinct integers >= 0, got {seeds}")
        if seeds and not self.official:
            raise ConfigError("campaign.official_seeds repeats the official CNN run, but campaign.official is false")
        unknown = set(self.resources) - set(JOB_TYPES)
        if unknown:
            raise ConfigError(f"campaign.resources: unknown job type(s) {sorted(unknown)}; known: {list(JOB_TYPES)}")
        for k, r in self.resources.items():
            r.validate(f"campaign.resources.{k}")
        for i, line in enumerate(self.setup):
            if "\n" in line or not line.strip():
                raise ConfigError(f"campaign.setup[{i}]: each item must be one non-empty shell line, got {line!r}")
        try:
            shlex.split(self.container)
        except ValueError as e:
            raise ConfigError(f"campaign.container: not a valid command prefix ({e}): {self.container!r}") from None
        for job, override in self.job_resources.items():
            stage, _, name = job.partition("/")
            if not stage or not name or "/" in name:
                raise ConfigError(f"campaign.job_resources: {job!r} is not a job name STAGE/NAME (e.g. cnn/official)")
            merged = dataclasses.replace(ResourceConfig(), **override)
            merged.validate(f"campaign.job_resources.{job}")

    def warnings(self) -> list[str]:
        """Resource settings that are valid but probably not meant (e.g. GPUs and tasks that do not pair up)."""
        named = [(f"campaign.resources.{k}", r) for k, r in self.resources.items()]
        named += [(f"campaign.job_resources.{job}", dataclasses.replace(ResourceConfig(), **o))
                  for job, o in self.job_resources.items()]
        return [w for name, r in named if (w := r.gpu_warning(name))]


@dataclass
class Config:
    """All settings of a run. Sections: data, train, distributed, wavelet, classify, report, campaign."""

    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    wavelet: WaveletConfig = field(default_factory=WaveletConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    campaign: CampaignConfig = field(default_factory=CampaignConfig)

    def validate(self) -> "Config":
        """Check every section; return self."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate()
        missing = [fs for fs in self.classify.feature_sets if fs not in self.wavelet.features]
        if missing:
            raise ConfigError(f"classify.feature_sets {missing} are not computed: add them to wavelet.features "
                              f"(now {self.wavelet.features})")
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resources(self, job_type: str, job: Optional[str] = None) -> ResourceConfig:
        """Resources of one job type (defaults filled in for types the YAML does not mention), or of one
        job ``job`` ("cnn/official"): its type's, overridden by ``campaign.job_resources[job]``."""
        if job_type not in JOB_TYPES:
            raise ConfigError(f"unknown job type {job_type!r}; known: {list(JOB_TYPES)}")
        res = self.campaign.resources.get(job_type) or _default_resources()[job_type]
        override = self.campaign.job_resources.get(job) if job else None
        return dataclasses.replace(res, **override) if override else res


# ----------------------------------------------------------------------------------------------
# Loading and overriding


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


def _check_presets(name: str, presets: list[str]) -> None:
    """Every name must be an augmentation preset of microcal_hpc.cnn.augment (the one list of presets)."""
    from microcal_hpc.cnn.augment import PRESETS

    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        raise ConfigError(f"{name}: unknown augmentation preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}")


def _feature_sets(name: str, names: list[str], level: int, keep_levels: list[int]) -> None:
    """The wavelet feature set names (microcal_hpc.wavelet.transform.check_feature_sets), as a ConfigError."""
    from microcal_hpc.wavelet.transform import check_feature_sets

    try:
        check_feature_sets(names, level, keep_levels)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``where``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            # "rf,svm" or "2,3,4" from the command line
            value = [v.strip() for v in str(value).split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {str(k): _coerce(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)) or value is None:
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(names)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")
        kwargs[key] = _coerce(value, hints[key], f"{where}.{key}" if where else key)
    if cls is CampaignConfig and "resources" in kwargs:
        kwargs["resources"] = _merge_resources(data["resources"], f"{where}.resources" if where else "resources")
    if cls is CampaignConfig and "job_resources" in kwargs:
        kwargs["job_resources"] = _job_resources(data["job_resources"],
                                                 f"{where}.job_resources" if where else "job_resources")
    return cls(**kwargs)


def _merge_resources(given: Any, where: str) -> dict[str, ResourceConfig]:
    """Per-job-type resources: every job type keeps its own defaults for the keys the YAML leaves out."""
    merged = _default_resources()
    for job_type, value in given.items():
        if job_type not in JOB_TYPES:
            raise ConfigError(f"{where}: unknown job type {job_type!r}; known: {', '.join(JOB_TYPES)}")
        if isinstance(value, ResourceConfig):
            merged[job_type] = value
            continue
        base = dataclasses.asdict(merged[job_type])
        base.update(value or {})
        merged[job_type] = _build(ResourceConfig, base, f"{where}.{job_type}")
    return merged


def _job_resources(given: Any, where: str) -> dict[str, dict[str, Any]]:
    """Per-job resource overrides: only ResourceConfig keys, each coerced to its type."""
    hints = typing.get_type_hints(ResourceConfig)
    out: dict[str, dict[str, Any]] = {}
    for job, value in (given or {}).items():
        if not isinstance(value, dict):
            raise ConfigError(f"{where}.{job}: expected a mapping of resource keys, got {type(value).__name__}")
        for key in value:
            if key not in hints:
                close = difflib.get_close_matches(str(key), list(hints), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f"; known: {', '.join(hints)}"
                raise ConfigError(f"{where}.{job}: unknown key {key!r}{hint}")
        out[str(job)] = {k: _coerce(v, hints[k], f"{where}.{job}.{k}") for k, v in value.items()}
    return out


def config_from_dict(data: dict[str, Any] | None, source: str = "config") -> Config:
    """Build and validate a Config from a nested dict (e.g. parsed YAML)."""
    data = data or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    try:
        cfg = _build(Config, data, "")
        return cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (value parsed as YAML) to a nested dict, in place."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        dotted, raw = item.split("=", 1)
        parts = [p for p in dotted.strip().split(".") if p]
        if len(parts) < 2:
            raise ConfigError(f"override {item!r}: expected section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = data
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return data


def _read_yaml(p: Path) -> dict[str, Any]:
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        first = str(e).splitlines()[0] if str(e) else "invalid YAML"
        raise ConfigError(f"{p}: invalid YAML: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top``'s values over it: mappings merged key by key, anything else replaced."""
    out = dict(base)
    for key, value in top.items():
        both = isinstance(value, dict) and isinstance(out.get(key), dict)
        out[key] = _deep_merge(out[key], value) if both else value
    return out


def read_config_file(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a nested dict. A top-level ``extends: OTHER.yaml`` (relative to the file) starts
    from OTHER's values and puts this file's over them (sections merged key by key)."""
    p = Path(path)
    if p.resolve() in _seen:
        raise ConfigError(f"{p}: 'extends' loops back to this file")
    data = _read_yaml(p)
    base = data.pop("extends", None)
    if base is None:
        return data
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{p}: 'extends' must be the path of another config file")
    return _deep_merge(read_config_file(p.parent / base, _seen + (p.resolve(),)), data)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load a Config from an optional YAML file (and the files it ``extends``), then apply
    ``section.key=value`` overrides."""
    data = read_config_file(path) if path else {}
    apply_overrides(data, overrides or [])
    return config_from_dict(data, str(path) if path else "defaults")


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the config as YAML (atomically), so a run records exactly what it used."""
    from microcal_hpc.atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
