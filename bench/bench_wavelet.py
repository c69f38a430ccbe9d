"""Benchmark of the wavelet features: per-core throughput, and MPI scaling of the wavelet-features job.

    python bench/bench_wavelet.py                       # -> bench/results/wavelet.json
    python bench/bench_wavelet.py --sizes 20000 --ranks 1,2 --repeats 1 --out /tmp/w.json

1. Throughput on one core (in this process): images/s of db5 level 4 feature extraction on 60x60
   patches, one batched call per chunk with each engine (``matrix``: matrix products; ``pywt``:
   ``pywt.wavedec2``) vs a per-image ``pywt.wavedec2`` loop; decomposition alone and the full
   coeffs+stats feature rows; float64 and float32. Each rate is given per wall
   second and per CPU second of this process: on shared cores the CPU-time rate is the per-core speed.
2. Scaling: random 8-bit patches are written to a packed-format HDF5 file in a temporary folder (not
   timed), then ``mpiexec -n N python -m jobs wavelet-features`` runs for each N and size.
   Reported: wall time of the whole command (launch + imports + job) and of the job itself, peak
   memory (ru_maxrss) and CPU time of every rank as gathered by the job, and the parallel efficiency
   ``T(1) / (N * T(N))`` (job time and wall time) and ``CPU(1) / sum of CPU(N)`` (parallel overhead in
   CPU work, insensitive to other processes). Every rank is bound to one core (``--bind-to core``), so
   N ranks use N cores. Each point is the best of ``--repeats`` runs (the minimum is the least
   disturbed by other processes on shared cores).

Targets (from the brief): >= 20,000 images/s per core for db5 level 4 on 60x60; 2-rank parallel
efficiency >= 0.85 at 100k images; peak memory per rank independent of the number of images.
Timings on shared or busy cores are upper bounds; the JSON records the load average before and after.
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
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def write_packed(path: Path, n: int, seed: int = 0, test_fraction: float = 0.2, shape=(60, 60)) -> None:
    """A packed-format file (microcal_hpc/dataset.py layout) of ``n`` random uint8 patches."""
    import h5py

    from data_prep.readers import pixel_hash
    from microcal_hpc.dataset import FORMAT_NAME, FORMAT_VERSION

    rng = np.random.default_rng(seed)
    n_test = int(round(n * test_fraction))
    counts = {"train": n - n_test, "test": n_test}
    str_dtype = h5py.string_dtype("utf-8")
    with h5py.File(path, "w") as f:
        for split, m in counts.items():
            g = f.create_group(split)
            images = g.create_dataset("images", shape=(m,) + shape, dtype=np.uint8,
                                      chunks=(min(1024, max(m, 1)),) + shape)
            hashes = []
            for a in range(0, m, 8192):
                block = rng.integers(0, 256, (min(8192, m - a),) + shape, dtype=np.uint8)
                images[a:a + len(block)] = block
                hashes += [pixel_hash(img) for img in block]
            labels = (np.arange(m) % 2).astype(np.int8)
            ids = [f"{split}/{i % 2}/{i:07d}.pgm" for i in range(m)]
            g.create_dataset("labels", data=labels)
            for name, values in (("ids", ids), ("groups", [f"g{i // 4:06d}" for i in range(m)]),
                                 ("cases", [f"{i // 40:05d}" for i in range(m)]), ("sha256", hashes),
                                 ("pixel_hash", hashes)):
                g.create_dataset(name, data=np.array(values, dtype=object), dtype=str_dtype)
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["image_shape"] = np.array(shape, dtype=np.int64)
        f.attrs["counts"] = json.dumps({s: {"total": m} for s, m in counts.items()})


def _rate(fn, n_images: int, repeats: int) -> dict:
    """Best-of-``repeats`` images/s by wall clock and by this process's CPU time (user + system).

    The CPU-time rate is what one core delivers even when other processes share the cores.
    """
    wall = cpu = float("inf")
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, time.process_time() - c0)
    return {"wall": round(n_images / wall), "cpu": round(n_images / cpu)}


def per_core_throughput(n_images: int, loop_images: int, repeats: int) -> dict:
    """images/s in this process (one core): batched calls per chunk, per engine, vs a per-image loop.

    The batched calls pass the previous chunk's coefficient arrays back as ``out``, as the job does.
    """
    import pywt

    from microcal_hpc.wavelet.transform import ENGINES, coeff_features, feature_set_values, wavedec2_batch

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n_images, 60, 60), dtype=np.uint8)
    out: dict = {"images": n_images, "loop_images": loop_images, "wavelet": "db5", "level": 4, "shape": [60, 60]}
    for dtype in ("float64", "float32"):
        res = {}
        def batched(chunk: int, engine: str, *consumers):
            def run():
                coeffs = None
                for a in range(0, n_images, chunk):
                    coeffs = wavedec2_batch(images[a:a + chunk], "db5", 4, "symmetric", dtype, engine, out=coeffs)
                    for consume in consumers:
                        consume(coeffs)
            return run

        def coeff_rows(coeffs):
            coeff_features(coeffs, (4, 3, 2))

        def stats_rows(coeffs):
            feature_set_values("stats", coeffs, (4, 3, 2))

        for engine in ENGINES:
            for chunk in (256, 512, 2048):
                for what, consumers in (("decompose", ()), ("coeffs", (coeff_rows,)),
                                        ("coeffs_and_stats", (coeff_rows, stats_rows))):
                    res[f"{engine}_chunk{chunk}_{what}"] = _rate(batched(chunk, engine, *consumers), n_images, repeats)

        def loop():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for i in range(loop_images):
                    pywt.wavedec2(images[i].astype(dtype), "db5", mode="symmetric", level=4)

        res["per_image_loop_decompose"] = _rate(loop, loop_images, repeats)
        for engine in ENGINES:
            best = max(v["cpu"] for k, v in res.items() if k.startswith(engine) and k.endswith("decompose"))
            res[f"{engine}_best_speedup_vs_loop_cpu"] = round(best / res["per_image_loop_decompose"]["cpu"], 2)
        out[dtype] = res
        print(f"[throughput] {dtype}: {res}", flush=True)
    return out


def _mpi_env() -> dict:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMPI_MCA_rmaps_base_oversubscribe="1")
    return env


def run_job(data: Path, out: Path, ranks: int, features: str, dtype: str, engine: str, chunk: int,
            own_session: bool, bind: bool = True) -> dict:
    """One timed ``mpiexec -n ranks ... wavelet-features`` run; returns wall time + the job's summary.

    ``own_session``: start every rank through ``setsid -w`` so that each rank is its own scheduling
    group. With the kernel's autogroup scheduling (on here) all processes of one session share one
    fair share of the CPU, so 2 ranks in one session get no more CPU than 1 when other sessions keep
    the cores busy; on a cluster node with dedicated cores this does not arise.
    """
    summary = out.with_suffix(".json")
    prog = (["setsid", "-w"] if own_session else []) + [sys.executable, "-m", "jobs"]
    binding = ["--bind-to", "core"] if bind else ["--bind-to", "none"]
    cmd = [shutil.which("mpiexec") or "mpiexec", "-n", str(ranks), "--oversubscribe", *binding, *prog, "wavelet-features",
           "--data", str(data), "--out", str(out), "--features", features.replace("+", ","), "--dtype", dtype, "--engine", engine,
           "--chunk-size", str(chunk), "--force", "--summary-json", str(summary)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=_mpi_env(), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    s = json.loads(summary.read_text())
    s["wall_seconds"] = round(wall, 3)
    out.unlink(missing_ok=True)
    summary.unlink(missing_ok=True)
    return s


PER_RANK_KEYS = ("compute", "read", "wait", "write", "write_wait", "cpu")


def scaling(sizes: list[int], ranks: list[int], repeats: int, feature_sets: list[str], dtype: str, engine: str,
            chunk: int, workdir: Path, own_session: bool, bind: bool = True) -> list[dict]:
    """Best-of-``repeats`` job and wall times for every (feature setting, size, rank count)."""
    rows = []
    for n in sizes:
        data = workdir / f"packed_{n}.h5"
        t0 = time.perf_counter()
        write_packed(data, n)
        print(f"[scaling] wrote {n} random patches in {time.perf_counter() - t0:.1f} s (not timed)", flush=True)
        for features in feature_sets:
            for r in ranks:
                runs = [run_job(data, workdir / f"features_{n}_{r}.h5", r, features, dtype, engine, chunk,
                                own_session, bind)
                        for _ in range(repeats)]
                best = min(runs, key=lambda s: s["seconds"])
                row = {"features": features, "images": n, "ranks": r, "job_seconds": best["seconds"],
                       "wall_seconds": best["wall_seconds"], "job_seconds_all": [s["seconds"] for s in runs],
                       "wall_seconds_all": [s["wall_seconds"] for s in runs],
                       "peak_rss_mb_per_rank": best.get("peak_rss_mb_per_rank"),
                       "images_per_second": round(n / best["seconds"], 1)}
                for key in PER_RANK_KEYS:
                    row[f"{key}_seconds_per_rank"] = best.get(f"{key}_seconds_per_rank")
                rows.append(row)
                print(f"[scaling] {features}, {n} images, {r} rank(s): job {row['job_seconds']:.2f} s, wall "
                      f"{row['wall_seconds']:.2f} s, CPU/rank {row['cpu_seconds_per_rank']} s, compute/rank "
                      f"{row['compute_seconds_per_rank']} s, write {row['write_seconds_per_rank']} s, "
                      f"peak RSS/rank {row['peak_rss_mb_per_rank']} MB", flush=True)
        data.unlink()
    for row in rows:
        key = (row["features"], row["images"], 1)
        base = next((x for x in rows if (x["features"], x["images"], x["ranks"]) == key), None)
        if base:
            row["speedup_job"] = round(base["job_seconds"] / row["job_seconds"], 3)
            row["efficiency_job"] = round(base["job_seconds"] / (row["ranks"] * row["job_seconds"]), 3)
            row["efficiency_wall"] = round(base["wall_seconds"] / (row["ranks"] * row["wall_seconds"]), 3)
            if base.get("cpu_seconds_per_rank") and row.get("cpu_seconds_per_rank"):
                # CPU work of 1 rank / CPU work of all ranks: parallel overhead, insensitive to other load
                row["efficiency_cpu"] = round(sum(base["cpu_seconds_per_rank"]) / sum(row["cpu_seconds_per_rank"]), 3)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="20000,100000", help="numbers of patches for the scaling runs")
    p.add_argument("--ranks", default="1,2", help="MPI rank counts")
    p.add_argument("--repeats", type=int, default=2, help="runs per point (the best is kept)")
    p.add_argument("--throughput-images", type=int, default=20000)
    p.add_argument("--loop-images", type=int, default=3000)
    p.add_argument("--features", default="coeffs+stats,stats",
                   help="feature sets of each scaling run, runs separated by commas, sets by '+': coeffs+stats "
                        "(2,475 values per image: 1 GB written at 100k in float32) and stats (45 values: the same "
                        "decomposition, little to write)")
    p.add_argument("--dtype", default=None, choices=("float64", "float32"),
                   help="storage precision of the scaling runs (default: wavelet.dtype of the config)")
    p.add_argument("--engine", default=None, choices=("matrix", "pywt"),
                   help="engine of the scaling runs (default: wavelet.engine of the config)")
    p.add_argument("--chunk-size", type=int, default=None, help="default: wavelet.chunk_size of the config")
    p.add_argument("--no-bind", action="store_true",
                   help="do not bind each rank to one core (then a 1-rank run also uses the other core "
                        "for its writer thread, which flatters the 1-rank time)")
    p.add_argument("--same-session", action="store_true",
                   help="do not start ranks in their own session (see run_job)")
    p.add_argument("--workdir", help="folder for the temporary files (default: a new temp folder)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "wavelet.json"))
    args = p.parse_args(argv)

    from microcal_hpc.config import WaveletConfig

    if args.chunk_size is None:
        args.chunk_size = WaveletConfig().chunk_size
    args.engine = args.engine or WaveletConfig().engine
    args.dtype = args.dtype or WaveletConfig().dtype
    feature_sets = [f.strip() for f in args.features.split(",") if f.strip()]
    load_before = os.getloadavg()
    started = time.strftime("%Y-%m-%dT%H:%M:%S")
    throughput = per_core_throughput(args.throughput_images, args.loop_images, repeats=2)
    with tempfile.TemporaryDirectory(prefix="bench_wavelet_", dir=args.workdir) as tmp:
        rows = scaling([int(s) for s in args.sizes.split(",")], [int(r) for r in args.ranks.split(",")],
                       args.repeats, feature_sets, args.dtype, args.engine, args.chunk_size, Path(tmp),
                       not args.same_session, not args.no_bind)
    load_after = os.getloadavg()

    by = {(r["features"], r["images"], r["ranks"]): r for r in rows}
    sizes = sorted({r["images"] for r in rows})
    big = sizes[-1]
    rank_counts = sorted({x["ranks"] for x in rows})
    rss = {fs: {f"{n}_images": {str(r): by[(fs, n, r)]["peak_rss_mb_per_rank"] for r in rank_counts} for n in sizes}
           for fs in feature_sets}
    engine, dtype = WaveletConfig().engine, WaveletConfig().dtype  # the default setting has to meet the target
    best_core = {d: max(throughput[d][k]["cpu"] for k in throughput[d] if k.startswith(f"{engine}_chunk")
                        and k.endswith("decompose")) for d in ("float64", "float32")}
    best_coeffs = {d: max(throughput[d][k]["cpu"] for k in throughput[d] if k.startswith(f"{engine}_chunk")
                          and k.endswith("_coeffs")) for d in ("float64", "float32")}
    best_features = {d: max(throughput[d][k]["cpu"] for k in throughput[d] if k.startswith(f"{engine}_chunk")
                            and k.endswith("coeffs_and_stats")) for d in ("float64", "float32")}
    efficiency = {fs: {k: by.get((fs, big, 2), {}).get(k) for k in ("efficiency_job", "efficiency_wall",
                                                                    "efficiency_cpu")} for fs in feature_sets}
    result = {
        "benchmark": "wavelet features (db5, level 4, 60x60)",
        "started": started,
        "host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "note": ("cores shared with other processes while measuring: times are upper bounds, rates lower bounds"
                 if max(load_before[0], load_after[0]) > 0.5 else "machine looked idle"),
        "settings": {"features": feature_sets, "dtype": args.dtype, "engine": args.engine, "chunk_size": args.chunk_size,
                     "repeats": args.repeats, "ranks_in_own_session": not args.same_session,
                     "ranks_bound_to_one_core": not args.no_bind},
        "throughput_per_core": throughput,
        "scaling": rows,
        "peak_rss_mb_per_rank": rss,
        "targets": {
            "images_per_second_per_core >= 20000 (default engine, best batched chunk, per CPU-second)": {
                "engine": engine, "decomposition": best_core, "coeffs_features": best_coeffs,
                "coeffs_and_stats_features": best_features,
                "default_dtype": dtype,
                "met": {"decomposition": best_core[dtype] >= 20000,
                        "coeffs_features": best_coeffs[dtype] >= 20000,
                        "coeffs_and_stats_features": best_features[dtype] >= 20000}},
            f"2-rank efficiency >= 0.85 at {big} images": {
                "value": efficiency,
                "met": {fs: (e["efficiency_job"] or 0) >= 0.85 for fs, e in efficiency.items()}},
            "peak memory per rank independent of the number of images": {"value": rss, "met": _flat_memory(rows)},
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["targets"], indent=2))
    print(f"wrote {out}")
    return 0


def _flat_memory(rows: list[dict], tolerance: float = 0.15) -> bool | None:
    """True if, for every rank count, the largest run's peak RSS is within ``tolerance`` of the smallest's."""
    ok = None
    for key in {(x["features"], x["ranks"]) for x in rows}:
        runs = sorted((x for x in rows if (x["features"], x["ranks"]) == key), key=lambda x: x["images"])
        if len(runs) < 2 or not runs[0]["peak_rss_mb_per_rank"]:
            continue
        small, large = max(runs[0]["peak_rss_mb_per_rank"]), max(runs[-1]["peak_rss_mb_per_rank"])
        ok = (ok is not False) and large <= small * (1 + tolerance)
    return ok


if __name__ == "__main__":
    sys.exit(main())
