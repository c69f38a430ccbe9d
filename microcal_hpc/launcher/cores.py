"""Which cores (and GPUs) a local job gets: jobs declare what they use, the machine is shared out.

A job uses ``cpus_per_task x tasks_per_node x nodes`` cores of its resources (``spec.resources``:
``campaign.resources`` of its type, or ``campaign.job_resources``) and ``gpus_per_node x nodes`` GPUs,
capped at what this machine has: the cores of the launcher's affinity mask (``os.sched_getaffinity``)
and the GPUs it sees (``CUDA_VISIBLE_DEVICES``, else ``/dev/nvidia<N>``).
The local executor gives every running job its own cores (:class:`Allotment`) and pins the job's
process to them, so that TensorFlow, OpenBLAS, joblib and MPI size their thread pools to exactly those
cores. A multi-task (MPI) job's ranks split the job's cores between them (:func:`rank_share`).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from microcal_hpc.config import ResourceConfig


def machine_cpus() -> list[int]:
    """The cores this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def machine_gpus() -> list[str]:
    """GPU ids visible here: ``CUDA_VISIBLE_DEVICES`` when set, else one per ``/dev/nvidia<N>`` device."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    return sorted((p.name[len("nvidia"):] for p in Path("/dev").glob("nvidia*") if re.fullmatch(r"nvidia\d+", p.name)),
                  key=int)


def cpus_wanted(res: ResourceConfig) -> int:
    """Cores a job of these resources uses: cpus per task x tasks per node x nodes."""
    return res.cpus_per_task * res.tasks_per_node * res.nodes


def gpus_wanted(res: ResourceConfig) -> int:
    return res.gpus_per_node * res.nodes


def cpu_list_text(cpus: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2,5``."""
    runs: list[list[int]] = []
    for c in sorted(cpus):
        if runs and runs[-1][1] == c - 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


@dataclass(frozen=True)
class Allotment:
    """The cores and GPUs one running job owns."""

    cpus: tuple[int, ...]
    gpus: tuple[str, ...] = ()

    def describe(self) -> str:
        word = "core" if len(self.cpus) == 1 else "cores"
        text = f"{word} {cpu_list_text(list(self.cpus))}"
        return text + (f", GPU {','.join(self.gpus)}" if self.gpus else "")


class Allocator:
    """The free cores and GPUs of the machine; jobs take and give back whole allotments."""

    def __init__(self, cpus: Optional[list[int]] = None, gpus: Optional[list[str]] = None) -> None:
        self.cpus = list(machine_cpus() if cpus is None else cpus)
        self.gpus = list(machine_gpus() if gpus is None else gpus)
        self._free_cpus = list(self.cpus)
        self._free_gpus = list(self.gpus)

    def need(self, res: ResourceConfig) -> tuple[int, int]:
        """(cores, GPUs) a job of these resources gets here: what it asks for, at most the machine's."""
        return min(cpus_wanted(res), len(self.cpus)), min(gpus_wanted(res), len(self.gpus))

    def take(self, res: ResourceConfig) -> Optional[Allotment]:
        """The lowest free cores (and GPUs) a job of these resources needs, or None when they are not free."""
        n_cpus, n_gpus = self.need(res)
        if n_cpus > len(self._free_cpus) or n_gpus > len(self._free_gpus):
            return None
        cpus, self._free_cpus = self._free_cpus[:n_cpus], self._free_cpus[n_cpus:]
        gpus, self._free_gpus = self._free_gpus[:n_gpus], self._free_gpus[n_gpus:]
        return Allotment(tuple(cpus), tuple(gpus))

    def give_back(self, allotment: Allotment) -> None:
        self._free_cpus = sorted(set(self._free_cpus) | set(allotment.cpus))
        self._free_gpus = [g for g in self.gpus if g in set(self._free_gpus) | set(allotment.gpus)]

    @property
    def idle(self) -> bool:
        return len(self._free_cpus) == len(self.cpus)


def rank_share(cpus: list[int], local_rank: int, local_size: int) -> list[int]:
    """The cores of rank ``local_rank`` of ``local_size`` ranks sharing ``cpus``: contiguous slices as
    equal as possible (one shared core each when there are fewer cores than ranks)."""
    cpus = sorted(cpus)
    if local_size <= 1 or not cpus:
        return cpus
    if len(cpus) < local_size:
        return [cpus[local_rank % len(cpus)]]
    n = len(cpus)
    return cpus[local_rank * n // local_size:(local_rank + 1) * n // local_size]
