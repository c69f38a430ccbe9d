"""The data section of the report: partition, folds (with the grouping used), integrity and source letters,
read from the packed file; plus the per-image facts later sections need (source letters, Test images that
overlap Train)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from microcal_hpc.config import Config
from microcal_hpc.dataset import Split
from microcal_hpc.report.sources import NO_SOURCE, overlap_with_train, single_class_letters, source_letters
from microcal_hpc.report.tables import Column, Table


@dataclass
class DataSummary:
    """What the data section shows (tables) and what the figures and the shortcut analysis need."""

    tables: list[Table]
    counts: dict[str, dict[str, int]]  # split -> label -> n
    integrity: dict[str, Any]
    train: Split
    test: Split
    letter_by_id: dict[str, str]  # image id (Train and Test) -> source letter
    single_class: dict[str, int]  # letters whose every patch (Train and Test) has one label -> that label
    test_overlap: dict[str, np.ndarray]  # reason -> mask over Test (overlap_with_train), "any" included
    mean_grey: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # split -> label -> mean grey


def _partition_table(tr: Split, te: Split, counts: dict, packed_path) -> Table:
    rows = []
    for s, name in ((tr, "Train"), (te, "Test")):
        rows.append({"split": name, "n0": counts[s.name]["0"], "n1": counts[s.name]["1"], "total": len(s),
                     "groups": int(len(np.unique(s.groups))), "cases": int(len(np.unique(s.cases)))})
    rows.append({"split": "Total", "n0": sum(r["n0"] for r in rows), "n1": sum(r["n1"] for r in rows),
                 "total": sum(r["total"] for r in rows), "groups": int(len(np.unique(np.r_[tr.groups, te.groups]))),
                 "cases": int(len(np.unique(np.r_[tr.cases, te.cases])))})
    return Table("partition", "Data partition", f"{len(tr) + len(te)} patches of {tr.images.shape[1]}×"
                 f"{tr.images.shape[2]} pixels in {packed_path}",
                 [Column("split", "Split"), Column("n0", "Label 0 (normal)"), Column("n1", "Label 1 (cluster)"),
                  Column("total", "Total"), Column("groups", "Source images (groups)"), Column("cases", "Cases")], rows)


def _folds_table(tr: Split, cfg: Config) -> tuple[Table, int]:
    """Images, merged groups and cases per fold; and the number of cases whose images span several folds."""
    from microcal_hpc.splits import fold_of_each, split_groups

    t, c = cfg.train, cfg.classify
    n_folds = cfg.campaign.cv_folds or t.folds  # the launcher gives CNN fold jobs train.folds = campaign.cv_folds
    gid = split_groups(tr, t.group_by)
    fold = fold_of_each(tr.labels, gid, n_folds, t.seed)
    rows = []
    for k in range(n_folds):
        m = fold == k
        rows.append({"fold": k, "n0": int((tr.labels[m] == 0).sum()), "n1": int((tr.labels[m] == 1).sum()),
                     "total": int(m.sum()), "groups": int(len(np.unique(gid[m]))),
                     "cases": int(len(np.unique(tr.cases[m])))})
    split_cases = sum(1 for case in np.unique(tr.cases) if len(np.unique(fold[tr.cases == case])) > 1)
    same = (c.folds, c.group_by, c.seed) == (n_folds, t.group_by, t.seed)
    note = (f"microcal_hpc.splits (stratified, group-aware) on Train: {n_folds} folds, grouping '{t.group_by}' "
            f"merged with pixel-identical images, seed {t.seed}; {split_cases} of {len(np.unique(tr.cases))} cases "
            "have images in more than one fold. Wavelet classifiers and baselines: "
            f"{c.folds} folds, grouping '{c.group_by}', seed {c.seed}: "
            + ("the same folds." if same else "DIFFERENT settings: fold k is not the same images in both arms."))
    table = Table("folds", f"Cross-validation folds (grouping '{t.group_by}')", f"{len(tr)} Train patches",
                  [Column("fold", "Fold"), Column("n0", "Label 0"), Column("n1", "Label 1"), Column("total", "Total"),
                   Column("groups", f"Groups ('{t.group_by}', duplicates merged)"), Column("cases", "Cases")],
                  rows, note)
    return table, split_cases


def _integrity(tr: Split, te: Split, overlap: dict[str, np.ndarray], split_cases: int, cfg: Config) -> tuple[Table, dict]:
    shared_groups = sorted(set(tr.groups.tolist()) & set(te.groups.tolist()))
    shared_cases = sorted(set(tr.cases.tolist()) & set(te.cases.tolist()))
    tr_hash: dict[str, list[int]] = {}
    for i, h in enumerate(tr.pixel_hash.tolist()):
        tr_hash.setdefault(h, []).append(i)
    cross = [(tr.ids[j], te.ids[i], int(tr.labels[j]), int(te.labels[i]))
             for i, h in enumerate(te.pixel_hash.tolist()) for j in tr_hash.get(h, [])]
    within = {}
    for s in (tr, te):
        _, cnt = np.unique(s.pixel_hash, return_counts=True)
        within[s.name] = int(sum(c * (c - 1) // 2 for c in cnt if c > 1))
    conflicts = sum(1 for a in cross if a[2] != a[3])
    test_dup = int(overlap["pixel-identical to a Train image"].sum())
    n_any = int(overlap["any"].sum())
    integrity = {"shared_groups": shared_groups, "shared_cases": shared_cases,
                 "cross_split_identical_pairs": [[a, b] for a, b, _, _ in cross],
                 "test_images_identical_to_train": test_dup, "identical_pairs_within": within,
                 "label_conflicts": conflicts, "cases_split_across_folds": split_cases,
                 "test_images_overlapping_train": n_any}
    rows = [
        {"check": "Source images (groups) in both Train and Test", "count": len(shared_groups),
         "examples": ", ".join(shared_groups[:5])},
        {"check": "Cases in both Train and Test", "count": len(shared_cases), "examples": ", ".join(shared_cases[:8])},
        {"check": "Pixel-identical pairs across Train and Test", "count": len(cross),
         "examples": "; ".join(f"{b} = {a}" for a, b, _, _ in cross[:3])},
        {"check": "Test patches with a pixel-identical Train patch", "count": test_dup,
         "examples": f"{100 * test_dup / max(len(te), 1):.1f}% of Test"},
        {"check": "Test patches overlapping Train (identical pixels, same group or same case)", "count": n_any,
         "examples": f"{100 * n_any / max(len(te), 1):.1f}% of Test"},
        {"check": "Pixel-identical pairs within Train", "count": within["train"], "examples": "merged into one CV group"},
        {"check": "Pixel-identical pairs within Test", "count": within["test"], "examples": ""},
        {"check": "Identical pixels with conflicting labels (across splits)", "count": conflicts, "examples": ""},
        {"check": f"Train cases with images in more than one CV fold (grouping '{cfg.train.group_by}')",
         "count": split_cases, "examples": ""},
    ]
    note = ("Test patches identical to Train patches, or from the same source image or case, can make the official "
            "Test AUC optimistic: section 6 recomputes every model's Test AUC without them. In cross-validation, "
            "pixel-identical images always share a fold; "
            + (f"with grouping '{cfg.train.group_by}' every case lies in one fold." if split_cases == 0 else
               f"with grouping '{cfg.train.group_by}', {split_cases} cases have images in several folds "
               "(images of one patient on both sides of a split)."))
    table = Table("integrity", "Data integrity", "pixel identity from the sha256 of the decoded pixels (pixel_hash)",
                  [Column("check", "Check"), Column("count", "Count"), Column("examples", "Examples")], rows, note)
    return table, integrity


def _source_table(tr: Split, te: Split, letters: dict[str, np.ndarray], single: dict[str, int], pattern: str) -> Table:
    found = sorted(set(letters["train"].tolist()) | set(letters["test"].tolist()))
    rows = []
    for s, name in ((tr, "Train"), (te, "Test")):
        for lab in (0, 1):
            sel = letters[s.name][s.labels == lab].tolist()
            row = {"part": f"{name}, label {lab}", "patches": len(sel)}
            row.update({f"code_{L}": sel.count(L) for L in found})
            rows.append(row)
    only = "; ".join(f"“{L}”: label {lab} only" for L, lab in single.items())
    note = (f"Source letter: data.source_pattern {pattern!r} searched in the group id ({NO_SOURCE}: no match). "
            + (f"Letters found in one class only (Train and Test): {only}." if single else
               "Every letter occurs in both classes."))
    return Table("acquisition_codes", "Source letter (the character after the case id), by split and label",
                 "every patch; a letter that separates the labels is a potential shortcut",
                 [Column("part", "Split, label"), Column("patches", "Patches")]
                 + [Column(f"code_{L}", f"“{L}”", "Patches with this source letter") for L in found], rows, note)


def data_summary(packed_path, cfg: Config) -> DataSummary:
    """Partition, fold grouping, integrity and source-letter tables of the packed data."""
    from microcal_hpc.dataset import load_split

    tr, te = load_split(packed_path, "train"), load_split(packed_path, "test")
    counts = {s.name: {"0": int((s.labels == 0).sum()), "1": int((s.labels == 1).sum())} for s in (tr, te)}
    letters = {s.name: source_letters(s.groups, cfg.data.source_pattern) for s in (tr, te)}
    single = single_class_letters(np.r_[letters["train"], letters["test"]], np.r_[tr.labels, te.labels])
    overlap = overlap_with_train(tr, te)
    folds, split_cases = _folds_table(tr, cfg)
    integ, integrity = _integrity(tr, te, overlap, split_cases, cfg)
    tables = [_partition_table(tr, te, counts, packed_path), folds, integ,
              _source_table(tr, te, letters, single, cfg.data.source_pattern)]
    letter_by_id = {i: L for s in (tr, te) for i, L in zip(s.ids.tolist(), letters[s.name].tolist())}
    mean_grey = {s.name: {str(lab): s.images[s.labels == lab].reshape((s.labels == lab).sum(), -1).mean(axis=1)
                          for lab in (0, 1)} for s in (tr, te)}
    return DataSummary(tables, counts, integrity, tr, te, letter_by_id, single, overlap, mean_grey)
