"""Checks of a campaign against its data, before anything is submitted (``submit`` and ``--dry-run``).

Settings that can be checked from the config alone are checked by :mod:`microcal_hpc.config`; this
module holds the one check that needs the data: every cross-validated job splits the Train images into
``train.folds`` folds (the same folds for every arm, ``plan.align_folds``) of whole groups under
``train.group_by``, so there must be at least as many groups as folds. The groups come from the packed
file when it exists (exactly as the jobs will form them: ``microcal_hpc.splits.split_groups``, which also
merges pixel-identical images), else from the image tree's file names (``data_prep.naming``; without
reading pixels, so duplicates are not merged yet: the count there is an upper bound), else the check is
left to the jobs (a dry run without the data).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from microcal_hpc.errors import ConfigError, MicrocalError
from microcal_hpc.launcher.plan import Plan, packed_path


def _groups_in_packed(packed: Path, group_by: str) -> int:
    import numpy as np

    from microcal_hpc.dataset import load_split
    from microcal_hpc.splits import split_groups

    return len(np.unique(split_groups(load_split(packed, "train", images=False), group_by)))


def _groups_in_tree(root: Path, cfg) -> int:
    from data_prep.naming import namer_from_config
    from data_prep.pack import scan_tree

    files = scan_tree(root).files["train"]
    if cfg.train.group_by == "none":
        return len(files)
    namer = namer_from_config(cfg.data)
    groups = {namer(name) for name, _label in files}
    return len({g if cfg.train.group_by == "group" else c for g, c in groups})


def train_groups(plan: Plan) -> Optional[tuple[int, str]]:
    """(number of Train groups under ``train.group_by``, where they were counted), or None when neither
    the packed file nor the image tree is there."""
    cfg = plan.config
    packed = Path(packed_path(cfg, plan.run_dir))
    if packed.is_file() and not ("pack" in plan.keys() and _pack_may_change(plan)):
        try:
            return _groups_in_packed(packed, cfg.train.group_by), str(packed)
        except (MicrocalError, OSError, KeyError):
            pass  # unreadable: the pack job rebuilds it (or the jobs will say what is wrong with it)
    if cfg.data.root and Path(cfg.data.root).is_dir():
        return _groups_in_tree(Path(cfg.data.root), cfg), f"the file names under {cfg.data.root}"
    return None


def _pack_may_change(plan: Plan) -> bool:
    """The pack job will write another packed file (other data root or naming patterns)."""
    from microcal_hpc.launcher.stale import changes

    return bool(changes(plan.get("pack")))


def check_data(plan: Plan) -> None:
    """Raise ConfigError (one line) when the campaign asks for more folds than the Train split has groups."""
    cv_jobs = [s for s in plan if s.kind in ("wavelet-classify", "baseline") or s.config.train.fold is not None]
    if not cv_jobs:
        return
    counted = train_groups(plan)
    if counted is None:
        return
    n_groups, where = counted
    cfg = plan.config
    if cfg.train.folds > n_groups:
        raise ConfigError(f"{cfg.train.folds} folds (campaign.cv_folds / train.folds) but the Train split has "
                          f"{n_groups} group(s) under group_by={cfg.train.group_by} (counted in {where}); "
                          f"use at most {n_groups} folds or another train.group_by")
