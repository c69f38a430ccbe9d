"""Group (source mammogram) and case (patient) of an image, from its file name.

The rules are two regular expressions of the data config: ``data.group_pattern`` is searched in the
file name (no folders) and must capture ``(?P<group>...)``; ``data.case_pattern`` is searched in the
group and must capture ``(?P<case>...)``. With the defaults::

    0033f1_4_0.pgm_2.pgm  ->  group "0033f1_4_0", case "0033"

A file name that the group pattern does not match is its own group (its stem); a group that the case
pattern does not match is its own case.
"""
from __future__ import annotations

import os
import re


class Namer:
    """Maps a file name to ``(group, case)`` with compiled patterns."""

    def __init__(self, group_pattern: str, case_pattern: str):
        self.group_rx = re.compile(group_pattern)
        self.case_rx = re.compile(case_pattern)

    def group(self, file_name: str | os.PathLike) -> str:
        """The group of a file name (folders are ignored)."""
        name = os.path.basename(os.fspath(file_name))
        m = self.group_rx.search(name)
        found = m.group("group") if m else None
        return found if found else os.path.splitext(name)[0]

    def case(self, group: str) -> str:
        """The case of a group id."""
        m = self.case_rx.search(group)
        found = m.group("case") if m else None
        return found if found else group

    def __call__(self, file_name: str | os.PathLike) -> tuple[str, str]:
        group = self.group(file_name)
        return group, self.case(group)


def namer_from_config(data_cfg) -> Namer:
    """The Namer of a :class:`microcal_hpc.config.DataConfig`."""
    return Namer(data_cfg.group_pattern, data_cfg.case_pattern)


def group_and_case(file_name: str | os.PathLike, data_cfg) -> tuple[str, str]:
    """``(group, case)`` of one file name under the patterns of ``data_cfg``."""
    return namer_from_config(data_cfg)(file_name)
