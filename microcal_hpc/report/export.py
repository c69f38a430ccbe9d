"""report/metrics.csv: every metric of every model as one tidy table (long format), for analysis scripts.

One row per model x evaluation x subset x metric; columns :data:`CSV_COLUMNS` (docs/outputs.md). Written
with the csv module: a header line, comma-separated, fields quoted only when they hold a comma, quote or
newline, empty for a missing value; ``pandas.read_csv`` loads it as is.
"""
from __future__ import annotations

import csv
import io
import math
from typing import Any, Iterable, Optional

from microcal_hpc.report.tables import SIX, ModelSummary, Summaries, mean_std

CSV_COLUMNS = ("model", "label", "arm", "feature_set", "evaluation", "subset", "metric", "value", "std", "ci_low",
               "ci_high", "n_images", "n_folds")
TEST_METRICS = SIX + ("loss",)


def _row(s: ModelSummary, key: str, evaluation: str, metric: str, value: Any, subset: str = "", std=None,
         ci=None, n_images=None, n_folds=None) -> dict[str, Any]:
    return {"model": key, "label": s.label, "arm": s.run.arm, "feature_set": s.run.feature_set or "",
            "evaluation": evaluation, "subset": subset, "metric": metric, "value": value, "std": std,
            "ci_low": ci[0] if ci else None, "ci_high": ci[1] if ci else None, "n_images": n_images,
            "n_folds": n_folds}


def _test_rows(key: str, s: ModelSummary) -> Iterable[dict[str, Any]]:
    if s.test is None:
        return
    for metric in TEST_METRICS:
        if metric in s.test:
            yield _row(s, key, "test", metric, s.test[metric], ci=s.auc_ci if metric == "auc" else None,
                       n_images=s.test["n"])


def _cv_rows(key: str, s: ModelSummary, per_fold: dict[int, dict[str, Any]]) -> Iterable[dict[str, Any]]:
    if not per_fold:
        return
    ms = mean_std(list(per_fold.values()), TEST_METRICS)
    n = int(sum(m["n"] for m in per_fold.values()))
    for metric, v in ms.items():
        yield _row(s, key, "cv_folds", metric, v["mean"], std=v["std"], n_images=n, n_folds=v["n"])


def metrics_rows(S: Summaries, overlap: Optional[dict], within: Optional[dict]) -> list[dict[str, Any]]:
    """The rows of metrics.csv: Test, Test without overlap, CV (mean ± std over folds), CV within sources."""
    models: list[tuple[str, ModelSummary, dict]] = []
    for s in S.cnn_single + S.seed_repeats:
        models.append((f"cnn/{s.run.name}", s, {}))
    if S.cnn_folds:
        first = next(iter(S.cnn_folds.values()))
        models.append(("cnn/folds", ModelSummary(first.run, "CNN cross-validation (fold models)", 0.5),
                       S.cnn_cv_per_fold()))
    if S.ensemble:
        models.append(("cnn/ensemble", S.ensemble, {}))
    models += [(f"wavelet/{k}", s, s.cv_per_fold) for k, s in S.wavelet.items()]
    models += [(f"baseline/{k}", s, s.cv_per_fold) for k, s in S.baseline.items()]
    clean = (overlap or {}).get("models", {})
    rows: list[dict[str, Any]] = []
    for key, s, per_fold in models:
        if key != "cnn/folds":
            rows += _test_rows(key, s)
        c = clean.get(key)
        if c and c["auc_without_overlap"] is not None:
            rows.append(_row(s, key, "test_without_overlap", "auc", c["auc_without_overlap"], n_images=c["n"]))
        rows += _cv_rows(key, s, per_fold)
    labels = {key: s for key, s, _ in models}
    within = within or {}
    for model_key, subsets in (within.get("auc") or {}).items():
        key = {"cnn": "cnn/folds"}.get(model_key, model_key.replace(":", "/"))
        s = labels.get(key)
        if s is None:
            continue
        for subset, auc in subsets.items():
            ci = within["pooled_without_excluded_ci"].get(model_key) if subset == within["pooled_key"] else None
            if auc is not None:
                rows.append(_row(s, key, "cv_pooled", "auc", auc, subset=subset, ci=ci,
                                 n_images=within["n"][model_key][subset]))
    return rows


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def metrics_csv(rows: list[dict[str, Any]]) -> str:
    """The CSV text of :func:`metrics_rows`."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(CSV_COLUMNS)
    for r in rows:
        w.writerow([_cell(r.get(c)) for c in CSV_COLUMNS])
    return buf.getvalue()
