"""Rule generative_anomalies: rank every star of the dataset by reconstruction χ²."""
from stargrad.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.generative_stage import anomalies
    anomalies(snakemake.params.model_dir, snakemake.input.splits, snakemake.output.table,
              snakemake.output.plot, truth_path=snakemake.input.truth or None,
              n_shown=snakemake.params.n_shown, log=log)
