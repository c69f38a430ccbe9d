"""Stale results, status against outputs, and checks before submission.

A real tiny campaign (debug executor, synthetic tree: pack, the official CNN for 1 epoch, wavelet
features, one classifier, the report) is planned again with other settings: `train.epochs`,
`wavelet.level` and `classify.classifiers` each make the jobs computed with the old value stale (shown
with the differing keys by `submit --dry-run` and `status`), and `submit` runs them again, keeping the
old outputs under RUN/superseded/<date-time>/.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import cli
from microcal_hpc.config import load_config, save_config
from microcal_hpc.launcher import records, stale, status
from microcal_hpc.launcher.plan import build_plan
from microcal_hpc.synthetic import make_image_tree

TINY = ["train.epochs=1", "campaign.cv_folds=0", "campaign.augment_presets=[]", "campaign.baseline=false",
        "classify.classifiers=[lr]", "classify.feature_sets=[coeffs]", "classify.folds=2", "train.folds=2",
        "report.bootstrap=50", "report.gallery_size=2"]


def _args(tree: Path, run: Path, *extra: str) -> list[str]:
    out = ["--run-dir", str(run), "--set", f"data.root={tree}"]
    for s in [*TINY, *extra]:
        out += ["--set", s]
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny campaign run to its end with the debug executor (in this process)."""
    base = tmp_path_factory.mktemp("stale")
    tree = make_image_tree(base / "tree", counts={"Train": (16, 16), "Test": (6, 6)})
    run = base / "run"
    assert cli.main(["submit", "--executor", "debug", *_args(tree, run)]) == 0
    return tree, run


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_changed_settings_make_results_stale_and_submit_reruns_them(finished_run, capsys):
    tree, run = finished_run
    capsys.readouterr()
    # the same settings: nothing to do, status all COMPLETED (exit 0)
    assert cli.main(["submit", "--executor", "debug", "--dry-run", *_args(tree, run)]) == 0
    assert "5 complete, 0 still running, 0 to run" in capsys.readouterr().out
    assert cli.main(["status", "--run-dir", str(run)]) == 0
    capsys.readouterr()

    # train.epochs: the CNN (and only it) is stale, shown with the differing key
    assert cli.main(["submit", "--executor", "debug", "--dry-run", *_args(tree, run, "train.epochs=2")]) == 0
    out = capsys.readouterr().out
    assert "4 complete, 1 stale, 0 still running, 2 to run" in out
    assert "stale: cnn/official: train.epochs 1 -> 2" in out
    rows = {line.split()[0]: line.split()[-1] for line in out.splitlines() if line.startswith(("cnn/", "wavelet/"))}
    assert rows == {"cnn/official": "re-run", "wavelet/features": "complete", "wavelet/classify": "complete"}
    # status compares with the run's config.yaml, or with what --config/--set say
    assert cli.main(["status", "--run-dir", str(run), "--set", "train.epochs=2"]) == 1
    table = capsys.readouterr().out
    assert any(line.split()[:3] == ["cnn", "official", "STALE"] for line in table.splitlines()), table
    assert "cnn/official: computed with other settings: train.epochs 1 -> 2" in table

    # wavelet.level: the features are stale, and the classifiers computed from them too
    assert cli.main(["submit", "--executor", "debug", "--dry-run", *_args(tree, run, "wavelet.level=5")]) == 0
    out = capsys.readouterr().out
    assert "stale: wavelet/features: wavelet.level 4 -> 5" in out
    assert "stale: wavelet/classify: wavelet-features re-runs" in out and "stale: cnn/" not in out

    # classify.classifiers: the classifier job is stale (its folders would mix models of two settings)
    assert cli.main(["submit", "--executor", "debug", "--dry-run", *_args(tree, run, "classify.classifiers=[nb]")]) == 0
    out = capsys.readouterr().out
    assert "stale: wavelet/classify: classify.classifiers [lr] -> [nb]" in out and "stale: wavelet/features" not in out
    # speed-only settings change nothing
    assert cli.main(["submit", "--executor", "debug", "--dry-run", *_args(tree, run, "classify.n_jobs=2",
                                                                          "wavelet.chunk_size=64")]) == 0
    assert "stale:" not in capsys.readouterr().out

    # submit re-runs the stale CNN; its previous outputs are kept under RUN/superseded/<date-time>/
    old_metrics = (run / "cnn" / "official" / "metrics.json").read_text()
    assert cli.main(["submit", "--executor", "debug", *_args(tree, run, "train.epochs=2")]) == 0
    out = capsys.readouterr().out
    assert "stale: cnn/official (train.epochs 1 -> 2): runs again" in out
    kept = list((run / "superseded").glob("*/cnn/official/metrics.json"))
    assert len(kept) == 1 and kept[0].read_text() == old_metrics
    assert json.loads((run / "cnn" / "official" / "history.json").read_text())["epoch"] == [1, 2]
    assert records.read_records(run)["cnn-official"]["state"] == "COMPLETED"
    assert cli.main(["submit", "--executor", "debug", "--dry-run", *_args(tree, run, "train.epochs=2")]) == 0
    assert "5 complete, 0 still running, 0 to run" in capsys.readouterr().out
    assert cli.main(["status", "--run-dir", str(run)]) == 0  # against the new config.yaml


def _planned(tmp_path, *settings):
    tree = make_image_tree(tmp_path / "tree", counts={"Train": (8, 8), "Test": (4, 4)})
    return build_plan(load_config(None, [f"data.root={tree}", *TINY, *settings]), tmp_path / "run")


def _ran(spec, config=None) -> None:
    """Outputs of a job that ran with ``config`` (its own by default), settings recorded in config.yaml."""
    for output in spec.outputs:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text("{}")
        save_config(config or spec.config, Path(output).parent / "config.yaml")


def test_stale_rules_on_recorded_config_files(tmp_path):
    plan = _planned(tmp_path, "classify.classifiers=[lr,nb]")
    official, classify = plan.get("cnn-official"), plan.get("wavelet-classify")
    _ran(official)
    _ran(classify)
    assert stale.stale_jobs(plan) == {}
    later = _planned(tmp_path, "classify.classifiers=[nb,lr]", "train.steps_per_execution=1", "classify.n_jobs=4")
    assert stale.stale_jobs(later) == {}  # order of a list, speed-only settings: not a change of results
    later = _planned(tmp_path, "classify.classifiers=[lr]", "train.learning_rate=0.01", "train.seed=3")
    assert stale.stale_jobs(later) == {
        "cnn-official": ["train.learning_rate 0.001 -> 0.01", "train.seed 0 -> 3"],
        "wavelet-classify": ["classify.classifiers [lr, nb] -> [lr]", "classify.seed 0 -> 3"]}
    # a folder of a model no longer asked for is owned by the job too: it is moved aside with the rest
    folder, moved = stale.supersede([later.get("wavelet-classify")], later.run_dir)
    moved_from = {p.relative_to(Path(later.run_dir)).as_posix() for p, _ in moved}
    assert moved_from == {"wavelet/coeffs/lr", "wavelet/coeffs/nb"}
    assert (folder / "wavelet" / "coeffs" / "nb" / "config.yaml").is_file()
    assert not (Path(later.run_dir) / "wavelet" / "coeffs" / "lr").exists()


def test_status_never_calls_incomplete_outputs_completed(tmp_path, capsys):
    plan = _planned(tmp_path)
    run = plan.run_dir
    save_config(plan.config, Path(run) / "config.yaml")
    # a record that says COMPLETED, outputs gone (e.g. deleted, or an orphan overwrote the record)
    records.new_submission(run, plan.get("cnn-official"), "local")
    records.update_record(run, "cnn-official", state="COMPLETED")
    # a job run by hand (or by the plain sbatch scripts): no record, outputs there
    _ran(plan.get("wavelet-classify"))
    rows = {r.key: r for r in status.collect(run, plan=plan)}
    assert rows["cnn-official"].state == "INCOMPLETE"
    assert rows["cnn-official"].error == f"outputs missing: {plan.get('cnn-official').outputs[0]}"
    assert (rows["wavelet-classify"].state, rows["wavelet-classify"].source) == ("COMPLETED", "outputs")
    assert rows["pack"].state == "NOT_SUBMITTED" and status.exit_code(rows.values()) == 1
    # without a plan (no config), the record's own list of outputs is checked
    assert {r.key: r.state for r in status.collect(run)}["cnn-official"] == "INCOMPLETE"
    assert cli.main(["status", "--run-dir", run]) == 1
    assert "cnn/official: outputs missing:" in capsys.readouterr().out
    running = [status.JobStatus("a", "cnn", "a", "RUNNING", "1", None, None, "slurm"),
               status.JobStatus("b", "cnn", "b", "COMPLETED", "2", None, None, "slurm")]
    assert status.exit_code(running) == 0


def test_more_folds_than_groups_fails_before_anything_runs(tmp_path, capsys, packed_synthetic):
    tree = make_image_tree(tmp_path / "tree", counts={"Train": (8, 8), "Test": (4, 4)})  # 4 groups of 4 crops
    run = tmp_path / "run"
    code = cli.main(["submit", "--executor", "local", "--dry-run", "--run-dir", str(run), "--set", f"data.root={tree}",
                     "--set", "campaign.cv_folds=5"])
    assert code == 2 and not run.exists()
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (f"microcal-hpc submit: error: 5 folds (campaign.cv_folds / train.folds) but the Train split has 4 "
                   f"group(s) under group_by=case (counted in the file names under {tree}); use at most 4 folds "
                   "or another train.group_by")
    # from the packed file when there is one: exactly the groups the jobs form (80 Train images in 20 groups)
    code = cli.main(["submit", "--executor", "local", "--dry-run", "--run-dir", str(run),
                     "--set", f"data.packed={packed_synthetic}", "--set", "campaign.cv_folds=25"])
    assert code == 2 and "has 20 group(s) under group_by=case (counted in" in capsys.readouterr().err
    assert cli.main(["submit", "--executor", "local", "--dry-run", "--run-dir", str(run),
                     "--set", f"data.packed={packed_synthetic}", "--set", "campaign.cv_folds=20"]) == 0
    # unknown classifiers and presets: config errors, before anything runs
    for bad, message in [("classify.classifiers=[rf,xgboost]", "unknown classifier(s) xgboost"),
                         ("campaign.augment_presets=[flips,rotate]", "unknown augmentation preset(s) rotate")]:
        assert cli.main(["submit", "--dry-run", "--run-dir", str(run), "--set", f"data.root={tree}", "--set", bad]) == 2
        assert message in capsys.readouterr().err
