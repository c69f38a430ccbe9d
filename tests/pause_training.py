"""Run ``microcal-hpc train`` and freeze its input pipeline in the middle of an epoch, for a test to kill it.

    python tests/pause_training.py EPOCH STEP MARKER -- train --data ... --run-dir RUN --name NAME ...

``microcal_hpc.cnn.pipeline.training_batches`` is wrapped: before it hands out batch ``STEP`` of epoch
``EPOCH`` (both 0-based) it waits until the job's checkpoint of the epochs before (``state.json`` with
``epoch >= EPOCH``) is on disk, writes MARKER, and then never returns. Training consumes the batches
already prefetched and stops inside epoch ``EPOCH``; the test then sends SIGKILL. Used by
tests/test_cnn_train.py to check that a resumed job ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main() -> int:
    epoch, step, marker, sep, *cli_args = sys.argv[1:]
    if sep != "--":
        raise SystemExit("usage: pause_training.py EPOCH STEP MARKER -- ARGS...")
    pause_at = (int(epoch), int(step))
    state = Path(cli_args[cli_args.index("--run-dir") + 1]) / cli_args[cli_args.index("--name") + 1] / "checkpoints" \
        / "state.json"

    from microcal_hpc.cnn import pipeline

    original = pipeline.training_batches

    def paused(source, labels, **kw):
        for key, positions, x, y in original(source, labels, **kw):
            if (int(key[1]) >> 32, int(key[1]) & 0xFFFFFFFF) == pause_at:  # pipeline.batch_key: epoch << 32 + step
                while not state.is_file() or json.loads(state.read_text())["epoch"] < pause_at[0]:
                    time.sleep(0.02)
                Path(marker).write_text(json.loads(state.read_text())["checkpoint"])
                while True:
                    time.sleep(60)
            yield key, positions, x, y

    pipeline.training_batches = paused
    from jobs.cli import main as cli_main

    return cli_main(cli_args)


if __name__ == "__main__":
    sys.exit(main())
