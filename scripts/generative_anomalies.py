"""Rule generative_anomalies: rank every star of the dataset by reconstruction χ²."""
from stargrad.generative_stage import anomalies
from stargrad.runlog import rule_logger

with rule_logger(snakemake.log[0]) as log:
    anomalies(snakemake.params.model_dir, snakemake.input.splits, snakemake.output.table,
              snakemake.output.plot, truth_path=snakemake.input.truth or None,
              n_shown=snakemake.params.n_shown, log=log)
