"""Rule generative_anomalies: rank every star of the dataset by the reconstruction χ² of a model
that did not see it (the training split cross-fitted)."""
from stargrad.generative_stage import anomalies
from stargrad.runlog import rule_logger

with rule_logger(snakemake.log[0]) as log:
    anomalies(snakemake.params.model_dir, snakemake.input.splits, snakemake.output.table,
              snakemake.output.plot, truth_path=snakemake.input.truth or None,
              n_shown=snakemake.params.n_shown, n_folds=snakemake.params.n_folds, log=log)
