"""Where the time of one CNN training step goes: precision, op determinism and batch size.

Each variant runs in a fresh process: a ``tf.function`` training step of the reference model (Adam,
binary cross-entropy) on one random batch, repeated; the rate is images/s over ``--steps`` steps after
10 warm-up steps, and the CPU time / wall time ratio shows how busy the cores are. A batch of 1
measures the fixed cost of a step (op dispatch, optimizer, casts).

    python bench/profile_train_step.py --out bench/results/train_step.json
    python bench/profile_train_step.py --batches 1 32 --steps 100

For a per-kernel breakdown run one variant with ``ONEDNN_VERBOSE=1`` (``--one bfloat16 --steps 20``) and sum the
``exec`` lines' times by primitive.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (mixed precision, op determinism)
    "float32": ("none", False),
    "float32_deterministic": ("none", True),
    "bfloat16": ("bfloat16", False),
    "bfloat16_deterministic": ("bfloat16", True),
}


def run_variant(name: str, batch: int, steps: int) -> dict:
    """images/s and CPU/wall of ``steps`` training steps of one variant, in this process."""
    import tensorflow as tf

    from microcal_hpc.cnn.model import build_model
    from microcal_hpc.config import TrainConfig

    precision, deterministic = VARIANTS[name]
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if precision == "bfloat16":
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    tf.keras.utils.set_random_seed(0)
    model = build_model((60, 60, 1), TrainConfig(mixed_precision=precision))
    optimizer = tf.keras.optimizers.Adam(1e-3)
    loss_fn = tf.keras.losses.BinaryCrossentropy()
    x = tf.random.uniform((batch, 60, 60, 1))
    y = tf.cast(tf.random.uniform((batch, 1)) > 0.5, tf.float32)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, tf.cast(model(x, training=True), tf.float32))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    for _ in range(10):
        step(x, y)
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step(x, y)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return {"variant": name, "batch": batch, "steps": steps, "images_per_second": round(steps * batch / wall, 1),
            "ms_per_step": round(1000 * wall / steps, 2), "cpu_per_wall": round(cpu / wall, 2)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 32])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "train_step.json"))
    p.add_argument("--one", help="run one variant in this process and print its result")
    p.add_argument("--batch", type=int, default=32, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        print("RESULT " + json.dumps(run_variant(args.one, args.batch, args.steps)), flush=True)
        return 0

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    rows, load_before = [], os.getloadavg()
    for batch in args.batches:
        for name in args.variants:
            steps = args.steps if batch > 1 else max(args.steps, 200)
            proc = subprocess.run([sys.executable, __file__, "--one", name, "--batch", str(batch), "--steps",
                                   str(steps)], env=env, capture_output=True, text=True)
            line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not line:
                print(f"{name} batch {batch}: FAILED\n{proc.stderr[-2000:]}", file=sys.stderr)
                return 1
            row = json.loads(line[0][len("RESULT "):])
            rows.append(row)
            print(f"{name:24s} batch {batch:3d}: {row['images_per_second']:8.0f} images/s, "
                  f"{row['ms_per_step']:6.2f} ms/step, CPU/wall {row['cpu_per_wall']}", flush=True)
    from microcal_hpc.atomic import write_json

    write_json(args.out, {"benchmark": "one training step", "rows": rows, "cpus": os.cpu_count(),
                          "load_avg_before": load_before, "load_avg_after": os.getloadavg()})
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
