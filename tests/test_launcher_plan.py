"""The campaign plan, the sbatch parameters, the records and the status logic: pure functions, no cluster."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from microcal_hpc.config import load_config
from microcal_hpc.errors import ConfigError
from microcal_hpc.launcher import executors, records, status
from microcal_hpc.launcher.plan import build_plan, selection


def _cfg(tmp_path, *overrides):
    return load_config(None, [f"data.root={tmp_path / 'tree'}", *overrides])


def test_default_plan_is_the_campaign_dag(tmp_path):
    run = tmp_path / "run"
    plan = build_plan(_cfg(tmp_path), run)
    keys = plan.keys()
    assert keys == ["pack", "cnn-official", *[f"cnn-fold-{k}" for k in range(5)], "cnn-augment-flips",
                    "cnn-augment-reference", "wavelet-features", "wavelet-classify", "baseline-greylevel-rf",
                    "aggregate"]
    packed = str(run / "data" / "packed.h5")
    # every job after pack waits for it; classifiers wait for features; the report for everything (afterany)
    for s in plan:
        if s.key in ("pack", "aggregate", "wavelet-classify"):
            continue
        assert s.depends_on == ("pack",), s.key
        assert s.dependency == "afterok"
    assert plan.get("wavelet-classify").depends_on == ("wavelet-features",)
    agg = plan.get("aggregate")
    assert agg.dependency == "afterany" and set(agg.depends_on) == set(keys) - {"aggregate"}
    # arrays: the folds together, the augmentation presets together
    groups = [[s.key for s in g] for g in plan.groups()]
    assert [f"cnn-fold-{k}" for k in range(5)] in groups
    assert ["cnn-augment-flips", "cnn-augment-reference"] in groups
    assert ["cnn-official"] in groups
    # each CNN job gets its own config: fold k of cv_folds, or an augmentation preset on the official split
    for k in range(5):
        c = plan.get(f"cnn-fold-{k}").config
        assert (c.train.fold, c.train.folds, c.train.augment) == (k, 5, "none")
    c = plan.get("cnn-augment-reference").config
    assert (c.train.fold, c.train.augment) == (None, "reference")
    assert plan.get("cnn-official").config.train.fold is None
    # the arguments and outputs follow docs/outputs.md
    off = plan.get("cnn-official")
    assert off.function == "microcal_hpc.cnn.train:train_cnn" and off.args == (packed, str(run / "cnn"), "official")
    assert off.outputs == (str(run / "cnn" / "official" / "metrics.json"),) and off.checkpointable
    feat = plan.get("wavelet-features")
    assert feat.args == (packed, str(run / "wavelet" / "features.h5")) and feat.tasks == 2
    cls = plan.get("wavelet-classify")
    assert len(cls.outputs) == 8 * 2 and str(run / "wavelet" / "stats" / "nb" / "metrics.json") in cls.outputs
    assert plan.get("baseline-greylevel-rf").outputs == (str(run / "baseline" / "greylevel-rf" / "metrics.json"),)
    assert agg.outputs == (str(run / "report" / "report.html"),)
    assert not any(s.checkpointable for s in plan if s.job_type != "train")


def test_plan_follows_the_campaign_switches(tmp_path):
    cfg = _cfg(tmp_path, "campaign.official=false", "campaign.cv_folds=0", "campaign.augment_presets=[]",
               "campaign.wavelet=false", "campaign.resources.wavelet_features.tasks_per_node=4")
    assert build_plan(cfg, tmp_path / "r").keys() == ["pack", "baseline-greylevel-rf", "aggregate"]
    no_baseline = _cfg(tmp_path, "campaign.wavelet=false", "campaign.baseline=false")
    assert "baseline-greylevel-rf" not in build_plan(no_baseline, tmp_path / "r").keys()
    cfg = _cfg(tmp_path, "campaign.cv_folds=2", "campaign.augment_presets=[flips]",
               "campaign.resources.wavelet_features.tasks_per_node=3")
    plan = build_plan(cfg, tmp_path / "r")
    assert [s.key for s in plan if s.array == "cnn-folds"] == ["cnn-fold-0", "cnn-fold-1"]
    assert plan.get("wavelet-features").tasks == 3


def test_every_arm_gets_the_same_folds(tmp_path):
    cfg = _cfg(tmp_path, "campaign.cv_folds=3", "classify.folds=5", "classify.group_by=case", "classify.seed=9",
               "train.seed=4")
    plan = build_plan(cfg, tmp_path / "r")
    for key in ("cnn-fold-0", "wavelet-classify", "baseline-greylevel-rf"):
        c = plan.get(key).config
        assert (c.train.folds, c.train.group_by, c.train.seed) == (3, "group", 4), key
        assert (c.classify.folds, c.classify.group_by, c.classify.seed) == (3, "group", 4), key


def test_without_data_root_an_existing_packed_file_is_used(tmp_path):
    with pytest.raises(ConfigError, match="data.root is empty"):
        build_plan(load_config(None, []), tmp_path / "run")
    packed = tmp_path / "mine.h5"
    packed.write_bytes(b"x")
    plan = build_plan(load_config(None, [f"data.packed={packed}"]), tmp_path / "run")
    assert "pack" not in plan.keys()
    assert plan.get("cnn-official").args[0] == str(packed) and plan.get("cnn-official").depends_on == ()


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    plan = build_plan(load_config(None, ["data.root=tree", "campaign.run_dir=runs/x"]))
    assert plan.run_dir == str(tmp_path / "runs" / "x")
    assert plan.get("pack").config.data.root == str(tmp_path / "tree")


def test_specs_and_job_callables_pickle(tmp_path):
    from microcal_hpc.launcher.worker import CheckpointableJob

    plan = build_plan(_cfg(tmp_path), tmp_path / "run")
    for s in plan:
        fn = executors.job_callable(s)
        back = pickle.loads(pickle.dumps(fn))
        if s.checkpointable:
            assert isinstance(back, CheckpointableJob) and back.spec.key == s.key
            # preemption: checkpoint() resubmits the same callable (train_job resumes from its last epoch)
            delayed = back.checkpoint()
            assert delayed.function is back
        else:
            assert back.args[0].key == s.key


def test_selection_skips_complete_and_active_jobs(tmp_path):
    plan = build_plan(_cfg(tmp_path, "campaign.cv_folds=2", "campaign.augment_presets=[flips]"), tmp_path / "r")
    every = set(plan.keys())
    assert [s.key for s in selection(plan, set(), set())] == plan.keys()
    assert selection(plan, every, set()) == []
    todo = [s.key for s in selection(plan, every - {"cnn-fold-1", "aggregate"}, set())]
    assert todo == ["cnn-fold-1", "aggregate"]  # the report runs again whenever anything else does
    todo = [s.key for s in selection(plan, every - {"cnn-fold-1", "wavelet-features", "aggregate"},
                                     {"wavelet-features", "aggregate"})]
    assert todo == ["cnn-fold-1"]  # pending/running jobs are not resubmitted
    # a spec is complete when all its outputs exist
    s = plan.get("wavelet-classify")
    for o in s.outputs[:-1]:
        Path(o).parent.mkdir(parents=True, exist_ok=True)
        Path(o).write_text("{}")
    assert not s.is_complete()
    Path(s.outputs[-1]).parent.mkdir(parents=True, exist_ok=True)
    Path(s.outputs[-1]).write_text("{}")
    assert s.is_complete()


def test_slurm_parameters_carry_the_resources(tmp_path):
    cfg = _cfg(tmp_path, "campaign.resources.train.gpus_per_node=1", "campaign.resources.train.partition=gpu",
               "campaign.resources.train.account=proj42", "campaign.resources.train.qos=high",
               "campaign.resources.train.array_parallelism=2", "campaign.resources.train.mem_gb=1.5",
               "campaign.resources.train.time_min=90",
               "campaign.resources.train.extra={constraint: v100, mail-type: END}")
    plan = build_plan(cfg, tmp_path / "run")
    folds = [s for s in plan if s.array == "cnn-folds"]
    p = executors.slurm_parameters(cfg, folds, "afterok:12")
    assert p["job_name"] == "mc-cnn-folds" and p["gres"] == "gpu:1" and p["partition"] == "gpu"
    assert p["account"] == "proj42" and p["qos"] == "high" and p["array_parallelism"] == 2
    assert p["mem"] == "1536MB" and p["time"] == 90 and p["signal_delay_s"] == 120
    assert p["additional_parameters"] == {"dependency": "afterok:12", "kill-on-invalid-dep": "yes",
                                          "requeue": True, "constraint": "v100", "mail-type": "END"}
    text = executors.render_sbatch(cfg, folds, plan.run_dir, "afterok:12")
    for line in ["#SBATCH --array=0-4%2", "#SBATCH --gres=gpu:1", "#SBATCH --partition=gpu",
                 "#SBATCH --account=proj42", "#SBATCH --dependency=afterok:12", "#SBATCH --requeue",
                 "#SBATCH --signal=USR2@120", "#SBATCH --constraint=v100",
                 f"#SBATCH --output={plan.run_dir}/logs/%A_%a/%A_%a_0_log.out"]:
        assert line in text, line
    feat = executors.slurm_parameters(cfg, [plan.get("wavelet-features")], None)
    assert feat["ntasks_per_node"] == 2 and "gres" not in feat and "additional_parameters" not in feat
    assert feat["srun_args"] == ["--mpi=pmix", "--kill-on-bad-exit=1"] and "srun_args" not in p  # srun's PMIx
    # a Horovod training job (one task per GPU) is launched through srun's PMIx too
    hvd = _cfg(tmp_path, "campaign.resources.train.gpus_per_node=4", "campaign.resources.train.tasks_per_node=4")
    hp = executors.slurm_parameters(hvd, [build_plan(hvd, tmp_path / "run").get("cnn-official")], None)
    assert hp["ntasks_per_node"] == 4 and hp["gres"] == "gpu:4"
    assert hp["srun_args"] == ["--mpi=pmix", "--kill-on-bad-exit=1"]
    assert "srun --unbuffered" in (t := executors.render_sbatch(cfg, [plan.get("wavelet-features")], plan.run_dir,
                                                                 None)) and "--mpi=pmix" in t
    assert "partition" not in feat  # empty partition: the cluster's default
    assert executors.signal_delay_s(5) == 30 and executors.signal_delay_s(1) == 10


def test_dependency_strings_use_array_base_ids(tmp_path):
    plan = build_plan(_cfg(tmp_path, "campaign.cv_folds=2", "campaign.augment_presets=[]"), tmp_path / "r")
    ids = {"pack": "10", "cnn-official": "11", "cnn-fold-0": "12_0", "cnn-fold-1": "12_1",
           "wavelet-features": "13", "wavelet-classify": "14", "baseline-greylevel-rf": "15"}
    assert executors.dependency_string([plan.get("aggregate")], ids) == "afterany:10:11:12:13:14:15"
    assert executors.dependency_string([plan.get("wavelet-classify")], ids) == "afterok:13"
    assert executors.dependency_string([plan.get("wavelet-classify")], {}) is None  # features complete


def test_records_merge_without_going_backwards(tmp_path):
    plan = build_plan(_cfg(tmp_path), tmp_path / "run")
    spec = plan.get("cnn-official")
    run = plan.run_dir
    records.new_submission(run, spec, "slurm")
    # the job started (and wrote RUNNING) before sbatch returned to the launcher
    records.update_record(run, spec.key, state="RUNNING", job_id="77", started=records.now())
    rec = records.update_record(run, spec.key, launcher=True, job_id="77", state="PENDING", log="x.err")
    assert rec["state"] == "RUNNING" and rec["log"] == "x.err"
    records.update_record(run, spec.key, state="FAILED", error="boom")
    # a resubmission keeps the earlier attempt in the history
    rec = records.new_submission(run, spec, "slurm")
    assert rec["state"] == "SUBMITTING" and rec["history"][-1]["state"] == "FAILED"
    assert rec["history"][-1]["job_id"] == "77"
    on_disk = json.loads((Path(run) / "jobs" / "cnn-official.json").read_text())
    assert on_disk["stage"] == "cnn" and on_disk["name"] == "official" and on_disk["executor"] == "slurm"


def test_manifest_records_versions_config_and_submissions(tmp_path):
    cfg = _cfg(tmp_path, "train.epochs=3")
    run = tmp_path / "run"
    records.write_manifest(run, cfg, "local", ["pack"])
    records.write_manifest(run, cfg, "slurm", ["cnn-official"])
    m = json.loads((run / "manifest.json").read_text())
    assert m["libraries"]["numpy"].startswith("1.26") and m["libraries"]["submitit"]
    assert m["libraries"]["tensorflow"].startswith("2.15")
    assert m["config"]["train"]["epochs"] == 3 and m["host"] and m["started"] and m["ended"] is None
    assert [s["executor"] for s in m["submissions"]] == ["local", "slurm"]
    assert load_config(run / "config.yaml").train.epochs == 3
    if m["git"]:
        assert len(m["git"]["commit"]) == 40
    records.mark_manifest_ended(run)
    assert json.loads((run / "manifest.json").read_text())["ended"]


def test_status_state_logic():
    assert status.normalize_state("CANCELLED by 0") == "CANCELLED"
    assert status._expand_ids("12_[0-2%2]") == ["12_0", "12_1", "12_2"]
    assert status._expand_ids("13") == ["13"] and status._expand_ids("14_3") == ["14_3"]
    assert status._parse_elapsed("1-02:03:04") == 93784 and status._parse_elapsed("03:04") == 184
    # the job's own COMPLETED wins; else SLURM's view; else the record
    assert status.effective_state({"state": "COMPLETED"}, {"state": "RUNNING"})[0] == "COMPLETED"
    assert status.effective_state({"state": "RUNNING"}, {"state": "CANCELLED"}) == ("CANCELLED", "sacct")
    assert status.effective_state({"state": "RUNNING"}, {"state": "TIMEOUT"})[0] == "TIMEOUT"
    assert status.effective_state({"state": "PENDING"}, None) == ("PENDING", "record")
    rows = status._parse_table("JobID|State\n12|RUNNING\nJobID|State\n13_1|FAILED\n")
    assert rows == [{"JobID": "12", "State": "RUNNING"}, {"JobID": "13_1", "State": "FAILED"}]


def test_status_table_lists_plan_jobs_not_submitted(tmp_path):
    plan = build_plan(_cfg(tmp_path, "campaign.cv_folds=0", "campaign.augment_presets=[]",
                           "campaign.wavelet=false"), tmp_path / "run")
    run = plan.run_dir
    records.new_submission(run, plan.get("pack"), "local")
    records.update_record(run, "pack", state="COMPLETED", started="2024-01-01T10:00:00+00:00",
                          ended="2024-01-01T10:01:05+00:00", elapsed_s=65.0, log_err=f"{run}/logs/1/1_0_log.err")
    records.new_submission(run, plan.get("cnn-official"), "local")
    records.update_record(run, "cnn-official", state="FAILED", error="ValueError: bad")
    rows = status.collect(run, plan=plan)
    assert [(r.key, r.state) for r in rows] == [("pack", "COMPLETED"), ("cnn-official", "FAILED"),
                                                ("baseline-greylevel-rf", "NOT_SUBMITTED"),
                                                ("aggregate", "NOT_SUBMITTED")]
    assert rows[0].elapsed == "0:01:05"
    text = status.format_table(rows, run)
    assert "logs/1/1_0_log.err" in text and "cnn/official: ValueError: bad" in text
    assert text.splitlines()[-1].startswith("4 jobs: 2 NOT_SUBMITTED")
