"""Folds group by case by default (every image of a patient on one side), and too many folds for the groups is a
one-line configuration error, in the library and on the command line."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from cli_helpers import cli_env
from microcal_hpc.config import load_config
from microcal_hpc.dataset import Split
from microcal_hpc.errors import ConfigError
from microcal_hpc.splits import split_folds, split_groups


def _split(n_cases: int, per_case: int = 6) -> Split:
    """Cases of ``per_case`` images from 3 source images (groups) each; labels alternate per case."""
    n = n_cases * per_case
    cases = np.repeat([f"{c + 1:04d}" for c in range(n_cases)], per_case)
    groups = np.array([f"{c}x1_{i // 2}_0" for c, i in zip(cases, np.tile(np.arange(per_case), n_cases))])
    labels = np.repeat(np.arange(n_cases) % 2, per_case)
    return Split("train", np.zeros((0, 2, 2), np.uint8), labels, np.array([f"id{i}" for i in range(n)]), groups,
                 cases, np.array([f"h{i}" for i in range(n)]))


def test_default_grouping_is_the_case_and_keeps_every_case_in_one_fold():
    cfg = load_config()
    assert cfg.train.group_by == cfg.classify.group_by == "case"
    s = _split(20)
    for tr, va in split_folds(s, "case", 5, seed=0):
        assert not set(s.cases[tr]) & set(s.cases[va])
    # by source image, a case's images can land in different folds: what 'case' prevents
    by_group = split_folds(s, "group", 5, seed=0)
    assert any(set(s.cases[tr]) & set(s.cases[va]) for tr, va in by_group)
    assert len(np.unique(split_groups(s, "case"))) == 20 and len(np.unique(split_groups(s, "group"))) == 60


@pytest.mark.parametrize("group_by, groups", [("case", 3), ("group", 9)])
def test_more_folds_than_groups_is_a_one_line_config_error(group_by, groups):
    with pytest.raises(ConfigError) as e:
        split_folds(_split(3), group_by, 10, seed=0)
    msg = str(e.value)
    assert f"grouping '{group_by}' gives {groups} group(s)" in msg and "too few for 10 folds" in msg
    assert "\n" not in msg


@pytest.mark.timeout(180)
def test_a_job_with_too_many_folds_ends_with_one_line_and_exit_2(packed_synthetic, tmp_path):
    r = subprocess.run([sys.executable, "-m", "jobs", "baseline", "--data", str(packed_synthetic), "--run-dir",
                        str(tmp_path / "b"), "--folds", "500"], capture_output=True, text=True, env=cli_env(),
                       timeout=170)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("microcal-hpc baseline: error: grouping 'case' gives") and "too few for 500 folds" in last
    assert "Traceback" not in r.stderr
    assert not list((tmp_path / "b").glob("*/metrics.json"))
