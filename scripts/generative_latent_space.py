"""Rule generative_latent_space: the VAE's latent means of the test stars, coloured by labels."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.generative import latent_space
    latent_space(snakemake.params.model_dir, snakemake.input.split, snakemake.output[0], log=log)
