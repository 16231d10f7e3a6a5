"""Rule generative_samples: GAN, VAE-prior and Gaussian-PCA samples judged against real spectra."""
from stargrad.pipeline.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.stages.generative_samples import generative_samples
    p = snakemake.params
    generative_samples(p.gan_dirs, *snakemake.input.splits, snakemake.output.table,
                       snakemake.output.lines, snakemake.output.nearest, snakemake.output.scores,
                       vae_dir=p.vae_dir[0] if p.vae_dir else None,
                       pca_dir=p.pca_dir[0] if p.pca_dir else None,
                       label_model_dir=p.label_model_dir[0] if p.label_model_dir else None,
                       allstar_path=snakemake.input.allstar or None,
                       survey_root=p.survey_root or None, n_components=p.n_components,
                       n_seeds=p.n_seeds, line_species=p.line_species, seed=p.seed, log=log)
