"""The catalogue gather rule: the shards of `stages.catalogue` as one table with a row per
allStar row, in allStar order, the quarantine list, and the report figures."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..plots import catalogue as plots_catalogue
from ..sdss import survey
from ..provenance import atomic_path
from .catalogue import FLAGS, ID_COLUMNS, write_table


def gather(shard_paths, quarantine_paths, allstar_path, out_path, quarantine_out, figures: dict,
           *, header: dict, snr_labels: int = 6, log=print) -> None:
    """One row per allStar row, in allStar order, from the shards (each row exactly once);
    the quarantine table; and the figures (`figures`: label_distributions, uncertainty_vs_snr,
    flags paths)."""
    parts = [survey.read_table(path, "CATALOGUE", what="catalogue shard")
             for path in shard_paths]
    table = pd.concat(parts, ignore_index=True).sort_values("ROW", kind="stable")
    allstar = survey.read_allstar(allstar_path, columns=[*ID_COLUMNS, "SNR"])
    if not np.array_equal(table["ROW"].to_numpy(), np.arange(len(allstar))):
        raise ValueError(f"catalogue shards {list(map(str, shard_paths))} do not hold every "
                         f"row of {allstar_path} exactly once ({len(table)} rows for "
                         f"{len(allstar)})")
    if not (table["APOGEE_ID"].to_numpy() == allstar["APOGEE_ID"].to_numpy()).all():
        raise ValueError(f"catalogue shards disagree with {allstar_path} on APOGEE_ID order")
    table = table.drop(columns="ROW").reset_index(drop=True)
    write_table(out_path, table, "CATALOGUE",
                 {**header, **{f"FLAGBIT{bit.bit_length() - 1}": name
                               for name, bit in FLAGS.items()}})
    quarantine = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False)
                            for p in quarantine_paths], ignore_index=True)
    with atomic_path(quarantine_out) as tmp:
        quarantine.sort_values(["APOGEE_ID", "TELESCOPE", "FIELD"]).to_csv(tmp, index=False)
    labels = [c for c in table.columns if f"{c}_std_total" in table.columns]
    plots_catalogue.plot_label_distributions(figures["label_distributions"], table, labels)
    plots_catalogue.plot_uncertainty_vs_snr(figures["uncertainty_vs_snr"], table,
                                            allstar["SNR"].to_numpy(float), labels[:snr_labels])
    plots_catalogue.plot_flags(figures["flags"], table["FLAG"].to_numpy(), FLAGS)
    counts = {name: int(np.count_nonzero(table["FLAG"].to_numpy() & bit))
              for name, bit in FLAGS.items()}
    log(f"catalogue of {len(table)} allStar rows: {int(np.isfinite(table['PCA_CHI2']).sum())} "
        f"predicted, {int(table['IN_TRAINING'].sum())} in training; flags {counts}")
