"""`microcal-hpc predict`: CSV from a folder or a packed file; bad input refused with one line."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jobs import cli
from microcal_hpc.config import load_config

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def trained_job(packed_synthetic, tmp_path_factory) -> Path:
    from microcal_hpc.cnn.train import train_cnn as train_job

    run = tmp_path_factory.mktemp("predict_run")
    cfg = load_config(None, ["train.epochs=1", "report.bootstrap=50"])
    return Path(train_job(cfg, str(packed_synthetic), str(run), "official"))


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_packed_file_scores_match_the_training_jobs_test_predictions(trained_job, packed_synthetic, tmp_path):
    from microcal_hpc.dataset import load_split

    out = tmp_path / "scores.csv"
    assert cli.main(["predict", "--model", str(trained_job), "--images", str(packed_synthetic), "--out", str(out)]) == 0
    rows = _read_csv(out)
    assert list(rows[0]) == ["id", "probability", "predicted_label"]
    tr, te = load_split(packed_synthetic, "train"), load_split(packed_synthetic, "test")
    assert [r["id"] for r in rows] == list(tr.ids) + list(te.ids)
    prob = np.array([float(r["probability"]) for r in rows])
    assert ((prob >= 0) & (prob <= 1)).all()
    assert [int(r["predicted_label"]) for r in rows] == [int(p >= 0.5) for p in prob]
    with np.load(trained_job / "predictions.npz") as p:
        np.testing.assert_allclose(prob[len(tr.ids):], p["test_prob"], atol=2e-6)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_folder_of_patches_gets_ids_relative_to_the_folder(trained_job, make_tree, tmp_path):
    root = make_tree(counts={"Test": (3, 2)}, seed=5)
    out = tmp_path / "folder.csv"
    (root / "Test" / "notes.txt").write_text("not an image")  # ignored, like pack does
    assert cli.main(["predict", "--model", str(trained_job), "--images", str(root), "--out", str(out)]) == 0
    rows = _read_csv(out)
    expected = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.pgm"))
    assert [r["id"] for r in rows] == expected and len(rows) == 5


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("bad,problem", [
    ("wrong_size", "image is 64x48 pixels; the model expects 60x60"),
    ("rgb", "RGB colour image"),
    ("garbage", "not a readable image"),
])
def test_bad_images_get_one_line_errors_and_no_csv(trained_job, tmp_path, capsys, bad, problem):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((60, 60), np.uint8)).save(folder / "good.png")
    if bad == "wrong_size":
        Image.fromarray(np.zeros((48, 64), np.uint8)).save(folder / "bad.png")
    elif bad == "rgb":
        Image.fromarray(np.zeros((60, 60, 3), np.uint8)).save(folder / "bad.png")
    else:
        (folder / "bad.png").write_bytes(b"\x00not really a png")
    out = tmp_path / "x.csv"
    rc = cli.main(["predict", "--model", str(trained_job), "--images", str(folder), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert err[-1].startswith(f"microcal-hpc predict: error: {folder / 'bad.png'}: ") and problem in err[-1]
    assert not out.exists()


def test_missing_model_is_a_one_line_error(tmp_path, capsys):
    Image.fromarray(np.zeros((60, 60), np.uint8)).save(tmp_path / "a.png")
    rc = cli.main(["predict", "--model", str(tmp_path / "nojob"), "--images", str(tmp_path), "--out",
                   str(tmp_path / "o.csv")])
    assert rc == 2
    assert "model.keras: trained model not found" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_the_command_prints_its_own_lines_not_tensorflows_start_up_lines(trained_job, packed_synthetic, tmp_path):
    import os
    import subprocess
    import sys

    from cli_helpers import cli_env

    env = {k: v for k, v in cli_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # as in a user's shell
    out = tmp_path / "scores.csv"
    proc = subprocess.run([sys.executable, "-m", "jobs", "predict", "--model", str(trained_job), "--images",
                           str(packed_synthetic), "--out", str(out)], capture_output=True, text=True, env=env,
                          timeout=150, cwd=os.fspath(tmp_path))
    assert proc.returncode == 0, proc.stderr
    lines = (proc.stdout + proc.stderr).splitlines()
    assert any("images scored" in line for line in lines), lines
    # informational lines ("I tensorflow/..."), not warnings or errors, which must still show
    assert not [line for line in lines if ": I tensorflow/" in line or "rebuild TensorFlow" in line], lines
