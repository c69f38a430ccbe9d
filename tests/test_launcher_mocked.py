"""The SLURM executor against a mocked cluster (submitit's MockedSubprocess fakes sbatch, sacct, scancel).

A campaign is submitted through the real `microcal-hpc submit` code path: the sbatch files are
checked line by line; then sacct reports some jobs failed, cancelled or timed out: `status` shows
them so and a second `submit` resubmits exactly those (and a new report job), not the completed ones.
"""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from submitit.core.test_core import MockedSubprocess

from jobs import cli
from microcal_hpc.launcher import records, status
from microcal_hpc.synthetic import make_image_tree

SETTINGS = ["campaign.cv_folds=5", "campaign.augment_presets=[flips]", "campaign.resources.train.array_parallelism=2",
            "campaign.resources.train.gpus_per_node=1", "campaign.resources.train.partition=gpu",
            "campaign.resources.wavelet_features.tasks_per_node=2", "classify.classifiers=[lr,nb]",
            "classify.feature_sets=[coeffs]"]


class Cluster(MockedSubprocess):
    """MockedSubprocess that also records every command and lets a test set per-task array states."""

    def __init__(self):
        super().__init__(known_cmds=["srun", "sbatch", "sacct", "scancel"])
        self.calls: list[list[str]] = []

    def __call__(self, command, **kwargs):
        if command[0] not in ("sbatch", "sacct", "scancel", "squeue"):  # uname, git ...: the real thing
            return self._subprocess_check_output(command, **kwargs)
        self.calls.append(list(command))
        if command[0] == "squeue":  # nothing queued that sacct does not already know
            return b""
        return super().__call__(command, **kwargs)

    def set_states(self, states: dict[str, str]) -> None:
        """{job id (``12`` or ``12_3``): state}, replacing sacct's answers for those jobs."""
        by_base: dict[str, list[str]] = {}
        for jid, state in states.items():
            by_base.setdefault(jid.split("_")[0], []).append(f"{jid}|{state}\n{jid}.0|{state}")
        for base, lines in by_base.items():
            self.job_sacct[base] = "\n".join([self.SACCT_HEADER, *lines])


def _submit(cluster: Cluster, run: Path, tmp_path: Path, *extra: str) -> int:
    if not (tmp_path / "tree").is_dir():  # the pack job itself never runs on the mocked cluster; the
        make_image_tree(tmp_path / "tree", counts={"Train": (12, 12), "Test": (4, 4)})  # folds check reads names
    args = ["submit", "--executor", "slurm", "--run-dir", str(run), "--set", f"data.root={tmp_path / 'tree'}"]
    for s in SETTINGS:
        args += ["--set", s]
    with cluster.context():
        return cli.main(args + list(extra))


def _sbatch_files(run: Path) -> dict[str, str]:
    """{job name: sbatch text} of every submission file under RUN/logs."""
    out = {}
    for p in sorted((run / "logs").glob("*/*_submission.sh")):
        text = p.read_text()
        name = re.search(r"--job-name=(\S+)", text).group(1)
        out.setdefault(name, text)
    return out


def _touch(path: str, text: str = "{}") -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text)


@pytest.mark.timeout(120)
def test_submit_status_and_resubmit_on_a_mocked_cluster(tmp_path, capsys):
    run = tmp_path / "run"
    cluster = Cluster()
    assert _submit(cluster, run, tmp_path) == 0
    out = capsys.readouterr().out
    assert "12 to submit" in out and f"microcal-hpc status --run-dir {run}" in out

    recs = records.read_records(run)
    assert len(recs) == 12
    ids = {k: r["job_id"] for k, r in recs.items()}
    assert all(r["state"] == "PENDING" and r["executor"] == "slurm" for r in recs.values())
    # one array for the 5 folds (submitit ids <id>_<index>), one job for the single augmentation preset
    fold_base = ids["cnn-fold-0"].split("_")[0]
    assert [ids[f"cnn-fold-{k}"] for k in range(5)] == [f"{fold_base}_{k}" for k in range(5)]
    assert [recs[f"cnn-fold-{k}"]["array_index"] for k in range(5)] == list(range(5))
    sbatch_calls = [c for c in cluster.calls if c[0] == "sbatch"]
    assert len(sbatch_calls) == 8  # pack, official, folds (array), augment, features, classify, baseline, report

    files = _sbatch_files(run)
    pack_id = ids["pack"]
    folds = files["mc-cnn-folds"]
    for line in ["#SBATCH --array=0-4%2", "#SBATCH --gres=gpu:1", "#SBATCH --partition=gpu",
                 f"#SBATCH --dependency=afterok:{pack_id}", "#SBATCH --kill-on-invalid-dep=yes",
                 "#SBATCH --requeue", f"#SBATCH --output={run}/logs/%A_%a/%A_%a_0_log.out",
                 f"#SBATCH --error={run}/logs/%A_%a/%A_%a_0_log.err"]:
        assert line in folds, line
    feat = files["mc-wavelet-features"]
    assert "#SBATCH --ntasks-per-node=2" in feat and "--gres" not in feat and "--requeue" not in feat
    assert f"#SBATCH --dependency=afterok:{ids['wavelet-features']}" in files["mc-wavelet-classify"]
    assert "--dependency" not in files["mc-pack"]
    agg_dep = re.search(r"--dependency=(\S+)", files["mc-aggregate"]).group(1)
    assert agg_dep.startswith("afterany:")
    assert set(agg_dep.split(":")[1:]) == {ids[k].split("_")[0] for k in ids if k != "aggregate"}
    assert recs["cnn-fold-3"]["log_err"] == str(run / "logs" / ids["cnn-fold-3"] / f"{ids['cnn-fold-3']}_0_log.err")
    assert json.loads((run / "manifest.json").read_text())["submissions"][0]["executor"] == "slurm"

    # the cluster ran some of them: completed ones wrote their outputs
    plan_outputs = {k: r["outputs"] for k, r in recs.items()}
    done = ["pack", "cnn-official", "cnn-fold-0", "cnn-fold-1", "cnn-fold-2", "baseline"]
    for k in done:
        for o in plan_outputs[k]:
            _touch(o)
        records.update_record(run, k, state="COMPLETED", job_id=ids[k])
    cluster.set_states({ids[k]: "COMPLETED" for k in done})
    cluster.set_states({f"{fold_base}_{k}": s for k, s in
                        enumerate(["COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "CANCELLED by 0"])})
    cluster.set_states({ids["cnn-augment-flips"]: "TIMEOUT", ids["wavelet-features"]: "RUNNING",
                        ids["wavelet-classify"]: "PENDING", ids["aggregate"]: "PENDING"})
    records.update_record(run, "cnn-fold-3", state="FAILED", error="ValueError: injected")

    with cluster.context():
        assert cli.main(["status", "--run-dir", str(run)]) == 1  # some jobs failed
    table = capsys.readouterr().out
    states = {line.split()[0] + "/" + line.split()[1]: line.split()[2] for line in table.splitlines()[1:13]}
    assert states == {"pack/pack": "COMPLETED", "cnn/official": "COMPLETED", "cnn/fold-0": "COMPLETED",
                      "cnn/fold-1": "COMPLETED", "cnn/fold-2": "COMPLETED", "cnn/fold-3": "FAILED",
                      "cnn/fold-4": "CANCELLED", "cnn/augment-flips": "TIMEOUT", "wavelet/features": "RUNNING",
                      "wavelet/classify": "PENDING", "baseline/baseline": "COMPLETED",
                      "report/aggregate": "PENDING"}, table
    assert f"logs/{ids['cnn-fold-3']}/{ids['cnn-fold-3']}_0_log.err" in table
    assert "cnn/fold-3: ValueError: injected" in table

    # second submit: the failed, cancelled and timed-out jobs again, a new report; nothing else
    cluster.calls.clear()
    assert _submit(cluster, run, tmp_path) == 0
    out = capsys.readouterr().out
    assert "6 complete, 2 still running, 4 to submit" in out
    recs2 = records.read_records(run)
    resubmitted = {k for k in recs2 if recs2[k]["job_id"] != ids[k]}
    assert resubmitted == {"cnn-fold-3", "cnn-fold-4", "cnn-augment-flips", "aggregate"}
    assert ["scancel", ids["aggregate"]] in cluster.calls  # the old report would not wait for the new jobs
    new_folds = [p for p in (run / "logs").glob("*/*_submission.sh")
                 if "mc-cnn-folds" in p.read_text() and recs2["cnn-fold-3"]["job_id"].split("_")[0] in p.name]
    assert len(new_folds) == 1
    text = new_folds[0].read_text()
    assert "#SBATCH --array=0-1%2" in text and "--dependency" not in text  # pack is complete: no dependency
    assert recs2["cnn-fold-3"]["history"][-1]["state"] == "FAILED"
    agg = re.search(r"--dependency=(\S+)", (run / "logs" / recs2["aggregate"]["job_id"] /
                                            f"{recs2['aggregate']['job_id']}_submission.sh").read_text()).group(1)
    assert set(agg.split(":")[1:]) == {recs2[k]["job_id"].split("_")[0] for k in
                                       ("cnn-fold-3", "cnn-augment-flips", "wavelet-features", "wavelet-classify")}

    # everything completes: a third submit has nothing to do
    for k in ("cnn-fold-3", "cnn-fold-4", "cnn-augment-flips", "wavelet-features", "wavelet-classify", "aggregate"):
        for o in recs2[k]["outputs"]:
            _touch(o)
    cluster.set_states({recs2[k]["job_id"]: "COMPLETED" for k in recs2})
    cluster.calls.clear()
    assert _submit(cluster, run, tmp_path) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert not [c for c in cluster.calls if c[0] == "sbatch"]


def test_dry_run_prints_plan_and_sbatch_and_submits_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    cluster = Cluster()
    assert _submit(cluster, run, tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert not [c for c in cluster.calls if c[0] == "sbatch"] and not (run / "jobs").exists()
    assert "cnn/fold-4" in out and "afterany:all" in out and "dry run: nothing submitted" in out
    assert "# ---- sbatch for cnn-folds (array of 5)" in out and "#SBATCH --array=0-4%2" in out
    assert "#SBATCH --dependency='afterok:<pack>'" in out  # shell-quoted placeholder
    assert "#SBATCH --dependency='afterok:<wavelet-features>'" in out


def test_status_reconcile_writes_slurm_states_into_records(tmp_path, capsys):
    run = tmp_path / "run"
    cluster = Cluster()
    assert _submit(cluster, run, tmp_path) == 0
    ids = {k: r["job_id"] for k, r in records.read_records(run).items()}
    cluster.set_states({ids["cnn-official"]: "CANCELLED by 0", ids["pack"]: "OUT_OF_MEMORY"})
    with cluster.context():
        changed = status.reconcile(run, skip=("aggregate",))
    assert changed == {"cnn-official": "CANCELLED", "pack": "OUT_OF_MEMORY"}
    rec = records.read_record(run, "cnn-official")
    assert rec["state"] == "CANCELLED" and rec["state_source"] == "sacct" and rec["ended"]


class RefusingCluster(Cluster):
    """sbatch refuses any job asking for partition `nosuch` (like a real cluster would)."""

    def sbatch(self, args):
        if "--partition=nosuch" in Path(args[0]).read_text():
            raise subprocess.CalledProcessError(1, ["sbatch", *args], "sbatch: error: invalid partition specified")
        return super().sbatch(args)


def test_a_refused_submission_cancels_what_was_submitted(tmp_path, capsys):
    run = tmp_path / "run"
    cluster = RefusingCluster()
    assert _submit(cluster, run, tmp_path, "--set", "campaign.resources.train.partition=nosuch") == 2
    err = capsys.readouterr().err
    assert "sbatch refused cnn-official" in err and "the 1 job(s) submitted before it were cancelled" in err
    recs = records.read_records(run)
    pack_id = recs["pack"]["job_id"]
    assert ["scancel", pack_id] in cluster.calls
    assert recs["pack"]["state"] == "CANCELLED" and recs["cnn-official"]["state"] == "FAILED"
    assert set(recs) == {"pack", "cnn-official"}  # nothing after the refused job was submitted


def test_a_missing_image_tree_fails_before_anything_is_submitted(tmp_path, capsys):
    run = tmp_path / "run"
    cluster = Cluster()
    with cluster.context():
        code = cli.main(["submit", "--executor", "slurm", "--run-dir", str(run),
                         "--set", f"data.root={tmp_path / 'nosuch'}"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"microcal-hpc submit: error: {tmp_path / 'nosuch'}: image folder not found "
                       "(data.root; the tree ROOT/{Train,Test}/{0,1})")
    assert not any(c[0] == "sbatch" for c in cluster.calls) and not (run / "jobs").exists()


REPO = Path(__file__).resolve().parents[1]
RESOURCE_FLAGS = ("--job-name", "--partition", "--account", "--qos", "--time", "--nodes", "--ntasks-per-node",
                  "--cpus-per-task", "--mem", "--gres", "--array", "--requeue", "--hold")


def _resource_lines(text: str) -> list[str]:
    return sorted(line for line in text.splitlines()
                  if line.startswith("#SBATCH") and line.split("=")[0].split()[-1] in RESOURCE_FLAGS)


@pytest.mark.parametrize("config", [None, REPO / "configs" / "campaign-gpu.yaml"])
def test_plain_sbatch_scripts_request_what_submitit_requests(tmp_path, capsys, config):
    """`submit --write-sbatch` (slurm/submit_all.sh) writes, per job or array, the resource lines of the
    file submitit submits for the same unit, and the same setup lines (the real cluster reads them back:
    tests/test_slurm_cluster.py)."""
    extra = ["--config", str(config)] if config else []
    extra += ["--set", "campaign.setup=[export MARK=1]"]
    assert _submit(Cluster(), tmp_path / "a", tmp_path, *extra) == 0
    submitted = _sbatch_files(tmp_path / "a")
    capsys.readouterr()
    with Cluster().context():
        assert cli.main(["submit", "--write-sbatch", "--run-dir", str(tmp_path / "b"), "--set",
                         f"data.root={tmp_path / 'tree'}", *sum((["--set", s] for s in SETTINGS), []), *extra]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    scripts = {}
    for unit, _dependency, _waits, script, _keys in lines:
        text = Path(script).read_text()
        scripts[re.search(r"--job-name=(\S+)", text).group(1)] = text
    # the GPU config repeats the official run with seeds 1 and 2, each submitted alone with cnn/official's
    # resources (its data-parallel request); the default config has no seed repeats
    seeds = ["cnn-official-seed-1", "cnn-official-seed-2"] if config else []
    units = ["pack", "cnn-official", *seeds, "cnn-folds", "cnn-augment-flips", "wavelet-features", "wavelet-classify",
             "baseline", "aggregate"]
    assert set(scripts) == set(submitted) and len(scripts) == len(units)
    for name, text in scripts.items():
        assert _resource_lines(text) == _resource_lines(submitted[name]), name
        assert "export MARK=1" in text.splitlines() and "export MARK=1" in submitted[name].splitlines()
    assert [line[0] for line in lines] == units
    by_unit = {line[0]: line for line in lines}
    assert by_unit["wavelet-classify"][1:3] == ["afterok", "wavelet-features"]
    assert by_unit["cnn-folds"][1:3] == ["afterok", "pack"]
    assert lines[-1][1] == "afterany" and lines[-1][2].split(",") == [line[0] for line in lines[:-1]]
    if config:
        official = scripts["mc-cnn-official"]
        for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=2", "#SBATCH --gres=gpu:2",
                     "#SBATCH --partition=gpu"):
            assert line in official.splitlines()
        for unit in seeds:
            same = [line for line in _resource_lines(scripts[f"mc-{unit}"]) if not line.startswith("#SBATCH --job-name")]
            assert same == [line for line in _resource_lines(official) if not line.startswith("#SBATCH --job-name")]
            assert f"train.seed={unit.rsplit('-', 1)[1]}" in scripts[f"mc-{unit}"]
        assert "#SBATCH --partition=cpu" in scripts["mc-wavelet-features"]


def test_plain_sbatch_submissions_are_recorded_and_followed_in_slurm(tmp_path, capsys):
    """slurm/submit_all.sh records each job id it gets (`submit --record-sbatch`): status asks SLURM about
    those jobs instead of calling them not submitted, and a second submission refuses to run them twice."""
    from microcal_hpc.launcher import status

    run = tmp_path / "run"
    make_image_tree(tmp_path / "tree", counts={"Train": (12, 12), "Test": (4, 4)})
    write = ["submit", "--write-sbatch", "--run-dir", str(run), "--set", f"data.root={tmp_path / 'tree'}",
             *sum((["--set", s] for s in SETTINGS), [])]
    cluster = Cluster()
    with cluster.context():
        assert cli.main(write) == 0
        lines = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
        assert [row[0] for row in lines if row[4] == "pack"] == ["pack"]
        folds = next(row for row in lines if row[0] == "cnn-folds")
        assert folds[4].split(",") == [f"cnn-fold-{k}" for k in range(5)]
        # nothing recorded yet: status sees planned jobs that were not submitted
        assert {r.state for r in status.collect(run, plan=status.campaign_plan(run))} == {"NOT_SUBMITTED"}
        for i, row in enumerate(lines, 100):
            assert cli.main(["submit", "--run-dir", str(run), "--record-sbatch", str(i), row[4]]) == 0
        cluster.set_states({"100": "RUNNING", "102_0": "COMPLETED", "102_3": "FAILED"})
        rows = {r.key: r for r in status.collect(run, plan=status.campaign_plan(run))}
        assert len(rows) == 12 and all(r.executor == "slurm" for r in rows.values())
        assert (rows["pack"].job_id, rows["pack"].state, rows["pack"].source) == ("100", "RUNNING", "sacct")
        assert [rows[f"cnn-fold-{k}"].job_id for k in range(5)] == [f"102_{k}" for k in range(5)]
        assert rows["cnn-fold-3"].state == "FAILED" and rows["aggregate"].state == "PENDING"
        # a job SLURM no longer knows (no accounting): COMPLETED once its outputs are there, not before
        plan = status.campaign_plan(run)
        assert rows["baseline"].source == "record"
        for out in plan.get("baseline").outputs[:-1]:
            _touch(out)
        assert {r.key: r.state for r in status.collect(run, plan=plan)}["baseline"] == "PENDING"
        _touch(plan.get("baseline").outputs[-1])
        row = {r.key: r for r in status.collect(run, plan=plan)}["baseline"]
        assert (row.state, row.source) == ("COMPLETED", "outputs")
        capsys.readouterr()
        assert cli.main(write) == 2
        assert "are still pending/running on SLURM" in capsys.readouterr().err
        assert cli.main(["submit", "--run-dir", str(run), "--record-sbatch", "200", "cnn-fold-9"]) == 2
        assert "no job cnn-fold-9 in the campaign" in capsys.readouterr().err
    assert not [c for c in cluster.calls if c[0] == "sbatch"]  # write and record only: nothing submitted


def test_dry_run_json_and_gpu_requests(tmp_path, capsys):
    gpu = ["--config", str(REPO / "configs" / "campaign-gpu.yaml")]
    assert _submit(Cluster(), tmp_path / "run", tmp_path, *gpu, "--dry-run", "--json") == 0
    plan = json.loads(capsys.readouterr().out)
    jobs = {j["key"]: j for j in plan["jobs"]}
    assert plan["counts"]["to_submit"] == 14 and plan["warnings"] == [] and not (tmp_path / "run").exists()
    assert plan["setup"] == ["source $HOME/venvs/microcal-gpu/bin/activate"]
    off = jobs["cnn-official"]
    r = off["resources"]
    assert (r["nodes"], r["tasks_per_node"], r["gpus_per_node"]) == (2, 2, 2)
    assert off["tasks"] == 4 and off["array"] is None and off["command"][:2] == ["microcal-hpc", "train"]
    assert jobs["cnn-fold-2"]["resources"]["gpus_per_node"] == 1 and jobs["cnn-fold-2"]["array"] == "cnn-folds"
    seed = jobs["cnn-official-seed-2"]  # a seed repeat of the official run: its resources, alone
    assert seed["resources"] == r and seed["tasks"] == 4 and seed["array"] is None
    assert seed["command"][-2:] == ["--set", "train.seed=2"]
    units = {u["name"]: u for u in plan["units"]}
    assert "#SBATCH --gres=gpu:2" in units["cnn-official"]["sbatch"]
    assert units["cnn-official"]["dependency"] == "afterok:<pack>"
    # the text form: GPU requests, one task per GPU, srun's MPI plugin; a warning when they do not pair up
    assert _submit(Cluster(), tmp_path / "run", tmp_path, *gpu, "--dry-run",
                   "--set", "campaign.job_resources.cnn/official.tasks_per_node=4") == 0
    out = capsys.readouterr().out
    assert ("warning: campaign.job_resources.cnn/official: 4 task(s) per node but 2 GPU(s) per node; each training "
            "rank uses one GPU: set tasks_per_node = gpus_per_node") in out
    assert "exec srun --unbuffered --mpi=pmix --kill-on-bad-exit=1" in out and "#SBATCH --gres=gpu:1" in out
