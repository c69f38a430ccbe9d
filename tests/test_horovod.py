"""Real Horovod data-parallel training: 2 ranks on the real data, compared with a 1-process run.

One 2-rank `microcal-hpc train` (horovodrun --gloo, 2 epochs) and one 1-process run of the same job
are shared by the tests of this module. Checks:
- both ranks end with bit-identical weights although they trained on disjoint halves of every epoch:
  the only check that catches Horovod silently not averaging gradients (see NOTES.md);
- each rank's per-epoch shard (recorded by tests/log_shards.py as the pipeline handed it to training)
  is disjoint from the other's and together they cover the training part;
- only rank 0 writes the job's outputs (a Python audit hook records rank 1's writes), and they have
  the same files and metrics.json / history.json keys as the 1-process run;
- the learning rate was scaled (linear) and warmed up as microcal_hpc.parallel_math says.

A rank that fails or is signalled: tests/test_faults_horovod.py.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from microcal_hpc.parallel_math import scaled_learning_rate, steps_per_epoch, warmup_step_learning_rate

pytestmark = [pytest.mark.horovod, pytest.mark.slow, pytest.mark.realdata]

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the venv's horovodrun and microcal-hpc sit beside its python
EPOCHS = 2
BASE_LR = 1e-3
WARMUP = 2


def _env(**extra) -> dict:
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0",
               PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update(extra)
    return env


def _train_args(data: Path, run_dir: Path, epochs: int = EPOCHS) -> list[str]:
    return ["train", "--data", str(data), "--run-dir", str(run_dir), "--name", "official", "--epochs", str(epochs),
            "--set", f"train.learning_rate={BASE_LR}", "--set", f"distributed.warmup_epochs={WARMUP}",
            "--set", "distributed.lr_scaling=linear", "--set", "report.bootstrap=200"]


def _run(cmd: list[str], env: dict, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    return r, time.perf_counter() - t0


@pytest.fixture(scope="module")
def runs(packed_real, tmp_path_factory):
    """A 2-rank Horovod run and a 1-process run of the same job on the real data."""
    base = tmp_path_factory.mktemp("horovod")
    two, one, audit = base / "two", base / "one", base / "audit"
    audit.mkdir()
    cmd = [str(BIN / "horovodrun"), "-np", "2", "--gloo", sys.executable, str(REPO / "tests" / "log_shards.py"),
           str(audit / "shards"), str(REPO / "tests" / "write_audit.py"), str(two), str(audit / "writes"), "--",
           *_train_args(packed_real, two)]
    r2, t2 = _run(cmd, _env(), timeout=240)
    assert r2.returncode == 0, f"2-rank run failed ({t2:.0f} s):\n{r2.stdout[-3000:]}\n{r2.stderr[-3000:]}"
    r1, t1 = _run([str(BIN / "microcal-hpc"), *_train_args(packed_real, one), "--distributed", "none"], _env(),
                  timeout=240)
    assert r1.returncode == 0, f"1-process run failed:\n{r1.stderr[-3000:]}"
    print(f"2-rank run {t2:.1f} s, 1-process run {t1:.1f} s")
    return {"two": two / "official", "one": one / "official", "audit": audit, "data": packed_real}


def _logs(job: Path) -> dict[int, str]:
    """Each rank's log text: rank 0 writes train.log, rank R > 0 logs/rank-R.log."""
    out = {0: (job / "train.log").read_text()}
    for p in sorted((job / "logs").glob("rank-*.log")):
        out[int(re.fullmatch(r"rank-(\d+)\.log", p.name).group(1))] = p.read_text()
    return out


@pytest.mark.timeout(420)
def test_ranks_end_with_bit_identical_weights(runs):
    logs = _logs(runs["two"])
    assert sorted(logs) == [0, 1]
    sums = {}
    for rank, text in logs.items():
        found = re.findall(r"rank (\d+)/2 final weights sha256=([0-9a-f]{64})", text)
        assert len(found) == 1 and int(found[0][0]) == rank, f"rank {rank}: no checksum line"
        sums[rank] = found[0][1]
    # Bitwise, not allclose: every rank applies the same allreduced (averaged) gradient to the same
    # weights with the same deterministic ops, so the weights are equal to the last bit. Without
    # averaging, two ranks trained on the disjoint shards checked below differ after their first step.
    assert sums[0] == sums[1]
    # ... and model.keras holds those weights (saved by rank 0, loadable without Horovod)
    import tensorflow as tf

    from microcal_hpc.horovod_context import weights_sha256

    model = tf.keras.models.load_model(runs["two"] / "model.keras")
    assert weights_sha256(model) == sums[0]


@pytest.mark.timeout(420)
def test_each_rank_trained_on_a_disjoint_half_of_every_epoch(runs):
    metrics = json.loads((runs["two"] / "metrics.json").read_text())
    n = metrics["n_train"]
    per_epoch: dict[int, dict[int, list[int]]] = {}
    for rank in (0, 1):
        shards = json.loads((runs["audit"] / f"shards-rank{rank}.json").read_text())
        for epoch, ids in shards.items():
            per_epoch.setdefault(int(epoch), {})[rank] = ids
    assert sorted(per_epoch) == list(range(1, EPOCHS + 1))
    for epoch, shards in per_epoch.items():
        a, b = shards[0], shards[1]
        assert len(a) == len(b) == n // 2  # equal shards: equal step counts on both ranks
        assert len(set(a)) == len(a) and not set(a) & set(b), f"epoch {epoch}: shards overlap"
        union = set(a) | set(b)
        assert union <= set(range(n)) and len(union) == n - n % 2  # the whole training part (even n: all)
    assert per_epoch[1][0] != per_epoch[2][0]  # reshuffled every epoch


@pytest.mark.timeout(420)
def test_only_rank_0_writes_outputs_and_they_match_a_one_process_run(runs):
    two, one = runs["two"], runs["one"]
    files = lambda job: {re.sub(r"tfevents\..*", "tfevents.*", str(p.relative_to(job)))  # noqa: E731
                         for p in job.rglob("*") if p.is_file()}  # (event file names hold the host and pid)
    assert files(two) == files(one) | {"logs/rank-1.log"}
    m1, m2 = (json.loads((job / "metrics.json").read_text()) for job in (one, two))
    assert sorted(m1) == sorted(m2)
    assert m2["distributed"] == {"mode": "horovod", "size": 2} and m1["distributed"]["size"] == 1
    assert sorted(m1["test"]) == sorted(m2["test"]) and m1["n_train"] == m2["n_train"]
    h1, h2 = (json.loads((job / "history.json").read_text()) for job in (one, two))
    assert sorted(h1) == sorted(h2) and len(h2["loss"]) == EPOCHS
    with np.load(one / "predictions.npz") as p1, np.load(two / "predictions.npz") as p2:
        assert sorted(p1.files) == sorted(p2.files)
        assert all(p1[k].shape == p2[k].shape for k in p1.files)
    # rank 1 opened for writing, created or renamed nothing in the job folder but its own log
    writes = {int(re.search(r"rank(\d+)", p.name).group(1)): json.loads(p.read_text())
              for p in runs["audit"].glob("writes-rank*.json")}
    assert sorted(writes) == [0, 1]
    allowed = {("os.mkdir", "."), ("os.mkdir", "official"), ("os.mkdir", "official/logs"),  # mkdir(parents=True)
               ("open", "official/logs/rank-1.log")}
    assert {tuple(w) for w in writes[1]} <= allowed, writes[1]
    assert any(path == "official/metrics.json" for _, path in writes[0])  # the audit does see rank 0's outputs


@pytest.mark.timeout(420)
def test_learning_rate_was_scaled_and_warmed_up(runs):
    history = json.loads((runs["two"] / "history.json").read_text())
    n = json.loads((runs["two"] / "metrics.json").read_text())["n_train"]
    steps = steps_per_epoch(n, 2, 32)
    target = scaled_learning_rate(BASE_LR, 2, "linear")
    # the logged rate is the one of each epoch's last step
    want = [warmup_step_learning_rate(BASE_LR, target, e, steps - 1, steps, WARMUP) for e in range(EPOCHS)]
    assert history["lr"] == pytest.approx(want, rel=1e-6)
    assert history["lr"][-1] == pytest.approx(2 * BASE_LR, rel=1e-6)
