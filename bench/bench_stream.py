"""Benchmark: the CNN job streaming its images from the packed HDF5 file against holding them in memory.

1. Scale: one training epoch of the real job (``microcal-hpc train --input stream --epochs 1``) on a
   synthetic packed file of ``--n`` 60x60 patches (default 200,000 in Train, 1,000 in Test), in a fresh
   process: its peak RSS (``ru_maxrss``; target under 1.5 GB) and training images/s. ``--scale-memory``
   also runs ``--input memory`` on that file for contrast. The file is made once (synthetic tree, then
   ``pack``; not timed) and cached in ``$TMPDIR/microcal-bench/stream-N.h5``.
2. Real data: the official job for ``--epochs`` epochs with ``--input memory`` and ``--input stream``,
   alternating, ``--repeat`` times: median over epochs 2..E of training images/s (target: streaming
   within 10 % of memory), and each run's overhead (job time outside its epochs, ``metrics.json`` timing).

    python bench/bench_stream.py                          # both parts
    python bench/bench_stream.py --skip-scale --repeat 3  # the real-data comparison only

Writes bench/results/stream.json and prints both parts.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RSS_TARGET_MB = 1536
THROUGHPUT_TOLERANCE = 0.10

# Runs in the subprocess: the training job, then this process's RSS high-water mark.
_CHILD = r"""
import json, resource, sys
from jobs.cli import main
rc = main(sys.argv[1:])
print("RESULT " + json.dumps({"rc": rc, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def cache_dir() -> Path:
    return Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / "microcal-bench"


def synthetic_packed(n: int) -> Path:
    """A cached packed file with ``n`` synthetic Train patches (balanced) and 1,000 Test patches.

    The tree is written here, one source group per patch (``microcal_hpc.synthetic.make_image_tree`` names
    its files by a four-digit case number, so beyond 40,000 patches per class its names repeat).
    """
    import numpy as np

    from data_prep.pack import pack_tree
    from microcal_hpc.config import DataConfig
    from microcal_hpc.synthetic import synthetic_patch

    out = cache_dir() / f"stream-{n}.h5"
    if out.is_file():
        return out
    tree = cache_dir() / f"stream-tree-{n}"
    shutil.rmtree(tree, ignore_errors=True)
    print(f"making a synthetic packed file of {n} Train patches -> {out} (once)", flush=True)
    rng = np.random.default_rng(0)
    for split, per_class in (("Train", (n // 2, n - n // 2)), ("Test", (500, 500))):
        for label, count in enumerate(per_class):
            folder = tree / split / str(label)
            folder.mkdir(parents=True)
            for i in range(count):
                img = synthetic_patch(rng, label)
                name = f"{i:07d}{'sm'[label]}1_0_0.pgm_1.pgm"
                (folder / name).write_bytes(b"P5\n60 60\n255\n" + img.tobytes())
    pack_tree(tree, out, DataConfig(), progress=True)
    shutil.rmtree(tree, ignore_errors=True)
    return out


def real_packed(work: Path) -> Path:
    from data_prep.pack import pack_tree
    from microcal_hpc.config import DataConfig

    root = Path(os.environ.get("MICROCAL_DATA", REPO.parent / "shared" / "data" / "Mammography_micro"))
    if not (root / "Train").is_dir():
        sys.exit(f"bench_stream: real data not found at {root}; set MICROCAL_DATA")
    pack_tree(root, work / "real.h5", DataConfig())
    return work / "real.h5"


def run_job(data: Path, work: Path, mode: str, epochs: int) -> dict:
    """One ``microcal-hpc train`` in a fresh process; its metrics, history and peak RSS."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=work))
    cmd = [sys.executable, "-c", _CHILD, "train", "--data", str(data), "--run-dir", str(run_dir), "--name", "bench",
           "--epochs", str(epochs), "--input", mode, "--set", "report.bootstrap=200"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not line:
        sys.exit(f"bench_stream: the {mode} run failed:\n{proc.stderr[-3000:]}")
    job = run_dir / "bench"
    metrics = json.loads((job / "metrics.json").read_text())
    history = json.loads((job / "history.json").read_text())
    shutil.rmtree(run_dir, ignore_errors=True)
    steady = history["images_per_second"][1:] or history["images_per_second"]
    return {"mode": mode, "wall_s": round(wall, 2), "peak_rss_mb": round(json.loads(line[0][7:])["peak_rss_mb"], 1),
            "n_train": metrics["n_train"], "input": metrics["input"], "images_per_second": history["images_per_second"],
            "steady_images_per_second": statistics.median(steady), "timing": metrics["timing"],
            "load_avg_1min": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000, help="Train patches of the synthetic file")
    p.add_argument("--epochs", type=int, default=5, help="epochs of each real-data run")
    p.add_argument("--repeat", type=int, default=3, help="real-data runs per mode (alternating)")
    p.add_argument("--skip-scale", action="store_true", help="only the real-data comparison")
    p.add_argument("--scale-memory", action="store_true", help="also one in-memory epoch on the synthetic file")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "stream.json"))
    args = p.parse_args(argv)

    out: dict = {"benchmark": "stream", "load_avg_before": os.getloadavg(), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench_stream_") as tmp:
        work = Path(tmp)
        if not args.skip_scale:
            big = synthetic_packed(args.n)
            scale = [run_job(big, work, "stream", 1)] + ([run_job(big, work, "memory", 1)] if args.scale_memory else [])
            out["scale"] = {"n_train": args.n, "file_mb": round(big.stat().st_size / 2**20), "runs": scale,
                            "rss_target_mb": RSS_TARGET_MB}
            for r in scale:
                print(f"{args.n} patches, 1 epoch, input {r['mode']}: peak RSS {r['peak_rss_mb']:.0f} MB "
                      f"(target < {RSS_TARGET_MB}), {r['images_per_second'][0]:.0f} images/s, "
                      f"wall {r['wall_s']:.0f} s, "
                      f"load {r['load_avg_1min']:.1f}", flush=True)
        real = real_packed(work)
        runs: dict[str, list[dict]] = {"memory": [], "stream": []}
        for i in range(args.repeat):
            for mode in ("memory", "stream") if i % 2 == 0 else ("stream", "memory"):
                r = run_job(real, work, mode, args.epochs)
                runs[mode].append(r)
                print(f"real data, input {mode}: {r['steady_images_per_second']:.0f} images/s, overhead "
                      f"{r['timing']['overhead']:.2f} s, load {r['load_avg_1min']:.1f}", flush=True)
    medians = {m: statistics.median(r["steady_images_per_second"] for r in rs) for m, rs in runs.items()}
    ratio = medians["stream"] / medians["memory"]
    out["real"] = {"epochs": args.epochs, "runs": runs, "median_images_per_second": medians,
                   "stream_over_memory": ratio, "within_target": abs(1 - ratio) <= THROUGHPUT_TOLERANCE}
    out["load_avg_after"] = os.getloadavg()
    from microcal_hpc.atomic import write_json

    write_json(args.out, out)
    print(f"real data: stream {medians['stream']:.0f} vs memory {medians['memory']:.0f} images/s "
          f"(ratio {ratio:.3f}; target within {THROUGHPUT_TOLERANCE:.0%}) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
