"""Rule generative_decoder: prior samples and decoder Jacobian of one VAE."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.generative import decoder_plots
    decoder_plots(snakemake.params.model_dir, snakemake.input.split, snakemake.output.prior,
                  snakemake.output.jacobian, n_samples=snakemake.params.n_samples,
                  seed=snakemake.params.seed, log=log)
