"""Rule generative_latent_space: the VAE's latent means of the test stars, coloured by labels."""
from stargrad.generative_stage import latent_space
from stargrad.runlog import rule_logger

with rule_logger(snakemake.log[0]) as log:
    latent_space(snakemake.params.model_dir, snakemake.input.split, snakemake.output[0], log=log)
