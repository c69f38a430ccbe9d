"""The whole study against the naive scripts it replaces: wall times, stage times, overheads, floor, AUCs.

    python bench/bench_study.py [--repeat 1] [--epochs 25] [--set section.key=value ...] [--no-serial]
        [--out bench/results/study.json]

One run measures, alternating (naive, main, main --serial, then again for ``--repeat``), on the real
data (``--data``, default ``$MICROCAL_DATA``) with the main job's settings (``--config``, default
``configs/campaign.yaml``; ``--epochs`` and ``--set`` change both sides alike):

naive reference
    For each CNN fit the campaign makes (its plan's ``cnn`` jobs: official, its seed repeats, CV folds,
    augmentation presets; each with its training seed), a fresh Python process that loads the images
    from the image files with Pillow into NumPy arrays and runs plain float32 Keras: the architecture of
    :mod:`microcal_hpc.cnn.model`, Adam, binary cross-entropy, ``model.fit(x, y, batch_size, epochs)``
    with one step per call and no tf.data pipeline (fold fits also pass their fold as
    ``validation_data``; augmentation fits put the preset's Keras layers in front of the model), then
    ``model.predict`` on Test (and on the fold).
    The training images are the campaign's: all of Train for fits without a fold, Train minus fold k
    (the project's splitter, same grouping and seed) for fold k. Then one process running one
    scikit-learn ``RandomForestClassifier()`` (defaults, ``random_state`` fixed) in 5-fold CV on the
    same folds plus a Train -> Test fit, on per-image ``pywt.wavedec2`` detail coefficients (db5,
    level 4, detail levels 2-4: 2,430 values). Processes run one after the other, as the reference
    study's scripts do. Its wall time is the sum of the processes' wall times (imports included).
main job
    ``microcal-hpc submit --executor local`` with the configuration into a fresh run directory
    (``--serial`` too, when the command has that flag: one job at a time). Wall time of the command.

Printed and written to JSON (``bench/results/study.json``):

- the ratio of wall times naive / main, per main mode and repeat;
- every stage's wall time (first ``started`` to last ``ended`` of its jobs in ``RUN/jobs/*.json``)
  and every job's wall time: ``process_s``, its process from start to end as the launcher saw it
  (start-up, imports and exit included), or ``elapsed_s`` (from the job's first line to its last)
  where the record has no ``process_s``;
- each CNN job's overhead: that wall time minus the sum of its ``history.json`` ``epoch_seconds``;
- the compute floor: the core-seconds of the work the study cannot skip, spread over all the
  machine's cores. That is, the sum over CNN jobs of (sum of epoch_seconds x the cores the job ran on)
  plus the sum over classifier fits (wavelet classifiers and baselines: ``fit_cpu_seconds`` of each
  model's metrics.json; every fit is single-threaded), divided by the cores of this process's affinity
  mask. A CNN job's cores are read from its job record (``cpus``: the job process's CPU affinity, which
  the local executor sets) and are all the machine's cores when the record does not say. Packing, features, the
  report, imports and evaluation are overhead by this definition. Also main / floor;
- every model's AUC on both sides: CNN Test AUC (and fold validation AUC), wavelet classifiers' and
  baselines' CV AUC (mean over folds) and Test AUC.

Targets (issue 12): naive / main >= 1.5 and main / floor <= 1.25 on the 2-core VM, median CNN overhead
<= 3 s. Measure on a quiet machine: the load average before and after is recorded.
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# One naive CNN fit, in a fresh process: argv[1] = a JSON spec written by naive_cnn_specs().
NAIVE_CNN = r"""
import json, sys, time
t0 = time.perf_counter()
spec = json.load(open(sys.argv[1]))
import numpy as np
from PIL import Image
import tensorflow as tf
from microcal_hpc.cnn.model import build_model
from microcal_hpc.config import TrainConfig

def load(paths):
    return np.stack([np.asarray(Image.open(p), dtype=np.float32) / 255.0 for p in paths])[..., None]

tf.keras.utils.set_random_seed(spec["seed"])
x, y = load(spec["train"]), np.array(spec["train_labels"], dtype=np.float32)
x_test = load(spec["test"])
val = (load(spec["val"]), np.array(spec["val_labels"], dtype=np.float32)) if spec["val"] else None
net = build_model(x.shape[1:], TrainConfig(mixed_precision="none"))
if spec["augment"] != "none":
    from microcal_hpc.cnn.augment import build_augmenter
    net = tf.keras.Sequential([tf.keras.Input(shape=x.shape[1:]), build_augmenter(spec["augment"], spec["seed"]), net])
net.compile(optimizer=tf.keras.optimizers.Adam(spec["learning_rate"]), loss="binary_crossentropy",
            metrics=["accuracy"])

class EpochTimes(tf.keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()
    def on_epoch_end(self, epoch, logs=None):
        times.append(time.perf_counter() - self.t)

times = []
net.fit(x, y, batch_size=spec["batch_size"], epochs=spec["epochs"], validation_data=val, verbose=0,
        callbacks=[EpochTimes()])
out = {"test_prob": net.predict(x_test, batch_size=spec["batch_size"], verbose=0).ravel().tolist(),
       "val_prob": net.predict(val[0], batch_size=spec["batch_size"], verbose=0).ravel().tolist() if val else [],
       "epoch_seconds": times, "n_train": len(y)}
out["process_s"] = time.perf_counter() - t0
print(json.dumps(out))
"""

# The naive wavelet + random forest study, in a fresh process: argv[1] = a JSON spec.
NAIVE_RF = r"""
import json, sys, time
t0 = time.perf_counter()
spec = json.load(open(sys.argv[1]))
import numpy as np, pywt
from PIL import Image
from sklearn.ensemble import RandomForestClassifier

def features(paths):
    rows = []
    for p in paths:
        c = pywt.wavedec2(np.asarray(Image.open(p), dtype=np.float64), "db5", level=4)
        rows.append(np.concatenate([band.ravel() for level in c[1:4] for band in level]))
    return np.array(rows)

X, y = features(spec["train"]), np.array(spec["train_labels"])
X_test = features(spec["test"])
val_prob = np.zeros(len(y))
for va in spec["folds"]:
    tr = np.setdiff1d(np.arange(len(y)), va)
    val_prob[va] = RandomForestClassifier(random_state=spec["seed"]).fit(X[tr], y[tr]).predict_proba(X[va])[:, 1]
test_prob = RandomForestClassifier(random_state=spec["seed"]).fit(X, y).predict_proba(X_test)[:, 1]
print(json.dumps({"val_prob": val_prob.tolist(), "test_prob": test_prob.tolist(), "n_features": X.shape[1],
                  "process_s": time.perf_counter() - t0}))
"""


def child_env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2", PYTHONWARNINGS="ignore")


def run_child(code: str, spec_file: Path) -> tuple[float, dict]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code, str(spec_file)], capture_output=True, text=True, env=child_env())
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"naive process for {spec_file.name} failed:\n{r.stderr[-3000:]}")
    return wall, json.loads(r.stdout.strip().splitlines()[-1])


# ---- the naive side -------------------------------------------------------------------------------

def naive_specs(cfg, data: Path, work: Path) -> tuple[list[dict], dict, dict]:
    """Spec files for the naive CNN fits (one per CNN job of the campaign's plan) and the RF study.

    Which images each fit trains on comes from the project's splitter on a packed copy of the data
    (packed here, not timed); the naive processes read the image files themselves.
    """
    from data_prep.pack import pack_tree
    from microcal_hpc.dataset import load_split
    from microcal_hpc.launcher.plan import align_folds, build_plan
    from microcal_hpc.splits import cv_folds, split_groups

    packed = work / "naive-packed.h5"
    pack_tree(str(data), str(packed), cfg.data, progress=False)
    train, test = load_split(packed, "train", images=False), load_split(packed, "test", images=False)
    paths = {s.name: [str(data / i) for i in s.ids] for s in (train, test)}
    plan_cfg = _copy(cfg)
    plan_cfg.data.root = str(data)
    plan = build_plan(plan_cfg, work / "plan-only")
    fits = []
    for spec in plan:
        if spec.stage != "cnn":
            continue
        t = spec.config.train
        rows = np.arange(len(train))
        val_rows = np.array([], dtype=int)
        if t.fold is not None:
            val_rows = cv_folds(train.labels, split_groups(train, t.group_by), t.folds, t.seed)[t.fold][1]
            rows = np.setdiff1d(rows, val_rows)
        fit = {"name": spec.name, "seed": t.seed, "epochs": t.epochs, "batch_size": t.batch_size,
               "learning_rate": t.learning_rate, "augment": t.augment,
               "train": [paths["train"][i] for i in rows], "train_labels": train.labels[rows].tolist(),
               "val": [paths["train"][i] for i in val_rows], "val_labels": train.labels[val_rows].tolist(),
               "test": paths["test"], "test_labels": test.labels.tolist()}
        fits.append(fit)
    # the classifier jobs' folds: the plan aligns them with the CNN's splitter settings
    c = next((s.config.classify for s in plan if s.job_type == "wavelet_classify"), None) \
        or align_folds(_copy(plan_cfg)).classify
    folds = cv_folds(train.labels, split_groups(train, c.group_by), c.folds, c.seed)
    rf = {"seed": c.seed, "train": paths["train"], "train_labels": train.labels.tolist(),
          "test": paths["test"], "test_labels": test.labels.tolist(), "folds": [va.tolist() for _, va in folds]}
    for i, fit in enumerate(fits):
        fit["file"] = str(work / f"naive-cnn-{i}.json")
        Path(fit["file"]).write_text(json.dumps(fit))
    rf["file"] = str(work / "naive-rf.json")
    Path(rf["file"]).write_text(json.dumps(rf))
    return fits, rf, {"fits": [f["name"] for f in fits], "n_train": len(train), "n_test": len(test)}


def _copy(cfg):
    import copy

    return copy.deepcopy(cfg)


def run_naive(fits: list[dict], rf: dict) -> dict:
    from microcal_hpc.metrics import roc_auc

    out = {"cnn": {}, "wall_s": 0.0}
    for fit in fits:
        wall, res = run_child(NAIVE_CNN, Path(fit["file"]))
        row = {"wall_s": round(wall, 2), "epoch_seconds_sum": round(sum(res["epoch_seconds"]), 2),
               "overhead_s": round(wall - sum(res["epoch_seconds"]), 2), "n_train": res["n_train"],
               "test_auc": roc_auc(fit["test_labels"], res["test_prob"])}
        if fit["val"]:
            row["val_auc"] = roc_auc(fit["val_labels"], res["val_prob"])
        out["cnn"][fit["name"]] = row
        out["wall_s"] += wall
        print(f"  naive cnn/{fit['name']}: {wall:.1f} s, Test AUC {row['test_auc']:.4f}", file=sys.stderr, flush=True)
    wall, res = run_child(NAIVE_RF, Path(rf["file"]))
    y = np.array(rf["train_labels"])
    fold_aucs = [roc_auc(y[va], np.array(res["val_prob"])[va]) for va in rf["folds"]]
    out["rf"] = {"wall_s": round(wall, 2), "n_features": res["n_features"], "cv_auc": float(np.mean(fold_aucs)),
                 "test_auc": roc_auc(rf["test_labels"], res["test_prob"])}
    out["wall_s"] = round(out["wall_s"] + wall, 2)
    print(f"  naive wavelet RF: {wall:.1f} s, CV AUC {out['rf']['cv_auc']:.4f}, Test AUC {out['rf']['test_auc']:.4f}",
          file=sys.stderr, flush=True)
    return out


# ---- the main job ----------------------------------------------------------------------------------

def has_serial_flag() -> bool:
    r = subprocess.run([sys.executable, "-m", "jobs", "submit", "--help"], capture_output=True, text=True,
                       env=child_env())
    return "--serial" in r.stdout


def run_main(config: str, data: Path, sets: list[str], run_dir: Path, serial: bool) -> dict:
    cmd = [sys.executable, "-m", "jobs", "submit", "--config", config, "--executor", "local", "--run-dir",
           str(run_dir), "--set", f"data.root={data}"]
    for s in sets:
        cmd += ["--set", s]
    if serial:
        cmd.append("--serial")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=REPO)
    wall = time.perf_counter() - t0
    (run_dir / "bench-submit.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise SystemExit(f"main job failed (exit {r.returncode}); see {run_dir / 'bench-submit.log'}:\n"
                         f"{r.stderr[-2000:]}")
    return dict(analyse_run(run_dir), wall_s=round(wall, 2), serial=serial)


def _cores(record: dict, machine: int) -> int:
    """The cores a job ran on: its record's ``cpus`` (the job's CPU affinity, a list, or a count); all of
    the machine's when the record does not say."""
    for key in ("cpus", "cores"):
        value = record.get(key)
        if isinstance(value, list) and value:
            return min(len(value), machine)
        if isinstance(value, int) and value > 0:
            return min(value, machine)
    return machine


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def job_wall(record: dict):
    """A job's wall time: its process from start to end as the launcher saw it (``process_s``), else
    ``elapsed_s`` (the job's own account, without the process's start-up and exit)."""
    return record.get("process_s") or record.get("elapsed_s")


def analyse_run(run: Path) -> dict:
    """Stage and job times, CNN overheads, the compute floor and every model's AUCs of one run directory."""
    from microcal_hpc.launcher.records import parse_time, read_records

    machine = len(os.sched_getaffinity(0))
    records = read_records(run)
    stages: dict[str, dict] = {}
    for rec in records.values():
        st = stages.setdefault(rec.get("stage", "?"), {"jobs": {}, "starts": [], "ends": []})
        st["jobs"][rec.get("name", "?")] = job_wall(rec)
        if parse_time(rec.get("started")) and parse_time(rec.get("ended")):
            st["starts"].append(parse_time(rec["started"]))
            st["ends"].append(parse_time(rec["ended"]))
    stage_rows = {name: {"wall_s": (max(s["ends"]) - min(s["starts"])).total_seconds() if s["starts"] else None,
                         "jobs_wall_s": s["jobs"]} for name, s in stages.items()}
    cnn, floor_core_s, models = {}, 0.0, {}
    for rec in records.values():
        if rec.get("stage") != "cnn":
            continue
        job = run / "cnn" / rec["name"]
        epochs = _read_json(job / "history.json").get("epoch_seconds", [])
        m = _read_json(job / "metrics.json")
        cores = _cores(rec, machine)
        floor_core_s += sum(epochs) * cores
        wall = job_wall(rec)
        cnn[rec["name"]] = {"wall_s": wall, "elapsed_s": rec.get("elapsed_s"), "epoch_seconds_sum": round(sum(epochs), 2),
                            "overhead_s": round(wall - sum(epochs), 2) if wall else None,
                            "cores": cores, "timing": m.get("timing")}
        models[f"cnn/{rec['name']}"] = {"test_auc": (m.get("test") or {}).get("auc"),
                                        "val_auc": (m.get("validation") or {}).get("auc")}
    fits_cpu_s = 0.0
    for mfile in sorted(list(run.glob("wavelet/*/*/metrics.json")) + list(run.glob("baseline/*/metrics.json"))):
        m = _read_json(mfile)
        fits_cpu_s += sum(m.get("fit_cpu_seconds") or [])
        key = str(mfile.parent.relative_to(run))
        models[key] = {"cv_auc": (((m.get("cv") or {}).get("summary") or {}).get("auc") or {}).get("mean"),
                       "test_auc": (m.get("test") or {}).get("auc")}
    overheads = [c["overhead_s"] for c in cnn.values() if c["overhead_s"] is not None]
    floor = (floor_core_s + fits_cpu_s) / machine
    return {"run_dir": str(run), "stages": stage_rows, "cnn_jobs": cnn,
            "cnn_overhead_median_s": statistics.median(overheads) if overheads else None,
            "floor": {"seconds": round(floor, 2), "cnn_epoch_core_s": round(floor_core_s, 2),
                      "classifier_fit_cpu_s": round(fits_cpu_s, 2), "cores": machine},
            "models": models}


# ---- report ------------------------------------------------------------------------------------------

def summary_lines(naive: dict, main: dict, label: str) -> list[str]:
    ratio = naive["wall_s"] / main["wall_s"]
    floor = main["floor"]["seconds"]
    lines = [f"{label}: main {main['wall_s']:.1f} s, naive {naive['wall_s']:.1f} s, naive/main = {ratio:.2f} "
             f"(target >= 1.5); floor {floor:.1f} s, main/floor = {main['wall_s'] / floor:.2f} (target <= 1.25)"
             if floor else f"{label}: main {main['wall_s']:.1f} s, naive {naive['wall_s']:.1f} s, ratio {ratio:.2f}"]
    lines.append(f"  floor = ({main['floor']['cnn_epoch_core_s']:.1f} CNN epoch core-s + "
                 f"{main['floor']['classifier_fit_cpu_s']:.1f} classifier fit CPU-s) / {main['floor']['cores']} cores")
    for name, st in sorted(main["stages"].items(), key=lambda kv: kv[0]):
        jobs = ", ".join(f"{j} {e}" for j, e in sorted(st["jobs_wall_s"].items()))
        lines.append(f"  stage {name:<9} wall {st['wall_s'] if st['wall_s'] is not None else '?':>6} s   jobs: {jobs}")
    for name, c in sorted(main["cnn_jobs"].items()):
        lines.append(f"  cnn/{name:<22} wall {c['wall_s']} s = epochs {c['epoch_seconds_sum']} s + overhead "
                     f"{c['overhead_s']} s ({c['cores']} cores)")
    lines.append(f"  median CNN overhead {main['cnn_overhead_median_s']} s (target <= 3 s)")
    return lines


def auc_table(naive: dict, main: dict) -> list[str]:
    lines = [f"  {'model':<28}{'main CV':>9}{'main Test':>11}{'naive CV':>10}{'naive Test':>12}"]

    def f(x):
        return f"{x:.4f}" if isinstance(x, (int, float)) and x == x else "-"

    for key, m in sorted(main["models"].items()):
        nv = {}
        if key.startswith("cnn/"):
            n = naive["cnn"].get(key[4:], {})
            nv = {"cv": n.get("val_auc"), "test": n.get("test_auc")}
            cv = m.get("val_auc")
        else:
            cv = m.get("cv_auc")
        lines.append(f"  {key:<28}{f(cv):>9}{f(m.get('test_auc')):>11}{f(nv.get('cv')):>10}{f(nv.get('test')):>12}")
    lines.append(f"  {'naive wavelet RF (coeffs)':<28}{'':>9}{'':>11}{f(naive['rf']['cv_auc']):>10}"
                 f"{f(naive['rf']['test_auc']):>12}")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "campaign.yaml"))
    ap.add_argument("--data", default=os.environ.get("MICROCAL_DATA",
                                                     str(REPO.parent / "shared" / "data" / "Mammography_micro")))
    ap.add_argument("--epochs", type=int, help="train.epochs for both sides (default: the config's)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="a config override for both sides (repeatable), e.g. campaign.cv_folds=2")
    ap.add_argument("--repeat", type=int, default=1, help="alternating rounds (naive, main, main --serial)")
    ap.add_argument("--no-serial", action="store_true", help="skip the main job with --serial")
    ap.add_argument("--workdir", help="folder for run directories (default: a new temporary folder, removed)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "study.json"))
    args = ap.parse_args(argv)

    from microcal_hpc.atomic import write_json
    from microcal_hpc.config import load_config

    sets = list(args.sets) + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    cfg = load_config(args.config, sets)
    data = Path(args.data).resolve()
    if not (data / "Train").is_dir():
        raise SystemExit(f"{data}: no Train folder (the real image tree; set --data or MICROCAL_DATA)")
    modes = [False] + ([True] if not args.no_serial and has_serial_flag() else [])
    if not args.no_serial and modes == [False]:
        print("microcal-hpc submit has no --serial flag here: measuring the default mode only", file=sys.stderr)
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%S")
    tmp = tempfile.TemporaryDirectory(prefix="bench_study_", dir=args.workdir)
    work = Path(tmp.name)
    rounds = []
    try:
        fits, rf, naive_info = naive_specs(cfg, data, work)
        for r in range(args.repeat):
            print(f"round {r + 1}/{args.repeat}: naive ({len(fits)} CNN fits + RF) ...", file=sys.stderr, flush=True)
            row = {"naive": run_naive(fits, rf), "main": {}}
            for serial in modes:
                label = "serial" if serial else "default"
                print(f"round {r + 1}/{args.repeat}: main job ({label}) ...", file=sys.stderr, flush=True)
                row["main"][label] = run_main(args.config, data, sets, work / f"main-{r}-{label}", serial)
            rounds.append(row)
    finally:
        if args.workdir:
            print(f"run directories kept under {work}", file=sys.stderr)
        else:
            tmp.cleanup()
    load_after = os.getloadavg()
    lines = []
    for r, row in enumerate(rounds):
        for label, m in row["main"].items():
            lines += summary_lines(row["naive"], m, f"round {r + 1}, main {label}")
        lines += auc_table(row["naive"], row["main"]["default"])
    ratios = {label: [row["naive"]["wall_s"] / row["main"][label]["wall_s"] for row in rounds]
              for label in rounds[0]["main"]}
    result = {"benchmark": "the study end to end: naive scripts vs the main job", "started": started,
              "host": platform.node(), "cpus": len(os.sched_getaffinity(0)),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in load_after],
              "config": args.config, "overrides": sets, "naive_plan": naive_info,
              "ratio_naive_over_main": {k: [round(x, 3) for x in v] for k, v in ratios.items()},
              "ratio_median": {k: round(statistics.median(v), 3) for k, v in ratios.items()},
              "rounds": rounds, "summary": lines}
    write_json(args.out, result)
    print("\n".join(lines))
    print(f"load average before {result['load_average_before']}, after {result['load_average_after']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
