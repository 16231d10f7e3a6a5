"""Rule generative_decoder: prior samples and decoder Jacobian of one VAE."""
from stargrad.generative_stage import decoder_plots
from stargrad.runlog import rule_logger

with rule_logger(snakemake.log[0]) as log:
    decoder_plots(snakemake.params.model_dir, snakemake.input.split, snakemake.output.prior,
                  snakemake.output.jacobian, n_samples=snakemake.params.n_samples,
                  seed=snakemake.params.seed, log=log)
