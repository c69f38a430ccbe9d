"""A training job killed in the middle of an epoch and resumed ends bit-identical to an uninterrupted run.

Real processes and a real SIGKILL: ``tests/pause_training.py`` runs ``microcal-hpc train`` and freezes
its input pipeline inside epoch 2 once the checkpoint of epoch 1 is on disk; the test kills it there,
runs the same command again (which resumes from that checkpoint) and compares every output with a run
that was never interrupted: final weights, optimizer state, metrics.json and history.json (times
excepted), predictions and saliency maps, bit for bit. Dropout, shuffling and augmentation all draw
random numbers, so any random stream that restarted on resume would show here.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cli_helpers import wait_while_running

pytestmark = [pytest.mark.slow]
tf = pytest.importorskip("tensorflow")

REPO = Path(__file__).resolve().parents[1]
TIME_FIELDS = ("timing", "elapsed_s", "training_seconds")  # metrics.json keys that measure time


def _command(data: Path, run_dir: Path, epochs: int, augment: str) -> list[str]:
    return ["train", "--data", str(data), "--run-dir", str(run_dir), "--name", "job", "--epochs", str(epochs),
            "--augment", augment, "--set", "train.batch_size=8", "--set", "report.bootstrap=100"]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}


def _outputs(job: Path) -> dict:
    """Everything a finished job produced that must not depend on an interruption."""
    from microcal_hpc.cnn.train import TIME_KEYS

    out = {}
    metrics = json.loads((job / "metrics.json").read_text())
    out["metrics"] = {k: v for k, v in metrics.items() if k not in TIME_FIELDS}
    history = json.loads((job / "history.json").read_text())
    out["history"] = {k: v for k, v in history.items() if k not in TIME_KEYS}
    state = json.loads((job / "checkpoints" / "state.json").read_text())
    for name in ("predictions.npz", "saliency.npz", f"checkpoints/{state['checkpoint']}"):
        with np.load(job / name) as z:
            out.update({f"{name}:{k}": z[k] for k in z.files})
    model = tf.keras.models.load_model(job / "model.keras", compile=False)
    out.update({f"model.keras:{i}": w for i, w in enumerate(model.get_weights())})
    return out


@pytest.mark.timeout(420)
@pytest.mark.parametrize("augment,first_epochs", [("none", 2), ("reference", 3)])
def test_a_job_killed_mid_epoch_resumes_to_bit_identical_outputs(packed_synthetic, tmp_path, augment, first_epochs):
    """``none``: started for 2 epochs, killed, resumed for 3 (allowed: the constant schedule does not
    depend on the epoch count), compared with a 3-epoch run. ``reference``: an augmentation preset."""
    epochs = 3
    marker = tmp_path / "paused"
    killed = subprocess.Popen([sys.executable, str(REPO / "tests" / "pause_training.py"), "1", "3", str(marker), "--",
                               *_command(packed_synthetic, tmp_path / "killed", first_epochs, augment)],
                              env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    straight = subprocess.Popen([sys.executable, "-m", "jobs", *_command(packed_synthetic, tmp_path / "straight",
                                                                         epochs, augment)],
                                env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_while_running(killed, marker.exists, 300, 0.05, "the job never reached epoch 2",
                           lambda p: f"the job ended before it was killed:\n{p.stderr.read()[-2000:]}")
        os.kill(killed.pid, signal.SIGKILL)  # inside epoch 2: no chance to clean up or to checkpoint
        assert killed.wait(timeout=60) == -signal.SIGKILL
        assert straight.wait(timeout=300) == 0, straight.stderr.read()[-2000:]
    finally:
        for proc in (killed, straight):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    job = tmp_path / "killed" / "job"
    assert marker.read_text() == "epoch-0001.npz"  # killed after the checkpoint of epoch 1, inside epoch 2
    assert not (job / "metrics.json").exists()

    resumed = subprocess.run([sys.executable, "-m", "jobs", *_command(packed_synthetic, tmp_path / "killed", epochs,
                                                                      augment)],
                             env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming after epoch 1" in resumed.stderr
    a, b = _outputs(job), _outputs(tmp_path / "straight" / "job")
    assert sorted(a) == sorted(b)
    assert a["metrics"] == b["metrics"] and a["history"] == b["history"]
    assert a["history"]["epoch"] == [1, 2, 3]
    for key in a:
        if key not in ("metrics", "history"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert int(a["checkpoints/epoch-0003.npz:optimizer_0"]) == 3 * 10  # Adam's step counter: 3 epochs of 10 steps
    assert not [p.name for p in job.rglob(".*.tmp")]  # no temporary file of the killed run is left
