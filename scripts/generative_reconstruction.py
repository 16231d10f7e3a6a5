"""Rule generative_reconstruction: test reconstruction error of every VAE/PCA model vs size."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.generative import reconstruction
    reconstruction(snakemake.params.model_dirs, snakemake.input.test, snakemake.output.table,
                   snakemake.output.plot, log=log)
