"""The local executor with real job processes and real signals.

- Concurrency: independent jobs that fit in the cores run at once, each pinned to its own cores; a job
  that needs every core runs alone; ``--serial`` runs one at a time; MPI ranks split their job's cores.
- Ownership: a second ``submit`` on a live run directory is refused naming the launcher's host and pid;
  Ctrl-C (SIGINT to the launcher's process group, as a terminal sends it) stops every job, records
  them, exits 130 with one line; jobs die with a SIGKILLed launcher and an immediate rerun resumes.
- A job stopped at its time limit is TIMEOUT.
- Start order: of the ready jobs, those that need more cores start first.
- The fork server: a CNN job forked from it (TensorFlow imported already) gives bit-identical
  predictions to the same job in a fresh process; the server ends with a SIGKILLed launcher.
- On the real data: a tiny campaign with one job made to fail (a file where its folder should be),
  then resumed; and the debug executor.
"""
from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import REPO, cli_env, poll
from test_faults_mpi import children
from microcal_hpc.config import ResourceConfig, load_config
from microcal_hpc.launcher import local, locks
from microcal_hpc.launcher.plan import JobSpec, Plan, build_plan

needs_two_cores = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs a machine with 2 cores")

TINY = ["train.epochs=1", "train.folds=2", "campaign.cv_folds=2", "campaign.augment_presets=[flips]",
        "classify.classifiers=[lr,nb]", "classify.folds=2", "report.bootstrap=200", "campaign.max_parallel=2",
        "campaign.poll_seconds=0.5"]
ONE_CORE_TRAINING = [*TINY, "campaign.resources.train.cpus_per_task=1"]  # two training jobs at once on 2 cores


def job_env(**extra: str) -> dict[str, str]:
    env = cli_env()
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1",
               TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def submit_args(root: Path, run: Path, executor: str, settings=()) -> list[str]:
    args = ["submit", "--executor", executor, "--run-dir", str(run), "--set", f"data.root={root}"]
    for s in settings:
        args += ["--set", s]
    return args


def microcal(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jobs", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def explain(run: Path, proc: subprocess.CompletedProcess | None = None) -> str:
    """Everything useful when a campaign test fails: output, status table, the tails of failed jobs' logs."""
    parts = []
    if proc is not None:
        parts += [f"exit code {proc.returncode}", "--- stdout", proc.stdout[-6000:], "--- stderr", proc.stderr[-4000:]]
    status = microcal(["status", "--run-dir", str(run)], job_env(), 60)
    parts += ["--- status", status.stdout, status.stderr]
    for key, rec in records(run).items():
        if rec.get("state") != "COMPLETED":
            for field in ("log_err", "log_out", "job_log"):
                p = rec.get(field)
                if p and Path(p).is_file():
                    parts += [f"--- {key}: {p}", Path(p).read_text(errors="replace")[-3000:]]
    return "\n".join(parts)


def records(run: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((run / "jobs").glob("*.json"))}


def interval(rec: dict) -> tuple[float, float]:
    from microcal_hpc.launcher.records import parse_time

    return parse_time(rec["started"]).timestamp(), parse_time(rec["ended"]).timestamp()


def temporary_files(run: Path) -> list[Path]:
    return [p for p in run.rglob("*") if ".tmp" in p.name]


def wait_for(condition, timeout: float, what: str) -> None:
    assert poll(condition, timeout, 0.2), f"timed out after {timeout:.0f} s waiting for {what}"


def live_jobs(run: Path) -> dict[str, list[int]]:
    """{job key: the cores its process may run on} of the job processes of ``run`` alive right now."""
    live = {}
    for key, rec in records(run).items():
        pid = str(rec.get("job_id") or "")
        try:
            stat = Path(f"/proc/{pid}/stat").read_text() if pid.isdigit() else ""
            if stat and stat[stat.rindex(")") + 2] not in "ZX":
                live[key] = sorted(os.sched_getaffinity(int(pid)))
        except (OSError, ValueError):
            pass
    return live


def run_here(tmp_path: Path, packed: Path, settings: list[str], keys: list[str], name: str):
    """Run the jobs ``keys`` of a campaign on ``packed`` with the local executor (launcher in this
    process, jobs in their own processes) while a thread samples the live job processes every 20 ms;
    return (states, records, progress output, samples)."""
    cfg = load_config(overrides=[f"data.packed={packed}", "classify.folds=2", "train.folds=2", "report.bootstrap=100",
                                 "campaign.poll_seconds=0.5", *settings])
    plan = build_plan(cfg, tmp_path / name)
    out, samples, done = io.StringIO(), [], threading.Event()

    def watch():
        while not done.is_set():
            samples.append(live_jobs(tmp_path / name))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        states = local.run_local(cfg, plan, [plan.get(k) for k in keys], out=out)
    finally:
        done.set()
        watcher.join()
    return states, records(tmp_path / name), out.getvalue(), [s for s in samples if s]


@pytest.fixture
def two_cores():
    """This process (the launcher, and what it starts) on exactly 2 cores, whatever the machine has."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, sorted(before)[:2])
    yield sorted(before)[:2]
    os.sched_setaffinity(0, before)


@pytest.fixture
def repo_on_path(monkeypatch):
    """Job processes import this checkout (and the tests' own modules)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), str(REPO / "tests")]))
    for k, v in job_env().items():
        if k.startswith("OMPI_") or k in ("TF_CPP_MIN_LOG_LEVEL", "MPLBACKEND"):
            monkeypatch.setenv(k, v)


# ----------------------------------------------------------------------------------------------
# concurrency

ONE_CORE = ["campaign.resources.wavelet_features.tasks_per_node=1", "campaign.resources.wavelet_classify.cpus_per_task=1"]
TWO_CORE = ["campaign.resources.wavelet_features.tasks_per_node=2", "campaign.resources.wavelet_classify.cpus_per_task=2"]
JOBS = ["wavelet-features", "baseline"]


@needs_two_cores
@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_two_one_core_jobs_run_at_once_each_on_its_own_core(packed_synthetic, tmp_path, repo_on_path, two_cores):
    states, recs, out, samples = run_here(tmp_path, packed_synthetic, ONE_CORE, JOBS, "run")
    assert states == dict.fromkeys(JOBS, "COMPLETED"), out
    both = [s for s in samples if len(s) == 2]
    assert both, samples  # at some moment both job processes were alive
    assert sorted(both[0].values()) == [[two_cores[0]], [two_cores[1]]], both[0]  # each pinned to its own core
    assert sorted(recs[k]["cpus"] for k in JOBS) == [[two_cores[0]], [two_cores[1]]]  # as the jobs saw it
    assert "2 running" in out and "on core " in out, out


@needs_two_cores
@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_a_job_that_needs_every_core_runs_alone_and_serial_runs_one_at_a_time(packed_synthetic, tmp_path,
                                                                              repo_on_path, two_cores):
    states, recs, out, samples = run_here(tmp_path, packed_synthetic, TWO_CORE, JOBS, "two-core")
    assert states == dict.fromkeys(JOBS, "COMPLETED"), out
    assert samples and all(list(s.values()) == [two_cores] for s in samples), samples  # alone, on both cores
    assert {k for s in samples for k in s} == set(JOBS)
    assert [recs[k]["cpus"] for k in JOBS] == [two_cores, two_cores]
    assert recs["wavelet-features"]["ranks"] == 2  # the MPI job: 2 tasks x 1 core
    assert "2 running" not in out and "on cores " in out, out
    assert interval(recs[JOBS[1]])[0] >= interval(recs[JOBS[0]])[1]  # one after the other

    states, recs, out, samples = run_here(tmp_path, packed_synthetic, ONE_CORE + ["campaign.serial=true"], JOBS,
                                          "serial")
    assert states == dict.fromkeys(JOBS, "COMPLETED"), out
    assert samples and all(len(s) == 1 and len(*s.values()) == 1 for s in samples), samples
    assert "one job at a time" in out and "2 running" not in out, out
    assert interval(recs[JOBS[1]])[0] >= interval(recs[JOBS[0]])[1]


@needs_two_cores
@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_mpi_ranks_split_their_jobs_cores(tmp_path, repo_on_path, two_cores):
    """A 2-task job on 2 cores: each rank on one of them (Open MPI would otherwise bind as it likes)."""
    cfg = load_config(overrides=["campaign.resources.wavelet_features.tasks_per_node=2", "campaign.poll_seconds=0.2"])
    out = tmp_path / "affinity"
    spec = JobSpec(key="probe", stage="wavelet", name="probe", kind="wavelet-features", job_type="wavelet_features",
                   function="launcher_probe:write_affinity", config=cfg, args=(str(out),), outputs=(),
                   resources=ResourceConfig(cpus_per_task=1, tasks_per_node=2), tasks=2, run_dir=str(tmp_path))
    states = local.run_local(cfg, Plan(run_dir=str(tmp_path)), [spec], out=io.StringIO())
    assert states == {"probe": "COMPLETED"}
    ranks = sorted(json.loads(p.read_text())["cpus"] for p in tmp_path.glob("affinity.*"))
    assert ranks == [[two_cores[0]], [two_cores[1]]]


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_job_is_stopped_at_its_time_limit(make_tree, tmp_path, repo_on_path, monkeypatch):
    """The limit is minutes; the test shortens the deadline the executor computes to 3 s."""
    make_running = local._Running
    monkeypatch.setattr(local, "_Running", lambda spec, process, started, deadline: make_running(
        spec, process, started, started + 3.0))
    root = make_tree(counts={"Train": (40, 40), "Test": (12, 12)})
    cfg = load_config(overrides=[f"data.root={root}", "train.epochs=500", "campaign.cv_folds=0",
                                 "campaign.augment_presets=[]", "campaign.poll_seconds=0.2"])
    plan = build_plan(cfg, tmp_path / "run")
    out = io.StringIO()
    states = local.run_local(cfg, plan, [plan.get("pack"), plan.get("cnn-official")], out=out)
    rec = records(tmp_path / "run")["cnn-official"]
    assert states == {"pack": "COMPLETED", "cnn-official": "TIMEOUT"}, out.getvalue()
    assert "time limit" in rec["error"] and "campaign.resources.train.time_min" in rec["error"]
    assert not locks.pid_alive(rec["job_id"])
    assert not temporary_files(tmp_path / "run")


def probe_specs(run: Path, cfg, names: list[str], seconds: str = "60", **kw) -> list[JobSpec]:
    """Jobs of 1 core (job type pack) that sleep (tests/launcher_probe.py)."""
    return [JobSpec(key=n, stage="probe", name=n, kind="pack", job_type="pack", function="launcher_probe:sleep",
                    config=cfg, args=(seconds,), outputs=(), resources=ResourceConfig(cpus_per_task=1),
                    run_dir=str(run), **kw) for n in names]


def signal_when(condition, sig: int) -> threading.Thread:
    """Send ``sig`` to this process once ``condition()`` holds (from a thread; the main thread handles it)."""
    def watch():
        wait_for(condition, 120, "the jobs to start")
        os.kill(os.getpid(), sig)
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@needs_two_cores
@pytest.mark.timeout(120)
def test_of_the_ready_jobs_those_that_need_more_cores_start_first(tmp_path, repo_on_path, two_cores):
    cfg = load_config(overrides=["campaign.poll_seconds=0.2"])
    one_core = probe_specs(tmp_path, cfg, ["a", "b"], "0.5")
    wide = probe_specs(tmp_path, cfg, ["wide"], "0.5")[0]
    wide.resources = ResourceConfig(cpus_per_task=2)
    out = io.StringIO()
    states = local.run_local(cfg, Plan(run_dir=str(tmp_path)), [*one_core, wide], out=out)  # plan order: a, b, wide
    assert states == dict.fromkeys(["a", "b", "wide"], "COMPLETED")
    started = [line.split()[1] for line in out.getvalue().splitlines() if line.startswith("started ")]
    assert started == ["probe/wide", "probe/a", "probe/b"], out.getvalue()
    recs = records(tmp_path)
    assert recs["wide"]["cpus"] == two_cores
    assert min(interval(recs[k])[0] for k in ("a", "b")) >= interval(recs["wide"])[1]


@needs_two_cores
@pytest.mark.timeout(120)
def test_sigterm_to_the_launcher_stops_its_jobs_and_cancels_the_rest(tmp_path, repo_on_path, two_cores):
    cfg = load_config(overrides=["campaign.poll_seconds=0.2"])
    specs = probe_specs(tmp_path, cfg, ["a", "b", "c"])  # 1 core each: a and b run, c waits
    running = lambda: all(records(tmp_path).get(k, {}).get("state") == "RUNNING" for k in ("a", "b"))
    signal_when(running, signal.SIGTERM)
    with pytest.raises(local.Interrupted) as stopped:
        local.run_local(cfg, Plan(run_dir=str(tmp_path)), specs, out=io.StringIO())
    assert stopped.value.exit_code == 143
    assert str(stopped.value) == ("interrupted by SIGTERM: 2 running job(s) stopped (INTERRUPTED), 1 not started "
                                  "(CANCELLED); run the same command again to resume")
    recs = records(tmp_path)
    assert {k: r["state"] for k, r in recs.items()} == {"a": "INTERRUPTED", "b": "INTERRUPTED", "c": "CANCELLED"}
    assert not any(locks.pid_alive(recs[k]["pid"]) for k in ("a", "b"))
    assert (tmp_path / "logs" / "local" / "a.err").read_text().splitlines()[-1] == "[microcal-hpc] a: stopped by SIGTERM"


@pytest.fixture
def ctrl_c_raises():
    """SIGINT raises KeyboardInterrupt in this process, as in a terminal: Python leaves SIGINT ignored
    when it was started with it ignored (a background job of a non-interactive shell: `cmd &`)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(120)
def test_ctrl_c_in_the_debug_executor_records_the_job_and_cancels_the_rest(tmp_path, repo_on_path, ctrl_c_raises):
    cfg = load_config()
    specs = probe_specs(tmp_path, cfg, ["a", "b"])
    signal_when(lambda: records(tmp_path).get("a", {}).get("state") == "RUNNING", signal.SIGINT)
    with pytest.raises(local.Interrupted) as stopped:
        local.run_debug(cfg, Plan(run_dir=str(tmp_path)), specs, out=io.StringIO())
    assert stopped.value.exit_code == 130 and "probe/a stopped (INTERRUPTED), 1 not started" in str(stopped.value)
    recs = records(tmp_path)
    assert (recs["a"]["state"], recs["a"]["error"], recs["b"]["state"]) == ("INTERRUPTED", "stopped by SIGINT", "CANCELLED")
    assert locks.free(locks.job_lock_path(tmp_path, "a"))


@pytest.mark.timeout(120)
def test_a_job_killed_from_outside_fails_and_its_dependents_are_skipped(tmp_path, repo_on_path):
    cfg = load_config(overrides=["campaign.poll_seconds=0.2"])
    first = probe_specs(tmp_path, cfg, ["first"])
    after = probe_specs(tmp_path, cfg, ["after"], depends_on=("first",))
    threading.Thread(target=lambda: (wait_for(lambda: records(tmp_path).get("first", {}).get("pid"), 120, "first"),
                                     os.kill(records(tmp_path)["first"]["pid"], signal.SIGKILL)), daemon=True).start()
    out = io.StringIO()
    states = local.run_local(cfg, Plan(run_dir=str(tmp_path)), first + after, out=out)
    assert states == {"first": "FAILED", "after": "SKIPPED"}, out.getvalue()
    recs = records(tmp_path)
    assert recs["first"]["error"] == "killed by SIGKILL" and recs["after"]["error"] == "not run: dependency first did not complete"


@pytest.mark.timeout(120)
def test_a_closed_output_does_not_stop_the_campaign(tmp_path, repo_on_path):
    class ClosedAfterOneLine(io.StringIO):
        def write(self, text):
            if self.getvalue():
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(text)

    cfg = load_config(overrides=["campaign.poll_seconds=0.2"])
    states = local.run_local(cfg, Plan(run_dir=str(tmp_path)), probe_specs(tmp_path, cfg, ["a", "b"], "0.1"),
                             out=ClosedAfterOneLine())
    assert states == {"a": "COMPLETED", "b": "COMPLETED"}


# ----------------------------------------------------------------------------------------------
# jobs forked from the fork server


@needs_two_cores
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_cnn_job_forked_from_the_fork_server_computes_what_a_fresh_process_computes(packed_synthetic, tmp_path,
                                                                                    repo_on_path, two_cores):
    settings = ["train.epochs=2", "campaign.resources.train.cpus_per_task=1"]
    states, recs, out, _ = run_here(tmp_path, packed_synthetic, settings, ["cnn-fold-0"], "forked")
    assert states == {"cnn-fold-0": "COMPLETED"}, out
    rec, forked = recs["cnn-fold-0"], tmp_path / "forked" / "cnn" / "fold-0"
    assert "forked from its fork server" in Path(rec["log_err"]).read_text()
    assert rec["cpus"] == [two_cores[0]] and rec["process_s"] >= rec["elapsed_s"]
    assert json.loads((forked / "metrics.json").read_text())["timing"]["import"] < 0.5  # TensorFlow came imported
    # the same job as a fresh process on the same core
    fresh = subprocess.run([sys.executable, "-m", "jobs", "train", "--config", str(forked / "config.yaml"), "--data",
                            str(packed_synthetic), "--run-dir", str(tmp_path / "fresh"), "--name", "fold-0", "--fold", "0"],
                           env=job_env(), capture_output=True, text=True, timeout=240,
                           preexec_fn=lambda: os.sched_setaffinity(0, [two_cores[0]]))
    assert fresh.returncode == 0, fresh.stderr
    a, b = np.load(forked / "predictions.npz"), np.load(tmp_path / "fresh" / "fold-0" / "predictions.npz")
    for key in ("test_prob", "val_prob"):
        assert len(a[key]) and np.array_equal(a[key], b[key]), key


# ----------------------------------------------------------------------------------------------
# ownership and signals

def _training_campaign(root: Path, *extra: str) -> list[str]:
    return [f"data.root={root}", "train.epochs=300", "campaign.cv_folds=0", "campaign.wavelet=false",
            "campaign.baseline=false", "campaign.poll_seconds=0.3", *extra]


def _start_submit(root: Path, run: Path, settings: list[str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "jobs", "submit", "--executor", "local", "--run-dir", str(run)]
    for s in settings:
        args += ["--set", s]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=job_env(),
                            start_new_session=True)


def _training_started(run: Path, names: list[str]):
    return lambda: all((run / "cnn" / n / "checkpoints" / "state.json").exists() for n in names)


@needs_two_cores
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_second_submit_is_refused_and_ctrl_c_stops_every_job(make_tree, tmp_path, two_cores):
    root, run = make_tree(counts={"Train": (40, 40), "Test": (12, 12)}), tmp_path / "run"
    settings = _training_campaign(root, "campaign.augment_presets=[flips]", "campaign.resources.train.cpus_per_task=1")
    launcher = _start_submit(root, run, settings)
    try:
        wait_for(_training_started(run, ["official", "augment-flips"]), 150, "both training jobs to save an epoch")
        second = microcal(["submit", "--executor", "local", "--run-dir", str(run)]
                          + [a for s in settings for a in ("--set", s)], job_env(), 120)
        assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
        assert f"another launcher is working on this run directory (pid {launcher.pid} on host " \
               f"{socket.gethostname()}" in second.stderr
        os.killpg(launcher.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        stdout, stderr = launcher.communicate(timeout=90)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 130, stderr
    assert stderr.splitlines() == ["microcal-hpc submit: error: interrupted by SIGINT: 2 running job(s) stopped "
                                   "(INTERRUPTED), 1 not started (CANCELLED); run the same command again to resume"]
    recs = records(run)
    assert {k: r["state"] for k, r in recs.items()} == {
        "pack": "COMPLETED", "cnn-official": "INTERRUPTED", "cnn-augment-flips": "INTERRUPTED", "aggregate": "CANCELLED"}
    for key in ("cnn-official", "cnn-augment-flips"):
        assert not locks.pid_alive(recs[key]["pid"])
    logs = list((run / "logs" / "local").glob("*.err")) + list(run.glob("cnn/*/train.log"))
    assert logs and not [p for p in logs if "Traceback" in p.read_text()]
    assert "stopped by SIGTERM" in (run / "logs" / "local" / "cnn-official.err").read_text()
    assert not temporary_files(run)
    assert locks.free(run / locks.RUN_DIR_LOCK)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_jobs_die_with_a_killed_launcher_and_an_immediate_rerun_resumes(make_tree, tmp_path, repo_on_path):
    root, run = make_tree(counts={"Train": (40, 40), "Test": (12, 12)}), tmp_path / "run"
    settings = _training_campaign(root, "campaign.augment_presets=[]", "train.epochs=20")
    launcher = _start_submit(root, run, settings)
    try:
        wait_for(_training_started(run, ["official"]), 150, "the training job to save an epoch")
        job_pid = records(run)["cnn-official"]["pid"]
        servers = [p for p in children(launcher.pid)
                   if b"multiprocessing.forkserver" in Path(f"/proc/{p}/cmdline").read_bytes()]
    finally:
        launcher.kill()  # SIGKILL: the launcher cannot clean up anything itself
        launcher.communicate()
    assert len(servers) == 1  # the training job was forked from it, and it ends with the launcher
    wait_for(lambda: not locks.pid_alive(servers[0]), 30, "the fork server to end")
    # at once, as a user would: the run directory is free, the job's earlier process is waited for
    cfg = load_config(overrides=settings)
    plan = build_plan(cfg, run)
    out = io.StringIO()
    t0 = time.monotonic()
    states = local.run_local(cfg, plan, [plan.get("cnn-official")], out=out)
    assert states == {"cnn-official": "COMPLETED"}, out.getvalue() + explain(run)
    assert not locks.pid_alive(job_pid)
    rec = records(run)["cnn-official"]
    assert rec["history"][-1]["state"] == "INTERRUPTED" and rec["pid"] != job_pid
    assert "resuming after epoch" in (run / "cnn" / "official" / "train.log").read_text()
    assert (run / "cnn" / "official" / "metrics.json").is_file() and not temporary_files(run)
    print(f"\nrerun after SIGKILL of the launcher: {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------------------------
# the real data

@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.mpi
@pytest.mark.timeout(600)
def test_local_campaign_failure_then_resume(real_root, tmp_path):
    run = tmp_path / "run"
    (run / "cnn").mkdir(parents=True)
    (run / "cnn" / "fold-1").write_text("in the way")  # cnn/fold-1 cannot create its folder: it fails for real
    t0 = time.time()
    proc = microcal(submit_args(real_root, run, "local", ONE_CORE_TRAINING), job_env(), 540)
    first_s = time.time() - t0
    assert proc.returncode == 1, explain(run, proc)
    recs = records(run)
    failed = recs["cnn-fold-1"]
    assert failed["state"] == "FAILED" and "fold-1" in failed["error"], explain(run, proc)
    # the failing job's log path is printed, and it holds the error
    assert "FAILED: cnn/fold-1" in proc.stdout and f"log: {failed['log_err']}" in proc.stdout, proc.stdout
    assert "fold-1" in Path(failed["log_err"]).read_text()
    # every other job ran to completion and kept its results, the report included
    others = {k: r["state"] for k, r in recs.items() if k != "cnn-fold-1"}
    assert set(others.values()) == {"COMPLETED"}, explain(run, proc)
    assert len(recs) == 9
    for name in ("official", "fold-0", "augment-flips"):
        assert (run / "cnn" / name / "metrics.json").is_file()
    for fs in ("coeffs", "stats"):
        for clf in ("lr", "nb"):
            assert (run / "wavelet" / fs / clf / "metrics.json").is_file()
    assert all((run / "baseline" / name / "metrics.json").is_file() for name in ("brightness-rf", "greylevel-rf"))
    assert (run / "report" / "report.html").is_file()
    assert recs["wavelet-features"]["ranks"] == 2  # launched under mpiexec -n 2 by the local executor
    assert len(recs["cnn-official"]["cpus"]) == 1 and len(recs["wavelet-features"]["cpus"]) == min(2, len(os.sched_getaffinity(0)))
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["ended"] and manifest["config"]["campaign"]["cv_folds"] == 2
    assert "[9/9]" in proc.stdout  # progress: jobs done / total

    # resume: only the failed job and the report run again
    (run / "cnn" / "fold-1").unlink()
    t1 = time.time()
    proc2 = microcal(submit_args(real_root, run, "local", ONE_CORE_TRAINING), job_env(), 300)
    second_s = time.time() - t1
    assert proc2.returncode == 0, explain(run, proc2)
    assert "8 complete, 0 still running, 2 to run" in proc2.stdout, proc2.stdout  # the old report counts
    recs2 = records(run)
    rerun = {k for k in recs2 if recs2[k]["job_id"] != recs[k]["job_id"]}
    assert rerun == {"cnn-fold-1", "aggregate"}
    assert all(r["state"] == "COMPLETED" for r in recs2.values())
    assert recs2["cnn-fold-1"]["history"][-1]["state"] == "FAILED"
    assert (run / "cnn" / "fold-1" / "metrics.json").is_file()
    assert proc2.stdout.strip().splitlines()[-1] == str(run / "report" / "report.html")

    # debug executor: in-process, only what is missing (the report)
    (run / "report" / "report.html").unlink()
    proc3 = microcal(submit_args(real_root, run, "debug", ONE_CORE_TRAINING), job_env(), 300)
    assert proc3.returncode == 0, explain(run, proc3)
    assert "8 complete, 0 still running, 1 to run" in proc3.stdout
    assert records(run)["aggregate"]["executor"] == "debug" and (run / "report" / "report.html").is_file()
    print(f"\nlocal executor: tiny campaign {first_s:.1f} s (one job failing), resume {second_s:.1f} s")
