"""The hand-written slurm/*.sbatch scripts ask SLURM for the resources the configuration declares.

The campaign's jobs get their resources from ``campaign.resources`` (microcal_hpc/config.py), on both
submission paths. The scripts for one job by hand carry literal ``#SBATCH`` lines (sbatch reads no
config); these tests keep those lines equal to the default declaration of each script's job type, so
that the declaration stays the one place the numbers come from. (The real-SLURM run of the scripts is
in tests/test_slurm_cluster.py.)
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from microcal_hpc.config import Config

SLURM_DIR = Path(__file__).resolve().parents[1] / "slurm"
# script -> the campaign.resources entry of the job it runs
ONE_JOB_TYPE = {"pack": "pack", "cnn_official": "train", "cnn_folds": "train", "cnn_augment": "train",
                "baseline": "wavelet_classify", "aggregate": "aggregate"}


def requested(script: str) -> dict[str, str]:
    """{option: value} of the script's ``#SBATCH --option=value`` lines."""
    text = (SLURM_DIR / f"{script}.sbatch").read_text()
    return dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, flags=re.M))


def minutes(time_limit: str) -> int:
    hours, mins, secs = (int(x) for x in time_limit.split(":"))
    return hours * 60 + mins + (secs > 0)


def as_declared(options: dict[str, str]) -> dict[str, float]:
    """The script's request in the units of ResourceConfig."""
    tasks = int(options.get("ntasks", options.get("ntasks-per-node", "1")))
    return {"nodes": int(options["nodes"]), "tasks": tasks, "cpus_per_task": int(options["cpus-per-task"]),
            "mem_gb": float(options["mem"].rstrip("G")), "time_min": minutes(options["time"]),
            "gpus_per_node": int(options.get("gres", "gpu:0").split(":")[-1])}


def declaration(kind: str) -> dict[str, float]:
    r = Config().campaign.resources[kind]
    return {"nodes": r.nodes, "tasks": r.tasks, "cpus_per_task": r.cpus_per_task, "mem_gb": float(r.mem_gb),
            "time_min": r.time_min, "gpus_per_node": r.gpus_per_node}


def test_every_script_is_checked():
    scripts = {p.stem for p in SLURM_DIR.glob("*.sbatch")}
    assert scripts == set(ONE_JOB_TYPE) | {"wavelet_mpi", "train_horovod"}


@pytest.mark.parametrize("script", sorted(ONE_JOB_TYPE))
def test_one_job_script_requests_the_declared_resources(script):
    assert as_declared(requested(script)) == declaration(ONE_JOB_TYPE[script])


def test_wavelet_script_requests_features_then_classifiers():
    """Features (MPI tasks) then the classifiers (every CPU of the allocation) in one job: the tasks and
    CPUs of wavelet_features, at least the CPUs of wavelet_classify, the larger memory, the summed time."""
    features, classify = declaration("wavelet_features"), declaration("wavelet_classify")
    got = as_declared(requested("wavelet_mpi"))
    assert (got["nodes"], got["tasks"], got["cpus_per_task"]) == \
        (features["nodes"], features["tasks"], features["cpus_per_task"])
    assert got["tasks"] * got["cpus_per_task"] >= classify["tasks"] * classify["cpus_per_task"]
    assert got["mem_gb"] == max(features["mem_gb"], classify["mem_gb"])
    assert got["time_min"] == features["time_min"] + classify["time_min"]


def test_fold_array_matches_the_declared_number_of_folds():
    assert requested("cnn_folds")["array"] == f"0-{Config().campaign.cv_folds - 1}"


def test_horovod_example_runs_one_rank_per_gpu():
    options = requested("train_horovod")
    assert int(options["ntasks-per-node"]) == int(options["gres"].split(":")[-1])
