"""Benchmark of the pack step: images/s and peak memory on the real set and synthetic trees of N images.

    python bench/bench_pack.py --out bench/results/pack.json [--n 100000] [--repeat 3] [--profile]

Synthetic trees (60x60 PGM, named like the real data) are generated once into a cache folder outside
the repository ($TMPDIR or /tmp, ``microcal-bench/pack-tree-N``) and reused; generating is not timed.
Every pack runs in a fresh subprocess that reports wall time, CPU time and its RSS high-water mark
(``ru_maxrss``) before packing (after imports) and after, so memory growth with N is visible.
Times are with a warm page cache (the files were just written or read).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_IMAGES_PER_S = 5000

# Runs inside the subprocess: imports, baseline RSS, pack, peak RSS.
_CHILD = r"""
import json, resource, sys, time
from data_prep.pack import pack_tree
from microcal_hpc.config import DataConfig
import h5py, numpy, PIL.Image, tqdm  # everything the pack imports, so the baseline includes it
root, out, force, profile = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4]
base = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
if profile:
    import cProfile, pstats, io
    prof = cProfile.Profile()
    summary = prof.runcall(pack_tree, root, out, DataConfig(), force=force, progress=False)
    s = io.StringIO(); pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(14)
    open(profile, "w").write(s.getvalue())
else:
    summary = pack_tree(root, out, DataConfig(), force=force, progress=False)
wall = time.perf_counter() - t0
end = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"status": summary["status"], "wall_s": wall,
                  "cpu_s": (end.ru_utime - base.ru_utime) + (end.ru_stime - base.ru_stime),
                  "rss_after_imports_mb": base.ru_maxrss / 1024, "peak_rss_mb": end.ru_maxrss / 1024}))
"""


def cache_dir() -> Path:
    return Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / "microcal-bench"


def synthetic_tree(n: int) -> Path:
    """A cached synthetic tree of about ``n`` 60x60 PGM images (Train 80 %, Test 20 %, classes balanced)."""
    from microcal_hpc.synthetic import make_image_tree

    root = cache_dir() / f"pack-tree-{n}"
    done = root / ".complete"
    if done.exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    train, test = int(n * 0.4), (n - 2 * int(n * 0.4)) // 2
    counts = {"Train": (train, train), "Test": (test, n - 2 * train - test)}
    t0 = time.perf_counter()
    print(f"generating {n} synthetic images into {root} ...", file=sys.stderr, flush=True)
    make_image_tree(root, counts=counts, shape=(60, 60), fmt="pgm", seed=1)
    done.write_text(json.dumps(counts))
    print(f"  generated in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return root


def pack_once(root: Path, out: Path, force: bool, profile: str = "") -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", _CHILD, str(root), str(out), "1" if force else "0", profile],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"pack of {root} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def bench_tree(name: str, root: Path, n_images: int, repeat: int, work: Path, profile_to: str = "") -> dict:
    out = work / f"{name}.h5"
    packs = [pack_once(root, out, force=True) for _ in range(repeat)]
    assert all(p["status"] == "packed" for p in packs)
    rerun = pack_once(root, out, force=False)
    assert rerun["status"] == "up to date", rerun
    walls = [p["wall_s"] for p in packs]
    best = min(walls)
    result = {
        "name": name, "root": str(root), "n_images": n_images, "repeat": repeat,
        "pack_wall_s": [round(w, 3) for w in walls], "pack_wall_s_median": round(statistics.median(walls), 3),
        "pack_cpu_s": [round(p["cpu_s"], 3) for p in packs],
        "images_per_s_best": round(n_images / best, 1),
        "images_per_s_median": round(n_images / statistics.median(walls), 1),
        "images_per_cpu_s_median": round(n_images / statistics.median(p["cpu_s"] for p in packs), 1),
        "rss_after_imports_mb": round(max(p["rss_after_imports_mb"] for p in packs), 1),
        "peak_rss_mb": round(max(p["peak_rss_mb"] for p in packs), 1),
        "up_to_date_check_s": round(rerun["wall_s"], 3),
        "up_to_date_peak_rss_mb": round(rerun["peak_rss_mb"], 1),
        "output_mb": round(out.stat().st_size / 1e6, 1),
    }
    if profile_to:
        pack_once(root, out, force=True, profile=profile_to)
        result["profile"] = profile_to
    print(json.dumps(result), file=sys.stderr, flush=True)
    out.unlink()
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="JSON results file, e.g. bench/results/pack.json")
    ap.add_argument("--n", type=int, default=100_000, help="largest synthetic tree (a tree of N/10 is also run)")
    ap.add_argument("--repeat", type=int, default=3, help="packs per tree (median and best are reported)")
    ap.add_argument("--real", default=str(REPO.parent / "shared" / "data" / "Mammography_micro"),
                    help="the real image tree (skipped if absent)")
    ap.add_argument("--profile", action="store_true", help="also write a cProfile table of the largest pack")
    args = ap.parse_args(argv)

    from microcal_hpc.atomic import write_json

    sizes = sorted({max(1000, args.n // 10), args.n})
    work = Path(tempfile.mkdtemp(prefix="pack-out-", dir=cache_dir() if cache_dir().exists() else None))
    results = []
    try:
        real = Path(args.real)
        if (real / "Train").is_dir():
            n_real = sum(1 for p in real.rglob("*") if p.is_file())
            results.append(bench_tree("real", real, n_real, args.repeat, work))
        for n in sizes:
            root = synthetic_tree(n)
            profile = str(Path(args.out).with_suffix(f".profile-{n}.txt")) if args.profile and n == max(sizes) else ""
            if profile:
                Path(profile).parent.mkdir(parents=True, exist_ok=True)
            results.append(bench_tree(f"synthetic-{n}", root, n, args.repeat, work, profile))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    synthetic = [r for r in results if r["name"].startswith("synthetic")]
    report = {
        "benchmark": "pack",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {"cpus": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "notes": "one process per pack (single-threaded); warm page cache; peak_rss_mb = ru_maxrss of the pack "
                 "process including imports (rss_after_imports_mb)",
        "target_images_per_s": TARGET_IMAGES_PER_S,
        "meets_target": all(r["images_per_s_median"] >= TARGET_IMAGES_PER_S for r in synthetic),
        "results": results,
    }
    write_json(args.out, report)
    print(f"wrote {args.out}", file=sys.stderr)
    for r in results:
        print(f"{r['name']:>18}: {r['n_images']:>7} images, {r['pack_wall_s_median']:7.2f} s median "
              f"({r['images_per_s_median']:.0f} images/s, {r['images_per_cpu_s_median']:.0f}/cpu-s), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB (after imports {r['rss_after_imports_mb']:.0f} MB), "
              f"up-to-date check {r['up_to_date_check_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
