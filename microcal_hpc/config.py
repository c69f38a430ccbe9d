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
    chunk_size: int = 1024  # images per HDF5 chunk / write batch

    def validate(self) -> None:
        import re

        for key in ("group_pattern", "case_pattern"):
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
    """CNN training hyper-parameters and the validation scheme."""

    epochs: int = 25
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0
    val_fraction: float = 0.2  # group-aware stratified hold-out when no fold is given
    fold: Optional[int] = None  # 0-based fold index; None: hold-out split
    folds: int = 5
    group_by: str = "group"  # group | case | none
    augment: str = "none"  # a preset name from microcal_hpc.cnn.augment
    early_stopping_patience: int = 0  # 0: off; monitors validation loss
    lr_schedule: str = "constant"  # constant | cosine | plateau
    jit_compile: bool = False  # XLA
    # none | bfloat16 | auto (bfloat16 where the hardware has native bf16: Ampere+ GPUs, CPUs with
    # AVX512_BF16/AMX; float32 elsewhere). bench/bench_train.py: 1.5x the float32 speed, same AUC.
    mixed_precision: str = "auto"
    deterministic: bool = True  # tf.config.experimental.enable_op_determinism
    # training steps per call into TensorFlow (Keras steps_per_execution): fewer Python round trips,
    # 1.08x with 16 on 2 CPU cores (bench/README.md); forced to 1 with Horovod ranks, whose callbacks
    # act per batch. Per-epoch callbacks (checkpoints, schedules, history) are unaffected.
    steps_per_execution: int = 16
    # Tests and preemption drills only: stop cleanly after this many epochs, as if the job were killed
    # right after that epoch's checkpoint (no outputs; run again to resume). None: off.
    stop_after_epoch: Optional[int] = None

    def validate(self) -> None:
        _positive("train.epochs", self.epochs)
        _positive("train.batch_size", self.batch_size)
        _positive("train.steps_per_execution", self.steps_per_execution)
        if not self.learning_rate > 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {self.learning_rate}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"train.val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.folds < 2:
            raise ConfigError(f"train.folds must be >= 2, got {self.folds}")
        if self.fold is not None and not 0 <= self.fold < self.folds:
            raise ConfigError(f"train.fold must be in [0, {self.folds - 1}], got {self.fold}")
        _choice("train.group_by", self.group_by, ("group", "case", "none"))
        _choice("train.lr_schedule", self.lr_schedule, ("constant", "cosine", "plateau"))
        _choice("train.mixed_precision", self.mixed_precision, ("none", "bfloat16", "auto"))
        if self.early_stopping_patience < 0:
            raise ConfigError("train.early_stopping_patience must be >= 0")
        if self.jit_compile and self.deterministic:
            raise ConfigError("train.jit_compile=true needs train.deterministic=false "
                              "(XLA has no deterministic max-pooling gradient)")
        if self.stop_after_epoch is not None and self.stop_after_epoch < 1:
            raise ConfigError(f"train.stop_after_epoch must be >= 1, got {self.stop_after_epoch}")


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
    features: str = "both"  # coeffs | stats | both (classify.feature_sets reads from these)
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
        _choice("wavelet.features", self.features, ("coeffs", "stats", "both"))
        _choice("wavelet.dtype", self.dtype, ("float64", "float32"))
        _choice("wavelet.engine", self.engine, ("matrix", "pywt"))
        # wavelet name, mode and level vs image size: checked by the job (needs PyWavelets and the data)
        if not self.keep_levels:
            raise ConfigError("wavelet.keep_levels must not be empty")
        for lv in self.keep_levels:
            if not 1 <= lv <= self.level:
                raise ConfigError(f"wavelet.keep_levels: level {lv} is outside 1..{self.level}")
        _positive("wavelet.chunk_size", self.chunk_size)


@dataclass
class ClassifyConfig:
    """Cross-validated scikit-learn classifiers on wavelet features."""

    classifiers: list[str] = field(default_factory=lambda: ["rf", "svm", "lr", "knn", "nb", "dt", "mlp", "hgb"])
    feature_sets: list[str] = field(default_factory=lambda: ["coeffs", "stats"])
    folds: int = 5
    group_by: str = "group"
    seed: int = 0
    n_jobs: int = 0  # worker processes for the fits (folds and models side by side); 0: every core the job may use

    def validate(self) -> None:
        if self.n_jobs < 0:
            raise ConfigError(f"classify.n_jobs must be >= 0 (0: every core of the CPU affinity mask), "
                              f"got {self.n_jobs}")
        if self.folds < 2:
            raise ConfigError(f"classify.folds must be >= 2, got {self.folds}")
        _choice("classify.group_by", self.group_by, ("group", "case", "none"))
        if not self.classifiers:
            raise ConfigError("classify.classifiers must not be empty")
        for fs in self.feature_sets:
            _choice("classify.feature_sets", fs, ("coeffs", "stats"))


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


def _default_resources() -> dict[str, ResourceConfig]:
    return {
        "pack": ResourceConfig(time_min=20, cpus_per_task=1, mem_gb=4),
        "train": ResourceConfig(time_min=120, cpus_per_task=2, mem_gb=8),
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
    max_parallel: int = 0  # local executor: jobs at once; 0 = one per two cores
    official: bool = True  # CNN on the official split (hold-out validation from Train)
    cv_folds: int = 5  # CNN cross-validation folds (0: none)
    augment_presets: list[str] = field(default_factory=lambda: ["flips", "seed_study"])
    wavelet: bool = True  # wavelet features + classifiers
    baseline: bool = True  # the grey-level shortcut baseline
    poll_seconds: float = 2.0
    srun_mpi: str = "pmix"  # srun --mpi plugin of multi-task (MPI) jobs under SLURM; "": the cluster's default
    resources: dict[str, ResourceConfig] = field(default_factory=_default_resources)

    def validate(self) -> None:
        _choice("campaign.executor", self.executor, ("slurm", "local", "debug"))
        if self.max_parallel < 0:
            raise ConfigError("campaign.max_parallel must be >= 0")
        if self.cv_folds == 1 or self.cv_folds < 0:
            raise ConfigError(f"campaign.cv_folds must be 0 or >= 2, got {self.cv_folds}")
        unknown = set(self.resources) - set(JOB_TYPES)
        if unknown:
            raise ConfigError(f"campaign.resources: unknown job type(s) {sorted(unknown)}; known: {list(JOB_TYPES)}")
        for k, r in self.resources.items():
            r.validate(f"campaign.resources.{k}")


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
        return self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def resources(self, job_type: str) -> ResourceConfig:
        """Resources of one job type (defaults filled in for types the YAML does not mention)."""
        if job_type not in JOB_TYPES:
            raise ConfigError(f"unknown job type {job_type!r}; known: {list(JOB_TYPES)}")
        return self.campaign.resources.get(job_type) or _default_resources()[job_type]


# ----------------------------------------------------------------------------------------------
# Loading and overriding


def _positive(name: str, value: int) -> None:
    if value <= 0:
        raise ConfigError(f"{name} must be > 0, got {value}")


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


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Load a Config from an optional YAML file, then apply ``section.key=value`` overrides."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            first = str(e).splitlines()[0] if str(e) else "invalid YAML"
            raise ConfigError(f"{p}: invalid YAML: {first}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of sections")
    apply_overrides(data, overrides or [])
    return config_from_dict(data, source)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the config as YAML (atomically), so a run records exactly what it used."""
    from microcal_hpc.atomic import write_text

    write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
