"""Rule generative_anomalies: rank every star of the dataset by the reconstruction χ² of a model
that did not see it (the training split cross-fitted)."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.generative import anomalies
    anomalies(snakemake.params.model_dir, snakemake.input.splits, snakemake.output.table,
              snakemake.output.plot, truth_path=snakemake.input.truth or None,
              n_shown=snakemake.params.n_shown, n_folds=snakemake.params.n_folds, log=log)
