"""The one configuration object: YAML loading, CLI overrides, strict validation."""
import subprocess
import sys

import pytest

from microcal_hpc.config import Config, load_config, save_config
from microcal_hpc.errors import ConfigError


def test_defaults_are_valid_and_match_the_reference_study():
    cfg = load_config()
    assert cfg.train.epochs == 25 and cfg.train.batch_size == 32
    assert (cfg.wavelet.wavelet, cfg.wavelet.level, cfg.wavelet.keep_levels) == ("db5", 4, [2, 3, 4])
    assert set(cfg.campaign.resources) == {"pack", "train", "wavelet_features", "wavelet_classify", "aggregate"}


def test_yaml_then_overrides_in_order(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  epochs: 7\n  seed: 3\nclassify:\n  classifiers: [rf]\n")
    cfg = load_config(p, ["train.epochs=2", "classify.classifiers=rf,svm", "wavelet.keep_levels=[3, 4]"])
    assert cfg.train.epochs == 2 and cfg.train.seed == 3
    assert cfg.classify.classifiers == ["rf", "svm"]
    assert cfg.wavelet.keep_levels == [3, 4]


def test_a_file_that_extends_another_overrides_key_by_key(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  epochs: 7\n  seed: 3\ncampaign:\n  augment_presets: [flips]\n"
                                        "  resources:\n    train: {cpus_per_task: 2, mem_gb: 8}\n")
    (tmp_path / "sub").mkdir()
    top = tmp_path / "sub" / "top.yaml"
    top.write_text("extends: ../base.yaml\ntrain:\n  epochs: 9\ncampaign:\n  augment_presets: []\n"
                   "  resources:\n    train: {gpus_per_node: 1}\n")
    cfg = load_config(top, ["train.seed=4"])
    assert (cfg.train.epochs, cfg.train.seed, cfg.campaign.augment_presets) == (9, 4, [])
    train = cfg.resources("train")
    assert (train.cpus_per_task, train.mem_gb, train.gpus_per_node) == (2, 8, 1)
    (tmp_path / "base.yaml").write_text("extends: sub/top.yaml\n")
    with pytest.raises(ConfigError, match="'extends' loops back to this file"):
        load_config(top)


def test_the_gpu_config_is_the_main_study_with_cluster_resources():
    from pathlib import Path
    configs = Path(__file__).resolve().parents[1] / "configs"
    main, gpu = load_config(configs / "campaign.yaml"), load_config(configs / "campaign-gpu.yaml")
    for section in ("data", "train", "wavelet"):
        assert getattr(gpu, section) == getattr(main, section), section
    assert gpu.classify.classifiers == main.classify.classifiers and gpu.classify.n_jobs == 8
    assert gpu.campaign.augment_presets == main.campaign.augment_presets and gpu.campaign.executor == "slurm"
    assert gpu.resources("train").gpus_per_node == 1 and main.resources("train").gpus_per_node == 0


def test_partial_resources_keep_other_defaults(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("campaign:\n  resources:\n    train: {gpus_per_node: 2, tasks_per_node: 2}\n")
    cfg = load_config(p)
    assert cfg.resources("train").gpus_per_node == 2
    assert cfg.resources("train").time_min == 120  # the train job type's default for unspecified keys
    assert cfg.resources("aggregate").cpus_per_task == 1  # untouched job type keeps its default
    p.write_text("campaign:\n  resources:\n    wavelet_features: {tasks_per_node: 4}\n")
    wf = load_config(p).resources("wavelet_features")
    assert (wf.tasks_per_node, wf.time_min, wf.mem_gb) == (4, 30, 4.0)  # the job type's own defaults kept


@pytest.mark.parametrize("text, message", [
    ("train:\n  epoch: 3\n", "unknown key 'epoch' (did you mean 'epochs'?)"),
    ("trian:\n  epochs: 3\n", "unknown key 'trian'"),
    ("train:\n  epochs: three\n", "train.epochs: expected an integer"),
    ("train:\n  epochs: 0\n", "train.epochs must be > 0"),
    ("train:\n  group_by: patient\n", "train.group_by must be one of group, case, none"),
    ("train:\n  fold: 5\n  folds: 5\n", "train.fold must be in [0, 4]"),
    ("wavelet:\n  keep_levels: [5]\n", "level 5 is outside 1..4"),
    ("campaign:\n  resources:\n    gpu_job: {}\n", "unknown job type"),
    ("classify:\n  classifiers: [rf, xgboost]\n", "classify.classifiers: unknown classifier(s) xgboost; known: rf,"),
    ("campaign:\n  augment_presets: [flips, rotate]\n", "augment_presets: unknown augmentation preset(s) rotate"),
    ("train:\n  augment: rotate\n", "train.augment: unknown augmentation preset(s) rotate"),
    ('campaign:\n  setup: ["module load a\\nmodule load b"]\n', "campaign.setup[0]: each item must be one non-empty"),
    ("campaign:\n  container: apptainer exec 'x.sif\n", "campaign.container: not a valid command prefix"),
    ("campaign:\n  job_resources:\n    official: {nodes: 2}\n", "'official' is not a job name STAGE/NAME"),
    ("campaign:\n  job_resources:\n    cnn/official: {gpus: 2}\n", "job_resources.cnn/official: unknown key 'gpus'"),
    ("campaign:\n  job_resources:\n    cnn/official: {nodes: 0}\n", "job_resources.cnn/official.nodes must be > 0"),
    ("campaign:\n  job_resources:\n    cnn/official: {nodes: two}\n", "cnn/official.nodes: expected an integer"),
    ("- a\n- b\n", "top level must be a mapping"),
    ("train: [1\n", "invalid YAML"),
])
def test_bad_config_names_file_and_key(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert message in str(e.value)
    assert str(p) in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_override_is_rejected():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["epochs=3"])
    with pytest.raises(ConfigError, match="expected true/false"):
        load_config(None, ["train.jit_compile=maybe"])


def test_save_and_reload_round_trip(tmp_path):
    cfg = load_config(None, ["train.epochs=3", "campaign.augment_presets=[flips]", "train.fold=2",
                             "campaign.setup=[module load cuda]", "campaign.container=apptainer exec --nv x.sif",
                             "campaign.job_resources={cnn/official: {nodes: 2, gpus_per_node: 2}}"])
    save_config(cfg, tmp_path / "used.yaml")
    again = load_config(tmp_path / "used.yaml")
    assert again == cfg
    assert isinstance(again, Config)


def test_cli_reports_config_error_in_one_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("train:\n  epochz: 1\n")
    r = subprocess.run([sys.executable, "-m", "jobs", "pack", "--config", str(p), "--data", str(tmp_path),
                        "--out", str(tmp_path / "x.h5")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("microcal-hpc pack: error:") and "epochz" in lines[-1]
    assert not (tmp_path / "x.h5").exists()


def test_job_resources_override_their_job_types_resources():
    cfg = load_config(None, ["campaign.resources.train.partition=gpu", "campaign.resources.train.gpus_per_node=1",
                             "campaign.job_resources={cnn/official: {nodes: 2, tasks_per_node: 2, gpus_per_node: 2}}"])
    official = cfg.resources("train", "cnn/official")
    assert (official.nodes, official.tasks_per_node, official.gpus_per_node, official.tasks) == (2, 2, 2, 4)
    assert official.partition == "gpu" and official.time_min == 120  # the rest: its job type's
    assert cfg.resources("train", "cnn/fold-0") == cfg.resources("train") and cfg.resources("train").gpus_per_node == 1
    assert cfg.campaign.warnings() == []
    lopsided = load_config(None, ["campaign.resources.train.gpus_per_node=2"])
    assert lopsided.campaign.warnings() == ["campaign.resources.train: 1 task(s) per node but 2 GPU(s) per node; "
                                            "each training rank uses one GPU: set tasks_per_node = gpus_per_node"]
