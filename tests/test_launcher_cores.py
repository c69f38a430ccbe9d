"""Packing local jobs into the machine's cores (and GPUs): what each job gets, the limits, the flags."""
from __future__ import annotations

import pytest

from jobs import cli
from microcal_hpc.config import ConfigError, ResourceConfig, load_config
from microcal_hpc.launcher import cores, local


def res(cpus: int = 1, tasks: int = 1, nodes: int = 1, gpus: int = 0) -> ResourceConfig:
    return ResourceConfig(cpus_per_task=cpus, tasks_per_node=tasks, nodes=nodes, gpus_per_node=gpus)


def test_jobs_take_disjoint_cores_until_the_machine_is_full():
    alloc = cores.Allocator(cpus=[0, 1, 2, 3], gpus=[])
    a, b = alloc.take(res(1)), alloc.take(res(2))
    assert a.cpus == (0,) and b.cpus == (1, 2)
    assert alloc.take(res(2)) is None  # one core left
    c = alloc.take(res(1))
    assert c.cpus == (3,) and alloc.take(res(1)) is None
    alloc.give_back(b)
    assert alloc.take(res(2)).cpus == (1, 2)
    assert not alloc.idle


def test_a_job_uses_cpus_times_tasks_times_nodes_capped_at_the_machine():
    alloc = cores.Allocator(cpus=[4, 5], gpus=[])
    assert alloc.need(res(cpus=1, tasks=2)) == (2, 0)  # the MPI job: 2 tasks of 1 core
    assert alloc.need(res(cpus=2, tasks=2, nodes=2)) == (2, 0)  # 8 asked, 2 here
    assert alloc.take(res(cpus=8)).cpus == (4, 5)
    assert alloc.idle is False


def test_gpus_are_shared_out_like_cores_and_cpu_jobs_get_none():
    alloc = cores.Allocator(cpus=[0, 1, 2, 3], gpus=["0", "1"])
    a, b = alloc.take(res(1, gpus=1)), alloc.take(res(1))
    assert a.gpus == ("0",) and b.gpus == ()
    assert alloc.take(res(1, gpus=2)) is None
    c = alloc.take(res(1, gpus=1))
    assert c.gpus == ("1",)
    alloc.give_back(a)
    assert alloc.take(res(1, gpus=4)) is None  # capped at the machine's 2, only one free
    alloc.give_back(c)
    assert alloc.take(res(1, gpus=4)).gpus == ("0", "1")
    assert "GPU 0" in a.describe() and b.describe() == "core 1"


def test_machine_gpus_follow_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert cores.machine_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert cores.machine_gpus() == []


@pytest.mark.parametrize("cpus, rank, size, share", [
    ([0, 1], 0, 2, [0]), ([0, 1], 1, 2, [1]), ([0, 1, 2], 0, 2, [0]), ([0, 1, 2], 1, 2, [1, 2]),
    ([6, 7, 8, 9], 1, 2, [8, 9]), ([3], 1, 2, [3]), ([0, 1], 0, 1, [0, 1]),
])
def test_ranks_split_the_cores_of_their_job(cpus, rank, size, share):
    assert cores.rank_share(cpus, rank, size) == share


def test_cpu_list_text():
    assert cores.cpu_list_text([5, 0, 1, 2]) == "0-2,5"
    assert cores.cpu_list_text([3]) == "3"


def test_serial_and_max_parallel_set_the_job_limit(tmp_path):
    assert local.job_limit(load_config()) == 0  # as many as the cores allow
    assert local.job_limit(load_config(overrides=["campaign.max_parallel=3"])) == 3
    serial = load_config(overrides=["campaign.serial=true"])
    assert local.job_limit(serial) == 1
    assert "one job at a time" in local.concurrency_text(serial, [0, 1])
    assert local.concurrency_text(load_config(), [0, 1]) == "as many jobs at once as 2 cores (0-1) allow"
    with pytest.raises(ConfigError, match="campaign.serial"):
        load_config(overrides=["campaign.serial=true", "campaign.max_parallel=2"])


@pytest.mark.parametrize("extra, yaml_text, expected", [
    (["--serial"], "", "one job at a time"),
    ([], "", "as many jobs at once as"),
    ([], "campaign: {serial: true}\n", "one job at a time"),  # no flag: the config file's setting stays
])
def test_submit_serial_flag(tmp_path, capsys, extra, yaml_text, expected):
    packed = tmp_path / "packed.h5"
    packed.touch()  # planning needs only its existence
    config = tmp_path / "c.yaml"
    config.write_text(yaml_text)
    args = ["submit", "--executor", "local", "--dry-run", "--config", str(config), "--run-dir", str(tmp_path / "run"),
            "--set", f"data.packed={packed}", *extra]
    assert cli.main(args) == 0
    assert f"local executor: {expected}" in capsys.readouterr().out
