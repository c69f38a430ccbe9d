"""Summarise a packed HDF5 file: counts, image shape, groups and cases, and pixel-identical images.

``inspect_packed(path)`` returns a JSON-serialisable dict; ``format_inspection(d)`` renders it as text.
Pixel-identical images are found by equal ``pixel_hash`` (sha256 of the decoded pixels and shape),
so the same picture under another name, file format or split is reported. A set of ``k`` identical
images counts ``k*(k-1)/2`` pairs; a pair is "across" when one image is in Train and the other in Test.
Images are not read (only names and hashes), so this is fast for any size; ``verify_packed(path)``
(``inspect --verify``) reads them all to check every pixel hash and the whole-file checksum.
"""
from __future__ import annotations

import json
import os
from collections import defaultdict
from itertools import combinations
from pathlib import Path

import numpy as np

from microcal_hpc.dataset import SPLITS, _strings, checksum_path, open_packed, verify_pixels


def _read_splits(path) -> tuple[dict, dict[str, dict], dict[str, list[dict]]]:
    """The file's attributes; per split its labels, groups, cases, image shape, dtype and chunks; the images
    of each pixel hash (split, id, label, file sha256)."""
    per_split: dict[str, dict] = {}
    members: dict[str, list[dict]] = defaultdict(list)
    with open_packed(path) as f:
        attrs = {k: f.attrs[k] for k in f.attrs}
        for split in SPLITS:
            g = f[split]
            images = g["images"]
            labels = g["labels"][()].astype(np.int64)
            ids, hashes, file_sha = _strings(g["ids"]), _strings(g["pixel_hash"]), _strings(g["sha256"])
            per_split[split] = {
                "labels": labels, "groups": set(_strings(g["groups"])), "cases": set(_strings(g["cases"])),
                "shape": list(images.shape[1:]), "dtype": str(images.dtype), "chunks": list(images.chunks or []),
            }
            for i in range(len(labels)):
                members[hashes[i]].append({"split": split, "id": str(ids[i]), "label": int(labels[i]),
                                           "sha256": str(file_sha[i])})
    return attrs, per_split, members


def _duplicate_sets(members: dict[str, list[dict]]) -> dict:
    """Sets of images with the same pixels (within Train, within Test or across), and their pair counts."""
    sets = []
    n_pairs = {"train": 0, "test": 0, "across": 0}
    for h, ms in members.items():
        if len(ms) < 2:
            continue
        ms = sorted(ms, key=lambda m: (SPLITS.index(m["split"]), m["id"]))
        for a, b in combinations(ms, 2):
            n_pairs[a["split"] if a["split"] == b["split"] else "across"] += 1
        splits = sorted({m["split"] for m in ms}, key=SPLITS.index)
        sets.append({
            "pixel_hash": h,
            "scope": "across" if len(splits) > 1 else splits[0],
            "conflicting_labels": len({m["label"] for m in ms}) > 1,
            "byte_identical": len({m["sha256"] for m in ms}) == 1,
            "members": [{k: m[k] for k in ("split", "id", "label")} for m in ms],
        })
    sets.sort(key=lambda s: (s["members"][0]["split"] != "train", s["members"][0]["id"]))
    return {
        "sets": sets,
        "n_sets": len(sets),
        "n_pairs": sum(n_pairs.values()),
        "n_pairs_within_train": n_pairs["train"],
        "n_pairs_within_test": n_pairs["test"],
        "n_pairs_across": n_pairs["across"],
        "n_conflicting_sets": sum(s["conflicting_labels"] for s in sets),
    }


def inspect_packed(path: str | os.PathLike) -> dict:
    """Counts, shape, dtype, groups/cases per split and shared between splits, and duplicate sets."""
    attrs, per_split, members = _read_splits(path)
    counts = {s: {"0": int((d["labels"] == 0).sum()), "1": int((d["labels"] == 1).sum()),
                  "total": int(len(d["labels"]))} for s, d in per_split.items()}
    shapes = {tuple(d["shape"]) for d in per_split.values()}
    return {
        "path": str(path),
        "format": str(attrs.get("format")),
        "format_version": int(attrs.get("format_version")),
        "created": str(attrs.get("created", "")),
        "package_version": str(attrs.get("package_version", "")),
        "source_root": str(attrs.get("source_root", "")),
        "image_shape": list(next(iter(shapes))) if len(shapes) == 1 else [d["shape"] for d in per_split.values()],
        "dtype": per_split["train"]["dtype"],
        "chunks": {s: d["chunks"] for s, d in per_split.items()},
        "counts": counts,
        "groups": {s: len(d["groups"]) for s, d in per_split.items()},
        "cases": {s: len(d["cases"]) for s, d in per_split.items()},
        "shared_groups": sorted(per_split["train"]["groups"] & per_split["test"]["groups"]),
        "shared_cases": sorted(per_split["train"]["cases"] & per_split["test"]["cases"]),
        "duplicates": _duplicate_sets(members),
    }


def verify_packed(path: str | os.PathLike, chunk: int = 4096) -> dict:
    """Check the file against its recorded whole-file checksum and every image against its pixel hash,
    ``chunk`` images at a time; raise InputError naming the first problem (for an image: split, index, id).
    Returns what was checked."""
    recorded = checksum_path(path)
    n = 0
    with open_packed(path, verify=True) as f:
        for split in SPLITS:
            images, hashes = f[split]["images"], f[split]["pixel_hash"]
            for start in range(0, images.shape[0], chunk):
                stop = min(start + chunk, images.shape[0])
                verify_pixels(path, split, images[start:stop], hashes.asstr()[start:stop], start=start)
            n += images.shape[0]
    return {"images": n, "checksum": str(recorded) if recorded.is_file() else None}


def format_verification(v: dict) -> str:
    """One line: what :func:`verify_packed` checked."""
    checksum = (f"the file matches its checksum {Path(v['checksum']).name}" if v["checksum"]
                else "no whole-file checksum recorded")
    return f"verified: {checksum}; the pixels of all {v['images']} images match their pixel hashes"


def format_inspection(d: dict) -> str:
    """Human-readable report of :func:`inspect_packed`."""
    lines = [f"{d['path']}: {d['format']} v{d['format_version']}, created {d['created']} "
             f"by microcal-hpc {d['package_version']} from {d['source_root']}"]
    shape = d["image_shape"]
    lines.append(f"images: {'x'.join(str(s) for s in shape)} {d['dtype']}")
    lines.append(f"{'split':<6} {'label 0':>8} {'label 1':>8} {'total':>7} {'groups':>7} {'cases':>6}")
    for s, c in d["counts"].items():
        lines.append(f"{s:<6} {c['0']:>8} {c['1']:>8} {c['total']:>7} {d['groups'][s]:>7} {d['cases'][s]:>6}")
    lines.append(f"in both train and test: {len(d['shared_groups'])} group(s)"
                 f"{_examples(d['shared_groups'])}, {len(d['shared_cases'])} case(s){_examples(d['shared_cases'])}")
    dup = d["duplicates"]
    lines.append(f"pixel-identical images: {dup['n_sets']} set(s), {dup['n_pairs']} pair(s): "
                 f"{dup['n_pairs_within_train']} within train, {dup['n_pairs_within_test']} within test, "
                 f"{dup['n_pairs_across']} across train/test; {dup['n_conflicting_sets']} set(s) with conflicting labels")
    for s in dup["sets"]:
        notes = [s["scope"] if s["scope"] == "across" else f"within {s['scope']}"]
        if s["conflicting_labels"]:
            notes.append("CONFLICTING LABELS")
        if s["byte_identical"]:
            notes.append("byte-identical files")
        members = " = ".join(f"{m['id']} (label {m['label']})" for m in s["members"])
        lines.append(f"  [{', '.join(notes)}] {members}")
    return "\n".join(lines)


def inspection_json(d: dict) -> str:
    return json.dumps(d, indent=2)


def _examples(values: list[str], k: int = 5) -> str:
    if not values:
        return ""
    more = ", ..." if len(values) > k else ""
    return f" ({', '.join(values[:k])}{more})"
