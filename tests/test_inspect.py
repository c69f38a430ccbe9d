"""`microcal-hpc inspect`: counts, groups/cases shared by the splits, and pixel-identical images."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data_prep.inspect import format_inspection, inspect_packed
from data_prep.pack import pack_tree
from microcal_hpc.config import DataConfig

from cli_helpers import cli_env


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = cli_env()
    return subprocess.run([sys.executable, "-m", "jobs", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def member_ids(s: dict) -> list[str]:
    return [m["id"] for m in s["members"]]


def len_members(s: dict) -> int:
    return len(s["members"])


@pytest.mark.realdata
def test_real_data_duplicates_groups_and_cases(packed_real):
    d = inspect_packed(packed_real)
    assert d["counts"] == {"train": {"0": 330, "1": 306, "total": 636}, "test": {"0": 84, "1": 77, "total": 161}}
    assert d["image_shape"] == [60, 60] and d["dtype"] == "uint8"
    assert d["groups"] == {"train": 252, "test": 63}
    assert d["shared_groups"] == ["0188b1_3_1_1"]
    # the default case rule (first four digits) gives 78 train / 29 test cases, 4 of them in both splits
    assert d["cases"] == {"train": 78, "test": 29}
    assert d["shared_cases"] == ["0002", "0033", "0039", "0188"]
    dup = d["duplicates"]
    assert (dup["n_sets"], dup["n_pairs"], dup["n_pairs_across"]) == (14, 14, 9)
    assert (dup["n_pairs_within_train"], dup["n_pairs_within_test"], dup["n_conflicting_sets"]) == (5, 0, 0)
    sets = [member_ids(s) for s in dup["sets"]]
    assert ["Train/1/0042u1_3_1_1.pgm_1.pgm", "Test/1/0227u1_3_1_1.pgm_1.pgm"] in sets
    assert ["Train/1/0041u1_1_1_1.pgm_5.pgm", "Train/1/0222u1_1_1_1.pgm_5.pgm"] in sets
    across = [s for s in dup["sets"] if s["scope"] == "across"]
    assert len(across) == 9 and all(s["members"][0]["split"] == "train" and s["members"][1]["split"] == "test"
                                    for s in across)
    assert all(m["label"] == 1 for s in dup["sets"] for m in s["members"])


@pytest.mark.realdata
@pytest.mark.timeout(60)
def test_inspect_cli_text_and_json(packed_real):
    r = run_cli("inspect", str(packed_real))
    assert r.returncode == 0, r.stderr
    assert "images: 60x60 uint8" in r.stdout
    assert "train       330      306     636     252     78" in r.stdout
    assert ("pixel-identical images: 14 set(s), 14 pair(s): 5 within train, 0 within test, 9 across train/test"
            in r.stdout)
    assert ("[across, byte-identical files] Train/1/0042u1_3_1_1.pgm_1.pgm (label 1) = "
            "Test/1/0227u1_3_1_1.pgm_1.pgm (label 1)") in r.stdout
    assert "in both train and test: 1 group(s) (0188b1_3_1_1), 4 case(s)" in r.stdout
    rj = run_cli("inspect", "--json", str(packed_real))
    assert rj.returncode == 0, rj.stderr
    assert json.loads(rj.stdout) == json.loads(json.dumps(inspect_packed(packed_real)))


def test_synthetic_duplicates_across_formats_splits_and_labels(make_tree, tmp_path):
    root = make_tree(counts={"Train": (4, 4), "Test": (4, 4)}, shape=(16, 16), fmt="pgm")
    tr0 = sorted((root / "Train/0").iterdir())
    tr1 = sorted((root / "Train/1").iterdir())
    # a triple: the same picture as PNG in Train/0 and as TIFF in Test/0 (3 pairs: 1 within train, 2 across)
    with Image.open(tr0[0]) as im:
        im.save(root / "Train/0/copy_a.png")
        im.save(root / "Test/0/copy_b.tiff")
    # a pair with conflicting labels inside Train
    shutil.copy(tr1[0], root / "Train/0/relabelled.pgm")
    # a Test image sharing a group with Train (same file-name stem rule, different pixels)
    src_group = tr1[1].name.split(".pgm_")[0]
    Image.fromarray(np.full((16, 16), 3, np.uint8)).save(root / "Test/1" / f"{src_group}.pgm_7.pgm")
    out = tmp_path / "p.h5"
    pack_tree(root, out, DataConfig())
    d = inspect_packed(out)
    dup = d["duplicates"]
    assert (dup["n_sets"], dup["n_pairs"]) == (2, 4)
    assert (dup["n_pairs_within_train"], dup["n_pairs_within_test"], dup["n_pairs_across"]) == (2, 0, 2)
    assert dup["n_conflicting_sets"] == 1
    triple, conflict = sorted(dup["sets"], key=len_members, reverse=True)
    assert member_ids(triple) == [f"Train/0/{tr0[0].name}", "Train/0/copy_a.png", "Test/0/copy_b.tiff"]
    assert triple["scope"] == "across" and not triple["byte_identical"] and not triple["conflicting_labels"]
    assert conflict["conflicting_labels"] and conflict["byte_identical"] and conflict["scope"] == "train"
    assert member_ids(conflict) == ["Train/0/relabelled.pgm", f"Train/1/{tr1[0].name}"]
    assert [m["label"] for m in conflict["members"]] == [0, 1]
    assert d["shared_groups"] == [src_group] and d["shared_cases"] == [src_group[:4]]
    text = format_inspection(d)
    assert "2 set(s), 4 pair(s): 2 within train, 0 within test, 2 across train/test; 1 set(s) with conflicting labels" in text
    assert "[within train, CONFLICTING LABELS, byte-identical files] Train/0/relabelled.pgm (label 0) = " in text


@pytest.mark.timeout(60)
def test_inspect_rejects_a_file_that_is_not_packed(tmp_path):
    bad = tmp_path / "other.h5"
    bad.write_bytes(b"not hdf5 at all")
    r = run_cli("inspect", str(bad))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith(f"microcal-hpc inspect: error: {bad}: not a readable HDF5 file")
    assert len(r.stderr.strip().splitlines()) == 1
