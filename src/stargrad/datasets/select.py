"""Select stars from an allStar catalogue and split them into train/valid/test[/cluster]."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..sdss.apogee import is_missing
from ..sdss.survey import primary_rows

#: Named selections. Each cut: column -> value (equality) or [min, max] (inclusive; None = open).
PRESETS = {
    "all": {},
    # astroNN's clean-giant training set (Leung & Bovy 2019; astronn.md §9.1).
    "astronn": {"STARFLAG": 0, "ASPCAPFLAG": 0, "TEFF": [4000.0, 5500.0],
                "SNR": {"gt": 200.0}, "VSCATTER": {"lt": 1.0}},
    # The log g study's red-giant box (Teff, log g, [M/H]).
    "rgb_logg": {"TEFF": [3900.0, 5300.0], "LOGG": [0.8, 3.6], "M_H": [-1.0, 0.5]},
}
SPLITS = ("train", "valid", "test")


def _cut_mask(table: pd.DataFrame, column: str, rule) -> np.ndarray:
    """Rows passing one cut; a missing value (−9999, NaN) fails every numeric cut."""
    if column not in table:
        raise KeyError(f"selection cut on {column!r}, but the allStar table has no such column")
    values = table[column].to_numpy()
    if isinstance(rule, dict):
        ops = {"gt": np.greater, "ge": np.greater_equal, "lt": np.less, "le": np.less_equal,
               "eq": np.equal, "ne": np.not_equal}
        bad = set(rule) - set(ops)
        if bad:
            raise ValueError(f"cut on {column}: unknown operators {sorted(bad)}; use {sorted(ops)}")
        numeric = values.dtype.kind in "fiu"
        mask = ~is_missing(values) if numeric else np.ones(len(values), dtype=bool)
        for op, ref in rule.items():
            mask &= ops[op](values, ref)
        return mask
    if isinstance(rule, (list, tuple)):
        lo, hi = rule
        mask = ~is_missing(values)
        if lo is not None:
            mask &= values >= lo
        if hi is not None:
            mask &= values <= hi
        return mask
    return values == rule


def select(table: pd.DataFrame, preset: str = "all", cuts: dict | None = None) -> pd.DataFrame:
    """Rows passing the preset's cuts and any extra `cuts` (all intersected)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown selection preset {preset!r}; known: {sorted(PRESETS)}")
    rules = {**PRESETS[preset], **(cuts or {})}
    mask = np.ones(len(table), dtype=bool)
    for column, rule in rules.items():
        mask &= _cut_mask(table, column, rule)
    return table[mask]


def _counts(n: int, spec: dict) -> dict[str, int]:
    """Stars per split from `fractions` (of the n selected, floored) or `counts` (exactly)."""
    if ("fractions" in spec) == ("counts" in spec):
        raise ValueError("split: give either fractions: {train, valid, test} or counts: "
                         "{train, valid, test}")
    if "fractions" in spec:
        fractions = {s: float(spec["fractions"][s]) for s in SPLITS}
        if not all(0.0 < v <= 1.0 for v in fractions.values()):
            raise ValueError(f"split fractions {fractions} must each lie in (0, 1]")
        if sum(fractions.values()) > 1.0 + 1e-9:
            raise ValueError(f"split fractions {fractions} sum to more than 1")
        sizes = {s: int(np.floor(v * n)) for s, v in fractions.items()}
        empty = [s for s, size in sizes.items() if size == 0]
        if empty:
            raise ValueError(f"split fractions {fractions} of the {n} selected stars leave "
                             f"{', '.join(empty)} empty; loosen the cuts or give counts")
        return sizes
    counts = spec["counts"]
    if not all(isinstance(counts[s], (int, np.integer)) or float(counts[s]).is_integer()
               for s in SPLITS) or min(counts[s] for s in SPLITS) < 1:
        raise ValueError(f"split counts {counts} must be whole numbers of stars >= 1")
    sizes = {s: int(counts[s]) for s in SPLITS}
    if sum(sizes.values()) > n:
        raise ValueError(f"split asks for {sum(sizes.values())} stars ({sizes}) but only {n} "
                         f"pass the selection")
    return sizes


def split(table: pd.DataFrame, spec: dict) -> pd.DataFrame:
    """Seeded split of the selected stars -> DataFrame(APOGEE_ID, split).

    `spec`: seed, `fractions` or `counts` of train/valid/test, and optional `cluster_member`:
    stars whose MEMBER equals it form a separate `cluster` split (never trained on).
    Stars are sorted by APOGEE_ID before shuffling, so the result does not depend on row order."""
    table = table.sort_values("APOGEE_ID", kind="stable")
    cluster_name = spec.get("cluster_member")
    cluster = table.iloc[:0]
    if cluster_name:
        if "MEMBER" not in table:
            raise KeyError("split.cluster_member is set but the allStar table has no MEMBER column")
        is_member = table["MEMBER"].astype(str).str.strip().to_numpy() == cluster_name
        cluster, table = table[is_member], table[~is_member]
    ids = table["APOGEE_ID"].to_numpy()
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate APOGEE_IDs in the selection")
    counts = _counts(len(ids), spec)
    order = np.random.default_rng(int(spec["seed"])).permutation(len(ids))
    parts, start = [], 0
    for name in SPLITS:
        parts.append(pd.DataFrame({"APOGEE_ID": ids[order[start:start + counts[name]]],
                                   "split": name}))
        start += counts[name]
    parts.append(pd.DataFrame({"APOGEE_ID": cluster["APOGEE_ID"].to_numpy(), "split": "cluster"}))
    out = pd.concat(parts, ignore_index=True)
    return out[["APOGEE_ID", "split"]]


def select_and_split(allstar: pd.DataFrame, dataset_spec: dict) -> pd.DataFrame:
    """Apply a dataset's selection then split it (the `select` rule)."""
    selection = dataset_spec.get("selection", {})
    chosen = select(primary_rows(allstar), selection.get("preset", "all"), selection.get("cuts"))
    if chosen.empty:
        raise ValueError("the selection keeps no star; loosen the cuts")
    return split(chosen, dataset_spec["split"])


def sample_stars(ids, n: int, seed: int) -> np.ndarray:
    """Indices of a seeded random subset of `n` of `ids` (all when there are fewer), sorted;
    the subset depends on the set of IDs and the seed, not on their order."""
    ids = np.asarray(ids).astype(str)
    if len(ids) <= n:
        return np.arange(len(ids))
    by_id = np.argsort(ids, kind="stable")
    chosen = by_id[np.random.default_rng(int(seed)).permutation(len(ids))[:n]]
    return np.sort(chosen)
