"""A REAL single-node SLURM cluster (slurmctld, slurmd, slurmdbd + MariaDB, munge, two fake GPUs),
started once for this module by tests/slurm_cluster/start.sh and stopped at teardown, pass or fail.

1. `microcal-hpc submit --executor slurm`: a tiny campaign (real data, 1 epoch, 2 folds as an array,
   1 augmentation preset, MPI wavelet features on 2 tasks, 2 classifiers) completes; every CNN job
   asked for --gres=gpu:1 and ran with CUDA_VISIBLE_DEVICES set (on CPU: TF sees no real GPU); every
   job ran campaign.setup (a line that leaves a mark) and its command inside campaign.container (a
   wrapper that leaves a mark).
2. slurm/submit_all.sh (the plain sbatch scripts of `submit --write-sbatch`, chained with --dependency)
   completes the same campaign, with the same setup and container marks.
3. Both paths ask SLURM for the same jobs: the default and the GPU config (configs/campaign-gpu.yaml:
   a 2-node, 4-GPU Horovod job, GPU and CPU partitions, account and QOS) submitted held, through
   submitit and through submit_all.sh; what `scontrol show job` recorded is compared job by job.
4. scancel of a running training job: `microcal-hpc status` reports it CANCELLED.
5. Preemption: USR2 (SLURM's pre-time-limit/preemption signal) to a running training job: submitit
   checkpoints and requeues it; it resumes and ends with the full number of epochs in history.json.
6. The slurm/*.sbatch scripts for one job by hand, submitted with sbatch and chained with --dependency,
   run the same tiny study to a complete report, and slurm/train_horovod.sbatch trains on 2 Horovod ranks
   started by srun.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from cli_helpers import poll
from test_launcher_local import TINY, explain, job_env, microcal, records

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPTS = REPO / "tests" / "slurm_cluster"
pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.realdata]

# small requests so that jobs fit the test node whatever its size
SMALL = ["campaign.resources.train.cpus_per_task=1", "campaign.resources.train.mem_gb=1",
         "campaign.resources.train.gpus_per_node=1", "campaign.resources.train.time_min=10",
         "campaign.resources.pack.mem_gb=1", "campaign.resources.aggregate.mem_gb=1",
         "campaign.resources.wavelet_classify.mem_gb=1", "campaign.resources.wavelet_classify.cpus_per_task=1",
         "campaign.resources.wavelet_features.mem_gb=1", "campaign.resources.wavelet_features.tasks_per_node=2",
         "campaign.resources.wavelet_features.cpus_per_task=1"]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "SKIPPED", "INTERRUPTED",
            "PREEMPTED", "BOOT_FAIL", "DEADLINE"}


def _tail_logs(state_dir: Path) -> str:
    out = []
    for p in sorted((state_dir / "log").glob("*")):
        out.append(f"--- {p}\n" + p.read_text(errors="replace")[-2000:])
    return "\n".join(out)


@pytest.fixture(scope="module")
def slurm_cluster():
    """Start the cluster (installing the Debian packages if missing); yield its SLURM_CONF; stop it."""
    if not shutil.which("slurmctld") and os.geteuid() != 0 and not shutil.which("sudo"):
        if os.environ.get("CI") == "true":
            pytest.fail("SLURM is not installed and cannot be (not root, no sudo)")
        pytest.skip("SLURM is not installed and cannot be (not root, no sudo)")
    state = Path(tempfile.mkdtemp(prefix="mc-slurm-", dir="/tmp"))  # short: unix socket paths <= 107 bytes
    old_conf = os.environ.get("SLURM_CONF")
    try:
        start = subprocess.run(["bash", str(CLUSTER_SCRIPTS / "start.sh"), str(state)], capture_output=True,
                               text=True, timeout=300)
        if start.returncode != 0:
            pytest.fail(f"tests/slurm_cluster/start.sh failed ({start.returncode}):\n{start.stderr}\n"
                        f"{_tail_logs(state)}")
        os.environ["SLURM_CONF"] = str(state / "etc" / "slurm.conf")
        yield state
    finally:
        subprocess.run(["bash", str(CLUSTER_SCRIPTS / "stop.sh"), str(state)], capture_output=True, timeout=120)
        if old_conf is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old_conf
        shutil.rmtree(state, ignore_errors=True)


def slurm_env(**extra: str) -> dict[str, str]:
    env = job_env(**extra)
    env["MICROCAL_VENV"] = sys.prefix  # the venv the jobs run in (slurm/*.sbatch activate it)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def job_environment(marks: Path) -> list[str]:
    """``--set`` values giving every job a setup line and a container wrapper that each leave a mark in
    ``marks`` (the job id and, for the wrapper, the command it was asked to run)."""
    marks.mkdir(parents=True, exist_ok=True)
    wrapper = marks / "container.sh"
    wrapper.write_text('#!/bin/sh\necho "${SLURM_JOB_ID:-?} $*" >> "$(dirname "$0")/container.log"\nexec "$@"\n')
    wrapper.chmod(0o755)
    setup = f'echo "$SLURM_JOB_ID" >> {marks / "setup.log"}'
    return [f"campaign.setup=['{setup}']", f"campaign.container={wrapper}"]


def marks_of(marks: Path, name: str) -> list[str]:
    path = marks / name
    return path.read_text().splitlines() if path.is_file() else []


def status_rows(run: Path, exit_code: int = 0) -> dict[str, dict]:
    """`microcal-hpc status --json` (exit 0: every job completed or still going; 1: not)."""
    proc = microcal(["status", "--run-dir", str(run), "--json"], slurm_env(), 120)
    assert proc.returncode == exit_code, proc.stderr
    return {r["key"]: r for r in json.loads(proc.stdout)}


def live_states(run: Path) -> dict[str, str]:
    """{key: state} as `microcal-hpc status` computes it (records + sacct), in-process: cheap to poll."""
    from microcal_hpc.launcher import status

    return {r.key: r.state for r in status.collect(run)}


def wait_for(predicate, timeout: float, what: str, on_fail, every: float = 1.0) -> None:
    """Poll ``predicate`` every ``every`` s until true; fail with ``on_fail()`` after ``timeout`` s."""
    if not poll(predicate, timeout, every):
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{on_fail()}")


def sacct_states(ids: list[str]) -> dict[str, str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", ",".join(ids)], capture_output=True,
                         text=True, timeout=60).stdout
    return {line.split("|")[0]: line.split("|")[1].split(" ")[0] for line in out.splitlines() if "|" in line}


def wait_all_completed(ids: list[str], rows: int, log_files, timeout: float, what: str):
    """Wait until the ``rows`` sacct rows of ``ids`` (each task of an array is a row) have ended, and assert
    that every one COMPLETED. Returns their states and a function giving squeue, sacct and the tails of
    ``log_files()`` (the message of a failed assertion)."""
    def logs() -> str:
        text = [squeue_text(), json.dumps(sacct_states(ids))]
        for p in log_files():
            text.append(f"--- {p}\n{p.read_text(errors='replace')[-2500:]}")
        return "\n".join(text)

    def finished() -> bool:
        states = sacct_states(ids)
        return len(states) >= rows and all(s in TERMINAL for s in states.values())

    wait_for(finished, timeout, what, logs, every=2.0)
    states = sacct_states(ids)
    assert set(states.values()) == {"COMPLETED"}, logs()
    return states, logs


def raw_job_ids(job_ids: list[str]) -> set[str]:
    """The jobs' own SLURM_JOB_IDs: every task of an array (``12``, ``12_1``) has one of its own."""
    bases = sorted({str(j).split("_")[0] for j in job_ids})
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobIDRaw", "-j", ",".join(bases)], capture_output=True,
                         text=True, timeout=60).stdout.split()
    return set(out)


def squeue_text() -> str:
    return subprocess.run(["squeue"], capture_output=True, text=True, timeout=60).stdout


@pytest.mark.timeout(420)
def test_submitit_campaign_completes_on_slurm(slurm_cluster, real_root, tmp_path):
    run, marks = tmp_path / "run", tmp_path / "marks"
    args = ["submit", "--executor", "slurm", "--run-dir", str(run), "--set", f"data.root={real_root}"]
    for s in [*TINY, *SMALL, *job_environment(marks)]:
        args += ["--set", s]
    t0 = time.time()
    proc = microcal(args, slurm_env(), 120)
    assert proc.returncode == 0, explain(run, proc)
    assert "9 jobs submitted" in proc.stdout, proc.stdout
    assert not (run / "logs" / "%j").exists()  # submitit's folder template: no empty folder of that name

    def finished() -> bool:
        states = live_states(run)
        return len(states) == 9 and all(s in TERMINAL for s in states.values())

    wait_for(finished, 360, "the campaign to end", lambda: explain(run) + "\n" + squeue_text(), every=2.0)
    elapsed = time.time() - t0
    rows = status_rows(run)
    assert {k: r["state"] for k, r in rows.items()} == {k: "COMPLETED" for k in rows}, explain(run)
    assert all(r["source"] in ("record", "sacct") for r in rows.values())
    recs = records(run)
    assert (run / "report" / "report.html").is_file()
    for name in ("official", "fold-0", "fold-1", "augment-flips"):
        assert (run / "cnn" / name / "metrics.json").is_file()
        # --gres=gpu:1 -> SLURM set CUDA_VISIBLE_DEVICES (fake GPUs); TensorFlow trained on the CPU anyway
        assert recs[f"cnn-{name}"]["cuda_visible_devices"] in ("0", "1"), recs[f"cnn-{name}"]
    assert recs["cnn-fold-0"]["job_id"].endswith("_0") and recs["cnn-fold-1"]["job_id"].endswith("_1")
    assert recs["wavelet-features"]["ranks"] == 2  # srun started 2 tasks ...
    assert "on 2 rank(s)" in (run / "wavelet" / "features.log").read_text()  # ... that formed one MPI world
    assert recs["pack"]["cuda_visible_devices"] in (None, "")
    agg = recs["aggregate"]["job_id"]  # the job wrote COMPLETED; SLURM says so once its process has exited
    wait_for(lambda: sacct_states([agg]).get(agg) in TERMINAL, 60, "sacct to see the report job end", squeue_text)
    assert sacct_states([agg]) == {agg: "COMPLETED"}
    assert json.loads((run / "manifest.json").read_text())["ended"]
    # campaign.setup ran in every job (array tasks have ids of their own); every task of every job ran
    # inside campaign.container, which started submitit's python (2 tasks for the MPI job)
    own_ids = raw_job_ids([rec["job_id"] for rec in recs.values()])
    assert len(own_ids) == 9 and own_ids == set(marks_of(marks, "setup.log")), marks_of(marks, "setup.log")
    wrapped = marks_of(marks, "container.log")
    assert all(" python3 -u -m submitit.core._submit " in line for line in wrapped), wrapped
    assert sorted(line.split()[0] for line in wrapped) == sorted([*own_ids, recs["wavelet-features"]["job_id"]])
    print(f"\nSLURM (submitit): tiny campaign submit -> end {elapsed:.1f} s")


@pytest.mark.timeout(420)
def test_submit_all_script_completes(slurm_cluster, real_root, tmp_path):
    run, marks = tmp_path / "run", tmp_path / "marks"
    cmd = ["bash", str(REPO / "slurm" / "submit_all.sh"), "--run-dir", str(run), "--set", f"data.root={real_root}"]
    for s in [*TINY, *SMALL, *job_environment(marks)]:
        cmd += ["--set", s]
    t0 = time.time()
    proc = subprocess.run(cmd, env=slurm_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    ids = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()
           if len(line.split()) == 2 and line.split()[1].isdigit()}
    assert set(ids) == {"pack", "cnn-official", "cnn-folds", "cnn-augment-flips", "wavelet-features",
                        "wavelet-classify", "baseline", "aggregate"}
    # every job recorded with the id sbatch gave it (the folds as <array id>_<task>), before any output
    recs = records(run)
    assert len(recs) == 9 and all(r["executor"] == "slurm" for r in recs.values())
    assert (recs["cnn-fold-0"]["job_id"], recs["cnn-fold-1"]["job_id"]) == (f"{ids['cnn-folds']}_0",
                                                                           f"{ids['cnn-folds']}_1")
    assert {k: r["job_id"] for k, r in recs.items() if "fold" not in k} == \
        {k: ids[k] for k in ids if k != "cnn-folds"}

    states, logs = wait_all_completed(list(ids.values()), 9, lambda: sorted((run / "logs").glob("*.*")), 360,
                                      "submit_all.sh's jobs to end")
    elapsed = time.time() - t0
    assert {f"{ids['cnn-folds']}_0", f"{ids['cnn-folds']}_1"} <= set(states)  # the folds ran as one array
    for name in ("official", "fold-0", "fold-1", "augment-flips"):
        assert (run / "cnn" / name / "metrics.json").is_file(), logs()
    for fs in ("coeffs", "stats"):
        for clf in ("lr", "nb"):
            assert (run / "wavelet" / fs / clf / "metrics.json").is_file(), logs()
    assert all((run / "baseline" / name / "metrics.json").is_file() for name in ("brightness-rf", "greylevel-rf"))
    assert (run / "report" / "report.html").is_file()
    assert "on 2 rank(s)" in (run / "wavelet" / "features.log").read_text()  # srun --mpi=pmix: one MPI world
    # the same job environment: setup in every job, every command inside the container wrapper
    own_ids = raw_job_ids(list(ids.values()))
    assert len(own_ids) == 9 and own_ids == set(marks_of(marks, "setup.log")), marks_of(marks, "setup.log")
    wrapped = marks_of(marks, "container.log")
    assert sum(" microcal-hpc wavelet-features --config " in line for line in wrapped) == 2  # one per MPI task
    assert {line.split()[2] for line in wrapped} == {"pack", "train", "wavelet-features", "wavelet-classify",
                                                     "baseline", "aggregate"}
    # status follows the recorded ids in SLURM: everything COMPLETED (sacct), exit 0
    proc = microcal(["status", "--run-dir", str(run)], slurm_env(), 120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    recorded_ids = {r["job_id"] for r in recs.values()}
    table = [row for row in map(str.split, proc.stdout.splitlines()) if len(row) > 3 and row[3] in recorded_ids]
    assert len(table) == 9 and all(row[2] == "COMPLETED" for row in table), proc.stdout
    # the report job wrote sacct's final states into the other records (plain scripts write none themselves)
    states = {k: r["state"] for k, r in records(run).items()}
    assert states.pop("aggregate") == "PENDING" and set(states.values()) == {"COMPLETED"}, states
    print(f"\nSLURM (submit_all.sh): tiny campaign submit -> end {elapsed:.1f} s")


def sbatch_by_hand(script: str, cwd: Path, env: dict[str, str], *options: str, args: tuple[str, ...] = ()) -> str:
    """Submit slurm/<script>.sbatch as a user would (small memory: the test node is small); its job id."""
    proc = subprocess.run(["sbatch", "--parsable", *options, str(REPO / "slurm" / f"{script}.sbatch"), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"sbatch {script}: {proc.stderr}"
    return proc.stdout.strip().split(";")[0]


@pytest.mark.timeout(420)
def test_hand_written_scripts_run_the_study_and_horovod(slurm_cluster, real_root, tmp_path):
    from microcal_hpc.config import load_config

    run, hvd, out = tmp_path / "run", tmp_path / "hvd", tmp_path / "out"
    for d in (run, hvd, out):
        d.mkdir()
    cfg = load_config(None, [f"data.root={real_root}", *TINY])
    (run / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    env = slurm_env(RUN_DIR=str(run))
    t0 = time.time()
    pack = sbatch_by_hand("pack", out, env, "--mem=1G")
    after_pack = [f"--dependency=afterok:{pack}", "--mem=1G"]
    ids = {"pack": pack,
           "official": sbatch_by_hand("cnn_official", out, env, *after_pack),
           "folds": sbatch_by_hand("cnn_folds", out, env, *after_pack, "--array=0-1"),
           "augment": sbatch_by_hand("cnn_augment", out, dict(env, PRESETS="flips"), *after_pack, "--array=0"),
           "wavelet": sbatch_by_hand("wavelet_mpi", out, env, *after_pack, args=(str(run),)),
           "baseline": sbatch_by_hand("baseline", out, env, *after_pack),
           "horovod": sbatch_by_hand("train_horovod", out, dict(env, RUN_DIR=str(hvd), DATA=str(run / "data" / "packed.h5"),
                                                                 CONFIG=str(run / "config.yaml")),
                                     *after_pack, "--cpus-per-task=1", "--mem=3G")}
    ids["aggregate"] = sbatch_by_hand("aggregate", out, env, "--mem=1G",
                                      "--dependency=afterany:" + ":".join(v for k, v in ids.items() if k != "horovod"))

    states, logs = wait_all_completed(list(ids.values()), 9,
                                      lambda: sorted(out.glob("*.out")) + sorted(hvd.glob("cnn/official/*.log")), 380,
                                      "the hand-submitted jobs to end")
    elapsed = time.time() - t0
    assert {f"{ids['folds']}_0", f"{ids['folds']}_1", f"{ids['augment']}_0"} <= set(states)  # arrays
    metrics = json.loads((run / "report" / "metrics.json").read_text())
    assert metrics["complete"] and metrics["cnn_folds"]["present"] == [0, 1], metrics["status"]
    assert "on 2 rank(s)" in (run / "wavelet" / "features.log").read_text()  # srun --mpi=pmix: one MPI world
    hvd_metrics = json.loads((hvd / "cnn" / "official" / "metrics.json").read_text())
    assert hvd_metrics["distributed"] == {"mode": "horovod", "size": 2}, logs()
    print(f"\nSLURM (slurm/*.sbatch by hand): tiny study and a 2-rank Horovod job, submit -> end {elapsed:.1f} s")


# what scontrol records of a job's request, compared between the two paths
REQUEST_FIELDS = ("Partition", "Account", "QOS", "TimeLimit", "NumNodes", "NumTasks", "CPUs/Task", "MinMemoryNode",
                  "TresPerNode", "ArrayTaskId", "Requeue", "KillOInInvalidDependent", "Reason")


def slurm_requests(job_ids: list[str]) -> dict[str, dict[str, str]]:
    """{job name: the request SLURM recorded} of pending jobs; dependencies by job name."""
    raw = []
    for jid in sorted({str(j).split("_")[0] for j in job_ids}):
        text = subprocess.run(["scontrol", "show", "job", "-o", jid], capture_output=True, text=True,
                              timeout=60).stdout
        raw += [dict(re.findall(r"(\S+?)=(\S*)", line)) for line in text.splitlines() if line.strip()]
    name_of = {f.get("ArrayJobId") or f["JobId"]: f["JobName"] for f in raw}
    out = {}
    for f in raw:
        request = {k: f.get(k) for k in REQUEST_FIELDS}
        deps = [d for d in (f.get("Dependency") or "").split(",") if d and d != "(null)"]
        request["Dependency"] = sorted(f"{d.split(':')[0]}:{name_of[re.sub(r'[_(].*', '', d.split(':')[1])]}"
                                       for d in deps)
        out[f["JobName"]] = request
    return out


HELD = [f"campaign.resources.{t}.extra={{hold: true}}" for t in
        ("pack", "train", "wavelet_features", "wavelet_classify", "aggregate")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("config", ["default", "gpu"])
def test_both_paths_ask_slurm_for_the_same_jobs(slurm_cluster, real_root, tmp_path, config):
    settings = [f"data.root={real_root}", *HELD]
    args = ["--config", str(REPO / "configs" / "campaign-gpu.yaml")] if config == "gpu" else []
    if config == "gpu":  # the test cluster's account and QOS: both must reach SLURM too
        settings += ["campaign.resources.train.account=microcal", "campaign.resources.train.qos=microcal"]
    for s in settings:
        args += ["--set", s]
    submitted: list[str] = []
    try:
        proc = microcal(["submit", "--executor", "slurm", "--run-dir", str(tmp_path / "submitit"), *args],
                        slurm_env(), 120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        via_submitit = [r["job_id"] for r in records(tmp_path / "submitit").values()]
        submitted += via_submitit
        proc = subprocess.run(["bash", str(REPO / "slurm" / "submit_all.sh"), "--run-dir", str(tmp_path / "plain"),
                               *args], env=slurm_env(), capture_output=True, text=True, timeout=120)
        via_sbatch = [line.split()[1] for line in proc.stdout.splitlines()
                      if len(line.split()) == 2 and line.split()[1].isdigit()]
        submitted += via_sbatch
        assert proc.returncode == 0, proc.stdout + proc.stderr
        a, b = slurm_requests(via_submitit), slurm_requests(via_sbatch)
    finally:
        if submitted:
            subprocess.run(["scancel", *sorted({j.split("_")[0] for j in submitted})], timeout=60)
    # 13 jobs: the folds and the presets are one array each; the GPU config adds the official run's two seed
    # repeats, each alone with cnn/official's data-parallel request
    assert set(a) == set(b) and len(a) == (10 if config == "gpu" else 8)
    for name in a:
        assert a[name] == b[name], (name, a[name], b[name])
    assert all(r["Reason"] == "JobHeldUser" for r in a.values())
    assert a["mc-cnn-folds"]["ArrayTaskId"] == "0-4%5" and a["mc-cnn-folds"]["Dependency"] == ["afterok:mc-pack"]
    assert a["mc-aggregate"]["Dependency"] == sorted(f"afterany:{n}" for n in a if n != "mc-aggregate")
    if config == "gpu":
        official = a["mc-cnn-official"]
        assert (official["Partition"], official["NumNodes"], official["NumTasks"], official["TresPerNode"]) == \
            ("gpu", "2-2", "4", "gres:gpu:2")
        assert (official["Account"], official["QOS"]) == ("microcal", "microcal")
        for seed in (1, 2):
            assert a[f"mc-cnn-official-seed-{seed}"] == official, seed
        assert a["mc-cnn-folds"]["TresPerNode"] == "gres:gpu:1" and a["mc-wavelet-features"]["Partition"] == "cpu"
        assert a["mc-wavelet-features"]["NumTasks"] == "8"


def _submit_training(run: Path, packed: Path, epochs: int):
    """Submit ONE CNN training job (cnn/official) through the launcher's SLURM executor."""
    from microcal_hpc.config import load_config
    from microcal_hpc.launcher.executors import submit_slurm
    from microcal_hpc.launcher.plan import build_plan

    cfg = load_config(None, [f"data.packed={packed}", f"train.epochs={epochs}", "campaign.cv_folds=0",
                             "campaign.augment_presets=[]", "campaign.wavelet=false", *SMALL])
    plan = build_plan(cfg, run)
    spec = plan.get("cnn-official")
    ids = submit_slurm(cfg, plan, [spec], {}, out=open(os.devnull, "w"))
    return ids["cnn-official"]


def _epochs_done(run: Path) -> int:
    state = run / "cnn" / "official" / "checkpoints" / "state.json"
    try:
        return int(json.loads(state.read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.mark.timeout(300)
def test_scancel_of_running_training_is_reported_cancelled(slurm_cluster, packed_real, tmp_path):
    run = tmp_path / "run"
    job_id = _submit_training(run, packed_real, epochs=200)
    try:
        wait_for(lambda: records(run)["cnn-official"].get("state") == "RUNNING", 180, "the training job to start",
                 lambda: explain(run) + squeue_text())
        subprocess.run(["scancel", job_id], check=True, timeout=60)
        wait_for(lambda: live_states(run)["cnn-official"] == "CANCELLED", 120,
                 "status to report CANCELLED", lambda: explain(run) + squeue_text())
    finally:
        subprocess.run(["scancel", job_id], timeout=60)
    row = status_rows(run, exit_code=1)["cnn-official"]
    assert row["source"] == "sacct" and row["job_id"] == job_id
    table = microcal(["status", "--run-dir", str(run)], slurm_env(), 60).stdout
    assert "CANCELLED" in table and f"logs/{job_id}/{job_id}_0_log.err" in table
    assert not (run / "cnn" / "official" / "metrics.json").exists()


@pytest.mark.timeout(360)
def test_preempted_training_is_requeued_and_finishes(slurm_cluster, packed_real, tmp_path):
    run = tmp_path / "run"
    epochs = 8
    job_id = _submit_training(run, packed_real, epochs=epochs)
    try:
        wait_for(lambda: _epochs_done(run) >= 1, 240, "the first checkpointed epoch", lambda: explain(run) + squeue_text())
        done_before = _epochs_done(run)
        assert done_before < epochs, "training ended before it could be interrupted; raise epochs"
        # what SLURM sends before a time limit or a preemption (submitit's own test hook does the same)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)

        def finished() -> bool:
            # SLURM keeps a requeued job pending ~2 min (reason BeginTime): let it start now
            reason = subprocess.run(["squeue", "-h", "-o", "%T %r", "-j", job_id], capture_output=True, text=True,
                                    timeout=60).stdout.strip()
            if reason == "PENDING BeginTime":
                subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], timeout=60)
            return sacct_states([job_id]).get(job_id) in TERMINAL

        wait_for(finished, 300, "the requeued job to finish", lambda: explain(run) + squeue_text())
    finally:
        subprocess.run(["scancel", job_id], timeout=60)
    rec = records(run)["cnn-official"]
    history = json.loads((run / "cnn" / "official" / "history.json").read_text())
    assert history["epoch"] == list(range(1, epochs + 1)), history["epoch"]
    assert rec["slurm_restart_count"] >= 1 and rec["requeued"], rec  # the same job id ran again
    assert rec["job_id"] == job_id
    log = Path(rec["log_out"]).read_text()  # submitit logs INFO on stdout
    assert "Calling checkpoint method" in log and "Requeued job" in log, log[-3000:]
    train_log = (run / "cnn" / "official" / "train.log").read_text()
    assert sacct_states([job_id]) == {job_id: "COMPLETED"}
    print(f"\npreemption: signalled after epoch {done_before}; resumed and finished {epochs} epochs")
    assert train_log.count(f"epoch {epochs}/{epochs}") == 1
