"""Pack and wavelet features at 10k, 100k and 1M synthetic patches: wall time, images/s, peak memory.

    python bench/bench_scale.py [--sizes 10000,100000,1000000] [--stages pack,features] [--ranks 2]
        [--workdir DIR] [--keep-trees] [--out bench/results/scale.json]

For each N, a synthetic image tree of N 60x60 PGM files (:func:`microcal_hpc.synthetic.make_image_tree`,
one call per class folder: Train 80 %, Test 20 %, classes balanced) is written under ``--workdir`` (default
``$TMPDIR/microcal-bench-scale``; reused when complete; writing it is not timed). Then, each in fresh
processes:

1. pack: ``data_prep.pack.pack_tree`` in a child process that reports its wall time, CPU time and RSS
   high-water mark (``ru_maxrss``, imports included) - ``bench/bench_pack.py``'s measurement;
2. wavelet features: ``mpiexec -n RANKS python -m jobs wavelet-features`` on the packed file with the
   default settings, each rank bound to one core; wall time of the command, the job's own time and
   every rank's peak RSS and CPU time as the job reports them (``--summary-json``).

``--stages pack`` runs the pack stage only (the features stage needs the packed file, so it cannot run alone).

Bounded memory means peak RSS independent of N: the bench prints each stage's peak RSS at every N and
the growth from the smallest to the largest N in bytes per image. Linear time means images/s
independent of N; images per CPU-second shows it on shared cores, where wall times depend on the load.
Free disk is checked before each N (the tree, the packed file and the features file; 1M patches need
about 18 GB), and every packed and features file is deleted after its N; trees of more than 100,000
images are deleted too unless ``--keep-trees``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_pack import pack_once  # noqa: E402  (same folder: the child-process pack measurement)
from bench_wavelet import _mpi_env  # noqa: E402

TREE_BYTES_PER_IMAGE = 4096 + 300  # one file system block per 3.6 KB PGM, plus its directory entry
PACKED_BYTES_PER_IMAGE = 3600 + 400  # pixels plus ids, groups, cases and hashes
FEATURE_BYTES_PER_IMAGE = 2500 * 4  # default features: 2,430 detail coefficients + statistics, float32


def workdir_default() -> Path:
    return Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / "microcal-bench-scale"


def _write_folder(root: Path, split: str, label: int, n: int, seed: int) -> None:
    from microcal_hpc.synthetic import make_image_tree

    make_image_tree(root, counts={split: (n, 0) if label == 0 else (0, n)}, shape=(60, 60), fmt="pgm", seed=seed)


def synthetic_tree(n: int, work: Path) -> tuple[Path, float]:
    """A complete synthetic tree of ``n`` images under ``work`` (reused when complete) and the seconds
    spent writing it (0 when reused). The four class folders are written by parallel processes, each
    with its own seed."""
    from concurrent.futures import ProcessPoolExecutor

    root = work / f"tree-{n}"
    done = root / ".complete"
    if done.exists():
        return root, 0.0
    if root.exists():
        shutil.rmtree(root)
    train, test = int(n * 0.4), (n - 2 * int(n * 0.4)) // 2
    counts = {"Train": (train, train), "Test": (test, n - 2 * train - test)}
    print(f"writing {n} synthetic images into {root} (not timed) ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    folders = [(split, label, k) for split, ks in counts.items() for label, k in enumerate(ks)]
    with ProcessPoolExecutor(max_workers=len(os.sched_getaffinity(0))) as pool:
        for f in [pool.submit(_write_folder, root, split, label, k, seed)
                  for seed, (split, label, k) in enumerate(folders, 1)]:
            f.result()
    done.write_text(json.dumps(counts))
    return root, time.perf_counter() - t0


def features_once(packed: Path, out: Path, ranks: int) -> dict:
    """One ``mpiexec -n ranks ... wavelet-features`` run with the default settings."""
    summary = out.with_suffix(".json")
    cmd = [shutil.which("mpiexec") or "mpiexec", "-n", str(ranks), "--oversubscribe", "--bind-to", "core",
           sys.executable, "-m", "jobs", "wavelet-features", "--data", str(packed), "--out", str(out), "--force",
           "--summary-json", str(summary)]
    env = dict(_mpi_env(), PYTHONPATH=str(REPO))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    s = json.loads(summary.read_text())
    summary.unlink(missing_ok=True)
    return {"wall_s": round(wall, 2), "job_s": s.get("seconds"), "peak_rss_mb_per_rank": s.get("peak_rss_mb_per_rank"),
            "cpu_s": round(sum(s.get("cpu_seconds_per_rank") or [0]), 2),
            "output_gb": round(out.stat().st_size / 1e9, 2)}


def check_disk(work: Path, n: int, tree_exists: bool, features: bool = True) -> None:
    need = (n * (PACKED_BYTES_PER_IMAGE + (FEATURE_BYTES_PER_IMAGE if features else 0))
            + (0 if tree_exists else n * TREE_BYTES_PER_IMAGE))
    free = shutil.disk_usage(work).free
    if need * 1.1 > free:
        raise SystemExit(f"{work}: {free / 1e9:.1f} GB free, {n} images need about {need / 1e9:.1f} GB")


def features_row(n: int, f: dict) -> dict:
    """The features stage's fields of a result row."""
    return {"features_wall_s": f["wall_s"], "features_job_s": f["job_s"],
            "features_cpu_s": f["cpu_s"], "features_images_per_s": round(n / f["wall_s"]),
            "features_images_per_cpu_s": round(n / f["cpu_s"]) if f["cpu_s"] else None,
            "features_peak_rss_mb": max(f["peak_rss_mb_per_rank"] or [0]),
            "features_peak_rss_mb_per_rank": f["peak_rss_mb_per_rank"], "features_output_gb": f["output_gb"]}


def growth_per_image(rows: list[dict], key: str) -> float | None:
    """Bytes of peak RSS per image added from the smallest to the largest N."""
    if len(rows) < 2 or key not in rows[0]:
        return None
    a, b = rows[0], rows[-1]
    return round((b[key] - a[key]) * 1e6 / (b["n"] - a["n"]), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--stages", default="pack,features", choices=["pack,features", "pack"],
                    help="pack only, or pack then wavelet features")
    ap.add_argument("--ranks", type=int, default=2, help="MPI ranks of the features job (the campaign uses 2)")
    ap.add_argument("--workdir", default=str(workdir_default()))
    ap.add_argument("--keep-trees", action="store_true", help="keep trees of more than 100,000 images")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "scale.json"))
    args = ap.parse_args(argv)

    from microcal_hpc.atomic import write_json

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%S")
    rows = []
    for n in sorted(int(s) for s in args.sizes.split(",")):
        check_disk(work, n, (work / f"tree-{n}" / ".complete").exists(), "features" in args.stages)
        root, gen_s = synthetic_tree(n, work)
        packed, features = work / f"packed-{n}.h5", work / f"features-{n}.h5"
        try:
            p = pack_once(root, packed, force=True)
            f = features_once(packed, features, args.ranks) if "features" in args.stages else None
        finally:
            for path in (packed, packed.with_name(packed.name + ".sha256"), features, features.with_suffix(".log")):
                path.unlink(missing_ok=True)
            if n > 100_000 and not args.keep_trees:
                shutil.rmtree(root, ignore_errors=True)
        row = {"n": n, "tree_write_s": round(gen_s, 1),
               "pack_wall_s": round(p["wall_s"], 2), "pack_cpu_s": round(p["cpu_s"], 2),
               "pack_images_per_s": round(n / p["wall_s"]), "pack_images_per_cpu_s": round(n / p["cpu_s"]),
               "pack_peak_rss_mb": round(p["peak_rss_mb"], 1),
               "pack_rss_after_imports_mb": round(p["rss_after_imports_mb"], 1)}
        if f:
            row.update(features_row(n, f))
        row["load_average"] = [round(x, 2) for x in os.getloadavg()]
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    result = {"benchmark": "pack and wavelet features at scale (synthetic 60x60 PGM trees)", "started": started,
              "host": platform.node(), "cpus": len(os.sched_getaffinity(0)), "ranks": args.ranks,
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()], "rows": rows,
              "peak_rss_growth_bytes_per_image": {"pack": growth_per_image(rows, "pack_peak_rss_mb"),
                                                  "features": growth_per_image(rows, "features_peak_rss_mb")}}
    write_json(args.out, result)
    print(f"{'N':>9} | {'stage':<8} | {'wall s':>8} | {'images/s':>9} | {'images/CPU-s':>12} | {'peak RSS MB':>11}")
    for r in rows:
        print(f"{r['n']:>9} | {'pack':<8} | {r['pack_wall_s']:>8.2f} | {r['pack_images_per_s']:>9} | "
              f"{r['pack_images_per_cpu_s']:>12} | {r['pack_peak_rss_mb']:>11.1f}")
        if "features_wall_s" not in r:
            continue
        print(f"{r['n']:>9} | {'features':<8} | {r['features_wall_s']:>8.2f} | {r['features_images_per_s']:>9} | "
              f"{r['features_images_per_cpu_s']:>12} | {r['features_peak_rss_mb']:>11.1f}  "
              f"(per rank {r['features_peak_rss_mb_per_rank']})")
    print(f"peak RSS growth, smallest to largest N, bytes per image: {result['peak_rss_growth_bytes_per_image']}")
    print(f"load average before {result['load_average_before']}, after {result['load_average_after']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
