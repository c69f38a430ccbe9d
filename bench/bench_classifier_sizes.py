"""CV AUC against size for the wavelet classifiers on the real data: how many trees, iterations, units.

    python bench/bench_classifier_sizes.py --out bench/results/classifier_sizes.json [--seeds 0,1,2]
        [--only rf,hgb] [--feature-sets coeffs,stats] [--n-jobs 0]

For every classifier and size in ``GRID`` and each feature set of the real data's features file, the
classifier job's own cross-validation (``classify.folds`` group folds of the official Train set, through
:func:`microcal_hpc.wavelet.evaluate.shared_folds`) is run once per seed. A seed sets both the folds and
the model's random state (``classify.seed``), so the spread over seeds is the seed-to-seed spread of the
CV AUC that the report shows. CV AUC = the mean of the fold AUCs, as in the report.

Sizes that nest are read off one fit: the first k trees of a random forest are the k-tree forest of the
same seed (each tree's seed is drawn in order), and gradient boosting's staged predictions after k
iterations are the k-iteration model (no early stopping). Each size's cost is measured separately: the CPU
seconds of one single-threaded fit on all Train images plus scoring Test, as the job runs it (the least of
``COST_REPEATS`` fits).

Choice: one size per classifier (the job uses it on every feature set): the cheapest size whose mean CV
AUC over seeds is, on every feature set, at most ``TOLERANCE`` (0.005) below the best size's mean. (A
fixed tolerance, not the seed sd: an sd from 3 seeds is itself noisy, e.g. 0.0005 for one size and 0.008
for the next.) "configured" marks the size :mod:`microcal_hpc.wavelet.classifiers` uses now. The features file is
computed from the real image tree (``--data``) into a temporary folder with the project's own pack and
features jobs.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# classifier -> families; a family = parameters of one fit, and the nested sizes read off it (or none)
GRID = {
    "rf": [{"params": {"rf__n_estimators": 500}, "nested": "trees", "sizes": [25, 50, 100, 200, 300, 500]}],
    "hgb": [{"params": {"hgb__max_iter": 200, "hgb__max_bins": bins}, "nested": "iterations",
             "sizes": [25, 50, 100, 200]} for bins in (15, 31)]
           + [{"params": {"hgb__max_iter": 100, "hgb__max_bins": 255}, "nested": "iterations", "sizes": [50, 100]}],
    "mlp": [{"params": {"mlp__hidden_layer_sizes": (units,)}} for units in (16, 32, 64, 128)]
           + [{"params": {"mlp__hidden_layer_sizes": (16,), "mlp__max_iter": epochs}} for epochs in (50, 100, 200)],
    "svm": [{"params": {}}], "lr": [{"params": {}}], "knn": [{"params": {}}], "nb": [{"params": {}}],
    "dt": [{"params": {}}],
}
SIZE_PARAM = {"trees": "rf__n_estimators", "iterations": "hgb__max_iter"}
# a size is acceptable if its mean CV AUC is at most this far below the best size's (module docstring)
TOLERANCE = 0.005
COST_REPEATS = 3  # a size's cost: the least CPU time of this many fits


def variants(family: dict) -> list[dict]:
    """The parameter sets a family measures (one per nested size, or the family's own)."""
    if "nested" not in family:
        return [dict(family["params"])]
    return [dict(family["params"], **{SIZE_PARAM[family["nested"]]: k}) for k in family["sizes"]]


def nested_scores(model, X: np.ndarray, nested: str | None, sizes: list[int]) -> dict[int, np.ndarray]:
    """Score of class 1 after each nested size (one entry, key 0, when the family does not nest)."""
    from microcal_hpc.wavelet.classifiers import scores

    if nested is None:
        return {0: scores(model, X)}
    est = model[-1]
    Xt = model[:-1].transform(X) if len(model) > 1 else X
    one = list(est.classes_).index(1)
    if nested == "trees":
        per_tree = np.stack([t.predict_proba(np.asarray(Xt, dtype=np.float32))[:, one] for t in est.estimators_])
        cum = np.cumsum(per_tree, axis=0)
        return {k: cum[k - 1] / k for k in sizes}
    staged = {k: p[:, one] for k, p in enumerate(est.staged_predict_proba(Xt), 1) if k in sizes}
    return {k: staged[k] for k in sizes}


def fit_task(name: str, family: dict, seed: int, X_fit, y_fit, X_eval) -> dict:
    """One single-threaded fit of a family's largest model; scores after every nested size; CPU seconds."""
    from threadpoolctl import threadpool_limits

    from microcal_hpc.wavelet.classifiers import make_classifier

    t0 = time.process_time()
    with threadpool_limits(limits=1):
        model = make_classifier(name, seed).set_params(**family["params"]).fit(X_fit, y_fit)
        out = nested_scores(model, X_eval, family.get("nested"), family.get("sizes", []))
    return {"scores": out, "cpu_s": time.process_time() - t0}


def cost_task(name: str, params: dict, X_train, y_train, X_test, repeats: int = COST_REPEATS) -> float:
    """CPU seconds of one fit on all Train images + scoring Test, single-threaded, as the job runs it: the
    least of ``repeats`` fits (one fit's CPU time varies by up to 1.5x on the shared cores)."""
    from microcal_hpc.wavelet.evaluate import fit_and_score
    from microcal_hpc.wavelet.classifiers import make_classifier

    def make():
        return make_classifier(name, 0).set_params(**params)

    return min(fit_and_score(make, X_train, None, y_train, X_test, None)["cpu_seconds"] for _ in range(repeats))


def label(params: dict) -> str:
    return ", ".join(f"{k.split('__', 1)[1]}={v[0] if isinstance(v, tuple) else v}" for k, v in params.items()) \
        or "as configured"


def measure(features: Path, names: list[str], feature_sets: list[str], seeds: list[int], n_jobs: int) -> list[dict]:
    from joblib import Parallel, delayed

    from microcal_hpc.config import Config
    from microcal_hpc.metrics import roc_auc
    from microcal_hpc.wavelet.classifiers import make_classifier
    from microcal_hpc.wavelet.evaluate import resolve_n_jobs, shared_folds
    from microcal_hpc.wavelet.features_file import load_features

    cc = Config().classify
    rows = []
    for fs in feature_sets:
        X, meta = load_features(features, "train", fs)
        X_test, _ = load_features(features, "test", fs)
        y = meta.labels
        folds = {s: shared_folds(meta, cc.folds, cc.group_by, s) for s in seeds}
        fits = [(name, fam, s, k) for name in names for fam in GRID[name] for s in seeds for k in range(cc.folds)]
        print(f"{fs}: {len(fits)} CV fits on {resolve_n_jobs(n_jobs)} workers ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        done = Parallel(n_jobs=resolve_n_jobs(n_jobs))(
            delayed(fit_task)(name, fam, s, X[folds[s][k][0]], y[folds[s][k][0]], X[folds[s][k][1]])
            for name, fam, s, k in fits)
        print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        todo = [(name, fam, v) for name in names for fam in GRID[name] for v in variants(fam)]
        costs = Parallel(n_jobs=resolve_n_jobs(n_jobs))(
            delayed(cost_task)(name, v, X, y, X_test) for name, _, v in todo)
        for (name, fam, v), cost in zip(todo, costs):
            size = v.get(SIZE_PARAM.get(fam.get("nested", ""), ""), 0)
            auc = {s: float(np.mean([roc_auc(y[folds[s][k][1]], r["scores"][size if fam.get("nested") else 0])
                                     for (n2, f2, s2, k), r in zip(fits, done)
                                     if n2 == name and f2 is fam and s2 == s]))
                   for s in seeds}
            rows.append({"classifier": name, "feature_set": fs, "params": v, "label": label(v),
                         "is_configured": _compact(make_classifier(name, 0)) == _compact(
                             make_classifier(name, 0).set_params(**v)),
                         "cv_auc_by_seed": auc, "cv_auc_mean": float(np.mean(list(auc.values()))),
                         "cv_auc_sd": float(np.std(list(auc.values()), ddof=1)) if len(auc) > 1 else 0.0,
                         "fit_cpu_s_all_train": round(float(cost), 3)})
    return rows


def _compact(model) -> str:
    return " ".join(repr(model).split())


def choose(rows: list[dict]) -> dict:
    """Per classifier (one size serves every feature set): per feature set the best size; the chosen size is
    the cheapest (CPU seconds summed over the feature sets) whose mean CV AUC is at most ``TOLERANCE``
    below the best on every feature set."""
    out = {}
    for name in sorted({r["classifier"] for r in rows}):
        group = [r for r in rows if r["classifier"] == name]
        sets = sorted({r["feature_set"] for r in group})
        best = {fs: max((r for r in group if r["feature_set"] == fs), key=lambda r: r["cv_auc_mean"]) for fs in sets}
        by_label: dict[str, dict[str, dict]] = {}
        for r in group:
            by_label.setdefault(r["label"], {})[r["feature_set"]] = r
        ok = [lb for lb, rs in by_label.items() if all(
            fs in rs and rs[fs]["cv_auc_mean"] >= best[fs]["cv_auc_mean"] - TOLERANCE for fs in sets)]
        cost = {lb: sum(r["fit_cpu_s_all_train"] for r in by_label[lb].values()) for lb in by_label}
        pick = min(ok, key=lambda lb: cost[lb])
        current = next((lb for lb, rs in by_label.items() if any(r["is_configured"] for r in rs.values())), None)
        out[name] = {"chosen": pick, "configured": current, "per_feature_set": {
            fs: {"best": best[fs]["label"], "best_auc": round(best[fs]["cv_auc_mean"], 4),
                 "best_sd": round(best[fs]["cv_auc_sd"], 4),
                 "chosen_auc": round(by_label[pick][fs]["cv_auc_mean"], 4),
                 "chosen_cpu_s": by_label[pick][fs]["fit_cpu_s_all_train"],
                 "configured_auc": round(by_label[current][fs]["cv_auc_mean"], 4) if current else None,
                 "configured_cpu_s": by_label[current][fs]["fit_cpu_s_all_train"] if current else None}
            for fs in sets}}
    return out


def real_features(data: Path, work: Path) -> Path:
    """Pack the real tree and compute the default wavelet features with the project's jobs."""
    from data_prep.pack import pack_tree
    from microcal_hpc.config import Config
    from microcal_hpc.wavelet.features_job import features_job

    cfg = Config()
    packed, features = work / "packed.h5", work / "features.h5"
    pack_tree(str(data), str(packed), cfg.data, progress=False)
    features_job(cfg, str(packed), str(features))
    return features


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("MICROCAL_DATA",
                                                     str(REPO.parent / "shared" / "data" / "Mammography_micro")))
    ap.add_argument("--features", help="an existing features file (default: computed from --data)")
    ap.add_argument("--seeds", default="0,1,2", help="classify.seed values (folds and model seeds)")
    ap.add_argument("--only", default=",".join(GRID), help="classifiers to measure")
    ap.add_argument("--feature-sets", default="coeffs,stats")
    ap.add_argument("--n-jobs", type=int, default=0, help="worker processes (0: every core of the affinity mask)")
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "classifier_sizes.json"))
    args = ap.parse_args(argv)

    from microcal_hpc.atomic import write_json

    names = [n for n in args.only.split(",") if n]
    unknown = set(names) - set(GRID)
    if unknown:
        raise SystemExit(f"unknown classifier(s) {sorted(unknown)}; known: {list(GRID)}")
    load_before, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%S")
    with tempfile.TemporaryDirectory(prefix="bench_sizes_") as tmp:
        features = Path(args.features) if args.features else real_features(Path(args.data), Path(tmp))
        rows = measure(features, names, args.feature_sets.split(","), [int(s) for s in args.seeds.split(",")],
                       args.n_jobs)
    result = {"benchmark": "wavelet classifiers: CV AUC against size", "started": started,
              "host": platform.node(), "cpus": os.cpu_count(),
              "load_average_before": [round(x, 2) for x in load_before],
              "load_average_after": [round(x, 2) for x in os.getloadavg()],
              "rule": (f"per classifier, the cheapest size whose mean CV AUC over seeds is at most {TOLERANCE} "
                       "below the best size's, on every feature set"),
              "rows": rows, "choice": choose(rows)}
    write_json(args.out, result)
    print(f"{'classifier':<12}{'size':<34}{'CV AUC mean +- sd over seeds':>30}{'CPU s/fit':>11}")
    for r in rows:
        print(f"{r['feature_set'] + '/' + r['classifier']:<12}{r['label']:<34}"
              f"{r['cv_auc_mean']:>22.4f} +- {r['cv_auc_sd']:.4f}{r['fit_cpu_s_all_train']:>11.2f}"
              f"{'  (configured)' if r['is_configured'] else ''}")
    print(json.dumps(result["choice"], indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
