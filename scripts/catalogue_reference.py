"""Rule catalogue_reference: training-set PCA, χ² threshold and label ranges for the flags."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.catalogue import write_reference
    write_reference(snakemake.input.train, snakemake.params.model_dir, snakemake.output[0],
                    n_components=snakemake.params.n_components,
                    quantile=snakemake.params.quantile, log=log)
