"""Selection presets, cuts and the seeded split."""
import numpy as np
import pandas as pd
import pytest

from stargrad.datasets.select import select, select_and_split, split


def catalogue(n=400, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "APOGEE_ID": [f"2M{i:08d}" for i in range(n)],
        "TEFF": rng.uniform(3500, 6000, n), "LOGG": rng.uniform(0, 4.5, n),
        "M_H": rng.uniform(-2, 0.6, n), "SNR": rng.uniform(20, 600, n),
        "STARFLAG": rng.choice([0, 0, 0, 4], n), "ASPCAPFLAG": rng.choice([0, 0, 8], n),
        "VSCATTER": rng.uniform(0, 2, n), "MEMBER": np.where(np.arange(n) < 20, "M13", ""),
    })


def test_astronn_preset_applies_every_cut():
    table = catalogue()
    chosen = select(table, "astronn")
    assert len(chosen) > 0
    assert (chosen["STARFLAG"] == 0).all() and (chosen["ASPCAPFLAG"] == 0).all()
    assert chosen["TEFF"].between(4000, 5500).all()
    assert (chosen["SNR"] > 200).all() and (chosen["VSCATTER"] < 1).all()
    expected = ((table.STARFLAG == 0) & (table.ASPCAPFLAG == 0) & table.TEFF.between(4000, 5500)
                & (table.SNR > 200) & (table.VSCATTER < 1)).sum()
    assert len(chosen) == expected


def test_unknown_preset_and_column_are_clear_errors():
    with pytest.raises(ValueError, match="unknown selection preset"):
        select(catalogue(), "nope")
    with pytest.raises(KeyError, match="NOPE"):
        select(catalogue(), "all", {"NOPE": 1})


def test_split_counts_seed_and_order_independence():
    table = catalogue()
    spec = {"seed": 17, "counts": {"train": 100, "valid": 30, "test": 50}, "cluster_member": "M13"}
    a = split(table, spec)
    b = split(table.sample(frac=1.0, random_state=3), spec)
    pd.testing.assert_frame_equal(a, b)
    counts = a["split"].value_counts().to_dict()
    assert counts == {"train": 100, "valid": 30, "test": 50, "cluster": 20}
    assert not a["APOGEE_ID"].duplicated().any()
    c = split(table, {**spec, "seed": 18})
    assert not a[a.split == "train"]["APOGEE_ID"].equals(c[c.split == "train"]["APOGEE_ID"])


def test_split_fractions_and_too_many_stars():
    table = catalogue(100)
    out = split(table, {"seed": 1, "fractions": {"train": 0.7, "valid": 0.1, "test": 0.2}})
    assert out["split"].value_counts().to_dict() == {"train": 70, "valid": 10, "test": 20}
    with pytest.raises(ValueError, match="only 100"):
        split(table, {"seed": 1, "counts": {"train": 90, "valid": 10, "test": 10}})


def test_select_and_split_rejects_empty_selection():
    with pytest.raises(ValueError, match="keeps no star"):
        select_and_split(catalogue(), {"selection": {"cuts": {"TEFF": [1e5, None]}},
                                       "split": {"seed": 1, "counts": {"train": 1, "valid": 1, "test": 1}}})


def test_duplicate_ids_keep_the_highest_snr_row():
    from stargrad.sdss.survey import primary_rows
    table = catalogue(6)
    dup = table.iloc[[2]].assign(SNR=table.SNR[2] + 50, FIELD="other")
    both = pd.concat([table, dup], ignore_index=True)
    out = primary_rows(both)
    assert len(out) == 6 and out.loc[out.APOGEE_ID == table.APOGEE_ID[2], "SNR"].item() == dup.SNR.item()
    split(out, {"seed": 1, "counts": {"train": 2, "valid": 1, "test": 1}})   # no duplicate error


def test_sample_stars_is_seeded_and_independent_of_row_order():
    from stargrad.datasets.select import sample_stars
    ids = np.array([f"2M{i:08d}" for i in range(500)])
    chosen = sample_stars(ids, 40, seed=17)
    assert len(chosen) == 40 and np.all(np.diff(chosen) > 0)
    shuffled = np.random.default_rng(1).permutation(ids)
    assert set(shuffled[sample_stars(shuffled, 40, seed=17)]) == set(ids[chosen])
    assert set(ids[sample_stars(ids, 40, seed=18)]) != set(ids[chosen])
    # not the first rows in catalogue order (the old behaviour): spread over the whole list
    assert chosen.max() > 250 and chosen.min() < 250
    np.testing.assert_array_equal(sample_stars(ids[:30], 40, seed=17), np.arange(30))
