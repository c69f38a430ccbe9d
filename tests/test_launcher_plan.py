"""The campaign plan, the sbatch parameters, the records and the status logic: pure functions, no cluster."""
from __future__ import annotations

import json
import pickle
import shlex
from pathlib import Path

import pytest

from microcal_hpc.config import load_config
from microcal_hpc.errors import ConfigError
from microcal_hpc.launcher import executors, records, sbatch, status
from microcal_hpc.launcher.plan import build_plan, selection


def _cfg(tmp_path, *overrides):
    return load_config(None, [f"data.root={tmp_path / 'tree'}", *overrides])


def test_seed_repeats_of_the_official_run_are_one_array_with_its_resources(tmp_path):
    """campaign.official_seeds: cnn/official-seed-<S> trains on all of Train with train.seed=S, as an array; with
    a job_resources entry for cnn/official (data-parallel) each repeat takes it and goes alone."""
    run = tmp_path / "run"
    plan = build_plan(_cfg(tmp_path, "campaign.official_seeds=[3,1]", "train.fold=2"), run)
    assert plan.keys()[1:4] == ["cnn-official", "cnn-official-seed-3", "cnn-official-seed-1"]
    assert ["cnn-official-seed-3", "cnn-official-seed-1"] in [[s.key for s in g] for g in plan.groups()]
    for seed in (3, 1):
        spec = plan.get(f"cnn-official-seed-{seed}")
        assert (spec.config.train.seed, spec.config.train.fold, spec.array) == (seed, None, "cnn-seeds")
        assert spec.args == (str(run / "data" / "packed.h5"), str(run / "cnn"), f"official-seed-{seed}")
        assert spec.command[-4:] == ("--set", "train.fold=null", "--set", f"train.seed={seed}")
    assert plan.get("cnn-official").config.train.seed == 0
    hvd = build_plan(_cfg(tmp_path, "campaign.official_seeds=[1]",
                          "campaign.job_resources={cnn/official: {nodes: 2, tasks_per_node: 2}}"), run)
    repeat, official = hvd.get("cnn-official-seed-1"), hvd.get("cnn-official")
    assert repeat.resources == official.resources and repeat.tasks == 4 and repeat.array is None
    assert hvd.get("cnn-fold-0").tasks == 1
    with pytest.raises(ConfigError, match=r"campaign.official_seeds: 0 is train.seed"):
        build_plan(_cfg(tmp_path, "campaign.official_seeds=[0,1]"), run)
    for bad, says in (("[1,1]", "distinct integers"), ("[-2]", "distinct integers")):
        with pytest.raises(ConfigError, match=says):
            _cfg(tmp_path, f"campaign.official_seeds={bad}")
    with pytest.raises(ConfigError, match="campaign.official is false"):
        _cfg(tmp_path, "campaign.official_seeds=[1]", "campaign.official=false")


def test_default_plan_is_the_campaign_dag(tmp_path):
    run = tmp_path / "run"
    plan = build_plan(_cfg(tmp_path), run)
    keys = plan.keys()
    assert keys == ["pack", "cnn-official", *[f"cnn-fold-{k}" for k in range(5)], "cnn-augment-flips",
                    "cnn-augment-reference", "wavelet-features", "wavelet-classify", "baseline",
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
    assert plan.get("baseline").outputs == tuple(str(run / "baseline" / name / "metrics.json")
                                                 for name in ("brightness-rf", "greylevel-rf"))
    assert agg.outputs == (str(run / "report" / "report.html"),)
    assert not any(s.checkpointable for s in plan if s.job_type != "train")


def test_plan_follows_the_campaign_switches(tmp_path):
    cfg = _cfg(tmp_path, "campaign.official=false", "campaign.cv_folds=0", "campaign.augment_presets=[]",
               "campaign.wavelet=false", "campaign.resources.wavelet_features.tasks_per_node=4")
    assert build_plan(cfg, tmp_path / "r").keys() == ["pack", "baseline", "aggregate"]
    no_baseline = _cfg(tmp_path, "campaign.wavelet=false", "campaign.baseline=false")
    assert "baseline" not in build_plan(no_baseline, tmp_path / "r").keys()
    cfg = _cfg(tmp_path, "campaign.cv_folds=2", "campaign.augment_presets=[flips]",
               "campaign.resources.wavelet_features.tasks_per_node=3")
    plan = build_plan(cfg, tmp_path / "r")
    assert [s.key for s in plan if s.array == "cnn-folds"] == ["cnn-fold-0", "cnn-fold-1"]
    assert plan.get("wavelet-features").tasks == 3


def test_every_arm_gets_the_same_folds(tmp_path):
    cfg = _cfg(tmp_path, "campaign.cv_folds=3", "classify.folds=5", "classify.group_by=group", "classify.seed=9",
               "train.seed=4")
    plan = build_plan(cfg, tmp_path / "r")
    for key in ("cnn-fold-0", "wavelet-classify", "baseline"):
        c = plan.get(key).config
        assert (c.train.folds, c.train.group_by, c.train.seed) == (3, "case", 4), key
        assert (c.classify.folds, c.classify.group_by, c.classify.seed) == (3, "case", 4), key


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
    text = sbatch.render_job_script(cfg, folds, "afterok:12")
    for line in ["#SBATCH --array=0-4%2", "#SBATCH --gres=gpu:1", "#SBATCH --partition=gpu",
                 "#SBATCH --account=proj42", "#SBATCH --dependency=afterok:12", "#SBATCH --requeue",
                 "#SBATCH --constraint=v100", f"#SBATCH --output={plan.run_dir}/logs/%x-%A_%a.out"]:
        assert line in text.splitlines(), line
    assert "--signal" not in text  # submitit's USR2 would kill a plain script's job: only submitit asks for it
    feat = executors.slurm_parameters(cfg, [plan.get("wavelet-features")], None)
    assert feat["ntasks_per_node"] == 2 and "gres" not in feat and "additional_parameters" not in feat
    assert feat["srun_args"] == ["--mpi=pmix", "--kill-on-bad-exit=1"] and "srun_args" not in p  # srun's PMIx
    # a Horovod training job (one task per GPU) is launched through srun's PMIx too
    hvd = _cfg(tmp_path, "campaign.resources.train.gpus_per_node=4", "campaign.resources.train.tasks_per_node=4")
    hp = executors.slurm_parameters(hvd, [build_plan(hvd, tmp_path / "run").get("cnn-official")], None)
    assert hp["ntasks_per_node"] == 4 and hp["gres"] == "gpu:4"
    assert hp["srun_args"] == ["--mpi=pmix", "--kill-on-bad-exit=1"]
    t = sbatch.render_job_script(cfg, [plan.get("wavelet-features")])
    assert 'exec srun --unbuffered --mpi=pmix --kill-on-bad-exit=1 "${cmd[@]}"' in t.splitlines()
    assert "partition" not in feat  # empty partition: the cluster's default
    assert executors.signal_delay_s(5) == 30 and executors.signal_delay_s(1) == 10


def test_dependency_strings_use_array_base_ids(tmp_path):
    plan = build_plan(_cfg(tmp_path, "campaign.cv_folds=2", "campaign.augment_presets=[]"), tmp_path / "r")
    ids = {"pack": "10", "cnn-official": "11", "cnn-fold-0": "12_0", "cnn-fold-1": "12_1",
           "wavelet-features": "13", "wavelet-classify": "14", "baseline": "15"}
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
    Path(plan.get("pack").outputs[0]).parent.mkdir(parents=True)
    Path(plan.get("pack").outputs[0]).write_bytes(b"")  # the job wrote its output
    records.update_record(run, "pack", state="COMPLETED", started="2024-01-01T10:00:00+00:00",
                          ended="2024-01-01T10:01:05+00:00", elapsed_s=65.0, log_err=f"{run}/logs/1/1_0_log.err")
    records.new_submission(run, plan.get("cnn-official"), "local")
    records.update_record(run, "cnn-official", state="FAILED", error="ValueError: bad")
    rows = status.collect(run, plan=plan)
    assert [(r.key, r.state) for r in rows] == [("pack", "COMPLETED"), ("cnn-official", "FAILED"),
                                                ("baseline", "NOT_SUBMITTED"),
                                                ("aggregate", "NOT_SUBMITTED")]
    assert rows[0].elapsed == "0:01:05"
    text = status.format_table(rows, run)
    assert "logs/1/1_0_log.err" in text and "cnn/official: ValueError: bad" in text
    assert text.splitlines()[-1].startswith("4 jobs: 2 NOT_SUBMITTED")


@pytest.mark.parametrize("switches", [[], ["campaign.official=false", "campaign.wavelet=false", "train.fold=1",
                                           "train.augment=flips", "campaign.augment_presets=[flips,strong]"]])
def test_each_jobs_command_runs_the_same_job_by_hand(tmp_path, switches):
    """`microcal-hpc <command>` with the run's config.yaml gives the job the Config, the arguments and the
    function the launcher calls: the by-hand line, the plain sbatch scripts and submitit run one job."""
    from jobs.cli import COMMANDS, build_parser
    from microcal_hpc.cli import config_from_args
    from microcal_hpc.config import save_config
    from microcal_hpc.launcher.jobkinds import KINDS
    from microcal_hpc.launcher.worker import resolve_function

    plan = build_plan(_cfg(tmp_path, *switches), tmp_path / "run")
    save_config(plan.config, Path(plan.run_dir) / "config.yaml")  # what the submission writes
    parser = build_parser()
    for spec in plan:
        kind = KINDS[spec.kind]
        assert spec.command[:2] == ("microcal-hpc", kind.command) and kind.command in COMMANDS
        args = parser.parse_args(list(spec.command[1:]))
        assert config_from_args(args).to_dict() == spec.config.to_dict(), spec.key
        given = [getattr(args, flag.lstrip("-").replace("-", "_")) for flag in kind.flags]
        assert tuple(given) == spec.args, spec.key
        assert callable(resolve_function(spec.function))
    assert plan.get("cnn-fold-1").config.train.fold == 1
    if switches:  # the campaign's own train.fold/augment do not leak into the augmentation jobs
        assert (plan.get("cnn-augment-strong").config.train.fold, plan.get("cnn-augment-strong").config.train.augment) \
            == (None, "strong")


@pytest.mark.parametrize("switches", [[], ["campaign.official=false", "campaign.cv_folds=3", "campaign.baseline=false",
                                           "classify.classifiers=[lr]", "classify.feature_sets=[stats]"],
                                      ["campaign.wavelet=false", "campaign.augment_presets=[]", "campaign.cv_folds=0"]])
def test_the_report_expects_the_model_jobs_of_the_plan(tmp_path, switches):
    from microcal_hpc.report.collect import expected_jobs

    cfg = _cfg(tmp_path, *switches)
    plan = build_plan(cfg, tmp_path / "run")
    from_plan: dict[str, list[str]] = {"cnn": [], "wavelet": [], "baseline": []}
    for s in plan:
        for arm in from_plan:
            base = Path(plan.run_dir) / arm
            from_plan[arm] += [str(Path(o).parent.relative_to(base)) for o in s.outputs
                               if Path(o).is_relative_to(base) and Path(o).name == "metrics.json"]
    expected = expected_jobs(cfg)
    assert {arm: expected[arm] for arm in from_plan} == from_plan
    assert expected["cnn_folds"] == [s.name for s in plan if s.array == "cnn-folds"]


def test_job_resources_make_one_training_job_data_parallel(tmp_path):
    cfg = _cfg(tmp_path, "campaign.resources.train.gpus_per_node=1", "campaign.resources.train.partition=gpu",
               "campaign.job_resources={cnn/official: {nodes: 2, tasks_per_node: 2, gpus_per_node: 2, time_min: 30}}")
    plan = build_plan(cfg, tmp_path / "run")
    off = plan.get("cnn-official")
    assert off.tasks == 4 and off.array is None and off.resources.partition == "gpu"  # the rest from its type
    p = executors.slurm_parameters(cfg, [off])
    assert (p["nodes"], p["ntasks_per_node"], p["gres"], p["time"]) == (2, 2, "gpu:2", 30)
    assert p["srun_args"] == ["--mpi=pmix", "--kill-on-bad-exit=1"]  # one Horovod rank per task, started by srun
    fold = plan.get("cnn-fold-0")
    assert fold.tasks == 1 and fold.array == "cnn-folds" and executors.slurm_parameters(cfg, [fold])["gres"] == "gpu:1"
    assert cfg.campaign.warnings() == []
    # a job with its own resources leaves its array: an array is one request for all of its tasks
    cfg = _cfg(tmp_path, "campaign.job_resources={cnn/fold-1: {mem_gb: 16}}")
    plan = build_plan(cfg, tmp_path / "run")
    assert [s.key for s in plan if s.array == "cnn-folds"] == [f"cnn-fold-{k}" for k in (0, 2, 3, 4)]
    assert plan.get("cnn-fold-1").resources.mem_gb == 16 and plan.get("cnn-fold-1").array is None
    # tasks that do not pair up with GPUs: valid, but a warning
    cfg = _cfg(tmp_path, "campaign.job_resources={cnn/official: {tasks_per_node: 4, gpus_per_node: 2}}")
    assert cfg.campaign.warnings() == ["campaign.job_resources.cnn/official: 4 task(s) per node but 2 GPU(s) per "
                                       "node; each training rank uses one GPU: set tasks_per_node = gpus_per_node"]
    with pytest.raises(ConfigError, match=r"campaign.job_resources: no job cnn/fold-7 in this campaign; its jobs: "
                                          r"pack/pack, cnn/official, cnn/fold-0"):
        build_plan(_cfg(tmp_path, "campaign.job_resources={cnn/fold-7: {nodes: 2}}"), tmp_path / "run")


def test_the_job_environment_goes_into_both_paths(tmp_path):
    cfg = _cfg(tmp_path, "campaign.setup=[module load cuda/12.2, source /opt/venv/bin/activate]",
               "campaign.container=apptainer exec --nv '/images/my microcal.sif'")
    plan = build_plan(cfg, tmp_path / "run")
    # submitit: its setup lines, and python inside the container
    unit = [s for s in plan if s.array == "cnn-folds"]
    assert executors.slurm_parameters(cfg, unit)["setup"] == ["module load cuda/12.2", "source /opt/venv/bin/activate"]
    assert executors.submitit_python(cfg) == "apptainer exec --nv '/images/my microcal.sif' python3"
    assert executors.submitit_python(_cfg(tmp_path)) is None  # the launcher's own interpreter
    # the plain script: the same lines first, then the job's command under srun, inside the container
    lines = sbatch.render_job_script(cfg, unit).splitlines()
    assert lines.index("module load cuda/12.2") < lines.index("source /opt/venv/bin/activate") < \
        lines.index("set -euo pipefail")
    assert lines[-1] == """exec srun --unbuffered apptainer exec --nv '/images/my microcal.sif' "${cmd[@]}\""""
    assert "  3) job=cnn/fold-3; cmd=(" + shlex.join(plan.get("cnn-fold-3").command) + ") ;;" in lines
    feat = sbatch.render_job_script(cfg, [plan.get("wavelet-features")]).splitlines()
    assert feat[-1].startswith("exec srun --unbuffered --mpi=pmix --kill-on-bad-exit=1 apptainer exec --nv")
