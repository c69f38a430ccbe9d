"""The external sort (data_prep.extsort): runs spill to disk past the run size, output equals sorted(),
distinct items are counted, duplicates are found, run files go when closed."""
from __future__ import annotations

import random
import string
from pathlib import Path

import pytest

from data_prep import extsort
from data_prep.extsort import ExternalSort, distinct, equal_neighbours


def words(n: int, seed: int = 0) -> list[str]:
    """``n`` random short strings, with repeats, odd characters and newlines."""
    rng = random.Random(seed)
    alphabet = string.ascii_letters + "0_.\n\u00e9\u4e2d"
    return ["".join(rng.choices(alphabet, k=rng.randint(0, 4))) for _ in range(n)]


class Scratch:
    """A scratch-folder function that counts its calls."""

    def __init__(self, folder: Path):
        self.folder, self.calls = folder, 0

    def __call__(self) -> Path:
        self.calls += 1
        self.folder.mkdir(exist_ok=True)
        return self.folder


def run_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.run")) if folder.exists() else []


def test_within_the_run_size_nothing_is_written(tmp_path):
    scratch = Scratch(tmp_path / "scratch")
    s = ExternalSort(scratch, run_size=100)
    items = words(99)
    for w in items:
        s.add(w)
    assert list(s) == sorted(items) and s.count() == 99
    assert scratch.calls == 0 and s.runs == []


def test_runs_spill_past_the_run_size_and_the_merge_equals_sorted(tmp_path):
    scratch = Scratch(tmp_path / "scratch")
    s = ExternalSort(scratch, run_size=10)
    items = words(95)
    for w in items:
        s.add(w)
    assert len(s.runs) == 9 and len(run_files(scratch.folder)) == 9  # 90 items in runs, 5 still held
    assert list(s) == sorted(items)
    assert list(s) == sorted(items)  # iterating again reads the runs again
    assert s.count() == 95
    s.close()
    assert run_files(scratch.folder) == [] and list(s) == []


def test_without_a_scratch_folder_everything_stays_in_memory():
    s = ExternalSort(None, run_size=3)
    items = words(50, seed=1)
    for w in items:
        s.add(w)
    assert s.runs == [] and list(s) == sorted(items)


def test_unique_keeps_each_distinct_item_once(tmp_path):
    s = ExternalSort(Scratch(tmp_path / "scratch"), run_size=7, unique=True)
    items = [w.encode() for w in words(300, seed=2)]  # bytes, many repeats across runs
    for w in items:
        s.add(w)
    assert len(s.runs) > 1
    assert list(s) == sorted(set(items)) and s.count() == len(set(items))


def test_runs_of_one_size_are_merged_into_a_larger_run(tmp_path, monkeypatch):
    monkeypatch.setattr(extsort, "MAX_RUNS", 3)
    scratch = Scratch(tmp_path / "scratch")
    s = ExternalSort(scratch, run_size=4)
    items = words(101, seed=3)
    for w in items:
        s.add(w)
        assert len(run_files(scratch.folder)) == len(s.runs)
    # 25 runs of 4 = 2 x 9 + 2 x 3 + 1: two runs of 36 items, two of 12 and one of 4 (1 item held)
    assert len(s.runs) == 5 and [sum(1 for _ in extsort._read_run(p)) for p in s.runs] == [36, 36, 12, 12, 4]
    assert list(s) == sorted(items)


def test_the_default_run_size_is_the_module_constant(tmp_path, monkeypatch):
    monkeypatch.setattr(extsort, "RUN_SIZE", 5)
    s = ExternalSort(Scratch(tmp_path / "scratch"))
    for w in words(12, seed=4):
        s.add(w)
    assert len(s.runs) == 2


def test_equal_neighbours_finds_every_duplicate_and_its_first_item():
    items = sorted([("b", 1), ("a", 2), ("c", 0), ("a", 0), ("b", 0), ("a", 1)])
    pairs = list(equal_neighbours(items, key=lambda item: item[0]))
    assert pairs == [(("a", 0), ("a", 1)), (("a", 0), ("a", 2)), (("b", 0), ("b", 1))]
    assert list(equal_neighbours(["x", "y"], key=str)) == []


def test_duplicates_are_found_across_spilled_runs(tmp_path):
    s = ExternalSort(Scratch(tmp_path / "scratch"), run_size=5)
    keys = [f"k{i:03d}" for i in range(40)] + ["k007", "k031"]
    random.Random(5).shuffle(keys)
    for k in keys:
        s.add(k)
    assert len(s.runs) == 8
    assert sorted(b for _, b in equal_neighbours(s, key=str)) == ["k007", "k031"]
    assert list(distinct(s)) == sorted(set(keys))


@pytest.mark.parametrize("n", [0, 1, 1024, 1025, 2049])
def test_run_files_of_any_length_read_back_whole(tmp_path, n):
    s = ExternalSort(Scratch(tmp_path / "scratch"), run_size=max(n, 1))
    items = list(range(n))[::-1]
    for i in items:
        s.add(i)
    assert list(s) == sorted(items)
