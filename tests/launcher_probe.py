"""A job function for launcher tests: each rank writes the cores it may run on (nothing else)."""
from __future__ import annotations

import json
import os


def write_affinity(cfg, out: str) -> None:
    """Write ``OUT.<rank>`` holding {"rank", "cpus"} of this process."""
    rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", os.environ.get("PMI_RANK", "0")))
    with open(f"{out}.{rank}", "w") as fh:
        json.dump({"rank": rank, "cpus": sorted(os.sched_getaffinity(0))}, fh)


def sleep(cfg, seconds: str) -> None:
    """Run for ``seconds`` (a job to be stopped)."""
    import time

    time.sleep(float(seconds))
