"""The CNN's training-seed check: the official CNN run trained again with other seeds
(``campaign.official_seeds``, jobs ``cnn/official-seed-<S>``), every run scored on the same official Test
images.

The bootstrap CIs of the report resample Test images; they do not include the variation of a trained CNN
with its training seed (weight initialisation, batch order, dropout). This check shows that variation:
each seed's Test AUC with its CI, and its paired Test difference to each wavelet model of the CNN-versus-
wavelet comparison (:mod:`microcal_hpc.report.comparison`). Its sentence says whether the official run's
Test verdict holds for every seed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from microcal_hpc.config import Config
from microcal_hpc.report.comparison import CI_WORDS, PairedComparison, paired_difference, verdict
from microcal_hpc.report.tables import Column, Summaries, Table, mean_std


@dataclass
class SeedCheck:
    """The seed table, the sentence under it and the values for the report's metrics.json."""

    table: Table
    text: str
    values: dict[str, Any]


def _seed_row(S: Summaries, cfg: Config, seed: int, comps: list[PairedComparison]) -> tuple[dict[str, Any], list]:
    """One seed's table row and its paired Test differences (one per comparison; None where impossible)."""
    s = S.cnn_seeds[seed]
    row: dict[str, Any] = {"seed": seed, "job": f"cnn/{s.run.name}", "auc": s.test["auc"] if s.test else None,
                           "auc_ci": s.auc_ci, "accuracy": s.test["accuracy"] if s.test else None}
    diffs = []
    for i, c in enumerate(comps):
        w = S.wavelet[c.key].run
        p = None
        if s.run.test is not None and w.test is not None:
            p = paired_difference(S, cfg, s.run.test, w.test, "test", s.run)
        if p:
            row.update({f"diff{i}": p["diff"], f"diff_ci{i}": [p["ci_low"], p["ci_high"]],
                        f"verdict{i}": CI_WORDS[verdict(p)]})
        diffs.append(p)
    return row, diffs


def _sentence(S: Summaries, comps: list[PairedComparison], seeds: list[int], auc: dict, diffs: list[list]) -> str:
    off = S.official
    off_seed = next((k for k, v in S.cnn_seeds.items() if v is off), None)
    text = (f"The official CNN run was trained with {len(seeds)} training seeds ({', '.join(map(str, seeds))}) on "
            f"the same images; its official-Test AUC is {auc['mean']:.3f} ± {auc['std']:.3f} over the seeds "
            f"(range {auc['min']:.3f} to {auc['max']:.3f}). The 95% CIs elsewhere in this report resample Test "
            "images for one trained model; they do not include this seed-to-seed variation.")
    for i, c in enumerate(comps):
        found = [p for p in diffs[i] if p]
        if not found:
            continue
        held = [verdict(p) for p in found]
        low, high = min(p["diff"] for p in found), max(p["diff"] for p in found)
        text += (f" CNN minus {c.label} on the official Test set: {low:+.3f} to {high:+.3f} over the seeds, its "
                 f"95% CI above 0 for {held.count('higher')} of {len(found)} seeds")
        official_p = c.paired.get("test")
        if official_p is None or off_seed is None:
            text += "."
            continue
        said = CI_WORDS[verdict(official_p)]
        same = held.count(verdict(official_p))
        text += (f"; the official run's verdict (seed {off_seed}: CI {said}) holds for every seed." if same == len(found)
                 else f"; the official run's verdict (seed {off_seed}: CI {said}) holds for {same} of {len(found)} "
                      "seeds only, so on Test it depends on the training seed.")
    return text


def seed_check(S: Summaries, comps: list[PairedComparison], cfg: Config) -> Optional[SeedCheck]:
    """The seed table and sentence; None with fewer than two seeds of the official run."""
    seeds = [k for k, s in S.cnn_seeds.items() if s.test is not None]
    if len(seeds) < 2:
        return None
    rows, diffs = [], [[] for _ in comps]
    for seed in seeds:
        row, found = _seed_row(S, cfg, seed, comps)
        rows.append(row)
        for i, p in enumerate(found):
            diffs[i].append(p)
    auc_spread = mean_std(rows, ("auc",))["auc"]
    auc = dict(auc_spread, min=min(r["auc"] for r in rows), max=max(r["auc"] for r in rows))
    summary: dict[str, Any] = {"seed": "mean ± std", "job": f"{len(rows)} runs", "auc": auc_spread,
                               "accuracy": mean_std(rows, ("accuracy",)).get("accuracy")}
    cols = [Column("seed", "Training seed"), Column("job", "Job"), Column("auc", "Test AUC"),
            Column("auc_ci", "AUC 95% CI"), Column("accuracy", "Test accuracy")]
    for i, c in enumerate(comps):
        cols += [Column(f"diff{i}", "CNN − it", c.label), Column(f"diff_ci{i}", "95% CI", c.label),
                 Column(f"verdict{i}", "CI", c.label)]
        found = [p for p in diffs[i] if p]
        if found:
            summary[f"diff{i}"] = mean_std(rows, (f"diff{i}",)).get(f"diff{i}")
            summary[f"verdict{i}"] = f"above 0 for {sum(verdict(p) == 'higher' for p in found)} of {len(found)}"
    table = Table("cnn_seeds", "CNN: the official run with other training seeds",
                  f"official Test set (n = {S.cnn_seeds[seeds[0]].test['n']} images), one CNN "
                  f"trained on all of Train per seed; wavelet models fitted once (seed {cfg.classify.seed})",
                  cols, rows + [summary],
                  "AUC CIs: group bootstrap of the Test images; differences: the paired group bootstrap of the table "
                  "above, for each seed's CNN. Mean ± std over the seeds.")
    values = {"seeds": seeds, "test_auc": auc,
              "comparisons": {c.key: [None if p is None else dict(p, verdict=verdict(p)) for p in diffs[i]]
                              for i, c in enumerate(comps)}}
    return SeedCheck(table, _sentence(S, comps, seeds, auc, diffs), values)


def one_seed_note(S: Summaries, cfg: Config) -> Optional[str]:
    """Without seed repeats: say that the CNN numbers rest on one training seed (None without an official run)."""
    if S.official is None or len(S.cnn_seeds) >= 2:
        return None
    return (f"The CNN numbers rest on one training seed (train.seed = {cfg.train.seed}); the CIs resample Test images "
            "and do not include seed-to-seed variation. campaign.official_seeds trains the official run again with "
            "other seeds and adds that check here.")
