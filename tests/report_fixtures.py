"""Fabricated run directories for the report tests: every file the contract (docs/outputs.md) names,
with predictions whose metrics are known analytically.

Scores of a set of ``n0`` negatives and ``n1`` positives with ``f`` "hard" negatives (scored above every
positive) and ``g`` "hard" positives (scored below every negative); everything else is ordered
hard positives < negatives < 0.5 < positives < hard negatives. Then, at threshold 0.5,

    confusion matrix = [[n0 - f, f], [g, n1 - g]]
    AUC = 1 - (g * n0 + f * n1 - f * g) / (n0 * n1)

(discordant pairs: every hard positive with every negative, every hard negative with every other positive).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from data_prep.readers import pixel_hash  # the packed format's definition (load_split checks it)
from microcal_hpc.atomic import write_json
from microcal_hpc.config import Config, load_config
from microcal_hpc.launcher import records as R
from microcal_hpc.metrics import binary_metrics

FOLDS = 5
# (f, g) per CNN fold, per wavelet classifier fold, per baseline fold
CNN_FOLD_FG = [(1, 0), (0, 1), (2, 1), (0, 0), (1, 2)]
CNN_OFFICIAL_FG = (2, 3)
CNN_AUGMENT_FG = (4, 1)
# coeffs/rf (the reference pipeline) is not the best by CV AUC: stats/rf is
WAVELET_FG = {"coeffs/rf": (3, 3), "coeffs/svm": (3, 1), "stats/rf": (1, 1), "stats/svm": (4, 4)}
WAVELET_TEST_FG = {"coeffs/rf": (3, 2), "coeffs/svm": (1, 4), "stats/rf": (5, 5), "stats/svm": (6, 2)}
BASELINE_FG = {"brightness-rf": (5, 4), "greylevel-rf": (3, 3)}
BASELINE_TEST_FG = {"brightness-rf": (5, 5), "greylevel-rf": (4, 3)}


def fold_fg(fg: tuple[int, int], k: int) -> tuple[int, int]:
    """The (f, g) of fold ``k`` of an out-of-fold model: the base values plus 0 or 1 (so folds differ)."""
    return fg[0] + k % 2, fg[1] + (k + 1) % 3 // 2


def expected_auc(n0: int, n1: int, f: int, g: int) -> float:
    """AUC of :func:`known_scores` (analytic)."""
    return 1.0 - (g * n0 + f * n1 - f * g) / (n0 * n1)


def expected_confusion(n0: int, n1: int, f: int, g: int) -> list[list[int]]:
    return [[n0 - f, f], [g, n1 - g]]


def known_scores(labels: np.ndarray, f: int, g: int, rng: np.random.Generator) -> np.ndarray:
    """Probabilities with ``f`` hard negatives and ``g`` hard positives (see the module docstring)."""
    labels = np.asarray(labels)
    s = np.empty(len(labels))
    neg, pos = np.flatnonzero(labels == 0), np.flatnonzero(labels == 1)
    assert f <= len(neg) and g <= len(pos), "more hard cases than images"
    s[neg] = rng.uniform(0.10, 0.45, len(neg))
    s[pos] = rng.uniform(0.55, 0.90, len(pos))
    s[neg[:f]] = rng.uniform(0.95, 0.99, f)
    s[pos[:g]] = rng.uniform(0.01, 0.05, g)
    return s




def write_packed(path: Path, splits: dict[str, dict[str, Any]]) -> Path:
    """Write a packed HDF5 file in the layout of microcal_hpc/dataset.py (format version 1)."""
    import h5py

    from microcal_hpc.dataset import FORMAT_NAME, FORMAT_VERSION

    path.parent.mkdir(parents=True, exist_ok=True)
    st = h5py.string_dtype()
    with h5py.File(path, "w") as f:
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["image_shape"] = [60, 60]
        f.attrs["counts"] = json.dumps({k: len(v["labels"]) for k, v in splits.items()})
        for name, d in splits.items():
            g = f.create_group(name)
            g["images"] = d["images"]
            g["labels"] = np.asarray(d["labels"], np.int8)
            for key in ("ids", "groups", "cases"):
                g.create_dataset(key, data=np.asarray(d[key], dtype=object), dtype=st)
            g.create_dataset("sha256", data=np.asarray([pixel_hash(i) for i in d["images"]], dtype=object), dtype=st)
            g.create_dataset("pixel_hash", data=np.asarray([pixel_hash(i) for i in d["images"]], dtype=object), dtype=st)
    return path


def train_letter(label: int, case: int) -> str:
    """Source letter of a fabricated Train case: "n" holds both classes; "s" only normals, "m" only clusters."""
    return "n" if case % 2 else ("s", "m")[label]


TEST_LETTERS = ("t", "u")  # Test: every normal "t", every cluster "u" (the letter separates the Test classes)


def synthetic_splits(seed: int = 0, train=(40, 40), test=(12, 12)) -> dict[str, dict[str, Any]]:
    """Synthetic patches named like the real ones, with exactly one Test patch pixel-identical to a Train
    patch (Test/0 #0 = Train/0 #5) and one source group shared by Train and Test (Test/1 #1). Source
    letters: :func:`train_letter` in Train, :data:`TEST_LETTERS` in Test."""
    from microcal_hpc.synthetic import synthetic_patch

    rng = np.random.default_rng(seed)
    out = {}
    for split, counts, case0 in (("train", train, 1), ("test", test, 500)):
        imgs, labels, ids, groups, cases = [], [], [], [], []
        case = case0
        for lab, n in enumerate(counts):
            for i in range(n):
                if i % 4 == 0:
                    case += 1
                letter = train_letter(lab, case) if split == "train" else TEST_LETTERS[lab]
                grp = f"{case:04d}{letter}1_{i // 4 % 10}_0"
                imgs.append(synthetic_patch(rng, lab))
                labels.append(lab)
                groups.append(grp)
                cases.append(f"{case:04d}")
                ids.append(f"{split.capitalize()}/{lab}/{grp}.pgm_{i % 4 + 1}.pgm")
        out[split] = {"images": np.stack(imgs), "labels": np.array(labels), "ids": ids, "groups": groups, "cases": cases}
    tr, te = out["train"], out["test"]
    te["images"][0] = tr["images"][5]  # a pixel-identical pair across splits
    j = int(np.flatnonzero(te["labels"] == 1)[1])
    k = int(np.flatnonzero(tr["labels"] == 1)[0])
    te["groups"][j], te["cases"][j] = tr["groups"][k], tr["cases"][k]  # a shared source group (and case)
    te["ids"][j] = f"Test/1/{tr['groups'][k]}.pgm_9.pgm"
    return out


@dataclass
class FabricatedRun:
    """A fabricated run directory and what its report must show."""

    run_dir: Path
    cfg: Config
    expected: dict[str, Any] = field(default_factory=dict)  # model -> part -> {"n0","n1","f","g"} or per-fold list


def _save_preds(folder: Path, test: dict, val: dict) -> None:
    arrays = {}
    for part, d in (("test", test), ("val", val)):
        arrays[f"{part}_ids"] = np.asarray(d["ids"]).astype(str)
        arrays[f"{part}_labels"] = np.asarray(d["labels"]).astype(np.int64)
        arrays[f"{part}_prob"] = np.asarray(d["prob"], float)
        arrays[f"{part}_groups"] = np.asarray(d["groups"]).astype(str)
    arrays["val_fold"] = np.asarray(val["fold"]).astype(np.int64)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "predictions.npz", **arrays)


def _metrics(arm: str, model: str, run: str, test: dict, val: Optional[dict], threshold: float, **extra) -> dict:
    m = {"schema": 1, "arm": arm, "model": model, "run": run, "feature_set": extra.pop("feature_set", None),
         "augment": extra.pop("augment", "none"), "fold": extra.pop("fold", None), "folds": FOLDS, "group_by": "case",
         "seed": 0, "validation": None, "cv": None,
         "test": binary_metrics(test["labels"], test["prob"], threshold=threshold), "elapsed_s": 1.5}
    m.update(extra)
    if val is not None and arm == "cnn":
        m["validation"] = binary_metrics(val["labels"], val["prob"], threshold=threshold)
    return m


def _part(split: dict, idx: np.ndarray, prob: np.ndarray, fold: Optional[np.ndarray] = None) -> dict:
    return {"ids": [split["ids"][i] for i in idx], "labels": split["labels"][idx], "prob": prob,
            "groups": [split["groups"][i] for i in idx],
            "fold": fold if fold is not None else np.full(len(idx), -1)}


def _fg_of(labels: np.ndarray, fg: tuple[int, int]) -> dict:
    return {"n0": int((labels == 0).sum()), "n1": int((labels == 1).sum()), "f": fg[0], "g": fg[1]}


def _history(epochs: int, rng) -> dict:
    loss = list(np.round(np.linspace(0.7, 0.2, epochs) + rng.uniform(0, 0.02, epochs), 4))
    return {"loss": loss, "accuracy": list(np.round(np.linspace(0.55, 0.93, epochs), 4)),
            "val_loss": list(np.round(np.linspace(0.72, 0.3, epochs), 4)),
            "val_accuracy": list(np.round(np.linspace(0.5, 0.88, epochs), 4))}


SALIENCY_SHARE = {1: 1.0, 0: 72 / 3600}  # write_saliency's bright-pixel share per class (72 = 2% of 60 x 60)


def write_saliency(folder: Path, ids: list[str], images: np.ndarray, labels: np.ndarray) -> None:
    """A saliency.npz in the CNN job's format whose bright-pixel share is known (SALIENCY_SHARE): on a positive
    the map is 1 on its 72 brightest pixels and 0 elsewhere; on a negative it is 1 everywhere."""
    maps = np.ones(images.shape, np.float32)
    for m, img, lab in zip(maps, images, labels):
        if lab == 1:
            m[:] = 0
            m.ravel()[np.argsort(img.ravel(), kind="stable")[-72:]] = 1
    np.savez(folder / "saliency.npz", test_ids=np.asarray(ids).astype(str), maps=maps,
             method=np.asarray("fabricated: 1 on the brightest pixels of positives, flat on negatives"))


def fabricate_run(root: Path, drop_folds: tuple[int, ...] = (), failed: tuple[str, ...] = (),
                  overrides: Optional[list[str]] = None, seed: int = 0, saliency: bool = True,
                  official_seeds: Optional[dict[int, tuple[int, int]]] = None) -> FabricatedRun:
    """A complete run directory (or a partial one: CNN folds in ``drop_folds`` have no folder at all;
    CNN jobs named in ``failed`` have a folder without metrics.json and a FAILED launcher record).
    ``official_seeds``: training seed -> (f, g) of the official run repeated with that seed
    (cnn/official-seed-<seed>; give ``campaign.official_seeds`` in ``overrides`` too).

    The CNN runs without a fold follow the contract of runs trained on all of Train: empty validation
    arrays, ``validation: null``, no ``val_*`` history; the official run has a saliency.npz (``saliency``)."""
    from microcal_hpc.dataset import load_split
    from microcal_hpc.splits import fold_of_each, split_groups

    rng = np.random.default_rng(seed)
    run = Path(root)
    cfg = load_config(None, ["campaign.cv_folds=5", "campaign.augment_presets=[flips]", "train.folds=5",
                             "classify.classifiers=[rf,svm]", "classify.feature_sets=[coeffs,stats]",
                             "report.bootstrap=200", "report.gallery_size=6", "train.epochs=4"] + list(overrides or []))
    run.mkdir(parents=True, exist_ok=True)
    R.write_manifest(run, cfg, "local", ["fabricated"])  # the launcher's own writer: config.yaml + manifest.json
    splits = synthetic_splits(seed)
    write_packed(run / "data" / "packed.h5", splits)
    tr_split = load_split(run / "data" / "packed.h5", "train", images=False)
    tr, te = splits["train"], splits["test"]
    fold = fold_of_each(tr_split.labels, split_groups(tr_split, "case"), FOLDS, 0)
    all_test = np.arange(len(te["labels"]))
    exp: dict[str, Any] = {"test_labels": te["labels"].copy()}
    records = []

    def record(name: str, stage: str, state: str, folder: str, elapsed: float = 12.0) -> None:
        rec = {"stage": stage, "name": name, "state": state, "job_id": f"{1000 + len(records)}",
               "started": "2024-01-01T10:00:00+00:00", "ended": f"2024-01-01T10:00:{int(elapsed):02d}+00:00",
               "host": "node01", "job_log": f"{run}/{folder}/train.log", "log": f"{run}/logs/{1000 + len(records)}.err"}
        if state == "FAILED":
            rec["error"] = "RuntimeError: fabricated failure"
        else:
            rec["elapsed_s"] = elapsed
        records.append((f"{stage}-{name}", rec))

    # ---- CNN single runs: trained on all of Train, no validation
    singles = [("official", CNN_OFFICIAL_FG, 0)]
    singles += [(f"official-seed-{s}", fg, s) for s, fg in (official_seeds or {}).items()]
    for name, fg, train_seed in singles + [("augment-flips", CNN_AUGMENT_FG, 0)]:
        folder = run / "cnn" / name
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "history.json", {k: v for k, v in _history(4, rng).items() if not k.startswith("val_")})
        (folder / "train.log").write_text("epoch 1\n")
        if name in failed:
            record(name, "cnn", "FAILED", f"cnn/{name}")
            continue
        test = _part(te, all_test, known_scores(te["labels"], *fg, rng))
        _save_preds(folder, test, _part(tr, np.array([], int), np.array([])))
        write_json(folder / "metrics.json", _metrics("cnn", "cnn", name, test, None, 0.5,
                                                     augment=name.split("-")[-1] if name.startswith("augment-")
                                                     else "none", train={"loss": 0.2, "accuracy": 0.93},
                                                     n_train=len(tr["labels"]), seed=train_seed))
        if name == "official" and saliency:
            write_saliency(folder, te["ids"], te["images"], te["labels"])
        exp[f"cnn/{name}"] = {"test": _fg_of(te["labels"], fg), "test_prob": test["prob"]}
        record(name, "cnn", "COMPLETED", f"cnn/{name}")
    # ---- CNN folds
    exp["cnn/folds"], exp["cnn/folds_test_prob"] = {}, {}
    for k in range(FOLDS):
        name = f"fold-{k}"
        if k in drop_folds:
            continue
        folder = run / "cnn" / name
        folder.mkdir(parents=True, exist_ok=True)
        write_json(folder / "history.json", _history(4, rng))
        if name in failed:
            record(name, "cnn", "FAILED", f"cnn/{name}")
            continue
        idx = np.flatnonzero(fold == k)
        test = _part(te, all_test, known_scores(te["labels"], *CNN_OFFICIAL_FG, rng))
        val = _part(tr, idx, known_scores(tr["labels"][idx], *CNN_FOLD_FG[k], rng), np.full(len(idx), k))
        _save_preds(folder, test, val)
        write_json(folder / "metrics.json", _metrics("cnn", "cnn", name, test, val, 0.5, fold=k))
        exp["cnn/folds"][k] = _fg_of(tr["labels"][idx], CNN_FOLD_FG[k])
        exp["cnn/folds_test_prob"][k] = test["prob"]
        record(name, "cnn", "COMPLETED", f"cnn/{name}")
    # ---- wavelet classifiers (svm: decision scores, threshold 0) and the baseline
    all_train = np.arange(len(tr["labels"]))

    def oof(fg):
        prob = np.empty(len(all_train))
        for k in range(FOLDS):
            m = fold == k
            prob[m] = known_scores(tr["labels"][m], *fold_fg(fg, k), rng)
        return prob

    for key, fg in WAVELET_FG.items():
        fs, clf = key.split("/")
        folder = run / "wavelet" / fs / clf
        svm = clf == "svm"
        tf = (lambda p: 4 * (p - 0.5)) if svm else (lambda p: p)
        thr = 0.0 if svm else 0.5
        test = _part(te, all_test, tf(known_scores(te["labels"], *WAVELET_TEST_FG[key], rng)))
        val = _part(tr, all_train, tf(oof(fg)), fold)
        _save_preds(folder, test, val)
        per_fold = [binary_metrics(tr["labels"][fold == k], val["prob"][fold == k], threshold=thr) for k in range(FOLDS)]
        write_json(folder / "metrics.json", _metrics("wavelet", clf, "cv", test, None, thr, feature_set=fs,
                                                     cv={"per_fold": per_fold, "summary": {}}))
        exp[f"wavelet/{key}"] = {"test": _fg_of(te["labels"], WAVELET_TEST_FG[key]),
                                 "folds": {k: _fg_of(tr["labels"][fold == k], fold_fg(fg, k)) for k in range(FOLDS)},
                                 "test_prob": test["prob"], "val_prob": val["prob"], "threshold": thr}
    record("classify", "wavelet", "COMPLETED", "wavelet")
    for name in BASELINE_FG:
        folder = run / "baseline" / name
        test = _part(te, all_test, known_scores(te["labels"], *BASELINE_TEST_FG[name], rng))
        val = _part(tr, all_train, oof(BASELINE_FG[name]), fold)
        _save_preds(folder, test, val)
        write_json(folder / "metrics.json", _metrics("baseline", name, "cv", test, None, 0.5,
                                                     cv={"per_fold": [], "summary": {}}))
        exp[f"baseline/{name}"] = {"test": _fg_of(te["labels"], BASELINE_TEST_FG[name]), "test_prob": test["prob"],
                                   "val_prob": val["prob"],
                                   "folds": {k: _fg_of(tr["labels"][fold == k], fold_fg(BASELINE_FG[name], k))
                                             for k in range(FOLDS)}}
    record("baseline", "baseline", "COMPLETED", "baseline")
    records.append(("aggregate", {"stage": "report", "name": "aggregate", "state": "RUNNING", "job_id": "2000",
                                  "started": "2024-01-01T10:01:00+00:00"}))  # the report job itself, running
    for key, rec in records:
        R.update_record(run, key, **rec)
    exp["fold"] = fold
    exp["splits"] = splits
    return FabricatedRun(run, cfg, exp)


# ----------------------------------------------------------------------------------------------
# Reading a rendered report back


class ReportHTML:
    """report.html parsed with html.parser: section ids, headings, tables, image sources, and whether
    every non-void tag is closed in order."""

    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "area", "base", "wbr"}

    def __init__(self, text: str):
        from html.parser import HTMLParser

        self.sections: list[str] = []
        self.h2: list[str] = []
        self.h3: list[str] = []
        self.images: list[str] = []
        self.table_ids: list[str] = []
        self.errors: list[str] = []
        self.text_parts: list[str] = []
        outer = self

        class P(HTMLParser):
            def __init__(self):
                super().__init__(convert_charrefs=True)
                self.stack: list[str] = []
                self.capture: Optional[str] = None

            def handle_starttag(self, tag, attrs):
                a = dict(attrs)
                if tag == "section":
                    outer.sections.append(a.get("id", ""))
                if tag == "img":
                    outer.images.append(a.get("src", ""))
                if tag == "div" and a.get("class") == "table":
                    outer.table_ids.append(a.get("id", ""))
                if tag in ("h2", "h3"):
                    self.capture = tag
                    getattr(outer, tag).append("")
                if tag not in outer.VOID:
                    self.stack.append(tag)

            def handle_endtag(self, tag):
                if tag in outer.VOID:
                    return
                if not self.stack or self.stack[-1] != tag:
                    outer.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
                    return
                self.stack.pop()
                if tag == self.capture:
                    self.capture = None

            def handle_data(self, data):
                outer.text_parts.append(data)
                if self.capture:
                    getattr(outer, self.capture)[-1] += data

        p = P()
        p.feed(text)
        p.close()
        if p.stack:
            self.errors.append(f"unclosed tags: {p.stack}")
        self.text = " ".join(" ".join(self.text_parts).split())

    def decoded_images(self, base: Path) -> list[bytes]:
        """Bytes of every <img>: base64 data URIs decoded, relative paths read from ``base``."""
        import base64

        out = []
        for src in self.images:
            if src.startswith("data:image/png;base64,"):
                out.append(base64.b64decode(src.split(",", 1)[1], validate=True))
            else:
                out.append((base / src).read_bytes())
        return out


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPORT_SECTIONS = ["summary", "data", "cnn", "wavelet", "comparison", "shortcut", "gallery", "reference"]
