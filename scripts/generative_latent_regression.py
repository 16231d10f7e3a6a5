"""Rule generative_latent_regression: labels from few stars, MLP on latent means vs spectra."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.generative import latent_regression
    latent_regression(snakemake.params.model_dir, snakemake.input.train, snakemake.input.test,
                      snakemake.output[0], labels=snakemake.params.labels,
                      n_labelled=snakemake.params.n_labelled, seed=snakemake.params.seed,
                      hidden=snakemake.params.hidden, train_spec=snakemake.params.train_spec,
                      log=log)
