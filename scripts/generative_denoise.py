"""Rule generative_denoise: reconstructions of noisy test spectra vs the noiseless mock flux."""
from stargrad.job import rule_job

with rule_job(snakemake) as log:
    from stargrad.generative_stage import denoise
    denoise(snakemake.params.model_dirs, snakemake.input.test, snakemake.input.allstar,
            snakemake.params.survey_root, snakemake.input.truth, snakemake.output.table,
            snakemake.output.plots, log=log)
