"""Benchmark: CNN training throughput (images/s) and validation AUC per training setting.

Each (setting, seed) trains ``--epochs`` epochs on the real Train set (validation on fold 0 of the
splitter for that seed) in a fresh subprocess. Steady-state throughput is the median over epochs
2..E of training images per second (training steps only: validation and checkpoints excluded);
the validation AUC after the last epoch shows whether a faster setting learns as well. For the job's
settings the table also shows the job's overhead (its time outside the epochs, ``metrics.json``
``timing``; the breakdown is in the JSON).

Settings:
  naive      the reference: plain ``model.fit`` on NumPy arrays, batch 32, no XLA, no tf.data
  pipeline   the training job in float32 (tf.data pipeline, deterministic ops)
  xla        the job in float32 with ``jit_compile=True`` (needs deterministic=false)
  bf16       the job with bfloat16 mixed precision (the CPU must support it: AVX512_BF16/AMX)
  default    the job with TrainConfig's defaults (mixed_precision=auto: bf16 where native)
  ... and any ``NAME=key=value,key=value`` given with ``--setting``.

Usage::

    python bench/bench_train.py                       # 25 epochs, seeds 0 1 2, all settings
    python bench/bench_train.py --epochs 3 --seeds 0  # a quick look
    python bench/bench_train.py --setting b64=batch_size=64

Writes bench/results/train.json (and prints a table).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SETTINGS: dict[str, dict[str, object]] = {
    "naive": {},
    "pipeline": {"mixed_precision": "none"},
    "xla": {"mixed_precision": "none", "jit_compile": True, "deterministic": False},
    "bf16": {"mixed_precision": "bfloat16"},
    "default": {},  # TrainConfig as shipped (mixed_precision=auto)
}


def _cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _default_data(workdir: Path) -> Path:
    """Pack the real data set (MICROCAL_DATA or ../shared/data/Mammography_micro) into ``workdir``."""
    from data_prep.pack import pack_tree
    from microcal_hpc.config import DataConfig

    root = Path(os.environ.get("MICROCAL_DATA", REPO.parent / "shared" / "data" / "Mammography_micro"))
    if not (root / "Train").is_dir():
        sys.exit(f"bench_train: real data not found at {root}; give --data FILE.h5 or set MICROCAL_DATA")
    out = workdir / "real.h5"
    pack_tree(root, out, DataConfig())
    return out


# ----------------------------------------------------------------------------------------------
# one run (inside a subprocess)


def _run_naive(data: str, epochs: int, seed: int) -> dict:
    """The reference: the study's way, ``model.fit`` on in-memory NumPy arrays, batch 32."""
    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    from microcal_hpc.cnn.model import build_model, compile_model
    from microcal_hpc.config import TrainConfig
    from microcal_hpc.dataset import load_split
    from microcal_hpc.splits import train_validation_indices

    tf.keras.utils.set_random_seed(seed)
    tr = load_split(data, "train")
    t_idx, v_idx = train_validation_indices(tr, "group", seed, 0, 5)
    x = tr.images[..., None].astype("float32") / 255.0
    y = tr.labels.astype("float32")
    # the reference: float32, one step per call (plain Keras)
    cfg = TrainConfig(seed=seed, epochs=epochs, mixed_precision="none", steps_per_execution=1)
    model = build_model(x.shape[1:], cfg)
    compile_model(model, tf.keras.optimizers.Adam(cfg.learning_rate), cfg)

    class Timer(tf.keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.train_seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.t_train = time.perf_counter(), None

        def on_test_begin(self, logs=None):
            if self.t_train is None:
                self.t_train = time.perf_counter() - self.t0

        def on_epoch_end(self, epoch, logs=None):
            self.train_seconds.append(self.t_train or time.perf_counter() - self.t0)

    timer = Timer()
    model.fit(x[t_idx], y[t_idx], batch_size=32, epochs=epochs, shuffle=True, verbose=0,
              validation_data=(x[v_idx], y[v_idx]), callbacks=[timer])
    prob = model.predict(x[v_idx], verbose=0).ravel()
    n = len(t_idx)
    return {"images_per_second": [n / s for s in timer.train_seconds], "val_auc": float(roc_auc_score(y[v_idx], prob)),
            "n_train": n}


def _run_job(data: str, epochs: int, seed: int, overrides: dict, workdir: str) -> dict:
    """The shipped training job with ``overrides`` of cfg.train."""
    from microcal_hpc.cnn.train import train_cnn
    from microcal_hpc.config import load_config

    sets = [f"train.{k}={v}" for k, v in overrides.items()]
    cfg = load_config(None, [f"train.epochs={epochs}", f"train.seed={seed}", "train.fold=0", "report.bootstrap=200",
                             *sets])
    job = train_cnn(cfg, data, workdir, f"seed-{seed}")
    hist = json.loads((job / "history.json").read_text())
    m = json.loads((job / "metrics.json").read_text())
    return {"images_per_second": hist["images_per_second"], "val_auc": m["validation"]["auc"], "n_train": m["n_train"],
            "timing": m["timing"]}


def run_one(args) -> None:
    overrides = json.loads(args.overrides)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as wd:
        if args.one == "naive":
            out = _run_naive(args.data, args.epochs, args.seed)
        else:
            out = _run_job(args.data, args.epochs, args.seed, overrides, wd)
    print("RESULT " + json.dumps(out), flush=True)


# ----------------------------------------------------------------------------------------------
# the orchestration


def _summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "mean": statistics.fmean(values), "min": min(values),
            "max": max(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", help="packed HDF5 (default: pack the real data set into a temporary folder)")
    p.add_argument("--epochs", type=int, default=25)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--only", nargs="+", help="run only these settings")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=key=value,...",
                   help="an extra setting: train.* overrides, e.g. b64=batch_size=64,mixed_precision=bfloat16")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "train.json"))
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one setting in this process
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--overrides", default="{}", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.one:
        run_one(args)
        return 0

    settings = dict(SETTINGS)
    for spec in args.setting:
        name, _, kv = spec.partition("=")
        settings[name] = dict(item.split("=", 1) for item in kv.split(",") if item)
    bf16 = bool({"avx512_bf16", "amx_bf16"} & _cpu_flags())
    skipped = {}
    if not bf16:
        skipped["bf16"] = "CPU reports neither AVX512_BF16 nor AMX-BF16"
    names = [n for n in settings if (not args.only or n in args.only) and n not in skipped]

    with tempfile.TemporaryDirectory(prefix="bench_train_data_") as tmp:
        data = args.data or str(_default_data(Path(tmp)))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONHASHSEED": "0"}
        runs: dict[str, list[dict]] = {n: [] for n in names}
        load_before = os.getloadavg()
        t_start = time.time()
        for seed in args.seeds:  # seed-major: every setting sees the same machine load drift
            for name in names:
                cmd = [sys.executable, __file__, "--one", name, "--data", data, "--epochs", str(args.epochs),
                       "--seed", str(seed), "--overrides", json.dumps(settings[name])]
                t0 = time.time()
                proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
                line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
                if proc.returncode != 0 or not line:
                    print(f"{name} seed {seed}: FAILED\n{proc.stderr[-3000:]}", file=sys.stderr)
                    runs[name].append({"seed": seed, "error": proc.stderr.strip().splitlines()[-1:]})
                    continue
                r = json.loads(line[0][len("RESULT "):])
                steady = r["images_per_second"][1:] or r["images_per_second"]
                r.update(seed=seed, wall_seconds=time.time() - t0, steady_images_per_second=statistics.median(steady),
                         first_epoch_images_per_second=r["images_per_second"][0], load_avg_1min=os.getloadavg()[0])
                runs[name].append(r)
                overhead = f", overhead {r['timing']['overhead']:.1f} s" if "timing" in r else ""
                print(f"{name:10s} seed {seed}: {r['steady_images_per_second']:7.0f} img/s  "
                      f"val AUC {r['val_auc']:.4f}  ({r['wall_seconds']:.0f} s{overhead}, "
                      f"load {r['load_avg_1min']:.1f})",
                      flush=True)

    results = {}
    for name in names:
        ok = [r for r in runs[name] if "error" not in r]
        entry = {"overrides": settings[name], "runs": runs[name]}
        if ok:
            entry["images_per_second"] = _summary([r["steady_images_per_second"] for r in ok])
            entry["val_auc"] = _summary([r["val_auc"] for r in ok])
        results[name] = entry
    ref = results.get("naive", {}).get("images_per_second", {}).get("median")
    for name, entry in results.items():
        if ref and "images_per_second" in entry:
            # paired by seed: the same split and the same moment's machine load
            ratios = [a["steady_images_per_second"] / b["steady_images_per_second"]
                      for a, b in zip(entry["runs"], results["naive"]["runs"])
                      if "error" not in a and "error" not in b]
            entry["speedup_vs_naive"] = {"of_medians": entry["images_per_second"]["median"] / ref,
                                         "per_seed": ratios}
    out = {
        "benchmark": "train",
        "epochs": args.epochs,
        "seeds": args.seeds,
        "throughput": "median over epochs 2..E of training images/s (validation and checkpointing excluded)",
        "val_auc": "fold-0 validation AUC after the last epoch (same split per seed for every setting)",
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "bf16_cpu": bf16, "python": platform.python_version(),
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
                    "elapsed_s": time.time() - t_start},
        "skipped": skipped,
        "settings": results,
    }
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("tensorflow-cpu", "tensorflow"):
        try:
            out["machine"]["tensorflow"] = version(dist)
            break
        except PackageNotFoundError:
            continue
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    from microcal_hpc.atomic import write_json

    write_json(args.out, out)
    print(f"\n{'setting':10s} {'img/s (median)':>15s} {'x naive':>8s} {'val AUC mean±sd':>18s}")
    for name, e in results.items():
        if "images_per_second" not in e:
            print(f"{name:10s} failed")
            continue
        sp = e.get("speedup_vs_naive", {}).get("of_medians", float("nan"))
        print(f"{name:10s} {e['images_per_second']['median']:15.0f} {sp:8.2f} "
              f"{e['val_auc']['mean']:10.4f} ± {e['val_auc']['std']:.4f}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
