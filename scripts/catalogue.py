"""Rule catalogue: gather the shards into one row per allStar row, with the report figures."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.catalogue_table import gather
    out = snakemake.output
    gather(snakemake.input.shards, snakemake.input.quarantine, snakemake.input.allstar,
           out.table, out.quarantine, {"label_distributions": out.distributions,
                                       "uncertainty_vs_snr": out.uncertainty, "flags": out.flags},
           header=snakemake.params.header, log=log)
