"""Run a script with the CNN's training batches recorded: which Train positions each rank trained on.

    python tests/log_shards.py OUT_PREFIX SCRIPT.py ARGS...     (e.g. SCRIPT = tests/write_audit.py)

``microcal_hpc.cnn.pipeline.training_batches`` is wrapped: the positions of every batch it hands to
training are kept per epoch (1-based) and written at exit to ``OUT_PREFIX-rank<R>.json``
(``{"1": [...], "2": [...]}``, R from the launcher's rank variable). SCRIPT then runs as ``__main__``
with ARGS. Used by tests/test_horovod.py to check that Horovod ranks train on disjoint shards.
"""
from __future__ import annotations

import atexit
import json
import runpy
import sys

from write_audit import _rank


def main() -> None:
    prefix, script, *args = sys.argv[1:]
    seen: dict[int, list[int]] = {}

    from microcal_hpc.cnn import pipeline

    original = pipeline.training_batches

    def recorded(source, labels, **kw):
        for key, positions, x, y in original(source, labels, **kw):
            seen.setdefault((int(key[1]) >> 32) + 1, []).extend(positions.tolist())  # pipeline.batch_key: epoch << 32
            yield key, positions, x, y

    def report() -> None:
        with open(f"{prefix}-rank{_rank()}.json", "w", encoding="utf-8") as fh:
            json.dump(seen, fh)

    pipeline.training_batches = recorded
    atexit.register(report)
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
