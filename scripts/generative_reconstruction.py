"""Rule generative_reconstruction: test reconstruction error of every VAE/PCA model vs size."""
from stargrad.generative_stage import reconstruction
from stargrad.runlog import rule_logger

with rule_logger(snakemake.log[0]) as log:
    reconstruction(snakemake.params.model_dirs, snakemake.input.test, snakemake.output.table,
                   snakemake.output.plot, log=log)
